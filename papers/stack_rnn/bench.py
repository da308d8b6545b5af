"""``make bench`` for Stack-RNN: training throughput, measured here, and the wall time of each Table 2 cell,
read from the committed cpu and full records (those runs are the measurement; re-running them takes hours).

Writes ``results/bench/stack_rnn.json``. Two protocols are timed: the batched truncated BPTT of the cpu tier
(windows of 50 characters over parallel streams) and the code's online SGD of the full tier (one SGD step and
a 50-step backward pass per character, ``stack_online.c``). The online figure is compared with the original
C++ code (``REFERENCE_CPP``: train_toy built and timed outside the project, on this machine) in characters
per CPU second of the training phase, which a loaded machine disturbs far less than characters per second of
wall clock; both are reported.
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
# The original C++ code, timed on this machine (2-core AMD EPYC) on 2026-12-07, outside the project:
REFERENCE_CPP = {
    "source": "github.com/facebookarchive/Stack-RNN (the fetched snapshot), train_toy.cpp + StackRNN.h",
    "build": "g++ -std=c++0x -lm -O3 -march=native -Wall -funroll-loops -ffast-math train_toy.cpp "
    "-o train_toy (its makefile's flags; g++ (Debian 12.2.0-14+deb12u1) 12.2.0)",
    "command": "./train_toy -ntask 1 -nchar 2 -nhid 40 -nstack 10 -lr .1 -nmax 15 -depth 2 -bptt 50 -mod 1 "
    "(script_tasks.sh, a^n b^n)",
    "how": "a Python wrapper reads its stdout as it comes and charges the process's CPU time (utime + stime, "
    "/proc/<pid>/stat) between two reads to the phase it printed last ([train] or [valid]); training "
    "characters = the it= count each epoch's training phase ends with; stopped after 60 s of wall clock, "
    "in a validation phase; 3 full epochs (n = 2..4)",
    "train_characters": 30138,
    "train_cpu_s": 14.75,
    # three runs minutes apart (10:48, 10:58, 11:26 UTC): 2043.3, 2005.2, 1940.6; their mean
    "characters_per_cpu_s_runs": [2043.3, 2005.2, 1940.6],
    "characters_per_cpu_s": 1996.4,
    "wall_s": 70.0,
    "load_average_1m": "7.6 before, 8.3 after (other jobs on the 2 cores: compare CPU time, not wall clock)",
    "earlier_run": "120 s of wall clock at load 1.3-2.7: 229,206 training characters (12 epochs) incl. "
    "validation, 1,910 characters per wall second",
}


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


def online_throughput(seconds: float) -> dict:
    """Characters per second (wall clock and CPU time) of the full tier's online SGD (``stack_online.c``,
    float64, one thread) on a^n b^n at the curriculum's full range (epoch 12: n = 2..14), paper sizes."""
    from papers.stack_rnn.data import StackTaskData
    from papers.stack_rnn.model import StackRNNModule

    torch.manual_seed(0)
    core = StackRNNModule(task="anbn", protocol="online").double().core
    data = StackTaskData(task="anbn", nmax=15, batch_size=1, sequences_per_stream=2000, protocol="online")
    batch = {k: v[0] for k, v in data.train_batches(epoch=12).items()}
    kernel.online_library()  # built before the clock starts
    chars, wall, cpu = 0, 0.0, 0.0
    while wall < seconds:
        weights = [p.detach().clone().contiguous() for p in (core.embed, core.stack_to_hidden, core.readout)]
        stacks = core.initial_state(1)[1][0].contiguous()
        start, start_cpu = time.perf_counter(), time.process_time()
        _, steps = kernel.online_sgd(
            *weights,
            stacks,
            batch["inputs"],
            batch["targets"],
            batch["resets"],
            batch["loss_mask"] > 0,
            lr=0.1,
            depth=core.depth,
            n_actions=core.n_actions,
        )
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        chars += steps
    return {
        "implementation": "online-sgd-kernel",
        "protocol": "one SGD step per character, 50-step backward pass (the full tier)",
        "characters_per_s": round(chars / wall, 1),
        "characters_per_cpu_s": round(chars / cpu, 1),
        "characters": chars,
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "original_cpp_characters_per_cpu_s": REFERENCE_CPP["characters_per_cpu_s"],
        "speedup_over_original_cpp": round(chars / cpu / REFERENCE_CPP["characters_per_cpu_s"], 2),
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
        # The full tier's online protocol against the original C++ code (REFERENCE_CPP).
        "online": online_throughput(seconds),
        "reference_cpp": REFERENCE_CPP,
        # Seeds of the committed cpu runs ran two at a time on the two cores; the full tier's one at a time.
        "table2_cpu": table2_cells(),
        "table2_full": table2_cells("full"),
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
