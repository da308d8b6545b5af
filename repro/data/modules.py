"""What a LightningDataModule that serves its own batches needs to know about the run it feeds."""

from __future__ import annotations

import lightning as L


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
