"""``make bench`` for Show, Attend and Tell: training captions per second (teacher forcing), decoded images
per second with beam search at beam 1 and 3, and the time pycocoevalcap takes to score 1,000 images.

Writes ``results/bench/show_attend_tell.json``. One thread. Two models:

- ``mnist_cpu``: the cpu tier's (our encoder + soft attention, LSTM 256) on real captioned MNIST scenes;
- ``paper_dims``: the paper's full-tier decoder (E 512, LSTM 1800, D 512, 10,000 words) on random 196 × 512
  annotation vectors and random 12-word captions: what one Flickr or COCO step costs here, features given.

Decoding runs ``max_length`` steps (16 and 20 words): the models are untrained, so their <eos> logit is
pushed to −10⁹ for the decoding runs, which makes each the worst case of its length. Scoring is
``repro.captions.score_captions`` (PTB tokenizer, BLEU, METEOR, ROUGE-L, CIDEr; Java) of 1,000 test scenes
against their references, one reference of each scene standing in for the hypothesis (200 with ``quick``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from repro import results


def training_throughput(module, batches: list[dict]) -> dict:
    optimizer = module.configure_optimizers()
    module.train()
    captions, start = 0, time.perf_counter()
    for batch in batches:
        out = module.unroll(module.annotations(batch), batch["captions"], batch["lengths"])
        loss = module.losses(out, sampled=False)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        captions += len(batch["lengths"])
    elapsed = time.perf_counter() - start
    return {
        "steps": len(batches),
        "captions": captions,
        "seconds": round(elapsed, 3),
        "captions_per_s": round(captions / elapsed, 1),
    }


def decoding_throughput(module, annotations: torch.Tensor, max_length: int) -> dict:
    from repro.data.captioning import EOS

    module.eval()
    with torch.no_grad():
        module.out_words.bias[EOS] = -1e9  # an untrained model may stop at any step: make it run all of them
    report = {}
    for beam in (1, 3):
        start = time.perf_counter()
        decoded = module.beam_search(annotations, beam, max_length)
        elapsed = time.perf_counter() - start
        report[f"beam{beam}"] = {
            "images": len(annotations),
            "steps": decoded.words.shape[1],
            "seconds": round(elapsed, 3),
            "images_per_s": round(len(annotations) / elapsed, 1),
        }
    return report


def scoring_time(scenes: dict, count: int) -> dict:
    from repro.captions import java_problem, score_captions

    if problem := java_problem():
        return {"skipped": f"no Java runtime: {problem}"}
    references = {i: scenes["references"][i] for i in range(count)}
    hypotheses = {i: refs[-1] for i, refs in references.items()}
    start = time.perf_counter()
    score_captions(hypotheses, references)
    return {"images": count, "seconds": round(time.perf_counter() - start, 2)}


def main(out: Path, quick: bool = False) -> dict:
    from papers.show_attend_tell.model import ShowAttendTell
    from repro.data.captioning import SCENE_WORDS, CaptionedMNIST, caption_batch

    torch.set_num_threads(1)
    data = CaptionedMNIST(batch_size=64)
    data.setup()
    steps = 5 if quick else 60
    batches = [b for _, b in zip(range(steps + 2), data.training_batches(epoch=0), strict=False)]
    torch.manual_seed(0)
    mnist = ShowAttendTell(
        encoder="mnist_conv",
        vocab_size=len(SCENE_WORDS),
        word_dim=64,
        hidden_dim=256,
        annotation_dim=64,
        attention_dim=64,
        dropout=0.0,
        lr=3e-3,
    )
    training_throughput(mnist, batches[:2])  # warm-up
    scenes = data.fixed_set("test")
    images = torch.from_numpy(scenes["canvases"][: 100 if quick else 1000]).float().div(255).unsqueeze(1)
    with torch.no_grad():
        annotations = mnist.annotations({"images": images})

    paper = ShowAttendTell(
        encoder=None,
        vocab_size=10_000,
        word_dim=512,
        hidden_dim=1800,
        annotation_dim=512,
        attention_dim=512,
        dropout=0.5,
        optimizer="rmsprop",
        lr=1e-4,
    )
    generator = torch.Generator().manual_seed(0)
    random_batches = [
        {
            "features": torch.rand(64, 196, 512, generator=generator),
            **caption_batch(torch.randint(2, 10_000, (64, 12), generator=generator).tolist()),
        }
        for _ in range(1 if quick else 4)
    ]
    report = {
        "paper": "show_attend_tell",
        "hardware": results.hardware(),
        "packages": results.package_versions(),
        "git": results.git_state(),
        "model": "one thread; mnist_cpu: the cpu tier's model on scenes; paper_dims: the full tier's decoder "
        "on random features",
        "training": {
            "mnist_cpu/batch64": training_throughput(mnist, batches[2:]),
            "paper_dims/batch64": training_throughput(paper, random_batches),
        },
        "decoding": {
            "mnist_cpu": decoding_throughput(mnist, annotations, max_length=16),
            "paper_dims": decoding_throughput(paper, torch.rand(8 if quick else 32, 196, 512), max_length=20),
        },
        "scoring": scoring_time(scenes, 200 if quick else 1000),
        "measured_at": results.now(),
    }
    results.write_json(out, report)
    return report
