"""Tests of the shared harness: configs, expected.yaml, result files, data plumbing and the ``repro`` CLI.

Two tests train for real (the stack_anbn smoke tier, one seed, a few seconds); everything else runs on
fabricated files.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import repro.papers
import repro.results
import repro.train
from repro import cli, config, evidence, results
from repro.config import ConfigError
from repro.data import DataError, data_root, fetch, sha256, verify
from repro.papers import (
    PAPERS,
    TIERS,
    ExpectedError,
    Paper,
    discover,
    get_paper,
    is_search_experiment,
    load_paper,
)
from tests.toy import assert_rejected, toy_expected, write_paper

VALID_PAPERS = ", ".join(
    sorted(p.parent.name for p in (Path(__file__).resolve().parent.parent / "papers").glob("*/expected.yaml"))
)

SMOKE = PAPERS / "stack_rnn" / "configs" / "stack_anbn-smoke.yaml"
STACK_RNN_EXPERIMENTS = (
    "stack_anbn",
    "stack_anbn_rounding",
    "stack_anbncn",
    "stack_anbncndn",
    "stack_anb2n",
    "stack_anbmcnm",
    "stack_anbmcnm_rounding",
    *(
        f"{model}_{task}"
        for model in ("rnn", "lstm")
        for task in ("anbn", "anbncn", "anbncndn", "anb2n", "anbmcnm")
    ),
    "list_rnn",
    "memorization",
    "memorization_rnn",
    "memorization_lstm",
    "addition",
)


def run_cli(monkeypatch, argv: list[str]) -> tuple[int, str]:
    """Call ``repro.cli.main`` in-process; returns its exit status and everything rich printed."""
    buffer = io.StringIO()
    # Wide enough that no table cell or error message is wrapped in the middle of a word we look for.
    monkeypatch.setattr(cli, "console", Console(file=buffer, width=3000, color_system=None))
    rc = cli.main(argv)
    return rc, buffer.getvalue()


@pytest.fixture
def repro_cli(isolated_outputs, monkeypatch, capsys):
    """``repro_cli(*argv, results=...)`` -> (exit status, rich output + stdout); results in tmp."""

    def run(*argv: str, results: Path | None = None) -> tuple[int, str]:
        root = results or isolated_outputs / "results"
        rc, text = run_cli(monkeypatch, ["--results", str(root), *argv])
        return rc, text + capsys.readouterr().out

    return run


# --------------------------------------------------------------------------------------------------
# config


@pytest.fixture(scope="module")
def smoke_config():
    return config.load(SMOKE)


def test_load_fills_in_every_default(smoke_config):
    model, data, trainer = smoke_config["model"], smoke_config["data"], smoke_config["trainer"]
    assert model["class_path"] == "papers.stack_rnn.model.StackRNNModule"
    assert data["class_path"] == "papers.stack_rnn.data.StackTaskData"
    # Pinned in the YAML ...
    assert model["init_args"]["hidden_size"] == 40
    assert data["init_args"]["test_lengths"] == [2, 6]
    assert trainer["max_epochs"] == 2
    # ... and filled in from the constructor signatures.
    assert model["init_args"]["stack_size"] == 200
    assert model["init_args"]["depth"] == 2
    assert model["init_args"]["lr"] == 0.1
    assert data["init_args"]["bptt"] == 50
    assert data["init_args"]["test_seed"] == 10
    assert trainer["accumulate_grad_batches"] == 1
    assert trainer["strategy"] == "auto"
    assert trainer["check_val_every_n_epoch"] == 1
    # The harness owns these trainer arguments; they never appear in a config.
    assert not set(trainer) & config.HARNESS_TRAINER_KEYS


def test_load_writes_out_none_defaults_too(smoke_config):
    assert "precision" in smoke_config["trainer"]
    assert "deterministic" in smoke_config["trainer"]
    assert "validation_nmin" in smoke_config["data"]["init_args"]


@pytest.mark.parametrize(
    ("override", "where", "value"),
    [
        ("model.lr=0.3", ("model", "init_args", "lr"), 0.3),
        ("model.init_args.lr=0.3", ("model", "init_args", "lr"), 0.3),
        ("trainer.max_epochs=5", ("trainer", "max_epochs"), 5),
        ("data.test_lengths=[3, 9]", ("data", "init_args", "test_lengths"), [3, 9]),
        ("data.init_args.batch_size=8", ("data", "init_args", "batch_size"), 8),
        ("model.rounding=true", ("model", "init_args", "rounding"), True),
        ("model.architecture=lstm", ("model", "init_args", "architecture"), "lstm"),
    ],
)
def test_override_by_dotted_key(smoke_config, override, where, value):
    resolved = config.load(SMOKE, [override])
    node = resolved
    for part in where:
        node = node[part]
    assert node == value
    # Nothing else moved.
    expected = copy.deepcopy(smoke_config)
    target = expected
    for part in where[:-1]:
        target = target[part]
    target[where[-1]] = value
    assert resolved == expected


def test_later_override_wins():
    resolved = config.load(SMOKE, ["model.lr=0.3", "model.init_args.lr=0.7"])
    assert resolved["model"]["init_args"]["lr"] == 0.7


@pytest.mark.parametrize(
    ("override", "bad", "suggestion"),
    [
        ("model.hiden_size=3", "hiden_size", "hidden_size"),
        ("model.init_args.lrr=0.1", "lrr", "lr"),
        ("data.batch_sise=2", "batch_sise", "batch_size"),
        ("trainer.max_epoch=3", "max_epoch", "max_epochs"),
        ("modle.lr=0.1", "modle", "model"),
    ],
)
def test_unknown_override_key_names_it_and_the_nearest(override, bad, suggestion):
    with pytest.raises(ConfigError) as err:
        config.load(SMOKE, [override])
    assert f"'{bad}'" in str(err.value)
    assert f"Did you mean '{suggestion}'?" in str(err.value)


@pytest.mark.parametrize(
    ("edit", "bad", "suggestion"),
    [
        (lambda c: c.update(trainr=c.pop("trainer")), "trainr", "trainer"),
        (lambda c: c["model"].update(init_arg=c["model"].pop("init_args")), "init_arg", "init_args"),
        (lambda c: c["data"]["init_args"].update(nmx=3), "nmx", "nmax"),
        (lambda c: c["trainer"].update(gradient_clip_value=1), "gradient_clip_value", "gradient_clip_val"),
    ],
)
def test_unknown_key_in_file_names_file_key_and_nearest(tmp_path, edit, bad, suggestion):
    raw = yaml.safe_load(SMOKE.read_text())
    edit(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(path) in str(err.value)
    assert f"'{bad}'" in str(err.value)
    assert f"Did you mean '{suggestion}'?" in str(err.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.hidden_size=abc", "hidden_size"),
        ("trainer.max_epochs=abc", "max_epochs"),
        ("data.batch_size=[1, 2]", "batch_size"),
    ],
)
def test_wrong_type_raises_config_error(override, key):
    with pytest.raises(ConfigError, match="invalid config value") as err:
        config.load(SMOKE, [override])
    assert key in str(err.value)


def test_missing_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found") as err:
        config.load(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(err.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lr", "must look like key=value, e.g. model.lr=0.3"),
        ("model=3", "names a whole section"),
    ],
)
def test_malformed_override_is_explained(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load(SMOKE, [override])


def test_invalid_yaml_raises_config_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: {class_path: [unclosed\n")
    with pytest.raises(ConfigError):
        config.load(path)


def test_dump_round_trips(smoke_config, tmp_path):
    text = config.dump(smoke_config)
    assert yaml.safe_load(text) == smoke_config
    # A resolved config is a fixed point: loading it again changes nothing.
    path = tmp_path / "resolved.yaml"
    path.write_text(text)
    assert config.load(path) == smoke_config


def test_instantiate_builds_model_and_data():
    model, data = config.instantiate(config.load(SMOKE, ["model.lr=0.3", "data.batch_size=8"]))
    assert type(model).__name__ == "StackRNNModule"
    assert type(data).__name__ == "StackTaskData"
    assert model.hparams.lr == 0.3
    assert model.hparams.stack_size == 200
    assert data.hparams.batch_size == 8


# --------------------------------------------------------------------------------------------------
# papers and expected.yaml


def metric0(d: dict) -> dict:
    return d["experiments"]["exp"]["metrics"][0]


M0 = "experiments.exp.metrics[0]"


def test_valid_toy_paper_loads(tmp_path):
    write_paper(tmp_path, toy_expected())
    (tmp_path / "papers" / "toy" / "configs").mkdir()
    (tmp_path / "papers" / "toy" / "configs" / "exp-cpu.yaml").write_text("{}\n")
    papers = discover(tmp_path / "papers")
    assert list(papers) == ["toy"]
    paper = papers["toy"]
    assert paper.title == "Toy"
    assert paper.tiers("exp") == ["cpu"]
    exp = paper.experiment("exp")
    assert exp.implemented and exp.data is None
    assert (exp.selection.rule, exp.selection.by, exp.selection.mode) == ("best", "val_loss", "min")
    (m,) = exp.metrics
    assert m.published == 90.0
    assert m.tolerance == {"abs": 1.0}
    assert m.gate == ("cpu",)
    assert m.aggregate == "selected"  # the default under a 'best' selection rule
    assert m.gates_at("cpu") and not m.gates_at("smoke")


BROKEN = [
    ("missing title", lambda d: d["paper"].pop("title"), "paper.title", "is required"),
    ("no experiments", lambda d: d.pop("experiments"), "experiments", "expected a mapping"),
    ("bad evidence", lambda d: metric0(d).update(evidence="peer"), f"{M0}.evidence", "must be one of paper"),
    (
        "bad direction",
        lambda d: metric0(d).update(direction="up"),
        f"{M0}.direction",
        "must be one of higher",
    ),
    (
        "unknown metric key",
        lambda d: metric0(d).update(publshed=1.0),
        f"{M0}.publshed",
        "did you mean 'published'?",
    ),
    (
        "unknown experiment key",
        lambda d: d["experiments"]["exp"].update(titel="x"),
        "experiments.exp.titel",
        "did you mean 'title'?",
    ),
    ("gate unverified", lambda d: metric0(d).update(evidence="unverified"), f"{M0}.gate", "never gates"),
    ("gate null", lambda d: metric0(d).update(published=None), f"{M0}.gate", "without a published value"),
    ("gate tier", lambda d: metric0(d).update(gate=["gpu"]), f"{M0}.gate", "must be one of smoke, cpu, full"),
    ("published text", lambda d: metric0(d).update(published="n/a"), f"{M0}.published", "a number or null"),
    ("tolerance < 0", lambda d: metric0(d).update(tolerance={"abs": -1}), f"{M0}.tolerance", "non-negative"),
    ("tolerance kind", lambda d: metric0(d).update(tolerance={"pct": 5}), f"{M0}.tolerance", "{abs: x}"),
    (
        "tolerance both",
        lambda d: metric0(d).update(tolerance={"abs": 1, "rel": 0.1}),
        f"{M0}.tolerance",
        "{abs: x} or {rel: x}",
    ),
    ("tolerance text", lambda d: metric0(d).update(tolerance={"rel": "5%"}), f"{M0}.tolerance", "number"),
    (
        "selected without best",
        lambda d: (d.pop("selection"), metric0(d).update(aggregate="selected")),
        f"{M0}.aggregate",
        "'selected' needs a selection rule 'best'",
    ),
    ("bad aggregate", lambda d: metric0(d).update(aggregate="median"), f"{M0}.aggregate", "must be one of"),
    ("best without by", lambda d: d["selection"].pop("by"), "selection.by", "is required"),
    ("bad mode", lambda d: d["selection"].update(mode="lowest"), "selection.mode", "must be one of min, max"),
    (
        "no metrics",
        lambda d: d["experiments"]["exp"].pop("metrics"),
        "experiments.exp.metrics",
        "is required",
    ),
    (
        "data without files",
        lambda d: d["experiments"]["exp"].update(data={"name": "toy", "instructions": "copy it"}),
        "experiments.exp.data.files",
        "is required",
    ),
]


@pytest.mark.parametrize(("edit", "field", "problem"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_malformed_expected_names_file_and_field(tmp_path, edit, field, problem):
    body = toy_expected()
    edit(body)
    assert_rejected(tmp_path, body, field, problem)


def test_invalid_yaml_expected_names_file(tmp_path):
    path = write_paper(tmp_path, "paper: {title: [unclosed\n")
    with pytest.raises(ExpectedError, match="not valid YAML") as err:
        load_paper(path.parent)
    assert str(path) in str(err.value)


def test_unknown_top_level_key_is_rejected(tmp_path):
    body = toy_expected()
    body["selecton"] = body.pop("selection")
    metric0(body)["aggregate"] = "mean"
    write_paper(tmp_path, body)
    with pytest.raises(ExpectedError, match="selecton"):
        discover(tmp_path / "papers")


def test_bad_min_k_is_an_expected_error(tmp_path):
    body = toy_expected()
    metric0(body).update(aggregate="k_of_n", min_k="two")
    write_paper(tmp_path, body)
    with pytest.raises(ExpectedError, match=r"min_k"):
        discover(tmp_path / "papers")


def test_boolean_published_is_rejected(tmp_path):
    body = toy_expected()
    metric0(body)["published"] = True
    write_paper(tmp_path, body)
    with pytest.raises(ExpectedError, match="published"):
        discover(tmp_path / "papers")


def test_data_present_follows_repro_data(tmp_path, monkeypatch):
    body = toy_expected()
    body["experiments"]["exp"]["data"] = {"name": "toy", "files": ["a.txt"], "instructions": "copy toy/"}
    write_paper(tmp_path, body)
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "data"))
    exp = discover(tmp_path / "papers")["toy"].experiment("exp")
    assert not exp.data_present()
    (tmp_path / "data" / "toy").mkdir(parents=True)
    (tmp_path / "data" / "toy" / "a.txt").write_text("x")
    assert exp.data_present()


def test_a_papers_optional_hooks_are_its_own_modules():
    """figures.py, bench.py, sample.py, search.py: imported from the paper's folder when it has one."""
    stack_rnn = get_paper("stack_rnn")
    assert stack_rnn.hook("figures").__name__ == "papers.stack_rnn.figures"
    assert callable(stack_rnn.hook("bench").main)
    assert stack_rnn.hook("search") is None and stack_rnn.hook("sample") is None
    assert get_paper("lstm_odyssey").hook("search").__name__ == "papers.lstm_odyssey.search"


def test_discover_finds_stack_rnn():
    papers = discover()
    assert "stack_rnn" in papers
    assert tuple(papers["stack_rnn"].experiments) == STACK_RNN_EXPERIMENTS


# search_<experiment> entries have no configs of their own: `repro search` trains <experiment>'s configs
REAL_EXPERIMENTS = [
    (p.name, e)
    for p in discover().values()
    for e in p.experiments.values()
    if e.implemented and not is_search_experiment(e.name)
]


@pytest.mark.parametrize(
    ("paper", "experiment"), REAL_EXPERIMENTS, ids=[f"{p}/{e.name}" for p, e in REAL_EXPERIMENTS]
)
def test_schema_every_implemented_experiment_has_loadable_configs(paper, experiment):
    """The schema check: every expected.yaml loads (above) and each implemented experiment can run."""
    folder = PAPERS / paper
    # smoke and full always; cpu only where the experiment fits a 2-core CPU (the README says which).
    for tier in ("smoke", "full"):
        assert (folder / "configs" / f"{experiment.name}-{tier}.yaml").exists(), f"no {tier} config"
    for tier in TIERS:
        path = folder / "configs" / f"{experiment.name}-{tier}.yaml"
        if path.exists():
            resolved = config.load(path)
            assert set(resolved) == {"model", "data", "trainer"}


def test_unimplemented_experiments_say_why_and_have_no_configs():
    for paper in discover().values():
        for experiment in paper.experiments.values():
            if not experiment.implemented:
                assert experiment.note, f"{paper.name}/{experiment.name} must say why it is not implemented"
                assert paper.tiers(experiment.name) == []


def test_unknown_paper_lists_valid_ones_with_suggestion():
    with pytest.raises(ValueError) as err:
        get_paper("stack_rn")
    assert "unknown paper 'stack_rn'" in str(err.value)
    assert "Did you mean 'stack_rnn'?" in str(err.value)
    assert f"Valid: {VALID_PAPERS}" in str(err.value)


def test_unknown_experiment_lists_valid_ones_with_suggestion():
    with pytest.raises(ValueError) as err:
        get_paper("stack_rnn").experiment("stack_anb")
    assert "Did you mean 'stack_anbn'?" in str(err.value)
    assert "Valid: " + ", ".join(STACK_RNN_EXPERIMENTS) in str(err.value)


# --------------------------------------------------------------------------------------------------
# results


def test_atomic_write_makes_an_ordinary_file(tmp_path):
    """mkstemp creates 0600 files; a record must be readable like any file the user writes (0666 & ~umask)."""
    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "record.json"
    results.atomic_write_text(path, "{}")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_keeps_old_content_when_replace_fails(tmp_path, monkeypatch):
    target = tmp_path / "out" / "record.json"
    results.atomic_write_text(target, "old\n")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        results.atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["record.json"]


def test_atomic_write_cleans_up_after_an_interrupt(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    target.write_text("old\n")

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(results.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        results.atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_write_json_refuses_unserialisable_values_without_damage(tmp_path):
    target = tmp_path / "aggregate.json"
    results.write_json(target, {"verdict": "PASS"})
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        results.write_json(target, {"verdict": "MISS", "bad": object()})
    assert results.read_json(target) == {"verdict": "PASS"}
    assert [p.name for p in tmp_path.iterdir()] == ["aggregate.json"]


def test_write_json_converts_scalars_and_paths(tmp_path):
    import numpy as np
    import torch

    target = tmp_path / "r.json"
    results.write_json(target, {"a": np.float32(0.5), "b": torch.tensor(3), "p": Path("/x/y")})
    assert results.read_json(target) == {"a": 0.5, "b": 3, "p": "/x/y"}


def test_git_state_matches_git():
    state = results.git_state()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=results.ROOT, capture_output=True, text=True)
    assert state["sha"] == (head.stdout.strip() or None)
    assert isinstance(state["dirty"], bool)


def test_git_state_outside_a_repository_takes_the_stated_sha(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "ROOT", tmp_path)  # a copy of the tree without .git
    monkeypatch.delenv("REPRO_GIT_SHA", raising=False)
    assert results.git_state()["sha"] is None
    monkeypatch.setenv("REPRO_GIT_SHA", "0123abc")
    assert results.git_state() == {"sha": "0123abc", "dirty": None}


def test_package_versions(monkeypatch):
    import lightning
    import torch

    versions = results.package_versions()
    assert set(versions) == {*results.TRACKED_PACKAGES, "python"}
    assert versions["torch"] == torch.__version__
    assert versions["lightning"] == lightning.__version__
    assert versions["python"] == platform.python_version()
    monkeypatch.setattr(results, "TRACKED_PACKAGES", ("torch", "no-such-package-xyz"))
    assert results.package_versions()["no-such-package-xyz"] is None


def test_hardware_fields():
    import torch

    hw = results.hardware("cpu", 1)
    assert hw["cpu_count"] == os.cpu_count()
    assert hw["torch_threads"] == torch.get_num_threads()
    assert hw["machine"] == platform.machine()
    assert (hw["accelerator"], hw["devices"]) == ("cpu", 1)
    assert "gpus" not in hw  # never listed for a CPU run
    assert isinstance(hw["processor"], str) and hw["processor"]
    assert results.hardware_label(hw) == f"{os.cpu_count()}-core {hw['processor']}"
    assert results.hardware_label({"gpus": ["H100", "H100"]}) == "2x H100"


def test_record_path_layout(tmp_path):
    assert results.record_path("p", "e", "cpu", 3, tmp_path) == tmp_path / "p" / "e" / "cpu" / "seed3.json"


# --------------------------------------------------------------------------------------------------
# data


def test_verify_missing_file_names_path_and_fix(tmp_path):
    missing = tmp_path / "corpus" / "train.txt"
    with pytest.raises(DataError) as err:
        verify(missing, "0" * 64, url="https://example.org/train.txt")
    assert str(missing) in str(err.value)
    assert "REPRO_DATA" in str(err.value)
    assert "https://example.org/train.txt" in str(err.value)


def test_verify_checksum_mismatch_names_both_hashes(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"hello\n")
    actual = sha256(path)
    assert actual == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    wrong = "f" * 64
    with pytest.raises(DataError) as err:
        verify(path, wrong)
    assert str(path) in str(err.value)
    assert wrong in str(err.value) and actual in str(err.value)
    assert verify(path, actual) == path


def test_fetch_file_url_downloads_verifies_and_saves(tmp_path):
    source = tmp_path / "source.txt"
    source.write_bytes(b"abc" * 1000)
    target = tmp_path / "data" / "corpus" / "train.txt"
    assert fetch(target, sha256(source), source.as_uri()) == target
    assert target.read_bytes() == source.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["train.txt"]
    # Present and good: no download is attempted.
    assert fetch(target, sha256(source), "file:///does/not/exist") == target


def test_fetch_with_wrong_checksum_saves_nothing(tmp_path):
    source = tmp_path / "source.txt"
    source.write_bytes(b"abc")
    target = tmp_path / "data" / "train.txt"
    with pytest.raises(DataError, match="does not match sha256"):
        fetch(target, "0" * 64, source.as_uri())
    assert list(target.parent.iterdir()) == []


def test_fetch_unreachable_url_explains_offline_fix(tmp_path):
    target = tmp_path / "data" / "train.txt"
    with pytest.raises(DataError, match="copy the file there by hand") as err:
        fetch(target, "0" * 64, (tmp_path / "missing.txt").as_uri())
    assert str(target) in str(err.value)
    assert list(target.parent.iterdir()) == []


def test_data_root_honours_repro_data(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "shared"))
    assert data_root() == tmp_path / "shared"
    monkeypatch.delenv("REPRO_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "repro" / "data"


# --------------------------------------------------------------------------------------------------
# cli: no training


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("list", "reproduce", "check", "config", "leaderboard", "bench"):
        assert command in out


def test_list_shows_experiments_and_tiers(repro_cli):
    rc, out = repro_cli("list")
    assert rc == 0
    for name in STACK_RNN_EXPERIMENTS:
        assert name in out
    line = next(line for line in out.splitlines() if "stack_anbn " in line)
    assert "smoke, cpu" in line
    assert "no result yet" in line


def test_gpu_bench_skips_a_paper_whose_benchmark_is_cpu_only(repro_cli, isolated_outputs):
    rc, out = repro_cli("bench", "dkt", "--accelerator", "gpu")
    assert rc == 0
    assert "dkt: its benchmark measures the CPU only; skipped" in out
    assert not (isolated_outputs / "results" / "bench").exists()


def test_list_unknown_paper_is_exit_2(repro_cli):
    rc, out = repro_cli("list", "nosuchpaper")
    assert rc == 2
    assert f"Valid: {VALID_PAPERS}" in out


def test_reproduce_unknown_paper_is_exit_2(repro_cli):
    rc, out = repro_cli("reproduce", "nosuchpaper", "--tier", "smoke")
    assert rc == 2
    assert "unknown paper 'nosuchpaper'" in out
    assert f"Valid: {VALID_PAPERS}" in out


def test_reproduce_unknown_experiment_is_exit_2(repro_cli):
    rc, out = repro_cli("reproduce", "stack_rnn", "--tier", "smoke", "--experiment", "stack_anb")
    assert rc == 2
    assert "Did you mean 'stack_anbn'?" in out
    assert "Valid: " + ", ".join(STACK_RNN_EXPERIMENTS) in out
    rc, out = repro_cli("reproduce", "stack_rnn", "--tier", "smoke", "--experiment", "nosuch")
    assert rc == 2
    assert "unknown experiment of stack_rnn 'nosuch'" in out


def test_reproduce_devices_a_model_refuses_is_exit_2_before_any_seed_starts(repro_cli, isolated_outputs):
    """--devices reaches the model's check_config in the parent, as --set does: the online Stack RNN trains on
    one CPU device, so two devices are refused once, before a seed's process starts or a plan is written."""
    rc, out = repro_cli(
        "reproduce", "stack_rnn", "--tier", "full", "--experiment", "stack_anbn", "--devices", "2"
    )
    assert rc == 2
    assert "it needs trainer.accelerator=cpu and trainer.devices=1" in out and "devices=2" in out
    assert "started" not in out and "plan:" not in out
    assert not (isolated_outputs / "results").exists()


def test_reproduce_missing_tier_config_is_exit_2(repro_cli, isolated_outputs, monkeypatch):
    # Every real experiment has all three tiers: hide the full one (without the guard this test would train).
    real = Paper.config_path
    monkeypatch.setattr(
        Paper,
        "config_path",
        lambda self, e, t: isolated_outputs / "none.yaml" if t == "full" else real(self, e, t),
    )
    rc, out = repro_cli("reproduce", "stack_rnn", "--tier", "full", "--experiment", "stack_anbn")
    assert rc == 2
    assert "stack_rnn/stack_anbn has no 'full' config; it has: smoke, cpu" in out


def test_reproduce_whole_paper_runs_only_experiments_with_the_tier(repro_cli, isolated_outputs, monkeypatch):
    # As for a grid cell too large for a CPU: only stack_anbn keeps its cpu config here.
    real = Paper.config_path
    monkeypatch.setattr(
        Paper,
        "config_path",
        lambda self, e, t: (
            isolated_outputs / "none.yaml" if t == "cpu" and e != "stack_anbn" else real(self, e, t)
        ),
    )
    rc, out = repro_cli("reproduce", "stack_rnn", "--tier", "cpu", "--no-train", "--all")
    assert rc == 0
    assert "not run at this tier:" in out and "without a 'cpu' config" in out and "stack_anbncn" in out
    assert "has no 'cpu' config" not in out
    assert not (isolated_outputs / "results").exists()


def test_reproduce_unimplemented_experiment_is_exit_2(repro_cli, isolated_outputs):
    rc, out = repro_cli("reproduce", "stack_rnn", "--tier", "smoke", "--experiment", "list_rnn")
    assert rc == 2
    assert "stack_rnn/list_rnn is not implemented" in out
    assert not (isolated_outputs / "results").exists()


def test_config_prints_resolved_yaml_with_override(repro_cli):
    rc, out = repro_cli("config", "stack_rnn", "stack_anbn", "--tier", "smoke", "--set", "model.lr=0.5")
    assert rc == 0
    printed = yaml.safe_load(out)
    assert printed["model"]["init_args"]["lr"] == 0.5
    assert printed["model"]["init_args"]["stack_size"] == 200
    assert printed == config.load(SMOKE, ["model.lr=0.5"])


def test_config_bad_override_is_exit_2(repro_cli):
    rc, out = repro_cli("config", "stack_rnn", "stack_anbn", "--tier", "smoke", "--set", "model.hiden_size=3")
    assert rc == 2
    assert "'hiden_size'" in out and "Did you mean 'hidden_size'?" in out


# --------------------------------------------------------------------------------------------------
# cli: check and leaderboard on fabricated cpu results


@pytest.fixture
def without_known_misses(monkeypatch):
    """The cell these tests fabricate results for (stack_anbn_rounding, gated at cpu) carries a known-miss
    mark in expected.yaml; they are about plain misses and passes, so every paper loads without its marks."""
    real = repro.papers.load_paper

    def load(folder):
        paper = real(folder)
        experiments = {
            name: dataclasses.replace(
                e, metrics=tuple(dataclasses.replace(m, known_miss=None) for m in e.metrics)
            )
            for name, e in paper.experiments.items()
        }
        return dataclasses.replace(paper, experiments=experiments)

    monkeypatch.setattr(repro.papers, "load_paper", load)


def fabricate_cpu_results(root: Path, seeds: dict[int, dict[str, float]]) -> dict:
    """Seed records of the cpu-gated cell (stack_anbn_rounding), aggregated as ``reproduce`` does."""
    paper = get_paper("stack_rnn")
    experiment = paper.experiment("stack_anbn_rounding")
    for seed, metrics in seeds.items():
        record = {
            "paper": "stack_rnn",
            "experiment": "stack_anbn_rounding",
            "tier": "cpu",
            "seed": seed,
            "status": "complete",
            "metrics": metrics,
            "hardware": {"cpu_count": 2, "processor": "Test CPU", "accelerator": "cpu", "devices": 1},
            "wall_time_s": 10.0,
            "details": {"accuracy_by_n": {"n": [2, 3], "soft": [1.0, 0.5], "rounding": [1.0, 1.0]}},
            "config": {"data": {"init_args": {"nmax": 15}}},
        }
        results.write_json(results.record_path("stack_rnn", "stack_anbn_rounding", "cpu", seed, root), record)
    records = results.load_records("stack_rnn", "stack_anbn_rounding", "cpu", root)
    return evidence.write_aggregate(paper, experiment, "cpu", records, root)


SOLVED = {
    "solved_pct": 100.0,
    "solved_pct_rounding": 100.0,
    "solved_pct60": 100.0,
    "solved_pct60_rounding": 100.0,
}
PARTLY = {
    "solved_pct": 96.6,
    "solved_pct_rounding": 96.6,
    "solved_pct60": 96.7,
    "solved_pct60_rounding": 96.7,
}


def test_check_fabricated_miss_is_exit_1(repro_cli, isolated_outputs, without_known_misses):
    root = isolated_outputs / "results"
    # The cpu gate of stack_anbn is "at least one seed solves every length with rounding": none does here.
    agg = fabricate_cpu_results(root, {1: {**PARTLY, "val_entropy": 0.2}, 2: {**PARTLY, "val_entropy": 0.3}})
    assert agg["verdict"] == "MISS"
    assert agg["selection"]["selected_seed"] == 1
    assert agg["wall_time_s"] == 20.0
    assert (root / "stack_rnn/stack_anbn_rounding/cpu/aggregate.json").exists()
    rc, out = repro_cli("check", "stack_rnn")
    assert rc == 1
    assert "MISS" in out
    assert "checked 1 aggregates: 1 missed, 0 known misses, 0 problems" in out


def test_check_fabricated_pass_is_exit_0(repro_cli, isolated_outputs, without_known_misses):
    root = isolated_outputs / "results"
    # Seed 1 is the one the selection rule keeps, and it misses; seed 2 solves every length, which is what
    # the cpu gate (k of N seeds, k >= 1) asks for. The full-tier gates (selected seed) are not judged.
    agg = fabricate_cpu_results(root, {1: {**PARTLY, "val_entropy": 0.2}, 2: {**SOLVED, "val_entropy": 0.3}})
    assert agg["verdict"] == "PASS"
    assert agg["selection"]["selected_seed"] == 1
    gates = [(m["aggregate"], m["verdict"]) for m in agg["metrics"] if m["gated"]]
    assert gates == [("k_of_n", "PASS")]
    rc, out = repro_cli("check")
    assert rc == 0
    assert "checked 1 aggregates: 0 missed, 0 known misses, 0 problems" in out
    # --tier filters what is checked.
    rc, out = repro_cli("check", "--tier", "full")
    assert rc == 0
    assert "checked 0 aggregates" in out


def test_check_miss_line_names_the_tier(repro_cli, isolated_outputs, without_known_misses):
    fabricate_cpu_results(isolated_outputs / "results", {1: {**PARTLY, "val_entropy": 0.2}})
    rc, out = repro_cli("check")
    assert rc == 1
    assert "MISS: stack_rnn/stack_anbn_rounding [cpu]" in out


def test_verdict_table_shows_evidence_tag(repro_cli, isolated_outputs, without_known_misses):
    fabricate_cpu_results(isolated_outputs / "results", {1: {**SOLVED, "val_entropy": 0.2}})
    rc, out = repro_cli("check")
    assert rc == 0
    assert "[paper]" in out


def test_leaderboard_writes_both_pages(repro_cli, isolated_outputs, without_known_misses):
    root = isolated_outputs / "results"
    fabricate_cpu_results(root, {1: {**PARTLY, "val_entropy": 0.2}})
    rc, out = repro_cli("leaderboard")
    assert rc == 0
    md, page = root / "LEADERBOARD.md", root / "leaderboard.html"
    assert f"wrote {md}" in out and f"wrote {page}" in out
    text = md.read_text()
    assert text.startswith("# Leaderboard")
    assert "stack_rnn/stack_anbn_rounding/cpu/aggregate.json" in text
    assert "**MISS**" in text
    assert "stack_anbncn" in page.read_text()


# --------------------------------------------------------------------------------------------------
# cli: a real smoke reproduction, shared by the tests after it


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """``repro reproduce stack_rnn --tier smoke --seeds 1 -e stack_anbn`` once, with outputs in a tmp folder.

    Module-scoped (one training for several tests), so it sets up what ``isolated_outputs`` does itself.
    """
    tmp = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(repro.results, "RESULTS", tmp / "results")
        mp.setattr(repro.train, "RUNS", tmp / "runs")
        mp.setenv("REPRO_RESULTS", str(tmp / "results"))
        mp.setenv("REPRO_RUNS", str(tmp / "runs"))
        argv = ["--results", str(tmp / "results"), "reproduce", "stack_rnn", "--tier", "smoke", "--evidence"]
        rc, out = run_cli(mp, [*argv, "--seeds", "1", "--experiment", "stack_anbn", "--no-progress"])
    return rc, out, tmp


def copy_smoke_results(smoke_run, dest: Path) -> Path:
    """A private copy of the smoke results that a test may tamper with."""
    shutil.copytree(smoke_run[2] / "results", dest / "results")
    return dest / "results"


SMOKE_DIR = Path("stack_rnn", "stack_anbn", "smoke")


@pytest.mark.slow
def test_reproduce_smoke_writes_record_and_aggregate(smoke_run):
    rc, out, tmp = smoke_run
    assert rc == 0, out  # smoke never gates, so its numbers cannot fail the run
    folder = tmp / "results" / SMOKE_DIR
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".json") == ["aggregate.json", "seed1.json"]
    assert (tmp / "runs" / SMOKE_DIR / "seed1" / "train.log").exists()
    record = results.read_json(folder / "seed1.json")
    assert (record["paper"], record["experiment"], record["tier"], record["seed"]) == (
        "stack_rnn",
        "stack_anbn",
        "smoke",
        1,
    )
    assert record["status"] == "complete"
    assert record["epochs_trained"] == 2
    assert {"solved_pct", "solved_pct_rounding", "solved_pct60_rounding", "val_entropy"} <= set(
        record["metrics"]
    )
    assert record["config"] == config.load(SMOKE, seed=1)
    assert record["packages"]["torch"] == metadata.version("torch")
    assert record["hardware"]["accelerator"] == "cpu"
    assert record["git"] == results.git_state()
    agg = results.read_json(folder / "aggregate.json")
    assert agg["verdict"] == "SHOWN"
    assert agg["records"] == ["seed1.json"]
    assert agg["selection"]["selected_seed"] == 1
    assert all(not m["gated"] for m in agg["metrics"])
    assert "stack_anbn" in out and "SHOWN" in out


@pytest.mark.slow
def test_record_data_seed_is_the_run_seed(smoke_run):
    record = results.read_json(smoke_run[2] / "results" / SMOKE_DIR / "seed1.json")
    assert record["config"]["data"]["init_args"]["seed"] == record["seed"]


@pytest.mark.slow
def test_check_passes_on_fresh_smoke_results(smoke_run, repro_cli, isolated_outputs):
    root = copy_smoke_results(smoke_run, isolated_outputs)
    rc, out = repro_cli("check", "stack_rnn", results=root)
    assert rc == 0
    assert "checked 1 aggregates: 0 missed, 0 known misses, 0 problems" in out
    rc, out = repro_cli("list", "stack_rnn", results=root)
    assert rc == 0
    assert "smoke: SHOWN" in out


@pytest.mark.slow
def test_check_flags_tampered_verdict(smoke_run, repro_cli, isolated_outputs):
    root = copy_smoke_results(smoke_run, isolated_outputs)
    path = root / SMOKE_DIR / "aggregate.json"
    stored = json.loads(path.read_text())
    stored["verdict"] = "PASS"
    path.write_text(json.dumps(stored))
    rc, out = repro_cli("check", "stack_rnn", results=root)
    assert rc == 1
    assert f"{path}: verdict: committed 'PASS', the records give 'SHOWN'" in out
    assert "checked 1 aggregates: 0 missed, 0 known misses, 1 problems" in out


@pytest.mark.slow
def test_check_flags_missing_record(smoke_run, repro_cli, isolated_outputs):
    root = copy_smoke_results(smoke_run, isolated_outputs)
    (root / SMOKE_DIR / "seed1.json").unlink()
    rc, out = repro_cli("check", results=root)
    assert rc == 1
    assert "lists records that do not exist: seed1.json" in out


@pytest.mark.slow
def test_reproduce_writes_to_out_and_leaves_the_committed_evidence_alone(repro_cli, isolated_outputs):
    committed = isolated_outputs / "results"
    elsewhere = isolated_outputs / "elsewhere"
    argv = ["reproduce", "stack_rnn", "--tier", "smoke", "--seeds", "1", "--experiment", "stack_anbn"]
    rc, out = repro_cli(*argv, "--set", "trainer.max_epochs=1", "--no-progress", "--out", str(elsewhere))
    assert rc == 0, out
    assert (elsewhere / SMOKE_DIR / "seed1.json").exists()
    assert (elsewhere / SMOKE_DIR / "aggregate.json").exists()
    assert not committed.exists()


def test_reproduce_no_train_evidence_judges_the_committed_records(
    repro_cli, isolated_outputs, without_known_misses
):
    root = isolated_outputs / "results"
    fabricate_cpu_results(root, {1: {**PARTLY, "val_entropy": 0.2}, 2: {**SOLVED, "val_entropy": 0.3}})
    (root / "stack_rnn/stack_anbn_rounding/cpu/aggregate.json").unlink()
    argv = ["reproduce", "stack_rnn", "-e", "stack_anbn_rounding", "--seeds", "2", "--no-train", "--evidence"]
    rc, out = repro_cli(*argv, "--no-progress")
    assert rc == 0, out
    assert results.read_json(root / "stack_rnn/stack_anbn_rounding/cpu/aggregate.json")["verdict"] == "PASS"
    assert not (isolated_outputs / "runs").exists()
    assert (root / "stack_rnn/stack_anbn_rounding/cpu/accuracy_by_n.png").exists()


def test_reproduce_does_not_need_optuna():
    # Only `repro search` needs Optuna: a GPU machine without it can still train and judge seeds.
    code = (
        "import sys; from repro import cli; "
        "names = [e.name for e in cli.selected_experiments(cli.get_paper('lstm_odyssey'), None)]; "
        "assert names and not any(n.startswith('search_') for n in names), names; "
        "assert 'optuna' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PAPERS.parent)
