"""LSTM against DGLSTM, from the committed records, per size (``lstm_<size>`` and ``dglstm_<size>``) and
tier:

- ``val_ppl_<size>_<tier>.png``: the validation perplexity after each validation of both models on one axes,
  each seed faint and the mean over seeds bold, against training progress in epochs (training tokens
  predicted so far / the 929,589 tokens of the training file);
- ``test_ppl_by_depth_x<width>_<tier>.png``: the depth sweep, test perplexity of both models against depth and
  the depth gate's gain (LSTM minus DGLSTM) at each depth;
- ``comparison_<tier>.md``: test and best-validation perplexity per experiment over seeds, and the spec's
  relative check (§5, §8; not a paper target): DGLSTM's mean test perplexity is not worse than the LSTM's by
  more than the two seed standard deviations together.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from papers.depth_gated_lstm.data import TOKENS  # noqa: E402
from repro.papers import get_paper  # noqa: E402
from repro.results import atomic_write_text, load_records  # noqa: E402

PAPER = "depth_gated_lstm"
MODELS = {"lstm": ("LSTM", "tab:blue"), "dglstm": ("DGLSTM", "tab:red")}


def sizes() -> list[str]:
    """The sizes with both an LSTM and a DGLSTM experiment (``2x200``, ...)."""
    names = get_paper(PAPER).experiments
    found = [name.removeprefix("dglstm_") for name in names if name.startswith("dglstm_")]
    return [size for size in found if f"lstm_{size}" in names]


def complete(records: list[dict]) -> list[dict]:
    return [r for r in records if "test_ppl" in r.get("metrics", {})]


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; nan for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def mean_std(values: list[float], digits: int) -> str:
    mean, std = spread(values)
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def seeds(count: int) -> str:
    return "1 seed" if count == 1 else f"mean of {count} seeds"


def draw(runs: dict[str, list[dict]], size: str, tier: str, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, records in runs.items():
        name, colour = MODELS[model]
        curves = [r["details"]["val_curve"] for r in records]
        for curve in curves:
            ax.plot(
                [p["trained_tokens"] / TOKENS["train"] for p in curve],
                [p["val_ppl"] for p in curve],
                color=colour,
                alpha=0.3,
                lw=0.8,
            )
        steps = min(len(c) for c in curves)
        test = mean_std([r["metrics"]["test_ppl"] for r in records], 1)
        ax.plot(
            [
                statistics.fmean(c[k]["trained_tokens"] for c in curves) / TOKENS["train"]
                for k in range(steps)
            ],
            [statistics.fmean(c[k]["val_ppl"] for c in curves) for k in range(steps)],
            color=colour,
            lw=2,
            marker="o",
            ms=3,
            label=f"{name} ({seeds(len(records))}): test perplexity {test}",
        )
    ax.set_xlabel("training epochs (tokens predicted / 929,589)")
    ax.set_ylabel("validation perplexity")
    ax.set_title(f"PTB, {size}, {tier} tier: LSTM vs depth-gated LSTM")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def draw_depths(tables: dict[str, dict[str, list[dict]]], width: str, tier: str, out: Path) -> Path | None:
    """Test perplexity against depth at one width (the depth sweep): both models, and the depth gate's gain
    (LSTM minus DGLSTM), which the paper says grows with depth. None when fewer than two depths have both."""
    depths = sorted(
        int(size.split("x")[0])
        for size, runs in tables.items()
        if size.endswith(f"x{width}") and set(runs) == set(MODELS)
    )
    if len(depths) < 2:
        return None
    mean_test = {
        (model, depth): statistics.fmean(r["metrics"]["test_ppl"] for r in tables[f"{depth}x{width}"][model])
        for model in MODELS
        for depth in depths
    }
    fig, (ax, gain_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for model, (name, colour) in MODELS.items():
        ax.plot(depths, [mean_test[model, d] for d in depths], color=colour, marker="o", label=name)
    gains = [mean_test["lstm", d] - mean_test["dglstm", d] for d in depths]
    gain_ax.bar(depths, gains, color="tab:red", alpha=0.7)
    for depth, gain in zip(depths, gains, strict=True):
        gain_ax.annotate(f"{gain:+.2f}", (depth, gain), ha="center", va="bottom", fontsize=8)
    for axis in (ax, gain_ax):
        axis.set_xticks(depths)
        axis.set_xlabel("layers")
        axis.grid(alpha=0.3)
    ax.set_ylabel("test perplexity")
    ax.set_title(f"PTB, layers x {width}, {tier} tier")
    ax.legend(fontsize=8)
    gain_ax.set_ylabel("LSTM - DGLSTM test perplexity")
    gain_ax.set_title("the depth gate's gain")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def comparison_rows(runs: dict[str, list[dict]]) -> list[str]:
    rows = []
    for model, records in runs.items():
        test = mean_std([r["metrics"]["test_ppl"] for r in records], 2)
        val = mean_std([r["metrics"]["val_ppl"] for r in records], 2)
        tokens = ", ".join(sorted({f"{r['metrics']['test_tokens']:,.0f}" for r in records}))
        rows.append(f"| {MODELS[model][0]} | {len(records)} | {test} | {val} | {tokens} |")
    return rows


def relative_check(runs: dict[str, list[dict]]) -> str:
    if set(runs) != set(MODELS):
        return "not checked: only one of the two models has records"
    (lstm, lstm_std), (dglstm, dglstm_std) = (
        spread([r["metrics"]["test_ppl"] for r in runs[m]]) for m in ("lstm", "dglstm")
    )
    difference = dglstm - lstm
    if math.isnan(lstm_std + dglstm_std):
        return f"DGLSTM − LSTM = {difference:+.2f}; not checked: the seed spread needs two seeds of each"
    allowed = lstm_std + dglstm_std
    verdict = "holds" if difference <= allowed else "does not hold"
    return f"DGLSTM − LSTM = {difference:+.2f} against a seed spread of {allowed:.2f}: {verdict}"


def write_comparison(tables: dict[str, dict[str, list[dict]]], tier: str, out: Path) -> Path:
    lines = [
        f"# Penn Treebank, {tier} tier: LSTM vs depth-gated LSTM",
        "",
        "Perplexity = exp(total NLL / predicted tokens) over the split, every word and every <eos> predicted",
        "(the test file's 82,430 unless a smoke run keeps fewer lines), mean ± std over seeds; validation",
        "perplexity at the best validation. The spec's relative check (§5, §8; not a paper target, the",
        "paper's table is not available): DGLSTM's mean test perplexity is not worse than the LSTM's by",
        "more than the two seed standard deviations together.",
        "Generated by `papers/depth_gated_lstm/figures.py` from this folder's records.",
    ]
    for size, runs in tables.items():
        lines += [
            "",
            f"## {size}",
            "",
            "| model | seeds | test perplexity | validation perplexity | test tokens |",
            "|---|---|---|---|---|",
        ]
        lines += comparison_rows(runs)
        lines += ["", f"- relative check: {relative_check(runs)}"]
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def make_figures(results_dir: Path, tier: str) -> list[Path]:
    paths, tables = [], {}
    for size in sizes():
        runs = {
            model: records
            for model in MODELS
            if (records := complete(load_records(PAPER, f"{model}_{size}", tier, results_dir.parent)))
        }
        if runs:
            paths.append(draw(runs, size, tier, results_dir / f"val_ppl_{size}_{tier}.png"))
            tables[size] = runs
    if tables:
        paths.append(write_comparison(tables, tier, results_dir / f"comparison_{tier}.md"))
    for width in sorted({size.split("x")[1] for size in tables}):
        if path := draw_depths(tables, width, tier, results_dir / f"test_ppl_by_depth_x{width}_{tier}.png"):
            paths.append(path)
    return paths
