"""``make bench`` for RAM: training images per second at 6 glimpses (28×28 MNIST and 60×60 cluttered, at the
paper's batch of 20 and at 128), and the share of a training step spent in the glimpse sensor.

Writes ``results/bench/ram.json``. One thread, real canvases from the data module, one hybrid-loss SGD step
per batch. The sensor's share is measured side by side in the same run: the time of the N sensor calls a step
makes (on the step's own locations), over the time of the whole step.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from repro import results


def training_throughput(module, batches: list[dict]) -> dict:
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    images, step_s, sensor_s = 0, 0.0, 0.0
    for batch in batches:
        start = time.perf_counter()
        rollout = module.rollout(batch["images"], batch["start"], sample=True)
        loss = module.hybrid_loss(rollout, batch["labels"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step_s += time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():  # the sensor has no parameters: what it costs in a step is its forward pass
            for t in range(rollout.locations.shape[1]):
                module.sensor(batch["images"], rollout.locations[:, t])
        sensor_s += time.perf_counter() - start
        images += len(batch["labels"])
    return {
        "steps": len(batches),
        "images": images,
        "seconds": round(step_s, 3),
        "images_per_s": round(images / step_s, 1),
        "sensor_share": round(sensor_s / step_s, 4),
    }


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
            training_throughput(module, batches[:5])  # warm-up
            runs[f"{name}/batch{batch_size}"] = training_throughput(module, batches)
    report = {
        "paper": "ram",
        "hardware": results.hardware(),
        "packages": results.package_versions(),
        "git": results.git_state(),
        "model": "RAM, 6 glimpses, one thread, SGD step on the hybrid loss",
        "training": runs,
        "measured_at": results.now(),
    }
    results.write_json(out, report)
    return report
