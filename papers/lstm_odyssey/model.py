"""Greff et al.'s polyphonic-music model: one LSTM layer (vanilla or one of the eight variants,
``repro.lstm``) and a sigmoid output layer of 88 independent keys predicting the next frame of a JSB
chorale (spec §2-3).

The loss of a predicted frame is the binary cross-entropy summed over the 88 keys; the metric is its mean over
every predicted frame of a split, frames pooled across chorales, in nats (spec §6: the Boulanger-Lewandowski
convention). Training: SGD with Nesterov momentum on whole chorales (full BPTT), early stopping on the
validation NLL, and the test scores the weights of the best validation epoch.

Two switches give the paper's random search (``search.py``) the scale its hyperparameter ranges were drawn
for (spec §4): ``loss_reduction="sum"`` trains on the NLL summed over the batch's predicted frames (the
paper's per-chorale updates minimise a chorale's summed loss; with a batch of 8 chorales one step moves the
weights as far as 8 per-chorale steps would, to first order), and ``momentum_scaled_lr`` multiplies the
learning rate by (1 - momentum) (spec §4, [unverified]), so that a step's size does not grow as
1/(1 - momentum) over the searched momenta 0..0.99. The fixed-point experiments keep the defaults (mean over
frames, lr as given).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torchmetrics import SumMetric

from papers.lstm_odyssey.data import KEYS
from repro.callbacks import BestWeights
from repro.lstm import LSTMLayer, variant


class OdysseyModule(L.LightningModule):
    """Args:
    variant: vanilla, NIG, NFG, NOG, NIAF, NOAF, NP, CIFG or FGR (spec §3).
    hidden_size: LSTM blocks N.
    lr, momentum: SGD with Nesterov momentum (momentum 0: plain SGD).
    init_scale: every weight uniform in ±init_scale (the fomorians port's 0.1; the paper's is not recorded).
    patience: epochs without a better validation NLL before training stops.
    loss_reduction: what a training step minimises: "frame", the NLL per predicted frame (mean over the
        batch's frames), or "sum", the NLL summed over them (the paper's per-chorale loss at batch 1).
    momentum_scaled_lr: the step uses lr * (1 - momentum) (the paper's rescaling, spec §4 [unverified]).
    """

    def __init__(
        self,
        variant: str = "vanilla",
        hidden_size: int = 100,
        lr: float = 1e-3,
        momentum: float = 0.9,
        init_scale: float = 0.1,
        patience: int = 5,
        loss_reduction: str = "frame",
        momentum_scaled_lr: bool = False,
    ):
        super().__init__()
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(
                f"model.loss_reduction must be one of {', '.join(LOSS_REDUCTIONS)}, not {loss_reduction!r}"
            )
        self.save_hyperparameters()
        self.lstm = LSTMLayer(KEYS, hidden_size, variant_config(variant))
        self.readout = nn.Linear(hidden_size, KEYS)
        with torch.no_grad():
            self.lstm.reset_parameters(init_scale)
            for p in self.readout.parameters():
                p.uniform_(-init_scale, init_scale)
        # A NaN loss must make the NLL NaN: SumMetric's default drops NaN values, which scores a model whose
        # weights are NaN at 0 nats (the best possible) instead of marking it diverged.
        self.nll = SumMetric(nan_strategy="disable")
        self.frames = SumMetric()
        self.best = BestWeights("val/nll", mode="min")

    def configure_callbacks(self):
        return [EarlyStopping("val/nll", patience=self.hparams.patience, mode="min"), self.best]

    def configure_optimizers(self):
        hp = self.hparams
        lr = hp.lr * (1 - hp.momentum) if hp.momentum_scaled_lr else hp.lr
        return torch.optim.SGD(self.parameters(), lr=lr, momentum=hp.momentum, nesterov=hp.momentum > 0)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of frame t + 1 for every input frame t (``T × B × 88``)."""
        outputs, _, _ = self.lstm(inputs)
        return self.readout(outputs)

    def frame_nll(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed NLL (nats) of the batch's predicted frames, and how many frames that is."""
        bce = F.binary_cross_entropy_with_logits(self(batch["inputs"]), batch["targets"], reduction="none")
        return (bce.sum(-1) * batch["mask"]).sum(), batch["mask"].sum()

    def training_step(self, batch, batch_idx):
        nll, frames = self.frame_nll(batch)
        self.log("train/nll", nll / frames, prog_bar=True, batch_size=int(frames))
        world = self.trainer.world_size
        # DDP averages the ranks' gradients: scaled so, a step is the single-process step on the whole batch.
        if self.hparams.loss_reduction == "sum":
            return nll * world
        if world == 1:
            return nll / frames
        return nll * world / self.trainer.strategy.reduce(frames.detach(), reduce_op="sum")

    def evaluate(self, batch):
        nll, frames = self.frame_nll(batch)
        self.nll.update(nll)
        self.frames.update(frames)

    def pooled(self) -> float:
        value = float(self.nll.compute() / self.frames.compute())
        self.nll.reset()
        self.frames.reset()
        return value

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch)

    def on_validation_epoch_end(self):
        self.log("val/nll", self.pooled(), prog_bar=True)

    def test_step(self, batch, batch_idx):
        self.evaluate(batch)

    def on_test_epoch_end(self):
        frames = float(self.frames.compute())
        self.log_dict(
            {
                "test_nll": self.pooled(),
                "test_frames": frames,
                "val_nll": self.best.best,
                "best_epoch": float(self.best.best_epoch if self.best.best_epoch is not None else -1),
                "parameters": float(sum(p.numel() for p in self.parameters())),
            }
        )

    def test_details(self) -> dict:
        return {"val_curve": self.best.history}


def variant_config(name: str):
    """The variants of Greff et al.'s Table/§3 (not the suite's extra configurations)."""
    if name not in VARIANT_NAMES:
        raise ValueError(f"model.variant must be one of {', '.join(VARIANT_NAMES)}, not {name!r}")
    return variant(name)


LOSS_REDUCTIONS = ("frame", "sum")
VARIANT_NAMES = ("vanilla", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR")
