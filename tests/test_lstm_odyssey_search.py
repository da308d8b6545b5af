"""The random search of Greff et al. (``repro search``, repro/search.py, papers/lstm_odyssey/search.py and
search_analysis.py): the sampler, the search space of spec §4, storages, resume, bad input, the analysis
(Welch, fANOVA, the verdict) on synthetic trials, and a smoke search end to end.

Real trials run at the smoke tier (16 chorales, 2 epochs) and skip without the JSB data.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import scipy.stats
import torch
import yaml

from papers.lstm_odyssey import data as jsb
from papers.lstm_odyssey import search as declared
from papers.lstm_odyssey import search_analysis as analysis
from papers.lstm_odyssey.figures import welch
from papers.lstm_odyssey.model import OdysseyModule
from repro import cli, results, search
from repro.data import data_root
from repro.papers import get_paper
from repro.verdict import MISS, PASS, judge

needs_data = pytest.mark.skipif(
    not jsb.pickle_path().exists(),
    reason=f"no JSB Chorales under {data_root()}; set REPRO_DATA=../shared/data",
)
optuna.logging.set_verbosity(optuna.logging.WARNING)


def journal(tmp_path) -> str:
    return f"journal:{tmp_path / 'journal.log'}"


def study(storage_url: str, experiment="vanilla", seed=None, overrides=()):
    storage = search.open_storage(storage_url)
    return search.open_study(storage, "lstm_odyssey", experiment, "smoke", "minimize", seed, overrides)


# --------------------------------------------------------------------------------------------------
# The sampler and the search space (spec §4)


def test_the_sampler_is_random_not_tpe_and_reproducible_per_trial(tmp_path):
    first = study(f"sqlite:///{tmp_path / 'a.db'}")  # the default storage's kind; the others: journal files
    assert isinstance(first.sampler, optuna.samplers.RandomSampler)
    assert not isinstance(first.sampler, optuna.samplers.TPESampler)
    draws = [declared.sample(first.ask()) for _ in range(3)]
    again = study(f"journal:{tmp_path / 'b.log'}")
    assert [declared.sample(again.ask()) for _ in range(3)] == draws
    assert len({d["model.lr"] for d in draws}) == 3  # random draws, not one point
    other_seed = study(f"journal:{tmp_path / 'c.log'}", seed=7)
    assert declared.sample(other_seed.ask()) != draws[0]
    other_variant = study(f"journal:{tmp_path / 'd.log'}", experiment="nfg")
    assert declared.sample(other_variant.ask()) != draws[0]  # each variant draws its own trials
    # Trial k's draw depends on k only: trial 2 drawn after a failed trial 1 is the same trial 2.
    gaps = study(f"journal:{tmp_path / 'e.log'}")
    declared.sample(gaps.ask())
    gaps.tell(gaps.ask(), state=optuna.trial.TrialState.FAIL)
    assert declared.sample(gaps.ask()) == draws[2]


def test_a_study_keeps_its_seed_and_settings(tmp_path):
    url = journal(tmp_path)
    study(url, seed=3, overrides=("trainer.max_epochs=1",))
    with pytest.raises(ValueError, match="created with --seed 3"):
        study(url, seed=4, overrides=("trainer.max_epochs=1",))
    with pytest.raises(ValueError, match="must all train alike"):
        study(url, seed=3)
    assert study(url, overrides=("trainer.max_epochs=1",)).user_attrs["seed"] == 3


def test_search_space_is_the_specs_table():
    space = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    trial = space.ask()
    declared.sample(trial)
    assert trial.distributions == {
        "hidden_size": optuna.distributions.IntDistribution(20, 200, log=True),
        "learning_rate": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
        "one_minus_momentum": optuna.distributions.FloatDistribution(0.01, 1.0, log=True),
        "input_noise": optuna.distributions.FloatDistribution(0.0, 1.0),
    }
    draws = []
    for _ in range(2000):
        trial = space.ask()
        draws.append((declared.sample(trial), dict(trial.params)))
    lr = np.array([d["model.lr"] for d, _ in draws])
    hidden = np.array([d["model.hidden_size"] for d, _ in draws])
    momentum = np.array([d["model.momentum"] for d, _ in draws])
    noise = np.array([d["data.input_noise"] for d, _ in draws])
    assert lr.min() >= 1e-6 and lr.max() <= 1e-2
    assert hidden.dtype.kind == "i" and hidden.min() >= 20 and hidden.max() <= 200
    assert momentum.min() >= 0.0 and momentum.max() <= 0.99 + 1e-12
    assert noise.min() >= 0.0 and noise.max() <= 1.0
    assert all(d["model.momentum"] == 1.0 - p["one_minus_momentum"] for d, p in draws)
    # Log-uniform: the log is uniform over its range (quartiles at 1/4, 1/2, 3/4 of it), the value is not.
    for values, low, high in ((lr, 1e-6, 1e-2), (1 - momentum, 0.01, 1.0)):
        position = (np.log(values) - math.log(low)) / (math.log(high) - math.log(low))
        assert np.quantile(position, [0.25, 0.5, 0.75]) == pytest.approx([0.25, 0.5, 0.75], abs=0.04)
    assert np.median(np.log(hidden)) == pytest.approx(math.log(math.sqrt(20 * 200)), abs=0.1)
    assert np.median(noise) == pytest.approx(0.5, abs=0.04)


def test_sampled_values_survive_the_override_syntax():
    for value in (1e-05, 3.2e-06, 0.5, 0.99, 1.0, 137, True):
        assert yaml.safe_load(search.yaml_scalar(value)) == value


def test_the_searchs_loss_and_step_scaling():
    """loss_reduction=sum trains on the NLL summed over the predicted frames; momentum_scaled_lr steps with
    lr * (1 - momentum)."""
    module = OdysseyModule(
        hidden_size=4, lr=0.01, momentum=0.9, loss_reduction="sum", momentum_scaled_lr=True
    )
    assert module.configure_optimizers().param_groups[0]["lr"] == pytest.approx(0.001)
    assert OdysseyModule(hidden_size=4, lr=0.01, momentum=0.9).configure_optimizers().param_groups[0][
        "lr"
    ] == pytest.approx(0.01)
    batch = jsb.collate([np.eye(88, dtype=np.uint8)[:3], np.eye(88, dtype=np.uint8)[:6]])
    module.trainer = SimpleNamespace(world_size=1)  # what training_step reads of its trainer
    module.log = lambda *args, **kwargs: None
    nll, frames = module.frame_nll(batch)
    assert float(module.training_step(batch, 0).detach()) == pytest.approx(float(nll.detach()))
    module.hparams.loss_reduction = "frame"
    assert float(module.training_step(batch, 0).detach()) == pytest.approx(float(nll.detach() / frames))
    with pytest.raises(ValueError, match="loss_reduction must be one of frame, sum"):
        OdysseyModule(hidden_size=4, loss_reduction="mean")


# --------------------------------------------------------------------------------------------------
# Bad input: unknown variants, storages that cannot be opened


def test_an_unknown_variant_lists_the_valid_ones(capsys):
    with pytest.raises(ValueError, match="Valid: vanilla, nig, nfg, nog, niaf, noaf, np, cifg, fgr"):
        search.resolve_variants(get_paper("lstm_odyssey"), declared, ["NFGG"])
    assert search.resolve_variants(get_paper("lstm_odyssey"), declared, ["NFG", "cifg"]) == ["nfg", "cifg"]
    assert cli.main(["search", "lstm_odyssey", "--tier", "smoke", "--variant", "LSTM"]) == 2
    out = capsys.readouterr().out
    assert "unknown variant of lstm_odyssey's search 'LSTM'" in " ".join(out.split())
    assert "nfg, nog" in " ".join(out.split())


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+nosuchdriver://user:secret@localhost/db",
        "nonsense-url",
        "sqlite:////nonexistent-folder/optuna.db",
        "journal:/nonexistent-folder/journal.log",
    ],
)
def test_a_storage_that_cannot_be_opened_fails_before_any_trial(url, tmp_path, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(search, "work", lambda job: ran.append(job))
    with pytest.raises(search.StorageError, match="cannot open the Optuna storage") as err:
        search.run_search(
            "lstm_odyssey", "smoke", ["vanilla"], trials=1, storage_url=url, results_root=tmp_path
        )
    assert "secret" not in str(err.value)
    assert not ran and not list(tmp_path.rglob("trial*.json"))
    if not url.startswith("journal"):
        return
    argv = [
        "--results",
        str(tmp_path),
        "search",
        "lstm_odyssey",
        "-t",
        "smoke",
        "-v",
        "vanilla",
        "--storage",
        url,
    ]
    assert cli.main(argv) == 2
    assert "cannot open the Optuna storage" in " ".join(capsys.readouterr().out.split())
    assert not list(tmp_path.rglob("trial*.json"))


def test_a_set_override_may_not_name_a_sampled_key_or_an_unknown_one(tmp_path):
    for item, message in (
        ("model.lr=0.1", "sampled hyperparameters"),
        ("model.lrr=0.1", "unknown model argument"),
    ):
        with pytest.raises(ValueError, match=message):
            search.run_search(
                "lstm_odyssey", "smoke", ["vanilla"], 1, overrides=(item,), storage_url=journal(tmp_path)
            )


# --------------------------------------------------------------------------------------------------
# Trials: resume, journal storage, divergence, rebuilding a study from its records


def trial_numbers(url: str, experiment="vanilla") -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for trial in study(url, experiment).get_trials(deepcopy=False):
        found.setdefault(search.outcome(trial), []).append(trial.number)
    return found


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@needs_data
@pytest.mark.slow
def test_resume_after_an_interruption_runs_exactly_the_missing_trials_on_journal_storage(
    tmp_path, harness_state, isolated_outputs
):
    """2 trials, then a third killed mid-run (RUNNING, its process gone): --trials 3 fails the killed one and
    runs one new trial, so the study holds exactly 3 complete trials, none of them repeated."""
    url, root = journal(tmp_path), tmp_path / "results"
    common = {
        "storage_url": url,
        "results_root": root,
        "runs_root": tmp_path / "runs",
        "report": lambda s: None,
    }
    threads = torch.get_num_threads()
    assert search.run_search("lstm_odyssey", "smoke", ["vanilla"], trials=2, **common) == []
    assert torch.get_num_threads() == threads  # one thread for the trials, restored after
    killed = study(url).ask()
    for key, value in (("host", search.HOST), ("pid", dead_pid()), ("heartbeat", 0.0)):
        killed.set_user_attr(key, value)
    first = {
        p.name: results.read_json(p) for p in (root / "lstm_odyssey" / "search_vanilla" / "smoke").glob("t*")
    }
    assert search.run_search("lstm_odyssey", "smoke", ["vanilla"], trials=3, **common) == []
    assert trial_numbers(url) == {"complete": [0, 1, 3], "interrupted": [2]}
    records = search.trial_records("lstm_odyssey", "vanilla", "smoke", root)
    assert [r["search"]["trial"] for r in records] == [0, 1, 3]
    for record in records[:2]:  # the first two were not run again
        assert record == first[f"trial{record['search']['trial']:03d}.json"]
    params = [tuple(sorted(r["search"]["params"].items())) for r in records]
    assert len(set(params)) == 3
    record = records[2]
    assert record["seed"] == 4 and record["search"]["outcome"] == "complete"
    assert record["search"]["value"] == record["metrics"]["val_nll"]
    assert record["overrides"][:2] == list(declared.FIXED)
    assert record["config"]["model"]["init_args"]["hidden_size"] == record["search"]["params"]["hidden_size"]
    assert record["config"]["data"]["init_args"]["input_noise"] == record["search"]["params"]["input_noise"]
    assert record["nonfinite_loss"] is None
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # trials write no checkpoints
    # Asking again changes nothing: the study holds its 3 trials.
    assert search.run_search("lstm_odyssey", "smoke", ["vanilla"], trials=3, **common) == []
    assert trial_numbers(url)["complete"] == [0, 1, 3]


@needs_data
@pytest.mark.slow
def test_a_diverging_trial_is_a_counted_result_not_an_error(tmp_path, harness_state):
    """A learning rate of 1e38 blows the loss up in the first epoch: training stops, nothing was validated
    finite, so the trial is 'diverged': FAIL in Optuna, counted among the study's trials, recorded."""
    url = journal(tmp_path)
    target = study(url)
    module = SimpleNamespace(**{k: getattr(declared, k) for k in ("OBJECTIVE", "FIXED")})
    module.sample = lambda trial: {**declared.sample(trial), "model.lr": 1e38, "model.momentum": 0.0}
    job = search.Job("lstm_odyssey", "smoke", ("vanilla",), url, 1, None, (), tmp_path, tmp_path)
    assert search.run_trial(job, module, target, target.ask(), "vanilla") == "diverged"
    (trial,) = target.get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["outcome"] == "diverged"
    assert search.finished(search.counts(target)) == 1
    record = results.read_json(search.trial_record_path("lstm_odyssey", "vanilla", "smoke", 0, tmp_path))
    assert record["search"]["outcome"] == "diverged" and record["search"]["value"] is None
    assert "loss became" in record["nonfinite_loss"]
    # NaN weights score NaN, not the 0 nats torchmetrics' default NaN-dropping sum would give them
    assert record["metrics"]["val_nll"] == math.inf and math.isnan(record["metrics"]["test_nll"])
    assert trial.user_attrs["record"]["search"]["outcome"] == "diverged"


def test_workers_ask_for_their_first_trial_together(tmp_path, monkeypatch):
    """A worker that is ready asks for nothing until every worker has reached the start barrier (else the
    first one ready could take every short trial before a slow starter asks); a broken barrier, a worker
    that died on the way, does not hold the others back."""
    url, asked = journal(tmp_path), []

    def quick_trial(job, module, target, trial, experiment):
        asked.append(trial.number)
        target.tell(trial, 1.0)

    monkeypatch.setattr(search, "run_trial", quick_trial)
    study(url)  # created here, not by two threads at once
    job = search.Job("lstm_odyssey", "smoke", ("vanilla",), url, 1, None, (), tmp_path, tmp_path)
    start = threading.Barrier(2)
    worker = threading.Thread(target=search.work, args=(job, start))
    worker.start()
    worker.join(3.0)
    assert worker.is_alive() and asked == [] and study(url).get_trials() == []
    start.wait(10)
    worker.join(30)
    assert not worker.is_alive() and asked == [0]
    start = threading.Barrier(2)
    start.abort()
    search.work(dataclasses.replace(job, trials=2), start)
    assert asked == [0, 1]


def fake_record(number: int, value: float, outcome="complete", experiment="vanilla", rng=None) -> dict:
    rng = rng or np.random.default_rng(number)
    params = {
        "hidden_size": int(rng.integers(20, 201)),
        "learning_rate": float(10 ** rng.uniform(-6, -2)),
        "one_minus_momentum": float(10 ** rng.uniform(-2, 0)),
        "input_noise": float(rng.uniform()),
    }
    trial = optuna.create_study().ask()
    declared.sample(trial)
    distributions = {
        k: json.loads(optuna.distributions.distribution_to_json(d)) for k, d in trial.distributions.items()
    }
    return {
        "seed": number + 1,
        "metrics": {"val_nll": value, "test_nll": value + 0.1},
        "epochs_trained": 10,
        "wall_time_s": 1.0,
        "hardware": {"cpu_count": 2, "processor": "test"},
        "search": {
            "experiment": f"search_{experiment}",
            "trial": number,
            "params": params,
            "distributions": distributions,
            "sampled": {
                "model.hidden_size": params["hidden_size"],
                "model.lr": params["learning_rate"],
                "model.momentum": 1 - params["one_minus_momentum"],
                "data.input_noise": params["input_noise"],
            },
            "objective": "val_nll",
            "outcome": outcome,
            "value": value if outcome == "complete" else None,
        },
    }


def test_a_fresh_study_beside_committed_records_is_rebuilt_from_them(tmp_path):
    """A clone has the records but not the (uncommitted) database: the study is rebuilt with the same trial
    numbers, so the next trial is number 4 and draws what it would have drawn."""
    for number, value, state in ((0, 9.0, "complete"), (1, math.nan, "diverged"), (3, 8.5, "complete")):
        path = search.trial_record_path("lstm_odyssey", "vanilla", "smoke", number, tmp_path)
        results.write_json(path, fake_record(number, value, state))
    storage = search.open_storage(journal(tmp_path))
    rebuilt = search.open_study(storage, "lstm_odyssey", "vanilla", "smoke", "minimize", root=tmp_path)
    assert [(t.number, search.outcome(t)) for t in rebuilt.trials] == [
        (0, "complete"),
        (1, "diverged"),
        (2, "interrupted"),
        (3, "complete"),
    ]
    assert rebuilt.best_value == 8.5 and search.finished(search.counts(rebuilt)) == 3
    fresh = study(f"journal:{tmp_path / 'fresh.log'}")
    for _ in range(5):
        fresh.ask()
    assert declared.sample(rebuilt.ask()) == declared.sample(
        optuna.trial.Trial(fresh, fresh.trials[4]._trial_id)
    )


# --------------------------------------------------------------------------------------------------
# The analysis on synthetic trials: Welch, best 10%, fANOVA, the verdict


def test_welch_golden_values_agree_with_scipy():
    a = [8.61, 8.55, 8.72, 8.49, 8.66, 8.58]
    b = [9.10, 8.95, 9.40, 9.02, 9.25]
    t, df, p = welch(b, a)
    assert (t, df, p) == pytest.approx((6.184971, 5.332093, 1.276345e-3), rel=1e-6)
    reference = scipy.stats.ttest_ind(b, a, equal_var=False)
    assert t == pytest.approx(reference.statistic, rel=1e-12) and p == pytest.approx(
        reference.pvalue, rel=1e-9
    )


def test_best_ten_percent_is_at_least_five_trials():
    assert [analysis.best_count(n) for n in (2, 5, 20, 49, 50, 51, 200)] == [2, 5, 5, 5, 5, 6, 20]


def write_trials(root, experiment: str, values: list[float], rng) -> None:
    for number, value in enumerate(values):
        outcome = "complete" if math.isfinite(value) else "diverged"
        record = fake_record(number, value, outcome, experiment, rng)
        results.write_json(search.trial_record_path("lstm_odyssey", experiment, "cpu", number, root), record)


def test_the_analysis_judges_the_papers_claims_from_synthetic_trials(tmp_path):
    """20 trials per variant: NFG clearly worse, CIFG clearly better, NP alike. The claims gate at full (the
    paper's 200 trials), so at cpu every verdict is shown; judged as full, NFG's 'significantly worse' passes,
    CIFG's 'no variant significantly better' misses and NP passes."""
    rng = np.random.default_rng(0)
    base = list(8.5 + rng.gamma(2.0, 1.0, 20))
    write_trials(tmp_path, "vanilla", base, rng)
    write_trials(tmp_path, "nfg", [v + 1.5 for v in base[:19]] + [math.nan], rng)
    write_trials(tmp_path, "cifg", [v - 1.5 for v in base], rng)
    write_trials(tmp_path, "np", [v + 0.01 for v in reversed(base)], rng)
    write_trials(tmp_path, "nog", base[:10], rng)  # fewer than the tier's 20: analysed, not judged
    paths = analysis.make_search_figures(tmp_path / "lstm_odyssey", "cpu")
    names = [p.name for p in paths]
    assert names[:3] == ["search_figure3_cpu.png", "search_importance_cpu.png", "search_cpu.md"]
    assert sorted(str(p.relative_to(tmp_path)) for p in paths[3:]) == sorted(
        f"lstm_odyssey/search_{v}/cpu/summary.json" for v in ("vanilla", "nfg", "cifg", "np")
    )
    assert all(p.stat().st_size > 10_000 for p in paths[:2])
    nfg = results.read_json(tmp_path / "lstm_odyssey" / "search_nfg" / "cpu" / "summary.json")
    assert nfg["metrics"]["trials"] == 20 and nfg["metrics"]["diverged"] == 1
    best_nfg = sorted(v + 1.5 for v in base[:19])[:5]
    best_vanilla = sorted(base)[:5]
    t, _, p = welch([v + 0.1 for v in best_nfg], [v + 0.1 for v in best_vanilla])
    assert nfg["metrics"]["welch_t"] == pytest.approx(t) and nfg["metrics"]["welch_p"] == pytest.approx(p)
    assert nfg["metrics"]["best_median_test_nll"] == pytest.approx(float(np.median(best_nfg)) + 0.1)
    assert nfg["metrics"]["worse_than_vanilla"] == 1.0 and nfg["metrics"]["better_than_vanilla"] == 0.0
    assert len(nfg["trials"]) == 20 and set(nfg["importance"]) == set(analysis.PARAMS)
    paper = get_paper("lstm_odyssey")
    verdicts = {
        name: search.aggregate(paper, paper.experiment(f"search_{name}"), "cpu", tmp_path)["verdict"]
        for name in ("vanilla", "nfg", "cifg", "np")
    }
    assert verdicts == {"vanilla": "SHOWN", "nfg": "SHOWN", "cifg": "SHOWN", "np": "SHOWN"}
    judged_as_full = {
        name: judge(
            paper.experiment(f"search_{name}"),
            [results.read_json(tmp_path / "lstm_odyssey" / f"search_{name}" / "cpu" / "summary.json")],
            "full",
            True,
        )["verdict"]
        for name in ("vanilla", "nfg", "cifg", "np")
    }
    assert judged_as_full == {"vanilla": "SHOWN", "nfg": PASS, "cifg": MISS, "np": PASS}
    assert search.aggregate(paper, paper.experiment("search_nog"), "cpu", tmp_path) is None
    table = (tmp_path / "lstm_odyssey" / "search_cpu.md").read_text()
    assert "| NOG | 10 of 20 |" in table
    assert "- no variant significantly better than vanilla: does not hold: CIFG" in table
    assert "- NFG significantly worse than vanilla: holds" in table
    assert "- NOAF significantly worse than vanilla: not run" in table


def test_fanova_ranks_a_dominant_hyperparameter_first():
    rng = np.random.default_rng(1)
    records = []
    for number in range(60):
        record = fake_record(number, 0.0, rng=rng)
        lr = record["search"]["params"]["learning_rate"]
        noise = record["search"]["params"]["input_noise"]
        record["metrics"]["test_nll"] = 8.5 + 2.0 * (math.log10(lr) + 4) ** 2 + 0.05 * noise
        records.append(record)
    importance = search.param_importances(records, "test_nll")
    assert next(iter(importance)) == "learning_rate"
    assert importance["learning_rate"] > 0.8 and importance["hidden_size"] < 0.1
    assert sum(importance.values()) == pytest.approx(1.0, abs=0.15)  # no interactions in this function


# --------------------------------------------------------------------------------------------------
# End to end


@needs_data
@pytest.mark.slow
def test_smoke_search_two_trials_two_workers_end_to_end(isolated_outputs, capsys):
    """`repro search lstm_odyssey --tier smoke --trials 2 --workers 2` on the default SQLite storage: two
    worker processes share each study's trials, then the analysis and the verdict."""
    root, scratch = (
        isolated_outputs / "results",
        isolated_outputs / "runs" / "lstm_odyssey" / "search" / "smoke",
    )
    argv = ["--results", str(root), "search", "lstm_odyssey", "-t", "smoke", "-v", "vanilla", "-v", "nfg"]
    assert cli.main([*argv, "--trials", "2", "--workers", "2"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (scratch / "optuna.db").exists()
    assert sorted(p.name for p in scratch.glob("worker*.log")) == ["worker0.log", "worker1.log"]
    pids = set()
    for experiment in ("vanilla", "nfg"):
        records = search.trial_records("lstm_odyssey", experiment, "smoke", root)
        assert [r["search"]["trial"] for r in records] == [0, 1]
        assert {r["hardware"]["torch_threads"] for r in records} == {1}  # one thread per trial
        assert f"lstm_odyssey.search_{experiment}.smoke trial 1: complete" in out
        assert (root / "lstm_odyssey" / f"search_{experiment}" / "smoke" / "aggregate.json").exists()
        url = f"sqlite:///{scratch / 'optuna.db'}"
        pids |= {t.user_attrs["pid"] for t in study(url, experiment).get_trials()}
    assert len(pids) == 2 and os.getpid() not in pids  # both workers ran trials, this process none
    assert (root / "lstm_odyssey" / "search_figure3_smoke.png").exists()
    assert "search_nfg" in out and "SHOWN" in out
