"""Combine seeds and judge them against ``expected.yaml``.

One function, :func:`judge`, takes an experiment's metafile entry and its per-seed records and returns the
aggregate that ``results/.../aggregate.json`` stores. The rules:

* seeds combine as the paper did: ``selected`` (the seed picked by the selection rule, e.g. lowest validation
  entropy; a metric may name its own rule), ``mean`` (reported as mean ± sample std), or ``k_of_n`` (seeds
  reaching the published value);
* a metric *agrees* with the paper when it is at least as good as the published value less the tolerance
  (``higher``: v >= published - tol; ``lower``: v <= published + tol; tol is absolute or relative); a
  ``two_sided`` metric (a baseline) agrees only when |v - published| <= tol;
* it *gates* only at the tiers its entry lists and never when its evidence is [unverified];
* a gated miss that ``expected.yaml`` marks as known at that tier is "MISS (known)": it stays in the gate and
  in every table, with its reason, but does not fail ``repro check``; a marked metric that passes is a PASS
  that ``repro check`` reports until the mark is removed;
* an experiment without records whose data is absent is "not run", one the suite does not implement is "not
  implemented": neither is ever a pass. Records are judged whether or not the data is on this machine.
"""

from __future__ import annotations

import math
from typing import Any

from repro.papers import Experiment, Metric, Selection

PASS, MISS, KNOWN_MISS, SHOWN, NOT_RUN, NOT_IMPLEMENTED, NO_RESULT = (
    "PASS",
    "MISS",
    "MISS (known)",
    "SHOWN",
    "NOT RUN",
    "NOT IMPLEMENTED",
    "NO RESULT",
)


def tolerance_of(metric: Metric) -> float:
    if metric.published is None:
        return math.nan
    if "rel" in metric.tolerance:
        return metric.tolerance["rel"] * abs(metric.published)
    return metric.tolerance["abs"]


def agrees(metric: Metric, value: float | None) -> bool | None:
    """Whether ``value`` reproduces the published number; None when either is missing."""
    if metric.published is None or value is None or math.isnan(value):
        return None
    tol = tolerance_of(metric)
    # A small epsilon absorbs float noise in values such as 100 * 58 / 58.
    if metric.two_sided:
        return abs(value - metric.published) <= tol + 1e-9
    if metric.direction == "higher":
        return value >= metric.published - tol - 1e-9
    return value <= metric.published + tol + 1e-9


def select_seed(rule: Selection, records: list[dict[str, Any]]) -> int | None:
    """Index of the record the selection rule keeps (None for rule 'mean' or when nothing qualifies)."""
    if rule.rule != "best" or not records:
        return None
    scored = [(r["metrics"].get(rule.by), i) for i, r in enumerate(records)]
    scored = [(v, i) for v, i in scored if v is not None and not math.isnan(v)]
    if not scored:
        return None
    best = min(scored) if rule.mode == "min" else max(scored)
    return best[1]


def mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return mean, math.sqrt(var)


def judge(
    experiment: Experiment,
    records: list[dict[str, Any]],
    tier: str,
    data_present: bool = True,
) -> dict[str, Any]:
    """The aggregate of one experiment at one tier: per-metric numbers, verdicts, and the overall verdict."""
    selected = select_seed(experiment.selection, records)
    rows = []
    for metric in experiment.metrics:
        values = [r["metrics"].get(metric.key) for r in records]
        chosen = selected if metric.selection is None else select_seed(metric.selection, records)
        mean, std = mean_std(values)
        k = sum(bool(agrees(metric, v)) for v in values)
        known = metric.known_miss_at(tier)
        row: dict[str, Any] = {
            "key": metric.key,
            "label": metric.label,
            # The expected.yaml entry this row was judged against, so that a later change of a published
            # value, tolerance or gate shows as a difference from the committed aggregate.
            "published": metric.published,
            "evidence": metric.evidence,
            "source": metric.source,
            "direction": metric.direction,
            "tolerance": metric.tolerance,
            "aggregate": metric.aggregate,
            "min_k": metric.min_k,
            "gate": list(metric.gate),
            "known_miss": {"why": known.why, "since": known.since} if known else None,
            "two_sided": metric.two_sided,
            "gated": metric.gates_at(tier),
            "values": values,
            "seeds": [r.get("seed") for r in records],
            "mean": mean,
            "std": std,
            "selected": values[chosen] if chosen is not None else None,
            "selected_seed": records[chosen].get("seed") if chosen is not None else None,
            "k": k,
            "n": len(records),
        }
        row["reproduced"] = _reproduced(metric, row)
        row["text"] = _text(metric, row)
        row["verdict"] = _verdict(experiment, metric, row, tier, data_present)
        rows.append(row)
    gated = [r for r in rows if r["gated"]]
    if not experiment.implemented:
        overall = NOT_IMPLEMENTED
    elif not records:
        overall = NO_RESULT if data_present else NOT_RUN
    elif any(r["verdict"] == MISS for r in gated):
        overall = MISS
    elif any(r["verdict"] == KNOWN_MISS for r in gated):
        overall = KNOWN_MISS
    elif gated:
        overall = PASS
    else:
        overall = SHOWN
    return {
        "experiment": experiment.name,
        "tier": tier,
        "selection": {
            "rule": experiment.selection.rule,
            "by": experiment.selection.by,
            "mode": experiment.selection.mode,
            "selected_seed": records[selected].get("seed") if selected is not None else None,
        },
        "metrics": rows,
        "verdict": overall,
    }


def _reproduced(metric: Metric, row: dict[str, Any]) -> float | None:
    if metric.aggregate == "selected":
        return row["selected"]
    if metric.aggregate == "k_of_n":
        return float(row["k"])
    return None if math.isnan(row["mean"]) else row["mean"]


def _verdict(
    experiment: Experiment, metric: Metric, row: dict[str, Any], tier: str, data_present: bool
) -> str:
    if not experiment.implemented:
        return NOT_IMPLEMENTED
    if not row["n"]:
        return NO_RESULT if data_present else NOT_RUN
    if not row["gated"]:
        return SHOWN
    if metric.aggregate == "k_of_n":
        passed = row["k"] >= metric.min_k
    else:
        passed = bool(agrees(metric, row["reproduced"]))
    if passed:
        return PASS
    return KNOWN_MISS if row["known_miss"] else MISS


def passing_known_misses(aggregate: dict[str, Any]) -> list[str]:
    """Labels of the metrics of an aggregate that carry a known-miss mark and pass: the mark must go."""
    return [row["label"] for row in aggregate["metrics"] if row.get("known_miss") and row["verdict"] == PASS]


def fmt(value: float | None, digits: int = 3) -> str:
    """``digits`` significant figures, and at least one decimal from 1 up (1.68 nats, 57.3%, 100.0%)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if abs(value) < 1:
        return f"{value:.{digits}g}"
    return f"{value:.{max(digits - len(str(int(abs(value)))), 1)}f}"


def _text(metric: Metric, row: dict[str, Any]) -> str:
    """Human-readable reproduced value: the compared number first, the spread over seeds after it."""
    if not row["n"]:
        return "–"
    spread = f"{fmt(row['mean'])} ± {fmt(row['std'])} over {row['n']} seeds" if row["n"] > 1 else ""
    count = f"{row['k']}/{row['n']} seeds reach it" if metric.published is not None else ""
    if metric.aggregate == "selected":
        head = f"{fmt(row['selected'])} (selected seed)"
    elif metric.aggregate == "k_of_n":
        head = f"{row['k']} of {row['n']} seeds"
        count = ""
    else:
        head = fmt(row["mean"]) if row["n"] == 1 else ""
    return "; ".join(part for part in (head, spread, count) if part)
