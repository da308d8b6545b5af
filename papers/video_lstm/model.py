"""The LSTM encoder-decoder models of Srivastava, Mansimov & Salakhutdinov (2015), written from the paper's
model description and the official code (mansimov/unsupervised-videos @ 29407a8: ``lstm_combo.py``,
``lstm.py``; spec §3-§4, §6).

Frames v_1..v_20 are flattened to 4096-d vectors. The encoder reads v_1..v_10; its final state (h, c of every
layer) is the initial state of each decoder. A decoder step emits p_t = σ(W_out h_t + b_out) (sigmoid
outputs, Bernoulli targets):

    encoder            (h, c) = LSTM_enc(v_1..v_10)
    reconstruction     p^r_t, t = 1..10, target v_{11-t}            (reverse order: v_10 first)
    future             p^f_t, t = 1..10, target v_{10+t}
    conditional input  step 1 reads zeros; step t > 1 reads the previous target (v_{12-t} / v_{9+t}) in
                       training, and at test the future decoder reads its own p^f_{t-1}. The
                       reconstruction decoder reads the true v_{12-t} at test too (the code: those frames are
                       the observed input).
    unconditional      every step reads nothing (a zero input).

The autoencoder has the reconstruction decoder, the future predictor the future one, the composite model
both. Each LSTM has the official cell: peepholes (``w_diag``) from c_{t-1} into i and f and from c_t into o
(``repro.lstm.LSTMLayer``, variant ``vanilla``); with ``peepholes: false`` the layer is ``torch.nn.LSTM``. A
stack of L layers passes each layer's h to the next; the conditional input enters the first.

Loss (spec §6): the Bernoulli cross-entropy summed over the 4096 pixels of a frame, in nats,

    L = -(1 / (B · 10)) Σ_b Σ_t Σ_pixels [y ln p + (1 - y) ln(1 - p)]           (nats per frame)

with real-valued targets y in [0, 1], so its floor is the targets' entropy Σ_pixels H_b(y) > 0. The model's
losses are computed from the logits (exact); the baselines' probabilities (0 and copied frames) use the code's
ε = 1e-10 inside the logs. Test metrics, per frame, on the fixed test set: ``future_loss``, ``future_floor``
(the entropy of the same targets), ``future_excess`` (= loss - floor), the same three for the reconstruction,
and the all-zeros and copy-the-last-input-frame baselines of future prediction (``zeros_future_loss``,
``copy_last_future_loss``).

Optimiser: Adam (the cpu tier), or the official update (``sgd``, util.py ``Param.Update``): with gradient g of
the loss summed over the batch and the frames,

    v ← μ v − ε (g + λ w);   v ← clip(v, −c, c) element-wise;   w ← w + v

(ε 1e-4, μ 0.9, λ 1e-4 on weights and peepholes, none on biases, c 1e-4). Initialisation as the official
configs: input, recurrent and output weights U(±0.01), peepholes U(±0.1), biases 0.
"""

from __future__ import annotations

import base64
import zlib

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from repro.lstm import LSTMLayer

FRAME = 64 * 64
N_IN, N_OUT = 10, 10  # frames the encoder reads; frames each decoder emits (the paper's 10 + 10)
EPS = 1e-10  # the code's ε inside the logs of cross_entropy_bernoulli
EXAMPLES = 3  # test sequences whose frames the record keeps, for the figures


# -----------------------------------------------------------------------------
# Losses and baselines


def bernoulli_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in nats summed over the last (pixel) axis, from logits (exact)."""
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)


def bernoulli_probs(p: torch.Tensor, y: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The code's cross-entropy of probabilities p, ε inside the logs, summed over the pixel axis."""
    p, y = p.double(), y.double()
    return -(y * torch.log(p + eps) + (1 - y) * torch.log(1 - p + eps)).sum(-1).float()


def entropy(y: torch.Tensor) -> torch.Tensor:
    """Σ_pixels H_b(y): the least cross-entropy any prediction of targets y can have (0 ln 0 = 0)."""
    return (torch.special.entr(y) + torch.special.entr(1 - y)).sum(-1)


def baselines(x: torch.Tensor, n_in: int) -> dict[str, torch.Tensor]:
    """Future-prediction loss of the all-zeros and the copy-the-last-input-frame predictors, per frame of
    each sequence (T_out × B) for frames ``x`` (T × B × 4096)."""
    future = x[n_in:]
    last = x[n_in - 1].expand_as(future)
    return {
        "zeros_future_loss": bernoulli_probs(torch.zeros_like(future), future),
        "copy_last_future_loss": bernoulli_probs(last, future),
    }


class PerFrame(Metric):
    """Per-frame sums of named quantities over every test sequence (summed over DDP ranks): each quantity's
    mean over sequences per output frame, and over frames."""

    full_state_update = False

    def __init__(self, names: list[str], frames: int):
        super().__init__()
        self.names = list(names)
        self.add_state("total", torch.zeros(len(names), frames, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: dict[str, torch.Tensor]) -> None:  # each T_out × B
        for k, name in enumerate(self.names):
            self.total[k] += values[name].double().sum(1)
        self.count += next(iter(values.values())).shape[1]

    def compute(self) -> dict[str, torch.Tensor]:
        means = self.total / self.count
        return {name: means[k] for k, name in enumerate(self.names)}


# -----------------------------------------------------------------------------
# The network


class Stack(nn.Module):
    """L LSTM layers, time-major (T × B × I); a state is one (h, c) per layer."""

    def __init__(self, input_size: int, hidden_size: int, layers: int, peepholes: bool):
        super().__init__()
        sizes = [input_size] + [hidden_size] * (layers - 1)
        self.peepholes = peepholes
        self.layers = nn.ModuleList(
            LSTMLayer(n, hidden_size, "vanilla") if peepholes else nn.LSTM(n, hidden_size) for n in sizes
        )

    def forward(self, x: torch.Tensor, state=None):
        finals = []
        for k, layer in enumerate(self.layers):
            s = None if state is None else state[k]
            if self.peepholes:
                x, _, (h, c) = layer(x, s)
            else:
                x, (h, c) = layer(x, None if s is None else (s[0][None], s[1][None]))
                h, c = h[0], c[0]
            finals.append((h, c))
        return x, finals

    @torch.no_grad()
    def init_official(self, scale: float, peephole_scale: float) -> None:
        for name, p in self.named_parameters():
            if "bias" in name:
                p.zero_()
            elif "peephole" in name:
                p.uniform_(-peephole_scale, peephole_scale)
            else:
                p.uniform_(-scale, scale)


class Decoder(nn.Module):
    """A decoder LSTM stack and its sigmoid readout; conditional: it reads the previous frame."""

    def __init__(self, hidden_size: int, layers: int, peepholes: bool, conditional: bool):
        super().__init__()
        self.conditional = conditional
        # An unconditional decoder reads nothing: a 1-d zero input (no weight of it ever gets a gradient).
        self.stack = Stack(FRAME if conditional else 1, hidden_size, layers, peepholes)
        self.readout = nn.Linear(hidden_size, FRAME)

    def teacher_forced(self, state, targets: torch.Tensor) -> torch.Tensor:
        """Logits of every step (T × B × 4096) for the targets (T × B × 4096): step t reads target t - 1
        (the true previous frame), step 0 zeros."""
        steps, batch = targets.shape[:2]
        if self.conditional:
            inputs = torch.cat([targets.new_zeros(1, batch, FRAME), targets[:-1]])
        else:
            inputs = targets.new_zeros(steps, batch, 1)
        y, _ = self.stack(inputs, state)
        return self.readout(y)

    def generate(self, state, steps: int, batch: int, like: torch.Tensor) -> torch.Tensor:
        """Logits of every step, each step reading the previous step's own output σ(logit) (test time)."""
        x = like.new_zeros(1, batch, FRAME if self.conditional else 1)
        out = []
        for _ in range(steps):
            y, state = self.stack(x, state)
            logit = self.readout(y)
            out.append(logit)
            if self.conditional:
                x = torch.sigmoid(logit)
        return torch.cat(out)


class VideoLSTM(nn.Module):
    """Encoder and the decoders the model has (``reconstruction``, ``future``)."""

    def __init__(
        self,
        hidden_size: int = 2048,
        layers: int = 1,
        reconstruct: bool = True,
        predict: bool = True,
        conditional_reconstruction: bool = False,
        conditional_future: bool = False,
        peepholes: bool = True,
        init_scale: float = 0.01,
        peephole_init: float = 0.1,
    ):
        super().__init__()
        if not (reconstruct or predict):
            raise ValueError("a model needs a reconstruction decoder, a future decoder or both")
        self.encoder = Stack(FRAME, hidden_size, layers, peepholes)
        self.decoders = nn.ModuleDict()
        if reconstruct:
            self.decoders["reconstruction"] = Decoder(
                hidden_size, layers, peepholes, conditional_reconstruction
            )
        if predict:
            self.decoders["future"] = Decoder(hidden_size, layers, peepholes, conditional_future)
        for stack in [self.encoder] + [d.stack for d in self.decoders.values()]:
            stack.init_official(init_scale, peephole_init)
        with torch.no_grad():
            for d in self.decoders.values():
                d.readout.weight.uniform_(-init_scale, init_scale)
                d.readout.bias.zero_()

    def forward(self, x: torch.Tensor, n_in: int = N_IN, generate: bool = False) -> dict[str, tuple]:
        """{decoder: (logits T_out × B × 4096, targets T_out × B × 4096)} for frames x (T × B × 4096).
        ``generate``: the conditional future decoder reads its own outputs (test time)."""
        _, state = self.encoder(x[:n_in])
        out = {}
        if "reconstruction" in self.decoders:
            target = x[:n_in].flip(0)  # step t's target is v_{n_in - t}: reverse order
            out["reconstruction"] = (self.decoders["reconstruction"].teacher_forced(state, target), target)
        if "future" in self.decoders:
            target = x[n_in:]
            decoder = self.decoders["future"]
            if generate and decoder.conditional:
                logits = decoder.generate(state, len(target), x.shape[1], x)
            else:
                logits = decoder.teacher_forced(state, target)
            out["future"] = (logits, target)
        return out


# -----------------------------------------------------------------------------
# The optimiser of the official code


class ClippedMomentumSGD(torch.optim.Optimizer):
    """util.py ``Param.Update``: v ← μ v − ε (g + λ w); v ← clip(v, ±c); w ← w + v (the update is clipped,
    not the gradient; the code's computed ``eps_decay`` is never applied)."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, update_clip=0.0):
        super().__init__(
            params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "clip": update_clip}
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                v = self.state[p].setdefault("v", torch.zeros_like(p))
                v.mul_(group["momentum"]).add_(g, alpha=-group["lr"])
                if group["clip"] > 0:
                    v.clamp_(-group["clip"], group["clip"])
                p.add_(v)
        return loss


# -----------------------------------------------------------------------------
# Training and evaluation


def pack_frames(frames: np.ndarray) -> str:
    """uint8 frames (values 0..255), zlib-compressed and base64-encoded for a JSON record."""
    return base64.b64encode(zlib.compress(frames.astype(np.uint8).tobytes(), 9)).decode("ascii")


def unpack_frames(text: str, shape) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8).reshape(shape)


class VideoLSTMModule(L.LightningModule):
    """The encoder-decoder family on Moving MNIST.

    Args:
        hidden_size / layers: units per LSTM and layers per stack (2048, 1 or 2 in the paper).
        reconstruct / predict: which decoders (both: the composite model).
        conditional_reconstruction / conditional_future: whether each decoder reads the previous frame.
        peepholes: the official cell (``LSTMLayer``) or, off, ``torch.nn.LSTM``.
        optimizer: ``adam`` or ``sgd`` (the official clipped momentum update); ``lr``, ``momentum``,
            ``weight_decay`` (weights and peepholes only) and ``update_clip`` configure it.
        reduction: the training loss is the per-frame mean (``mean``) or, as the code's gradient, the sum over
            the batch and frames (``sum``); the reported losses are per frame either way.
        init_scale / peephole_init: the uniform ranges of the official initialisation.
        seed: run seed (the harness sets it; weights are seeded by seed_everything).
    """

    def __init__(
        self,
        hidden_size: int = 2048,
        layers: int = 1,
        reconstruct: bool = True,
        predict: bool = True,
        conditional_reconstruction: bool = False,
        conditional_future: bool = False,
        peepholes: bool = True,
        optimizer: str = "sgd",
        lr: float = 1e-4,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        update_clip: float = 1e-4,
        reduction: str = "sum",
        init_scale: float = 0.01,
        peephole_init: float = 0.1,
        seed: int = 1,
    ):
        super().__init__()
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"model.optimizer must be adam or sgd, not {optimizer!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"model.reduction must be mean or sum, not {reduction!r}")
        self.save_hyperparameters()
        self.net = VideoLSTM(
            hidden_size,
            layers,
            reconstruct,
            predict,
            conditional_reconstruction,
            conditional_future,
            peepholes,
            init_scale,
            peephole_init,
        )
        names = [f"{d}_{q}" for d in self.net.decoders for q in ("loss", "floor")]
        self.val_scores = PerFrame(names, N_OUT)
        if predict:
            names += ["zeros_future_loss", "copy_last_future_loss"]
        self.test_scores = PerFrame(names, N_OUT)
        self.details: dict = {}

    # -------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=hp.lr)
        decay = [p for n, p in self.named_parameters() if "bias" not in n]
        plain = [p for n, p in self.named_parameters() if "bias" in n]  # the code's b and b_output: no L2
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": plain, "weight_decay": 0.0}]
        return ClippedMomentumSGD(groups, lr=hp.lr, momentum=hp.momentum, update_clip=hp.update_clip)

    @staticmethod
    def time_major(batch) -> torch.Tensor:
        frames = batch["frames"]  # B × T × 64 × 64
        return frames.flatten(2).transpose(0, 1)  # T × B × 4096

    def losses(self, x: torch.Tensor, generate: bool) -> dict[str, torch.Tensor]:
        """Per frame of each sequence (T_out × B): each decoder's loss and its targets' entropy floor."""
        out = {}
        for name, (logits, target) in self.net(x, N_IN, generate).items():
            out[f"{name}_loss"] = bernoulli_logits(logits, target)
            out[f"{name}_floor"] = entropy(target)
        return out

    def training_step(self, batch, batch_idx):
        x = self.time_major(batch)
        per_frame = {k: v for k, v in self.losses(x, generate=False).items() if k.endswith("_loss")}
        total = sum(v.sum() for v in per_frame.values())
        frames = next(iter(per_frame.values())).numel()  # T_out × local batch
        for name, value in per_frame.items():
            self.log(f"train/{name}", value.mean(), prog_bar=True, batch_size=x.shape[1])
        if self.hparams.reduction == "mean":
            return total / frames  # equal local batches: DDP's mean of the ranks' means is the global mean
        return total * self.trainer.world_size  # DDP averages gradients: the global batch's sum

    def validation_step(self, batch, batch_idx):
        self.val_scores.update(self.losses(self.time_major(batch), generate=True))

    def on_validation_epoch_end(self):
        values = self.val_scores.compute()
        self.val_scores.reset()
        self.log_dict({f"val/{k}": float(v.mean()) for k, v in values.items()}, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x = self.time_major(batch)
        values = self.losses(x, generate=True)
        if self.hparams.predict:
            values.update(baselines(x, N_IN))
        self.test_scores.update(values)

    def on_test_epoch_end(self):
        per_frame = {k: v.float() for k, v in self.test_scores.compute().items()}
        self.test_scores.reset()
        metrics = {k: float(v.mean()) for k, v in per_frame.items()}
        for name in self.net.decoders:
            metrics[f"{name}_excess"] = metrics[f"{name}_loss"] - metrics[f"{name}_floor"]
        self.log_dict(metrics)
        self.details = {
            "per_frame": {k: [round(float(x), 3) for x in v] for k, v in per_frame.items()},
            "examples": self.examples(),
        }

    @torch.no_grad()
    def examples(self) -> dict:
        """The first test sequences, their reconstructions (in time order) and predictions, as uint8."""
        data = self.trainer.datamodule
        if data is None or not hasattr(data, "fixed_set"):
            return {}
        frames = np.asarray(data.fixed_set("test")[:EXAMPLES])
        x = torch.from_numpy(frames).float().div(255).to(self.device).flatten(2).transpose(0, 1)
        was_training = self.net.training
        self.net.eval()
        out = self.net(x, N_IN, generate=True)
        self.net.train(was_training)
        shape = list(frames.shape)
        packed = {"shape": shape, "input": pack_frames(frames)}
        for name, (logits, _) in out.items():
            p = torch.sigmoid(logits)
            if name == "reconstruction":
                p = p.flip(0)  # back to time order: frame t of the input
            p = p.transpose(0, 1).reshape(len(frames), -1, 64, 64)
            packed[name] = pack_frames((p * 255).round().cpu().numpy())
            packed[f"{name}_shape"] = list(p.shape)
        return packed

    def test_details(self) -> dict:
        return self.details
