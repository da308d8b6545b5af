"""``make bench`` for DKT: LSTM training throughput in answers per second on the ASSISTments training file,
the time of one training epoch over it, and, side by side in the same run, what chunking long students buys.

Writes ``results/bench/dkt.json``. Throughput is measured on the cpu tier's model (LSTM 200, one-hot input,
100 students a batch) on one thread, over every length group of one epoch (4 groups with ``quick``): the long
groups (up to 4,290 answers) are where padding and the recurrence cost most, so a sample of short groups only
would flatter it. ``max_steps`` is the model's padded-steps budget per forward pass; ``1e9`` means one padded
tensor per group of 100 students.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from repro import results


def train_groups(module, batches: list[dict]) -> dict:
    """One SGD step per batch; answers (scored predictions) per second."""
    optimizer = module.configure_optimizers()
    answers, start = 0, time.perf_counter()
    for batch in batches:
        logit, target, _, _ = module.predict_next(batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        answers += len(target)
    elapsed = time.perf_counter() - start
    return {
        "batches": len(batches),
        "answers": answers,
        "seconds": round(elapsed, 2),
        "answers_per_s": round(answers / elapsed, 1),
    }


def main(out: Path, quick: bool = False) -> dict:
    from papers.dkt.data import DKTData
    from papers.dkt.model import DKTModule

    torch.set_num_threads(1)
    data = DKTData(source="assistments", batch_size=100)
    data.setup()
    batches = data.batches(data.train, epoch=0)
    if quick:  # the two longest groups and two short ones
        batches = sorted(batches, key=lambda b: -b["q"].shape[1])[:2] + batches[:2]
    runs = {}
    for max_steps in (50_000, 10**9):
        torch.manual_seed(0)
        module = DKTModule(n_skills=data.n_skills, baselines=False, max_steps=max_steps)
        runs[f"max_steps={max_steps}"] = train_groups(module, batches)
    chunked, whole = runs["max_steps=50000"], runs[f"max_steps={10**9}"]
    report = {
        "paper": "dkt",
        "hardware": results.hardware(),
        "packages": results.package_versions(),
        "git": results.git_state(),
        "model": "LSTM 200, one-hot 248 input, 100 students a batch, one thread",
        "epoch": "one training epoch of the cpu tier (90% of builder_train.csv)" if not quick else "4 groups",
        "training": runs,
        "epoch_seconds": chunked["seconds"],
        "chunking_speedup": round(whole["seconds"] / chunked["seconds"], 2),
        "measured_at": results.now(),
    }
    results.write_json(out, report)
    return report
