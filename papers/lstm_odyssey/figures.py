"""The comparison of the nine architectures as the paper makes it (spec §5, §7): test NLL per variant (the
Figure 3 style plot, one point per run) and Welch's t-test of each variant against vanilla (p < 0.05), written
as ``figure3_<tier>.png`` and ``comparison_<tier>.md`` under ``results/lstm_odyssey/``.

The paper compares 200 random-search trials per variant (and their best 10%); the cpu tier compares seeds at
one fixed hyperparameter point, so "significant" here means: beyond the spread of restarts at that point.
Welch's test is written out from its definition (it predates SciPy in the suite's lock, which scikit-learn
brought for the search's fANOVA; the tests check it against scipy.stats): the statistic
t = (m₁ − m₂) / √(s₁²/n₁ + s₂²/n₂), the Welch–Satterthwaite degrees of freedom, and the two-sided p-value
I_{ν/(ν+t²)}(ν/2, 1/2) through the regularised incomplete beta function.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from papers.lstm_odyssey.model import VARIANT_NAMES  # noqa: E402
from repro.results import atomic_write_text, load_records  # noqa: E402

ALPHA = 0.05
# The paper's verified claims on JSB (spec §5): which variants it found significantly worse than vanilla.
WORSE_IN_PAPER = ("NFG", "NOAF")


def incomplete_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below the mean: use the symmetry
        return 1.0 - incomplete_beta(1.0 - x, b, a)
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    value = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            value *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * value / a


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test of mean(a) − mean(b): (t, degrees of freedom, two-sided p)."""
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    sa, sb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if sa + sb == 0.0:
        return (0.0 if ma == mb else math.copysign(math.inf, ma - mb)), math.nan, float(ma == mb)
    t = (ma - mb) / math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / (sa**2 / (len(a) - 1) + sb**2 / (len(b) - 1))
    return t, df, incomplete_beta(df / (df + t * t), df / 2, 0.5)


def test_nlls(results_dir: Path, tier: str) -> dict[str, list[float]]:
    runs = {}
    for name in VARIANT_NAMES:
        records = load_records("lstm_odyssey", name.lower(), tier, results_dir.parent)
        values = [r["metrics"]["test_nll"] for r in records if "test_nll" in r.get("metrics", {})]
        if values:
            runs[name] = values
    return runs


def comparison(runs: dict[str, list[float]]) -> list[dict]:
    """One row per variant: its runs' mean, std and median; Welch's test against vanilla (positive t: worse);
    and the spec's cpu rule (§8): a difference from vanilla's mean larger than the two standard deviations
    together counts as beyond the seed spread."""
    base = runs.get("vanilla", [])
    rows = []
    for name, values in runs.items():
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        row = {
            "variant": name,
            "n": len(values),
            "mean": mean,
            "std": std,
            "median": statistics.median(values),
        }
        row.update(t=None, df=None, p=None, spread=None)
        if name != "vanilla" and len(values) > 1 and len(base) > 1:
            row["t"], row["df"], row["p"] = welch(values, base)
            difference = mean - statistics.fmean(base)
            if abs(difference) <= std + statistics.stdev(base):
                row["spread"] = "within the seed spread"
            else:
                row["spread"] = (
                    "worse beyond the seed spread" if difference > 0 else "better beyond the seed spread"
                )
        rows.append(row)
    return rows


def verdict(row: dict) -> str:
    if row["p"] is None:
        return "reference" if row["variant"] == "vanilla" else "–"
    if row["p"] >= ALPHA:
        return "no significant difference"
    return "significantly worse" if row["t"] > 0 else "significantly better"


def write_comparison(rows: list[dict], tier: str, out: Path) -> Path:
    lines = [
        f"# JSB Chorales, {tier} tier: the nine architectures against vanilla",
        "",
        "Test NLL per predicted frame (nats, summed over the 88 keys) over runs; Welch's t-test of each",
        f"variant against vanilla (the paper's test), two-sided, significant at p < {ALPHA}; and the spec's",
        "cpu rule (§8): a mean differing from vanilla's by more than the two standard deviations together is",
        "beyond the seed spread. Generated by `papers/lstm_odyssey/figures.py` from this folder's records.",
        "",
        "| variant | runs | test NLL, mean ± std | median | t | df | p | Welch | seed spread "
        "| the paper (spec §5) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        paper = "significantly worse" if row["variant"] in WORSE_IN_PAPER else "not significantly better"
        if row["variant"] == "vanilla":
            paper = "reference"
        numbers = (
            ("–",) * 3 if row["p"] is None else (f"{row['t']:.2f}", f"{row['df']:.1f}", f"{row['p']:.3g}")
        )
        std = "" if math.isnan(row["std"]) else f" ± {row['std']:.3f}"
        cells = [row["variant"], str(row["n"]), f"{row['mean']:.3f}{std}", f"{row['median']:.3f}", *numbers]
        cells += [verdict(row), row["spread"] or "–", paper]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "The paper's claims, checked on these runs (Welch's test; the seed-spread rule):"]
    better = [r["variant"] for r in rows if verdict(r) == "significantly better"]
    beyond = [r["variant"] for r in rows if r["spread"] == "better beyond the seed spread"]
    lines.append(
        "- no variant better than vanilla: "
        + ("holds" if not better else "does not hold: " + ", ".join(better))
        + "; "
        + ("holds" if not beyond else "does not hold: " + ", ".join(beyond))
    )
    for name in WORSE_IN_PAPER:
        row = next((r for r in rows if r["variant"] == name), None)
        if row is None:
            lines.append(f"- {name} worse than vanilla: not run")
            continue
        welch_found = "holds" if verdict(row) == "significantly worse" else verdict(row)
        spread_found = "holds" if row["spread"] == "worse beyond the seed spread" else row["spread"]
        lines.append(f"- {name} worse than vanilla: {welch_found}; {spread_found}")
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def draw(runs: dict[str, list[float]], tier: str, out: Path) -> Path:
    """One box and the points of every run per variant. Runs far above the rest (a variant that diverged)
    would flatten every other box, so they are drawn as arrows at the top edge with their values written."""
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(runs)
    reference = statistics.median(
        runs["vanilla"] if "vanilla" in runs else [v for vs in runs.values() for v in vs]
    )
    limit = 2 * reference  # anything above twice vanilla's median is off the scale
    shown = [[v for v in runs[n] if v <= limit] for n in names]
    ax.boxplot([values or [math.nan] for values in shown], tick_labels=names, widths=0.5, showfliers=False)
    top = max([v for values in shown for v in values] + [reference]) * 1.05
    for k, name in enumerate(names, start=1):
        ax.scatter([k] * len(shown[k - 1]), shown[k - 1], s=14, color="tab:blue", zorder=3)
        off = sorted(v for v in runs[name] if v > limit)
        if off:
            ax.scatter([k] * len(off), [top] * len(off), marker="^", color="tab:red", zorder=3, clip_on=False)
            ax.annotate(
                "diverged:\n" + "\n".join(f"{v:,.0f}" for v in off),
                (k, top),
                textcoords="offset points",
                xytext=(0, -8),
                ha="center",
                va="top",
                fontsize=7,
                color="tab:red",
            )
    if "vanilla" in runs:
        ax.axhline(
            sum(runs["vanilla"]) / len(runs["vanilla"]), color="grey", lw=0.8, ls="--", label="vanilla mean"
        )
        ax.legend(loc="upper left", fontsize=8)
    ax.set_ylim(top=top)
    ax.set_ylabel("test NLL per frame (nats)")
    ax.set_title(f"JSB Chorales, {tier} tier: test NLL of every run (Greff et al. Figure 3 style)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def make_figures(results_dir: Path, tier: str) -> list[Path]:
    """The fixed-point comparison from the seed records, then the random search's analysis from the trial
    records of ``repro search`` (search_analysis.py), each when its records exist."""
    from papers.lstm_odyssey.search_analysis import make_search_figures

    runs = test_nlls(results_dir, tier)
    paths = []
    if runs:
        paths += [
            draw(runs, tier, results_dir / f"figure3_{tier}.png"),
            write_comparison(comparison(runs), tier, results_dir / f"comparison_{tier}.md"),
        ]
    return paths + make_search_figures(results_dir, tier)
