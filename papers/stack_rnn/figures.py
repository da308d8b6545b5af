"""Figures from committed records: sequence accuracy against n, the paper's Figure 2 view.

One PNG per experiment and tier (every seed, soft and rounded actions, the training range shaded), and
``figure2_<tier>.png`` putting the memorization models and the addition model side by side when their
results exist.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from repro.results import read_json  # noqa: E402

FIGURE2 = {  # panel title -> experiments drawn in it (Figure 2 of the paper)
    "Memorization": ["memorization_rnn", "memorization_lstm", "memorization"],
    "Binary addition": ["addition"],
}


def load(folder: Path) -> tuple[dict, list[dict]] | None:
    aggregate = folder / "aggregate.json"
    if not aggregate.exists():
        return None
    stored = read_json(aggregate)
    return stored, [read_json(folder / name) for name in stored["records"]]


def draw_experiment(ax, records: list[dict], label_prefix: str = "") -> None:
    for record in records:
        curves = record["details"].get("accuracy_by_n")
        if not curves:
            continue
        for mode, style in (("soft", "-"), ("rounding", "--")):
            if mode in curves:
                ax.plot(
                    curves["n"],
                    curves[mode],
                    style,
                    alpha=0.8,
                    label=f"{label_prefix}seed {record['seed']} ({mode})",
                )
    nmax = records[0]["config"]["data"]["init_args"]["nmax"] if records else None
    if nmax:
        ax.axvspan(2, nmax - 1, color="0.9", zorder=0, label="training lengths")
    ax.set_xlabel("n")
    ax.set_ylabel("fraction of sequences correct")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)


def make_figures(results_dir: Path, tier: str) -> list[Path]:
    written = []
    for folder in sorted(results_dir.glob(f"*/{tier}")):
        loaded = load(folder)
        if loaded is None:
            continue
        _, records = loaded
        fig, ax = plt.subplots(figsize=(7, 4))
        draw_experiment(ax, records)
        ax.set_title(f"{folder.parent.name} ({tier}): accuracy by test length")
        ax.legend(fontsize=7, loc="lower left")
        path = folder / "accuracy_by_n.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    panels = {
        title: [(name, load(results_dir / name / tier)) for name in names] for title, names in FIGURE2.items()
    }
    if any(loaded for runs in panels.values() for _, loaded in runs):
        fig, axes = plt.subplots(1, len(panels), figsize=(12, 4))
        for ax, (title, runs) in zip(axes, panels.items(), strict=True):
            for name, loaded in runs:
                if loaded:
                    stored, records = loaded
                    seed = stored["selection"]["selected_seed"]
                    chosen = [r for r in records if r["seed"] == seed] or records[:1]
                    draw_experiment(ax, chosen, label_prefix=f"{name} ")
            ax.set_title(f"{title} ({tier})")
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = results_dir / f"figure2_{tier}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
