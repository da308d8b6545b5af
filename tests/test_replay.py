"""``repro replay``: a committed seed re-trained from scratch must give its record back.

A stack_rnn a^n b^n smoke seed (seconds) stands in for a committed record: trained once into a temporary
"committed" results root, then replayed against it as it is, with the model's code changed on purpose, and
against tampered copies of the record.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

import papers.stack_rnn.model as stack_model
from repro import papers, replay, results
from repro.papers import ExpectedError, Replay
from tests import runs
from tests.toy import toy_expected, write_paper

PAPER, EXPERIMENT = "stack_rnn", "stack_anbn"
ENTRY = Replay(EXPERIMENT, "smoke", 1)
LABEL = f"{PAPER}/{EXPERIMENT}/smoke seed 1"


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    """The results root holding the 'committed' smoke record (never changed: tests tamper copies)."""
    root = tmp_path_factory.mktemp("committed")
    runs.module_smoke(PAPER, EXPERIMENT, root)
    return root


@pytest.fixture
def committed_copy(committed, tmp_path) -> Path:
    """A copy of the committed root that a test may tamper with."""
    return shutil.copytree(committed, tmp_path / "committed")


def edit_record(root: Path, edit) -> None:
    path = results.record_path(PAPER, EXPERIMENT, "smoke", 1, root)
    record = results.read_json(path)
    edit(record)
    results.write_json(path, record)


@pytest.fixture
def with_entries(monkeypatch):
    """Make the handler see stack_rnn with the given replay entries instead of its expected.yaml's."""

    def use(*entries: Replay) -> None:
        real = papers.get_paper(PAPER)
        monkeypatch.setattr(replay, "get_paper", lambda name: dataclasses.replace(real, replay=entries))

    return use


def run_replay(root: Path, *argv: str) -> int:
    """The handler through its own parser, as repro.cli wires it (``--results`` is the top-level option)."""
    parser = argparse.ArgumentParser(prog="repro")
    parser.add_argument("--results", type=Path)
    replay.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["--results", str(root), "replay", *argv])
    return args.func(args)


@pytest.fixture
def two_threads():
    """Torch on two threads, so that the replay's one thread has something to restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_unchanged_code_replays_bit_for_bit_and_restores_the_process(
    committed, with_entries, two_threads, capsys
):
    with_entries(ENTRY)
    deterministic = torch.are_deterministic_algorithms_enabled()
    seed_variable = os.environ.get("PL_GLOBAL_SEED")
    record = results.record_path(PAPER, EXPERIMENT, "smoke", 1, committed)
    written = record.read_bytes()
    assert run_replay(committed, PAPER) == 0
    out = capsys.readouterr().out
    assert f"re-training {LABEL}" in out
    assert f"OK {LABEL}" in out
    assert "DIFF" not in out
    # run_seed's process-wide changes are undone, and the committed side is only read.
    assert torch.get_num_threads() == 2
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert os.environ.get("PL_GLOBAL_SEED") == seed_variable
    assert [p.name for p in committed.rglob("*.json")] == ["seed1.json"]
    assert record.read_bytes() == written


def test_changed_model_code_is_a_metric_difference(committed, with_entries, monkeypatch, capsys):
    # The weights' init range, scaled on purpose: the same seed now trains a different model.
    original = stack_model.three_uniform_
    monkeypatch.setattr(stack_model, "three_uniform_", lambda weight: original(weight).mul_(2.0))
    with_entries(ENTRY)
    assert run_replay(committed, PAPER) == 1
    out = capsys.readouterr().out
    committed_entropy = results.read_json(results.record_path(PAPER, EXPERIMENT, "smoke", 1, committed))[
        "metrics"
    ]["val_entropy"]
    assert f"DIFF {LABEL}: metrics.val_entropy committed {committed_entropy!r} replayed " in out
    assert f"DIFF {LABEL}: config." not in out  # the config is unchanged: only what the code computes moved


def test_tampered_metric_is_named_with_full_precision(committed_copy):
    def nudge(record):  # one unit in the last place: bit for bit means bit for bit
        record["metrics"]["val_entropy"] = math.nextafter(record["metrics"]["val_entropy"], math.inf)

    edit_record(committed_copy, nudge)
    tampered = results.read_json(results.record_path(PAPER, EXPERIMENT, "smoke", 1, committed_copy))
    exact = replay.replay_entry(PAPER, ENTRY, committed_copy)
    assert not exact.matched
    (difference,) = exact.differences
    assert difference.field == "metrics.val_entropy"
    assert difference.committed == tampered["metrics"]["val_entropy"]
    assert difference.replayed == math.nextafter(difference.committed, -math.inf)
    assert str(difference).startswith(f"metrics.val_entropy committed {difference.committed!r} replayed ")
    # A stated relative tolerance accepts it.
    assert replay.replay_entry(PAPER, dataclasses.replace(ENTRY, rel=1e-12), committed_copy).matched


def test_config_difference_names_the_dotted_key(committed_copy):
    def edit(record):
        record["config"]["model"]["init_args"]["hidden_size"] = 41  # a pinned value that changed
        del record["config"]["trainer"]["max_epochs"]  # a key the code has since added
        del record["metrics"]["val_entropy"]  # a metric the code has since added

    edit_record(committed_copy, edit)
    result = replay.replay_entry(PAPER, ENTRY, committed_copy)
    shown = {d.field: (d.committed, d.replayed) for d in result.differences}
    assert shown == {
        "config.model.init_args.hidden_size": (41, 40),
        "config.trainer.max_epochs": (replay.ABSENT, 2),
        "metrics.val_entropy": (replay.ABSENT, shown["metrics.val_entropy"][1]),
    }
    assert str(result.differences[1]) == "config.trainer.max_epochs committed <absent> replayed 2"


def test_metric_comparison():
    assert replay.metric_agrees(math.nan, math.nan, 0.0)
    assert not replay.metric_agrees(math.nan, 1.0, 0.5)
    assert not replay.metric_agrees(0.0, -0.0, 0.0)  # different bits
    assert replay.metric_agrees(100.0, 100.9, 0.01) and not replay.metric_agrees(100.0, 101.1, 0.01)
    missing = replay.metric_differences({"auc": 0.5}, {"acc": 0.5}, 0.0)
    assert [(d.field, d.committed, d.replayed) for d in missing] == [
        ("metrics.auc", 0.5, replay.ABSENT),
        ("metrics.acc", replay.ABSENT, 0.5),
    ]


def test_missing_record_is_an_error_naming_path_and_fix(tmp_path, with_entries, capsys):
    with pytest.raises(replay.ReplayError, match="seed1.json, which does not exist.*python -m repro.train"):
        replay.replay_entry(PAPER, ENTRY, tmp_path)
    with_entries(ENTRY)
    assert run_replay(tmp_path, PAPER) == 2  # before anything trains
    assert "does not exist" in capsys.readouterr().out


def test_bad_input_exits_2(tmp_path, with_entries, capsys):
    assert run_replay(tmp_path, "stack_rn") == 2
    assert "Did you mean 'stack_rnn'" in capsys.readouterr().out
    with_entries()
    assert run_replay(tmp_path, PAPER) == 2
    assert "stack_rnn has no replay entries" in capsys.readouterr().out


def test_list_prints_entries_and_committed_wall_time_without_training(committed, with_entries, capsys):
    with_entries(ENTRY)
    wall = results.read_json(results.record_path(PAPER, EXPERIMENT, "smoke", 1, committed))["wall_time_s"]
    assert run_replay(committed, PAPER, "--list") == 0
    out = capsys.readouterr().out
    assert "re-training" not in out
    assert EXPERIMENT in out and f"{wall:.1f}" in out and "bit for bit" in out


def test_committed_replay_entries_name_one_thread_records():
    """The suite's own entries: each names a committed record trained on one thread, as a replay is."""
    entries = [(paper, entry) for paper in papers.discover().values() for entry in paper.replay]
    assert entries
    for paper, entry in entries:
        record = replay.committed_record(paper.name, entry, results.ROOT / "results")
        assert record["hardware"]["torch_threads"] == 1, (paper.name, entry)


# --------------------------------------------------------------------------------------------------
# the replay: block of expected.yaml
def load_toy(tmp_path: Path, replay_entries: list) -> papers.Paper:
    body = {**toy_expected(), "replay": replay_entries}
    return papers.load_paper(write_paper(tmp_path, body).parent)


def test_replay_entries_load(tmp_path):
    paper = load_toy(
        tmp_path,
        [
            {"experiment": "exp", "tier": "cpu", "seed": 2},
            {"experiment": "exp", "tier": "smoke", "seed": 1, "tolerance": {"rel": 1e-6}},
        ],
    )
    assert paper.replay == (Replay("exp", "cpu", 2, 0.0), Replay("exp", "smoke", 1, 1e-6))


@pytest.mark.parametrize(
    ("entry", "field", "problem"),
    [
        ({"seed": 0}, "replay[0].seed", "must be a seed number >= 1"),
        ({"seed": "one"}, "replay[0].seed", "must be a seed number"),
        ({"seed": True}, "replay[0].seed", "must be a seed number"),
        ({"experiment": "exq"}, "replay[0].experiment", "no experiment 'exq'"),
        ({"tier": "gpu"}, "replay[0].tier", "must be one of smoke, cpu, full"),
        ({"tolerance": {"rel": -0.1}}, "replay[0].tolerance", "must be {rel: x} with x >= 0"),
        ({"tolerance": {"abs": 0.1}}, "replay[0].tolerance", "must be {rel: x}"),
        ({"tolerance": {"rel": "tiny"}}, "replay[0].tolerance", "must be {rel: x}"),
        ({"seeds": 1}, "replay[0].seeds", "unknown key; did you mean 'seed'"),
    ],
)
def test_bad_replay_entry_names_the_field(tmp_path, entry, field, problem):
    with pytest.raises(ExpectedError, match=rf"field '{re.escape(field)}': {re.escape(problem)}"):
        load_toy(tmp_path, [{"experiment": "exp", "tier": "cpu", "seed": 1} | entry])
