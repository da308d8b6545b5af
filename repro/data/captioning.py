"""Captioning data for the image-captioning papers (Show, Attend and Tell; Scheduled Sampling): the offline
captioned MNIST scenes (ours) and caption sets with cached CNN features (Flickr8k, Flickr30k, COCO).

Both data modules serve the same batches and expose the same three things to the model:

* ``vocabulary``: the word list, index 0 ``<eos>``, 1 ``UNK`` (spec §2, the code's convention);
* ``references(split)``: every human (or template) caption of each image, indexed by ``batch["index"]``;
* ``input_kind``: ``images`` (the model's own encoder makes the annotation grid) or ``features`` (the
  annotation vectors were computed once by a frozen CNN).

A training batch holds ``captions`` (B × T word ids: the words, then ``<eos>``, then padding with 0) and their
``lengths`` (words + 1 for the ``<eos>``); an evaluation batch only the input and the ``index``.

**Captioned MNIST scenes (our benchmark, not the paper's).** Two or three MNIST digits on a blank
``canvas`` × ``canvas`` canvas (64 by default), each digit's ink box (the bounding box of its non-zero
pixels) at a uniform position, redrawn until every two boxes are at least ``gap`` pixels apart along rows or
columns, so that no digits overlap. The references are every sentence of a small template grammar that is
true of the scene::

    digit  := "a" <0-9>
    list   := digit "and" digit  |  digit digit "and" digit
    "from left to right" list       (digits by the column of their box centre; when no two centres tie)
    "from top to bottom" list       (digits by the row of their box centre; when no two centres tie)
    digit "above" digit ["and" digit]           when the first box ends above the second begins
    digit "below" digit ["and" digit]           (the same pair, the other way round)
    digit "to the left of" digit ["and" digit]  when the first box ends left of the second begins
    digit "to the right of" digit ["and" digit]
    digit "and" digit                           (two-digit scenes, both orders)

so a scene has 3 to 14 references that really differ ("a 3 above a 7", "a 7 below a 3", "a 3 and a 7"). The
bracketed "and" digit names the third digit of a three-digit scene. Training scenes are composed afresh each
epoch from the 50,000 MNIST training digits (each digit once per epoch, in a seeded order, 2 or 3 per
scene) with one reference drawn per scene; validation and test scenes are fixed: composed from the validation
and test digits with a seed that does not depend on the run (EVAL_SEED), so every run scores the same scenes.

**Caption sets with features.** A token file in Flickr8k's format (``<image>#<0-4>\\t<caption>``) and three
split lists (one image name a line), under ``<data root>/<dataset>/``; Flickr8k's are the official files
(sha256 pinned), Flickr30k's and COCO's are made by the user from Karpathy's split files (README). Captions
are lower-cased and stripped of punctuation (spec §2: an approximation of Karpathy's tokenisation); the
vocabulary is the ``vocab_size`` − 2 most frequent training words, the others map to UNK. The annotation
vectors are read from a cache, one ``<image>.npy`` of shape 196 × 512 per image (VGG-19 conv5_4 of a
224 × 224 image, row-major over the 14 × 14 grid), made once from the user's images by ``repro features``
(``FeatureCaptions.cache_features``, ``repro/data/vgg19.py``); a missing cache raises a DataError saying so.
The plumbing of such a set (files, vocabulary, pairs, batches of cached arrays) is ``CaptionSet``'s, which
LSTM-E's clip-feature set (``papers/lstm_e/data.py``, YouTube2Text) extends too.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from repro.data import DataError, data_root, verify
from repro.data.mnist import MNISTDataModule
from repro.data.modules import EpochBatchesDataModule
from repro.data.vgg19 import VGG19Conv54, cache_features, pretrained_vgg19

EOS, UNK = 0, 1
SPLITS = ("train", "valid", "test")

# --------------------------------------------------------------------------------------------------
# Captioned MNIST scenes

DIGIT = 28  # MNIST digit width
MAX_DIGITS = 3
EVAL_SEED = 20150210  # fixes the validation and test scenes for every run (arXiv v1's date)
SCENE_WORDS = [
    "<eos>",
    "UNK",
    "a",
    *"0123456789",
    "and",
    "above",
    "below",
    "to",
    "the",
    "left",
    "right",
    "of",
    "from",
    "top",
    "bottom",
]


def ink_boxes(digits: np.ndarray) -> np.ndarray:
    """N × 4 (top, left, bottom, right; the last two exclusive): the box of each digit's non-zero pixels."""
    rows, cols = digits.any(axis=2), digits.any(axis=1)
    top, left = rows.argmax(1), cols.argmax(1)
    bottom, right = DIGIT - rows[:, ::-1].argmax(1), DIGIT - cols[:, ::-1].argmax(1)
    return np.stack([top, left, bottom, right], axis=1)


def separated(corners: np.ndarray, sizes: np.ndarray, present: np.ndarray, gap: int) -> np.ndarray:
    """Whether every two present boxes of each scene are ``gap`` pixels apart along rows or columns (n)."""
    ok = np.ones(len(corners), dtype=bool)
    for i in range(MAX_DIGITS):
        for j in range(i + 1, MAX_DIGITS):
            apart = np.zeros(len(corners), dtype=bool)
            for axis in (0, 1):
                end_i = corners[:, i, axis] + sizes[:, i, axis] + gap
                end_j = corners[:, j, axis] + sizes[:, j, axis] + gap
                apart |= (end_i <= corners[:, j, axis]) | (end_j <= corners[:, i, axis])
            ok &= apart | ~(present[:, i] & present[:, j])
    return ok


def compose(
    digits: np.ndarray, boxes: np.ndarray, chosen: np.ndarray, canvas: int, gap: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Scenes of the digits ``digits[chosen]`` (n × 3 indices, −1 where a scene has fewer digits).

    Returns the canvases (n × W × W uint8) and each digit's ink box on its canvas (n × 3 × 4, −1 when absent).
    A scene whose boxes come too close is redrawn whole until none does.
    """
    n = len(chosen)
    present = chosen >= 0
    ink = np.where(present[..., None], boxes[chosen.clip(0)], 0)
    sizes = ink[..., 2:] - ink[..., :2]  # n × 3 × 2: height, width
    corners = np.zeros((n, MAX_DIGITS, 2), dtype=np.int64)
    todo = np.arange(n)
    while len(todo):
        corners[todo] = rng.integers(0, canvas - sizes[todo] + 1)
        todo = todo[~separated(corners[todo], sizes[todo], present[todo], gap)]
    # The whole 28 × 28 digit goes where its ink box lands; its zeros outside the box may leave the canvas, so
    # it is pasted on a canvas padded by a digit's width. Ink boxes never overlap, so adding never overflows.
    padded = np.zeros((n, canvas + 2 * DIGIT, canvas + 2 * DIGIT), dtype=np.uint8)
    span = np.arange(DIGIT)
    for slot in range(MAX_DIGITS):
        filled = np.flatnonzero(present[:, slot])
        origin = corners[filled, slot] - ink[filled, slot, :2] + DIGIT
        r = origin[:, 0, None, None] + span[None, :, None]
        c = origin[:, 1, None, None] + span[None, None, :]
        padded[filled[:, None, None], r, c] += digits[chosen[filled, slot]]
    placed = np.concatenate([corners, corners + sizes], axis=2)
    return padded[:, DIGIT:-DIGIT, DIGIT:-DIGIT], np.where(present[..., None], placed, -1)


def describe(labels: np.ndarray, boxes: np.ndarray) -> list[str]:
    """Every sentence of the template grammar (module docstring) that is true of one scene.

    ``labels`` (3,) and ``boxes`` (3 × 4) as ``compose`` returns them, −1 for an absent digit.
    """
    here = [i for i in range(MAX_DIGITS) if labels[i] >= 0]

    def a(i: int) -> str:
        return f"a {labels[i]}"

    def listed(order: list[int]) -> str:
        return " ".join(a(i) for i in order[:-1]) + f" and {a(order[-1])}"

    sentences = []
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # row, column
    for name, axis in (("from left to right", 1), ("from top to bottom", 0)):
        if len({centres[i, axis] for i in here}) == len(here):
            sentences.append(f"{name} {listed(sorted(here, key=lambda i: centres[i, axis]))}")
    for i in here:
        for j in here:
            if i == j:
                continue
            rest = "".join(f" and {a(k)}" for k in here if k not in (i, j))
            if boxes[i, 2] <= boxes[j, 0]:  # i's last row is above j's first
                sentences += [f"{a(i)} above {a(j)}{rest}", f"{a(j)} below {a(i)}{rest}"]
            if boxes[i, 3] <= boxes[j, 1]:  # i's last column is left of j's first
                sentences += [f"{a(i)} to the left of {a(j)}{rest}", f"{a(j)} to the right of {a(i)}{rest}"]
    if len(here) == 2:
        sentences += [f"{a(here[0])} and {a(here[1])}", f"{a(here[1])} and {a(here[0])}"]
    return list(dict.fromkeys(sentences))  # two equal digits can make the same sentence twice


def group_digits(count: int, rng: np.random.Generator) -> np.ndarray:
    """Scenes × 3 indices into a permutation of ``count`` digits, 2 or 3 per scene (−1 pads), each digit at
    most once: the last one or two digits are left out when they cannot make the next scene."""
    order = rng.permutation(count)
    sizes = rng.integers(2, MAX_DIGITS + 1, count // 2 + 1)
    ends = np.cumsum(sizes)
    ends = ends[ends <= count]
    starts = np.concatenate([[0], ends[:-1]])
    chosen = np.full((len(ends), MAX_DIGITS), -1, dtype=np.int64)
    for slot in range(MAX_DIGITS):
        has = starts + slot < ends
        chosen[has, slot] = order[starts[has] + slot]
    return chosen


def encode(words: list[str], index: dict[str, int]) -> list[int]:
    return [index.get(w, UNK) for w in words]


def caption_batch(encoded: list[list[int]]) -> dict:
    """``captions`` (B × T: words, <eos>, zero padding) and ``lengths`` (words + 1)."""
    lengths = torch.tensor([len(c) + 1 for c in encoded])
    captions = torch.zeros(len(encoded), int(lengths.max()), dtype=torch.int64)
    for row, caption in enumerate(encoded):
        captions[row, : len(caption)] = torch.tensor(caption, dtype=torch.int64)
    return {"captions": captions, "lengths": lengths}


def attention_hits(
    words: torch.Tensor, alphas: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, canvas: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hits, named): of the digit words a decode emits that name a digit of the scene, how many had the
    attention peak of their step on a cell that overlaps the ink box of a digit with that label.

    ``words`` B × T (ids in SCENE_WORDS), ``alphas`` B × T × L (the α that produced each word), ``labels``
    B × 3 and ``boxes`` B × 3 × 4 (−1 when absent). The grid is √L × √L cells of canvas / √L pixels.
    """
    side = round(alphas.shape[-1] ** 0.5)
    cell = canvas // side
    peak = alphas.argmax(-1)
    top, left = (peak // side) * cell, (peak % side) * cell  # B × T
    digit = words - SCENE_WORDS.index("0")
    is_digit = (digit >= 0) & (digit <= 9)
    same = labels[:, None, :] == torch.where(is_digit, digit, -2)[:, :, None]  # B × T × 3
    b = boxes[:, None, :, :]
    overlap = (
        (top[..., None] < b[..., 2])
        & (b[..., 0] < top[..., None] + cell)
        & (left[..., None] < b[..., 3])
        & (b[..., 1] < left[..., None] + cell)
    )
    named = same.any(-1)
    return (same & overlap).any(-1).sum(), named.sum()


TARGETS = ("random", "canonical")  # how CaptionedMNIST picks a training scene's caption


class CaptionedMNIST(MNISTDataModule):
    """Captioned scenes of 2 or 3 MNIST digits (module docstring): our offline benchmark.

    Args:
        canvas: canvas width in pixels (a multiple of the encoder's 8-pixel cells).
        gap: the least distance in pixels between two digits' ink boxes, along rows or columns.
        batch_size: scenes per training step (global: divided among DDP ranks).
        eval_batch_size: scenes per evaluation batch (memory only).
        limit: keep only the first this-many digits of each MNIST split (smoke tests).
        seed: seeds the training scenes and the reference drawn for each, per epoch (never the fixed sets).
        target: the training caption of a scene: ``random``, one of its references drawn afresh each time (a
            corpus with several captions an image); ``canonical``, always its first reference in the grammar's
            order, so that a scene has one caption. Scheduled Sampling uses ``canonical``: with a drawn
            reference, a word the model samples from another valid template is followed by targets that
            continue the drawn one, supervision that contradicts the sampled prefix and penalises scheduled
            sampling alone. Evaluation always scores against every reference.
    """

    input_kind = "images"

    def __init__(
        self,
        canvas: int = 64,
        gap: int = 2,
        batch_size: int = 64,
        eval_batch_size: int = 500,
        limit: int | None = None,
        seed: int = 1,
        target: str = "random",
    ):
        super().__init__()
        if canvas % 8 or canvas < 2 * DIGIT:
            raise ValueError(f"data.canvas must be a multiple of 8 and at least {2 * DIGIT}, not {canvas}")
        if target not in TARGETS:
            raise ValueError(f"data.target must be one of {', '.join(TARGETS)}, not {target!r}")
        self.save_hyperparameters()
        self.vocabulary = SCENE_WORDS
        self.word_index = {w: i for i, w in enumerate(SCENE_WORDS)}
        self.splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.fixed: dict[str, dict] = {}

    def setup(self, stage: str | None = None):
        if not self.splits:
            self.splits = {split: (x, y, ink_boxes(x)) for split, (x, y) in self.mnist_splits().items()}

    def scenes(self, split: str, chosen: np.ndarray, rng: np.random.Generator) -> dict:
        digits, labels, boxes = self.splits[split]
        canvases, placed = compose(digits, boxes, chosen, self.hparams.canvas, self.hparams.gap, rng)
        scene_labels = np.where(chosen >= 0, labels[chosen.clip(0)], -1)
        return {
            "canvases": canvases,
            "labels": scene_labels,
            "boxes": placed,
            "references": [describe(lab, box) for lab, box in zip(scene_labels, placed, strict=True)],
        }

    def fixed_set(self, split: str) -> dict:
        """The split's fixed scenes: from EVAL_SEED, the split and the scene settings only."""
        if split not in self.fixed:
            hp = self.hparams
            rng = np.random.default_rng([EVAL_SEED, SPLITS.index(split), hp.canvas, hp.gap])
            self.fixed[split] = self.scenes(split, group_digits(len(self.splits[split][0]), rng), rng)
        return self.fixed[split]

    def references(self, split: str) -> list[list[str]]:
        return self.fixed_set(split)["references"]

    def training_batches(self, epoch: int):
        """This epoch's scenes, composed batch by batch (this rank's share of each global batch), each with
        one of its references drawn as the target."""
        world, rank = self.world
        hp = self.hparams
        if hp.batch_size % world:
            raise ValueError(f"data.batch_size {hp.batch_size} must be divisible by the {world} devices")
        rng = np.random.default_rng([hp.seed, epoch])
        chosen = group_digits(len(self.splits["train"][0]), rng)
        for begin in range(0, len(chosen) - len(chosen) % world, hp.batch_size):
            group = chosen[begin : begin + hp.batch_size]
            group = group[: len(group) - len(group) % world]
            scenes = self.scenes("train", group, rng)
            if hp.target == "canonical":
                targets = [refs[0].split() for refs in scenes["references"]]
            else:
                targets = [refs[rng.integers(len(refs))].split() for refs in scenes["references"]]
            mine = slice(rank, None, world)
            yield {
                "images": to_images(scenes["canvases"][mine]),
                **caption_batch([encode(t, self.word_index) for t in targets[mine]]),
            }

    def evaluation_batches(self, split: str):
        world, rank = self.world
        fixed = self.fixed_set(split)
        mine = np.arange(rank, len(fixed["canvases"]), world)
        for begin in range(0, len(mine), self.hparams.eval_batch_size):
            i = mine[begin : begin + self.hparams.eval_batch_size]
            yield {
                "images": to_images(fixed["canvases"][i]),
                "index": torch.from_numpy(i),
                "labels": torch.from_numpy(fixed["labels"][i]),
                "boxes": torch.from_numpy(fixed["boxes"][i]),
            }


def to_images(canvases: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(canvases).float().div_(255).unsqueeze(1)


# --------------------------------------------------------------------------------------------------
# Caption sets with cached CNN features (Flickr8k, Flickr30k, COCO)

FLICKR8K_SHA256 = {  # spec §2 and shared/data/flickr8k/SOURCE.md
    "Flickr8k.token.txt": "1e1f3a371ba1a1bf742e6930521c037e046b2bf3fcc2390ba8405e0301ed7689",
    "Flickr_8k.trainImages.txt": "e330ddd5156a4c2d2e2b67bc587e70e588f2d132bd8a10dc54dcb71e58115d8e",
    "Flickr_8k.devImages.txt": "18ba829f47f6df1cb830bf7f0506e2ddf333818925299babbd1bbcaf50fdc504",
    "Flickr_8k.testImages.txt": "c0924146c131458ceba45da59670fe9520eadce1e5cafffa16a817672a9b1f17",
}
FEATURE_SHAPE = (196, 512)  # VGG-19 conv5_4: 14 × 14 cells of 512 channels (spec §3)
FEATURES = "vgg19_conv5_4"  # the cache's default folder under <data root>/<dataset>/
PUNCTUATION = str.maketrans("", "", string.punctuation)


def tokenize(caption: str) -> list[str]:
    """Lower-cased words with punctuation deleted (spec §2's approximation of Karpathy's tokens)."""
    return caption.lower().translate(PUNCTUATION).split()


def read_token_file(path: Path) -> dict[str, list[str]]:
    """``image name -> its captions`` in ``#k`` order, from ``<image>#<k>\\t<caption>`` lines.

    Flickr8k's file names one image ``2258277193_586949ec62.jpg.1`` (spec §2's quirk: the image file is
    ``…jpg``, and no other line names it); such a name is read as the ``.jpg`` it stands for.
    """
    captions: dict[str, list[tuple[int, str]]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        name, tab, caption = line.partition("\t")
        image, hash_, k = name.rpartition("#")
        if not tab or not hash_ or not k.isdigit():
            raise DataError(f"{path}, line {number}: expected '<image>#<k><TAB><caption>', got {line[:80]!r}")
        image = re.sub(r"\.jpg\.\d+$", ".jpg", image)
        captions.setdefault(image, []).append((int(k), caption))
    return {image: [c for _, c in sorted(pairs)] for image, pairs in captions.items()}


def read_split(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def build_vocabulary(captions: list[list[str]], size: int) -> list[str]:
    """``<eos>``, ``UNK``, then the ``size`` − 2 most frequent words (ties: alphabetical)."""
    counts = Counter(word for caption in captions for word in caption)
    frequent = sorted(counts, key=lambda w: (-counts[w], w))[: size - 2]
    return ["<eos>", "UNK", *frequent]


class CaptionSet(EpochBatchesDataModule):
    """A caption set whose items (images, video clips) are read as cached feature arrays: the plumbing that
    FeatureCaptions and LSTM-E's ClipFeatureCaptions share.

    Under ``<data root>/<dataset>/``: a token file and three split lists (``data_files``, sha256-checked where
    ``checksums`` pins them) and a feature folder with one ``<item>.npy`` of shape ``feature_shape`` per
    item. A subclass's ``__init__`` takes at least ``dataset``, the four file names, ``features``,
    ``images``, ``vocab_size``, ``max_length``, ``batch_size``, ``eval_batch_size``, ``limit`` and ``seed``
    (FeatureCaptions documents them) and calls ``save_hyperparameters``; it names its items (``noun``), where
    its README explains the files (``guide``), what a missing cache means (``missing_features_message``) and
    how its training pairs are batched (``batch_order``). Batches carry the features under ``input_kind``.
    """

    input_kind = "features"  # also the batch key of the features
    noun = "images"  # what an item is, in messages
    guide = "papers/show_attend_tell/README.md (the caption sets)"  # named when a data file is missing
    checksums: dict[str, dict[str, str]] = {}  # dataset -> file name -> sha256
    feature_name = FEATURES  # the feature folder's default name under the data set's
    feature_shape: tuple[int, ...] = FEATURE_SHAPE  # of every item's cached array
    source = "images"  # what the folder data.images holds, in messages

    def __init__(self):
        super().__init__()
        self.items: dict[str, list[str]] = {}  # split -> item names, in the split list's order
        self.captions: dict[str, list[str]] = {}
        self.vocabulary: list[str] = []
        self.word_index: dict[str, int] = {}
        self.pairs: list[tuple[int, list[int]]] = []  # (index into items["train"], encoded caption)

    @property
    def folder(self) -> Path:
        return data_root() / self.hparams.dataset

    @property
    def feature_folder(self) -> Path:
        return Path(self.hparams.features) if self.hparams.features else self.folder / self.feature_name

    def data_files(self) -> list[Path]:
        hp = self.hparams
        return [self.folder / name for name in (hp.token_file, hp.train_list, hp.valid_list, hp.test_list)]

    def setup(self, stage: str | None = None):
        if self.vocabulary:
            return
        self.read_caption_set()
        self.check_features()
        train = [tokenize(c) for name in self.items["train"] for c in self.captions[name]]
        self.vocabulary = build_vocabulary(train, self.hparams.vocab_size)
        self.word_index = {w: i for i, w in enumerate(self.vocabulary)}
        self.pairs = [
            (i, encode(tokenize(c), self.word_index))
            for i, name in enumerate(self.items["train"])
            for c in self.captions[name]
            if len(tokenize(c)) <= self.hparams.max_length
        ]

    def read_caption_set(self) -> None:
        """The captions and each split's item names, from the (checked) token file and split lists."""
        sha256 = self.checksums.get(self.hparams.dataset, {})
        for path in self.data_files():
            if path.name in sha256:
                verify(path, sha256[path.name])
            elif not path.exists():
                raise DataError(f"data file missing: {path}; see {self.guide}")
        token_file, *lists = self.data_files()
        self.captions = read_token_file(token_file)
        for split, path in zip(SPLITS, lists, strict=True):
            names = read_split(path)[: self.hparams.limit]
            if missing := [n for n in names if n not in self.captions]:
                raise DataError(
                    f"{path}: {len(missing)} {self.noun} lack captions in {token_file}: {missing[:3]}"
                )
            self.items[split] = names

    def all_names(self) -> list[str]:
        """Every item of the three splits, once each, in split order."""
        return list(dict.fromkeys(name for split in SPLITS for name in self.items[split]))

    def check_features(self) -> None:
        names = [n for split in SPLITS for n in self.items[split]]
        if missing := [n for n in names if not (self.feature_folder / f"{n}.npy").exists()]:
            raise DataError(self.missing_features_message(missing, names))

    def missing_features_message(self, missing: list[str], names: list[str]) -> str:
        raise NotImplementedError

    def source_folder(self) -> Path:
        """``data.images``, the folder ``cache_features`` encodes from, checked to exist (before any weights
        are loaded, which may have to be downloaded first)."""
        if not self.hparams.images:
            raise DataError(
                f"data.images is not set: name the folder that holds your {self.hparams.dataset} "
                f"{self.source} (repro features ... --images DIR)"
            )
        folder = Path(self.hparams.images).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"{self.source[:-1]} folder not found: {folder} (data.images, or repro features --images DIR)"
            )
        return folder

    def load_features(self, names: list[str]) -> torch.Tensor:
        arrays = []
        for name in names:
            path = self.feature_folder / f"{name}.npy"
            array = np.load(path)
            if array.shape != self.feature_shape:
                raise DataError(f"{path}: features of shape {array.shape}, expected {self.feature_shape}")
            arrays.append(array)
        return torch.from_numpy(np.stack(arrays).astype(np.float32))

    def references(self, split: str) -> list[list[str]]:
        return [self.captions[name] for name in self.items[split]]

    def batch_order(self, order: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """This epoch's training batches (global, as indices into ``pairs``) from a fresh permutation."""
        raise NotImplementedError

    def training_batches(self, epoch: int):
        world, rank = self.world
        hp = self.hparams
        if hp.batch_size % world:
            raise ValueError(f"data.batch_size {hp.batch_size} must be divisible by the {world} devices")
        rng = np.random.default_rng([hp.seed, epoch])
        for batch in self.batch_order(rng.permutation(len(self.pairs)), rng):
            mine = batch[: len(batch) - len(batch) % world][rank::world]
            if not len(mine):
                continue
            names = [self.items["train"][self.pairs[i][0]] for i in mine]
            yield {
                self.input_kind: self.load_features(names),
                **caption_batch([self.pairs[i][1] for i in mine]),
            }

    def evaluation_targets(self, names: list[str]) -> dict:
        """What an evaluation batch holds besides the features and the ``index``: nothing here."""
        return {}

    def evaluation_batches(self, split: str):
        world, rank = self.world
        mine = np.arange(rank, len(self.items[split]), world)
        for begin in range(0, len(mine), self.hparams.eval_batch_size):
            i = mine[begin : begin + self.hparams.eval_batch_size]
            names = [self.items[split][j] for j in i]
            yield {
                self.input_kind: self.load_features(names),
                "index": torch.from_numpy(i),
                **self.evaluation_targets(names),
            }


class FeatureCaptions(CaptionSet):
    """Images as cached annotation vectors (196 × 512), with their captions: Flickr8k, Flickr30k or COCO.

    Args:
        dataset: the folder under the data root.
        token_file, train_list, valid_list, test_list: file names inside it (Flickr8k's official ones by
            default; their sha256 is checked when ``dataset`` is flickr8k).
        features: the feature cache folder (default ``<data root>/<dataset>/vgg19_conv5_4``).
        images: the user's own copy of the images (the folder the split lists' names are relative to), which
            ``repro features`` reads to make the feature cache.
        vocab_size: words in the vocabulary, <eos> and UNK included (10,000: spec §2).
        max_length: training captions longer than this many words are dropped (the code's maxlen 100).
        batch_size: captions per training step, global (the paper's 64); bucketed by length.
        eval_batch_size: images per evaluation batch.
        limit: keep only the first this-many images of each split (smoke tests).
        seed: seeds each epoch's order.
    """

    checksums = {"flickr8k": FLICKR8K_SHA256}

    def __init__(
        self,
        dataset: str = "flickr8k",
        token_file: str = "Flickr8k.token.txt",
        train_list: str = "Flickr_8k.trainImages.txt",
        valid_list: str = "Flickr_8k.devImages.txt",
        test_list: str = "Flickr_8k.testImages.txt",
        features: str | None = None,
        images: str | None = None,
        vocab_size: int = 10_000,
        max_length: int = 100,
        batch_size: int = 64,
        eval_batch_size: int = 100,
        limit: int | None = None,
        seed: int = 1,
    ):
        super().__init__()
        if vocab_size < 3:
            raise ValueError(f"data.vocab_size must be at least 3 (<eos>, UNK and a word), not {vocab_size}")
        self.save_hyperparameters()

    @property
    def images(self) -> dict[str, list[str]]:
        """Each split's image names (``data.images`` is the folder of the image files)."""
        return self.items

    def missing_features_message(self, missing: list[str], names: list[str]) -> str:
        images = self.hparams.images or "DIR"
        return (
            f"no cached annotation vectors for {len(missing)} of the {len(names)} {self.hparams.dataset} "
            f"images in {self.feature_folder} (first missing: {missing[0]}.npy). The captioning papers "
            f"read one <image>.npy per image: the {FEATURE_SHAPE[0]} x {FEATURE_SHAPE[1]} VGG-19 "
            f"conv5_4 features (ImageNet weights, 224 x 224 input, the 14 x 14 x 512 output of conv5_4 "
            f"before the last max-pool, row-major). Make them once from your copy of the images: "
            f"repro features PAPER EXPERIMENT --images {images} (such as repro features "
            f"show_attend_tell flickr8k_soft; papers/show_attend_tell/README.md), or set data.features "
            f"to a folder that has them."
        )

    def cache_features(
        self,
        encoder: VGG19Conv54 | None = None,
        weights: str | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        workers: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict:
        """The one-time encoder pass over every image of the three splits (``repro features``): writes what
        ``check_features`` and ``load_features`` read, skipping images already cached. ``encoder`` defaults
        to VGG-19 with torchvision's ImageNet weights (``weights``: the checkpoint file; default torch's hub
        cache). Returns the cache's ``features.json`` record."""
        folder = self.source_folder()
        self.read_caption_set()
        return cache_features(
            self.all_names(),
            folder,
            self.feature_folder,
            encoder if encoder is not None else pretrained_vgg19(weights),
            batch_size=batch_size,
            device=device,
            workers=workers,
            progress=progress,
        )

    def batch_order(self, order: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Every (image, caption) pair once, in batches of similar caption lengths (the paper buckets by
        length): the fresh shuffle, stably sorted by length, cut into batches, visited in a fresh order."""
        size = self.hparams.batch_size
        order = order[np.argsort([len(self.pairs[i][1]) for i in order], kind="stable")]
        batches = [order[b : b + size] for b in range(0, len(order), size)]
        return [batches[i] for i in rng.permutation(len(batches))]
