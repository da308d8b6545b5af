"""``make bench`` for RAM: training images per second at 6 glimpses (28×28 MNIST and 60×60 cluttered, at the
paper's batch of 20 and at 128), old path against new, and the share of a training step spent in the glimpse
sensor.

Writes ``results/bench/ram.json``. One thread, real canvases from the data module, one hybrid-loss SGD step
per batch. The two paths train two copies of the same initial model on the same batches in one process,
interleaved in blocks (the order alternating block by block), so that a load that changes during the run
weighs on both alike; the load average is recorded before and after:

* ``reference``: the module-by-module rollout and hybrid loss under autograd, SGD's per-tensor loop (the
  code before the fast path);
* ``fast``: ``RAMModule.rollout`` and ``hybrid_loss``'s default, one autograd Function each with a
  hand-written backward, and foreach SGD (what training runs). Equal to the reference bit for bit
  (tests/test_ram.py).

The sensor's share is measured beside each block: the time of the N sensor calls a step makes (on the step's
own locations; ``forward`` for the reference, ``prepare`` + ``look`` for the fast path), over the time of the
steps.

What a user gets is the Lightning training loop's rate, so ``training_loop`` times that too, side by side in
the same way: each path trains in turns of ``LOOP_STEPS`` steps, each turn one ``Trainer.fit`` of the trainer
``repro.train`` builds for a run (its CSV logger and callbacks; no progress bar, no checkpoints, no wandb),
with ``log_every_n_steps`` 50 as in the configs, on the data module's canvases generated as training does
(the same ones for both paths). A turn is timed from the start of its third batch to the start of its last,
so the fit's setup and its first steps are not counted:

* ``old``: ``Before``, the module as the code up to the fast path trained it: the reference rollout and loss,
  SGD's per-tensor loop, and 06ae4b4's five ``self.log`` calls every step;
* ``new``: ``RAMModule`` as training runs it now (fast path, foreach SGD, the values logged once per log
  point). The two train the same weights bit for bit (tests/test_ram.py).

In the same turns the new path's steps also run without Lightning, timed the same way: ``step`` on the
turn's batches made beforehand, ``step_and_canvases`` with the data module generating them in the loop; so
each row shows what Lightning and the canvases add to the step. All four end with equal weights
(``same_weights``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from papers.ram.model import RAMModule
from repro import results

PATHS = ("reference", "fast")
BLOCK = 20  # steps per path per turn
LOOP_PATHS = ("old", "new")  # through Trainer.fit
BARE_PATHS = ("step", "step_and_canvases")  # the new path's steps without Lightning, for the difference
LOOP_STEPS = 100  # timed steps per path per turn of the training loop: two log points
LOOP_WARMUP = 2  # steps of each turn before its timing starts
LOG_EVERY = 50  # the configs' trainer.log_every_n_steps


class Before(RAMModule):
    """The bench's old training loop (never trained with otherwise): RAMModule as the code up to the fast path
    trained it, the reference rollout and hybrid loss, SGD's per-tensor loop, and one ``self.log`` call per
    value and step (``log_every_step``, 06ae4b4's logging). It trains the same weights as RAMModule bit for
    bit (tests/test_ram.py)."""

    log_every_step = True

    def rollout(self, images, start, sample, generator=None, reference=True):
        return super().rollout(images, start, sample, generator, reference=True)

    def hybrid_loss(self, rollout, labels, reference=True):
        return super().hybrid_loss(rollout, labels, reference=True)

    def configure_optimizers(self):
        configured = super().configure_optimizers()
        optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        for group in optimizer.param_groups:
            group["foreach"] = False  # SGD reads it at each step
        return configured


def rates(total: dict) -> dict:
    """A path's totals as the JSON reports them."""
    return {
        "steps": total["steps"],
        "images": total["images"],
        "seconds": round(total["seconds"], 3),
        "images_per_s": round(total["images"] / total["seconds"], 1),
    }


def sensor_seconds(module, batch: dict, locations: torch.Tensor, fast: bool) -> float:
    start = time.perf_counter()
    with torch.no_grad():  # the sensor has no parameters: what it costs in a step is its forward pass
        if fast:
            prepared = module.sensor.prepare(batch["images"])
        for t in range(locations.shape[1]):
            if fast:
                module.sensor.look(prepared, locations[:, t])
            else:
                module.sensor(batch["images"], locations[:, t])
    return time.perf_counter() - start


def side_by_side(module, batches: list[dict], warmup: int = 5) -> dict:
    """Both paths over the same batches, interleaved in blocks of BLOCK steps."""
    models = {path: copy.deepcopy(module) for path in PATHS}
    optimizers = {
        path: torch.optim.SGD(models[path].parameters(), lr=0.01, momentum=0.9, foreach=path == "fast")
        for path in PATHS
    }
    totals = {path: {"seconds": 0.0, "sensor": 0.0, "images": 0, "steps": 0} for path in PATHS}

    def run(path: str, block: list[dict], count: bool) -> None:
        model, optimizer, reference = models[path], optimizers[path], path == "reference"
        steps, locations = 0.0, []
        for batch in block:
            start = time.perf_counter()
            rollout = model.rollout(batch["images"], batch["start"], sample=True, reference=reference)
            loss = model.hybrid_loss(rollout, batch["labels"], reference=reference)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += time.perf_counter() - start
            locations.append(rollout.locations)
        if count:
            total = totals[path]
            total["seconds"] += steps
            total["sensor"] += sum(
                sensor_seconds(model, b, where, not reference)
                for b, where in zip(block, locations, strict=True)
            )
            total["images"] += sum(len(b["labels"]) for b in block)
            total["steps"] += len(block)

    for path in PATHS:
        run(path, batches[:warmup], count=False)
    for i, first in enumerate(range(0, len(batches), BLOCK)):
        block = batches[first : first + BLOCK]
        for path in PATHS if i % 2 == 0 else PATHS[::-1]:
            run(path, block, count=True)
    out = {}
    for path, total in totals.items():
        out[path] = {**rates(total), "sensor_share": round(total["sensor"] / total["seconds"], 4)}
    out["speedup"] = round(totals["reference"]["seconds"] / totals["fast"]["seconds"], 3)
    return out


class _Clock(Callback):
    """The time at the start of each training batch (after the loop fetched it)."""

    def __init__(self):
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())


@contextlib.contextmanager
def quiet_runs():
    """No wandb (each turn would start a run) and none of Lightning's per-fit messages, restored after."""
    mode = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "disabled"
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
        if mode is None:
            os.environ.pop("WANDB_MODE")
        else:
            os.environ["WANDB_MODE"] = mode


def fit_turn(module, data, steps: int, warmup: int, log_every: int, work: Path) -> tuple[float, int]:
    """One Trainer.fit of ``warmup + steps + 1`` batches, built as repro.train builds a run's trainer; returns
    the seconds and images of the ``steps`` batches after the warm-up (start of batch ``warmup`` to start of
    batch ``warmup + steps``: each counted step with the loop's work after it and the next batch's fetch)."""
    from repro.train import RunOptions, RunSpec, build_trainer

    config = {
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": warmup + steps + 1,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": log_every,
            "accelerator": "cpu",
            "devices": 1,
            "enable_model_summary": False,
        }
    }
    spec = RunSpec("ram", "bench", "bench", seed=1, progress=False)
    trainer = build_trainer(config, spec, options=RunOptions(work_dir=work, checkpoints=False))
    clock = _Clock()
    trainer.callbacks.append(clock)
    trainer.fit(module, datamodule=data)
    if len(clock.starts) != warmup + steps + 1:
        raise RuntimeError(f"the fit ran {len(clock.starts)} batches, not {warmup + steps + 1}")
    return clock.starts[-1] - clock.starts[warmup], steps * data.hparams.batch_size


def bare_turn(module: RAMModule, data, steps: int, warmup: int, premade: list | None) -> tuple[float, int]:
    """A turn as ``fit_turn``'s without Lightning: the same batches (``premade``, or generated by the data
    module in the loop), a fresh foreach SGD as configure_optimizers makes it (the decay's first epoch is
    lr x 1), epoch 0's exploration noise, timed the same way. ``module`` never joins a trainer, so its
    on_train_epoch_start seeds epoch 0's noise as a fit's first epoch does."""
    hp = module.hparams
    optimizer = torch.optim.SGD(module.parameters(), lr=hp.lr, momentum=hp.momentum, foreach=True)
    module.on_train_epoch_start()
    batches = iter(premade) if premade is not None else data.training_batches(epoch=0)
    starts = []
    for _, batch in zip(range(warmup + steps + 1), batches, strict=False):
        starts.append(time.perf_counter())
        rollout = module.rollout(batch["images"], batch["start"], sample=True, generator=module.exploration)
        loss = module.hybrid_loss(rollout, batch["labels"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if len(starts) != warmup + steps + 1:
        raise RuntimeError(f"the turn ran {len(starts)} batches, not {warmup + steps + 1}")
    return starts[-1] - starts[warmup], steps * data.hparams.batch_size


def loop_side_by_side(
    module: RAMModule,
    data,
    turns: int,
    steps: int = LOOP_STEPS,
    warmup: int = LOOP_WARMUP,
    log_every: int = LOG_EVERY,
) -> dict:
    """The Lightning training loop of both paths, from the same initial weights, in ``turns`` turns each of
    ``steps`` timed steps (one untimed turn first), the order alternating turn by turn; beside them, in the
    same turns, the new path's steps without Lightning (BARE_PATHS: on batches made beforehand, and with the
    data module generating them in the loop), so that what the loop adds is measured in the same row.
    ``same_weights``: all four trained the same steps on the same batches and must end bit for bit equal."""
    before = Before(**module.hparams)
    before.load_state_dict(module.state_dict())
    models = {"old": before, **{path: copy.deepcopy(module) for path in ("new", *BARE_PATHS)}}
    paths = (*LOOP_PATHS, *BARE_PATHS)
    data.setup()
    premade = [b for _, b in zip(range(warmup + steps + 1), data.training_batches(epoch=0), strict=False)]

    def turn(path: str, steps: int, warmup: int, work: Path) -> tuple[float, int]:
        if path in LOOP_PATHS:
            return fit_turn(models[path], data, steps, warmup, log_every, work / path)
        return bare_turn(models[path], data, steps, warmup, premade if path == "step" else None)

    totals = {path: {"seconds": 0.0, "images": 0, "steps": 0, "turns": []} for path in paths}
    with quiet_runs(), tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            turn(path, 2, 1, Path(tmp))
        for i in range(turns):
            for path in paths if i % 2 == 0 else paths[::-1]:
                seconds, images = turn(path, steps, warmup, Path(tmp))
                totals[path]["seconds"] += seconds
                totals[path]["images"] += images
                totals[path]["steps"] += steps
                totals[path]["turns"].append(seconds)
    out = {}
    for path, total in totals.items():
        out[path] = {**rates(total), "turn_seconds": [round(seconds, 3) for seconds in total["turns"]]}
    out["speedup"] = round(totals["old"]["seconds"] / totals["new"]["seconds"], 3)
    # Each turn's old and new ran back to back: the median of their ratios is less moved by a load that
    # changes between turns than the ratio of the sums.
    pairs = zip(totals["old"]["turns"], totals["new"]["turns"], strict=True)
    out["speedup_median_of_turns"] = round(statistics.median(a / b for a, b in pairs), 3)
    old = models["old"].state_dict()
    out["same_weights"] = all(
        torch.equal(old[name], models[path].state_dict()[name]) for path in paths[1:] for name in old
    )
    return out


def main(out: Path, quick: bool = False) -> dict:
    from papers.ram.data import ClutteredMNIST

    torch.set_num_threads(1)
    runs, loops = {}, {}
    for name, canvas, distractors, glimpse, scales in (
        ("mnist_6_glimpses", 28, 0, 8, 1),
        ("cluttered60_6_glimpses", 60, 4, 12, 3),
    ):
        for batch_size in (20, 128):
            data = ClutteredMNIST(canvas=canvas, distractors=distractors, batch_size=batch_size)
            data.setup()
            steps = (20 if quick else 300) * 128 // batch_size
            batches = [b for _, b in zip(range(steps), data.training_batches(epoch=0), strict=False)]
            torch.manual_seed(0)
            module = RAMModule(glimpses=6, glimpse_size=glimpse, scales=scales)
            load_before = os.getloadavg()[0]
            run = side_by_side(module, batches)
            run["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            runs[f"{name}/batch{batch_size}"] = run
            # The training loop, with the full configs' SGD (lr 0.001, sigma 0.22: the turns train on; lr 0.01
            # at sigma 0.1 can reach NaN): 6 turns of 100 steps at batch 20 (12,000 images a path), 4 at 128.
            torch.manual_seed(0)
            module = RAMModule(glimpses=6, glimpse_size=glimpse, scales=scales, location_std=0.22, lr=0.001)
            turns = 2 if quick else (6 if batch_size == 20 else 4)
            load_before = os.getloadavg()[0]
            if quick:
                loop = loop_side_by_side(module, data, turns, steps=4, log_every=2)
            else:
                loop = loop_side_by_side(module, data, turns)
            loop["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            # Generating the counted steps' canvases alone (both paths' loops include it).
            start = time.perf_counter()
            for _, _batch in zip(range(LOOP_STEPS), data.training_batches(epoch=0), strict=False):
                pass
            loop["canvases_s_per_step"] = round((time.perf_counter() - start) / LOOP_STEPS, 6)
            loops[f"{name}/batch{batch_size}"] = loop
    report = {
        "paper": "ram",
        "hardware": results.hardware(),
        "packages": results.package_versions(),
        "git": results.git_state(),
        "model": "RAM, 6 glimpses, one thread, SGD step on the hybrid loss",
        "paths": {
            "reference": "module-by-module rollout and hybrid loss under autograd, SGD's per-tensor loop",
            "fast": "rollout and hybrid loss as autograd Functions with hand-written backwards, foreach SGD "
            "(the default; equal to the reference bit for bit)",
        },
        "training": runs,
        "loop_paths": {
            "old": "Lightning training loop, trainer as repro.train builds it (no progress bar, no "
            "checkpoints, no wandb), log_every_n_steps 50: reference rollout and loss, SGD's per-tensor "
            "loop, five self.log calls every step (the code up to the fast path, 06ae4b4's logging)",
            "new": "the same loop as training runs it now: fast path, foreach SGD, the training values "
            "logged once per log point (the window's mean); equal weights bit for bit",
            "step": "new's steps without Lightning, on the turn's batches made beforehand",
            "step_and_canvases": "new's steps without Lightning, the data module generating each batch",
        },
        "training_loop": loops,
        "measured_at": results.now(),
    }
    results.write_json(out, report)
    return report
