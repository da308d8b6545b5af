"""Figures from committed records: the paper's Figure 1 (one student's predicted mastery) and Figure 3(a)
(AUC against the number of hidden concepts for LSTM, RNN, BKT and the oracle, on generated students).

``figure1_<tier>.png`` comes from the first ASSISTments LSTM seed: for the test student the model traced
(``details.example_student``), p(correct) on every exercise the student attempts, after each answer, with the
answered exercise and its correctness marked along the top, as the paper draws it.
``figure3a_<tier>.png`` puts mean ± std over seeds at 1..5 concepts, plus the shipped simulated students
(2 and 5 concepts) as separate markers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from repro.results import aggregated_records  # noqa: E402

CONCEPTS = range(1, 6)


def figure1(results_dir: Path, tier: str) -> Path | None:
    records = aggregated_records(results_dir / "assistments_lstm" / tier)
    traced = [r for r in records if r["details"].get("example_student")]
    if not traced:
        return None
    student = traced[0]["details"]["example_student"]
    q, a, skills, p = student["q"], student["a"], student["skills"], np.array(student["p"])
    fig, ax = plt.subplots(figsize=(max(8, 0.18 * len(q)), 0.35 * len(skills) + 1.6))
    image = ax.imshow(p, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
    row_of = {s: i for i, s in enumerate(skills)}
    for t, (exercise, correct) in enumerate(zip(q, a, strict=True)):
        # The answered exercise at step t: a filled circle when correct, hollow when wrong.
        ax.plot(t, row_of[exercise], "o", ms=5, mfc="k" if correct else "none", mec="k", mew=0.8)
    ax.set_yticks(range(len(skills)), [f"skill {s}" for s in skills], fontsize=7)
    ax.set_xlabel("answer t (circle: the exercise answered; filled = correct)")
    ax.set_title(
        f"Figure 1 view: predicted p(correct) after each answer\nASSISTments test student "
        f"{student['student']} (LSTM, seed {traced[0]['seed']}, {tier})",
        fontsize=10,
    )
    fig.colorbar(image, ax=ax, fraction=0.02, label="p(correct)")
    fig.tight_layout()
    path = results_dir / f"figure1_{tier}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def mean_std(records: list[dict], key: str) -> tuple[float, float] | None:
    values = [r["metrics"][key] for r in records if key in r["metrics"]]
    return (float(np.mean(values)), float(np.std(values))) if values else None


def figure3a(results_dir: Path, tier: str) -> Path | None:
    curves: dict[str, list[tuple[int, tuple[float, float]]]] = {}
    for c in CONCEPTS:
        lstm = aggregated_records(results_dir / f"generated_c{c}_lstm" / tier)
        rnn = aggregated_records(results_dir / f"generated_c{c}_rnn" / tier)
        for label, records, key in (
            ("LSTM", lstm, "auc"),
            ("RNN", rnn, "auc"),
            ("BKT", lstm + rnn, "auc_bkt"),
            ("Oracle", lstm + rnn, "auc_oracle"),
        ):
            point = mean_std(records, key)
            if point:
                curves.setdefault(label, []).append((c, point))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2))
    styles = {"LSTM": "o-", "RNN": "s-", "BKT": "^--", "Oracle": "k:"}
    for label, points in curves.items():
        xs = [c for c, _ in points]
        ax.errorbar(
            xs,
            [m for _, (m, _) in points],
            [s for _, (_, s) in points],
            fmt=styles[label],
            label=label,
            capsize=3,
        )
    for c in (2, 5):
        shipped = mean_std(aggregated_records(results_dir / f"synthetic_c{c}_lstm" / tier), "auc")
        if shipped:
            ax.plot(
                c,
                shipped[0],
                "*",
                ms=12,
                color="C0",
                mec="k",
                label="LSTM on the authors' files" if c == 2 else None,
            )
    ax.set_xlabel("hidden concepts")
    ax.set_ylabel("test AUC (mean ± std over seeds)")
    ax.set_xticks(list(CONCEPTS))
    ax.set_title(f"Figure 3(a) view: simulated students ({tier})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = results_dir / f"figure3a_{tier}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_figures(results_dir: Path, tier: str) -> list[Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    return [p for p in (figure1(results_dir, tier), figure3a(results_dir, tier)) if p is not None]
