"""Penn Treebank, Mikolov's language-modelling version, for word-level language models (spec §2, §6).

The files ``<data root>/ptb/ptb.{train,valid,test}.txt`` hold one sentence per line, words separated by spaces
(already lower-cased, numbers as ``N``, rare words as ``<unk>``). Each line is its words followed by one
end-of-sentence token ``<eos>``: 929,589 / 73,760 / 82,430 tokens. The vocabulary is the training file's 9,999
word types plus ``<eos>``, 10,000 types, numbered by descending training frequency (ties alphabetically). The
validation and test files use no other word (their rare words are already ``<unk>``); a file that did is
refused.

The predicted tokens (spec §6): every token of a split, words and ``<eos>`` alike, exactly once: 82,430 on the
test set. The first token is predicted after an ``<eos>`` put in front of the split, the context every other
sentence's first word has; that ``<eos>`` is context only, as the code's ``<s>`` is, and is never counted.

Two protocols, which give different perplexities (spec §6):

- ``stream`` (Zaremba et al.; the suite's cpu tier, spec §8). The split is one text. For training it is cut
  into ``batch_size`` contiguous streams of equal length L (the last N mod batch_size tokens are left out);
  batch j holds steps [j T, (j + 1) T) of every stream (T = ``bptt``; the last window may be shorter) and the
  model carries each stream's state from batch j to batch j + 1, starting each epoch from zeros. Evaluation
  reads a split as ``eval_streams`` contiguous pieces (1: the whole split, state never reset), the last one
  padded, in windows of ``eval_chunk`` steps with the state carried across them.
- ``sentence`` (the official ``rnnlm2`` driver, spec §4; the full tier). Each line is its own sequence:
  inputs ``<eos> w_1 .. w_n``, targets ``w_1 .. w_n <eos>``, the state starting from zeros. The code wraps a
  line in ``<s> .. </s>``; here ``<eos>`` is both (as an input it is otherwise never seen in this protocol, so
  its embedding is the code's ``<s>``; the softmax has 10,000 outputs where the code's has a never-predicted
  ``<s>`` too). Training visits the lines in a fresh seeded order each epoch, ``batch_size`` to a batch
  (padded); evaluation keeps the file's order.

A batch is ``inputs`` and ``targets`` (``T × B`` word ids, time-major; padded targets are ``IGNORE``),
``first`` (the batch starts its sequences: the model starts from zeros instead of the carried state) and
``tokens`` (the predicted tokens of the whole batch over every DDP rank, for the training-progress count).

Under DDP each rank takes rows ``rank, rank + W, ...`` of every training batch (streams or sentences), so the
ranks step in lockstep and the global batch is ``batch_size`` whatever the device count; evaluation splits the
pieces or lines the same way and the sums are added across ranks.

A missing file is taken from the official archive, Mikolov's ``simple-examples.tgz`` (the three files are
its members ``simple-examples/data/ptb.*.txt``; the archive's own checksum is not pinned anywhere, so each
member is checked against its pinned sha256 before it is saved).
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from repro.data import DataError, data_root, sha256, verify
from repro.data.modules import EpochBatchesDataModule

log = logging.getLogger(__name__)

ARCHIVE_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
ARCHIVE_FOLDER = "simple-examples/data"  # where the three files sit inside the archive
SHA256 = {
    "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
SPLITS = tuple(SHA256)
TOKENS = {"train": 929_589, "valid": 73_760, "test": 82_430}  # words and one <eos> a line (spec §2)
EOS = "<eos>"
IGNORE = -100  # the target of a padded position (torch's cross-entropy ignore_index)
PROTOCOLS = ("stream", "sentence")


def ptb_path(split: str, root: Path | None = None) -> Path:
    return (root or data_root()) / "ptb" / f"ptb.{split}.txt"


def download(splits: list[str], root: Path | None = None) -> None:
    """Take the files of ``splits`` out of the official archive into ``<root>/ptb/``, each saved only after
    its sha256 matches the pinned value."""
    folder = ptb_path("train", root).parent
    folder.mkdir(parents=True, exist_ok=True)
    names = [ptb_path(split, root).name for split in splits]
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        archive = Path(tmp) / "simple-examples.tgz"
        try:
            with urllib.request.urlopen(ARCHIVE_URL, timeout=60) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
            with tarfile.open(archive) as tar:
                members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
                for split, name in zip(splits, names, strict=True):
                    member = members.get(f"{ARCHIVE_FOLDER}/{name}")
                    if member is None:
                        raise DataError(f"{ARCHIVE_URL} has no member {ARCHIVE_FOLDER}/{name}")
                    part = Path(tmp) / name
                    with tar.extractfile(member) as source, part.open("wb") as out:
                        shutil.copyfileobj(source, out)
                    if sha256(part) != SHA256[split]:
                        raise DataError(
                            f"{ARCHIVE_FOLDER}/{name} in {ARCHIVE_URL} does not match sha256 "
                            f"{SHA256[split]}; not saved"
                        )
                    os.replace(part, folder / name)
        except (OSError, tarfile.TarError) as err:
            raise DataError(
                f"cannot get {', '.join(names)} from {ARCHIVE_URL}: {err}. Without internet, copy them from "
                f"the archive's {ARCHIVE_FOLDER}/ into {folder} by hand, or set REPRO_DATA to a folder whose "
                f"ptb/ holds them."
            ) from err


def ptb_files(root: Path | None = None) -> dict[str, Path]:
    """The three verified files, downloading the missing ones first."""
    missing = [split for split in SPLITS if not ptb_path(split, root).exists()]
    if missing:
        download(missing, root)
    return {
        split: verify(
            ptb_path(split, root), SHA256[split], f"{ARCHIVE_URL}, member {ARCHIVE_FOLDER}/ptb.{split}.txt"
        )
        for split in SPLITS
    }


def read_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]


class Vocabulary:
    """The training file's word types and ``<eos>``, numbered by descending frequency, ties alphabetically."""

    def __init__(self, words: list[str]):
        self.words = words
        self.index = {word: i for i, word in enumerate(words)}

    @classmethod
    def of(cls, lines: list[list[str]]) -> Vocabulary:
        counts = Counter(word for line in lines for word in line)
        counts[EOS] = len(lines)
        return cls(sorted(counts, key=lambda word: (-counts[word], word)))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def eos(self) -> int:
        return self.index[EOS]

    def encode(self, lines: list[list[str]], where: str = "text") -> tuple[np.ndarray, np.ndarray]:
        """(ids, starts): every line's word ids followed by ``<eos>``, concatenated; line k is
        ``ids[starts[k]:starts[k + 1]]``."""
        unknown = sorted({word for line in lines for word in line if word not in self.index})
        if unknown:
            raise DataError(
                f"{where} has {len(unknown)} word types outside the training vocabulary (e.g. "
                f"{unknown[:5]}); PTB's valid and test files map every such word to <unk>: this is not that "
                f"data"
            )
        ids = [self.index[word] for line in lines for word in (*line, EOS)]
        starts = np.cumsum([0] + [len(line) + 1 for line in lines])
        return np.asarray(ids, dtype=np.int64), starts


def streams(ids: np.ndarray, count: int, eos: int, pad: bool) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), each ``count × L``: the split's tokens as ``count`` contiguous streams, each target
    the token after its input (the first input is the ``<eos>`` before the split). ``pad``: L = ⌈N / count⌉
    and the tail padded (targets ``IGNORE``), so every token is predicted once (evaluation); otherwise
    L = ⌊N / count⌋ and the last N mod count tokens are left out (training)."""
    n = len(ids)
    length = -(-n // count) if pad else n // count
    if length == 0:
        raise ValueError(f"{n} tokens cannot fill {count} streams; lower the number of streams")
    kept = min(n, count * length)
    inputs = np.zeros(count * length, dtype=np.int64)
    targets = np.full(count * length, IGNORE, dtype=np.int64)
    targets[:kept] = ids[:kept]
    inputs[:kept] = np.concatenate([[eos], ids[: kept - 1]])
    return inputs.reshape(count, length), targets.reshape(count, length)


def stream_windows(inputs: np.ndarray, targets: np.ndarray, width: int, world: int, rank: int) -> list[dict]:
    """Consecutive ``width``-step windows of the streams, time-major; this rank's rows of each."""
    batches = []
    for start in range(0, inputs.shape[1], width):
        window = slice(start, start + width)
        batches.append(
            {
                "inputs": torch.from_numpy(inputs[rank::world, window].T.copy()),
                "targets": torch.from_numpy(targets[rank::world, window].T.copy()),
                "first": start == 0,
                "tokens": int((targets[:, window] != IGNORE).sum()),
            }
        )
    return batches


def sentence_batch(sentences: list[np.ndarray], eos: int, tokens: int) -> dict:
    """Lines (each ending in ``<eos>``) as one padded batch: inputs ``<eos> w_1 .. w_n``, targets
    ``w_1 .. w_n <eos>``; ``tokens``: the predicted tokens of the batch over all ranks."""
    steps = max((len(s) for s in sentences), default=0)
    inputs = torch.zeros(steps, len(sentences), dtype=torch.long)
    targets = torch.full((steps, len(sentences)), IGNORE, dtype=torch.long)
    for b, sentence in enumerate(sentences):
        inputs[0, b] = eos
        inputs[1 : len(sentence), b] = torch.from_numpy(sentence[:-1])
        targets[: len(sentence), b] = torch.from_numpy(sentence)
    return {"inputs": inputs, "targets": targets, "first": True, "tokens": tokens}


class PTBData(EpochBatchesDataModule):
    """Penn Treebank word ids, in the stream or the sentence protocol (module docstring).

    Args:
        protocol: ``stream`` (Zaremba et al.'s truncated BPTT over contiguous streams) or ``sentence`` (one
            line per sequence, the official driver's).
        batch_size: streams or lines per training batch (global: divided among DDP ranks).
        bptt: truncated-BPTT length T of a training window (stream).
        eval_streams: contiguous pieces each evaluation split is read as (stream; 1: the whole split, its
            state never reset).
        eval_chunk: steps per evaluation window (stream; memory only: the state is carried across windows).
        eval_batch_size: lines per evaluation batch (sentence; memory only).
        limit: keep only the first this-many lines of each split (smoke tests); the vocabulary is always the
            whole training file's.
        seed: the training order of the lines, per epoch (sentence).
    """

    def __init__(
        self,
        protocol: str = "stream",
        batch_size: int = 20,
        bptt: int = 35,
        eval_streams: int = 1,
        eval_chunk: int = 500,
        eval_batch_size: int = 64,
        limit: int | None = None,
        seed: int = 1,
    ):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"data.protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
        self.save_hyperparameters()
        self.vocab: Vocabulary | None = None
        self.parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # split: (ids, line starts)

    def data_files(self) -> list[Path]:
        return list(ptb_files().values())

    def prepare_data(self):
        ptb_files()  # download (if it can) and verify once, before the ranks start

    def setup(self, stage: str | None = None):
        if self.vocab is not None:
            return
        files = ptb_files()
        lines = {split: read_lines(path) for split, path in files.items()}
        self.vocab = Vocabulary.of(lines["train"])
        for split in SPLITS:
            kept = lines[split][: self.hparams.limit]
            self.parts[split] = self.vocab.encode(kept, str(files[split]))
        log.info(
            "PTB: %d types; %s tokens",
            len(self.vocab),
            ", ".join(f"{s} {len(self.parts[s][0])}" for s in SPLITS),
        )

    @property
    def vocab_size(self) -> int:
        if self.vocab is None:
            self.setup()
        return len(self.vocab)

    def sentences(self, split: str) -> list[np.ndarray]:
        ids, starts = self.parts[split]
        return [ids[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]

    def training_batches(self, epoch: int) -> list[dict]:
        world, rank = self.world
        hp = self.hparams
        if hp.batch_size % world:
            raise ValueError(f"data.batch_size {hp.batch_size} must be divisible by the {world} devices")
        ids, _ = self.parts["train"]
        if hp.protocol == "stream":
            inputs, targets = streams(ids, hp.batch_size, self.vocab.eos, pad=False)
            return stream_windows(inputs, targets, hp.bptt, world, rank)
        lines = self.sentences("train")
        order = np.random.default_rng([hp.seed, epoch]).permutation(len(lines))
        full = len(order) - len(order) % world  # every rank takes a step on every batch
        batches = []
        for start in range(0, full, hp.batch_size):
            chosen = [lines[i] for i in order[start : min(start + hp.batch_size, full)]]
            batches.append(sentence_batch(chosen[rank::world], self.vocab.eos, sum(len(s) for s in chosen)))
        return batches

    def evaluation_batches(self, split: str) -> list[dict]:
        world, rank = self.world
        hp = self.hparams
        if hp.protocol == "stream":
            if hp.eval_streams % world:
                raise ValueError(
                    f"data.eval_streams {hp.eval_streams} must be divisible by the {world} devices"
                )
            inputs, targets = streams(self.parts[split][0], hp.eval_streams, self.vocab.eos, pad=True)
            return stream_windows(inputs, targets, hp.eval_chunk, world, rank)
        lines = self.sentences(split)
        chunks = [lines[k : k + hp.eval_batch_size] for k in range(0, len(lines), hp.eval_batch_size)]
        return [
            sentence_batch(chunk[rank::world], self.vocab.eos, sum(len(s) for s in chunk))
            for chunk in chunks
            if chunk[rank::world]  # the last chunk may have fewer lines than there are ranks
        ]
