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
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import torch

from repro import results

PATHS = ("reference", "fast")
BLOCK = 20  # steps per path per turn


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
        out[path] = {
            "steps": total["steps"],
            "images": total["images"],
            "seconds": round(total["seconds"], 3),
            "images_per_s": round(total["images"] / total["seconds"], 1),
            "sensor_share": round(total["sensor"] / total["seconds"], 4),
        }
    out["speedup"] = round(totals["reference"]["seconds"] / totals["fast"]["seconds"], 3)
    return out


def main(out: Path, quick: bool = False) -> dict:
    from papers.ram.data import ClutteredMNIST
    from papers.ram.model import RAMModule

    torch.set_num_threads(1)
    runs = {}
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
        "measured_at": results.now(),
    }
    results.write_json(out, report)
    return report
