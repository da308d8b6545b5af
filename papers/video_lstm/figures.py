"""Figures of the video LSTMs, from the data generator and the committed records.

- ``samples.png``: the first sequences of the fixed generated test set, 20 frames each (no training needed).
- ``strips_<experiment>_<tier>.png``: the paper's Figure-3-style view of the record's first test
  sequences: the 20 input frames, the reconstruction of frames 1-10 (emitted in reverse order, drawn in time
  order) and the prediction of frames 11-20 under the frames they predict.
- ``sequence_<experiment>_<tier>.gif``: the first of them animated: ground truth on the left, the model on
  the right (its reconstruction for frames 1-10, its prediction for 11-20).
- ``loss_per_frame_<tier>.png``: the future-prediction loss of every experiment at each predicted frame, with
  the entropy floor and the baselines (copy the last frame; all zeros, named in the legend when off the
  scale).

The record (``details.examples``) keeps the frames as uint8 (``model.pack_frames``); the first seed of each
experiment's aggregate is drawn. ``repro figures video_lstm --tier T`` redraws them all.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import animation  # noqa: E402

from papers.video_lstm.model import N_IN, unpack_frames  # noqa: E402
from repro.data import DataError  # noqa: E402
from repro.papers import get_paper  # noqa: E402
from repro.results import aggregated_records  # noqa: E402

GAP = 2  # pixels between frames of a mosaic


def mosaic(rows: list[np.ndarray]) -> np.ndarray:
    """One image of rows of frames (each row: steps × 64 × 64 uint8; NaN where a row has no frame), with gaps:
    one imshow instead of hundreds of axes."""
    steps = max(len(r) for r in rows)
    out = np.full((len(rows) * (64 + GAP) - GAP, steps * (64 + GAP) - GAP), np.nan)
    for i, row in enumerate(rows):
        for t, image in enumerate(row):
            out[i * (64 + GAP) : i * (64 + GAP) + 64, t * (64 + GAP) : t * (64 + GAP) + 64] = image
    return out


def show(ax, image: np.ndarray) -> None:
    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(image), cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([(64 + GAP) * t + 32 for t in range(image.shape[1] // (64 + GAP) + 1)])
    ax.set_xticklabels([str(t + 1) for t in range(image.shape[1] // (64 + GAP) + 1)], fontsize=6)
    ax.tick_params(length=0)


def samples(out: Path, count: int = 4) -> Path | None:
    from papers.video_lstm.data import generated_test_set

    try:
        frames = generated_test_set(32)[:count]
    except (DataError, OSError):  # no MNIST here: the committed records are still drawn
        return None
    fig, ax = plt.subplots(figsize=(12, count * 0.75))
    show(ax, mosaic(list(frames.astype(float))))
    ax.set_yticks([])
    ax.set_title(
        "Generated Moving MNIST test sequences (the official handler's rule, fixed seed)", fontsize=9
    )
    path = out / "samples.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def decoded(examples: dict) -> dict[str, np.ndarray]:
    out = {"input": unpack_frames(examples["input"], examples["shape"]).astype(float)}
    for name in ("reconstruction", "future"):
        if name in examples:
            out[name] = unpack_frames(examples[name], examples[f"{name}_shape"]).astype(float)
    return out


def strips(frames: dict[str, np.ndarray], title: str, path: Path) -> Path:
    """Per sequence: the input row, the reconstruction under frames 1-10, the prediction under 11-20."""
    truth = frames["input"]
    blank = np.full_like(truth[:, :N_IN], np.nan)
    rows, labels = [], []
    for k in range(len(truth)):
        rows.append(truth[k])
        labels.append(f"input {k + 1}")
        if "reconstruction" in frames:
            rows.append(np.concatenate([frames["reconstruction"][k], blank[k]]))
            labels.append("reconstruction")
        if "future" in frames:
            rows.append(np.concatenate([blank[k], frames["future"][k]]))
            labels.append("prediction")
    fig, ax = plt.subplots(figsize=(12, len(rows) * 0.75))
    show(ax, mosaic(rows))
    ax.set_yticks([(64 + GAP) * i + 32 for i in range(len(rows))])
    ax.set_yticklabels(labels, fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def movie(frames: dict[str, np.ndarray], title: str, path: Path) -> Path:
    """The first sequence, frame by frame: ground truth | the model."""
    truth = frames["input"][0]
    model = np.full_like(truth, np.nan)
    if "reconstruction" in frames:
        model[:N_IN] = frames["reconstruction"][0]
    if "future" in frames:
        model[N_IN:] = frames["future"][0]
    fig, ax = plt.subplots(figsize=(3.2, 1.9))
    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(mosaic([[truth[0], model[0]]])), cmap=cmap, vmin=0, vmax=255)
    ax.set_xticks([32, 98])
    ax.set_xticklabels(["ground truth", "model"], fontsize=7)
    ax.set_yticks([])
    label = ax.set_title("", fontsize=7)

    def draw(t):
        image.set_data(np.ma.masked_invalid(mosaic([[truth[t], model[t]]])))
        label.set_text(f"{title}\nframe {t + 1}: {'reconstruction' if t < N_IN else 'prediction'}")
        return image, label

    anim = animation.FuncAnimation(fig, draw, frames=len(truth), blit=False)
    anim.save(path, writer=animation.PillowWriter(fps=4))
    plt.close(fig)
    return path


def loss_per_frame(records: dict[str, dict], tier: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = np.arange(N_IN + 1, 2 * N_IN + 1)
    reference = None
    for name, record in records.items():
        per_frame = record["details"].get("per_frame", {})
        if "future_loss" in per_frame:
            ax.plot(steps, per_frame["future_loss"], marker="o", ms=3, label=name)
            reference = per_frame
    if reference is not None:
        ax.plot(steps, reference["future_floor"], "k--", label="entropy floor")
        ax.plot(steps, reference["copy_last_future_loss"], "k:", label="copy the last input frame")
        top = 1.1 * max(np.max(line.get_ydata()) for line in ax.get_lines())  # models, floor, copy-last
        zeros = reference["zeros_future_loss"]
        if max(zeros) <= top:
            ax.plot(steps, zeros, "k-.", label="all zeros")
        else:
            ax.plot([], [], " ", label=f"all zeros: {np.mean(zeros):.0f} (off the scale)")
            ax.set_ylim(0, top)
    ax.set_xlabel("predicted frame")
    ax.set_ylabel("cross-entropy (nats/frame)")
    ax.set_title(f"Future prediction loss per frame ({tier} tier, first seed)")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def make_figures(results_dir: Path, tier: str) -> list[Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = [p for p in [samples(results_dir)] if p is not None]
    drawn = {}
    for name in get_paper("video_lstm").experiments:
        records = aggregated_records(results_dir / name / tier)
        if not records:
            continue
        record = min(records, key=lambda r: r.get("seed", 0))
        if "future_loss" in record.get("details", {}).get("per_frame", {}):
            drawn[name] = record  # the autoencoder predicts no future
        examples = record.get("details", {}).get("examples")
        if not examples:
            continue
        frames = decoded(examples)
        title = f"{name} ({tier} tier, seed {record.get('seed')})"
        paths.append(strips(frames, title, results_dir / f"strips_{name}_{tier}.png"))
        paths.append(movie(frames, title, results_dir / f"sequence_{name}_{tier}.gif"))
    if drawn:
        paths.append(loss_per_frame(drawn, tier, results_dir / f"loss_per_frame_{tier}.png"))
    return paths
