"""Calibrate what the paper does not report (spec §4, pitfall 2): the initial learning rate, the location
policy's σ and whether REINFORCE also trains the core, for a task's optimiser and batch size.

Each cell trains a fresh RAM for ``--steps`` steps (or ``--seconds``, whichever ends first) at its
constant initial rate (the start of the linearly annealed schedule), optionally with the gradient's global
norm clipped, then scores the deterministic error on the whole fixed validation set; ``--eval-every`` also
scores it along the way (the cell's curve). With ``--epochs E`` a cell instead runs the full tier's schedule
in miniature: E epochs, epoch e at lr · (1 − e/E) as ``configure_optimizers`` anneals it over 200, scored on
validation after every epoch; what it is judged on is the error after the last epoch, where the rate has
reached its end (the issue with the constant-rate cells: they rank how fast a cell leaves chance, not where
it ends). A loss that turns NaN or inf scores 100%. Cells run in parallel
worker processes, one thread each. The JSON lists every cell, best first, with the hardware; the chosen cell
goes into the task's configs by hand, with the file cited.

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
    from papers.ram.model import RAMModule, annealed

    torch.set_num_threads(1)
    canvas, distractors, glimpses, size, scales = TASKS[cell["task"]]
    data = ClutteredMNIST(
        canvas, distractors, batch_size=cell["batch_size"], limit=cell.get("limit"), seed=cell["seed"]
    )
    data.setup()
    torch.manual_seed(cell["seed"])
    module = RAMModule(
        glimpses=glimpses,
        glimpse_size=size,
        scales=scales,
        location_std=cell["sigma"],
        location_reach=cell.get("reach", 1.0),
        locator_detach_core=cell["detach"],
    )
    if cell["optimizer"] == "adam":
        optimizer = torch.optim.Adam(module.parameters(), lr=cell["lr"])
    else:
        optimizer = torch.optim.SGD(module.parameters(), lr=cell["lr"], momentum=0.9)
    start, steps, epoch, finite, curve = time.perf_counter(), 0, 0, True, {}
    deadline = start + (cell.get("time_limit") or math.inf)
    epochs = cell.get("epochs")
    if epochs:
        per_epoch = math.ceil(len(data.splits["train"][1]) / cell["batch_size"])
        cell = {**cell, "steps": epochs * per_epoch}

    def done() -> bool:
        return steps >= cell["steps"] or time.perf_counter() >= deadline

    while not done() and finite:
        if epochs:
            for group in optimizer.param_groups:
                group["lr"] = cell["lr"] * annealed(epoch, epochs)
        for batch in data.training_batches(epoch):
            rollout = module.rollout(batch["images"], batch["start"], sample=True)
            loss = module.hybrid_loss(rollout, batch["labels"])["loss"]
            if not math.isfinite(loss.item()):
                finite = False
                break
            optimizer.zero_grad()
            loss.backward()
            if cell.get("clip"):
                torch.nn.utils.clip_grad_norm_(module.parameters(), cell["clip"])
            optimizer.step()
            steps += 1
            if cell.get("eval_every") and steps % cell["eval_every"] == 0:
                curve[steps] = validation_error(module, data)
            if done():
                break
        epoch += 1
        if epochs and finite:
            curve[epoch] = validation_error(module, data)
    return {
        **cell,
        "steps_done": steps,
        "finite": finite,
        "val_error": (curve[epoch] if epochs else validation_error(module, data)) if finite else 100.0,
        "curve": curve,
        "seconds": round(time.perf_counter() - start, 1),
    }


def validation_error(module, data) -> float:
    """Deterministic error in % on the whole fixed validation set."""
    errors = seen = 0
    with torch.no_grad():
        for batch in data.evaluation_batches("valid"):
            logits = module.rollout(batch["images"], batch["start"], sample=False).logits
            errors += int((logits.argmax(-1) != batch["labels"]).sum())
            seen += len(batch["labels"])
    return round(100 * errors / seen, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m papers.ram.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="mnist")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--lr", type=float, nargs="+", default=[0.001, 0.003, 0.01, 0.03])
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.05, 0.1, 0.17, 0.22])
    parser.add_argument(
        "--reach", type=float, nargs="+", default=[1.0], help="RAMModule.location_reach values"
    )
    parser.add_argument("--detach", choices=("yes", "no", "both"), default="both")
    parser.add_argument("--clip", type=float, nargs="+", default=[0.0], help="gradient norm limits; 0: none")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument(
        "--epochs", type=int, default=0, help="run E epochs on the linear schedule to 0 instead of --steps"
    )
    parser.add_argument("--seconds", type=float, default=None, help="stop each cell after this long")
    parser.add_argument(
        "--eval-every", type=int, default=0, help="score validation every N steps (0: at the end)"
    )
    parser.add_argument("--seed", type=int, nargs="+", default=[1])
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
            "reach": reach,
            "detach": d,
            "clip": clip,
            "steps": args.steps,
            "epochs": args.epochs,
            "time_limit": args.seconds,
            "eval_every": args.eval_every,
            "seed": seed,
        }
        for lr, sigma, reach, d, clip, seed in itertools.product(
            args.lr, args.sigma, args.reach, detach, args.clip, args.seed
        )
    ]
    report = {
        "paper": "ram",
        "what": "calibration of lr, sigma, location reach and locator_detach_core: deterministic validation "
        "error after "
        + (
            f"{args.epochs} epochs, the rate annealed linearly to 0 over them (the full tier's schedule)"
            if args.epochs
            else f"{args.steps} steps (or {args.seconds} s, whichever ends first) at the constant initial lr"
        ),
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
