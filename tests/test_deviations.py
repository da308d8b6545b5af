"""The deviations ledger (``deviations:`` of every expected.yaml): its schema, that every paper keeps one,
that the configs agree with what it declares, and that each README's generated table is current."""

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from repro import config as repro_config
from repro.leaderboard import (
    DEVIATIONS_END,
    DEVIATIONS_START,
    collect,
    deviations_table,
    replace_between_markers,
    sync_deviations,
)
from repro.papers import TIERS, Deviation, Paper, discover, load_paper
from tests import toy
from tests.toy import assert_rejected, write_paper

PAPERS = discover()


# -----------------------------------------------------------------------------
# Every paper keeps a ledger


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_every_paper_has_a_ledger(name):
    paper = PAPERS[name]
    assert paper.deviations, f"{name}: expected.yaml has no deviations: ledger"
    ids = [d.id for d in paper.deviations]
    assert len(ids) == len(set(ids)), f"{name}: duplicate ids {ids}"
    for d in paper.deviations:
        assert isinstance(d, Deviation)
        assert d.tiers and set(d.tiers) <= set(TIERS)
        assert d.experiments and set(d.experiments) <= set(paper.experiments), d.id
        assert d.against in ("paper", "code", "both")
        assert d.effect.startswith(("measured:", "expected:", "unmeasured")), d.id
        assert d.what and d.why


def _lookup(config: dict[str, Any], key: str) -> tuple[bool, Any]:
    """``model.init_args.lr`` (or ``model.lr``: ``init_args`` may be left out, as in overrides)."""
    parts = key.split(".")
    candidates = [parts]
    if len(parts) > 1 and parts[1] != "init_args":
        candidates.append([parts[0], "init_args", *parts[1:]])
    for path in candidates:
        node: Any = config
        for part in path:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return True, node
    return False, None


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


@cache
def _raw(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


@cache
def _resolved(path: Path) -> dict[str, Any]:
    return repro_config.load(path)


def config_value(path: Path, key: str) -> tuple[bool, Any]:
    """The key's value in a pinned config: as the file states it, or, where the file leaves it to a default,
    in the resolved config (``repro.config.load``: every default written out). Resolving costs ~0.15 s a
    file, and the ledgers name some 360 configs, so a key the file pins is read from the file."""
    found, value = _lookup(_raw(path), key)
    if found:
        return found, value
    return _lookup(_resolved(path), key)


def _config_cases():
    for name, paper in sorted(PAPERS.items()):
        for d in paper.deviations:
            if d.config:
                yield pytest.param(name, d.id, id=f"{name}-{d.id}")


@pytest.mark.parametrize(("name", "deviation_id"), list(_config_cases()))
def test_configs_agree_with_the_ledger(name, deviation_id):
    """Every experiment an entry names holds, at each tier it lists where a config exists, the declared
    value of every key of its ``config``."""
    paper = PAPERS[name]
    (deviation,) = [d for d in paper.deviations if d.id == deviation_id]
    checked, wrong = 0, []
    for experiment in deviation.experiments:
        for tier in deviation.tiers:
            path = paper.config_path(experiment, tier)
            if not path.exists():
                continue
            for key, declared in deviation.config:
                found, actual = config_value(path, key)
                checked += 1
                if not found or _plain(actual) != _plain(declared):
                    wrong.append(
                        f"{path.name}: {key} = {actual if found else '<absent>'!r}, ledger: {declared!r}"
                    )
    assert not wrong, f"{name} deviation '{deviation_id}' disagrees with configs:\n" + "\n".join(wrong)
    assert checked, (
        f"{name} deviation '{deviation_id}' declares config but names no configured experiment/tier"
    )


def test_config_lookup_reads_defaults_from_the_resolved_config():
    path = PAPERS["lstm_odyssey"].config_path("vanilla", "cpu")
    assert "loss_reduction" not in _raw(path)["model"]["init_args"]  # left to the constructor's default
    assert config_value(path, "model.init_args.loss_reduction") == (True, "frame")
    assert config_value(path, "model.lr") == (True, 0.3)
    assert config_value(path, "model.init_args.no_such_key") == (False, None)


# -----------------------------------------------------------------------------
# Schema: errors name the file and the dotted field


def toy_expected() -> dict:
    """The shared toy paper, a second experiment and a ledger; the tests below break one field at a time."""
    body = toy.toy_expected()
    body["experiments"]["other"] = {
        "title": "Another",
        "metrics": [
            {
                "key": "acc",
                "label": "accuracy",
                "published": None,
                "source": "-",
                "evidence": "paper",
                "direction": "higher",
            }
        ],
    }
    body["deviations"] = [
        {
            "id": "short-training",
            "what": "10 epochs instead of 100",
            "why": "the cpu budget",
            "tiers": ["cpu"],
            "experiments": ["exp"],
            "effect": "measured: 1 point lower",
            "against": "paper",
            "config": {"trainer.max_epochs": 10},
        },
        {
            "id": "rng",
            "what": "numpy instead of C rand()",
            "why": "Python",
            "tiers": ["smoke", "cpu", "full"],
            "experiments": "all",
            "effect": "unmeasured",
            "against": "code",
        },
    ]
    return body


def test_valid_ledger_loads(tmp_path):
    paper = load_paper(write_paper(tmp_path, toy_expected()).parent)
    short, rng = paper.deviations
    assert short == Deviation(
        id="short-training",
        what="10 epochs instead of 100",
        why="the cpu budget",
        tiers=("cpu",),
        experiments=("exp",),
        effect="measured: 1 point lower",
        against="paper",
        config=(("trainer.max_epochs", 10),),
    )
    assert rng.all_experiments and rng.experiments == ("exp", "other") and rng.tiers == TIERS
    assert (
        short.affects("exp", "cpu") and not short.affects("exp", "full") and not short.affects("other", "cpu")
    )
    with pytest.raises(AttributeError):
        short.id = "x"  # frozen


def test_a_paper_without_a_ledger_still_loads(tmp_path):
    body = toy_expected()
    body.pop("deviations")
    assert load_paper(write_paper(tmp_path, body).parent).deviations == ()


def dev0(d: dict) -> dict:
    return d["deviations"][0]


D0 = "deviations[0]"
BROKEN = [
    ("not a list", lambda d: d.update(deviations={"id": "x"}), "deviations", "expected a list"),
    ("unknown key", lambda d: dev0(d).update(wht="x"), f"{D0}.wht", "did you mean 'what'?"),
    ("missing why", lambda d: dev0(d).pop("why"), f"{D0}.why", "is required"),
    ("missing effect", lambda d: dev0(d).pop("effect"), f"{D0}.effect", "is required"),
    ("bad slug", lambda d: dev0(d).update(id="Short Training"), f"{D0}.id", "short slug"),
    ("empty tiers", lambda d: dev0(d).update(tiers=[]), f"{D0}.tiers", "must be a non-empty list"),
    ("tiers not a list", lambda d: dev0(d).update(tiers="cpu"), f"{D0}.tiers", "non-empty list"),
    ("bad tier", lambda d: dev0(d).update(tiers=["gpu"]), f"{D0}.tiers", "must be one of smoke, cpu, full"),
    (
        "unknown experiment",
        lambda d: dev0(d).update(experiments=["exq"]),
        f"{D0}.experiments",
        "no experiment 'exq' in this file; did you mean 'exp'?",
    ),
    ("experiments text", lambda d: dev0(d).update(experiments="every"), f"{D0}.experiments", "'all' or"),
    (
        "bad against",
        lambda d: dev0(d).update(against="spec"),
        f"{D0}.against",
        "must be one of paper, code, both",
    ),
    ("bad effect", lambda d: dev0(d).update(effect="small"), f"{D0}.effect", "must start with 'measured:'"),
    ("config not a map", lambda d: dev0(d).update(config=["x"]), f"{D0}.config", "expected a mapping"),
    (
        "config section",
        lambda d: dev0(d).update(config={"optimizer.lr": 1}),
        f"{D0}.config.optimizer.lr",
        "dotted key under model., data. or trainer.",
    ),
    (
        "duplicate id",
        lambda d: d["deviations"][1].update(id="short-training"),
        "deviations[1].id",
        "used by an earlier deviation",
    ),
]


@pytest.mark.parametrize(("edit", "field", "problem"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_malformed_ledger_names_file_and_field(tmp_path, edit, field, problem):
    body = toy_expected()
    edit(body)
    assert_rejected(tmp_path, body, field, problem)


# -----------------------------------------------------------------------------
# Generated views: README tables and leaderboard notes


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_readme_holds_the_generated_table(name):
    """Each README has the markers, and what is between them is what `make leaderboard` would write."""
    paper = PAPERS[name]
    text = (paper.folder / "README.md").read_text()
    assert text.count(DEVIATIONS_START) == 1 and text.count(DEVIATIONS_END) == 1, name
    current = text.split(DEVIATIONS_START, 1)[1].split(DEVIATIONS_END, 1)[0]
    assert current == "\n" + "\n".join(deviations_table(paper)) + "\n", (
        f"{name}: the README's deviations table is stale; run `make leaderboard`"
    )
    for d in paper.deviations:
        assert f"| `{d.id}` |" in current


def _toy_paper(tmp_path: Path) -> Paper:
    path = write_paper(tmp_path, toy_expected())
    return load_paper(path.parent)


def test_sync_deviations_rewrites_only_between_its_markers(tmp_path):
    paper = _toy_paper(tmp_path)
    readme = paper.folder / "README.md"
    readme.write_text(f"# Toy\n\nprose\n{DEVIATIONS_START}\nstale\n{DEVIATIONS_END}\nafter\n")
    sync_deviations({"toy": paper})
    text = readme.read_text()
    assert text.startswith("# Toy\n\nprose\n") and text.endswith(f"{DEVIATIONS_END}\nafter\n")
    assert "stale" not in text
    assert (
        "| `short-training` | 10 epochs instead of 100. Config: `trainer.max_epochs` = 10. | paper | cpu | "
        "exp |" in text
    )
    assert (
        "| `rng` | numpy instead of C rand() | code | smoke, cpu, full | all | Python | unmeasured |" in text
    )
    once = text
    sync_deviations({"toy": paper})
    assert readme.read_text() == once  # regenerating changes nothing


def test_replace_between_markers_leaves_a_file_without_them_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert not replace_between_markers(readme, "x", DEVIATIONS_START, DEVIATIONS_END)
    assert readme.read_text() == "no markers\n"


def test_leaderboard_notes_name_the_deviations_of_the_row(tmp_path):
    paper = _toy_paper(tmp_path)
    results = tmp_path / "results"
    for tier in ("cpu", "full"):
        agg = results / "toy" / "exp" / tier / "aggregate.json"
        agg.parent.mkdir(parents=True)
        metric = {"key": "acc", "label": "accuracy", "published": 90.0, "evidence": "paper"}
        agg.write_text(json.dumps({"paper": "toy", "experiment": "exp", "tier": tier, "metrics": [metric]}))
    rows = {(r["experiment"], r["tier"]): r for r in collect(results, {"toy": paper})}
    assert rows[("exp", "cpu")]["note"] == "deviations: short-training, rng"
    assert rows[("exp", "full")]["note"] == "deviations: rng"
    assert rows[("other", "")]["note"] == "no aggregate committed yet"  # no tier: nothing to name
