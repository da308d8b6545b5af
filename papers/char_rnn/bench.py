"""``make bench`` for the character models: training throughput in characters per second for each cell type
at each size the cpu tier runs, through the harness (``CharRNNModule`` and ``CharData`` in a Lightning
Trainer) and through a plain PyTorch loop over ``nn.LSTM``/``GRU``/``RNN`` with the same shapes, measured
side by side in the same run; their ratio is the harness's overhead (the target is at least 0.9).

Writes ``results/bench/char_rnn.json``. Both paths train on the same War and Peace windows (100 streams ×
100 steps, one-hot input, RMSProp, element-wise clipping at 5) on one thread, and both time the same number
of optimiser steps after the same warm-up, so Trainer set-up is not counted. The plain loop uses one
multi-layer ``nn.LSTM`` where the harness stacks one-layer modules (for its own dropout generator): the
ratio includes that difference too.

On a GPU (``repro bench char_rnn --accelerator gpu``, written to ``results/bench/char_rnn-gpu.json``) the same
comparison runs at the full tier's largest budgets, the models the ``full`` configs are for.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from repro import results

SIZES = ((1, 64), (1, 128), (2, 64), (2, 128))  # (layers, LSTM-equivalent budget) of the cpu tier
GPU_SIZES = ((1, 512), (2, 512), (3, 512))  # the full tier's largest budgets
WARMUP = 3
# Each shape is timed REPEATS times, harness and plain loop taking turns, and each path keeps its fastest
# time: on a shared machine the load drifts within a minute, and the minimum of interleaved repeats is
# what the code costs, not what else was running (one pair of 27-step timings varied by about ±5%).
REPEATS = 3


def windows(steps: int) -> list[dict]:
    from papers.char_rnn.data import CharData

    data = CharData(batch_size=100, unroll=100)
    data.setup()
    return [batch for _, batch in zip(range(steps), data.train_dataloader(), strict=False)]


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(
    cell: str, hidden: int, layers: int, batches: list[dict], vocab: int, device: torch.device
) -> float:
    """Seconds for the steps after warm-up of a hand-written truncated-BPTT loop."""
    torch.manual_seed(0)
    rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](vocab, hidden, layers, batch_first=True)
    rnn, decoder = rnn.to(device), nn.Linear(hidden, vocab).to(device)
    params = [*rnn.parameters(), *decoder.parameters()]
    optimizer = torch.optim.RMSprop(params, lr=2e-3, alpha=0.95, eps=1e-8)
    state = None
    for step, batch in enumerate(batches):
        inputs, targets = batch["inputs"].to(device), batch["targets"].to(device)
        if step == WARMUP:
            synchronize(device)
            start = time.perf_counter()
        out, state = rnn(F.one_hot(inputs, vocab).float(), state)
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        loss = F.cross_entropy(decoder(out).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(params, 5)
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def harness(cell: str, hidden: int, layers: int, steps: int, vocab: int, device: torch.device) -> float:
    """Seconds for the steps after warm-up of ``CharRNNModule`` trained by a Lightning Trainer."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from papers.char_rnn.data import CharData
    from papers.char_rnn.model import CharRNNModule

    class Clock(Callback):
        def __init__(self):
            self.start = self.end = 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == WARMUP:
                synchronize(device)
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            synchronize(device)
            self.end = time.perf_counter()

    torch.manual_seed(0)
    clock = Clock()
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        gradient_clip_val=5,
        gradient_clip_algorithm="value",
        callbacks=[clock],
    )
    module = CharRNNModule(vocab_size=vocab, cell=cell, hidden_size=hidden, layers=layers)
    trainer.fit(module, datamodule=CharData(batch_size=100, unroll=100))
    return clock.end - clock.start


def main(out: Path, quick: bool = False, accelerator: str = "cpu") -> dict:
    from papers.char_rnn.model import matched_hidden

    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    steps = 6 if quick else 30
    sizes = GPU_SIZES if device.type == "cuda" else SIZES
    sizes = sizes[:1] if quick else sizes
    cells = ("lstm",) if quick else ("lstm", "gru", "rnn")
    batches = windows(steps)
    vocab = 87
    characters = (steps - WARMUP) * batches[0]["inputs"].numel()
    rows = []
    for layers, budget in sizes:
        for cell in cells:
            hidden = budget if cell == "lstm" else matched_hidden(cell, budget, layers, vocab)
            plain_times, harness_times = [], []
            for _ in range(1 if quick else REPEATS):
                plain_times.append(plain_loop(cell, hidden, layers, batches, vocab, device))
                harness_times.append(harness(cell, hidden, layers, steps, vocab, device))
            plain, lightning = min(plain_times), min(harness_times)
            rows.append(
                {
                    "cell": cell,
                    "layers": layers,
                    "hidden": hidden,
                    "budget": f"{layers}x{budget}",
                    "harness_chars_per_s": round(characters / lightning),
                    "plain_chars_per_s": round(characters / plain),
                    "ratio": round(plain / lightning, 3),
                    "plain_seconds": [round(t, 3) for t in plain_times],
                    "harness_seconds": [round(t, 3) for t in harness_times],
                }
            )
    where = "one GPU" if device.type == "cuda" else "one thread"
    report = {
        "paper": "char_rnn",
        "hardware": results.hardware(accelerator),
        "packages": results.package_versions(),
        "git": results.git_state(),
        "setting": f"War and Peace windows of 100 streams x 100 steps, {where}, {steps - WARMUP} timed steps "
        f"after {WARMUP} warm-up steps per measurement; {1 if quick else REPEATS} interleaved measurements "
        "per path and shape, the fastest kept",
        "training": rows,
        "min_ratio": min(r["ratio"] for r in rows),
        "measured_at": results.now(),
    }
    results.write_json(out, report)
    return report
