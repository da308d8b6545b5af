"""Calibrate what the paper does not report (spec §4, pitfall 2): the initial learning rate, the location
policy's σ and whether REINFORCE also trains the core, for a task's optimiser and batch size.

Each cell trains a fresh RAM for ``--steps`` steps at its constant initial rate (the start of the linearly
annealed schedule), then scores the deterministic error on the whole fixed validation set; a loss that turns
NaN or inf scores 100%. Cells run in parallel worker processes, one thread each. The JSON lists every cell,
best first, with the hardware; the chosen cell goes into the task's configs by hand, with the file cited.

    python -m papers.ram.sweep --task mnist --steps 5000 --workers 16 --out results/ram/sweep/mnist_sgd.json
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import time
from pathlib import Path

import torch

from repro import results

TASKS = {  # canvas, distractors, glimpses, glimpse size, scales: the RAM experiments' settings
    "mnist": (28, 0, 6, 8, 1),
    "translated": (60, 0, 8, 12, 3),
    "cluttered60": (60, 4, 8, 12, 3),
    "cluttered100": (100, 8, 8, 12, 4),
}


def run_cell(cell: dict) -> dict:
    from papers.ram.data import ClutteredMNIST
    from papers.ram.model import RAMModule

    torch.set_num_threads(1)
    canvas, distractors, glimpses, size, scales = TASKS[cell["task"]]
    data = ClutteredMNIST(canvas, distractors, batch_size=cell["batch_size"], seed=cell["seed"])
    data.setup()
    torch.manual_seed(cell["seed"])
    module = RAMModule(
        glimpses=glimpses,
        glimpse_size=size,
        scales=scales,
        location_std=cell["sigma"],
        locator_detach_core=cell["detach"],
    )
    if cell["optimizer"] == "adam":
        optimizer = torch.optim.Adam(module.parameters(), lr=cell["lr"])
    else:
        optimizer = torch.optim.SGD(module.parameters(), lr=cell["lr"], momentum=0.9)
    start, steps, epoch, finite = time.perf_counter(), 0, 0, True
    while steps < cell["steps"] and finite:
        for batch in data.training_batches(epoch):
            rollout = module.rollout(batch["images"], batch["start"], sample=True)
            loss = module.hybrid_loss(rollout, batch["labels"])["loss"]
            if not math.isfinite(loss.item()):
                finite = False
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if steps == cell["steps"]:
                break
        epoch += 1
    errors = seen = 0
    if finite:
        with torch.no_grad():
            for batch in data.evaluation_batches("valid"):
                logits = module.rollout(batch["images"], batch["start"], sample=False).logits
                errors += int((logits.argmax(-1) != batch["labels"]).sum())
                seen += len(batch["labels"])
    return {
        **cell,
        "steps_done": steps,
        "finite": finite,
        "val_error": round(100 * errors / seen, 2) if finite else 100.0,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m papers.ram.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="mnist")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--lr", type=float, nargs="+", default=[0.001, 0.003, 0.01, 0.03])
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.05, 0.1, 0.17, 0.22])
    parser.add_argument("--detach", choices=("yes", "no", "both"), default="both")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    detach = {"yes": [True], "no": [False], "both": [False, True]}[args.detach]
    cells = [
        {
            "task": args.task,
            "optimizer": args.optimizer,
            "batch_size": args.batch_size,
            "lr": lr,
            "sigma": sigma,
            "detach": d,
            "steps": args.steps,
            "seed": args.seed,
        }
        for lr, sigma, d in itertools.product(args.lr, args.sigma, detach)
    ]
    report = {
        "paper": "ram",
        "what": "calibration of lr, sigma and locator_detach_core: deterministic validation error after "
        f"{args.steps} steps at the constant initial rate",
        "hardware": results.hardware(),
        "packages": results.package_versions(),
        "git": results.git_state(),
        "cells_planned": len(cells),
        "cells": [],
    }
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for row in pool.imap_unordered(run_cell, cells):
            report["cells"] = sorted([*report["cells"], row], key=lambda r: r["val_error"])
            report["measured_at"] = results.now()
            results.write_json(args.out, report)  # after every cell: a stopped sweep keeps what it measured
            print(f"[{len(report['cells'])}/{len(cells)}] {row}", flush=True)
    print(f"best: {report['cells'][0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
