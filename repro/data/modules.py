"""What a LightningDataModule that serves its own batches needs to know about the run it feeds."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, IterableDataset


class EachEpoch(IterableDataset):
    """Batches built anew each time a loader is iterated (once per epoch): a fresh order, fresh data or a
    schedule that depends on the epoch. ``build()`` returns the batches; there is no length, as their number
    may change from epoch to epoch. Serve it with ``DataLoader(EachEpoch(build), batch_size=None)``."""

    def __init__(self, build):
        self.build = build

    def __iter__(self):
        yield from self.build()


class RunAwareDataModule(L.LightningDataModule):
    """A data module whose loaders depend on the epoch (fresh data or order per epoch) and on the DDP rank."""

    @property
    def world(self) -> tuple[int, int]:
        """(world size, this process's rank); (1, 0) outside a Trainer."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    @property
    def epoch(self) -> int:
        """The epoch whose data the training loader serves. Lightning builds (and prefetches from) the first
        training iterator of a resumed run before it moves ``current_epoch`` on, so this reads the fit loop's
        count of processed epochs, the number Lightning itself hands to samplers."""
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_progress.current.processed


class EpochBatchesDataModule(RunAwareDataModule):
    """A run-aware data module whose subclass builds whole batches: ``training_batches(epoch)`` (this rank's
    batches of that epoch) and ``evaluation_batches(split)`` for the splits ``valid`` and ``test``. The three
    loaders serve them, rebuilt each time an epoch starts."""

    def train_dataloader(self):
        return DataLoader(EachEpoch(lambda: self.training_batches(self.epoch)), batch_size=None)

    def val_dataloader(self):
        return DataLoader(EachEpoch(lambda: self.evaluation_batches("valid")), batch_size=None)

    def test_dataloader(self):
        return DataLoader(EachEpoch(lambda: self.evaluation_batches("test")), batch_size=None)
