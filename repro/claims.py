"""Judge a paper's claims (``claims:`` of expected.yaml): relations between experiments, from aggregates.

A claim compares the numbers that experiments' aggregates report (``reproduced``: what each metric's own
verdict compares, the mean or the selected seed's value). For a pair, the gain of ``better`` over ``worse`` is
better - worse on a higher-is-better metric and worse - better on a lower-is-better one:

* ``better``/``worse`` holds when gain >= margin (``-spread``: minus std_better + std_worse, the two
  experiments' seed spreads as their aggregates report them; it needs two seeds of each);
* ``grows`` holds when the gains of its pairs strictly increase along the list.

At a tier where an experiment it names has no aggregate the claim is "NOT RUN", never a failure. Otherwise it
is SHOWN where it does not gate, and PASS, MISS, or "MISS (known)" (a miss its ``known_miss`` lists) where it
does. A value an aggregate does not report (NaN: no seed measured it) makes the claim not hold. Nothing here
reads a data set or a seed record: ``repro check`` passes the aggregates it re-derived from the committed
records, the leaderboard the committed aggregate files.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from repro import results
from repro.papers import SPREAD, TIERS, Claim, Pair, Paper, Side
from repro.verdict import KNOWN_MISS, MISS, NOT_RUN, PASS, SHOWN, fmt

Aggregates = dict[tuple[str, str], dict[str, Any]]  # (experiment, tier) -> aggregate


def committed(paper: Paper, root: Path) -> Aggregates:
    """The committed aggregates under ``root`` of every experiment the paper's claims name."""
    found = {}
    for name in dict.fromkeys(n for claim in paper.claims for n in claim.experiments):
        for tier in TIERS:
            path = results.run_dir(paper.name, name, tier, root) / "aggregate.json"
            if path.exists():
                found[(name, tier)] = results.read_json(path)
    return found


def judge_all(paper: Paper, aggregates: Aggregates, tiers: tuple[str, ...] = TIERS) -> list[dict[str, Any]]:
    """Every claim of the paper at each of its tiers among ``tiers``, in expected.yaml's order."""
    return [judge(claim, aggregates, tier) for claim in paper.claims for tier in claim.tiers if tier in tiers]


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def side_value(aggregate: dict[str, Any], side: Side) -> tuple[float | None, float | None, int]:
    """(the compared number, the seeds' std, the number of seeds) of ``side``'s metric in its aggregate."""
    row = next((r for r in aggregate.get("metrics", []) if r["key"] == side.metric), None)
    if row is None:
        return None, None, 0
    return _number(row.get("reproduced")), _number(row.get("std")), int(row.get("n") or 0)


def judge(claim: Claim, aggregates: Aggregates, tier: str) -> dict[str, Any]:
    """One claim at one tier: its pairs' values and gains, whether it holds, and its verdict."""
    missing = [name for name in claim.experiments if (name, tier) not in aggregates]
    pairs = [_pair(pair, aggregates, tier) for pair in claim.pairs]
    out: dict[str, Any] = {
        "id": claim.id,
        "statement": claim.statement,
        "source": claim.source,
        "evidence": claim.evidence,
        "note": claim.note,
        "tier": tier,
        "gated": claim.gates_at(tier),
        "relation": "grows" if claim.grows else "beats",
        "pairs": pairs,
        "declared_margin": None if claim.grows else claim.margin,
        "margin": None,  # the margin judged against (-spread resolved); None for grows
        "holds": None,
        "known_miss": None,
    }
    if missing:
        out["verdict"] = NOT_RUN
        out["text"] = f"not run: no {tier} aggregate of {', '.join(missing)}"
        return out
    problems = [
        f"{side['experiment']} reports no {side['metric']}"
        for pair in pairs
        for side in (pair["better"], pair["worse"])
        if side["value"] is None
    ]
    gains = [p["gain"] for p in pairs]
    if claim.grows:
        holds = not problems and all(a < b for a, b in zip(gains, gains[1:], strict=False))
        detail = "gains " + " < ".join(_signed(g) for g in gains)
    else:
        margin = claim.margin
        if margin == SPREAD and not problems:
            (pair,) = pairs
            if min(pair["better"]["n"], pair["worse"]["n"]) < 2:
                problems.append("the seed spread needs two seeds of each")
            else:
                margin = -(pair["better"]["std"] + pair["worse"]["std"])
        out["margin"] = None if isinstance(margin, str) else margin
        holds = not problems and gains[0] >= margin - 1e-9
        detail = f"gain {_signed(gains[0])} >= margin {fmt(margin)}" if not problems else ""
    out["holds"] = holds
    known = claim.known_miss_at(tier)
    out["known_miss"] = {"why": known.why, "since": known.since} if known else None
    if not out["gated"]:
        out["verdict"] = SHOWN
    elif holds:
        out["verdict"] = PASS
    else:
        out["verdict"] = KNOWN_MISS if known else MISS
    values = "; ".join(_pair_text(p) for p in pairs)
    verdict = "holds" if holds else "does not hold"
    out["text"] = f"{values}: " + (
        f"{verdict} ({'; '.join(problems)})" if problems else f"{detail}: {verdict}"
    )
    return out


def _pair(pair: Pair, aggregates: Aggregates, tier: str) -> dict[str, Any]:
    """Both sides of a pair with what their aggregates at ``tier`` report (nothing where there is none)."""
    row: dict[str, Any] = {"direction": pair.direction}
    for name, side in (("better", pair.better), ("worse", pair.worse)):
        found = aggregates.get((side.experiment, tier))
        value, std, n = side_value(found, side) if found is not None else (None, None, 0)
        row[name] = {"experiment": side.experiment, "metric": side.metric, "value": value, "std": std, "n": n}
    better, worse = row["better"]["value"], row["worse"]["value"]
    if better is None or worse is None:
        row["gain"] = None
    else:
        row["gain"] = better - worse if pair.direction == "higher" else worse - better
    return row


def _signed(value: float | None) -> str:
    return "–" if value is None else ("+" if value > 0 else "") + fmt(value)


def _pair_text(pair: dict[str, Any]) -> str:
    better, worse = pair["better"], pair["worse"]
    return (
        f"{better['experiment']} {fmt(better['value'])} vs {worse['experiment']} {fmt(worse['value'])} "
        f"({_metrics(pair)}, {pair['direction']} is better)"
    )


def _metrics(pair: dict[str, Any]) -> str:
    better, worse = pair["better"]["metric"], pair["worse"]["metric"]
    return better if better == worse else f"{better} vs {worse}"


def passing_known_misses(judged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The judged claims that carry a known-miss mark at their tier and hold: the mark must go."""
    return [c for c in judged if c["known_miss"] and c["verdict"] == PASS]


VERDICTS = (PASS, MISS, KNOWN_MISS, SHOWN, NOT_RUN)  # the order summaries count them in


def summary(judged: list[dict[str, Any]]) -> str:
    """'5 claims: 1 PASS, 2 SHOWN, 2 NOT RUN' (a claim judged at two tiers counts twice)."""
    counts = Counter(c["verdict"] for c in judged)
    parts = [f"{counts[v]} {v}" for v in VERDICTS if counts[v]]
    return f"{len(judged)} claim{'' if len(judged) == 1 else 's'}" + (
        ": " + ", ".join(parts) if parts else ""
    )


COLUMNS = ("claim", "statement", "compared", "values", "margin", "verdict", "tier", "note")


def cells(claim: dict[str, Any]) -> dict[str, str]:
    """A judged claim as the leaderboard's and the READMEs' tables show it, a text per ``COLUMNS``."""
    pairs = claim["pairs"]
    compared = "; ".join(
        f"{p['better']['experiment']} over {p['worse']['experiment']} ({_metrics(p)})" for p in pairs
    )
    if claim["verdict"] == NOT_RUN:
        values = "–"
    elif claim["relation"] == "beats":
        (pair,) = pairs
        values = (
            f"{fmt(pair['better']['value'])} vs {fmt(pair['worse']['value'])}, gain {_signed(pair['gain'])}"
        )
    else:
        values = "gains " + ", ".join(_signed(p["gain"]) for p in pairs)
    if claim["relation"] == "grows":
        margin = "each gain larger than the one before"
    elif claim["declared_margin"] == SPREAD:
        margin = "minus the seed spread" + (
            f" ({fmt(claim['margin'])})" if claim["margin"] is not None else ""
        )
    else:
        margin = fmt(claim["declared_margin"]) if claim["declared_margin"] else "0"
    known = claim["known_miss"] if claim["verdict"] == KNOWN_MISS else None
    judged = claim["verdict"] != NOT_RUN
    parts = (
        claim["text"] if not judged else "",
        f"known miss (since {known['since']}): {known['why']}" if known else "",
        "holds" if claim["holds"] else "does not hold" if judged else "",
        "" if claim["gated"] or not judged else "not gated",
        f"[{claim['evidence']}] {claim['source']}",
        claim["note"],
    )
    return {
        "claim": claim["id"],
        "statement": claim["statement"],
        "compared": compared,
        "values": values,
        "margin": margin,
        "verdict": claim["verdict"],
        "tier": claim["tier"],
        "note": "; ".join(part for part in parts if part),
    }
