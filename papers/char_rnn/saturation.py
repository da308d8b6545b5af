"""Gate saturation (Karpathy et al. 2015, §4.2, the saturation plots of Figure 3).

    python -m papers.char_rnn.saturation EXPERIMENT [EXPERIMENT ...] [--tier cpu] [--seed 1] [--chars 20000]

The trained model (best-validation weights) reads the first ``--chars`` characters of the test split as one
stream from a zero state (``CharRNN.trace``). A gate unit is left-saturated at a step when its activation is
below 0.1 and right-saturated when it is above 0.9. For every gate unit (LSTM: input i, forget f, output o;
GRU: reset r, update z) the fraction of steps spent in each gives one point of the paper's scatter plots:
x = fraction left-saturated, y = fraction right-saturated, one panel per gate, one colour per layer. The two
fractions add up to at most 1, the diagonal x + y = 1; a gate near it is almost always switched fully off or
fully on, one near the origin works in its linear range. A vanilla RNN has no gates.

The GRU's z is PyTorch's, h_t = (1 − z)⊙n + z⊙h_{t−1}: z near 1 keeps the old state. Where a GRU is
written h_t = (1 − z)⊙h_{t−1} + z⊙h̃ (as in Chung et al. 2014), z is the mirror image, and its left- and
right-saturated fractions are ours swapped.

Writes ``results/char_rnn/saturation_<experiment>_<tier>.png`` and ``.json`` (per layer and gate the mean
fractions, and every unit's pair).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from papers.char_rnn.trained import Trained, head_of_test, load  # noqa: E402
from repro import results  # noqa: E402

GATES = {"lstm": ("i", "f", "o"), "lstm_ch": ("i", "f", "o"), "gru": ("r", "z")}
GATE_NAMES = {
    "i": "input gate",
    "f": "forget gate",
    "o": "output gate",
    "r": "reset gate",
    "z": "update gate, PyTorch's",
}
LEFT, RIGHT = 0.1, 0.9


def gates_of(cell: str) -> tuple[str, ...]:
    if cell not in GATES:
        raise ValueError(
            f"a vanilla {cell.upper()} has no gates, so it has no gate saturation to plot: use an LSTM "
            f"(gates i, f, o) or GRU (gates r, z) experiment"
        )
    return GATES[cell]


def fractions(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit (column of a T × H matrix of gate activations): the fraction of steps below 0.1
    (left-saturated) and above 0.9 (right-saturated)."""
    values = np.asarray(values)
    return (values < LEFT).mean(axis=0), (values > RIGHT).mean(axis=0)


def saturation(trace: list[dict[str, torch.Tensor]], cell: str) -> dict[str, list[dict]]:
    """Per gate, per layer (from 1): every unit's left and right fractions and their means."""
    out: dict[str, list[dict]] = {}
    for gate in gates_of(cell):
        out[gate] = []
        for layer, values in enumerate(trace, start=1):
            left, right = fractions(values[gate].double().numpy())
            out[gate].append(
                {
                    "layer": layer,
                    "mean_left": float(left.mean()),
                    "mean_right": float(right.mean()),
                    "left": left.round(5).tolist(),
                    "right": right.round(5).tolist(),
                }
            )
    return out


def draw(summary: dict[str, list[dict]], title: str, out: Path) -> Path:
    gates = list(summary)
    fig, axes = plt.subplots(1, len(gates), figsize=(3.6 * len(gates), 3.9), squeeze=False)
    for ax, gate in zip(axes[0], gates, strict=True):
        ax.plot([0, 1], [1, 0], color="0.6", lw=1, zorder=0)
        for entry in summary[gate]:
            ax.scatter(
                entry["left"],
                entry["right"],
                s=14,
                alpha=0.7,
                color=f"C{entry['layer'] - 1}",
                label=f"layer {entry['layer']}",
                edgecolors="none",
            )
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_title(f"{GATE_NAMES[gate]} ({gate})", fontsize=10)
        ax.set_xlabel(f"fraction left-saturated (< {LEFT})")
        ax.grid(alpha=0.25)
    axes[0][0].set_ylabel(f"fraction right-saturated (> {RIGHT})")
    if len(summary[gates[0]]) > 1:
        axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def analyse(trained: Trained, chars: int) -> dict:
    gates_of(trained.cell)
    ids, raw = head_of_test(trained, chars)
    summary = saturation(trained.net.trace(ids), trained.cell)
    return {
        **trained.provenance(),
        "characters": len(raw),
        "thresholds": {"left": LEFT, "right": RIGHT},
        "gates": summary,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m papers.char_rnn.saturation",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help="LSTM or GRU experiments")
    parser.add_argument("--tier", default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chars", type=int, default=20000, help="test characters to read (default 20000)")
    parser.add_argument("--runs", type=Path, help="runs folder (default: runs/ or $REPRO_RUNS)")
    parser.add_argument("--out", type=Path, help="folder to write to (default: results/char_rnn)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one stream, step by step: small ops
    out = args.out or results.RESULTS / "char_rnn"
    try:
        if args.chars < 1:
            raise ValueError("--chars must be positive")
        models = [load(name, args.tier, args.seed, args.runs) for name in args.experiments]
        for trained in models:  # say so before spending time on the others
            try:
                gates_of(trained.cell)
            except ValueError as err:
                raise ValueError(f"{trained.experiment}: {err}") from None
        for trained in models:
            report = analyse(trained, args.chars)
            stem = out / f"saturation_{trained.experiment}_{args.tier}"
            layers = len(trained.net.layers)
            title = (
                f"Gate saturation: {trained.label}, {layers} layer{'s' if layers > 1 else ''} of "
                f"{trained.net.hidden_size} units, {report['characters']} test characters"
            )
            draw(report["gates"], title, stem.with_suffix(".png"))
            results.write_json(stem.with_suffix(".json"), report)
            for gate, layers in report["gates"].items():
                means = ", ".join(
                    f"L{e['layer']} left {e['mean_left']:.3f} right {e['mean_right']:.3f}" for e in layers
                )
                print(f"{trained.experiment} {gate}: {means}")
            print(stem.with_suffix(".png"))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
