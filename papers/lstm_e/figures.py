"""LSTM-E's figures, from the clip generator and the committed records.

- ``samples.png``: the first test clips of the captioned Moving MNIST benchmark (four of their ten frames, at
  full resolution) with their first reference. Needs no training.
- ``captions_<tier>.png``: the first test clips again, each with its reference and the beam caption that each
  Moving MNIST experiment's first committed seed wrote for it (``details.examples`` of the records): the
  relevance arm beside the coherence-only arm.

Only the Moving MNIST experiments are drawn: YouTube2Text's videos are the user's own.
``repro figures lstm_e --tier T`` redraws them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from papers.lstm_e.data import CaptionedMovingMNIST  # noqa: E402
from repro.results import aggregated_records  # noqa: E402

EXPERIMENTS = ("mnist_lstm_e", "mnist_no_relevance")
SHOWN_FRAMES = (0, 3, 6, 9)


def test_clips(count: int, **settings) -> tuple[np.ndarray, list[list[str]]]:
    """The first ``count`` test clips as frames (count × T × 64 × 64 in [0, 1]) and their references: the
    fixed test set drawn at full resolution (``pool`` does not change the draws)."""
    keep = {k: v for k, v in settings.items() if k in ("frames", "limit")}
    data = CaptionedMovingMNIST(**keep, pool=1, test_size=count)
    data.setup()
    video, refs = data.fixed_set("test")
    return video.reshape(count, -1, 64, 64), refs


def draw_rows(rows: list[tuple[np.ndarray, str]], title: str, path: Path) -> Path:
    fig, axes = plt.subplots(
        len(rows), len(SHOWN_FRAMES), figsize=(1.3 * len(SHOWN_FRAMES) + 3.6, 1.4 * len(rows))
    )
    axes = np.atleast_2d(axes)
    for row, (frames, caption) in zip(axes, rows, strict=True):
        for ax, t in zip(row, SHOWN_FRAMES, strict=True):
            ax.imshow(frames[min(t, len(frames) - 1)], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[-1].text(1.08, 0.5, caption, transform=row[-1].transAxes, fontsize=7, va="center", ha="left")
    for ax, t in zip(axes[0], SHOWN_FRAMES, strict=True):
        ax.set_title(f"frame {t + 1}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.62, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def samples(out: Path, count: int = 6) -> Path:
    frames, refs = test_clips(count)
    rows = [(frames[i], textwrap.fill(refs[i][0], 40)) for i in range(count)]
    title = "Captioned Moving MNIST test clips and a reference (our benchmark; fixed seed)"
    return draw_rows(rows, title, out / "samples.png")


def captions(results_dir: Path, tier: str) -> Path | None:
    written = {}
    settings = None
    for name in EXPERIMENTS:
        records = [r for r in aggregated_records(results_dir / name / tier) if r["details"].get("examples")]
        if records:
            written[name] = {e["index"]: e["generated"] for e in records[0]["details"]["examples"]}
            settings = records[0]["config"]["data"]["init_args"]
    if not written:
        return None
    indices = sorted(set.intersection(*(set(w) for w in written.values())))
    frames, refs = test_clips(max(indices) + 1, **settings)
    rows = []
    for i in indices:
        lines = [f"reference: {refs[i][0]}"] + [
            f"{name}: {written[name][i] or '(empty)'}" for name in written
        ]
        rows.append((frames[i], "\n".join(textwrap.fill(line, 58) for line in lines)))
    title = f"Captions of the first test clips, {tier} tier (first committed seed of each experiment)"
    return draw_rows(rows, title, results_dir / f"captions_{tier}.png")


def make_figures(results_dir: Path, tier: str) -> list[Path]:
    made = [samples(results_dir), captions(results_dir, tier)]
    return [p for p in made if p is not None]
