"""Data for LSTM-E: captioned Moving MNIST videos (our offline benchmark, NOT the paper's) and video caption
sets with cached per-clip features (YouTube2Text / MSVD, the paper's; not available offline).

Both modules serve the same batches and expose what the model needs:

* ``vocabulary`` (index 0 ``<eos>``, 1 ``UNK``) and ``references(split)``: every caption of each clip;
* a training batch: ``video`` (B × D, the clip's video vector v), ``captions`` (B × T word ids: the words,
  ``<eos>``, zero padding) and ``lengths`` (words + 1);
* an evaluation batch: ``video``, ``index`` (the clip's position in its split) and, as ``captions`` /
  ``lengths``, the clip's first reference (the teacher-forced losses and the retrieval candidates).

**Captioned Moving MNIST (spec §8, ``cpu_synthetic``).** A clip is ``frames`` frames of two MNIST digits
moving on a 64 × 64 canvas by the Moving MNIST rule (``repro.data.moving_mnist``: fixed speed, bouncing off
the edges). Each digit's direction θ (v_y = sin θ, rows grow downwards; v_x = cos θ) is named by the
nearest of eight compass words::

    sector = round(θ / 45°) mod 8:  right, down and right, down, down and left, left, up and left, up,
                                    up and right

and a clip's references are the two orders of ``a <d1> moves <dir1> and a <d2> moves <dir2>`` (e.g. "a 3
moves up and right and a 7 moves left"); a training clip's target is one of them, drawn. The caption names
the direction the digit starts in (a bounce later reverses it). The video vector is the clip's frames, each
average-pooled ``pool`` × ``pool`` and flattened, concatenated in time order: ``frames`` · (64 / ``pool``)²
numbers in [0, 1]. The spec's mean over frames would erase the direction of motion (a blur from A to B is the
blur from B to A), so the frames are concatenated (a deviation: ``concatenated-frames``).

Training clips are drawn afresh every step from (seed, epoch, step) and the 50,000 MNIST training digits, so
any epoch is generated without the earlier ones (a resumed run sees the uninterrupted run's batches; DDP ranks
draw the whole global batch and keep their rows ``rank::world``). Validation and test clips are fixed: the
MNIST validation (last 10,000 training) and t10k digits with seeds that do not depend on the run.

**Video caption sets with features (YouTube2Text / MSVD).** Under ``<data root>/<dataset>/``: a token file in
Flickr8k's format (``<clip>#<k>\\t<caption>``, ~40 captions per MSVD clip), three split lists (one clip name a
line: the 1,200 / 100 / 670 split) and a feature folder with one ``<clip>.npy`` per clip, the clip's video
vector (a 1-d array of ``feature_dim`` numbers: the paper's mean-pooled VGG-19 fc7 and/or C3D fc6). They are
the user's to provide (papers/lstm_e/README.md). ``repro features lstm_e msvd_vgg_conv5 --images DIR`` makes a
substitute from the user's extracted frames (``DIR/<clip>/*.jpg``) for the experiment of that name: the
suite's VGG-19 conv5_4, mean-pooled over the 196 cells and over ``frames_per_clip`` evenly spaced frames, 512
numbers (not the paper's fc7), in its own folder (``vgg19_conv5_4_mean``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import torch

from repro.data import DataError
from repro.data.captioning import SPLITS, CaptionSet, caption_batch, encode, tokenize
from repro.data.mnist import MNISTDataModule
from repro.data.moving_mnist import CANVAS, digit_stream, render, trajectories

EVAL_SEED = 20150507  # fixes the validation and test clips for every run (arXiv v1 of 1505.01861)
CONV5_DIM = 512  # the channels of VGG-19 conv5_4: the length of a `repro features` vector
FIXED_POOL = 10_000  # the most clips a fixed set has; its first n are the same for every n
DIRECTIONS = (
    "right",
    "down and right",
    "down",
    "down and left",
    "left",
    "up and left",
    "up",
    "up and right",
)
VIDEO_WORDS = ["<eos>", "UNK", "a", *"0123456789", "moves", "and", "up", "down", "left", "right"]


def direction(theta: float) -> str:
    """The compass word nearest to direction θ (radians; v_y = sin θ points down the rows)."""
    return DIRECTIONS[round(theta / (math.pi / 4)) % 8]


def describe(labels, thetas) -> list[str]:
    """The references of a clip of two digits: both orders of "a <d> moves <dir> and a <d> moves <dir>"."""
    parts = [f"a {int(d)} moves {direction(float(t))}" for d, t in zip(labels, thetas, strict=True)]
    return [f"{parts[0]} and {parts[1]}", f"{parts[1]} and {parts[0]}"]


def draw_motion(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The starting y, x and direction θ of n digits, drawn as the Moving MNIST handler draws them: all y,
    then all x, then all θ."""
    y, x = rng.random(n), rng.random(n)
    return y, x, rng.random(n) * 2 * np.pi


def clips(
    images: np.ndarray,
    labels: np.ndarray,
    idx: np.ndarray,
    motion: tuple[np.ndarray, np.ndarray, np.ndarray],
    frames: int,
    pool: int,
) -> tuple[np.ndarray, list[list[str]]]:
    """Videos (n × frames · (64/pool)², float32) and references of the clips of digits ``idx`` (2 a clip, in
    order) that start at ``motion`` = (y, x, θ) (one each per digit)."""
    n = len(idx) // 2
    y, x, theta = (np.asarray(m)[: 2 * n] for m in motion)
    tops, lefts = trajectories(y, x, theta, frames)
    video = render(images[idx].reshape(n, 2, 28, 28), tops.reshape(n, 2, -1), lefts.reshape(n, 2, -1))
    side = CANVAS // pool
    pooled = video.reshape(n, frames, side, pool, side, pool).mean((3, 5), dtype=np.float32) / 255
    refs = [describe(labels[idx[2 * j : 2 * j + 2]], theta[2 * j : 2 * j + 2]) for j in range(n)]
    return pooled.reshape(n, -1), refs


class CaptionedMovingMNIST(MNISTDataModule):
    """Captioned Moving MNIST clips (module docstring): our offline benchmark for LSTM-E.

    Args:
        frames: frames a clip (10: long enough to show a direction, short enough for one bounce at most
            on most clips).
        pool: each frame is average-pooled pool × pool before it enters the video vector (4: 16 × 16).
        batch_size: clips per training step (global: each DDP rank keeps its rows).
        steps_per_epoch: training steps that make an "epoch" (checkpoints, validation, seeding).
        val_size / test_size: clips in the fixed validation and test sets.
        eval_batch_size: clips per evaluation batch (memory only).
        limit: keep only the first this-many digits of each MNIST split (smoke tests).
        seed: seeds the training clips and the reference drawn for each (never the fixed sets).
    """

    input_kind = "video"

    def __init__(
        self,
        frames: int = 10,
        pool: int = 4,
        batch_size: int = 64,
        steps_per_epoch: int = 200,
        val_size: int = 500,
        test_size: int = 1000,
        eval_batch_size: int = 500,
        limit: int | None = None,
        seed: int = 1,
    ):
        super().__init__()
        if CANVAS % pool:
            raise ValueError(f"data.pool must divide the canvas width {CANVAS}, not {pool}")
        self.save_hyperparameters()
        self.vocabulary = VIDEO_WORDS
        self.word_index = {w: i for i, w in enumerate(VIDEO_WORDS)}
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.fixed: dict[str, tuple[np.ndarray, list[list[str]]]] = {}

    @property
    def video_dim(self) -> int:
        return self.hparams.frames * (CANVAS // self.hparams.pool) ** 2

    def setup(self, stage: str | None = None):
        if not self.splits:
            self.splits = self.mnist_splits()

    def fixed_set(self, split: str) -> tuple[np.ndarray, list[list[str]]]:
        if split not in self.fixed:
            hp = self.hparams
            images, labels = self.splits[split]
            n = hp.val_size if split == "valid" else hp.test_size
            if not 0 < n <= FIXED_POOL:
                raise ValueError(f"data.val_size and data.test_size must be in 1..{FIXED_POOL}, not {n}")
            idx = digit_stream(EVAL_SEED + SPLITS.index(split), len(images), 0, 2 * n)
            # Drawn for the whole pool, so that the first n clips do not depend on n.
            motion = draw_motion(np.random.default_rng([EVAL_SEED, SPLITS.index(split)]), 2 * FIXED_POOL)
            self.fixed[split] = clips(images, labels, idx, motion, hp.frames, hp.pool)
        return self.fixed[split]

    def references(self, split: str) -> list[list[str]]:
        return self.fixed_set(split)[1]

    def training_batches(self, epoch: int):
        world, rank = self.world
        hp = self.hparams
        if hp.batch_size % world:
            raise ValueError(f"data.batch_size {hp.batch_size} must be divisible by the {world} devices")
        images, labels = self.splits["train"]
        for step in range(hp.steps_per_epoch):
            rng = np.random.default_rng([hp.seed, 0, epoch, step])
            start = (epoch * hp.steps_per_epoch + step) * 2 * hp.batch_size
            idx = digit_stream(hp.seed, len(images), start, 2 * hp.batch_size)
            video, refs = clips(images, labels, idx, draw_motion(rng, 2 * hp.batch_size), hp.frames, hp.pool)
            targets = [r[rng.integers(len(r))].split() for r in refs]
            mine = slice(rank, None, world)
            yield {
                "video": torch.from_numpy(video[mine]),
                **caption_batch([encode(t, self.word_index) for t in targets[mine]]),
            }

    def evaluation_batches(self, split: str):
        world, rank = self.world
        video, refs = self.fixed_set(split)
        mine = np.arange(rank, len(video), world)
        for begin in range(0, len(mine), self.hparams.eval_batch_size):
            i = mine[begin : begin + self.hparams.eval_batch_size]
            first = [encode(refs[j][0].split(), self.word_index) for j in i]
            yield {"video": torch.from_numpy(video[i]), "index": torch.from_numpy(i), **caption_batch(first)}


class ClipFeatureCaptions(CaptionSet):
    """Video clips as cached feature vectors, with their captions: YouTube2Text (MSVD). The caption-set
    plumbing is ``repro.data.captioning.CaptionSet``'s; what differs is a cached array (one vector of
    ``feature_dim`` per clip), the batches (``video``; plain shuffled full batches; an evaluation batch also
    holds each clip's first reference), the tokenised references and the encoder pass of ``cache_features``.

    Args:
        dataset: the folder under the data root.
        token_file, train_list, valid_list, test_list: file names inside it.
        features: the feature folder (default ``<data root>/<dataset>/<feature_name>``), one ``<clip>.npy``
            a clip.
        feature_name: the feature folder's name under the data set's (``features``: the user's fc7 / C3D
            vectors; ``vgg19_conv5_4_mean``: the substitute ``repro features`` makes).
        feature_dim: the length of every clip's vector (the model's ``video_dim``).
        images: the user's extracted frames (``<clip>/*.jpg``), which ``repro features`` reads.
        frames_per_clip: frames ``repro features`` encodes per clip, evenly spaced.
        vocab_size: words in the vocabulary, <eos> and UNK included.
        max_length: training captions longer than this many words are dropped.
        batch_size: (clip, caption) pairs per training step (global).
        eval_batch_size: clips per evaluation batch.
        limit: keep only the first this-many clips of each split (smoke tests).
        seed: seeds each epoch's order.
    """

    input_kind = "video"
    noun = "clips"
    source = "frames"
    guide = "papers/lstm_e/README.md (YouTube2Text)"

    def __init__(
        self,
        dataset: str = "msvd",
        token_file: str = "captions.token",
        train_list: str = "train.txt",
        valid_list: str = "valid.txt",
        test_list: str = "test.txt",
        features: str | None = None,
        feature_name: str = "features",
        feature_dim: int = 8192,
        images: str | None = None,
        frames_per_clip: int = 28,
        vocab_size: int = 10_000,
        max_length: int = 30,
        batch_size: int = 64,
        eval_batch_size: int = 100,
        limit: int | None = None,
        seed: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters()

    @property
    def clips(self) -> dict[str, list[str]]:
        """Each split's clip names."""
        return self.items

    @property
    def video_dim(self) -> int:
        return self.hparams.feature_dim

    @property
    def feature_name(self) -> str:
        return self.hparams.feature_name

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (self.hparams.feature_dim,)

    def missing_features_message(self, missing: list[str], names: list[str]) -> str:
        return (
            f"no cached features for {len(missing)} of the {len(names)} clips in {self.feature_folder} "
            f"(first missing: {missing[0]}.npy): one <clip>.npy per clip, a vector of "
            f"{self.hparams.feature_dim} numbers (mean-pooled CNN features; papers/lstm_e/README.md). "
            "Experiment msvd_vgg_conv5 reads a VGG-19 conv5_4 substitute that you make once from your "
            "frames: repro features lstm_e msvd_vgg_conv5 --images DIR."
        )

    def references(self, split: str) -> list[list[str]]:
        return [[" ".join(tokenize(c)) for c in refs] for refs in super().references(split)]

    def batch_order(self, order: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """The fresh shuffle cut into full batches (the last, partial one is dropped)."""
        size = self.hparams.batch_size
        return [order[b : b + size] for b in range(0, len(order) - len(order) % size, size)]

    def evaluation_targets(self, names: list[str]) -> dict:
        """Each clip's first reference as ``captions`` / ``lengths`` (the teacher-forced losses and the
        retrieval candidates)."""
        return caption_batch([encode(tokenize(self.captions[n][0]), self.word_index) for n in names])

    def cache_features(
        self,
        encoder=None,
        weights: str | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        workers: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict:
        """``repro features``: each clip's ``frames_per_clip`` evenly spaced frames (``images/<clip>/*.jpg``,
        sorted by name) through VGG-19 conv5_4, mean-pooled over cells and frames: one 512-vector per clip
        (a substitute for the paper's fc7 / C3D features). Cached clips are skipped."""
        from repro.data.vgg19 import load_image, pretrained_vgg19, write_array

        if self.hparams.feature_dim != CONV5_DIM:
            raise DataError(
                f"this experiment reads {self.hparams.feature_dim}-d clip features (VGG-19 fc7 / C3D) that "
                f"you provide; repro features makes the {CONV5_DIM}-d VGG-19 conv5_4 substitute that "
                "msvd_vgg_conv5 reads: repro features lstm_e msvd_vgg_conv5 --images DIR (see the README)"
            )
        frames_root = self.source_folder()
        self.read_caption_set()
        names = self.all_names()
        encoder = (encoder if encoder is not None else pretrained_vgg19(weights)).to(device).eval()
        self.feature_folder.mkdir(parents=True, exist_ok=True)
        done = 0
        for k, name in enumerate(names):
            path = self.feature_folder / f"{name}.npy"
            if not path.exists():
                files = sorted((frames_root / name).glob("*.jpg"))
                if not files:
                    raise DataError(f"no frames for clip {name}: expected {frames_root / name}/*.jpg")
                pick = np.linspace(0, len(files) - 1, min(self.hparams.frames_per_clip, len(files)))
                chosen = [files[int(round(i))] for i in pick]
                total = None
                with torch.no_grad():
                    for begin in range(0, len(chosen), batch_size):
                        batch = torch.stack([load_image(f) for f in chosen[begin : begin + batch_size]])
                        pooled = encoder(batch.to(device)).mean(1).sum(0)  # cells, then summed frames
                        total = pooled if total is None else total + pooled
                write_array(path, (total / len(chosen)).cpu().numpy().astype(np.float32))
                done += 1
            if progress is not None:
                progress(k + 1, len(names))
        record = {
            "clips": len(names),
            "encoded_by_this_pass": done,
            "encoder": "VGG-19 conv5_4 (ImageNet), mean over the 196 cells and the clip's frames",
            "frames_per_clip": self.hparams.frames_per_clip,
            "weights_sha256": getattr(encoder, "weights_sha256", None),
            "feature_dim": CONV5_DIM,
        }
        (self.feature_folder / "features.json").write_text(json.dumps(record, indent=1))
        return {**record, "images": len(names)}
