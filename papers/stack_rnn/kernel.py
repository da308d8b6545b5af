"""The CPU fast path of the Stack RNN core: ``stack_kernel.c``, compiled on first use, behind an autograd
Function.

``StackRNN.forward`` uses it on the CPU for the toy-task cores (no recurrent matrix); it computes the same
equations as the PyTorch loop in ``model.py`` (tests compare values and gradients to 1e-10 in float64) at
about seven times its speed (make bench), because a step of the paper's model is too small for PyTorch's
per-operator cost (see ``stack_kernel.c``). The library is built with the system C compiler (``$CC``, else
``cc``) into ``~/.cache/repro/kernels`` (``$REPRO_CACHE`` overrides the folder), named by a hash of the
source and the flags, so a changed source is rebuilt; the library's own sha256 is recorded beside it at
build time and checked before every load, so a damaged or replaced file is rebuilt, never loaded. Without a
compiler, or without a writable cache, the model falls back to the PyTorch loop with a warning:
``available()`` says which path runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("stack_kernel.c")
# -fopenmp-simd: only the `omp simd` reductions of the backward pass may be vectorised (no threads, no
# other reassociation); without it they run in source order.
FLAGS = ["-O3", "-std=c99", "-shared", "-fPIC", "-fno-math-errno", "-fopenmp-simd"]
# The online protocol (stack_online.c, float64 only) is built for this machine's CPU (its vector types take
# the widest the CPU has; -std=c99 keeps multiply-adds unfused); its cache name includes the CPU's model and
# feature flags, so a cache folder shared between machines never loads a library built for another CPU.
ONLINE_SOURCE = Path(__file__).with_name("stack_online.c")
ONLINE_FLAGS = [*FLAGS, "-march=native"]
SUFFIX = {torch.float64: "f64", torch.float32: "f32"}


def cache_dir() -> Path:
    return Path(os.environ.get("REPRO_CACHE") or Path.home() / ".cache" / "repro") / "kernels"


def _compiled(source: Path, flags: list[str], key: bytes = b"") -> tuple[Path, str | None]:
    """The library built from ``source`` with ``flags`` in the cache (built now if missing or not verified),
    and what went wrong, or None. ``key``: anything else the build depends on (the CPU, for -march)."""
    digest = hashlib.sha256(source.read_bytes() + " ".join(flags).encode() + key).hexdigest()[:16]
    path = cache_dir() / f"{source.stem}-{digest}.so"
    if verified(path):
        return path, None
    # Not built yet, or the file in the shared cache is not the one this suite built (damaged, or
    # replaced by someone else): build it again rather than load unknown code.
    return path, build(path, source, flags)


@cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, built once per source version; None (with a warning) when it cannot be built."""
    path, problem = _compiled(SOURCE, FLAGS)
    if problem:
        warnings.warn(
            f"{problem}: the Stack RNN runs its PyTorch loop, about seven times slower on the CPU",
            stacklevel=2,
        )
        return None
    lib = ctypes.CDLL(str(path))
    for name in ("stack_forward_f64", "stack_forward_f32", "stack_backward_f64", "stack_backward_f32"):
        getattr(lib, name).restype = None
    return lib


def cpu_identity() -> bytes:
    """The CPU's architecture, model name and feature flags (what -march=native compiles for)."""
    lines = []
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    lines.append(line.strip())
                    if len(lines) >= 2:
                        break
    except OSError:
        pass
    return (platform.machine() + "\n" + "\n".join(lines)).encode()


@cache
def online_library() -> ctypes.CDLL:
    """The compiled online protocol; an error when it cannot be built (the protocol has no PyTorch path)."""
    path, problem = _compiled(ONLINE_SOURCE, ONLINE_FLAGS, cpu_identity())
    if problem:
        raise RuntimeError(f"{problem}: the online Stack RNN protocol needs its compiled kernel")
    lib = ctypes.CDLL(str(path))
    lib.stack_online_f64.restype = ctypes.c_int
    return lib


def digest_path(path: Path) -> Path:
    """Where the sha256 of a library this suite built is kept, beside it."""
    return path.with_name(path.name + ".sha256")


def verified(path: Path) -> bool:
    """Whether ``path`` is the library the last build wrote: its sha256 matches the one recorded then."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == digest_path(path).read_text().strip()
    except OSError:
        return False


def build(path: Path, source: Path = SOURCE, flags: list[str] = FLAGS) -> str | None:
    """Compiles ``source`` to ``path``; returns what went wrong, or None."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return "no C compiler (set CC or install gcc/clang)"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            built = Path(tmp) / path.name
            command = [compiler, *flags, str(source), "-o", str(built), "-lm"]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                return f"building {source.name} with {compiler} failed:\n{done.stderr.strip()}"
            recorded = Path(tmp) / digest_path(path).name
            recorded.write_text(hashlib.sha256(built.read_bytes()).hexdigest() + "\n")
            os.replace(built, path)  # atomic: a concurrent build or a crash never leaves half a library
            os.replace(recorded, digest_path(path))
    except OSError as err:
        return f"cannot build {source.name} into {path.parent} ({err}; set REPRO_CACHE to a writable folder)"
    return None


def available() -> bool:
    return library() is not None


def buffers(elements: int, dtype: torch.dtype) -> int:
    """Scratch elements for two ping-pong buffers of ``elements`` laid out as the kernel's second_buffer():
    64 bytes of alignment, the first rounded up to whole 4 KiB pages, half a page between them."""
    size = torch.finfo(dtype).bits // 8
    return (64 + -(-elements * size // 4096) * 4096 + 2048) // size + elements


def _pointer(tensor: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(tensor.data_ptr() if tensor is not None else 0)


def _sizes(*sizes: int) -> list[ctypes.c_int64]:
    return [ctypes.c_int64(n) for n in sizes]


class StackWindow(torch.autograd.Function):
    """One window of the stack core: differentiable in U, P, W and the initial stacks; returns the logits,
    the final stacks, the last hidden state and the actions applied (the last two carry no gradient)."""

    @staticmethod
    def forward(
        ctx, embed, stack_to_hidden, readout, stacks, inputs, resets, hard, depth, n_actions, full, grad
    ):
        batch, steps = inputs.shape
        vocab, hidden_size = embed.shape
        n_stacks, capacity = stacks.shape[1], stacks.shape[2]
        dtype, suffix = embed.dtype, SUFFIX[embed.dtype]
        # Cells of each step's stacks kept for the backward pass: gradient from the top `depth` cells reaches
        # depth + steps - 1 cells at most, unless the final stacks receive gradient too (`full`).
        kept = capacity if full else min(capacity, depth + steps + 1)
        # `grad`: whether autograd records this call (inside forward it is always off, so the caller says).
        needs_grad = grad and any(ctx.needs_input_grad[:4])
        outputs = vocab + n_stacks * n_actions + n_stacks

        def empty(*shape):
            return torch.empty(*shape, dtype=dtype)

        final = stacks.detach().clone(memory_format=torch.contiguous_format)
        logits, last_hidden = empty(batch, steps, vocab), empty(batch, hidden_size)
        actions = empty(batch, steps, n_stacks, n_actions)
        history = (
            [
                empty(batch, steps, n_stacks, kept),
                empty(batch, steps, hidden_size),
                empty(batch, steps, hidden_size),
                empty(batch, steps, n_stacks),
                empty(batch, steps, n_stacks),
            ]
            if needs_grad
            else [None] * 5
        )
        inputs = inputs.contiguous()
        resets = resets.to(torch.uint8).contiguous() if resets is not None else None
        hard = hard.to(torch.uint8).contiguous() if hard is not None else None
        weights = [w.detach().contiguous() for w in (embed, stack_to_hidden, readout)]
        scratch = empty(hidden_size + outputs + buffers(n_stacks * capacity, dtype))
        getattr(library(), f"stack_forward_{suffix}")(
            *_sizes(batch, steps, vocab, hidden_size, n_stacks, depth, n_actions, capacity, kept),
            *map(_pointer, (inputs, resets, hard, *weights, final, last_hidden, logits, actions, scratch)),
            *map(_pointer, history),
        )
        if needs_grad:
            ctx.save_for_backward(inputs, resets, hard, *weights, actions, *history)
            ctx.sizes = (batch, steps, vocab, hidden_size, n_stacks, depth, n_actions, capacity, kept)
        ctx.mark_non_differentiable(last_hidden, actions)
        return logits, final, last_hidden, actions

    @staticmethod
    def backward(ctx, d_logits, d_final, _d_hidden, _d_actions):
        inputs, resets, hard, embed, stack_to_hidden, readout, actions, *history = ctx.saved_tensors
        batch, steps, vocab, hidden_size, n_stacks, depth, n_actions, capacity, kept = ctx.sizes
        if d_final is not None and kept < capacity:
            if d_final.any():
                raise RuntimeError(
                    "the final stacks of a StackWindow received gradient, but the window kept only the top "
                    f"{kept} cells: call it with full=True (the module's overlap mode does)"
                )
            d_final = None
        grads = [torch.zeros_like(w) for w in (embed, stack_to_hidden, readout)]
        d_stacks = (
            torch.empty(batch, n_stacks, capacity, dtype=embed.dtype) if ctx.needs_input_grad[3] else None
        )
        outputs = vocab + n_stacks * n_actions + n_stacks
        scratch = torch.empty(
            outputs + hidden_size + buffers(n_stacks * kept, embed.dtype), dtype=embed.dtype
        )
        d_logits = (
            d_logits.contiguous()
            if d_logits is not None
            else torch.zeros(batch, steps, vocab, dtype=embed.dtype)
        )
        d_final = d_final.contiguous() if d_final is not None else None
        getattr(library(), f"stack_backward_{SUFFIX[embed.dtype]}")(
            *_sizes(*ctx.sizes),
            *map(_pointer, (inputs, resets, hard, stack_to_hidden, readout, actions, *history)),
            *map(_pointer, (d_logits, d_final, *grads, d_stacks, scratch)),
        )
        return (*grads, d_stacks, None, None, None, None, None, None, None)


def online_sgd(
    embed: torch.Tensor,
    stack_to_hidden: torch.Tensor,
    readout: torch.Tensor,
    stacks: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    resets: torch.Tensor,
    update: torch.Tensor,
    lr: float,
    depth: int,
    n_actions: int,
    bptt: int = 50,
    clip: float = 15.0,
    grads: list[torch.Tensor] | None = None,
) -> tuple[float, int]:
    """The code's online protocol over one stream (``stack_online_f64``): one SGD step after every character
    with ``update[t]``, in place on U (embed), P (stack_to_hidden) and W (readout), all float64 and
    contiguous; ``stacks`` [S, D] is the state, carried in place. ``grads`` (three tensors shaped like the
    weights) receive the gradient of the last updated step. Returns (sum of -ln p(target), steps updated)."""
    lib = online_library()
    weights = (embed, stack_to_hidden, readout, stacks)
    if any(w.dtype != torch.float64 or not w.is_contiguous() for w in weights):
        raise ValueError("online_sgd works in place on contiguous float64 tensors")
    vocab, hidden_size = embed.shape
    n_stacks, capacity = stacks.shape
    grads = grads if grads is not None else [torch.empty_like(w) for w in weights[:3]]
    inputs, targets = inputs.to(torch.int64).contiguous(), targets.to(torch.int64).contiguous()
    resets, update = resets.to(torch.uint8).contiguous(), update.to(torch.uint8).contiguous()
    nll = torch.zeros(2, dtype=torch.float64)
    failed = lib.stack_online_f64(
        *_sizes(inputs.numel(), vocab, hidden_size, n_stacks, depth, n_actions, capacity, bptt),
        *map(_pointer, (inputs, targets, resets, update)),
        ctypes.c_double(lr),
        ctypes.c_double(clip),
        *map(_pointer, (*weights, *grads, nll)),
    )
    if failed:
        raise MemoryError("stack_online_f64 could not allocate its buffers")
    return float(nll[0]), int(nll[1])
