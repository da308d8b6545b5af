"""Lightning callbacks that papers add through ``LightningModule.configure_callbacks``."""

from __future__ import annotations

import copy
import math

from lightning.pytorch.callbacks import Callback


class BestWeights(Callback):
    """Test the weights of the best validation epoch (the protocol of papers that early-stop on validation).

    After each validation the monitored value is compared with the best so far; the module's weights of the
    best epoch are kept in memory and in every checkpoint (so a resumed run tests what an uninterrupted one
    would), and loaded before the test. ``history`` is every epoch's value, for the run record.
    """

    def __init__(self, monitor: str, mode: str = "min"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, not {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.weights: dict | None = None
        self.history: list[dict] = []

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        self.history.append({"epoch": trainer.current_epoch, self.monitor: value})
        if value < self.best if self.mode == "min" else value > self.best:
            self.best, self.best_epoch = value, trainer.current_epoch
            self.weights = copy.deepcopy(pl_module.state_dict())

    def on_test_start(self, trainer, pl_module):
        if self.weights is not None:
            pl_module.load_state_dict(self.weights)

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "weights": self.weights,
            "history": self.history,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.best_epoch = state_dict["best"], state_dict["best_epoch"]
        self.weights, self.history = state_dict["weights"], state_dict["history"]
