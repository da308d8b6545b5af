"""Trustworthy evidence: a user's run never writes the committed evidence, resume continues what was cut off,
known misses stay inside the gate, and ``repro check`` re-derives every field of every committed aggregate.

Most tests judge a toy paper's fabricated records; three train the stack_anbn smoke tier for real (seconds).
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from repro import cli, evidence, results
from repro.papers import ExpectedError, load_paper
from repro.verdict import KNOWN_MISS, MISS, NOT_RUN, PASS, judge
from tests.toy import toy_expected, write_paper


def run_cli(monkeypatch, *argv: str) -> tuple[int, str]:
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buffer, width=3000, color_system=None))
    rc = cli.main(list(argv))
    return rc, buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# a toy paper: one experiment, one metric gated at cpu (accuracy >= 90 - 1), seeds picked by val_loss


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """``toy(accuracies, **metric)``: the toy paper under tmp (cli reads it instead of papers/), a committed
    seed record per accuracy and their aggregate; returns the aggregate's path."""
    papers = tmp_path / "papers"
    root = tmp_path / "results"
    monkeypatch.setattr(cli, "get_paper", lambda name: load_paper(papers / name))
    monkeypatch.setattr(cli, "discover", lambda: {"toy": load_paper(papers / "toy")})

    def make(accuracies: list[float], **metric) -> Path:
        write_paper(papers.parent, toy_expected(**metric))
        paper = load_paper(papers / "toy")
        for seed, acc in enumerate(accuracies, start=1):
            record = {"seed": seed, "metrics": {"acc": acc, "val_loss": 1.0 / seed}, "wall_time_s": 1.0}
            record["hardware"] = {"cpu_count": 2, "processor": "Test CPU"}
            results.write_json(results.record_path("toy", "exp", "cpu", seed, root), record)
        records = results.load_records("toy", "exp", "cpu", root)
        evidence.write_aggregate(paper, paper.experiment("exp"), "cpu", records, root)
        return results.run_dir("toy", "exp", "cpu", root) / "aggregate.json"

    return make


def check(monkeypatch, aggregate: Path, *extra: str) -> tuple[int, str]:
    return run_cli(monkeypatch, "--results", str(aggregate.parents[3]), "check", *extra)


KNOWN = {"tiers": ["cpu"], "why": "measured: too few epochs", "since": "abc1234"}


# --------------------------------------------------------------------------------------------------
# known misses


def test_a_known_miss_is_judged_and_passes_the_check(toy, monkeypatch):
    path = toy([85.0, 80.0], known_miss=KNOWN)
    stored = results.read_json(path)
    assert stored["verdict"] == KNOWN_MISS
    assert stored["metrics"][0]["known_miss"] == {"why": "measured: too few epochs", "since": "abc1234"}
    rc, out = check(monkeypatch, path)
    assert rc == 0, out
    assert "MISS (known): toy/exp [cpu]" in out
    assert "MISS (known): measured: too few epochs" in out  # the table gives the reason
    assert "checked 1 aggregates: 0 missed, 1 known misses, 0 problems" in out


def test_an_unmarked_miss_fails_the_check(toy, monkeypatch):
    path = toy([85.0])
    rc, out = check(monkeypatch, path)
    assert rc == 1
    assert results.read_json(path)["verdict"] == MISS
    assert "MISS: toy/exp [cpu]" in out


def test_a_known_miss_that_now_passes_fails_the_check_until_the_mark_goes(toy, monkeypatch):
    path = toy([95.0], known_miss=KNOWN)
    assert results.read_json(path)["verdict"] == PASS
    rc, out = check(monkeypatch, path)
    assert rc == 1
    assert "'accuracy' is marked as a known miss in expected.yaml but now passes: remove the mark" in out


def test_a_known_miss_only_applies_at_its_tiers():
    experiment = load_toy_experiment(known_miss={**KNOWN, "tiers": ["full"]}, gate=["cpu", "full"])
    records = [{"seed": 1, "metrics": {"acc": 80.0, "val_loss": 1.0}}]
    assert judge(experiment, records, "cpu")["verdict"] == MISS
    assert judge(experiment, records, "full")["verdict"] == KNOWN_MISS


def load_toy_experiment(**metric):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_paper(Path(tmp), toy_expected(**metric))
        return load_paper(Path(tmp) / "papers" / "toy").experiment("exp")


@pytest.mark.parametrize(
    ("mark", "problem"),
    [
        ({**KNOWN, "tiers": ["full"]}, "'full' is not a tier this metric gates at"),
        ({"tiers": ["cpu"], "since": "abc1234"}, "known_miss.why': is required"),
        ({**KNOWN, "reason": "x"}, "known_miss.reason': unknown key"),
    ],
)
def test_a_malformed_known_miss_names_the_field(mark, problem):
    with pytest.raises(ExpectedError, match=problem):
        load_toy_experiment(known_miss=mark)


# --------------------------------------------------------------------------------------------------
# repro check re-derives every field


def tamper(path: Path, edit) -> None:
    stored = results.read_json(path)
    edit(stored)
    path.write_text(json.dumps(stored))


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            lambda a: a["metrics"][0].update(mean=99.0),
            "metrics[acc].mean: committed 99.0, the records give 90.0",
        ),
        (lambda a: a["metrics"][0].update(verdict="SHOWN"), "metrics[acc].verdict: committed 'SHOWN'"),
        (lambda a: a["metrics"][0].update(values=[95.0, 85.0]), "metrics[acc].values"),
        (lambda a: a.update(wall_time_s=1.0), "wall_time_s: committed 1.0, the records give 2.0"),
        (lambda a: a["selection"].update(selected_seed=1), "selection: committed"),
    ],
    ids=["mean", "metric verdict", "values", "wall time", "selected seed"],
)
def test_check_names_every_hand_edited_field(toy, monkeypatch, edit, named):
    path = toy([85.0, 95.0])  # the selection keeps seed 2 (lowest val_loss): a PASS
    assert results.read_json(path)["verdict"] == PASS
    rc, out = check(monkeypatch, path)
    assert rc == 0, out
    tamper(path, edit)
    rc, out = check(monkeypatch, path)
    assert rc == 1
    assert named in out


def test_a_tolerance_loosened_after_the_result_is_a_problem_until_rejudged(toy, monkeypatch, tmp_path):
    path = toy([85.0])  # a miss at abs 1
    write_paper(tmp_path, toy_expected(tolerance={"abs": 10}))
    rc, out = check(monkeypatch, path)
    assert rc == 1
    assert "metrics[acc].tolerance: committed {'abs': 1.0}, expected.yaml now has {'abs': 10.0}" in out
    assert "re-judge on purpose: repro check toy --tier cpu --rejudge" in out
    rc, out = check(monkeypatch, path, "--rejudge")
    assert rc == 0, out
    rejudged = results.read_json(path)
    assert rejudged["verdict"] == PASS
    (change,) = rejudged["expected_changes"]
    assert change["fields"] == ["metrics[acc].tolerance"]
    assert change["at"]
    rc, out = check(monkeypatch, path)
    assert rc == 0, out


def test_a_published_value_edited_after_the_result_is_a_problem(toy, monkeypatch, tmp_path):
    path = toy([95.0])
    write_paper(tmp_path, toy_expected(published=94.0))
    rc, out = check(monkeypatch, path)
    assert rc == 1
    assert "metrics[acc].published: committed 90.0, expected.yaml now has 94.0" in out


def test_a_seed_record_the_aggregate_does_not_combine_is_a_problem(toy, monkeypatch):
    path = toy([95.0])
    results.write_json(path.parent / "seed2.json", {"seed": 2, "metrics": {"acc": 10.0}, "wall_time_s": 1})
    rc, out = check(monkeypatch, path)
    assert rc == 1
    assert "records on disk that the aggregate does not combine: seed2.json" in out


def test_records_are_judged_whether_or_not_the_data_is_present():
    experiment = load_toy_experiment()
    records = [{"seed": 1, "metrics": {"acc": 95.0, "val_loss": 1.0}}]
    assert judge(experiment, records, "cpu", data_present=False)["verdict"] == PASS
    assert judge(experiment, [], "cpu", data_present=False)["verdict"] == NOT_RUN


def test_check_of_the_committed_results_does_not_depend_on_the_data_root(monkeypatch, tmp_path):
    """The committed evidence judged with the data root unset, empty and missing: one and the same output."""
    outputs = []
    for data in (None, tmp_path, tmp_path / "absent"):
        if data is None:
            monkeypatch.delenv("REPRO_DATA", raising=False)
        else:
            monkeypatch.setenv("REPRO_DATA", str(data))
        outputs.append(run_cli(monkeypatch, "--results", str(results.ROOT / "results"), "check"))
    assert outputs[0][0] == 0, outputs[0][1][-3000:]
    assert outputs[0] == outputs[1] == outputs[2]


# --------------------------------------------------------------------------------------------------
# where runs write, and what the records say


def test_git_state_ignores_the_suites_own_outputs(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "seed1.json").write_text("{}\n")
    (tmp_path / "model.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(results, "ROOT", tmp_path)
    (tmp_path / "results" / "seed1.json").write_text('{"seed": 1}\n')
    assert results.git_state()["dirty"] is False
    (tmp_path / "model.py").write_text("x = 2\n")
    assert results.git_state()["dirty"] is True


SMOKE = ["reproduce", "stack_rnn", "--tier", "smoke", "-e", "stack_anbn", "--no-progress"]


@pytest.fixture
def smoke_cli(isolated_outputs, monkeypatch, harness_state):
    """``smoke_cli(*argv)`` in-process with results/ and runs/ under tmp; seeds train on one thread each."""
    monkeypatch.setenv(
        "OMP_NUM_THREADS", "1"
    )  # so that a resumed seed can equal an uninterrupted one bit for bit

    def run(*argv: str) -> tuple[int, str]:
        return run_cli(monkeypatch, "--results", str(isolated_outputs / "results"), *argv)

    return run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_users_run_writes_apart_and_evidence_combines_every_committed_seed(smoke_cli, isolated_outputs):
    committed = isolated_outputs / "results"
    one_epoch = ("--set", "trainer.max_epochs=1")
    rc, out = smoke_cli(*SMOKE, "--seeds", "2", *one_epoch, "--evidence")
    assert rc == 0, out
    assert "writing the committed evidence to" in out
    before = snapshot(committed)
    assert "stack_rnn/stack_anbn/smoke/seed2.json" in before

    # A user's run: its own folder, the committed evidence beside it in the table, not a byte of it changed.
    rc, out = smoke_cli(*SMOKE, "--seeds", "1", *one_epoch)
    assert rc == 0, out
    assert snapshot(committed) == before
    mine = isolated_outputs / "runs" / "results" / "stack_rnn" / "stack_anbn" / "smoke"
    assert {p.name for p in mine.glob("*.json")} == {"seed1.json", "aggregate.json"}
    assert "published vs committed evidence vs this run" in out
    assert "(SHOWN, 2 seeds)" in out  # the committed column: its value, verdict and seed count
    assert f"this run's records: {isolated_outputs / 'runs' / 'results' / 'stack_rnn'}" in out

    # Evidence from fewer seeds than are committed replaces its own seed and combines all of them.
    rc, out = smoke_cli(*SMOKE, "--seeds", "1", *one_epoch, "--evidence")
    assert rc == 0, out
    aggregate = results.read_json(committed / "stack_rnn/stack_anbn/smoke/aggregate.json")
    assert aggregate["records"] == ["seed1.json", "seed2.json"]
    assert "the committed aggregate combines 2 seeds: 1, 2 (1 from this run)" in out

    # --seed trains only the seed the evidence lacks; the committed seeds stay as they were.
    kept = {name: data for name, data in snapshot(committed).items() if "/seed" in name}
    rc, out = smoke_cli(*SMOKE, "--seed", "3", *one_epoch, "--evidence")
    assert rc == 0, out
    assert "1 experiment(s) x 1 seed(s)" in out
    after = snapshot(committed)
    assert all(after[name] == data for name, data in kept.items())
    aggregate = results.read_json(committed / "stack_rnn/stack_anbn/smoke/aggregate.json")
    assert aggregate["records"] == ["seed1.json", "seed2.json", "seed3.json"]


@pytest.mark.slow
def test_resume_continues_the_cut_off_seed_whatever_the_committed_evidence_holds(smoke_cli, isolated_outputs):
    # Committed evidence with both seeds: it must not make --resume skip anything.
    committed = isolated_outputs / "results" / "stack_rnn" / "stack_anbn" / "smoke"
    for seed in (1, 2):
        results.write_json(committed / f"seed{seed}.json", {"seed": seed, "metrics": {}, "wall_time_s": 30.0})
    rc, out = smoke_cli(*SMOKE, "--seeds", "2", "--jobs", "1", "--set", "trainer.max_epochs=3")
    assert rc == 0, out
    # The plan and its estimate (committed records: 2 x 30 s), then a line per finished seed (no terminal).
    assert (
        "plan: stack_rnn smoke: 1 experiment(s) x 2 seed(s), 2 run(s) to train, 1 at a time with 1 thread(s) "
        "each; estimated 60 s from the committed records' wall times" in out
    )
    assert "finished stack_anbn seed 1 in " in out and ": solved_pct " in out and "1/2 done, about " in out
    assert "finished stack_anbn seed 2 in " in out and "2/2 done" in out
    mine = isolated_outputs / "runs" / "results" / "stack_rnn" / "stack_anbn" / "smoke"
    straight = results.read_json(mine / "seed2.json")
    seed1 = (mine / "seed1.json").read_bytes()
    # Cut seed 2 off after its first epoch, as a Ctrl-C or a kill -9 would: no record, no later checkpoints.
    work = isolated_outputs / "runs" / "stack_rnn" / "stack_anbn" / "smoke" / "seed2"
    (mine / "seed2.json").unlink()
    (work / "finished.json").unlink()
    for late in ("epoch001.ckpt", "epoch002.ckpt"):
        (work / "checkpoints" / late).unlink()

    rc, out = smoke_cli("reproduce", "stack_rnn", "--tier", "smoke", "--resume", "--no-progress")
    assert rc == 0, out
    assert "resume: stack_anbn seed 1: finished" in out
    assert "resume: stack_anbn seed 2: continues after 1 finished epoch (checkpoints/epoch000.ckpt)" in out
    resumed = results.read_json(mine / "seed2.json")
    assert resumed["resumed_from"] == "checkpoints/epoch000.ckpt"
    assert resumed["metrics"] == straight["metrics"]
    assert (mine / "seed1.json").read_bytes() == seed1  # the finished seed was not trained again
    assert results.read_json(committed / "seed1.json")["metrics"] == {}


def test_resume_with_nothing_started_is_exit_2(smoke_cli):
    rc, out = smoke_cli("reproduce", "stack_rnn", "--tier", "smoke", "--resume")
    assert rc == 2
    assert "nothing to resume" in out


@pytest.mark.parametrize(
    ("flag", "problem"),
    [
        (("--seeds", "0"), "--seeds must be at least 1"),
        (("--seed", "0"), "--seed must be at least 1"),
        (("--jobs", "-2"), "--jobs must be at least 1"),
        (("--set", "model.hiden_size=3"), "unknown model argument 'hiden_size'"),
        (("--set", "trainer.max_epochs=abc"), 'Parser key "trainer.max_epochs"'),
    ],
)
def test_bad_input_is_exit_2_once_before_training(smoke_cli, isolated_outputs, flag, problem):
    rc, out = smoke_cli(*SMOKE, *flag)
    assert rc == 2
    assert out.count(problem) == 1
    assert not (isolated_outputs / "runs").exists()


def test_an_unwritable_output_folder_is_exit_2_before_training(smoke_cli, isolated_outputs):
    blocker = isolated_outputs / "a-file"
    blocker.write_text("not a folder\n")
    rc, out = smoke_cli(*SMOKE, "--out", str(blocker / "results"))
    assert rc == 2
    assert f"cannot write the run's records to {blocker / 'results'}" in out
    assert not (isolated_outputs / "runs").exists()


@pytest.mark.parametrize(("value", "verdict"), [(90.5, PASS), (89.2, PASS), (95.0, MISS), (85.0, MISS)])
def test_a_two_sided_baseline_misses_far_above_as_well_as_far_below(value, verdict):
    experiment = load_toy_experiment(two_sided=True)
    records = [{"seed": 1, "metrics": {"acc": value, "val_loss": 1.0}}]
    assert judge(experiment, records, "cpu")["verdict"] == verdict


def test_two_sided_must_be_a_boolean():
    with pytest.raises(ExpectedError, match="two_sided': must be true or false"):
        load_toy_experiment(two_sided="yes")


# --------------------------------------------------------------------------------------------------
# safe loading


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    import os

    import torch

    from repro.train import latest_checkpoint

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "epoch000.ckpt")
    torch.save({"state_dict": {}, "payload": RunsCode()}, tmp_path / "epoch001.ckpt")
    with pytest.warns(UserWarning, match="epoch001.ckpt: refused: it holds Python objects"):
        assert latest_checkpoint(tmp_path) == tmp_path / "epoch000.ckpt"
    assert not (tmp_path / "ran").exists()


def test_a_paper_name_is_a_name_not_a_path(monkeypatch):
    rc, out = run_cli(monkeypatch, "list", "../papers/dkt")
    assert rc == 2
    assert "unknown paper '../papers/dkt'. Did you mean 'dkt'?" in out


# --------------------------------------------------------------------------------------------------
# one run per seed folder at a time


def test_a_second_identical_run_refuses_while_the_first_trains(smoke_cli, isolated_outputs, capsys):
    from repro import train

    work = isolated_outputs / "runs" / "stack_rnn" / "stack_anbn" / "smoke" / "seed1"
    with train.run_lock(work):  # the first run, as far as the lock can tell
        assert train.lock_holder(work) is not None
        rc = train.main(["stack_rnn", "stack_anbn", "smoke", "1", "--no-progress"])
        assert rc == 2
        assert f"{work} is in use: process" in capsys.readouterr().err
        rc, out = smoke_cli(*SMOKE, "--seeds", "1")
        assert rc == 2
        assert "another run is training the same seeds now" in out
    assert train.lock_holder(work) is None


def test_absent_data_is_reported_with_the_missing_files(smoke_cli, monkeypatch, tmp_path):
    data = tmp_path / "data"
    (data / "ptb").mkdir(parents=True)
    (data / "ptb" / "ptb.train.txt").write_text("a b c\n")
    monkeypatch.setenv("REPRO_DATA", str(data))
    rc, out = smoke_cli(
        "reproduce", "depth_gated_lstm", "--tier", "smoke", "-e", "lstm_2x200", "--seeds", "1"
    )
    assert rc == 0, out
    assert "not run: data not present for lstm_2x200: missing" in out
    assert str(data / "ptb" / "ptb.test.txt") in out and str(data / "ptb" / "ptb.train.txt") not in out


# --------------------------------------------------------------------------------------------------
# the first command: headline experiments, the plan and its estimate, a line per finished seed


def test_the_default_run_is_the_papers_headline_experiments(smoke_cli):
    rc, out = smoke_cli("reproduce", "stack_rnn", "--tier", "smoke", "--no-train")
    assert rc == 0, out
    assert "running stack_rnn's headline experiments (stack_anbn, stack_anbn_rounding," in out
    assert "repro reproduce stack_rnn --all (make reproduce PAPER=stack_rnn ALL=1)" in out
    assert "│ stack_anbn " in out and "lstm_anbn" not in out  # the baselines are not headline experiments


def test_the_readme_time_table_comes_from_the_committed_wall_times(tmp_path):
    from repro.leaderboard import run_time_table
    from repro.papers import discover

    root = tmp_path / "results"
    for seed, wall in ((1, 500.0), (2, 700.0)):
        record = {"seed": seed, "metrics": {}, "wall_time_s": wall}
        results.write_json(results.record_path("dkt", "assistments_lstm", "cpu", seed, root), record)
    # A resumed record timed only its last part: it is left out of the mean.
    resumed = {"seed": 3, "metrics": {}, "wall_time_s": 5.0, "resumed_from": "checkpoints/epoch009.ckpt"}
    results.write_json(results.record_path("dkt", "assistments_lstm", "cpu", 3, root), resumed)
    rows = {row.split(" | ")[0]: row for row in run_time_table(discover(), root) if row.startswith("| [")}
    # mean 600 s a seed, 3 seeds, two at a time: 15 minutes
    assert (
        "| headline experiments | 1 experiments x 3 seeds: 15 min 0 s | 1 configured, 0 with records |"
        in (rows["| [dkt](papers/dkt/README.md)"])
    )
    assert "no record" in rows["| [stack_rnn](papers/stack_rnn/README.md)"]


@pytest.mark.slow
def test_corrupt_data_is_one_clear_message_and_exit_2(smoke_cli, monkeypatch, tmp_path):
    data = tmp_path / "data" / "mnist"
    data.mkdir(parents=True)
    for name in get_paper_files("ram", "mnist_ram6"):
        (data / name).write_bytes(b"not MNIST")
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "data"))
    rc, out = smoke_cli(
        "reproduce", "ram", "--tier", "smoke", "-e", "mnist_ram6", "--seeds", "1", "--jobs", "1"
    )
    assert rc == 2, out
    assert "mnist_ram6 seed 1 exited 2" in out and "(bad input or data: its message is above)" in out
    assert "figures not drawn:" in out and "Traceback" not in out


def get_paper_files(paper: str, experiment: str) -> tuple[str, ...]:
    from repro.papers import get_paper

    return get_paper(paper).experiment(experiment).data.files


@pytest.mark.slow
def test_sigterm_to_a_background_run_stops_its_seeds_and_says_how_to_resume(tmp_path):
    """Started as a shell starts a background job (SIGINT ignored), then sent SIGTERM mid-seed: exit 130, the
    seed's finished epochs kept, no record, and the command that resumes."""
    import os
    import signal
    import sys
    import time

    env = {
        **os.environ,
        "REPRO_RUNS": str(tmp_path / "runs"),
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
    }
    argv = [
        sys.executable,
        "-m",
        "repro.cli",
        "--results",
        str(tmp_path / "results"),
        "reproduce",
        "stack_rnn",
    ]
    argv += ["--tier", "smoke", "-e", "stack_anbn", "--seeds", "1", "--no-progress"]
    argv += ["--set", "trainer.max_epochs=500"]
    parent = subprocess.Popen(
        argv,
        env=env,
        cwd=results.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    work = tmp_path / "runs" / "stack_rnn" / "stack_anbn" / "smoke" / "seed1"
    deadline = time.monotonic() + 120
    while not (work / "checkpoints" / "epoch001.ckpt").exists():
        assert parent.poll() is None and time.monotonic() < deadline, parent.stdout.read()
        time.sleep(0.2)
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=90)
    assert parent.returncode == 130, out
    assert "interrupted. Seeds cut off: stack_anbn seed 1; their checkpoints are kept" in out.replace(
        "\n", " "
    )
    assert "repro reproduce stack_rnn --tier smoke --resume" in out.replace("\n", " ")
    assert (work / "checkpoints" / "epoch001.ckpt").exists()
    assert not (tmp_path / "runs" / "results" / "stack_rnn" / "stack_anbn" / "smoke" / "seed1.json").exists()


def test_an_aggregate_outside_the_judged_layout_is_a_problem(toy, monkeypatch):
    path = toy([95.0])
    stray = path.parents[3] / "toy" / "sweep" / "lr_0.1" / "toy" / "exp" / "cpu" / "aggregate.json"
    results.write_json(stray, results.read_json(path))
    rc, out = check(monkeypatch, path)
    assert rc == 1
    assert f"{stray}: an aggregate that repro check does not judge" in out
    rc, out = check(
        monkeypatch, path, "--tier", "cpu"
    )  # a check of one tier looks only at that tier's folders
    assert rc == 0, out
