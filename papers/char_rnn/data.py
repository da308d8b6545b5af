"""Character streams for the char-level language models (spec §2, §3.3, §3.4).

A corpus is read as raw bytes (War and Peace: 3,258,246 bytes, 87 distinct values; text mode would turn CRLF
into LF and give 83 symbols, a different task: spec §7.1). The vocabulary is every distinct byte of the whole
file, numbered in byte order, as char-rnn builds it. The file is split by position into contiguous
train / validation / test parts (80/10/10 for War and Peace, 90/5/5 for the Linux corpus: the paper's
convention, spec §7.2).

Training batches are truncated BPTT over contiguous streams. The training text is cut into ``batch_size``
streams of equal length; batch j holds columns [jT, (j+1)T) of every stream, and its targets are the same
columns shifted by one character. The model carries each stream's hidden state from batch j to batch j + 1
(detached), and starts each epoch from zeros, so a batch continues exactly where the previous one stopped.
Under DDP rank r takes streams r, r + W, ..., so every rank steps in lockstep over the same columns and the
global batch is ``batch_size`` streams whatever the device count.

Evaluation reads a split as ``eval_streams`` contiguous pieces (1 by default: the whole split as one stream,
state reset once at its start, spec §6), cut into ``eval_chunk``-wide windows with the state carried across
them. Every character of the split but the first is predicted exactly once.

``StreamSplitCharData`` cuts the streams first and splits each of them (pycaffe-recurrent's loader, and
char-rnn's): the held-out windows are the tail of every stream, read as ``batch_size`` parallel streams.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from repro.data import DataError, data_root, fetch, verify
from repro.data.modules import EachEpoch, RunAwareDataModule

log = logging.getLogger(__name__)


class Corpus:
    """Where one corpus lives and how it is checked."""

    def __init__(self, folder: str, file: str, sha: str, url: str | None, text_sha: str | None = None):
        self.folder, self.file, self.sha, self.url, self.text_sha = folder, file, sha, url, text_sha


CORPORA = {
    # The paper's file, byte for byte (spec §2).
    "war_and_peace": Corpus(
        "war_and_peace",
        "warpeace_input.txt",
        "fb66ba999dafe24017cdd59e04c56d385a9c8466993d374fd4c6f08b2142985e",
        "https://cs.stanford.edu/people/karpathy/char-rnn/warpeace_input.txt",
    ),
    # A substitute of the paper's length built from Linux 6.1 (shared/data/linux_kernel/SOURCE.md): no
    # official copy of Karpathy's file exists, so nothing to download; numbers on it are "LK-substitute".
    "linux_kernel": Corpus(
        "linux_kernel",
        "linux_kernel_corpus.txt.gz",
        "c871220e71ad64283b2bbba05436f3e4295ac3893a91b37422c6249306c338fd",
        None,
        text_sha="e3c31973148b2ebcfab616ef9a76380b26102dcc67e6ba0f97c9704824c451fa",
    ),
}


def corpus_file(name: str, root: Path | None = None) -> Path:
    if name not in CORPORA:
        raise ValueError(f"data.corpus must be one of {', '.join(CORPORA)}, not {name!r}")
    corpus = CORPORA[name]
    path = (root or data_root()) / corpus.folder / corpus.file
    if corpus.url is None and not path.exists():
        raise DataError(
            f"data file missing: {path}. This corpus has no official download: build it with the recipe in "
            f"shared/data/{corpus.folder}/SOURCE.md, or set REPRO_DATA to a folder that holds it."
        )
    return fetch(path, corpus.sha, corpus.url) if corpus.url else verify(path, corpus.sha)


def read_bytes(name: str, root: Path | None = None) -> np.ndarray:
    """The verified corpus as a uint8 array of raw bytes."""
    path = corpus_file(name, root)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    corpus = CORPORA[name]
    if corpus.text_sha is not None and hashlib.sha256(raw).hexdigest() != corpus.text_sha:
        raise DataError(
            f"{path} decompresses to text whose sha256 is not {corpus.text_sha}: the archive is a different "
            f"build; rebuild it with shared/data/{corpus.folder}/SOURCE.md"
        )
    return np.frombuffer(raw, dtype=np.uint8)


class Vocabulary:
    """Every distinct byte of the corpus, numbered in byte order (char-rnn's vocabulary, spec §2)."""

    def __init__(self, symbols: np.ndarray):
        self.symbols = np.asarray(symbols, dtype=np.uint8)
        self.index = np.full(256, -1, dtype=np.int64)
        self.index[self.symbols] = np.arange(len(self.symbols))

    @classmethod
    def of(cls, raw: np.ndarray) -> Vocabulary:
        return cls(np.flatnonzero(np.bincount(raw, minlength=256)).astype(np.uint8))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, raw: np.ndarray | bytes) -> np.ndarray:
        raw = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, bytes) else raw
        ids = self.index[raw]
        if (ids < 0).any():
            unknown = sorted(set(raw[ids < 0].tolist()))
            raise ValueError(f"bytes {unknown[:10]} are not in this corpus's vocabulary")
        return ids

    def decode(self, ids) -> bytes:
        return self.symbols[np.asarray(ids)].tobytes()


def split(
    ids: np.ndarray, fractions: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous train / validation / test parts by position (the paper's convention, spec §7.2)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise ValueError(
            f"data.split must be three fractions summing to 1 (train, val, test), got {fractions}"
        )
    n = len(ids)
    a = int(round(n * fractions[0]))
    b = a + int(round(n * fractions[1]))
    return ids[:a], ids[a:b], ids[b:]


def streams(text: np.ndarray, count: int, multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each ``count × L``: the text cut into equal contiguous streams whose length L is
    a multiple of ``multiple`` (the truncated-BPTT length when training), targets one character ahead. The
    remainder, fewer than ``count × multiple`` characters at the end, is left out, as char-rnn does; one
    stream with ``multiple`` 1 predicts every character but the first."""
    length = (len(text) - 1) // count // multiple * multiple
    if length == 0:
        raise ValueError(
            f"{len(text)} characters cannot fill {count} streams of {multiple} steps; lower data.batch_size "
            f"or data.unroll (or use more of the corpus)"
        )
    rows = (np.arange(count) * length)[:, None] + np.arange(length + 1)[None, :]
    window = torch.from_numpy(text[rows].astype(np.int64))
    return window[:, :-1], window[:, 1:]


class Windows(IterableDataset):
    """Consecutive column windows of this rank's rows: inputs and targets of shape rows × width, and
    ``repeat``, the window's repetition (0 for its first pass; a repeat starts from the same state)."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, width: int, repeats: int = 1):
        self.inputs, self.targets, self.width, self.repeats = inputs, targets, width, repeats

    def __len__(self) -> int:
        # A rank with no rows (DDP with fewer streams than devices) still steps through every window, with
        # empty batches: Lightning refuses a zero-length loader on one rank, and the ranks must all reach
        # the epoch-end metric sync.
        return -(-self.inputs.shape[1] // self.width) * self.repeats

    def __iter__(self):
        for start in range(0, self.inputs.shape[1], self.width):
            cols = slice(start, start + self.width)
            for repeat in range(self.repeats):
                yield {"inputs": self.inputs[:, cols], "targets": self.targets[:, cols], "repeat": repeat}


class CharData(RunAwareDataModule):
    """One corpus as byte ids, split by position, served as truncated-BPTT windows of contiguous streams.

    Args:
        corpus: ``war_and_peace`` (the paper's file) or ``linux_kernel`` (the substitute of spec §2).
        split: (train, val, test) fractions by position: 0.8/0.1/0.1 on War and Peace, 0.9/0.05/0.05 on the
            Linux corpus (the paper); pycaffe-recurrent used 0.9/0/0.1.
        batch_size: parallel training streams (global: divided among DDP ranks).
        unroll: truncated-BPTT length T (characters per window).
        eval_streams: pieces each evaluation split is read as (1: one stream, the spec's protocol).
        eval_chunk: window width for evaluation (memory only: the state is carried across windows).
        window_repeats: optimiser steps on each training window, per epoch; the last entry holds for later
            epochs. pycaffe-recurrent's ``solver.step(step_num)`` repeats a window 5 times in epoch 1, 2 in
            epoch 2, then once: [5, 2, 1].
        limit_chars: keep only the first this-many bytes of the file (smoke tests).
    """

    def __init__(
        self,
        corpus: str = "war_and_peace",
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        batch_size: int = 100,
        unroll: int = 100,
        eval_streams: int = 1,
        eval_chunk: int = 2000,
        window_repeats: tuple[int, ...] = (1,),
        limit_chars: int | None = None,
    ):
        super().__init__()
        if corpus not in CORPORA:
            raise ValueError(f"data.corpus must be one of {', '.join(CORPORA)}, not {corpus!r}")
        if not window_repeats or min(window_repeats) < 1:
            raise ValueError(f"data.window_repeats must be positive step counts, got {window_repeats}")
        self.save_hyperparameters()
        self.vocab: Vocabulary | None = None
        self.parts: dict[str, np.ndarray] = {}

    def data_files(self) -> list[Path]:
        return [corpus_file(self.hparams.corpus)]

    def prepare_data(self):
        corpus_file(self.hparams.corpus)  # download (if it can) and verify once, before the ranks start

    def setup(self, stage: str | None = None):
        if self.vocab is not None:
            return
        raw = read_bytes(self.hparams.corpus)
        self.vocab = Vocabulary.of(raw)  # from the whole file, before any truncation (char-rnn)
        if self.hparams.limit_chars:
            raw = raw[: self.hparams.limit_chars]
        ids = self.vocab.encode(raw).astype(np.uint8)  # at most 256 byte values
        train, val, test = split(ids, tuple(self.hparams.split))
        self.parts = {"train": train, "val": val, "test": test}
        log.info(
            "%s: %d bytes, %d symbols; train %d, val %d, test %d characters",
            self.hparams.corpus,
            len(raw),
            len(self.vocab),
            len(train),
            len(val),
            len(test),
        )

    @property
    def vocab_size(self) -> int:
        if self.vocab is None:
            self.setup()
        return len(self.vocab)

    # ----------------------------------------------------------------------------------------------
    def train_dataloader(self):
        world, rank = self.world
        hp = self.hparams
        if hp.batch_size % world:
            raise ValueError(f"data.batch_size {hp.batch_size} must be divisible by the {world} devices")
        inputs, targets = self.training_streams()
        inputs, targets = inputs[rank::world], targets[rank::world]

        def epoch_windows() -> Windows:
            repeats = hp.window_repeats[min(self.epoch, len(hp.window_repeats) - 1)]
            return Windows(inputs, targets, hp.unroll, repeats)

        # Lightning asks for the training loader once per fit, so the epoch's repeat count is read each time
        # the loader is iterated (once per epoch), as DKT's loader does.
        return self._loader(EachEpoch(epoch_windows))

    def training_streams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), ``batch_size`` × L: the training split cut into streams of whole windows."""
        return streams(self.parts["train"], self.hparams.batch_size, self.hparams.unroll)

    def evaluation_streams(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of an evaluation split: ``eval_streams`` pieces (empty when it is empty)."""
        if len(self.parts[part]) < 2:
            return torch.empty(0, 0), torch.empty(0, 0)
        return streams(self.parts[part], self.hparams.eval_streams)

    def _evaluation(self, part: str):
        world, rank = self.world
        inputs, targets = self.evaluation_streams(part)
        if inputs.numel() == 0:
            return self._loader(Windows(torch.empty(0, 0), torch.empty(0, 0), 1))
        return self._loader(Windows(inputs[rank::world], targets[rank::world], self.hparams.eval_chunk))

    def val_dataloader(self):
        return self._evaluation("val")

    def test_dataloader(self):
        return self._evaluation("test")

    @staticmethod
    def _loader(windows: Windows) -> DataLoader:
        # Windows are already batches; the order is the text's order, never shuffled.
        return DataLoader(windows, batch_size=None)


def stream_split(
    ids: np.ndarray, count: int, unroll: int, fractions: tuple[float, float, float]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """pycaffe-recurrent's loader (recurrent.ipynb, "Load Data"): inputs are the text but its last character,
    targets the text from its second; each is cut into ``count`` streams of m = (N - 1) // count characters
    (stream s starts at s·m), each stream into n = m // unroll windows (its last m - n·unroll characters
    left out), and the split is over the window index: the first floor(n·train) windows of every stream
    train, the next floor(n·val) validate, the rest test. Returns part -> (inputs, targets), ``count`` ×
    (windows · unroll) each (0 columns for an empty part)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise ValueError(
            f"data.split must be three fractions summing to 1 (train, val, test), got {fractions}"
        )
    m = (len(ids) - 1) // count
    n = m // unroll
    if n == 0:
        raise ValueError(
            f"{len(ids)} characters cannot fill {count} streams of {unroll} steps; lower data.batch_size "
            f"or data.unroll (or use more of the corpus)"
        )
    rows = (np.arange(count) * m)[:, None] + np.arange(n * unroll)[None, :]
    inputs, targets = ids[:-1][rows], ids[1:][rows]
    train = int(n * fractions[0] + 1e-9)  # the notebook's 9 * n / 10 in Python 2 integers for 0.9
    val = int(n * fractions[1] + 1e-9)
    bounds = {"train": (0, train), "val": (train, train + val), "test": (train + val, n)}
    return {
        part: (inputs[:, a * unroll : b * unroll], targets[:, a * unroll : b * unroll])
        for part, (a, b) in bounds.items()
    }


class StreamSplitCharData(CharData):
    """``CharData`` whose split is taken within each of the ``batch_size`` streams (``stream_split``), as
    pycaffe-recurrent's loader does: training reads the head of every stream, validation and test its tail,
    each read as the same ``batch_size`` parallel streams with the state carried across windows from zeros at
    the start of the split (pycaffe's test net: batch 128, state carried, reset each pass).

    Args: as ``CharData``, less ``eval_streams`` (the evaluation streams are the ``batch_size`` tails).
    ``parts`` holds each part's streams one after another (``head_of_test`` reads the first stream's tail).
    """

    def __init__(
        self,
        corpus: str = "linux_kernel",
        split: tuple[float, float, float] = (0.9, 0.0, 0.1),
        batch_size: int = 128,
        unroll: int = 100,
        eval_chunk: int = 2000,
        window_repeats: tuple[int, ...] = (1,),
        limit_chars: int | None = None,
    ):
        eval_streams = batch_size  # the tails of the training streams
        super().__init__(
            corpus, split, batch_size, unroll, eval_streams, eval_chunk, window_repeats, limit_chars
        )
        self.pieces: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def setup(self, stage: str | None = None):
        if self.vocab is not None:
            return
        hp = self.hparams
        raw = read_bytes(hp.corpus)
        self.vocab = Vocabulary.of(raw)  # the notebook's sorted(set(txt)), over the whole file
        if hp.limit_chars:
            raw = raw[: hp.limit_chars]
        ids = self.vocab.encode(raw).astype(np.uint8)
        self.pieces = stream_split(ids, hp.batch_size, hp.unroll, tuple(hp.split))
        self.parts = {part: inputs.reshape(-1) for part, (inputs, _) in self.pieces.items()}
        log.info(
            "%s: %d bytes, %d symbols, %d streams; per stream train %d, val %d, test %d characters",
            hp.corpus,
            len(raw),
            len(self.vocab),
            hp.batch_size,
            *(self.pieces[p][0].shape[1] for p in ("train", "val", "test")),
        )

    def training_streams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.from_numpy(a.astype(np.int64)) for a in self.pieces["train"])

    def evaluation_streams(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.pieces[part]
        if inputs.shape[1] == 0:
            return torch.empty(0, 0), torch.empty(0, 0)
        return torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(targets.astype(np.int64))
