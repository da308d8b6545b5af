"""The committed evidence: writing an aggregate, and re-deriving a committed one from its records.

An aggregate (``results/<paper>/<experiment>/<tier>/aggregate.json``) is a pure function of its records and
of the experiment's ``expected.yaml`` entry: :func:`write_aggregate` computes and writes it, and
:func:`rederive` computes it again from what is committed and names every field in which the committed file
differs. Each metric row carries the expected entry it was judged against (published value, tolerance, gate
tiers, known-miss mark), so a later edit of ``expected.yaml`` shows as a difference until the aggregate is
re-judged on purpose; that re-judging logs the change, with its date, in ``expected_changes``.

The records of a seeded experiment are its ``seed<k>.json`` files; a searched experiment (``search_<name>``,
repro/search.py) is judged from one ``summary.json``. Nothing here reads a data set.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from repro import results
from repro.papers import Experiment, Paper, is_search_experiment
from repro.verdict import judge

SUMMARY = "summary.json"  # a search's judged record (repro/search.py writes it)
EXPECTED_FIELDS = (  # the fields of a metric row that come from expected.yaml, not from the records
    "label",
    "published",
    "evidence",
    "source",
    "direction",
    "tolerance",
    "aggregate",
    "min_k",
    "gate",
    "known_miss",
    "two_sided",
    "gated",
)
# What a field that an older aggregate did not record meant then: its absence is no change from these.
FIELD_DEFAULTS = {"two_sided": False, "known_miss": None, "min_k": 1}
DERIVED_FIELDS = ("experiment", "tier", "selection", "verdict", "hardware", "wall_time_s", "records")


def record_names(experiment: Experiment, folder: Path) -> list[str]:
    """The record files on disk that an aggregate of ``experiment`` in ``folder`` combines."""
    if is_search_experiment(experiment.name):
        return [SUMMARY] if (folder / SUMMARY).exists() else []
    return [p.name for p in sorted(folder.glob("seed*.json"), key=_seed_number)]


def _seed_number(path: Path) -> int:
    return int(path.stem.removeprefix("seed"))


def name_of(experiment: Experiment, record: dict[str, Any]) -> str:
    return SUMMARY if is_search_experiment(experiment.name) else f"seed{record['seed']}.json"


def aggregate_of(
    paper: Paper, experiment: Experiment, tier: str, records: list[dict[str, Any]], data_present: bool = True
) -> dict[str, Any]:
    """The aggregate ``records`` give, less its history and time stamp."""
    return {
        "paper": paper.name,
        **judge(experiment, records, tier, data_present),
        "hardware": records[0].get("hardware") if records else None,
        "wall_time_s": round(sum(r.get("wall_time_s") or 0 for r in records), 2),
        "records": [name_of(experiment, r) for r in records],
    }


def write_aggregate(
    paper: Paper, experiment: Experiment, tier: str, records: list[dict[str, Any]], root: Path
) -> dict[str, Any]:
    """Judge ``records`` and write them as the aggregate under ``root`` (nothing is written without records);
    a change of the expected.yaml entry since the aggregate it replaces is logged with its date."""
    fresh = aggregate_of(paper, experiment, tier, records, experiment.data_present())
    path = results.run_dir(paper.name, experiment.name, tier, root) / "aggregate.json"
    previous = results.read_json(path) if path.exists() else {}
    history = list(previous.get("expected_changes", []))
    if previous and (changed := expected_changes(previous, fresh)):
        history.append({"at": results.now(), "fields": changed})
    payload = {**fresh, "expected_changes": history, "updated_at": results.now()}
    if records:
        results.write_json(path, payload)
    return payload


def rederive(
    paper: Paper, experiment: Experiment, tier: str, path: Path
) -> tuple[dict[str, Any] | None, list[str]]:
    """The aggregate the committed records in ``path``'s folder give, and every difference from the committed
    ``path`` (None when the records it lists are not there)."""
    stored = results.read_json(path)
    on_disk = record_names(experiment, path.parent)
    listed = stored.get("records", [])
    missing = [name for name in listed if name not in on_disk]
    if missing:
        return None, [f"lists records that do not exist: {', '.join(missing)}"]
    problems = []
    unlisted = [name for name in on_disk if name not in listed]
    if unlisted:
        problems.append(f"records on disk that the aggregate does not combine: {', '.join(unlisted)}")
    records = [results.read_json(path.parent / name) for name in listed]
    fresh = aggregate_of(paper, experiment, tier, records)
    return fresh, problems + differences(stored, fresh)


def same(a: Any, b: Any) -> bool:
    """Equality of JSON values in which NaN equals NaN (a metric a seed could not compute)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    numbers = isinstance(a, int | float) and isinstance(b, int | float)
    return (type(a) is type(b) or numbers) and a == b


def _row_names(aggregate: dict[str, Any]) -> list[str]:
    """``metrics[key]`` per row; a key that two rows share (one number gated two ways) gets its position."""
    keys = [row["key"] for row in aggregate.get("metrics", [])]
    return [
        f"metrics[{key}]" if keys.count(key) == 1 else f"metrics[{key}#{i}]" for i, key in enumerate(keys)
    ]


def _paired_rows(stored: dict[str, Any], fresh: dict[str, Any]):
    """(name, committed row or None, fresh row or None) for every metric row of either aggregate."""
    before = dict(zip(_row_names(stored), stored.get("metrics", []), strict=True))
    after = dict(zip(_row_names(fresh), fresh["metrics"], strict=True))
    return [(name, before.get(name), after.get(name)) for name in dict.fromkeys([*after, *before])]


def differences(stored: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Every field in which a committed aggregate differs from the one its records and the current
    expected.yaml give, named by its path: ``verdict``, ``metrics[auc].mean``, ``metrics[auc].tolerance``."""
    found = [
        f"{field}: committed {stored.get(field)!r}, the records give {fresh.get(field)!r}"
        for field in DERIVED_FIELDS
        if not same(stored.get(field), fresh.get(field))
    ]
    for name, old, row in _paired_rows(stored, fresh):
        if old is None:
            found.append(f"{name}: in expected.yaml, not in the committed aggregate")
        elif row is None:
            found.append(f"{name}: in the committed aggregate, no longer in expected.yaml")
        else:
            for field, value in row.items():
                if field not in old:
                    found.append(f"{name}.{field}: not recorded in the committed aggregate")
                elif not same(old[field], value):
                    source = "expected.yaml now has" if field in EXPECTED_FIELDS else "the records give"
                    found.append(f"{name}.{field}: committed {old[field]!r}, {source} {value!r}")
    return found


def expected_changes(stored: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """The fields of ``fresh`` whose expected.yaml entry differs from the one ``stored`` was judged against
    (``metrics[auc].tolerance``); a field that ``stored`` did not record is no change."""
    changed = []
    for name, old, row in _paired_rows(stored, fresh):
        if old is None or row is None:
            changed.append(name)
            continue
        changed += [
            f"{name}.{field}"
            for field in EXPECTED_FIELDS
            if (field in old or field in FIELD_DEFAULTS)
            and not same(old.get(field, FIELD_DEFAULTS.get(field)), row[field])
        ]
    return changed


def mean_wall_seconds(paper: Paper, tier: str, root: Path) -> dict[str, float]:
    """Per experiment, the mean wall time of its seed records under ``root`` at ``tier`` (resumed records,
    which timed only their last part, left out): what a run's estimate is made of."""
    seconds = {}
    for name in paper.experiments:
        walls = [
            r["wall_time_s"]
            for r in results.load_records(paper.name, name, tier, root)
            if r.get("wall_time_s") and not r.get("resumed_from")
        ]
        if walls:
            seconds[name] = sum(walls) / len(walls)
    return seconds
