"""``make bench`` for the video LSTMs: the training step of the paper's model on the CPU, in frames a second.

The model is the full tier's composite model with both decoders conditional (2048 units per LSTM, one
layer, 4096-d frames: about 167 M parameters), a batch of 80 sequences of 20 frames, the official SGD update.
It is timed twice in the same run: with the official peephole cell (the suite's ``repro.lstm.LSTMLayer``) and
with peepholes off (``torch.nn.LSTM``). One warm-up step, then ``steps`` timed steps (forward through the
encoder and both decoders, backward, update) on one thread; the data are made before the clock starts.
``quick`` shrinks the model (64 units, 4 sequences) so that the benchmark itself can be tested in seconds.

Writes ``results/bench/video_lstm.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from repro import results


def time_steps(module, batch: dict, steps: int) -> dict:
    optimizer = module.configure_optimizers()
    x = module.time_major(batch)

    def step():
        loss = sum(v.sum() for k, v in module.losses(x, generate=False).items() if k.endswith("_loss"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocations, TorchScript compilation of the suite's scan
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    frames = batch["frames"].shape[0] * batch["frames"].shape[1]
    return {
        "seconds_per_step": round(seconds, 3),
        "frames_per_s": round(frames / seconds, 1),
        "sequences_per_step": batch["frames"].shape[0],
        "parameters": sum(p.numel() for p in module.parameters()),
    }


def main(out: Path, quick: bool = False) -> dict:
    from papers.video_lstm.model import VideoLSTMModule

    torch.set_num_threads(1)
    hidden, batch_size, steps = (64, 4, 2) if quick else (2048, 80, 2)
    generator = torch.Generator().manual_seed(0)
    # Moving MNIST-like frames (sparse, in [0, 1]); the cost does not depend on the pixels.
    batch = {"frames": (torch.rand(batch_size, 20, 64, 64, generator=generator) > 0.9).float()}
    runs = {}
    for name, peepholes in (
        ("peepholes (repro.lstm.LSTMLayer)", True),
        ("no peepholes (torch.nn.LSTM)", False),
    ):
        torch.manual_seed(0)
        module = VideoLSTMModule(
            hidden_size=hidden,
            conditional_reconstruction=True,
            conditional_future=True,
            peepholes=peepholes,
            optimizer="sgd",
            reduction="sum",
        )
        runs[name] = time_steps(module, batch, steps)
    report = {
        "paper": "video_lstm",
        "hardware": results.hardware(),
        "packages": results.package_versions(),
        "git": results.git_state(),
        "model": f"composite, both decoders conditional, 1 layer of {hidden} units per LSTM, batch "
        f"{batch_size} x 20 frames of 4096, SGD (the official clipped update), one thread",
        "steps_timed": steps,
        "training": runs,
        "measured_at": results.now(),
    }
    results.write_json(out, report)
    return report
