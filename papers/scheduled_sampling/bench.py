"""``make bench`` for Scheduled Sampling: training captions per second of the cpu tier's captioner on real
captioned MNIST scenes, with teacher forcing (ε = 1) and with scheduled sampling (ε = 0.5: a coin for every
word and a draw from the model's distribution at every step), and with Always Sampling (ε = 0) for the
extreme.

Writes ``results/bench/scheduled_sampling.json``. One thread; every mode starts from the same weights and
trains on the same batches, and the modes take turns of a few steps, so the ratio to teacher forcing is what
sampling costs even on a machine whose load drifts.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from repro import results

MODES = {"teacher_forcing": 1.0, "scheduled_sampling": 0.5, "always_sampling": 0.0}  # ε
TURN = 5  # steps a mode runs before the next mode's turn


def training_seconds(module, optimizer, batches: list[dict]) -> float:
    """Adam steps on the batches, feeding the model's own words with the module's probability."""
    probability = module.own_word_probability()
    start = time.perf_counter()
    for batch in batches:
        annotations = module.annotations(batch)
        out = module.unroll(
            annotations, batch["captions"], batch["lengths"], sampling_probability=probability
        )
        loss = module.losses(out, sampled=False)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main(out: Path, quick: bool = False) -> dict:
    from papers.scheduled_sampling.model import ScheduledSamplingCaptioner
    from repro.data.captioning import SCENE_WORDS, CaptionedMNIST

    torch.set_num_threads(1)
    data = CaptionedMNIST(batch_size=64)
    data.setup()
    steps = 5 if quick else 60
    batches = [b for _, b in zip(range(steps + 2), data.training_batches(epoch=0), strict=False)]
    torch.manual_seed(0)
    cpu_tier = dict(
        encoder="mnist_conv",
        vocab_size=len(SCENE_WORDS),
        word_dim=64,
        hidden_dim=256,
        annotation_dim=64,
        attention_dim=64,
        lr=3e-3,
    )
    initial = ScheduledSamplingCaptioner(schedule="constant", epsilon=1.0, **cpu_tier).state_dict()
    modules, optimizers, seconds = {}, {}, dict.fromkeys(MODES, 0.0)
    for mode, epsilon in MODES.items():
        modules[mode] = ScheduledSamplingCaptioner(schedule="constant", epsilon=epsilon, **cpu_tier)
        modules[mode].load_state_dict(copy.deepcopy(initial))
        modules[mode].train()
        modules[mode].noise = torch.Generator().manual_seed(0)
        optimizers[mode] = modules[mode].configure_optimizers()
        training_seconds(modules[mode], optimizers[mode], batches[:2])  # warm-up
    # The modes take turns, a few steps each: the load of a shared machine drifts within a minute, and turns
    # give every mode the same share of it.
    timed = batches[2:]
    for begin in range(0, len(timed), TURN):
        for mode in MODES:
            seconds[mode] += training_seconds(modules[mode], optimizers[mode], timed[begin : begin + TURN])
    captions = sum(len(b["lengths"]) for b in timed)
    training = {
        f"mnist_cpu/batch64/{mode}": {
            "epsilon": epsilon,
            "steps": len(timed),
            "captions": captions,
            "seconds": round(seconds[mode], 3),
            "captions_per_s": round(captions / seconds[mode], 1),
            "relative_to_teacher_forcing": round(seconds["teacher_forcing"] / seconds[mode], 3),
        }
        for mode, epsilon in MODES.items()
    }
    report = {
        "paper": "scheduled_sampling",
        "hardware": results.hardware(),
        "packages": results.package_versions(),
        "git": results.git_state(),
        "model": "one thread; the cpu tier's soft-attention captioner (LSTM 256) on captioned MNIST scenes, "
        "Adam steps; epsilon is the probability of feeding the true previous word",
        "training": training,
        "measured_at": results.now(),
    }
    results.write_json(out, report)
    return report
