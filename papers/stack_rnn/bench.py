"""``make bench`` for Stack-RNN: training throughput, measured here, and the wall time of each Table 2 cell,
read from the committed cpu records (those runs are the measurement; re-running them takes over an hour).

Writes ``results/bench/stack_rnn.json``. The reference point is the original C++ code (online SGD, one
thread): about 8 minutes to solve a^n b^n and 12 minutes for a^n b^n c^n on this class of machine.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import torch

from papers.stack_rnn import kernel
from repro import results
from repro.papers import get_paper

TABLE2 = [
    "stack_anbn",
    "stack_anbn_rounding",
    "stack_anbncn",
    "stack_anbncndn",
    "stack_anb2n",
    "stack_anbmcnm",
    "stack_anbmcnm_rounding",
]
REFERENCE_CPP_S = {"stack_anbn": 480, "stack_anbncn": 720}  # online SGD, one thread (the measurement)


def training_throughput(batch_size: int, dtype: torch.dtype, seconds: float, use_kernel: bool = True) -> dict:
    """Characters and sequences per second of the training step (forward, backward, SGD step) on one thread,
    on the a^n b^n curriculum's full range (n = 2..14), with the compiled window or the PyTorch loop."""
    from papers.stack_rnn.data import StackTaskData, windows
    from papers.stack_rnn.model import StackRNNModule, detach

    torch.manual_seed(0)
    module = StackRNNModule(task="anbn", use_kernel=use_kernel).to(dtype)
    data = StackTaskData(task="anbn", nmax=15, batch_size=batch_size, sequences_per_stream=250)
    batch = data.train_batches(epoch=12)
    mean_length = float(batch["inputs"].shape[1]) / 250
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    state, steps, start = module.core.initial_state(batch_size), 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for window in windows(batch, 50, keep_tail=False):
            logits, state, _ = module.core(window["inputs"], state, window["resets"])
            state = detach(state)
            loss = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), window["targets"], reduction="sum"
            )
            optimizer.zero_grad()
            (loss / batch_size).backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
    elapsed = time.perf_counter() - start
    chars = steps * 50 * batch_size
    return {
        "implementation": "kernel" if use_kernel and kernel.available() else "torch loop",
        "batch_size": batch_size,
        "dtype": str(dtype).removeprefix("torch."),
        "characters_per_s": round(chars / elapsed, 1),
        "sequences_per_s": round(chars / mean_length / elapsed, 1),
        "windows_per_s": round(steps / elapsed, 2),
        "seconds": round(elapsed, 2),
    }


def table2_cells(tier: str = "cpu") -> dict:
    """Per Table 2 cell: the seeds' wall times, and the wall clock from the first start to the last finish."""
    paper = get_paper("stack_rnn")
    cells, starts, ends = {}, [], []
    for name in TABLE2:
        folder = results.run_dir(paper.name, name, tier)
        records = [results.read_json(p) for p in sorted(folder.glob("seed*.json"))]
        if not records:
            continue
        starts += [datetime.fromisoformat(r["started_at"]) for r in records]
        ends += [datetime.fromisoformat(r["finished_at"]) for r in records]
        cells[name] = {
            "seeds": len(records),
            "wall_time_s_per_seed": [r["wall_time_s"] for r in records],
            "epochs": [r["epochs_trained"] for r in records],
            "solved_pct_rounding": [r["metrics"].get("solved_pct_rounding") for r in records],
            "reference_cpp_online_sgd_s": REFERENCE_CPP_S.get(name),
        }
    wall_clock = (max(ends) - min(starts)).total_seconds() if starts else None
    return {"cells": cells, "wall_clock_s": wall_clock}


def main(out: Path, quick: bool = False) -> dict:
    torch.set_num_threads(1)
    seconds = 1.0 if quick else 10.0
    report = {
        "paper": "stack_rnn",
        "hardware": results.hardware(),
        "packages": results.package_versions(),
        "git": results.git_state(),
        # Side by side in one run: the cpu tier's batch and precision (16, float64) and its neighbours, with
        # the compiled window and with the PyTorch loop it replaces on the CPU.
        "training": [
            training_throughput(batch, dtype, seconds, use_kernel)
            for use_kernel in (True, False)
            for batch, dtype in (
                (1, torch.float64),
                (16, torch.float64),
                (16, torch.float32),
                (32, torch.float64),
            )
        ],
        # Seeds of the committed cpu runs ran two at a time on the two cores.
        "table2_cpu": table2_cells(),
        "measured_at": results.now(),
    }
    kernel_row, loop_row = (
        next(r for r in report["training"] if r["implementation"] == name and r["batch_size"] == 16)
        for name in ("kernel", "torch loop")
    )
    # The cpu tier's setting (16 streams, float64), measured side by side above.
    report["kernel_speedup_at_cpu_tier"] = round(
        kernel_row["characters_per_s"] / loop_row["characters_per_s"], 2
    )
    results.write_json(out, report)
    return report
