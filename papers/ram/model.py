"""The Recurrent Attention Model (Mnih et al. 2014, spec §3) and the paper's feed-forward baselines.

RAM looks at an image through N glimpses. At step t the glimpse sensor ρ(x, l) cuts k square patches centred
at location l (the first g × g, each next one twice as wide), average-pools each to g × g and concatenates
them. The glimpse network mixes what and where::

    h_g = ReLU(W_g ρ + b),   h_l = ReLU(W_l l + b),   g_t = ReLU(W_hg h_g + W_hl h_l + b)      (128, 128, 256)

the core is a ReLU RNN of 256 units, ``h_t = ReLU(W_h h_{t-1} + W_c g_t + b)``, and the location network
emits the mean of a fixed-variance Gaussian, ``μ_t = tanh(W_μ h_t + b)``, from which the next location
``l_t ~ N(μ_t, σ² I)`` is drawn (then clipped to [−1, 1]). The first location is random (it comes with the
example). After the last glimpse the action network classifies, ``softmax(W_a h_N + b)``.

The hybrid loss: cross-entropy of the classifier, back-propagated through the core and the glimpse network;
REINFORCE for the location policy, ``−Σ_t (R − b_t) log N(l_t; μ_t, σ²)`` with reward R = 1 when the final
prediction is right, and a learned baseline ``b_t = W_b h_t + b`` trained by its own squared error towards R.
Three detaches make the estimator the paper's (spec §3, pitfalls 3-4): the sampled l_t (no gradient through
the sampling or through the glimpse's dependence on l_t, so the classification loss never reaches the location
network), b_t inside the REINFORCE term, and h_t at the baseline's input (the baseline only reduces variance;
it does not shape the features). ``locator_detach_core`` also cuts REINFORCE off from the core (kevinzakka's
port).

Evaluation scores the weights of the best validation epoch on the fixed test canvases with the locator
deterministic (l_t = μ_t, the first location the example's seeded draw): ``test_error``, the number the
paper's values are compared with. ``eval_rollouts`` M > 0 adds ``test_error_sampled`` (one stochastic
rollout) and ``test_error_mc`` (class probabilities averaged over M rollouts: shown, never compared with
the paper).

Speed: at the paper's batch of 20 a step is hundreds of small operations, so ``rollout`` and ``hybrid_loss``
run by default as two autograd Functions (``_FastRollout``, ``_FastLoss``) whose time loops and hand-written
backwards are TorchScript: the same kernels in the same order as the module-by-module path
(``reference=True``), so values, losses and every gradient are equal bit for bit (tests/test_ram.py), the
detaches above included. ``repro bench ram`` times both side by side.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import SumMetric

from repro.callbacks import BestWeights
from repro.config import ConfigError

CLASSES = 10
EXAMPLE_PATHS = 16  # test canvases whose glimpse paths the record keeps, for the figures


def annealed(epoch: int, epochs: int) -> float:
    """The paper's linear annealing: the fraction of the initial rate epoch ``epoch`` trains at, over a run of
    ``epochs`` epochs (the last at 1 / epochs, then 0)."""
    return max(0.0, 1 - epoch / epochs)


class ImageClassifier(L.LightningModule):
    """What RAM and the baselines share: the optimiser and its linear decay, test error on the validation and
    test canvases in %, and testing the best validation epoch.

    Args:
        optimizer: ``sgd`` (momentum, the paper's) or ``adam``.
        lr: initial learning rate; with ``lr_decay`` linear it falls linearly to 0 over ``decay_epochs``
            epochs (default: the run's ``trainer.max_epochs``; a run stopped early and resumed must name it).
        momentum: SGD momentum (ignored by Adam).
    """

    # The bench's switch (papers/ram/bench.py), never a config's: log every training step's values with one
    # self.log call each, as the code did up to 06ae4b4, so that ``repro bench ram`` can time that loop
    # beside this one. Training logs through ``log_training``'s window.
    log_every_step = False

    def __init__(
        self,
        optimizer: str = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        lr_decay: str = "linear",
        decay_epochs: int | None = None,
    ):
        super().__init__()
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"model.optimizer must be sgd or adam, not {optimizer!r}")
        if lr_decay not in ("linear", "none"):
            raise ValueError(f"model.lr_decay must be linear or none, not {lr_decay!r}")
        self.errors = SumMetric()
        self.seen = SumMetric()
        self.best = BestWeights("val/error", mode="min")
        self._window: torch.Tensor | None = None  # log_training's sums since its last log point
        self._window_steps = 0
        self._window_names: tuple = ()  # the values' names, the batch size and the progress bar's name

    def configure_callbacks(self):
        return [self.best]

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "adam":
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr)
        else:
            # foreach: one call per update over all tensors (the per-tensor loop's kernels, so the same
            # numbers; tested): at RAM's batch of 20 the loop's Python overhead is a visible part of a step.
            optimizer = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, foreach=True)
        if hp.lr_decay == "none":
            return optimizer
        epochs = hp.decay_epochs or self.trainer.max_epochs
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: annealed(e, epochs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    def on_train_epoch_start(self):
        self._window, self._window_steps = None, 0

    def log_training(self, values: dict[str, torch.Tensor], batch_size: int, prog_bar: str) -> None:
        """Log the training step's ``values`` (scalar tensors) as ``train/<name>``, ``prog_bar`` on the
        progress bar too.

        Lightning's loggers write a step's values only every ``trainer.log_every_n_steps`` steps, but each
        ``self.log`` call costs Lightning's per-value bookkeeping on every step, which at RAM's batch of 20 is
        a large part of a step (``repro bench ram`` times the two side by side). So the values are
        summed, detached and on their device (no sync), and ``on_train_batch_end`` logs them once at each
        step the loggers write: **the mean over the steps since the previous log point** (or since the
        epoch's start, so that a run resumed from an epoch's checkpoint logs what an uninterrupted one does),
        where the code up to 06ae4b4 logged that one step's values. The weights do not depend on it
        (tests/test_ram.py)."""
        if self.log_every_step:  # the bench's old loop: one call per value and step, as 06ae4b4
            self._log_values(values, batch_size, prog_bar)
            return
        stacked = torch.stack([v.detach() for v in values.values()])
        if self._window is None:
            self._window, self._window_steps = stacked, 1
            self._window_names = (tuple(values), batch_size, prog_bar)
        else:
            self._window.add_(stacked)
            self._window_steps += 1

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # Lightning's loggers write this step's values when its logger connector's should_update_logs holds:
        # the count of optimizer steps (this one's made) is a multiple of log_every_n_steps, or the trainer
        # is to stop (the callbacks' on_train_batch_end, which may ask it, ran before this one).
        every = self.trainer.log_every_n_steps
        if self._window is None or not every or (self.global_step % every and not self.trainer.should_stop):
            return
        names, batch_size, prog_bar = self._window_names
        means = dict(zip(names, self._window / self._window_steps, strict=True))
        self._log_values(means, batch_size, prog_bar)
        self._window, self._window_steps = None, 0

    def _log_values(self, values: dict[str, torch.Tensor], batch_size: int, prog_bar: str) -> None:
        rest = {f"train/{k}": v for k, v in values.items() if k != prog_bar}
        if rest:
            self.log_dict(rest, batch_size=batch_size)
        self.log(f"train/{prog_bar}", values[prog_bar], prog_bar=True, batch_size=batch_size)

    def error_percent(self) -> float:
        value = 100 * float(self.errors.compute() / self.seen.compute())
        self.errors.reset()
        self.seen.reset()
        return value

    @staticmethod
    def count(logits: torch.Tensor, labels: torch.Tensor, errors: SumMetric, seen: SumMetric | None = None):
        errors.update((logits.argmax(-1) != labels).sum().float())
        if seen is not None:
            seen.update(torch.tensor(float(len(labels)), device=labels.device))

    def validation_step(self, batch, batch_idx):
        self.count(self.classify(batch), batch["labels"], self.errors, self.seen)

    def on_validation_epoch_end(self):
        self.log("val/error", self.error_percent(), prog_bar=True)

    def test_step(self, batch, batch_idx):
        self.count(self.classify(batch), batch["labels"], self.errors, self.seen)

    def on_test_epoch_end(self):
        self.log_dict(
            {
                "test_images": float(self.seen.compute()),
                "test_error": self.error_percent(),
                "val_error": self.best.best,
                "best_epoch": float(self.best.best_epoch if self.best.best_epoch is not None else -1),
                "parameters": float(sum(p.numel() for p in self.parameters())),
            }
        )

    def test_details(self) -> dict:
        return {"val_curve": self.best.history}


class GlimpseSensor(nn.Module):
    """ρ(x, l): ``scales`` square patches centred at l, widths size · 2^s, each average-pooled to size × size.

    A location is (x, y) in [−1, 1]², (−1, −1) the top-left corner; it maps to the pixel
    ``floor((reach · l + 1) / 2 · W)``: with ``reach`` 1 (spec §3's decision) l = ±1 is the canvas's edge,
    with ``reach`` < 1 the glimpse centres stay in the middle ``reach · W`` pixels (the location-to-pixel
    scale the paper does not report, spec pitfall 2). Pixels outside the image are 0. Batched: one gather of
    the largest patch for the whole batch, then each scale is a centred crop of it pooled by 2^s.
    """

    def __init__(self, size: int, scales: int, reach: float = 1.0):
        super().__init__()
        if size < 1 or scales < 1:
            raise ValueError(f"glimpse size and scales must be >= 1, not {size} and {scales}")
        if not 0 < reach <= 1:
            raise ValueError(f"the location reach must be in (0, 1], not {reach}")
        self.size, self.scales, self.reach = size, scales, reach
        self.widest = size * 2 ** (scales - 1)

    @property
    def features(self) -> int:
        return self.scales * self.size * self.size

    def largest_patch(self, images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        """B × widest × widest: the widest patch around each location, zeros where it leaves the image."""
        batch, _, height, width = images.shape
        w = self.widest
        # A NaN location (weights gone NaN) looks at the centre instead of indexing garbage: the NaN loss that
        # comes with it stops the run with the harness's message.
        locations = torch.nan_to_num(locations, nan=0.0).clamp(-1, 1) * self.reach
        centre = torch.floor((locations + 1) / 2 * torch.tensor([width, height]).to(locations)).long()
        span = torch.arange(w, device=images.device) - w // 2
        rows, cols = centre[:, 1, None] + span, centre[:, 0, None] + span  # B × w each
        # One flat gather inside the image, zeros where the patch leaves it: no padded copy of every image per
        # glimpse, and torch.gather on flat indices is ~1.7x faster on CPU than the 3-d advanced index.
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        flat = rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]
        patch = torch.gather(images.reshape(batch, -1), 1, flat.view(batch, -1)).view(batch, w, w)
        return patch * inside

    def forward(self, images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        patch = self.largest_patch(images, locations).unsqueeze(1)
        views = []
        for s in range(self.scales):
            width, offset = self.size * 2**s, (self.widest - self.size * 2**s) // 2
            crop = patch[:, :, offset : offset + width, offset : offset + width]
            views.append(F.avg_pool2d(crop, 2**s).flatten(1))
        return torch.cat(views, dim=1)

    def prepare(self, images: torch.Tensor) -> PaddedImages:
        """Once per rollout: the images zero-padded so that every widest patch lies inside them, as a view of
        all their patches, for ``look``."""
        _, _, height, width = images.shape
        w = self.widest
        # A centre c runs over 0..W (l = 1 maps to W, just outside); its patch, rows c - w//2 to
        # c + w - 1 - w//2, starts at the padded image's row (column) c, after w//2 zeros.
        padded = F.pad(images[:, 0], (w // 2, w - w // 2, w // 2, w - w // 2))
        patches = padded.unfold(1, w, 1).unfold(2, w, 1)  # B × (H + 1) × (W + 1) × w × w, a view
        half_scale = torch.tensor([width, height]).to(images) / 2
        return PaddedImages(patches, torch.arange(len(images), device=images.device), half_scale)

    def look(self, prepared: PaddedImages, locations: torch.Tensor) -> torch.Tensor:
        """``forward`` on ``prepare``'s images, bit for bit (for finite images >= 0: a pixel times the old
        outside-mask's 0 is +0, as the padding is): one indexed copy of the widest patches instead of ~20
        small ops."""
        patches, batch, half_scale = prepared
        return _look(patches, batch, half_scale, locations, self.reach, self.size, self.scales)


@torch.jit.script
def _look(
    patches: torch.Tensor,
    batch: torch.Tensor,
    half_scale: torch.Tensor,
    locations: torch.Tensor,
    reach: float,
    size: int,
    scales: int,
) -> torch.Tensor:
    """GlimpseSensor.look (TorchScript: the fast rollout's loop calls it too)."""
    locations = torch.nan_to_num(locations, nan=0.0).clamp(-1, 1) * reach  # reach 1: the same floats
    # floor((l + 1) / 2 · W) in two ops fewer, the same numbers: halving is exact, so (l + 1) · (W / 2) rounds
    # the same real number; and truncation (long) is floor for these values, all >= 0.
    x, y = ((locations + 1) * half_scale).long().unbind(1)
    patch = patches[batch, y, x]  # B × widest × widest
    widest = patch.shape[-1]
    views: list[torch.Tensor] = []
    for s in range(scales):
        width = size * (1 << s)
        offset = (widest - width) // 2
        crop = patch[:, offset : offset + width, offset : offset + width]
        # Pooling by 1 is x / 1, a copy: skipped (the reference pools; the values are the same).
        views.append((F.avg_pool2d(crop, 1 << s) if s > 0 else crop).flatten(1))
    return torch.cat(views, 1) if len(views) > 1 else views[0]


class PaddedImages(NamedTuple):
    patches: torch.Tensor  # B × (H + 1) × (W + 1) × w × w: the widest patch at each centre, a view
    batch: torch.Tensor  # 0..B-1
    half_scale: torch.Tensor  # [W, H] / 2: (l + 1) times it is the pixel


class Rollout(NamedTuple):
    logits: torch.Tensor  # B × 10, from the last step
    log_probs: torch.Tensor  # B × (N−1): log N(l_t; μ_t, σ²) of the sampled locations (0 when deterministic)
    baselines: torch.Tensor  # B × (N−1)
    locations: torch.Tensor  # B × N × 2: where each glimpse looked


class RAMModule(ImageClassifier):
    """Args:
    glimpses: N, glimpses per image (the classification happens after the last).
    glimpse_size: g, the narrowest patch's width (8 for 28×28, 12 for 60×60 and 100×100).
    scales: k, patches per glimpse, each twice as wide as the previous.
    glimpse_hidden, location_hidden, glimpse_features, hidden: the widths 128, 128, 256 and 256 of §3.
    location_std: σ of the location policy (unreported in the paper; spec pitfall 2).
    location_reach: how far l = ±1 looks, as a fraction of the half canvas (GlimpseSensor; 1: to the edge).
    locator_detach_core: REINFORCE trains the location network only (default: it trains the core too, as in
        the paper).
    eval_rollouts: M; > 0 adds the one-rollout and M-rollout-averaged stochastic test errors.
    seed: seeds the location policy's exploration noise, per (seed, epoch, rank): a resumed run draws the
        noise an uninterrupted one would (the global stream is not restored from a checkpoint).
    optimizer, lr, momentum, lr_decay, decay_epochs: see ImageClassifier.
    """

    def __init__(
        self,
        glimpses: int = 6,
        glimpse_size: int = 8,
        scales: int = 1,
        glimpse_hidden: int = 128,
        location_hidden: int = 128,
        glimpse_features: int = 256,
        hidden: int = 256,
        location_std: float = 0.1,
        location_reach: float = 1.0,
        locator_detach_core: bool = False,
        eval_rollouts: int = 0,
        seed: int = 1,
        optimizer: str = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        lr_decay: str = "linear",
        decay_epochs: int | None = None,
    ):
        super().__init__(optimizer, lr, momentum, lr_decay, decay_epochs)
        if glimpses < 1:
            raise ValueError(f"model.glimpses must be >= 1, not {glimpses}")
        if location_std <= 0:
            raise ValueError(f"model.location_std must be > 0, not {location_std}")
        if not 0 < location_reach <= 1:
            raise ValueError(f"model.location_reach must be in (0, 1], not {location_reach}")
        self.save_hyperparameters()
        self.sensor = GlimpseSensor(glimpse_size, scales, location_reach)
        self.what = nn.Linear(self.sensor.features, glimpse_hidden)
        self.where = nn.Linear(2, location_hidden)
        self.what_out = nn.Linear(glimpse_hidden, glimpse_features)
        self.where_out = nn.Linear(location_hidden, glimpse_features)
        self.core_hidden = nn.Linear(hidden, hidden)
        self.core_input = nn.Linear(glimpse_features, hidden)
        self.locator = nn.Linear(hidden, 2)
        self.baseline = nn.Linear(hidden, 1)
        self.classifier = nn.Linear(hidden, CLASSES)
        self.sampled_errors, self.mc_errors = SumMetric(), SumMetric()
        self.sampled_seen = SumMetric()
        self.example_paths: dict | None = None
        self.exploration: torch.Generator | None = None

    @classmethod
    def check_config(cls, config: dict) -> None:
        model, data = config["model"]["init_args"], config["data"]["init_args"]
        widest = model["glimpse_size"] * 2 ** (model["scales"] - 1)
        if widest > data["canvas"]:
            raise ConfigError(
                f"the widest glimpse patch ({model['glimpse_size']} x 2^{model['scales'] - 1} = {widest} "
                f"pixels) is wider than the {data['canvas']}-pixel canvas: lower model.scales or "
                f"model.glimpse_size"
            )

    def glimpse(self, images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        what = F.relu(self.what(self.sensor(images, locations)))
        where = F.relu(self.where(locations))
        return F.relu(self.what_out(what) + self.where_out(where))

    def rollout(
        self, images: torch.Tensor, start: torch.Tensor, sample: bool, generator=None, reference: bool = False
    ) -> Rollout:
        """Glimpse N times from ``start``; ``sample``: draw each next location from the policy (training),
        else look at its mean (deterministic evaluation).

        Two paths, equal bit for bit (values and every parameter's gradient; tests/test_ram.py): ``reference``
        runs the equations module by module under autograd; the default runs them as one autograd Function
        with a hand-written backward (``_FastRollout``), ~1.5x the images per second at batch 20
        (``repro bench ram``). Images or locations that need a gradient take the reference path."""
        if not reference and not images.requires_grad and not start.requires_grad:
            return _FastRollout.run(self, images, start, sample, generator)
        return self.reference_rollout(images, start, sample, generator)

    def reference_rollout(
        self, images: torch.Tensor, start: torch.Tensor, sample: bool, generator=None
    ) -> Rollout:
        hp = self.hparams
        h = images.new_zeros(len(images), hp.hidden)
        location = start
        log_probs, baselines, locations = [], [], [start]
        for t in range(hp.glimpses):
            h = F.relu(self.core_hidden(h) + self.core_input(self.glimpse(images, location)))
            if t == hp.glimpses - 1:
                break
            mean = torch.tanh(self.locator(h.detach() if hp.locator_detach_core else h))
            if sample:
                noise = torch.randn(mean.shape, device=mean.device, generator=generator)
                drawn = (mean + hp.location_std * noise).detach()
                log_probs.append(gaussian_log_prob(drawn, mean, hp.location_std))
                location = drawn.clamp(-1, 1)
            else:
                log_probs.append(torch.zeros(len(images), device=images.device))
                location = mean.detach()
            baselines.append(self.baseline(h.detach()).squeeze(-1))
            locations.append(location)
        empty = images.new_zeros(len(images), 0)
        return Rollout(
            self.classifier(h),
            torch.stack(log_probs, 1) if log_probs else empty,
            torch.stack(baselines, 1) if baselines else empty,
            torch.stack(locations, 1),
        )

    def hybrid_loss(
        self, rollout: Rollout, labels: torch.Tensor, reference: bool = False
    ) -> dict[str, torch.Tensor]:
        """ce + reinforce + baseline (module docstring). ``reference``: under autograd op by op; the default
        is one autograd Function with the same values and gradients bit for bit (``_FastLoss``)."""
        reward = (rollout.logits.argmax(-1) == labels).float()
        if reference or rollout.log_probs.shape[1] == 0 or not rollout.log_probs.requires_grad:
            advantage = reward[:, None] - rollout.baselines.detach()
            parts = {
                "ce": F.cross_entropy(rollout.logits, labels),
                "reinforce": -(advantage * rollout.log_probs).sum(1).mean(),
                "baseline": (rollout.baselines - reward[:, None]).pow(2).sum(1).mean(),
            }
            parts["loss"] = parts["ce"] + parts["reinforce"] + parts["baseline"]
        else:
            ce, reinforce, baseline, loss = _FastLoss.apply(
                rollout.logits, rollout.log_probs, rollout.baselines, labels, reward
            )
            parts = {"ce": ce, "reinforce": reinforce, "baseline": baseline, "loss": loss}
        parts["reward"] = reward.mean()
        return parts

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        key = [self.hparams.seed, self.current_epoch, self.global_rank]
        seed = int(np.random.SeedSequence(key).generate_state(1)[0])
        self.exploration = torch.Generator(device=self.device).manual_seed(seed)

    def training_step(self, batch, batch_idx):
        rollout = self.rollout(batch["images"], batch["start"], sample=True, generator=self.exploration)
        parts = self.hybrid_loss(rollout, batch["labels"])
        self.log_training(parts, len(batch["labels"]), prog_bar="reward")
        return parts["loss"]

    def classify(self, batch) -> torch.Tensor:
        return self.rollout(batch["images"], batch["start"], sample=False).logits

    def test_step(self, batch, batch_idx):
        deterministic = self.rollout(batch["images"], batch["start"], sample=False)
        self.count(deterministic.logits, batch["labels"], self.errors, self.seen)
        if batch_idx == 0 and self.example_paths is None:
            k = EXAMPLE_PATHS
            self.example_paths = {
                "index": list(range(min(k, len(batch["labels"])))),
                "labels": batch["labels"][:k].tolist(),
                "predictions": deterministic.logits[:k].argmax(-1).tolist(),
                "locations": deterministic.locations[:k].tolist(),
            }
        rollouts = self.hparams.eval_rollouts
        if rollouts:
            # Seeded per batch: the stochastic errors are the same on every evaluation of the same weights.
            generator = torch.Generator(device=self.device).manual_seed(batch_idx)
            probs = []
            for _ in range(rollouts):
                logits = self.rollout(
                    batch["images"], batch["start"], sample=True, generator=generator
                ).logits
                probs.append(logits.softmax(-1))
            self.count(probs[0], batch["labels"], self.sampled_errors, self.sampled_seen)
            self.count(torch.stack(probs).mean(0), batch["labels"], self.mc_errors)

    def on_test_epoch_end(self):
        if self.hparams.eval_rollouts:
            seen = float(self.sampled_seen.compute())
            self.log_dict(
                {
                    "test_error_sampled": 100 * float(self.sampled_errors.compute()) / seen,
                    "test_error_mc": 100 * float(self.mc_errors.compute()) / seen,
                }
            )
        super().on_test_epoch_end()

    def test_details(self) -> dict:
        return {**super().test_details(), "glimpse_paths": self.example_paths}


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """log N(x; mean, std² I), summed over the coordinates (B × 2 → B)."""
    return (-((x - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


class _FastRollout(torch.autograd.Function):
    """RAMModule.reference_rollout as one autograd node: the forward runs the same operations on the same
    tensors without recording a graph (TorchScript, ``_rollout_scan``), and the backward
    (``_rollout_backward``) is the chain rule autograd would run, op for op, so the gradients are equal
    bit for bit:

    * a Linear y = x Wᵀ + b (``addmm``) sends back ``g Wᵀᵀ = g.mm(W)`` to x, ``g.t().mm(x)`` to W and ``g``
      summed over the batch to b (autograd's ``mm_mat1/mat2_backward`` and ``sum_to``);
    * ReLU and tanh use autograd's own kernels (``threshold_backward``, ``tanh_backward``);
    * log N(l; μ, σ²) sends (g / 2σ²) · 2(l − μ) to μ (its pow / neg / div / sub chain; each step exact or
      rounded once, as there);
    * a weight used at every step accumulates its steps' gradients from the last step back, the order in
      which autograd's engine reaches them; the zero state's step adds nothing (h_0 = 0 gives W_h's step
      a zero gradient, and its forward product is skipped: b + 0 = b).

    The three detaches are the reference's: nothing flows back through a sampled location (so the
    classification loss never reaches the location network), the baseline's input h_t is cut, and with
    ``locator_detach_core`` so is the locator's. Gradients that autograd would leave as None (a loss part not
    in the backward, e.g. ce alone never touches the locator) stay None.
    """

    LAYERS = ("what", "where", "what_out", "where_out", "core_hidden", "core_input", "locator", "baseline")

    @staticmethod
    def run(module: RAMModule, images, start, sample: bool, generator) -> Rollout:
        params = [
            p for name in (*_FastRollout.LAYERS, "classifier") for p in getattr(module, name).parameters()
        ]
        logits, log_probs, baselines, locations = _FastRollout.apply(
            module.sensor, module.hparams, images, start, sample, generator, *params
        )
        return Rollout(logits, log_probs, baselines, locations)

    @staticmethod
    def forward(ctx, sensor, hp, images, start, sample, generator, *params):
        ctx.set_materialize_grads(False)
        steps, batch = hp.glimpses, len(images)
        # The reference draws each step's noise right after that step's mean; nothing else draws from the
        # generator in between, so drawing the N - 1 (B × 2) tensors first gives the same numbers.
        noises = [
            torch.randn((batch, 2), device=images.device, generator=generator)
            for _ in range(steps - 1 if sample else 0)
        ]
        patches, batch_index, half_scale = sensor.prepare(images)
        transposed = [p.t() if p.dim() == 2 else p for p in params]  # the scan reads Wᵀ, as addmm does
        with torch.jit.optimized_execution(False):  # TorchScript's optimiser would split addmm into mm + add
            saved, outputs = _rollout_scan(
                patches,
                batch_index,
                half_scale,
                sensor.reach,
                sensor.size,
                sensor.scales,
                start,
                noises,
                transposed,
                steps,
                hp.location_std,
                sample,
            )
        logits, log_probs, baselines, locations = outputs
        empty = images.new_zeros(batch, 0)
        log_probs = log_probs if steps > 1 else empty
        baselines = torch.stack(baselines, 1) if baselines else empty.clone()
        locations = torch.stack(locations, 1)
        # What the reference returns without a gradient: locations, and log_probs unless sampled (zeros), and
        # both log_probs and baselines with one glimpse (empty).
        constant = [locations]
        if not sample or steps == 1:
            constant.append(log_probs)
        if steps == 1:
            constant.append(baselines)
        ctx.mark_non_differentiable(*constant)
        ctx.hp, ctx.sample, ctx.steps = hp, sample, saved
        ctx.save_for_backward(*params)
        return logits, log_probs, baselines, locations

    @staticmethod
    def backward(ctx, grad_logits, grad_log_probs, grad_baselines, grad_locations):
        hp = ctx.hp
        with torch.jit.optimized_execution(False):
            grads = _rollout_backward(
                ctx.steps,
                list(ctx.saved_tensors),
                grad_logits,
                grad_log_probs if ctx.sample else None,  # without sampling, log_probs were constant zeros
                grad_baselines,
                hp.location_std,
                hp.locator_detach_core,
            )
        return (None,) * 6 + tuple(grads)


@torch.jit.script
def _rollout_scan(
    patches: torch.Tensor,
    batch: torch.Tensor,
    half_scale: torch.Tensor,
    reach: float,
    size: int,
    scales: int,
    start: torch.Tensor,
    noises: list[torch.Tensor],
    params: list[torch.Tensor],
    steps: int,
    std: float,
    sample: bool,
) -> tuple[
    list[list[torch.Tensor]], tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]
]:
    """_FastRollout's forward: reference_rollout's operations, without autograd (``params`` hold Wᵀ for each
    W, in _FastRollout.LAYERS's order, then the classifier's). Returns what the backward needs per step (rho,
    location, what, where, g, h, and for all but the last step μ and l − μ) and the logits, log-probabilities,
    baselines and locations."""
    w_g, b_g = params[0], params[1]  # what
    w_l, b_l = params[2], params[3]  # where
    w_hg, b_hg = params[4], params[5]  # what_out
    w_hl, b_hl = params[6], params[7]  # where_out
    w_h, b_h = params[8], params[9]  # core_hidden
    w_c, b_c = params[10], params[11]  # core_input
    w_m, b_m = params[12], params[13]  # locator
    w_b, b_b = params[14], params[15]  # baseline
    w_a, b_a = params[16], params[17]  # classifier
    location = start
    h = start  # replaced at the first step
    saved: list[list[torch.Tensor]] = []
    diffs: list[torch.Tensor] = []
    baselines: list[torch.Tensor] = []
    locations: list[torch.Tensor] = [start]
    for t in range(steps):
        rho = _look(patches, batch, half_scale, location, reach, size, scales)
        what = torch.relu(torch.addmm(b_g, rho, w_g))
        where = torch.relu(torch.addmm(b_l, location, w_l))
        g = torch.relu(torch.addmm(b_hg, what, w_hg) + torch.addmm(b_hl, where, w_hl))
        core = torch.addmm(b_c, g, w_c)
        # h_0 = 0: W_h h_0 + b_h is b_h exactly.
        h = torch.relu((b_h if t == 0 else torch.addmm(b_h, h, w_h)) + core)
        step = [rho, location, what, where, g, h]
        if t < steps - 1:
            mean = torch.tanh(torch.addmm(b_m, h, w_m))
            if sample:
                drawn = mean + std * noises[t]
                diff = drawn - mean
                diffs.append(diff)
                location = drawn.clamp(-1, 1)
            else:
                diff = mean
                location = mean
            step += [mean, diff]
            baselines.append(torch.addmm(b_b, h, w_b).squeeze(-1))
            locations.append(location)
        saved.append(step)
    batch_size = start.shape[0]
    if len(diffs) > 0:
        # gaussian_log_prob, op for op, all steps at once: elementwise, and a sum of two numbers is one
        # rounding whatever the tensor's shape, so the same numbers as step by step.
        diff = torch.stack(diffs, 1)
        log_probs = (-(diff**2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    else:
        log_probs = torch.zeros(batch_size, steps - 1, device=start.device)  # as the reference's zeros
    return saved, (torch.addmm(b_a, h, w_a), log_probs, baselines, locations)


@torch.jit.script
def _accumulate(
    acc: list[torch.Tensor | None],
    layer: int,
    g_t: torch.Tensor,
    g_sum: torch.Tensor | None,
    x: torch.Tensor | None,
    shape: list[int],
):
    """One Linear's weight and bias gradients at one step (``acc[2 layer]``, ``acc[2 layer + 1]``), added
    to the later steps', from gᵀ and g summed over the batch (None: the bias is another layer's twin). x None
    is the zero state: its weight gradient is 0 (a zero tensor where no later step gave one, as autograd's
    gᵀ.mm(0))."""
    w = acc[2 * layer]
    if x is None:
        if w is None:
            acc[2 * layer] = torch.zeros(shape, dtype=g_t.dtype, device=g_t.device)
    elif w is None:
        acc[2 * layer] = g_t.mm(x)
    else:
        w.add_(g_t.mm(x))  # in place: the accumulator is this function's own tensor
    if g_sum is not None:
        b = acc[2 * layer + 1]
        if b is None:
            acc[2 * layer + 1] = g_sum
        else:
            b.add_(g_sum)


@torch.jit.script
def _rollout_backward(
    steps: list[list[torch.Tensor]],
    params: list[torch.Tensor],
    grad_logits: torch.Tensor | None,
    grad_log_probs: torch.Tensor | None,
    grad_baselines: torch.Tensor | None,
    std: float,
    detach_core: bool,
) -> list[torch.Tensor | None]:
    """_FastRollout's backward (its docstring gives the rules): the 18 parameter gradients. Two pairs of
    layers add their outputs (W_hg what + W_hl where, W_h h + W_c g): each pair's layers get the same output
    gradient, so their biases' gradients are one computation, copied."""
    w_hg, w_hl, w_h, w_c, w_m, w_a = params[4], params[6], params[8], params[10], params[12], params[16]
    acc: list[torch.Tensor | None] = [None for _ in range(18)]
    n = len(steps)
    gh: torch.Tensor | None = None  # dL/dh_t from step t + 1's core (and the classifier at the last step)
    if grad_logits is not None:
        _accumulate(acc, 8, grad_logits.t(), grad_logits.sum(0), steps[n - 1][5], [0])
        gh = grad_logits.mm(w_a)
    for t in range(n - 1, -1, -1):
        step = steps[t]
        rho, location, what, where, g, h = step[0], step[1], step[2], step[3], step[4], step[5]
        if t < n - 1:
            if grad_baselines is not None:
                g_b = grad_baselines[:, t].unsqueeze(-1)
                _accumulate(acc, 7, g_b.t(), g_b.sum(0), h, [0])
            if grad_log_probs is not None:
                mean, diff = step[6], step[7]
                glp = grad_log_probs[:, t].unsqueeze(-1).expand(diff.shape)
                gpre = torch.ops.aten.tanh_backward(glp / (2 * std**2) * (2.0 * diff), mean)
                _accumulate(acc, 6, gpre.t(), gpre.sum(0), h, [0])
                if not detach_core:
                    gl = gpre.mm(w_m)
                    gh = gl if gh is None else gh + gl
        if gh is not None:
            ghpre = torch.ops.aten.threshold_backward(gh, h, 0)
            ghpre_t = ghpre.t()
            _accumulate(acc, 4, ghpre_t, ghpre.sum(0), steps[t - 1][5] if t > 0 else None, w_h.shape)
            _accumulate(acc, 5, ghpre_t, None, g, [0])
            gg = torch.ops.aten.threshold_backward(ghpre.mm(w_c), g, 0)
            gg_t = gg.t()
            _accumulate(acc, 2, gg_t, gg.sum(0), what, [0])
            _accumulate(acc, 3, gg_t, None, where, [0])
            g_what = torch.ops.aten.threshold_backward(gg.mm(w_hg), what, 0)
            _accumulate(acc, 0, g_what.t(), g_what.sum(0), rho, [0])
            g_where = torch.ops.aten.threshold_backward(gg.mm(w_hl), where, 0)
            _accumulate(acc, 1, g_where.t(), g_where.sum(0), location, [0])
            gh = ghpre.mm(w_h) if t > 0 else None
        # else nothing reaches this step's core, so none of it flows on to h_{t-1}
    for twin, layer in ((5, 4), (3, 2)):
        b = acc[2 * layer + 1]
        if b is not None:
            acc[2 * twin + 1] = b.clone()
    return acc


class _FastLoss(torch.autograd.Function):
    """RAMModule.hybrid_loss's ce, reinforce, baseline and their sum as one autograd node, with the chain rule
    autograd runs for them op for op (so the same gradients bit for bit): cross-entropy through aten's
    ``nll_loss_backward`` and ``_log_softmax_backward_data``; a mean over B sends g / B to each row; the
    reinforce term sends −(g / B) · (R − b_t) to log N(l_t) and nothing to b_t (detached); the baseline's
    squared error sends (g / B) · 2(b_t − R) to b_t. The total's gradient reaches each part as autograd's
    additions do (a part used twice gets the sum of its two gradients)."""

    @staticmethod
    def forward(ctx, logits, log_probs, baselines, labels, reward):
        ctx.set_materialize_grads(False)
        log_softmax = torch.log_softmax(logits, 1)
        ce, total_weight = torch.ops.aten.nll_loss_forward(log_softmax, labels, None, 1, -100)
        advantage = reward[:, None] - baselines
        reinforce = -(advantage * log_probs).sum(1).mean()
        error = baselines - reward[:, None]
        baseline = error.pow(2).sum(1).mean()
        ctx.save_for_backward(log_softmax, labels, total_weight, advantage, error)
        ctx.input_dtype = logits.dtype
        return ce, reinforce, baseline, (ce + reinforce) + baseline

    @staticmethod
    def backward(ctx, grad_ce, grad_reinforce, grad_baseline, grad_loss):
        log_softmax, labels, total_weight, advantage, error = ctx.saved_tensors
        batch = len(labels)

        def total(part: torch.Tensor | None) -> torch.Tensor | None:
            if grad_loss is None:
                return part
            return grad_loss if part is None else part + grad_loss

        grad_ce, grad_reinforce, grad_baseline = total(grad_ce), total(grad_reinforce), total(grad_baseline)
        grad_logits = grad_log_probs = grad_baselines = None
        if grad_ce is not None:
            grad_nll = torch.ops.aten.nll_loss_backward(
                grad_ce, log_softmax, labels, None, 1, -100, total_weight
            )
            grad_logits = torch.ops.aten._log_softmax_backward_data(grad_nll, log_softmax, 1, ctx.input_dtype)
        if grad_reinforce is not None:
            per_row = (grad_reinforce.expand(batch) / batch).unsqueeze(1).expand(advantage.shape)
            grad_log_probs = -per_row * advantage
        if grad_baseline is not None:
            per_row = (grad_baseline.expand(batch) / batch).unsqueeze(1).expand(error.shape)
            grad_baselines = per_row * (2.0 * error)
        return grad_logits, grad_log_probs, grad_baselines, None, None


class BaselineModule(ImageClassifier):
    """The paper's feed-forward baselines on the same canvases.

    ``fc``: two fully connected ReLU layers of ``hidden`` units, then softmax (the paper's 64 and 256).
    ``conv``: the paper's "convolutional, 2 layers", whose architecture the spec does not give. Ours (a
    decision, recalled from the paper's text and unverified): one layer of 8 filters of 10 × 10 with stride 5,
    ReLU, then a fully connected ReLU layer of ``hidden`` units, then softmax.

    Args:
        architecture: fc or conv.
        canvas: the input width (must equal data.canvas; checked when the config is read).
        hidden: the width of the hidden layer(s).
    """

    def __init__(
        self,
        architecture: str = "fc",
        canvas: int = 28,
        hidden: int = 256,
        optimizer: str = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        lr_decay: str = "linear",
        decay_epochs: int | None = None,
    ):
        super().__init__(optimizer, lr, momentum, lr_decay, decay_epochs)
        self.save_hyperparameters()
        if architecture == "fc":
            self.net = nn.Sequential(
                nn.Flatten(),
                nn.Linear(canvas * canvas, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, CLASSES),
            )
        elif architecture == "conv":
            side = (canvas - 10) // 5 + 1
            self.net = nn.Sequential(
                nn.Conv2d(1, 8, kernel_size=10, stride=5),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(8 * side * side, hidden),
                nn.ReLU(),
                nn.Linear(hidden, CLASSES),
            )
        else:
            raise ValueError(f"model.architecture must be fc or conv, not {architecture!r}")

    @classmethod
    def check_config(cls, config: dict) -> None:
        model, data = config["model"]["init_args"], config["data"]["init_args"]
        if model["canvas"] != data["canvas"]:
            raise ConfigError(f"model.canvas {model['canvas']} differs from data.canvas {data['canvas']}")

    def classify(self, batch) -> torch.Tensor:
        return self.net(batch["images"])

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self.classify(batch), batch["labels"])
        self.log_training({"ce": loss}, len(batch["labels"]), prog_bar="ce")
        return loss
