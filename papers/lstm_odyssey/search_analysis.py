"""The random search analysed as the paper analyses it (spec §4-6), from the trial records of
``repro search lstm_odyssey`` (``results/lstm_odyssey/search_<variant>/<tier>/trialNNN.json``):

- ``search_figure3_<tier>.png``: box plots of the test NLL per variant over all trials (top) and over the best
  10% by validation NLL (bottom), Figure 3's two rows for JSB; a box is red (green) where the variant is
  significantly worse (better) than vanilla by Welch's t-test, p < 0.05, on the trials of that row.
- ``search_importance_<tier>.png``: fANOVA (Optuna's FanovaImportanceEvaluator, through
  repro.search.param_importances): the fraction of the test NLL's variance each hyperparameter explains
  alone, per variant.
- ``search_<tier>.md``: both as tables, the paper's claims checked, and each variant's best trial.
- ``search_<variant>/<tier>/summary.json``: the numbers ``expected.yaml`` judges, written once the variant and
  vanilla both hold the tier's number of trials (``search.TRIALS``).

Decisions (README): the best 10% are at least 5 trials (``search.BEST_AT_LEAST``; 10% of the cpu tier's 20 is
2); a diverged trial (no finite validation NLL) counts as a trial but has no test NLL, so it is in no box and
only counted; a test NLL above 2 × 88 ln 2 = 122 nats (twice that of p = 0.5 on every key, which an untrained
model scores: the run blew up) is drawn as a count above its box, and counts as 122 for fANOVA, so that a few
blown-up runs do not make all the variance.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from papers.lstm_odyssey import search as declared  # noqa: E402
from papers.lstm_odyssey.figures import welch  # noqa: E402
from papers.lstm_odyssey.model import VARIANT_NAMES  # noqa: E402
from repro import results  # noqa: E402
from repro import search as harness  # noqa: E402

PAPER = "lstm_odyssey"
DISPLAY = {name.lower(): name for name in VARIANT_NAMES}
BLOWN_UP = 2 * 88 * math.log(2)  # twice the NLL of p = 0.5 on every key (an untrained model's)
PARAMS = ("learning_rate", "hidden_size", "one_minus_momentum", "input_noise")
# The paper's JSB findings (spec §5): significantly worse than vanilla; none is significantly better.
WORSE_IN_PAPER = ("nfg", "noaf")


@dataclass
class Trials:
    """One variant's finished trials."""

    experiment: str
    records: list[dict[str, Any]]  # complete and diverged
    complete: list[dict[str, Any]] = field(init=False)
    best: list[dict[str, Any]] = field(init=False)  # the best ones by validation NLL

    def __post_init__(self):
        self.complete = [r for r in self.records if r["search"]["outcome"] == "complete"]
        ranked = sorted(self.complete, key=lambda r: r["metrics"]["val_nll"])
        self.best = ranked[: best_count(len(self.records))]

    @property
    def name(self) -> str:
        return DISPLAY.get(self.experiment, self.experiment)

    @property
    def diverged(self) -> int:
        return len(self.records) - len(self.complete)


def best_count(n: int) -> int:
    """How many trials "the best 10%" of n is: 10%, at least ``BEST_AT_LEAST``, at most n."""
    return min(n, max(math.ceil(declared.BEST_FRACTION * n - 1e-9), declared.BEST_AT_LEAST))


def nlls(records: list[dict[str, Any]]) -> list[float]:
    return [
        r["metrics"]["test_nll"] for r in records if math.isfinite(r["metrics"].get("test_nll", math.nan))
    ]


def load(results_dir: Path, tier: str) -> dict[str, Trials]:
    found = {}
    for experiment in declared.EXPERIMENTS:
        records = harness.trial_records(PAPER, experiment, tier, results_dir.parent)
        records = [r for r in records if r.get("search", {}).get("outcome") in harness.COUNTED]
        if records:
            found[experiment] = Trials(experiment, records)
    return found


def compare(trials: dict[str, Trials]) -> list[dict[str, Any]]:
    """One row per variant: medians, and Welch's test against vanilla on the best trials and on all of them
    (positive t: worse than vanilla)."""
    reference = trials.get(declared.REFERENCE)
    rows = []
    for experiment, found in trials.items():
        every, best = nlls(found.complete), nlls(found.best)
        row: dict[str, Any] = {
            "experiment": experiment,
            "variant": found.name,
            "trials": len(found.records),
            "diverged": found.diverged,
            "best_n": len(best),
            "median_all": statistics.median(every) if every else math.nan,
            "median_best": statistics.median(best) if best else math.nan,
            "mean_best": statistics.fmean(best) if best else math.nan,
            "std_best": statistics.stdev(best) if len(best) > 1 else math.nan,
            "best": (None, None, None),
            "all": (None, None, None),
        }
        if reference is not None and experiment != declared.REFERENCE:
            for key, mine, theirs in (
                ("best", best, nlls(reference.best)),
                ("all", every, nlls(reference.complete)),
            ):
                if len(mine) > 1 and len(theirs) > 1:
                    row[key] = welch(mine, theirs)
        rows.append(row)
    return rows


def verdict(test: tuple) -> str:
    t, _, p = test
    if p is None:
        return "–"
    if p >= declared.ALPHA:
        return "no significant difference"
    return "significantly worse" if t > 0 else "significantly better"


def importances(trials: dict[str, Trials]) -> dict[str, dict[str, float]]:
    """fANOVA per variant on the test NLL of its complete trials (capped at BLOWN_UP)."""
    found = {}
    for experiment, t in trials.items():
        capped = [
            {**r, "metrics": {"test_nll": min(r["metrics"]["test_nll"], BLOWN_UP)}}
            for r in t.complete
            if math.isfinite(r["metrics"].get("test_nll", math.nan))
        ]
        found[experiment] = harness.param_importances(capped, "test_nll")
    return found


# --------------------------------------------------------------------------------------------------
# summary.json: what expected.yaml judges


def write_summaries(
    trials: dict[str, Trials], rows: list[dict[str, Any]], weights, tier: str, root: Path
) -> list[Path]:
    """A summary per variant once it and vanilla hold the tier's trials; returns the files written."""
    needed = declared.TRIALS[tier]
    reference = trials.get(declared.REFERENCE)
    if reference is None or len(reference.records) < needed:
        return []
    written = []
    for row in rows:
        found = trials[row["experiment"]]
        if len(found.records) < needed:
            continue
        metrics = {
            "trials": float(row["trials"]),
            "diverged": float(row["diverged"]),
            "median_test_nll": row["median_all"],
            "best_median_test_nll": row["median_best"],
            "best_mean_test_nll": row["mean_best"],
        }
        if row["experiment"] != declared.REFERENCE:
            t, _, p = row["best"]
            if p is not None:
                significant = p < declared.ALPHA
                metrics |= {
                    "welch_t": t,
                    "welch_p": p,
                    "better_than_vanilla": float(significant and t < 0),
                    "worse_than_vanilla": float(significant and t > 0),
                }
            if row["all"][2] is not None:
                metrics["welch_p_all"] = row["all"][2]
        best = min(found.complete, key=lambda r: r["metrics"]["val_nll"], default=None)
        summary = {
            "paper": PAPER,
            "experiment": harness.PREFIX + row["experiment"],
            "tier": tier,
            "seed": None,
            "status": "complete",
            "metrics": metrics,
            "test": (
                f"Welch's t-test, two-sided, p < {declared.ALPHA}, of the best {row['best_n']} of "
                f"{row['trials']} trials by validation NLL against vanilla's best {len(reference.best)}"
            ),
            "importance": weights.get(row["experiment"], {}),
            "best_trial": None
            if best is None
            else {
                "trial": best["search"]["trial"],
                "params": best["search"]["params"],
                "val_nll": best["metrics"]["val_nll"],
                "test_nll": best["metrics"]["test_nll"],
            },
            "trials": [f"trial{r['search']['trial']:03d}.json" for r in found.records],
            "hardware": found.records[0].get("hardware"),
            "wall_time_s": round(sum(r.get("wall_time_s", 0.0) for r in found.records), 2),
            "updated_at": results.now(),
        }
        path = results.run_dir(PAPER, harness.PREFIX + row["experiment"], tier, root) / harness.SUMMARY
        results.write_json(path, summary)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------------
# Figures and the table


def draw_boxes(trials: dict[str, Trials], rows: list[dict[str, Any]], tier: str, out: Path) -> Path:
    fig, axes = plt.subplots(2, 1, figsize=(9, 7))
    names = list(trials)
    by_name = {row["experiment"]: row for row in rows}
    for ax, key, title in (
        (axes[0], "all", "all trials"),
        (
            axes[1],
            "best",
            f"best {declared.BEST_FRACTION:.0%} by validation NLL (at least {declared.BEST_AT_LEAST})",
        ),
    ):
        values = [nlls(trials[n].complete if key == "all" else trials[n].best) for n in names]
        shown = [[v for v in vs if v <= BLOWN_UP] for vs in values]
        boxes = ax.boxplot(
            [vs or [math.nan] for vs in shown],
            tick_labels=[trials[n].name for n in names],
            widths=0.5,
            whis=(0, 100),  # the paper's whiskers span the whole range
            patch_artist=True,
            showmeans=True,
            meanprops={
                "marker": "o",
                "markerfacecolor": "tab:red",
                "markeredgecolor": "tab:red",
                "markersize": 4,
            },
            medianprops={"color": "black"},
        )
        top = max([v for vs in shown for v in vs] + [0.0]) * 1.04 or 1.0
        for k, name in enumerate(names):
            colour = {"significantly worse": "#f4a6a6", "significantly better": "#a6dba0"}.get(
                verdict(by_name[name][key]), "#dbe6f4"
            )
            boxes["boxes"][k].set_facecolor(colour)
            off = len(values[k]) - len(shown[k])
            notes = []
            if off:
                notes.append(f"{off} > {BLOWN_UP:.0f}")
            if key == "all" and trials[name].diverged:
                notes.append(f"{trials[name].diverged} diverged")
            if notes:
                ax.annotate(
                    "\n".join(notes), (k + 1, top), ha="center", va="top", fontsize=7, color="tab:red"
                )
        ax.set_ylim(top=top)
        ax.set_ylabel("test NLL per frame (nats)")
        counts = sorted({len(trials[n].records) for n in names})
        ax.set_title(f"{title} ({'/'.join(map(str, counts))} trials per variant)", fontsize=10)
    fig.suptitle(
        f"JSB Chorales, {tier} tier: the random search (Greff et al. Figure 3 style; red/green: "
        "significantly worse/better than vanilla, Welch p < 0.05)",
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def draw_importance(weights: dict[str, dict[str, float]], tier: str, out: Path) -> Path:
    names = [n for n in weights if weights[n]]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    width = 0.8 / len(PARAMS)
    for j, param in enumerate(PARAMS):
        ax.bar(
            [i + (j - (len(PARAMS) - 1) / 2) * width for i in range(len(names))],
            [weights[n].get(param, 0.0) for n in names],
            width,
            label=param.replace("_", " "),
        )
    ax.set_xticks(range(len(names)), [DISPLAY.get(n, n) for n in names])
    ax.set_ylabel("fraction of variance (main effect)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=4, loc="upper center")
    ax.set_title(
        f"JSB Chorales, {tier} tier: fANOVA importance of each hyperparameter for the test NLL", fontsize=10
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _num(value: float | None, digits: str = ".3f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, digits)


def write_table(
    trials: dict[str, Trials],
    rows: list[dict[str, Any]],
    weights: dict[str, dict[str, float]],
    tier: str,
    out: Path,
) -> Path:
    needed = declared.TRIALS[tier]
    lines = [
        f"# JSB Chorales, {tier} tier: the random search of the nine architectures",
        "",
        f"Each variant's study draws {needed} trials at this tier (the paper: 200) of the four",
        "hyperparameters of spec §4 (`papers/lstm_odyssey/search.py`). Test NLL per predicted frame (nats,",
        f'summed over the 88 keys). "Best": the best 10% of a variant\'s trials by validation NLL, at least '
        f"{declared.BEST_AT_LEAST}.",
        "Welch's t-test of each variant against vanilla, two-sided, significant at",
        f"p < {declared.ALPHA} (positive t: worse). A diverged trial (no finite validation NLL) is counted",
        "but has no test NLL. Generated by",
        "`papers/lstm_odyssey/search_analysis.py` from the trial records in `search_<variant>/"
        + tier
        + "/`.",
        "",
        "| variant | trials | diverged | median, all | median, best | best: mean ± std | t (best) | p (best) "
        "| Welch (best) | p (all) | Welch (all) | the paper (spec §5) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["experiment"] == declared.REFERENCE:
            paper = "reference"
        elif row["experiment"] in WORSE_IN_PAPER:
            paper = "significantly worse"
        else:
            paper = "not significantly better"
        t, _, p = row["best"]
        cells = [
            row["variant"],
            f"{row['trials']}" + ("" if row["trials"] >= needed else f" of {needed}"),
            str(row["diverged"]),
            _num(row["median_all"]),
            _num(row["median_best"]),
            f"{_num(row['mean_best'])} ± {_num(row['std_best'])} ({row['best_n']})",
            _num(t, ".2f"),
            _num(p, ".3g"),
            verdict(row["best"]) if row["experiment"] != declared.REFERENCE else "reference",
            _num(row["all"][2], ".3g"),
            verdict(row["all"]) if row["experiment"] != declared.REFERENCE else "reference",
            paper,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "The paper's claims on these trials (Welch's test on the best trials, as expected.yaml judges them):",
    ]
    better = [r["variant"] for r in rows if verdict(r["best"]) == "significantly better"]
    lines.append(
        "- no variant significantly better than vanilla: "
        + ("holds" if not better else "does not hold: " + ", ".join(better))
    )
    for name in WORSE_IN_PAPER:
        row = next((r for r in rows if r["experiment"] == name), None)
        found = "not run" if row is None else verdict(row["best"])
        lines.append(
            f"- {DISPLAY[name]} significantly worse than vanilla: "
            + ("holds" if found == "significantly worse" else found)
        )
    lines += [
        "",
        "## Hyperparameter importance (fANOVA)",
        "",
        "Fraction of the variance of the test NLL over a variant's complete trials that each",
        "hyperparameter explains alone (Optuna's FanovaImportanceEvaluator, 64 trees; log-drawn ones on",
        f"their log scale; test NLLs above 2 × 88 ln 2 = {BLOWN_UP:.0f} counted as {BLOWN_UP:.0f}).",
        "What the main effects leave is their interactions: the paper finds the hyperparameters",
        '"virtually independent" (main effects near 1) and the learning rate the most important, then the',
        "hidden size [secondary].",
        "",
        "| variant | " + " | ".join(p.replace("_", " ") for p in PARAMS) + " | main effects together |",
        "|---|" + "---|" * (len(PARAMS) + 1),
    ]
    for experiment, found in weights.items():
        if not found:
            continue
        cells = [DISPLAY.get(experiment, experiment), *(_num(found.get(p), ".2f") for p in PARAMS)]
        cells.append(_num(sum(found.values()), ".2f"))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The best trial of each variant (by validation NLL)",
        "",
        "| variant | trial | blocks | learning rate | momentum | input noise | epochs | validation NLL "
        "| test NLL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for found in trials.values():
        if not found.complete:
            continue
        best = min(found.complete, key=lambda r: r["metrics"]["val_nll"])
        sampled = best["search"]["sampled"]
        lines.append(
            f"| {found.name} | {best['search']['trial']} | {sampled['model.hidden_size']} | "
            f"{sampled['model.lr']:.3g} | {sampled['model.momentum']:.3f} | "
            f"{sampled['data.input_noise']:.2f} | {best['epochs_trained']} | "
            f"{best['metrics']['val_nll']:.3f} | {best['metrics']['test_nll']:.3f} |"
        )
    results.atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def make_search_figures(results_dir: Path, tier: str) -> list[Path]:
    trials = load(results_dir, tier)
    if not trials:
        return []
    rows = compare(trials)
    weights = importances(trials)
    return [
        draw_boxes(trials, rows, tier, results_dir / f"search_figure3_{tier}.png"),
        draw_importance(weights, tier, results_dir / f"search_importance_{tier}.png"),
        write_table(trials, rows, weights, tier, results_dir / f"search_{tier}.md"),
        *write_summaries(trials, rows, weights, tier, results_dir.parent),
    ]
