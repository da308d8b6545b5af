"""``repro search PAPER``: a paper's random search over its hyperparameters, run with Optuna.

A paper declares its search in ``papers/<paper>/search.py`` (found by file name, as ``figures.py`` and
``bench.py`` are)::

    EXPERIMENTS = ("vanilla", ...)      # what a study may search (--variant): each trial trains
                                        # configs/<experiment>-<tier>.yaml with the sampled values
    TRIALS = {"smoke": 2, "cpu": 20, "full": 200}   # trials per study and tier: the default of --trials
    OBJECTIVE, DIRECTION = "val_nll", "minimize"     # the record metric a study optimises
    FIXED = ("model.loss_reduction=sum", ...)        # overrides every trial gets
    def sample(trial: optuna.Trial) -> dict[str, Any]   # one draw: dotted config key -> value

and analyses the trials in its ``figures.py``, writing ``summary.json`` (a record whose metrics
``expected.yaml`` judges) into each searched experiment's folder.

**Studies.** One per (paper, experiment, tier), named ``<paper>.search_<experiment>.<tier>``, sampled by a
seeded :class:`TrialSeededRandomSampler` (Optuna's RandomSampler: a random search, no TPE) whose draws for
trial k depend only on (seed, k), so the same trials come out however many workers run them and however
often the study is resumed.

**Storage.** An SQLite file ``runs/<paper>/search/<tier>/optuna.db`` by default (one machine, several
worker processes); ``--storage`` takes any SQLAlchemy URL (``postgresql://...``, for several machines) or
``journal:PATH`` (Optuna's JournalFileBackend: one file, on a disk every machine mounts). The URL is opened
before any trial starts. The database is scratch, not evidence: every trial writes a normal run record,
``results/<paper>/search_<experiment>/<tier>/trialNNN.json`` (the harness's record plus a ``search``
section: trial number, sampled values, outcome); the same record goes into the study (user attribute
``record``), so that the machine that ends a run writes every trial's record, wherever it ran; and a study
found empty beside existing records is rebuilt from them, trial numbers included, so a fresh clone extends the
committed search instead of overwriting it.

**Trials.** ``--trials N`` is the number of finished trials the study should hold in all, so rerunning a
command resumes it. ``--workers K`` processes run trials one after another, one CPU thread each; they ask
for their first trials together, once all K have started. A trial trains through ``repro.train.run_seed``
(seed = trial number + 1) without checkpoints; a NaN/inf loss ends its training as early stopping would (the
best validation epoch is tested). Outcomes (user attribute ``outcome``): ``complete`` (the objective is
finite: the trial's value); ``diverged`` (the objective is not finite: the loss blew up before any good epoch;
a result of its hyperparameters, counted, FAIL in Optuna); ``error`` (an exception: FAIL, not counted, the
worker stops); ``interrupted`` (found RUNNING with its process gone or its heartbeat silent for 5 minutes:
FAIL, not counted; the next run draws a new trial in its place).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import multiprocessing
import os
import socket
import sys
import threading
import time
import traceback
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.samplers import RandomSampler
from optuna.trial import TrialState, create_trial

from repro import results
from repro.evidence import SUMMARY, write_aggregate
from repro.papers import SEARCH_PREFIX as PREFIX
from repro.papers import Paper, get_paper, unknown_name_error

COUNTED = ("complete", "diverged")
HEARTBEAT_S = 30
STALE_AFTER_S = 300
START_TIMEOUT_S = 120  # how long a worker waits for the others before it starts without them
HOST = socket.gethostname()


class StorageError(ValueError):
    """An Optuna storage that cannot be opened: the message names it (without its password) and why."""


# --------------------------------------------------------------------------------------------------
# The paper's declaration, names and paths


def search_module(paper: Paper) -> ModuleType:
    module = paper.hook("search")
    if module is None:
        raise ValueError(f"{paper.name} has no random search (papers/{paper.name}/search.py)")
    return module


def resolve_variants(paper: Paper, module: ModuleType, names: list[str] | None) -> list[str]:
    """The experiments named by --variant (any case: NFG or nfg), all of them when none is named."""
    valid = list(module.EXPERIMENTS)
    chosen = []
    for name in names or valid:
        match = next((v for v in valid if v.lower() == name.lower()), None)
        if match is None:
            raise unknown_name_error(f"variant of {paper.name}'s search", name, valid)
        chosen.append(match)
    return chosen


def study_name(paper: str, experiment: str, tier: str) -> str:
    return f"{paper}.{PREFIX}{experiment}.{tier}"


def trial_folder(paper: str, experiment: str, tier: str, root: Path | None = None) -> Path:
    return results.run_dir(paper, PREFIX + experiment, tier, root)


def trial_record_path(paper: str, experiment: str, tier: str, number: int, root: Path | None = None) -> Path:
    return trial_folder(paper, experiment, tier, root) / f"trial{number:03d}.json"


def trial_records(paper: str, experiment: str, tier: str, root: Path | None = None) -> list[dict[str, Any]]:
    """Every trial record of a searched experiment, in trial order."""
    folder = trial_folder(paper, experiment, tier, root)
    return [results.read_json(p) for p in sorted(folder.glob("trial*.json"))]


def scratch_folder(paper: str, tier: str, runs_root: Path | None = None) -> Path:
    """Where the default study database, the worker logs and the trials' training logs go (not committed)."""
    from repro.train import RUNS

    return (runs_root or RUNS) / paper / "search" / tier


def default_storage_url(paper: str, tier: str, runs_root: Path | None = None) -> str:
    folder = scratch_folder(paper, tier, runs_root)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


# --------------------------------------------------------------------------------------------------
# Storage and studies


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL (journal:...): nothing secret in it
        return url


def open_storage(url: str):
    """Open (and so check) an Optuna storage: ``journal:PATH`` or an SQLAlchemy URL."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal:")).expanduser()
            if not path.parent.is_dir():
                raise FileNotFoundError(f"folder {path.parent} does not exist")
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as err:  # noqa: BLE001 - whatever the driver raises, the message says which URL failed
        raise StorageError(
            f"cannot open the Optuna storage {shown_url(url)}: {type(err).__name__}: {err}. "
            "--storage takes an SQLAlchemy URL (sqlite:///PATH, postgresql://USER@HOST/DB with its driver "
            "installed) or journal:PATH"
        ) from err


class TrialSeededRandomSampler(RandomSampler):
    """Optuna's RandomSampler (independent uniform draws in each distribution's own, possibly log, scale)
    whose draws for a trial depend only on (seed, trial number, parameter name): trial k of a study gets
    the same hyperparameters whichever worker runs it, in whatever order, after any resume."""

    def __init__(self, seed: int):
        super().__init__(seed)
        self.seed = seed

    def sample_independent(self, study, trial, param_name, param_distribution):
        key = np.array([self.seed, trial.number, zlib.crc32(param_name.encode())], dtype=np.uint32)
        self._rng.rng.seed(key)
        return super().sample_independent(study, trial, param_name, param_distribution)


def sampler_seed(name: str, seed: int) -> int:
    """The sampler's seed: --seed mixed with the study's name, so that every variant draws its own trials."""
    return (zlib.crc32(name.encode()) + seed) % 2**32


def open_study(
    storage,
    paper: str,
    experiment: str,
    tier: str,
    direction: str,
    seed: int | None = None,
    overrides: tuple[str, ...] = (),
    root: Path | None = None,
):
    """Load the study, or create it (rebuilt from the experiment's trial records when there are some).

    A study keeps the seed and the --set overrides it was created with: its trials must all train alike, so a
    resume with others is refused."""
    name = study_name(paper, experiment, tier)
    if name not in optuna.get_all_study_names(storage):
        with contextlib.suppress(optuna.exceptions.DuplicatedStudyError):  # another machine made it first
            study = optuna.create_study(storage=storage, study_name=name, direction=direction)
            study.set_user_attr("seed", 0 if seed is None else seed)
            study.set_user_attr("overrides", list(overrides))
            import_records(study, trial_records(paper, experiment, tier, root))
    study = optuna.load_study(study_name=name, storage=storage)
    stored = study.user_attrs.get("seed", 0)
    if seed is not None and seed != stored:
        raise ValueError(
            f"study {name} was created with --seed {stored}; rerun with it, or start a new study"
        )
    if list(overrides) != study.user_attrs.get("overrides", []):
        raise ValueError(
            f"study {name} was created with --set {study.user_attrs.get('overrides') or '(none)'}, not "
            f"{list(overrides) or '(none)'}: a study's trials must all train alike; resume it with its own "
            "settings, or use another --storage"
        )
    study.sampler = TrialSeededRandomSampler(sampler_seed(name, stored))
    return study


def import_records(study, records: list[dict[str, Any]]) -> None:
    """Rebuild a new, empty study from its trial records, each at its own trial number (a number whose
    record is absent, an interrupted trial, becomes a failed placeholder)."""
    number = 0
    for record in sorted(records, key=lambda r: r["search"]["trial"]):
        search = record["search"]
        while number < search["trial"]:
            study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"outcome": "interrupted"}))
            number += 1
        complete = search.get("outcome") == "complete"
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE if complete else TrialState.FAIL,
                value=search["value"] if complete else None,
                params=search["params"],
                distributions={
                    k: json_to_distribution(json.dumps(v)) for k, v in search["distributions"].items()
                },
                user_attrs={"outcome": search.get("outcome", "error"), "record": record},
            )
        )
        number += 1


def outcome(trial) -> str:
    if trial.state == TrialState.COMPLETE:
        return "complete"
    if trial.state == TrialState.RUNNING:
        return "running"
    return (
        trial.user_attrs.get("outcome", "error")
        if trial.state == TrialState.FAIL
        else trial.state.name.lower()
    )


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(trial, now: float | None = None) -> bool:
    """A RUNNING trial nobody runs any more: its process on this machine is gone, or its heartbeat stopped."""
    attrs = trial.user_attrs
    if attrs.get("host") == HOST and "pid" in attrs and not process_alive(attrs["pid"]):
        return True
    beat = attrs.get("heartbeat")
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()
    return beat is not None and (now or time.time()) - beat > STALE_AFTER_S


def fail_stale(study) -> list[int]:
    """Mark the study's stale RUNNING trials as failed (outcome ``interrupted``); returns their numbers."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_stale(trial):
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                optuna.trial.Trial(study, trial._trial_id).set_user_attr("outcome", "interrupted")
                study.tell(trial.number, state=TrialState.FAIL)
                failed.append(trial.number)
    return failed


def counts(study) -> dict[str, int]:
    """How many trials of the study have each outcome (``running`` excludes stale ones)."""
    tally: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        key = outcome(trial)
        if key == "running" and is_stale(trial):
            key = "interrupted"
        tally[key] = tally.get(key, 0) + 1
    return tally


def finished(tally: dict[str, int]) -> int:
    return sum(tally.get(k, 0) for k in COUNTED)


# --------------------------------------------------------------------------------------------------
# Workers and trials


@dataclass(frozen=True)
class Job:
    """What a worker process needs (picklable: each worker opens the storage itself)."""

    paper: str
    tier: str
    experiments: tuple[str, ...]
    storage_url: str
    trials: int
    seed: int | None
    overrides: tuple[str, ...]
    results_root: Path | None
    runs_root: Path | None
    index: int = 0


@contextlib.contextmanager
def machine_lock(path: Path) -> Iterator[None]:
    """Serialises 'count the trials, then ask for one' among this machine's workers, so that N means N."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def heartbeat(trial) -> Iterator[None]:
    """Refresh the trial's ``heartbeat`` user attribute while it trains (another machine's run can then tell
    a live trial from one whose machine died)."""
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a storage hiccup must not kill the training
                trial.set_user_attr("heartbeat", time.time())

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def yaml_scalar(value: Any) -> str:
    """A sampled value as an override's right-hand side that YAML reads back as the same value (YAML 1.1
    reads ``1e-05`` as a string: floats always get a decimal point)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        if exponent and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"
        return text
    return str(value)


def run_trial(job: Job, module: ModuleType, study, trial, experiment: str) -> str:
    """Sample, train and test one trial, write its record and tell the study; returns its outcome."""
    from repro.train import RunOptions, RunSpec, run_seed

    number = trial.number
    sampled = module.sample(trial)
    drawn = [f"{key}={yaml_scalar(value)}" for key, value in sampled.items()]
    overrides = [*module.FIXED, *job.overrides, *drawn]
    path = trial_record_path(job.paper, experiment, job.tier, number, job.results_root)
    search = {
        "experiment": PREFIX + experiment,
        "study": study.study_name,
        "trial": number,
        "params": dict(trial.params),
        "distributions": {k: json.loads(distribution_to_json(d)) for k, d in trial.distributions.items()},
        "sampled": sampled,
        "objective": module.OBJECTIVE,
    }
    spec = RunSpec(job.paper, experiment, job.tier, number + 1, overrides, progress=False)
    options = RunOptions(
        work_dir=scratch_folder(job.paper, job.tier, job.runs_root)
        / (PREFIX + experiment)
        / f"trial{number:03d}",
        record_path=path,
        checkpoints=False,
        stop_on_nonfinite=True,
        extra={"search": search},
    )
    try:
        with heartbeat(trial):
            record = run_seed(spec, options)
    except KeyboardInterrupt:
        trial.set_user_attr("outcome", "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as err:
        trial.set_user_attr("outcome", "error")
        trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:2000])
        study.tell(trial, state=TrialState.FAIL)
        raise
    value = record["metrics"].get(module.OBJECTIVE)
    result = "complete" if value is not None and math.isfinite(value) else "diverged"
    search.update(outcome=result, value=value if result == "complete" else None)
    results.write_json(path, record)
    trial.set_user_attr("outcome", result)
    trial.set_user_attr("record", json.loads(json.dumps(record, default=results._jsonable)))
    if result == "complete":
        study.tell(trial, value)
    else:
        study.tell(trial, state=TrialState.FAIL)
    print(f"{study.study_name} trial {number}: {describe(record)}", flush=True)
    return result


def describe(record: dict[str, Any]) -> str:
    search, metrics = record["search"], record["metrics"]
    values = ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in search["params"].items()
    )
    scores = ", ".join(f"{k} {metrics[k]:.4g}" for k in (search["objective"], "test_nll") if k in metrics)
    return f"{search['outcome']} ({scores}; {values}; {record['wall_time_s']:.0f} s)"


def work(job: Job, start: threading.Barrier | None = None) -> None:
    """One worker: for each study in turn, run trials while it holds fewer than ``job.trials`` finished and
    running ones. With ``start``, the workers ask for their first trial together, once every one of them has
    imported and opened the storage: otherwise the first one ready can take every short trial before a slow
    starter (a loaded machine, a busy database) asks for any."""
    module = search_module(get_paper(job.paper))
    storage = open_storage(job.storage_url)
    lock = scratch_folder(job.paper, job.tier, job.runs_root) / "ask.lock"
    if start is not None:
        with contextlib.suppress(threading.BrokenBarrierError):  # a worker that died: start without it
            start.wait(START_TIMEOUT_S)
    for experiment in job.experiments:
        study = open_study(
            storage,
            job.paper,
            experiment,
            job.tier,
            module.DIRECTION,
            job.seed,
            job.overrides,
            job.results_root,
        )
        while True:
            with machine_lock(lock):
                fail_stale(study)
                tally = counts(study)
                if finished(tally) + tally.get("running", 0) >= job.trials:
                    break
                trial = study.ask()
                for key, value in (("host", HOST), ("pid", os.getpid()), ("heartbeat", time.time())):
                    trial.set_user_attr(key, value)
            run_trial(job, module, study, trial, experiment)


def one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def worker_main(job: Job, log: Path, start: threading.Barrier) -> None:
    """A worker process: its output goes to ``log``; exit status 1 when a trial raised."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    one_thread()
    try:
        work(job, start)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.exit(1)


# --------------------------------------------------------------------------------------------------
# The command


def run_search(
    paper_name: str,
    tier: str,
    variants: list[str] | None = None,
    trials: int | None = None,
    workers: int = 1,
    storage_url: str | None = None,
    seed: int | None = None,
    overrides: tuple[str, ...] = (),
    results_root: Path | None = None,
    runs_root: Path | None = None,
    report: Callable[[str], None] = print,
) -> list[str]:
    """Check everything, open the storage, then run the trials; returns the failures' descriptions.

    Nothing trains before the paper, the variants, their configs, the overrides and the storage have all been
    checked. ``overrides`` (--set) apply to every trial, after the paper's FIXED ones; they may not name a
    sampled key."""
    paper = get_paper(paper_name)
    module = search_module(paper)
    experiments = resolve_variants(paper, module, variants)
    for experiment in experiments:
        if not paper.config_path(experiment, tier).exists():
            raise ValueError(f"{paper.name}/{experiment} has no '{tier}' config to search from")
    total = module.TRIALS[tier] if trials is None else trials
    if total < 0 or workers < 1:
        raise ValueError("--trials must be >= 0 and --workers >= 1")
    url = storage_url or default_storage_url(paper.name, tier, runs_root)
    storage = open_storage(url)  # fails here, before any trial, when the URL cannot be opened
    overrides = tuple(overrides)
    check_overrides(paper, module, experiments[0], tier, overrides)
    studies = {
        e: open_study(storage, paper.name, e, tier, module.DIRECTION, seed, overrides, results_root)
        for e in experiments
    }
    report(f"storage: {shown_url(url)}")
    for study in studies.values():
        gone = fail_stale(study)
        if gone:
            report(
                f"{study.study_name}: trials {gone} were interrupted (failed now; new trials replace them)"
            )
        report(f"{study.study_name}: {finished(counts(study))} of {total} trials finished")
    job = Job(paper.name, tier, tuple(experiments), url, total, seed, overrides, results_root, runs_root)
    failures: list[str] = []
    if workers == 1:
        before = _threads()
        try:
            one_thread()
            work(job)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - reported like a failed seed of `repro reproduce`
            failures.append(f"a trial failed: {type(err).__name__}: {err}")
        finally:
            _restore_threads(before)
    else:
        failures = run_workers(job, workers, studies, report)
    export_records(paper.name, tier, studies, results_root)
    for study in studies.values():
        tally = counts(study)
        report(
            f"{study.study_name}: {finished(tally)} of {total} finished {json.dumps(tally, sort_keys=True)}"
        )
    return failures


def check_overrides(paper: Paper, module: ModuleType, experiment: str, tier: str, overrides: tuple[str, ...]):
    """--set overrides: valid config keys (resolved as a trial's config would be), none of them sampled."""
    from repro import config

    sampled = module.sample(optuna.create_study(sampler=RandomSampler(0)).ask())
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key in sampled or key.replace(".init_args.", ".") in sampled:
            raise ValueError(f"--set {item}: {key} is one of the search's sampled hyperparameters")
    drawn = [f"{key}={yaml_scalar(value)}" for key, value in sampled.items()]
    config.load(paper.config_path(experiment, tier), [*module.FIXED, *overrides, *drawn])


def _threads() -> tuple[str | None, int]:
    import torch

    return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()


def _restore_threads(before: tuple[str | None, int]) -> None:
    import torch

    env, threads = before
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
        os.environ.pop("MKL_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env
    torch.set_num_threads(threads)


def run_workers(job: Job, workers: int, studies: dict, report: Callable[[str], None]) -> list[str]:
    """K worker processes (spawned: no state forked from this one), each logging to its own file; this
    process reports every trial as the storage records it."""
    folder = scratch_folder(job.paper, job.tier, job.runs_root)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers)
    processes = []
    for index in range(workers):
        log = folder / f"worker{index}.log"
        worker_job = dataclasses.replace(job, index=index)
        process = context.Process(target=worker_main, args=(worker_job, log, start))
        process.start()
        processes.append((process, log))
    seen = {
        name: {t.number for t in s.get_trials(deepcopy=False) if outcome(t) != "running"}
        for name, s in studies.items()
    }
    try:
        while any(p.is_alive() for p, _ in processes):
            time.sleep(2)
            _report_new(studies, seen, report)
    except KeyboardInterrupt:
        for process, _ in processes:
            process.join(30)
        raise
    _report_new(studies, seen, report)
    return [
        f"worker {i} exited {p.exitcode}; see {log}" for i, (p, log) in enumerate(processes) if p.exitcode
    ]


def _report_new(studies: dict, seen: dict[str, set[int]], report: Callable[[str], None]) -> None:
    for name, study in studies.items():
        for trial in study.get_trials(deepcopy=False):
            state = outcome(trial)
            if state == "running" or trial.number in seen[name]:
                continue
            seen[name].add(trial.number)
            record = trial.user_attrs.get("record")
            text = (
                describe(record) if record and "search" in record and "outcome" in record["search"] else state
            )
            report(f"{study.study_name} trial {trial.number}: {text}")


def export_records(paper: str, tier: str, studies: dict, root: Path | None) -> list[Path]:
    """Write the record of every counted trial that this machine lacks (it ran on another one)."""
    written = []
    for experiment, study in studies.items():
        for trial in study.get_trials(deepcopy=False):
            record = trial.user_attrs.get("record")
            path = trial_record_path(paper, experiment, tier, trial.number, root)
            if record and outcome(trial) in COUNTED and not path.exists():
                results.write_json(path, record)
                written.append(path)
    return written


# --------------------------------------------------------------------------------------------------
# Analysis helpers for the papers, and the verdict


def param_importances(records: list[dict[str, Any]], key: str, seed: int = 0) -> dict[str, float]:
    """fANOVA (Optuna's FanovaImportanceEvaluator) on the trials' metric ``key``: each hyperparameter's
    fraction of the variance, its main effect alone (not normalised: what the main effects leave is the
    interactions'). A log-scaled hyperparameter enters as its log10, uniform over its range as drawn."""
    from optuna.importance import FanovaImportanceEvaluator

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    for record in records:
        value = record["metrics"].get(key)
        if value is None or not math.isfinite(value):
            continue
        params, distributions = {}, {}
        for name, spec in record["search"]["distributions"].items():
            dist, x = json_to_distribution(json.dumps(spec)), record["search"]["params"][name]
            if isinstance(dist, FloatDistribution | IntDistribution) and dist.log:
                dist, x = FloatDistribution(math.log10(dist.low), math.log10(dist.high)), math.log10(x)
            params[name], distributions[name] = x, dist
        study.add_trial(create_trial(params=params, distributions=distributions, value=value))
    if len(study.trials) < 2:
        return {}
    evaluator = FanovaImportanceEvaluator(seed=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # normalize=
        return optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=False)


def aggregate(paper: Paper, experiment, tier: str, root: Path | None = None) -> dict[str, Any] | None:
    """Judge a searched experiment's ``summary.json`` against expected.yaml and write its aggregate.json, as
    ``repro reproduce`` does with seed records (None while the analysis has written no summary)."""
    folder = results.run_dir(paper.name, experiment.name, tier, root)
    if not (folder / SUMMARY).exists():
        return None
    summary = results.read_json(folder / SUMMARY)
    return write_aggregate(paper, experiment, tier, [summary], root or results.RESULTS)
