"""What the stacks do: the paper's Table 3 view of a trained Stack RNN, drawn from a run's checkpoint.

    python -m papers.stack_rnn.trace runs/stack_rnn/stack_anbn/cpu/seed1 --n 6 [--rounding] [--out trace.png]

The model reads a few warm-up sequences (the stacks are never emptied between sequences at test time, so a
trace that starts from empty stacks would show a state the model rarely sees), then one sequence with the
given n and the first character of the next. For those steps the figure shows, per stack, the probability
of PUSH and the value on top of the stack after the step; the x-axis carries the input characters and, below
them, the model's prediction of the next one (red where it is wrong on a scored character).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from papers.stack_rnn.model import StackRNNModule  # noqa: E402
from papers.stack_rnn.tasks import make_stream  # noqa: E402
from repro.train import load_latest_checkpoint  # noqa: E402


def load_module(run_dir: Path, rounding: bool) -> StackRNNModule:
    """The snapshot the test used: the best soft one, or the best rounded one with ``rounding``."""
    found = load_latest_checkpoint(Path(run_dir) / "checkpoints")
    if found is None:
        raise FileNotFoundError(f"no readable checkpoint in {Path(run_dir) / 'checkpoints'}")
    _, checkpoint = found
    module = StackRNNModule(**checkpoint["hyper_parameters"])
    if not module.has_stacks:
        raise ValueError(f"{run_dir} is a {module.hparams.architecture} run: it has no stacks to trace")
    saved = checkpoint["stack_rnn"]
    snapshot = (
        saved["rounded_snapshot"] if rounding and saved["rounded_snapshot"] is not None else saved["snapshot"]
    )
    module.core.load_state_dict(snapshot)
    return module.to(next(iter(snapshot.values())).dtype)


def trace(module: StackRNNModule, n: int, rounding: bool, warmup: int = 5, seed: int = 0) -> dict:
    """Play ``warmup`` random sequences, then one with this n (and the first character of one more, which
    tasks 1-3 score); return the steps of that sequence."""
    task = module.task
    rng = np.random.default_rng(seed)
    ns = [*rng.integers(2, 15, size=warmup).tolist(), n, 2]
    stream = make_stream(task, ns, rng)
    start, stop = int(stream.starts[-2]), int(stream.starts[-1]) + 1
    logits, push, tops = [], [], []
    state = module.core.initial_state(1)
    with torch.no_grad():  # step by step, to read the stacks after every step
        for t in range(stop):
            out, state, actions = module.core(stream.inputs[None, t : t + 1], state, hard=rounding)
            logits.append(out[0, 0])
            push.append(actions[0, 0, :, 0])
            tops.append(state[1][0, :, 0])
    steps = slice(start, stop)
    return {
        "inputs": task.decode(stream.inputs[steps].tolist()),
        "predicted": task.decode(torch.stack(logits[steps]).argmax(-1).tolist()),
        "targets": task.decode(stream.targets[steps].tolist()),
        "scored": stream.scored[steps].tolist(),
        "push": torch.stack(push[steps]).T.double().numpy(),  # [stacks, steps]
        "top": torch.stack(tops[steps]).T.double().numpy(),
    }


def draw(steps: dict, title: str, out: Path) -> Path:
    length = len(steps["inputs"])
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.4 * length), 6), sharex=True)
    for ax, key, label, limits in (
        (axes[0], "push", "P(PUSH)", (0, 1)),
        (axes[1], "top", "top of stack", (-1, 1)),
    ):
        image = ax.imshow(steps[key], aspect="auto", cmap="viridis", vmin=limits[0], vmax=limits[1])
        ax.set_ylabel(f"stack\n({label})")
        fig.colorbar(image, ax=ax, fraction=0.03)
    axes[1].set_xticks(range(length))
    axes[1].set_xticklabels([f"{i}\n{p}" for i, p in zip(steps["inputs"], steps["predicted"], strict=True)])
    for tick, target, predicted, scored in zip(
        axes[1].get_xticklabels(), steps["targets"], steps["predicted"], steps["scored"], strict=True
    ):
        tick.set_color("red" if scored and target != predicted else "black")
    axes[1].set_xlabel("input (top) and predicted next character (bottom)")
    axes[0].set_title(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m papers.stack_rnn.trace", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "run_dir", type=Path, help="a seed's run folder, e.g. runs/stack_rnn/stack_anbn/cpu/seed1"
    )
    parser.add_argument("--n", type=int, default=6, help="n of the traced sequence (Table 3 uses 6)")
    parser.add_argument("--rounding", action="store_true", help="rounded actions and the rounded snapshot")
    parser.add_argument("--out", type=Path, help="PNG to write (default: <run_dir>/trace_n<n>.png)")
    args = parser.parse_args(argv)
    module = load_module(args.run_dir, args.rounding)
    steps = trace(module, args.n, args.rounding)
    mode = "rounded" if args.rounding else "soft"
    out = args.out or args.run_dir / f"trace_n{args.n}_{mode}.png"
    title = f"{args.run_dir}: n = {args.n}, {mode} actions"
    print(draw(steps, title, out))
    return out


if __name__ == "__main__":
    main()
