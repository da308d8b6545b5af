"""Yao et al.'s word-level language model: embedding → a stack of LSTM or depth-gated LSTM layers → softmax
over the 10,000 PTB types (spec §3-4).

    e_t = E w_t                                                     word embedding; h_t^{-1} = e_t
    h_t^ℓ, c_t^ℓ = layer_ℓ(h_t^{ℓ-1}, h_{t-1}^ℓ, c_{t-1}^ℓ [, c_t^{ℓ-1}])     ``repro.lstm.LSTM``
    p(w_{t+1} | w_{≤t}) = softmax(W_y h_t^{L-1} + b_y)

The layers are ``repro.lstm.LSTMLayer`` in the official code's form (spec §3.2): full H × H peepholes, the
learned input "self-stabiliser" exp(s), and, with ``depth_gate``, the depth gate

    d_t = σ(b_d + W_xd x_t + w_qd ⊙ c_{t-1} + [ℓ > 0] w_ld ⊙ c_t^{ℓ-1})
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t + d_t ⊙ l_t,     l_t = c_t^{ℓ-1} above the first layer, W_l e_t at it.

The LSTM baseline is the same layer with the depth gate removed (d_t ≡ 0, no lower-cell term): the two
experiments of a size differ in that switch alone (spec §7.5, §8). ``forget_gate`` is ``coupled``
(f = 1 − i, the code's cells) or ``separate`` (its own gate, the paper's equations; spec §7.1's names).

Initialisation (spec §3.2, the toolkit's default): every parameter uniform in ±√6/√(sum of its dimensions),
where a parameter is what the code declares one: each gate's input weights, recurrent weights, bias and
peephole separately (the fused blocks of ``LSTMLayer`` are initialised block by block), each embedding row (a
lookup vector of the embedding's size), the softmax weights and bias; the stabiliser starts at 0.

Loss and metric: the negative log-likelihood (nats) of each predicted token, which tokens those are being the
data's business (``data.py``: every word and every ``<eos>``). Training minimises the NLL summed over a
sequence's steps and averaged over the batch's sequences (Zaremba et al.'s normalisation, for which lr 1.0 is
tuned, and the code's per-sentence sum when a batch is one sentence). Perplexity = exp(Σ NLL / number of
predicted tokens) over a whole split (spec §6). SGD with global-norm clipping (the trainer's
``gradient_clip_val``); after every validation whose perplexity is not below the best so far, the learning
rate is multiplied by ``lr_decay`` (the code's halving, spec §4). The test scores the weights of the best
validation.
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import SumMetric

from papers.depth_gated_lstm.data import IGNORE
from repro.callbacks import BestWeights
from repro.lstm import LSTM, LSTMVariant

VOCAB_SIZE = 10_000
# The spec's names (§7.1) for repro.lstm's forget-gate settings; "on" would read as a boolean in YAML.
FORGET_GATES = {"separate": "on", "coupled": "coupled"}


def perplexity(nll: float) -> float:
    """exp(nll), and inf where that overflows a float (a diverged run, e.g. at a huge learning rate): a
    perplexity to record and judge, not an OverflowError that loses the run."""
    try:
        return math.exp(nll)
    except OverflowError:
        return math.inf


class DepthGatedLM(L.LightningModule):
    """Args:
    vocab_size: softmax outputs (PTB: 10,000); checked against the data.
    embedding_size, hidden_size, layers: E's width, H, and the depth of the stack.
    depth_gate: the depth-gated LSTM (True) or the LSTM baseline (False).
    forget_gate: ``coupled`` (f = 1 − i, the official code) or ``separate`` (the paper's own forget gate).
    peepholes: ``full`` (H × H, the code), ``diagonal`` or ``none``.
    stabiliser: scale each layer's input by a learned exp(s) (the code's self-stabiliser).
    lr: SGD learning rate; ``lr_decay`` multiplies it after a validation that does not improve.
    weight_decay: L2 coefficient of every parameter (the code's trainer λ).
    """

    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        embedding_size: int = 200,
        hidden_size: int = 200,
        layers: int = 2,
        depth_gate: bool = True,
        forget_gate: str = "coupled",
        peepholes: str = "full",
        stabiliser: bool = True,
        lr: float = 1.0,
        lr_decay: float = 0.5,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        if forget_gate not in FORGET_GATES:
            raise ValueError(
                f"model.forget_gate must be one of {', '.join(FORGET_GATES)}, not {forget_gate!r}"
            )
        self.save_hyperparameters()
        cell = LSTMVariant(
            forget_gate=FORGET_GATES[forget_gate],
            peepholes=peepholes,
            depth_gate=depth_gate,
            stabiliser=stabiliser,
        )
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.lstm = LSTM(embedding_size, hidden_size, layers, cell)
        self.readout = nn.Linear(hidden_size, vocab_size)
        self.initialise()
        self.nll = SumMetric()
        self.count = SumMetric()
        self.best = BestWeights("val/ppl", mode="min")
        self.train_state: list | None = None  # each training stream's state, carried from batch to batch
        self.eval_state: list | None = None
        self.best_ppl = math.inf  # the learning-rate schedule's reference
        self.trained_tokens = 0  # predicted training tokens so far, over all ranks
        self.history: list[dict] = []

    @torch.no_grad()
    def initialise(self) -> None:
        def uniform(block: torch.Tensor, dims: tuple[int, ...] | None = None) -> None:
            bound = math.sqrt(6.0 / sum(dims or block.shape))
            block.uniform_(-bound, bound)

        for layer in self.lstm.layers:
            for name, p in layer.named_parameters():
                if name == "stabiliser":
                    continue  # exp(0) = 1: starts as no scaling
                # weight_x, weight_r and bias stack one H-row block per gate: the code's separate parameters
                for block in p.split(layer.hidden_size) if name in ("weight_x", "weight_r", "bias") else (p,):
                    uniform(block)
        uniform(self.embedding.weight, dims=(self.embedding.embedding_dim,))  # V lookup vectors of E each
        uniform(self.readout.weight)
        uniform(self.readout.bias)

    def configure_callbacks(self):
        return [self.best]

    def configure_optimizers(self):
        hp = self.hparams
        return torch.optim.SGD(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)

    def setup(self, stage: str):
        data = self.trainer.datamodule if self.trainer is not None else None
        if data is not None and data.vocab_size != self.hparams.vocab_size:
            raise ValueError(
                f"model.vocab_size is {self.hparams.vocab_size} but the data have {data.vocab_size} types; "
                f"set model.vocab_size={data.vocab_size}"
            )

    def forward(self, inputs: torch.Tensor, state: list | None = None) -> tuple[torch.Tensor, list]:
        """Logits of the next token (``T × B × V``) for word ids ``T × B``, and each layer's final (h, c)."""
        outputs, state = self.lstm(self.embedding(inputs), state)
        return self.readout(outputs), state

    def token_nll(self, batch, state: list | None = None) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Summed NLL (nats) of the batch's predicted tokens (targets not ``IGNORE``), how many there are,
        and the state after the batch's last step."""
        logits, state = self(batch["inputs"], state)
        targets = batch["targets"]
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
        return nll, (targets != IGNORE).sum(), state

    def training_step(self, batch, batch_idx):
        nll, count, state = self.token_nll(batch, None if batch["first"] else self.train_state)
        self.train_state = [(h.detach(), c.detach()) for h, c in state]
        self.trained_tokens += batch["tokens"]
        self.log("train/ppl", torch.exp(nll.detach() / count), prog_bar=True, batch_size=int(count))
        # Summed over steps, averaged over sequences. Every rank holds batch_size / W of them, so DDP's
        # average of the ranks' gradients is the single-process gradient.
        return nll / batch["inputs"].shape[1]

    def evaluate(self, batch):
        nll, count, state = self.token_nll(batch, None if batch["first"] else self.eval_state)
        self.eval_state = state
        self.nll.update(nll)
        self.count.update(count)

    def pooled(self) -> tuple[float, float]:
        """(mean NLL per predicted token, its count) over the whole split and every rank."""
        nll, count = float(self.nll.compute()), float(self.count.compute())
        self.nll.reset()
        self.count.reset()
        return nll / count, count

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch)

    def on_validation_epoch_end(self):
        nll, _ = self.pooled()
        ppl = perplexity(nll)
        self.log_dict({"val/ppl": ppl, "val/nll": nll}, prog_bar=True)
        if not self.trainer.sanity_checking:
            self.record_validation(ppl, self.optimizers().optimizer)

    def record_validation(self, ppl: float, optimizer: torch.optim.Optimizer) -> None:
        """Add a validation to the curve, then multiply the learning rate by ``lr_decay`` unless ``ppl`` is
        below every earlier validation's."""
        lr = optimizer.param_groups[0]["lr"]
        self.history.append(
            {
                "epoch": self.current_epoch,
                "step": self.global_step,
                "trained_tokens": self.trained_tokens,
                "lr": lr,
                "val_ppl": ppl,
            }
        )
        if ppl < self.best_ppl:
            self.best_ppl = ppl
        else:
            for group in optimizer.param_groups:
                group["lr"] = lr * self.hparams.lr_decay

    def test_step(self, batch, batch_idx):
        self.evaluate(batch)

    def on_test_epoch_end(self):
        nll, count = self.pooled()
        self.log_dict(
            {
                "test_ppl": perplexity(nll),
                "test_nll": nll,
                "test_tokens": count,
                "val_ppl": self.best.best,
                "best_epoch": float(self.best.best_epoch if self.best.best_epoch is not None else -1),
                "parameters": float(sum(p.numel() for p in self.parameters())),
            }
        )

    def test_details(self) -> dict:
        return {"val_curve": self.history}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["depth_gated_lm"] = {
            "best_ppl": self.best_ppl,
            "trained_tokens": self.trained_tokens,
            "history": self.history,
        }

    def on_load_checkpoint(self, checkpoint):
        saved = checkpoint["depth_gated_lm"]
        self.best_ppl, self.trained_tokens, self.history = (
            saved["best_ppl"],
            saved["trained_tokens"],
            saved["history"],
        )
