"""JSB Chorales as 88-key piano rolls for next-frame prediction (spec §2).

The data: Boulanger-Lewandowski et al.'s (2012) quarter-note piano rolls of 382 Bach chorales, split
229 / 76 / 77 (train / valid / test), read from ``JSB_Chorales.pickle`` (a dict of lists of sequences of
frames, each a tuple of MIDI numbers). A frame is 88 binary keys, index = MIDI pitch − 21. Each chorale is
one sequence: frame t is the input that predicts frame t + 1, so a chorale of T frames has T − 1 predicted
frames (the spec's recommendation: the first frame is never predicted; the test set has 4,725 − 77 = 4,648
predicted frames).

Batches are padded to the longest chorale in the batch, time-major (``T × B × 88``), with a mask of the
predicted frames. Training batches come in a fresh seeded order each epoch; evaluation batches keep the file's
order. Optional Gaussian input noise (the paper's searched hyperparameter) is added to training inputs only.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from repro.data import DataError, data_root, fetch
from repro.data.modules import EpochBatchesDataModule

FILE = "JSB_Chorales.pickle"
SHA256 = "69dc4c3e52800959ac0ab3b82aa3e5f55285ce64f1705acb3e3a8ef77a5c051c"
URL = "http://www-etud.iro.umontreal.ca/~boulanni/JSB%20Chorales.pickle"
LOWEST, KEYS = 21, 88  # MIDI 21..108
SPLIT_SIZES = {"train": 229, "valid": 76, "test": 77}


def pickle_path(root: Path | None = None) -> Path:
    return (root or data_root()) / "jsb_chorales" / FILE


def load_chorales(root: Path | None = None) -> dict[str, list[np.ndarray]]:
    """{'train', 'valid', 'test'}: lists of ``T × 88`` uint8 piano rolls, after checking the file's sha256."""
    path = fetch(pickle_path(root), SHA256, URL)
    try:
        with path.open("rb") as f:
            raw = pickle.load(f, encoding="latin1")
        parts = {name: [piano_roll(seq) for seq in raw[name]] for name in SPLIT_SIZES}
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as err:
        raise DataError(f"{path} is not the JSB Chorales pickle ({err}); delete it, download {URL}") from err
    sizes = {name: len(seqs) for name, seqs in parts.items()}
    if sizes != SPLIT_SIZES:
        raise DataError(f"{path}: split sizes {sizes}, expected {SPLIT_SIZES}")
    return parts


def piano_roll(frames) -> np.ndarray:
    roll = np.zeros((len(frames), KEYS), dtype=np.uint8)
    for t, notes in enumerate(frames):
        for pitch in notes:
            if not LOWEST <= int(pitch) < LOWEST + KEYS:
                raise ValueError(f"MIDI pitch {pitch} is outside the 88 keys")
            roll[t, int(pitch) - LOWEST] = 1
    return roll


def collate(rolls: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Inputs frames 0..T-2 and targets frames 1..T-1 of each chorale, padded, time-major, with a mask."""
    steps = max(len(r) for r in rolls) - 1
    inputs = torch.zeros(steps, len(rolls), KEYS)
    targets = torch.zeros(steps, len(rolls), KEYS)
    mask = torch.zeros(steps, len(rolls))
    for b, roll in enumerate(rolls):
        frames = torch.from_numpy(roll.astype(np.float32))
        inputs[: len(roll) - 1, b] = frames[:-1]
        targets[: len(roll) - 1, b] = frames[1:]
        mask[: len(roll) - 1, b] = 1.0
    return {"inputs": inputs, "targets": targets, "mask": mask}


class JSBData(EpochBatchesDataModule):
    """JSB Chorales piano rolls, in batches of whole chorales.

    Args:
        batch_size: chorales per training batch (global: divided among DDP ranks). 1 is the paper's
            per-sequence updates.
        eval_batch_size: chorales per evaluation batch (memory only: the sum is the same).
        input_noise: std of Gaussian noise added to the training inputs (0: none).
        limit: keep only the first this-many chorales of each split (smoke tests).
        seed: seeds the training order and the input noise, per epoch.
    """

    def __init__(
        self,
        batch_size: int = 8,
        eval_batch_size: int = 77,
        input_noise: float = 0.0,
        limit: int | None = None,
        seed: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.parts: dict[str, list[np.ndarray]] = {}

    def data_files(self) -> list[Path]:
        return [pickle_path()]

    def prepare_data(self):
        fetch(pickle_path(), SHA256, URL)

    def setup(self, stage: str | None = None):
        if not self.parts:
            limit = self.hparams.limit
            self.parts = {name: seqs[:limit] for name, seqs in load_chorales().items()}

    def training_batches(self, epoch: int) -> list[dict[str, torch.Tensor]]:
        world, rank = self.world
        hp = self.hparams
        if hp.batch_size % world:
            raise ValueError(f"data.batch_size {hp.batch_size} must be divisible by the {world} devices")
        rng = np.random.default_rng([hp.seed, epoch])
        order = rng.permutation(len(self.parts["train"]))
        noise = torch.Generator().manual_seed(int(rng.integers(2**62)))
        batches = []
        full = len(order) - len(order) % world  # every rank takes a step on every batch
        for start in range(0, full, hp.batch_size):
            chosen = order[start : start + hp.batch_size]
            chosen = chosen[: len(chosen) - len(chosen) % world]
            batch = collate([self.parts["train"][i] for i in chosen[rank::world]])
            if hp.input_noise:
                batch["inputs"] += hp.input_noise * torch.randn(batch["inputs"].shape, generator=noise)
            batches.append(batch)
        return batches

    def evaluation_batches(self, part: str) -> list[dict[str, torch.Tensor]]:
        world, rank = self.world
        seqs = self.parts[part][rank::world]
        size = self.hparams.eval_batch_size
        return [collate(seqs[i : i + size]) for i in range(0, len(seqs), size)]
