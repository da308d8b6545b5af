"""MNIST, read from the four original LeCun files: used by RAM's canvases, the captioned MNIST scenes and
Moving MNIST (video_lstm, which draws from all 60,000 training images: ``mnist_images``).

The ``.gz`` files are read directly (gzip + big-endian IDX header: magic 2051 for images, 2049 for labels)
after their sha256 is checked; a missing file is downloaded from the official URL when there is internet.
Splits follow the official data script of DeepMind's ``mnist-cluttered`` (``download_mnist.lua``): train = the
first 50,000 training images, valid = the last 10,000, test = the 10,000 t10k images.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from repro.data import DataError, data_root, fetch
from repro.data.modules import EpochBatchesDataModule

URL = "http://yann.lecun.com/exdb/mnist/"
FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
TRAIN_SIZE = 50_000


def mnist_path(name: str, root: Path | None = None) -> Path:
    return (root or data_root()) / "mnist" / name


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file's array (uint8); the header must carry ``magic`` (2051 images, 2049 labels)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(
            f"{path} is not a readable gzip file ({err}); delete it and download {URL}{path.name}"
        ) from err
    header = np.frombuffer(raw[:4], dtype=">u4")[0] if len(raw) >= 4 else None
    if header != magic:
        raise DataError(f"{path}: IDX magic number {header}, expected {magic}; delete it and download {URL}")
    ndim = magic - 2048
    shape = tuple(int(d) for d in np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">u4"))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != np.prod(shape):
        raise DataError(f"{path}: {data.size} bytes of data for shape {shape}; the file is truncated")
    return data.reshape(shape)


def load_mnist(root: Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train', 'valid', 'test'}: (images N × 28 × 28 uint8, labels N int64), checksums verified."""
    paths = {name: fetch(mnist_path(name, root), sha, URL + name) for name, sha in FILES.items()}
    train_x = read_idx(paths["train-images-idx3-ubyte.gz"], IMAGE_MAGIC)
    train_y = read_idx(paths["train-labels-idx1-ubyte.gz"], LABEL_MAGIC).astype(np.int64)
    test_x = read_idx(paths["t10k-images-idx3-ubyte.gz"], IMAGE_MAGIC)
    test_y = read_idx(paths["t10k-labels-idx1-ubyte.gz"], LABEL_MAGIC).astype(np.int64)
    return {
        "train": (train_x[:TRAIN_SIZE], train_y[:TRAIN_SIZE]),
        "valid": (train_x[TRAIN_SIZE:], train_y[TRAIN_SIZE:]),
        "test": (test_x, test_y),
    }


def mnist_images(split: str, root: Path | None = None) -> np.ndarray:
    """Every image of one original file, N × 28 × 28 uint8 (checksum verified): ``train`` (all 60,000
    training images, unsplit) or ``test`` (the 10,000 t10k images)."""
    names = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}
    if split not in names:
        raise ValueError(f"MNIST split must be train or test, not {split!r}")
    name = names[split]
    return read_idx(fetch(mnist_path(name, root), FILES[name], URL + name), IMAGE_MAGIC)


def mnist_files(root: Path | None = None) -> list[Path]:
    """The four files (what a run record's data checksums list)."""
    return [mnist_path(name, root) for name in FILES]


def fetch_mnist(root: Path | None = None) -> None:
    """Verify the four files, downloading any that is missing (a data module's ``prepare_data``)."""
    for name, sha in FILES.items():
        fetch(mnist_path(name, root), sha, URL + name)


class MNISTDataModule(EpochBatchesDataModule):
    """The base of the data modules that build their batches from MNIST digits (RAM's canvases, the captioned
    scenes): the record keeps the four files' sha256, ``prepare_data`` fetches missing ones, and
    ``mnist_splits()`` reads the splits, cut to ``hparams.limit`` digits each (smoke tests)."""

    def data_files(self) -> list[Path]:
        return mnist_files()

    def prepare_data(self):
        fetch_mnist()

    def mnist_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        limit = self.hparams.limit
        return {split: (x[:limit], y[:limit]) for split, (x, y) in load_mnist().items()}
