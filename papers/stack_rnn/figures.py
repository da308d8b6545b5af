"""Figures from committed records: sequence accuracy against n, the paper's Figure 2 view, and Table 2.

One PNG per experiment and tier (every seed, soft and rounded actions, the training range shaded),
``figure2_<tier>.png`` putting the memorization models and the addition model side by side when their
results exist, and ``table2_<tier>.md``: Table 2 as the paper prints it, reproduced next to published.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from repro.papers import get_paper  # noqa: E402
from repro.results import atomic_write_text, read_json  # noqa: E402

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
    table = write_table2(results_dir, tier)
    return written + ([table] if table else [])


TABLE2_TASKS = {
    "anbn": "a^n b^n",
    "anbncn": "a^n b^n c^n",
    "anbncndn": "a^n b^n c^n d^n",
    "anb2n": "a^n b^2n",
    "anbmcnm": "a^n b^m c^(n+m)",
}
# Table 2 row -> (experiment of a task, record metric, record key the row's seed is selected by).
TABLE2_ROWS = {
    "RNN": ("rnn_{}", "solved_pct60", "val_entropy"),
    "LSTM": ("lstm_{}", "solved_pct60", "val_entropy"),
    "Stack RNN 40+10": ("stack_{}", "solved_pct60", "val_entropy"),
    "Stack RNN 40+10 + rounding": ("stack_{}", "solved_pct60_rounding", "val_entropy_rounding"),
}
# Where a -hard run exists (validated with rounded actions, as the script's a^n b^m c^(n+m) example), the
# "+ rounding" cell comes from it; elsewhere from the soft run's best rounded snapshot.
TABLE2_EXCEPTIONS = {
    ("Stack RNN 40+10 + rounding", "anbn"): "stack_anbn_rounding",
    ("Stack RNN 40+10 + rounding", "anbmcnm"): "stack_anbmcnm_rounding",
}


def table2_cell(results_dir: Path, tier: str, row: str, task: str) -> tuple[str, float | None]:
    """(text, published) of one cell: the selected seed's k/60, and how many seeds solved every length."""
    pattern, key, by = TABLE2_ROWS[row]
    name = TABLE2_EXCEPTIONS.get((row, task), pattern.format(task))
    experiment = get_paper("stack_rnn").experiments.get(name)
    published = None
    if experiment is not None:
        keys = (key, key.replace("pct60", "pct"))  # 100% cells are published once, for either denominator
        published = next((m.published for k in keys for m in experiment.metrics if m.key == k), None)
    loaded = load(results_dir / name / tier)
    if loaded is None:
        return "–", published
    _, records = loaded
    best = min(records, key=lambda r: r["metrics"].get(by, float("inf")))
    value = best["metrics"][key]
    solved = sum(r["metrics"][key] == 100.0 for r in records)
    return f"{value:.1f} ({solved}/{len(records)})", published


def write_table2(results_dir: Path, tier: str) -> Path | None:
    cells = {
        row: {task: table2_cell(results_dir, tier, row, task) for task in TABLE2_TASKS} for row in TABLE2_ROWS
    }
    if all(text == "–" for row in cells.values() for text, _ in row.values()):
        return None
    lines = [
        f"# Table 2 ({tier} tier): % of the 60 test lengths n = 2..61 solved",
        "",
        "Each cell: the selected seed's percentage (lowest validation entropy; rounded validation entropy",
        "for the '+ rounding' row), how many seeds solved all 60 lengths, and the paper's number.",
        "Generated by `papers/stack_rnn/figures.py` from the records in this folder.",
        "",
        "| method | " + " | ".join(TABLE2_TASKS.values()) + " |",
        "|---|" + "---|" * len(TABLE2_TASKS),
    ]
    for row, by_task in cells.items():
        texts = [
            f"{text} · paper {published:g}" if published is not None else text
            for text, published in by_task.values()
        ]
        lines.append(f"| {row} | " + " | ".join(texts) + " |")
    path = results_dir / f"table2_{tier}.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
