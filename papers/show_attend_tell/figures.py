"""Show, Attend and Tell's figures, from the scene generator and the committed records.

- ``samples.png``: the first test scenes of the captioned MNIST benchmark with some of their references.
- ``bleu_curve_<tier>.png``: the validation BLEU-4 proxy (greedy decodes) per epoch of the MNIST experiments
  (mean over seeds, each seed faint).
- ``attention_<experiment>_<tier>.png``: the paper's Figures 2 and 3 view: for each of the first test scenes,
  the decoded caption (beam 3) word by word, each word over the scene with the attention map α_t that produced
  it (the 8 × 8 grid upsampled to the canvas, brighter = more weight). The record keeps the words and the maps
  (``details.attention_maps``); the scenes are rebuilt from the fixed test set.

Only the MNIST experiments are drawn: the caption sets' images are the user's own copies, not in the data
root.
``repro figures PAPER --tier T`` redraws them all (the sample grid needs no training).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from repro.data.captioning import CaptionedMNIST  # noqa: E402
from repro.results import aggregated_records  # noqa: E402

EXPERIMENTS = ("mnist_soft", "mnist_hard")


def test_scenes(**settings) -> dict:
    data = CaptionedMNIST(**settings)
    data.setup()
    return data.fixed_set("test")


def samples(out: Path, count: int = 8) -> Path:
    scenes = test_scenes()
    fig, axes = plt.subplots(2, count // 2, figsize=(count * 1.3, 7.6))
    for i, ax in enumerate(axes.flat):
        ax.imshow(scenes["canvases"][i], cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        shown = scenes["references"][i][:2]
        more = len(scenes["references"][i]) - len(shown)
        lines = [textwrap.fill(r, 30) for r in shown] + ([f"(+{more} more)"] if more else [])
        ax.set_title("\n".join(lines), fontsize=6.5)
    title = "Captioned MNIST test scenes and some of their references (our benchmark; fixed seed)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "samples.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bleu_curves(results_dir: Path, tier: str) -> Path | None:
    runs = {name: aggregated_records(results_dir / name / tier) for name in EXPERIMENTS}
    runs = {name: recs for name, recs in runs.items() if recs}
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, recs in runs.items():
        curves = [[p["val/bleu4_proxy"] for p in r["details"]["val_curve"]] for r in recs]
        for curve in curves:
            ax.plot(range(1, len(curve) + 1), curve, lw=0.6, alpha=0.35)
        length = min(len(c) for c in curves)
        mean = np.mean([c[:length] for c in curves], axis=0)
        ax.plot(range(1, length + 1), mean, lw=1.8, label=f"{name} ({len(curves)} seeds)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation BLEU-4 proxy x100 (greedy)")
    ax.set_title(f"Captioned MNIST (ours), {tier} tier", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = results_dir / f"bleu_curve_{tier}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def attention_maps(results_dir: Path, experiment: str, tier: str) -> Path | None:
    records = aggregated_records(results_dir / experiment / tier)
    recs = [r for r in records if r["details"].get("attention_maps")]
    if not recs:
        return None
    maps = recs[0]["details"]["attention_maps"]
    settings = recs[0]["config"]["data"]["init_args"]
    scenes = test_scenes(**{k: v for k, v in settings.items() if k in ("canvas", "gap", "limit")})
    side = round(maps["cells"] ** 0.5)
    rows = maps["images"]
    columns = 1 + max(len(r["alphas"]) for r in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.25 * columns, 1.45 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, example in zip(axes, rows, strict=True):
        canvas = scenes["canvases"][example["index"]] / 255.0
        width = canvas.shape[0]
        row[0].imshow(canvas, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"test scene {example['index']}", fontsize=7)
        words = [*example["words"], "<eos>"]
        for ax, word, alpha in zip(row[1:], words, example["alphas"], strict=False):
            grid = np.array(alpha).reshape(side, side)
            ax.imshow(canvas, cmap="gray", vmin=0, vmax=1)
            extent = (-0.5, width - 0.5, width - 0.5, -0.5)  # the grid stretched over the canvas's pixels
            ax.imshow(grid / grid.max(), cmap="magma", alpha=0.6, extent=extent)
            ax.set_title(word, fontsize=8)
    fig.suptitle(
        f"{experiment} ({tier}, seed {recs[0]['seed']}): each word of the beam-{maps['beam']} caption over "
        f"the attention map that produced it",
        fontsize=9,
    )
    fig.tight_layout()
    path = results_dir / f"attention_{experiment}_{tier}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_figures(results_dir: Path, tier: str) -> list[Path]:
    made = [samples(results_dir), bleu_curves(results_dir, tier)]
    made += [attention_maps(results_dir, experiment, tier) for experiment in EXPERIMENTS]
    return [p for p in made if p is not None]
