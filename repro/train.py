"""Train and evaluate one seed of one experiment: the only place a ``lightning.Trainer`` is built.

``run_seed`` resolves the pinned config, seeds everything, builds the paper's LightningModule and
LightningDataModule, fits, tests, and writes the seed's record. Checkpoints and logs go to
``runs/<paper>/<experiment>/<tier>/seed<k>/`` (not committed); the record goes to ``results/``.

A LightningModule may offer two optional hooks the harness reads after testing:
``test_details() -> dict`` (curves and tables for the record, e.g. accuracy per length).
A LightningDataModule may offer ``data_files() -> list[Path]``, whose sha256
values the record keeps. Run as a module (``python -m repro.train PAPER EXPERIMENT TIER SEED``) so that
Lightning's DDP launcher can start the other ranks with the same command.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro import config as config_lib
from repro import results
from repro.data import DataError, sha256
from repro.papers import get_paper

RUNS = Path(os.environ.get("REPRO_RUNS", results.ROOT / "runs"))


class NonFiniteLossError(RuntimeError):
    pass


class RunLockedError(RuntimeError):
    """Another process is training the same paper, experiment, tier and seed in the same work folder."""


LOCK = ".lock"  # in a seed's work folder, held (flock) by the process that trains it


def lock_holder(work: Path) -> int | None:
    """The pid of the process training in ``work`` now, or None when nobody is."""
    path = work / LOCK
    if not path.exists():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return int(handle.read().strip() or 0)
    return None


@contextlib.contextmanager
def run_lock(work: Path) -> Iterator[None]:
    """Hold ``work``'s lock while a seed trains there: a second identical run refuses to start instead of
    interleaving its logs and checkpoints with the first. DDP's other ranks share rank 0's folder and lock."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        yield
        return
    work.mkdir(parents=True, exist_ok=True)
    with open(work / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise RunLockedError(
                f"{work} is in use: process {handle.read().strip() or '?'} is training this seed now; wait "
                "for it to finish, or stop it, before starting the same run again"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


@dataclass
class RunSpec:
    paper: str
    experiment: str
    tier: str
    seed: int
    overrides: list[str] = field(default_factory=list)
    resume: bool = False
    progress: bool = True
    results_root: Path | None = None
    runs_root: Path | None = None
    invocation: str | None = None  # the `repro reproduce` command this seed belongs to (its resume key)

    @property
    def work_dir(self) -> Path:
        return (self.runs_root or RUNS) / self.paper / self.experiment / self.tier / f"seed{self.seed}"


@dataclass(frozen=True)
class RunOptions:
    """How a run differs from a seed of ``repro reproduce``: a trial of ``repro search`` (repro/search.py)
    keeps its record and work folder with its study, writes no checkpoints (hundreds of short trials), and
    ends at a NaN/inf loss the way early stopping ends a run (the weights of the best validation epoch are
    tested) instead of failing, because a diverging trial is one of the search's results."""

    work_dir: Path | None = None  # default: spec.work_dir
    record_path: Path | None = None  # default: results/<paper>/<experiment>/<tier>/seed<k>.json
    checkpoints: bool = True
    stop_on_nonfinite: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # more fields for the record


def wandb_mode() -> str:
    """Offline unless the user asked otherwise: WANDB_MODE wins, then an API key means online."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def load_latest_checkpoint(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The latest epoch's checkpoint that can be read, and its contents; a file cut short by a kill is
    skipped, not trusted. Epochs are ordered by their file names (``epochNNN.ckpt``): two files written
    within the file system's time resolution have the same mtime.

    Checkpoints are read with ``weights_only=True``: tensors, containers and primitive values only, so a
    checkpoint folder from someone else cannot run code when it is loaded; a file that holds anything else
    is refused with a warning, like a damaged one."""
    import pickle

    import torch

    for path in sorted(folder.glob("epoch*.ckpt"), reverse=True):
        try:
            return path, torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            warnings.warn(
                f"{path}: refused: it holds Python objects besides tensors and plain values, and loading it "
                "could run code; a checkpoint written by this suite never does",
                stacklevel=2,
            )
        except Exception:  # noqa: BLE001 - any unreadable file means "not a usable checkpoint"
            continue
    return None


def latest_checkpoint(folder: Path) -> Path | None:
    """The path of ``load_latest_checkpoint``: what a resumed run starts from."""
    found = load_latest_checkpoint(folder)
    return found[0] if found else None


FINISHED = "finished.json"  # in a seed's work folder: which invocation finished it, and its record


def finished_by(work: Path) -> str | None:
    """The invocation that finished the seed whose work folder is ``work`` (None: not finished)."""
    marker = work / FINISHED
    if not marker.exists():
        return None
    return results.read_json(marker).get("invocation")


def set_aside_checkpoints(work: Path) -> Path | None:
    """Move a work folder's checkpoints aside (never deleted) so that a fresh run cannot mix them with its
    own, nor a later ``--resume`` continue from them; returns where they went."""
    old = work / "checkpoints"
    if not (old.exists() and any(old.iterdir())):
        return None
    aside = work / f"checkpoints-before-{results.now().replace(':', '')}"
    old.rename(aside)
    return aside


def continue_csv_log(logger, checkpoint: Path) -> None:
    """Make ``logger`` (a CSVLogger) continue its ``metrics.csv`` in a run resumed from ``checkpoint``
    (``epochNNN.ckpt``). Lightning's CSV writer deletes an existing file when it is created, and starts
    with no columns; here the file's rows up to the checkpoint's epoch are kept (later ones were logged
    before the kill and are logged again) and the writer starts with the file's columns."""
    import csv
    import io

    from lightning.pytorch.utilities import rank_zero_only

    log = Path(logger.log_dir) / "metrics.csv"
    if rank_zero_only.rank != 0 or not log.exists():
        return
    epoch = int(checkpoint.stem.removeprefix("epoch"))
    with log.open(newline="") as file:
        reader = csv.DictReader(file)
        columns = list(reader.fieldnames or [])
        kept = [row for row in reader if not row.get("epoch") or int(float(row["epoch"])) <= epoch]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    with warnings.catch_warnings():  # its "previous log files will be deleted" is not true of this run
        warnings.filterwarnings("ignore", message="Experiment logs directory")
        logger.experiment.metrics_keys = columns  # creating the writer deletes the file: write it after
    results.atomic_write_text(log, text.getvalue())


def build_trainer(
    config: dict[str, Any],
    spec: RunSpec,
    resume_from: Path | None = None,
    options: RunOptions | None = None,
):
    import lightning as L
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    options = options or RunOptions()
    work = options.work_dir or spec.work_dir

    class StopOnNonFiniteLoss(Callback):
        """Stop at the first NaN/inf loss: fail (the checkpoints of earlier epochs stay on disk), or, with
        ``options.stop_on_nonfinite``, end training as early stopping would and note it in ``message``."""

        message: str | None = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            if loss is None or math.isfinite(float(loss)) or self.message:
                return
            self.message = f"loss became {float(loss)} at epoch {trainer.current_epoch}, batch {batch_idx}"
            if options.stop_on_nonfinite:
                trainer.should_stop = True
                return
            # Not --resume: it continues with the settings that diverged (and a resumed seed replays the same
            # steps), so a changed lr or clip needs a fresh run.
            fix = (
                "lower the learning rate or clip the gradient (--set model.lr=... or --set "
                "trainer.gradient_clip_val=...) or check the data, and run it again without --resume"
            )
            if latest_checkpoint(work / "checkpoints") is None:
                advice = f"No checkpoint was written yet (the first epoch did not finish): {fix}."
            else:
                advice = f"The last good checkpoint is kept in {work / 'checkpoints'} to inspect; {fix}."
            raise NonFiniteLossError(f"{self.message}. {advice}")

    work.mkdir(parents=True, exist_ok=True)
    if options.checkpoints and not spec.resume:
        set_aside_checkpoints(work)
    wandb_dir = work / "wandb"
    wandb_dir.mkdir(exist_ok=True)
    csv_logger = CSVLogger(save_dir=work, name="csv", version="")
    if resume_from is not None:
        continue_csv_log(csv_logger, resume_from)
    loggers = [csv_logger]
    if wandb_mode() != "disabled":
        loggers.append(
            WandbLogger(
                project=os.environ.get("WANDB_PROJECT", "repro"),
                group=spec.paper,
                job_type=spec.tier,
                name=f"{spec.experiment}-{spec.tier}-seed{spec.seed}",
                save_dir=str(work),
                mode=wandb_mode(),
                config={**config, "seed": spec.seed, "experiment": spec.experiment},
            )
        )
    callbacks: list = [StopOnNonFiniteLoss()]
    if options.checkpoints:
        # Every epoch's checkpoint is kept: a kill during a write can only cost the newest one.
        callbacks.insert(
            0,
            ModelCheckpoint(
                dirpath=work / "checkpoints",
                filename="epoch{epoch:03d}",
                auto_insert_metric_name=False,
                save_top_k=-1,
                every_n_epochs=1,
            ),
        )
    if spec.progress:
        # Redrawn 4 times a second, not Lightning's default 100: in a terminal each redraw renders the bar on
        # a thread that takes the interpreter from training; at RAM's batch of 20 (~10 ms steps) the default
        # cost ~25% of a step's time and 4 a second ~5% (28x28, one thread, measured side by side).
        callbacks.append(RichProgressBar(leave=True, refresh_rate=4))
    return L.Trainer(
        **config["trainer"],
        logger=loggers,
        callbacks=callbacks,
        default_root_dir=work,
        enable_checkpointing=options.checkpoints,
        enable_progress_bar=spec.progress,
    )


def run_seed(spec: RunSpec, options: RunOptions | None = None) -> dict[str, Any] | None:
    """Fit and test one seed; returns the record (None on ranks other than zero)."""
    import lightning as L
    import torch

    options = options or RunOptions()
    paper = get_paper(spec.paper)
    experiment = paper.experiment(spec.experiment)
    config = config_lib.load(paper.config_path(experiment.name, spec.tier), spec.overrides, seed=spec.seed)
    started, t0 = results.now(), time.perf_counter()
    git = results.git_state()  # the code that trains, not what HEAD may be when a long run ends
    L.seed_everything(spec.seed, workers=True, verbose=False)
    # cuBLAS is deterministic only with a fixed workspace, which must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    model, data = config_lib.instantiate(config)
    work = options.work_dir or spec.work_dir
    with run_lock(work):
        ckpt = latest_checkpoint(work / "checkpoints") if spec.resume else None
        trainer = build_trainer(config, spec, resume_from=ckpt, options=options)
        # Lightning loads a checkpoint's weights into the module before its precision plugin converts it, so
        # a float64 run ("64-true") resumed into a float32 module came back rounded to float32 and went on
        # to different numbers. Converting first, as Lightning itself would a moment later, keeps every bit.
        model = trainer.precision_plugin.convert_module(model)
        trainer.fit(model, datamodule=data, ckpt_path=ckpt, weights_only=True)
        tested = trainer.test(model, datamodule=data, verbose=False)
        if not trainer.is_global_zero:
            return None
        metrics = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
        record = {
            "paper": spec.paper,
            "experiment": spec.experiment,
            "tier": spec.tier,
            "seed": spec.seed,
            "status": "complete",
            "metrics": metrics,
            "details": model.test_details() if hasattr(model, "test_details") else {},
            "epochs_trained": trainer.current_epoch,
            "resumed_from": str(ckpt.relative_to(work)) if ckpt else None,
            "config": config,
            "overrides": spec.overrides,
            "git": git,
            "packages": results.package_versions(),
            "hardware": results.hardware(str(config["trainer"].get("accelerator")), trainer.num_devices),
            "data": [{"path": str(p), "sha256": sha256(p)} for p in getattr(data, "data_files", list)()],
            "started_at": started,
            "finished_at": results.now(),
            "wall_time_s": round(time.perf_counter() - t0, 2),
        }
        if options.stop_on_nonfinite:
            stop = next(c for c in trainer.callbacks if type(c).__name__ == "StopOnNonFiniteLoss")
            record["nonfinite_loss"] = stop.message  # None: the loss stayed finite
        record.update(options.extra)
        record_path = options.record_path or results.record_path(
            spec.paper, spec.experiment, spec.tier, spec.seed, spec.results_root
        )
        results.write_json(record_path, record)
        if spec.invocation:
            results.write_json(work / FINISHED, {"invocation": spec.invocation, "record": str(record_path)})
        _close_wandb(trainer, record, experiment)
        return record


def _close_wandb(trainer, record: dict[str, Any], experiment) -> None:
    """Put the published values and this seed's agreement with them into the W&B run summary."""
    from lightning.pytorch.loggers import WandbLogger

    from repro.verdict import agrees

    summary: dict[str, Any] = {f"test/{k}": v for k, v in record["metrics"].items()}
    summary["wall_time_s"] = record["wall_time_s"]
    for metric in experiment.metrics:
        if metric.published is not None:
            summary[f"published/{metric.key}"] = metric.published
            summary[f"agrees/{metric.key}"] = agrees(metric, record["metrics"].get(metric.key))
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(summary)
            logger.experiment.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.train", description="Train and test one seed.")
    parser.add_argument("paper")
    parser.add_argument("experiment")
    parser.add_argument("tier")
    parser.add_argument("seed", type=int)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--invocation", help="the id of the `repro reproduce` command that started this seed")
    args = parser.parse_args(argv)
    # A seed started by `repro reproduce` in the background inherits an ignored SIGINT; the parent stops its
    # seeds with SIGINT, which Lightning answers by ending at the next batch with the finished epochs saved.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    spec = RunSpec(
        args.paper,
        args.experiment,
        args.tier,
        args.seed,
        args.overrides,
        args.resume,
        args.progress,
        invocation=args.invocation,
    )
    try:
        run_seed(spec)
    except (config_lib.ConfigError, NonFiniteLossError, DataError, RunLockedError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
