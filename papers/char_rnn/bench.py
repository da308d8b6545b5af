"""``make bench`` for the character models: training throughput in characters per second for each cell type
at each size the cpu tier runs, through the harness (``CharRNNModule`` and ``CharData`` in a Lightning
Trainer) and through a plain PyTorch loop over ``nn.LSTM``/``GRU``/``RNN`` with the same shapes, measured
side by side in the same run; their ratio is the harness's overhead (the target is at least 0.9).

Writes ``results/bench/char_rnn.json``. Both paths train on the same War and Peace windows (100 streams ×
100 steps, one-hot input, RMSProp, element-wise clipping at 5) on one thread, and both time the same number
of optimiser steps after the same warm-up, so Trainer set-up is not counted. The plain loop uses one
multi-layer ``nn.LSTM`` where the harness stacks one-layer modules (for its own dropout generator): the
ratio includes that difference too.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from repro import results

SIZES = ((1, 64), (1, 128), (2, 64), (2, 128))  # (layers, LSTM-equivalent budget) of the cpu tier
WARMUP = 3


def windows(steps: int) -> list[dict]:
    from papers.char_rnn.data import CharData

    data = CharData(batch_size=100, unroll=100)
    data.setup()
    return [batch for _, batch in zip(range(steps), data.train_dataloader(), strict=False)]


def plain_loop(cell: str, hidden: int, layers: int, batches: list[dict], vocab: int) -> float:
    """Seconds for the steps after warm-up of a hand-written truncated-BPTT loop."""
    torch.manual_seed(0)
    rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](vocab, hidden, layers, batch_first=True)
    decoder = nn.Linear(hidden, vocab)
    params = [*rnn.parameters(), *decoder.parameters()]
    optimizer = torch.optim.RMSprop(params, lr=2e-3, alpha=0.95, eps=1e-8)
    state = None
    for step, batch in enumerate(batches):
        if step == WARMUP:
            start = time.perf_counter()
        out, state = rnn(F.one_hot(batch["inputs"], vocab).float(), state)
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        loss = F.cross_entropy(decoder(out).flatten(0, 1), batch["targets"].flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(params, 5)
        optimizer.step()
    return time.perf_counter() - start


def harness(cell: str, hidden: int, layers: int, steps: int, vocab: int) -> float:
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
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.end = time.perf_counter()

    torch.manual_seed(0)
    clock = Clock()
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
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


def main(out: Path, quick: bool = False) -> dict:
    from papers.char_rnn.model import matched_hidden

    torch.set_num_threads(1)
    steps = 6 if quick else 30
    sizes = SIZES[:1] if quick else SIZES
    cells = ("lstm",) if quick else ("lstm", "gru", "rnn")
    batches = windows(steps)
    vocab = 87
    characters = (steps - WARMUP) * batches[0]["inputs"].numel()
    rows = []
    for layers, budget in sizes:
        for cell in cells:
            hidden = budget if cell == "lstm" else matched_hidden(cell, budget, layers, vocab)
            plain = plain_loop(cell, hidden, layers, batches, vocab)
            lightning = harness(cell, hidden, layers, steps, vocab)
            rows.append(
                {
                    "cell": cell,
                    "layers": layers,
                    "hidden": hidden,
                    "budget": f"{layers}x{budget}",
                    "harness_chars_per_s": round(characters / lightning),
                    "plain_chars_per_s": round(characters / plain),
                    "ratio": round(plain / lightning, 3),
                }
            )
    report = {
        "paper": "char_rnn",
        "hardware": results.hardware(),
        "packages": results.package_versions(),
        "git": results.git_state(),
        "setting": f"War and Peace windows of 100 streams x 100 steps, one thread, {steps - WARMUP} timed "
        f"steps after {WARMUP} warm-up steps per measurement",
        "training": rows,
        "min_ratio": min(r["ratio"] for r in rows),
        "measured_at": results.now(),
    }
    results.write_json(out, report)
    return report
