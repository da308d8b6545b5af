"""``repro bench lstm``: the configurable LSTM layer (``repro.lstm``) against ``torch.nn.LSTM``, forward and
backward of a 50-step sequence, 256 units, 88 inputs (a JSB Chorales piano-roll frame), on one thread.

The two are timed in alternation, repetition by repetition, and each reported time is a median, so that
whatever else the machine does affects both alike; the ratios are what to read. Writes
``results/bench/lstm.json``: the vanilla layer (diagonal peepholes) and the ``standard`` one (no peepholes:
the function ``nn.LSTM`` computes) at batch 1, 32 and 256, and every variant at batch 32 against vanilla.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn

from repro import results
from repro.lstm import VARIANTS, LSTMLayer

STEPS, HIDDEN, INPUTS = 50, 256, 88


def step_seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def forward_backward(module: nn.Module, x: torch.Tensor):
    def run():
        out = module(x)[0]
        out.sum().backward()

    return run


def side_by_side(runs: dict[str, object], repeats: int) -> dict[str, float]:
    """Median seconds of each run, timed in turn within every repetition after one warm-up each."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(step_seconds(run))
    return {name: statistics.median(values) for name, values in times.items()}


def main(out: Path, quick: bool = False) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    repeats = 3 if quick else 15
    batches = (32,) if quick else (1, 32, 256)
    reference = nn.LSTM(INPUTS, HIDDEN)
    rows = []
    for batch in batches:
        x = torch.randn(STEPS, batch, INPUTS)
        runs = {
            "torch.nn.LSTM": forward_backward(reference, x),
            "vanilla": forward_backward(LSTMLayer(INPUTS, HIDDEN, "vanilla"), x),
            "standard": forward_backward(LSTMLayer(INPUTS, HIDDEN, "standard"), x),
        }
        seconds = side_by_side(runs, max(3, repeats // (4 if batch == 256 else 1)))
        rows.append(
            {
                "batch": batch,
                "seconds": {name: round(s, 5) for name, s in seconds.items()},
                "vanilla_vs_nn_lstm": round(seconds["torch.nn.LSTM"] / seconds["vanilla"], 3),
                "standard_vs_nn_lstm": round(seconds["torch.nn.LSTM"] / seconds["standard"], 3),
            }
        )
    x = torch.randn(STEPS, 32, INPUTS)
    names = ("vanilla", "CIFG") if quick else tuple(VARIANTS)
    variant_runs = {name: forward_backward(LSTMLayer(INPUTS, HIDDEN, name), x) for name in names}
    variant_seconds = side_by_side(variant_runs, repeats)
    report = {
        "layer": "repro.lstm.LSTMLayer",
        "hardware": results.hardware(),
        "packages": results.package_versions(),
        "git": results.git_state(),
        "setting": f"forward + backward (sum of outputs) of {STEPS} steps, {HIDDEN} units, {INPUTS} inputs, "
        f"float32, one thread; median of alternating repetitions",
        "against_nn_lstm": rows,
        "variants_batch32": {
            name: {"seconds": round(s, 5), "slowdown_vs_vanilla": round(s / variant_seconds["vanilla"], 3)}
            for name, s in variant_seconds.items()
        },
        "targets": {"vanilla_vs_nn_lstm_batch32": 0.8, "variant_slowdown_at_most": 1.5},
        "measured_at": results.now(),
    }
    results.write_json(out, report)
    return report
