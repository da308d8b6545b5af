"""Character-level language models (Karpathy, Johnson & Fei-Fei 2015; char-rnn; pycaffe-recurrent), spec §3.

The input is the one-hot code of the current byte (char-rnn has no embedding layer), fed to a stack of
recurrent layers (``torch.nn.LSTM``, ``GRU`` or tanh ``RNN``, one module per layer), and the top layer's
output is read out by a softmax over the K symbols:

    h_t^0 = onehot(x_t)
    h_t^l = cell_l(dropout_l(h_t^{l-1}), h_{t-1}^l)         l = 1..L
    p(x_{t+1} | x_{<=t}) = softmax(W_y dropout_{L+1}(h_t^L) + b_y)

LSTM: i, f, o = σ(·), g = tanh(·), c_t = f⊙c_{t−1} + i⊙g, h_t = o⊙tanh(c_t) (``lstm_cell_reference.md``;
PyTorch orders the fused gates i, f, g, o where char-rnn has i, f, o, g: with a symmetric initialisation the
order does not matter). Dropout never touches the recurrent connections.

``lstm_ch`` is pycaffe-recurrent's LSTM layer (``lstm_step`` and ``get_net_param`` in its recurrent.ipynb),
whose state blob of size 2H is [c_t, h_t] and is at once the state carried to the next step and the layer's
output, read by the layer above and by the readout:

    [i, f, o, g] = W_l [s_t^{l-1}, h_{t-1}^l] + b_l                 one InnerProduct, one bias, 4H outputs
    c_t = σ(f)⊙c_{t-1} + σ(i)⊙tanh(g),   h_t = σ(o)⊙tanh(c_t)
    s_t^l = dropout_l([c_t, h_t])      s_t^0 = onehot(x_t); the dropped s_t^l is also what step t+1 reads
    p(x_{t+1} | x_{<=t}) = softmax(W_y s_t^L + b_y)

so dropout (Caffe's, from layer ``dropout_from_layer`` up, train only) acts on the carried c and h as well as
on what goes up: 358,524 parameters for 2 layers of 128 units on 124 symbols, where the ``lstm`` cell of the
same size has 277,116.

Two initialisations (spec §3.3, §3.4):
- ``charrnn``: every parameter U(−0.08, 0.08), then the LSTM forget-gate bias of the input-to-hidden Linear
  set to 1 (char-rnn sets entries H+1..2H of the i2h bias; the h2h bias keeps its uniform draw).
- ``pycaffe``: weights U(−0.01, 0.01), biases 0, and one bias per gate (Caffe's InnerProduct over [x, h]):
  the hidden-to-hidden bias stays at zero and is not trained.

The loss is the mean negative log-likelihood per predicted character in nats (ClassNLL on LogSoftMax in
char-rnn, SoftmaxWithLoss in Caffe); bits per character = nats / ln 2. pycaffe-recurrent trains on the sum
of its T per-step losses (each a batch mean), whose gradient is T times this mean's: with RMSProp, which is
blind to a gradient's scale but for its delta, its clip 100, weight decay 1e-4 and delta 1e-8 make the same
steps as clip 100/T, weight decay 1e-4/T and delta 1e-8/T on the mean (grid.py converts them).
"""

from __future__ import annotations

import copy
import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import SumMetric

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}  # and lstm_ch: CaffeLSTM
GATES = {"lstm": 4, "gru": 3, "rnn": 1, "lstm_ch": 4}  # fused gate blocks per layer
LSTM_CELLS = ("lstm", "lstm_ch")  # cells with a memory c (the analyses read tanh(c))


def parameter_count(cell: str, hidden: int, layers: int, vocab: int) -> int:
    """Parameters of the network (two bias vectors per gate block, as char-rnn and torch have; one, and
    [c, h] read by the layer above and the readout, for ``lstm_ch``)."""
    g = GATES[cell]
    if cell == "lstm_ch":
        first = g * hidden * (vocab + hidden) + g * hidden
        later = g * hidden * (2 * hidden + hidden) + g * hidden
        return first + (layers - 1) * later + 2 * hidden * vocab + vocab
    first = g * hidden * (vocab + hidden) + 2 * g * hidden
    later = g * hidden * (2 * hidden) + 2 * g * hidden
    return first + (layers - 1) * later + hidden * vocab + vocab


def matched_hidden(cell: str, lstm_hidden: int, layers: int, vocab: int) -> int:
    """The hidden size of ``cell`` whose parameter count is closest to the LSTM with ``lstm_hidden`` units:
    the paper matches budgets across cell types within a size setting (spec §3.1)."""
    budget = parameter_count("lstm", lstm_hidden, layers, vocab)
    return min(range(1, 8 * lstm_hidden), key=lambda h: abs(parameter_count(cell, h, layers, vocab) - budget))


class CaffeLSTM(nn.Module):
    """pycaffe-recurrent's LSTM layer: one InnerProduct over [input, h_{t-1}] (``weight`` 4H × (n + H), its
    columns the input's then h's, and one ``bias``) gives the gates in Caffe's order i, f, o, g; the output
    and carried state is [c_t, h_t] (B × 2H), multiplied by the dropout ``mask`` of its step when one is given
    (B × T × 2H, already scaled by 1 / keep), before the next step reads it."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight = nn.Parameter(torch.empty(4 * hidden_size, input_size + hidden_size))
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))

    def forward(
        self, inputs: torch.Tensor, state: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs ``B × T × 2H`` for inputs ``B × T × n`` from ``state`` (``B × 2H``), and the last state."""
        n, hidden = self.input_size, self.hidden_size
        from_input = F.linear(inputs, self.weight[:, :n], self.bias)  # every step's input part at once
        w_h = self.weight[:, n:].t()
        c, h = state[:, :hidden], state[:, hidden:]
        cs, hs = [], []
        steps = from_input.unbind(1)  # not from_input[:, t], whose backward fills a B × T × 4H zero per step
        masks = mask.unbind(1) if mask is not None else [None] * len(steps)
        for step, step_mask in zip(steps, masks, strict=True):
            gates = torch.addmm(step, h, w_h)
            i, f, o = gates[:, : 3 * hidden].sigmoid().chunk(3, dim=1)
            c = f * c + i * gates[:, 3 * hidden :].tanh()
            h = o * c.tanh()
            if step_mask is not None:  # Caffe's Dropout on the [c, h] blob, which step t + 1 reads
                c, h = c * step_mask[:, :hidden], h * step_mask[:, hidden:]
            cs.append(c)
            hs.append(h)
        state = torch.cat([c, h], dim=1)
        if not cs:
            return inputs.new_zeros(inputs.shape[0], 0, 2 * hidden), state
        return torch.cat([torch.stack(cs, dim=1), torch.stack(hs, dim=1)], dim=2), state


class CharRNN(nn.Module):
    """One-hot bytes -> L recurrent layers -> dropout -> linear readout over K symbols (logits)."""

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        hidden_size: int = 128,
        layers: int = 2,
        dropout: float = 0.0,
        dropout_from_layer: int = 1,
        init: str = "charrnn",
    ):
        super().__init__()
        if cell not in GATES:
            raise ValueError(f"model.cell must be one of {', '.join(GATES)}, not {cell!r}")
        if init not in ("charrnn", "pycaffe"):
            raise ValueError(f"model.init must be charrnn or pycaffe, not {init!r}")
        self.vocab_size, self.cell, self.hidden_size = vocab_size, cell, hidden_size
        self.dropout, self.dropout_from_layer = dropout, dropout_from_layer
        width = 2 * hidden_size if cell == "lstm_ch" else hidden_size  # what a layer passes up
        sizes = [vocab_size] + [width] * layers
        if cell == "lstm_ch":
            self.layers = nn.ModuleList(CaffeLSTM(sizes[i], hidden_size) for i in range(layers))
        else:
            self.layers = nn.ModuleList(
                CELLS[cell](sizes[i], hidden_size, batch_first=True) for i in range(layers)
            )
        self.decoder = nn.Linear(width, vocab_size)
        self.generator = torch.Generator().manual_seed(0)
        self.initialise(init)

    def initialise(self, init: str) -> None:
        with torch.no_grad():
            if init == "charrnn":
                for p in self.parameters():
                    p.uniform_(-0.08, 0.08)
                forget = slice(self.hidden_size, 2 * self.hidden_size)  # i, f, ... in both gate orders
                if self.cell == "lstm":
                    for layer in self.layers:
                        layer.bias_ih_l0[forget] = 1.0
                elif self.cell == "lstm_ch":
                    for layer in self.layers:
                        layer.bias[forget] = 1.0
            else:
                for name, p in self.named_parameters():
                    if "bias" in name:
                        p.zero_()
                    else:
                        p.uniform_(-0.01, 0.01)
                if self.cell != "lstm_ch":  # CaffeLSTM has the one bias already
                    for layer in self.layers:
                        layer.bias_hh_l0.requires_grad_(False)

    def zero_state(self, batch: int, device=None) -> list:
        def zeros():
            return torch.zeros(1, batch, self.hidden_size, device=device)

        if self.cell == "lstm_ch":  # [c, h]
            return [torch.zeros(batch, 2 * self.hidden_size, device=device) for _ in self.layers]
        return [(zeros(), zeros()) if self.cell == "lstm" else zeros() for _ in self.layers]

    def reseed_dropout(self, seed: int) -> None:
        """Dropout masks come from this generator, reseeded per (seed, epoch, rank), so a resumed run draws
        the masks an uninterrupted one would."""
        self.generator.manual_seed(seed)

    def drop(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Dropout on the output of ``layer`` (1-based) from layer ``dropout_from_layer`` up."""
        if not self.training or self.dropout == 0 or layer < self.dropout_from_layer:
            return x
        keep = 1.0 - self.dropout
        mask = torch.bernoulli(torch.full(x.shape, keep), generator=self.generator).to(x.device)
        return x * mask / keep

    def dropout_mask(self, shape: tuple, layer: int, device=None) -> torch.Tensor | None:
        """``lstm_ch``: the scaled mask (0 or 1 / keep) of every step of ``layer``, or None where ``drop``
        would leave the layer's output alone."""
        if not self.training or self.dropout == 0 or layer < self.dropout_from_layer:
            return None
        keep = 1.0 - self.dropout
        return (torch.bernoulli(torch.full(shape, keep), generator=self.generator) / keep).to(device)

    def forward(self, inputs: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        """Logits ``B × T × K`` for byte ids ``B × T``, and the state after the last step."""
        h = F.one_hot(inputs, self.vocab_size).to(self.decoder.weight.dtype)
        new_state = []
        for number, (layer, s) in enumerate(zip(self.layers, state, strict=True), start=1):
            if self.cell == "lstm_ch":  # dropout inside the recurrence: the dropped [c, h] is the state
                shape = (h.shape[0], h.shape[1], 2 * self.hidden_size)
                h, s = layer(h, s, self.dropout_mask(shape, number, h.device))
                new_state.append(s)
                continue
            h, s = layer(h, s)
            new_state.append(s)
            h = self.drop(h, number)
        return self.decoder(h), new_state

    def trace(self, inputs: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per layer, every gate and state of every step for one stream (``T`` byte ids), recomputed from
        the layer's weights step by step: the analyses (cells, gate saturation) read these. LSTM: i, f, o,
        g, c, h; GRU: r, z, n, h; RNN: h. Each tensor is ``T × H``. (Evaluation mode: no dropout.)"""
        x = F.one_hot(inputs, self.vocab_size).to(self.decoder.weight.dtype)
        if self.cell == "lstm_ch":
            return self.trace_caffe(x)
        out = []
        with torch.no_grad():
            for layer in self.layers:
                w_hh, b_hh = layer.weight_hh_l0, layer.bias_hh_l0
                h = torch.zeros(self.hidden_size)
                c = torch.zeros(self.hidden_size)
                steps: dict[str, list] = {}
                pre_x = x @ layer.weight_ih_l0.T + layer.bias_ih_l0
                for t in range(len(x)):
                    pre_h = w_hh @ h + b_hh
                    if self.cell == "lstm":
                        i, f, g, o = (pre_x[t] + pre_h).chunk(4)
                        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
                        c = f * c + i * g
                        h = o * c.tanh()
                        values = {"i": i, "f": f, "o": o, "g": g, "c": c, "h": h}
                    elif self.cell == "gru":
                        xr, xz, xn = pre_x[t].chunk(3)
                        hr, hz, hn = pre_h.chunk(3)
                        r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
                        n = (xn + r * hn).tanh()
                        h = (1 - z) * n + z * h
                        values = {"r": r, "z": z, "n": n, "h": h}
                    else:
                        h = (pre_x[t] + pre_h).tanh()
                        values = {"h": h}
                    for key, value in values.items():
                        steps.setdefault(key, []).append(value)
                out.append({key: torch.stack(v) for key, v in steps.items()})
                x = out[-1]["h"]
        return out

    def trace_caffe(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """``trace`` for ``lstm_ch``: the layer above reads [c, h]."""
        out = []
        with torch.no_grad():
            for layer in self.layers:
                w_x, w_h = layer.weight[:, : layer.input_size], layer.weight[:, layer.input_size :]
                h = torch.zeros(self.hidden_size)
                c = torch.zeros(self.hidden_size)
                steps: dict[str, list] = {}
                pre_x = x @ w_x.T + layer.bias
                for t in range(len(x)):
                    i, f, o, g = (pre_x[t] + w_h @ h).chunk(4)
                    i, f, o, g = i.sigmoid(), f.sigmoid(), o.sigmoid(), g.tanh()
                    c = f * c + i * g
                    h = o * c.tanh()
                    for key, value in {"i": i, "f": f, "o": o, "g": g, "c": c, "h": h}.items():
                        steps.setdefault(key, []).append(value)
                out.append({key: torch.stack(v) for key, v in steps.items()})
                x = torch.cat([out[-1]["c"], out[-1]["h"]], dim=1)
        return out


class CharRNNModule(L.LightningModule):
    """Truncated-BPTT training of ``CharRNN`` on the windows of ``papers.char_rnn.data.CharData``.

    Each training batch continues the previous one: the state left by batch j (detached) starts batch j + 1,
    and every epoch starts from zeros. The test scores the weights of the best validation epoch (the paper
    stopped early on validation loss).

    Args:
        vocab_size: K, the corpus's distinct bytes (87 for War and Peace); checked against the data.
        cell, hidden_size, layers, dropout, dropout_from_layer, init: see ``CharRNN``. char-rnn drops the
            output of every layer (``dropout_from_layer`` 1), pycaffe-recurrent that of layers 2..L (2),
            whose output is its carried [c, h] (``cell`` lstm_ch).
        lr: RMSProp learning rate; ``rms_alpha`` its squared-gradient decay, ``rms_eps`` added after the
            square root (as Torch7 ``optim.rmsprop`` and Caffe do).
        lr_decay, lr_decay_after: after each epoch numbered ``lr_decay_after`` or later (1-based), multiply
            the learning rate by ``lr_decay`` (char-rnn: 0.97 after 10).
        lr_step_gamma: also multiply it by this factor every optimiser step (Caffe's ``exp`` policy 0.9999).
        weight_decay: L2 on the weights (not the biases: Caffe's ``decay_mult`` 0).
        bias_lr_mult: learning-rate multiplier of the biases (Caffe's ``lr_mult`` 2).
        seed: run seed (the harness sets it): dropout masks.
    """

    def __init__(
        self,
        vocab_size: int = 87,
        cell: str = "lstm",
        hidden_size: int = 128,
        layers: int = 2,
        dropout: float = 0.0,
        dropout_from_layer: int = 1,
        init: str = "charrnn",
        lr: float = 2e-3,
        rms_alpha: float = 0.95,
        rms_eps: float = 1e-8,
        lr_decay: float = 0.97,
        lr_decay_after: int = 10,
        lr_step_gamma: float = 1.0,
        weight_decay: float = 0.0,
        bias_lr_mult: float = 1.0,
        seed: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = CharRNN(vocab_size, cell, hidden_size, layers, dropout, dropout_from_layer, init)
        self.nll = SumMetric()
        self.count = SumMetric()
        self.state: list | None = None  # the carried state of the current training or evaluation pass
        self.window_start: list | None = None  # the state a repeated training window starts from
        self.best_nats = math.inf
        self.best_weights: dict | None = None
        self.history: list[dict] = []

    def configure_optimizers(self):
        hp = self.hparams
        trained = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
        weights = [p for n, p in trained if "bias" not in n]
        biases = [p for n, p in trained if "bias" in n]
        return torch.optim.RMSprop(
            [
                {"params": weights, "weight_decay": hp.weight_decay, "lr": hp.lr},
                {"params": biases, "weight_decay": 0.0, "lr": hp.lr * hp.bias_lr_mult},
            ],
            lr=hp.lr,
            alpha=hp.rms_alpha,
            eps=hp.rms_eps,
        )

    def setup(self, stage: str):
        data = self.trainer.datamodule if self.trainer is not None else None
        if data is not None and data.vocab_size != self.hparams.vocab_size:
            raise ValueError(
                f"model.vocab_size is {self.hparams.vocab_size} but the corpus has {data.vocab_size} "
                f"distinct bytes; set model.vocab_size={data.vocab_size}"
            )

    def learning_rate_factor(self, epoch: int, step: int) -> float:
        hp = self.hparams
        return hp.lr_decay ** max(0, epoch - hp.lr_decay_after + 1) * hp.lr_step_gamma**step

    def on_train_epoch_start(self):
        self.state = None
        self.net.reseed_dropout(
            (self.hparams.seed * 1_000_003 + self.current_epoch) * 1009 + self.global_rank
        )

    def on_train_batch_start(self, batch, batch_idx):
        factor = self.learning_rate_factor(self.current_epoch, self.global_step)
        hp = self.hparams
        for group, base in zip(self.optimizers().optimizer.param_groups, (1.0, hp.bias_lr_mult), strict=True):
            group["lr"] = hp.lr * base * factor

    def continue_from(self, batch) -> list:
        """The state a batch starts from: zeros at the start of a pass, the state the previous window left,
        or, for a repeated window, the state its first pass started from."""
        inputs = batch["inputs"]
        if self.state is None:
            self.state = self.net.zero_state(len(inputs), inputs.device)
        if batch.get("repeat", 0) == 0:
            self.window_start = self.state
        return self.window_start

    def nats(self, batch) -> tuple[torch.Tensor, list]:
        """Summed negative log-likelihood of the batch's targets, and the state after its last step."""
        logits, state = self.net(batch["inputs"], self.continue_from(batch))
        nll = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), reduction="sum")
        return nll, state

    def training_step(self, batch, batch_idx):
        nll, state = self.nats(batch)
        self.state = detach(state)
        loss = nll / batch["targets"].numel()
        self.log("train/nats", loss, prog_bar=True, batch_size=batch["targets"].numel())
        self.log("lr", self.optimizers().optimizer.param_groups[0]["lr"])
        return loss

    def evaluation_step(self, batch):
        nll, state = self.nats(batch)
        self.state = state
        self.nll.update(nll)
        self.count.update(batch["targets"].numel())

    def on_validation_epoch_start(self):
        self.state = None

    def validation_step(self, batch, batch_idx):
        self.evaluation_step(batch)

    def on_validation_epoch_end(self):
        nats = float(self.nll.compute() / self.count.compute())
        self.nll.reset()
        self.count.reset()
        self.log_dict({"val/nats": nats, "val/bpc": nats / math.log(2)}, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        self.history.append({"epoch": self.current_epoch, "val_nats": nats})
        if nats < self.best_nats:
            self.best_nats = nats
            self.best_weights = copy.deepcopy(self.net.state_dict())
        self.log("val/best_nats", self.best_nats)
        self.state = None

    def on_save_checkpoint(self, checkpoint):
        checkpoint["char_rnn"] = {
            "best_nats": self.best_nats,
            "best_weights": self.best_weights,
            "history": self.history,
        }

    def on_load_checkpoint(self, checkpoint):
        saved = checkpoint.get("char_rnn", {})
        self.best_nats = saved.get("best_nats", math.inf)
        self.best_weights = saved.get("best_weights")
        self.history = saved.get("history", [])

    def on_test_epoch_start(self):
        if self.best_weights is not None:
            self.net.load_state_dict(self.best_weights)
        self.state = None

    def test_step(self, batch, batch_idx):
        self.evaluation_step(batch)

    def on_test_epoch_end(self):
        nats = float(self.nll.compute() / self.count.compute())
        characters = float(self.count.compute())
        self.nll.reset()
        self.count.reset()
        values = {
            "test_nats": nats,
            "test_bpc": nats / math.log(2),
            "parameters": float(sum(p.numel() for p in self.net.parameters() if p.requires_grad)),
            "test_characters": characters,
        }
        if self.history:  # without a validation split the last weights are tested
            best = min(self.history, key=lambda h: h["val_nats"])
            values.update(val_nats=best["val_nats"], best_epoch=float(best["epoch"]))
        self.log_dict(values)

    def test_details(self) -> dict:
        return {"val_curve": self.history}


def detach(state: list) -> list:
    return [tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach() for s in state]
