"""``make bench`` for Stack-RNN: training throughput, measured here, and the wall time of each Table 2 cell,
read from the committed cpu records (those runs are the measurement; re-running them would take half an hour).

Writes ``results/bench/stack_rnn.json``. The reference point is the original C++ code (online SGD, one
thread): about 8 minutes to solve a^n b^n and 12 minutes for a^n b^n c^n on this class of machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from repro import results
from repro.papers import get_paper

TABLE2 = [
    "stack_anbn",
    "stack_anbncn",
    "stack_anbncndn",
    "stack_anb2n",
    "stack_anbmcnm",
    "stack_anbmcnm_rounding",
]


def training_throughput(batch_size: int, seconds: float) -> dict:
    """Characters and sequences per second of the cpu-tier training step (forward, backward, SGD step)."""
    from papers.stack_rnn.data import StackTaskData, windows
    from papers.stack_rnn.model import StackRNNModule, detach

    torch.manual_seed(0)
    module = StackRNNModule(task="anbn")
    data = StackTaskData(task="anbn", nmax=15, batch_size=batch_size, sequences_per_stream=250)
    batch = data.train_batches(epoch=12)  # the full curriculum range n = 2..14
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
        "batch_size": batch_size,
        "characters_per_s": round(chars / elapsed, 1),
        "sequences_per_s": round(chars / mean_length / elapsed, 1),
        "windows": steps,
        "seconds": round(elapsed, 2),
    }


def table2_cells(tier: str = "cpu") -> dict:
    paper = get_paper("stack_rnn")
    cells = {}
    for name in TABLE2:
        folder = results.run_dir(paper.name, name, tier)
        records = [results.read_json(p) for p in sorted(folder.glob("seed*.json"))]
        if not records:
            continue
        cells[name] = {
            "seeds": len(records),
            "wall_time_s_per_seed": [r["wall_time_s"] for r in records],
            "wall_time_s_total": round(sum(r["wall_time_s"] for r in records), 1),
            "epochs": [r["epochs_trained"] for r in records],
        }
    return cells


def main(out: Path, quick: bool = False) -> dict:
    torch.set_num_threads(1)
    report = {
        "paper": "stack_rnn",
        "hardware": results.hardware(),
        "packages": results.package_versions(),
        "git": results.git_state(),
        "training": [training_throughput(b, 1.0 if quick else 10.0) for b in (1, 8, 32)],
        "table2_cells_cpu": table2_cells(),
        "reference_cpp_online_sgd": {"anbn_solve_s": 480, "anbncn_solve_s": 720},
    }
    cells = report["table2_cells_cpu"]
    if cells:
        # Seeds run two at a time on the two cores, so the Table 2 wall clock is about half the summed time.
        total = sum(c["wall_time_s_total"] for c in cells.values())
        report["table2_total_seed_time_s"] = round(total, 1)
    results.write_json(out, report)
    return report
