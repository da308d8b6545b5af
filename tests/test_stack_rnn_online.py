"""The code's online protocol (``stack_online.c``, the full tier): gradients, error clipping, resets, and the
training loops of train_toy.cpp and train_add.cpp, against PyTorch references written from the equations
(spec §3, §2.4)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from papers.stack_rnn import kernel
from papers.stack_rnn.data import stack_streams
from papers.stack_rnn.model import EMPTY, PRE_CLIP, StackRNN, StackRNNModule
from papers.stack_rnn.tasks import get_task, make_stream, sample_ns
from repro.train import RunSpec, run_seed

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")

TIGHT = {"rtol": 0, "atol": 1e-10}
SITES = frozenset({"output", "push", "action", "score", "stack", "hidden"})


def core(vocab=2, hidden=6, stacks=3, capacity=30, depth=2, noop=False, seed=0, scale=1.0):
    torch.manual_seed(seed)
    c = StackRNN(vocab, hidden, stacks, capacity, depth, noop, use_kernel=False).double()
    with torch.no_grad():
        for p in c.parameters():
            p.mul_(scale)
    return c


def weights(c):
    return [p.detach().clone().contiguous() for p in (c.embed, c.stack_to_hidden, c.readout)]


class ReferenceOnline:
    """train_toy.cpp's StackRNN (-mod 1) in PyTorch, one character at a time, written from StackRNN.h's
    structure: forward(cur) keeps (input, hidden, actions, previous stacks); empty_stacks() empties the
    *current* stacks and restarts the count; backward_update() back-propagates the current step's output
    error through the last min(bptt, count) steps, clipping the error signals at ``sites``.

    The count is StackRNN.h's ``_count``: backward calls since the last emptyStacks(). ``count_steps``
    counts forward steps instead (what stack_online.c did before it counted updates); the two agree when
    every step after a reset makes an update (train_toy.cpp), not in train_add.cpp, which updates only
    after '='."""

    def __init__(self, U, P, W, capacity, depth, n_actions, bptt, clip=15.0, sites=SITES, count_steps=False):
        self.U, self.P, self.W = (w.clone() for w in (U, P, W))
        self.V, self.H = self.U.shape
        self.S, self.K, self.A, self.D = self.P.shape[0] // depth, depth, n_actions, capacity
        self.bptt, self.clip, self.sites = bptt, clip, sites
        self.stacks = torch.full((self.S, capacity), EMPTY, dtype=torch.float64)
        self.history: list[tuple] = []
        self.count = 0
        self.count_steps = count_steps
        self.grads = None

    def c(self, x, site):
        return x.clamp(-self.clip, self.clip) if site in self.sites else x

    def empty_stacks(self):
        self.stacks = torch.full_like(self.stacks, EMPTY)
        self.count = 0

    def forward(self, cur):
        V, S, A, K = self.V, self.S, self.A, self.K
        prev = self.stacks
        h = torch.sigmoid((self.U[cur] + prev[:, :K].reshape(-1) @ self.P).clamp(-PRE_CLIP, PRE_CLIP))
        out = h @ self.W
        a = out[V : V + S * A].view(S, A).softmax(-1)
        push = torch.sigmoid(out[V + S * A :].clamp(-PRE_CLIP, PRE_CLIP))
        down = torch.cat([push[:, None], prev[:, :-1]], 1)  # cell i after a PUSH
        up = torch.cat([prev[:, 1:], torch.full((S, 1), EMPTY, dtype=prev.dtype)], 1)  # after a POP
        new = a[:, :1] * down + a[:, 1:2] * up + (a[:, 2:3] * prev if A == 3 else 0)
        self.history.append((cur, h, a, prev))
        self.stacks = new
        if self.count_steps:
            self.count += 1
        self.probs = out[:V].softmax(-1)

    def backward_update(self, target, lr):
        V, S, A, K, H = self.V, self.S, self.A, self.K, self.H
        act_cols, push_cols = slice(V, V + S * A), slice(V + S * A, V + S * A + S)
        if not self.count_steps:
            self.count += 1
        steps = min(self.bptt, self.count)
        dU, dP, dW = (torch.zeros_like(w) for w in (self.U, self.P, self.W))
        d_logit = self.probs.clone()
        d_logit[target] -= 1
        x, h, _, _ = self.history[-1]
        dW[:, :V] += torch.outer(h, d_logit)
        e = self.c(self.W[:, :V] @ d_logit, "output")
        g = torch.zeros(S, self.D, dtype=torch.float64)
        for j in range(steps):
            x, h, a, old = self.history[-1 - j]
            if j:
                e = torch.zeros(H, dtype=torch.float64)
            pv = torch.sigmoid((h @ self.W[:, push_cols]).clamp(-PRE_CLIP, PRE_CLIP))  # current weights
            d_push = self.c(g[:, 0] * a[:, 0] * pv * (1 - pv), "push")
            down = torch.cat([pv[:, None], old[:, :-1]], 1)
            up = torch.cat([old[:, 1:], torch.full((S, 1), EMPTY, dtype=old.dtype)], 1)
            d_a = [(g * down).sum(1), (g * up).sum(1)] + ([(g * old).sum(1)] if A == 3 else [])
            d_a = self.c(torch.stack(d_a, 1), "action")
            zero = torch.zeros(S, 1, dtype=g.dtype)
            gp = a[:, :1] * torch.cat([g[:, 1:], zero], 1) + a[:, 1:2] * torch.cat([zero, g[:, :-1]], 1)
            if A == 3:
                gp = gp + a[:, 2:3] * g
            gp = self.c(gp, "stack")
            d_score = self.c(a * (d_a - (a * d_a).sum(1, keepdim=True)), "score")
            dW[:, act_cols] += torch.outer(h, d_score.reshape(-1))
            dW[:, push_cols] += torch.outer(h, d_push)
            e = e + self.W[:, act_cols] @ d_score.reshape(-1) + self.W[:, push_cols] @ d_push
            e = self.c(e * h * (1 - h), "hidden")
            dU[x] += e
            dP += torch.outer(old[:, :K].reshape(-1), e)
            gp[:, :K] += (self.P @ e).view(S, K)
            g = self.c(gp, "stack")
        self.grads = (dU, dP, dW)
        self.U -= lr * dU
        self.P -= lr * dP
        self.W -= lr * dW
        return -math.log(float(self.probs[target]))


def run_kernel(c, inputs, targets, resets, update, lr, bptt, clip=15.0):
    U, P, W = weights(c)
    grads = [torch.empty_like(w) for w in (U, P, W)]
    stacks = torch.full((c.n_stacks, c.stack_size), EMPTY, dtype=torch.float64)
    nll, n = kernel.online_sgd(
        U, P, W, stacks, inputs, targets, resets, update, lr, c.depth, c.n_actions, bptt, clip, grads
    )
    return (U, P, W), grads, stacks, nll, n


def random_stream(length, vocab, resets_at, seed=0):
    gen = torch.Generator().manual_seed(seed)
    chars = torch.randint(vocab, (length + 1,), generator=gen)
    resets = torch.zeros(length, dtype=torch.bool)
    resets[list(resets_at)] = True
    return chars[:-1], chars[1:], resets


# -----------------------------------------------------------------------------
# 1. One character's gradient == autograd through the truncated unroll


def autograd_last_step(c, inputs, targets, resets, steps):
    """d loss_t / d (U, P, W) through the last ``steps`` steps (the stacks before them held constant)."""
    t = len(inputs) - 1
    start = t - steps + 1
    with torch.no_grad():
        _, (_, stacks), _ = c(inputs[None, :start], c.initial_state(1), resets[None, :start])
    logits, _, _ = c(inputs[None, start:], (None, stacks), resets[None, start:])
    loss = F.cross_entropy(logits[0, -1:], targets[-1:], reduction="sum")
    return torch.autograd.grad(loss, (c.embed, c.stack_to_hidden, c.readout))


@pytest.mark.parametrize(
    "length, resets_at, bptt, noop, capacity",
    [
        (80, [0], 50, False, 60),  # 50 steps back, capacity beyond the reachable cells
        (80, [0], 50, True, 60),
        (70, [0, 55], 50, False, 60),  # 15 steps since the last reset
        (40, [0, 39], 50, False, 60),  # the reset step itself: one step
        (60, [0], 12, False, 8),  # short window, small capacity: the bottom cell's POP brings EMPTY in
    ],
)
def test_one_characters_gradient_is_autograd_through_the_truncated_unroll(
    length, resets_at, bptt, noop, capacity
):
    c = core(vocab=3, hidden=7, stacks=3, capacity=capacity, noop=noop, seed=1)
    inputs, targets, resets = random_stream(length, 3, resets_at, seed=2)
    # Every step updates (at lr 0 the weights stay put), as in train_toy.cpp: the count of updates since the
    # reset, which sets the truncation, is then the count of steps; dU, dP, dW hold the last step's gradient.
    update = torch.ones(length, dtype=torch.bool)
    _, grads, _, _, _ = run_kernel(c, inputs, targets, resets, update, lr=0.0, bptt=bptt)
    since_reset = length - max(resets_at)
    expected = autograd_last_step(c, inputs, targets, resets, min(bptt, since_reset))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, **TIGHT)
    # The truncation is exactly min(bptt, updates since reset): one step less gives another gradient.
    shorter = (
        autograd_last_step(c, inputs, targets, resets, min(bptt, since_reset) - 1)
        if since_reset > 1
        else None
    )
    if shorter is not None:
        assert any((g - s).abs().max() > 1e-8 for g, s in zip(grads, shorter, strict=True))


def test_a_reset_cuts_the_gradient_where_the_stacks_were_emptied():
    """Moving the reset one step changes the gradient: the kernel reads the reset step, it does not guess."""
    c = core(vocab=3, hidden=7, stacks=3, capacity=60, seed=3)
    inputs, targets, _ = random_stream(60, 3, [0], seed=4)
    update = torch.ones(60, dtype=torch.bool)
    results = {}
    for at in (40, 41):
        resets = torch.zeros(60, dtype=torch.bool)
        resets[[0, at]] = True
        _, grads, _, _, _ = run_kernel(c, inputs, targets, resets, update, lr=0.0, bptt=50)
        expected = autograd_last_step(c, inputs, targets, resets, 60 - at)
        for got, want in zip(grads, expected, strict=True):
            torch.testing.assert_close(got, want, **TIGHT)
        results[at] = grads
    assert (results[40][1] - results[41][1]).abs().max() > 1e-6  # P sees other stacks


# -----------------------------------------------------------------------------
# 2. The ±15 error clipping acts where the code clips


def reference_grads(c, inputs, targets, resets, sites, clip, bptt=20):
    ref = ReferenceOnline(*weights(c), c.stack_size, c.depth, c.n_actions, bptt, clip=clip, sites=sites)
    for t in range(len(inputs)):  # the code back-propagates every step (its count); lr 0 keeps the weights
        if resets[t]:
            ref.empty_stacks()
        ref.forward(int(inputs[t]))
        ref.backward_update(int(targets[t]), lr=0.0)
    return ref.grads


def big_core():
    """Weights large enough for the output, stack and action clips to bind at clip 1 (at 15 the same
    code clips the same signals: the bound is one argument of the kernel)."""
    c = core(vocab=3, hidden=20, stacks=10, capacity=40, seed=67)
    with torch.no_grad():
        c.embed.mul_(3)
        c.stack_to_hidden.mul_(30)
        c.readout[:, :3].mul_(10)
        c.readout[:, 3 + 20 :].mul_(30)  # push columns
    return c


@pytest.mark.parametrize("clip", [1.0, 15.0])
def test_error_signals_are_clipped_where_the_code_clips(clip):
    """The kernel equals the reference that clips at every site of StackRNN.h, and (at clip 1, where they
    bind) differs from the reference with the output, stack or action clip left out, so each of those is
    exercised. The push-value clip and the clip after the action softmax cannot bind while the stack and
    action clips hold (|d push| <= clip/4, |d score| <= clip/2), here as in the code; the hidden clip binds
    only for weights beyond these: equality covers them."""
    c = big_core()
    inputs, targets, resets = random_stream(30, 3, [0], seed=6)
    update = torch.ones(30, dtype=torch.bool)  # as the reference: every step back-propagates, at lr 0
    _, grads, _, _, _ = run_kernel(c, inputs, targets, resets, update, lr=0.0, bptt=20, clip=clip)
    for got, want in zip(grads, reference_grads(c, inputs, targets, resets, SITES, clip), strict=True):
        torch.testing.assert_close(got, want, **TIGHT)
    unclipped = autograd_last_step(c, inputs, targets, resets, 20)
    assert any((g - u).abs().max() > 1e-6 for g, u in zip(grads, unclipped, strict=True))
    if clip == 1.0:
        for site in ("output", "stack", "action"):
            other = reference_grads(c, inputs, targets, resets, SITES - {site}, clip)
            differs = max(float((g - o).abs().max()) for g, o in zip(grads, other, strict=True))
            assert differs > 1e-4, f"the clip at '{site}' never acted: the test cannot see it"


# -----------------------------------------------------------------------------
# 3. Online training == the code's loop, written in PyTorch


def code_training_loop(ref, task, sequences, nreset, lr):
    """train_toy.cpp's epoch loop over ``sequences`` (symbol lists), as the code writes it."""
    ref.empty_stacks()
    cur, nll, steps = task.first_input, 0.0, 0
    for iseq, seq in enumerate(sequences):
        if nreset == 1 or (nreset > 0 and iseq % nreset == 0):
            ref.empty_stacks()
        for ip, nxt in enumerate(seq):
            ref.forward(cur)
            if ip == 0 and iseq == 0:
                ref.empty_stacks()
            else:
                nll += ref.backward_update(nxt, lr)
                steps += 1
            cur = nxt
    return nll, steps


@pytest.mark.parametrize("task_name, noop, nreset, bptt", [("anbn", False, 7, 10), ("anbncn", True, 5, 50)])
def test_online_training_equals_the_codes_loop_in_pytorch(task_name, noop, nreset, bptt):
    """A few hundred characters of online SGD (the epoch stream and its reset steps from data.py) equal
    train_toy.cpp's loop over the same sequences, written in PyTorch, to 1e-10. A reset step off by one
    in stack_streams, or a wrong truncation, makes this fail."""
    task = get_task(task_name)
    c = core(vocab=task.vocab_size, hidden=6, stacks=3, capacity=70, noop=noop, seed=7)
    rng = np.random.default_rng(8)
    ns = sample_ns(rng, 30, 2, 6)
    stream = make_stream(task, ns, rng)
    batch = stack_streams([stream], nreset, supervised=False)
    inputs, targets = batch["inputs"][0], batch["targets"][0]
    (U, P, W), _, _, nll, n = run_kernel(
        c, inputs, targets, batch["resets"][0], batch["loss_mask"][0] > 0, lr=0.1, bptt=bptt
    )
    assert 200 <= len(inputs) <= 600
    bounds = [*stream.starts.tolist(), len(stream.targets)]
    sequences = [stream.targets[a:b].tolist() for a, b in zip(bounds, bounds[1:], strict=False)]
    ref = ReferenceOnline(*weights(c), c.stack_size, c.depth, c.n_actions, bptt)
    ref_nll, ref_steps = code_training_loop(ref, task, sequences, nreset, lr=0.1)
    assert n == ref_steps == len(inputs) - 1
    assert nll == pytest.approx(ref_nll, rel=1e-12)
    for got, want in zip((U, P, W), (ref.U, ref.P, ref.W), strict=True):
        torch.testing.assert_close(got, want, **TIGHT)
    assert (U - weights(c)[0]).abs().max() > 1e-3  # it did train


def train_add_loop(ref, task, sequences, nreset, lr):
    """train_add.cpp's epoch loop over ``sequences`` (symbol lists), as the code writes it: the same stack
    resets as train_toy.cpp, but an update only where ``iseval``, i.e. from the step whose input is '=' to
    the end of the sequence (the result digits and the '.')."""
    ref.empty_stacks()
    cur, nll, steps = task.first_input, 0.0, 0
    equals = task.symbols.index("=")
    for iseq, seq in enumerate(sequences):
        if nreset > 0 and iseq % nreset == 0:
            ref.empty_stacks()
        iseval = False
        for ip, nxt in enumerate(seq):
            if cur == equals:
                iseval = True
            ref.forward(cur)
            if ip == 0 and iseq == 0:
                ref.empty_stacks()
            if iseval:
                nll += ref.backward_update(nxt, lr)
                steps += 1
            cur = nxt
    return nll, steps


def test_online_addition_equals_train_adds_loop_in_pytorch():
    """Binary addition through the online kernel: data.py's epoch stream (train_nmin 0, resets every 10
    sequences) with its loss mask as the update mask equals train_add.cpp's loop (updates only after '=')
    over the same sequences to 1e-10, truncation included: each error goes back min(50, updates since the
    last reset) steps, StackRNN.h's _count. Counting steps instead (the kernel's earlier rule, equal for
    train_toy.cpp) reaches further back in the first sequences after a reset and gives other weights."""
    task = get_task("addition")
    c = core(vocab=task.vocab_size, hidden=6, stacks=3, capacity=70, noop=True, seed=9)
    rng = np.random.default_rng(10)
    ns = sample_ns(rng, 40, 0, 8)
    stream = make_stream(task, ns, rng)
    batch = stack_streams([stream], 10, supervised=True)
    inputs, targets, update = batch["inputs"][0], batch["targets"][0], batch["loss_mask"][0] > 0
    (U, P, W), _, _, nll, n = run_kernel(c, inputs, targets, batch["resets"][0], update, lr=0.1, bptt=50)
    assert 0 < n < len(inputs) // 2
    bounds = [*stream.starts.tolist(), len(stream.targets)]
    sequences = [stream.targets[a:b].tolist() for a, b in zip(bounds, bounds[1:], strict=False)]
    assert 0 in set(ns.tolist()) and max(len(s) for s in sequences) > 10
    code = ReferenceOnline(*weights(c), c.stack_size, c.depth, c.n_actions, bptt=50)
    code_nll, code_steps = train_add_loop(code, task, sequences, nreset=10, lr=0.1)
    assert n == code_steps
    assert nll == pytest.approx(code_nll, rel=1e-12)
    for got, want in zip((U, P, W), (code.U, code.P, code.W), strict=True):
        torch.testing.assert_close(got, want, **TIGHT)
    assert (W - weights(c)[2]).abs().max() > 1e-3  # it did train
    steps = ReferenceOnline(*weights(c), c.stack_size, c.depth, c.n_actions, bptt=50, count_steps=True)
    steps_nll, _ = train_add_loop(steps, task, sequences, nreset=10, lr=0.1)
    assert abs(steps_nll - nll) > 1e-6 and (steps.P - P).abs().max() > 1e-6


# -----------------------------------------------------------------------------
# 4. The module and the harness


def online_overrides(epochs):
    return [
        "model.protocol=online",
        "data.protocol=online",
        "data.batch_size=1",
        "data.sequences_per_stream=60",
        "trainer.precision=64-true",
        "trainer.gradient_clip_val=null",
        "trainer.gradient_clip_algorithm=null",
        f"trainer.max_epochs={epochs}",
    ]


def online_run(root: Path, epochs: int, resume: bool = False):
    spec = RunSpec(
        "stack_rnn",
        "stack_anbn",
        "smoke",
        seed=1,
        overrides=online_overrides(epochs),
        resume=resume,
        progress=False,
        results_root=root,
        runs_root=root,
    )
    return run_seed(spec)


def test_online_resume_equals_uninterrupted(tmp_path, harness_state):
    """The online protocol through the harness (smoke sizes): 3 epochs in one go == 2, then --resume to 3."""
    straight = online_run(tmp_path / "a", 3)
    online_run(tmp_path / "b", 2)
    resumed = online_run(tmp_path / "b", 3, resume=True)
    assert (
        straight["details"]["implementation"] == resumed["details"]["implementation"] == "online-sgd-kernel"
    )
    assert resumed["resumed_from"] == "checkpoints/epoch001.ckpt"
    path = "stack_rnn/stack_anbn/smoke/seed1/checkpoints/epoch002.ckpt"
    a, b = (
        torch.load(r / path, map_location="cpu", weights_only=False) for r in (tmp_path / "a", tmp_path / "b")
    )
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["stack_rnn"]["lr"] == b["stack_rnn"]["lr"]
    assert resumed["metrics"] == straight["metrics"]
    assert [e["val_entropy_soft"] for e in resumed["details"]["val_curve"]] == [
        e["val_entropy_soft"] for e in straight["details"]["val_curve"]
    ]


def test_addition_full_config_trains_online_through_the_harness(tmp_path, harness_state):
    """addition-full.yaml (train_add.cpp's protocol: online, nmin 0, the solved-entropy rule, test resets)
    passes the online protocol's config checks and runs end to end, here at smoke sizes."""
    spec = RunSpec(
        "stack_rnn",
        "addition",
        "full",
        seed=1,
        overrides=[
            "data.sequences_per_stream=30",
            "data.validation_sequences=10",
            "data.test_lengths=[2,3]",
            "data.test_per_length=12",
            "trainer.max_epochs=2",
        ],
        progress=False,
        results_root=tmp_path,
        runs_root=tmp_path,
    )
    record = run_seed(spec)
    assert record["details"]["implementation"] == "online-sgd-kernel"
    assert record["config"]["model"]["init_args"]["solved_entropy"] == 0.1
    assert record["config"]["data"]["init_args"]["test_reset_every"] == 10
    assert [e["epoch"] for e in record["details"]["val_curve"]] == [0, 1]
    assert record["details"]["accuracy_by_n"]["n"] == [2, 3]


def test_online_module_trains_exactly_the_kernel_on_the_epoch_stream():
    """training_step runs one epoch's stream through the kernel with the module's learning rate."""
    from papers.stack_rnn.data import StackTaskData

    torch.manual_seed(0)
    module = StackRNNModule(task="anbn", hidden_size=6, n_stacks=2, protocol="online").double()
    data = StackTaskData(task="anbn", nmax=6, batch_size=1, sequences_per_stream=40, protocol="online")
    (batch,) = list(data.train_dataloader())
    assert batch["inputs"].shape[0] == 1 and batch["resets"][0, :2].all()
    before = weights(module.core)
    module.lr = 0.05
    module._trainer = type("T", (), {"datamodule": data, "log_every_n_steps": 1})()
    module.log = lambda *a, **k: None
    module.optimizers = lambda: torch.optim.SGD(module.parameters(), lr=module.lr)
    module.training_step(batch, 0)
    expected, _, _, _, _ = run_kernel(
        _core_with(module.core, before),
        batch["inputs"][0],
        batch["targets"][0],
        batch["resets"][0],
        batch["loss_mask"][0] > 0,
        lr=0.05,
        bptt=50,
    )
    for got, want in zip(weights(module.core), expected, strict=True):
        assert torch.equal(got, want)
    assert module.implementation == "online-sgd-kernel"


def _core_with(c, values):
    clone = StackRNN(c.vocab_size, c.hidden_size, c.n_stacks, c.stack_size, c.depth).double()
    with torch.no_grad():
        for p, v in zip((clone.embed, clone.stack_to_hidden, clone.readout), values, strict=True):
            p.copy_(v)
    return clone


@pytest.mark.parametrize(
    "extra, message",
    [
        (["trainer.devices=2", "trainer.strategy=ddp"], "devices=2"),
        (["trainer.accelerator=auto"], "accelerator=auto"),
        (["data.protocol=batched", "data.batch_size=4"], "data.protocol=online"),
    ],
)
def test_online_protocol_refuses_what_it_cannot_honour_before_training(
    tmp_path, harness_state, monkeypatch, capsys, extra, message
):
    from repro import results
    from repro import train as repro_train

    monkeypatch.setattr(results, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(repro_train, "RUNS", tmp_path / "runs")
    argv = ["stack_rnn", "stack_anbn", "smoke", "1", "--no-progress", "--set", "trainer.accelerator=cpu"]
    for item in [*online_overrides(1), *extra]:
        argv += ["--set", item]
    assert repro_train.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "runs" / "stack_rnn" / "stack_anbn" / "smoke" / "seed1" / "checkpoints").exists()


def test_online_protocol_without_a_compiler_stops_before_training(
    tmp_path, harness_state, monkeypatch, capsys
):
    """No PyTorch fallback for the online protocol: without a C compiler the run stops when the config is
    read (exit 2, the build error named), not in the middle of its first epoch."""
    from repro import results
    from repro import train as repro_train

    monkeypatch.setattr(results, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(repro_train, "RUNS", tmp_path / "runs")
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "no-such-compiler")
    kernel.online_library.cache_clear()
    try:
        argv = ["stack_rnn", "stack_anbn", "smoke", "1", "--no-progress", "--set", "trainer.accelerator=cpu"]
        for item in online_overrides(1):
            argv += ["--set", item]
        assert repro_train.main(argv) == 2
    finally:
        kernel.online_library.cache_clear()
    assert "no C compiler" in capsys.readouterr().err
