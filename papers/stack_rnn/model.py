"""Stack-augmented RNN (Joulin & Mikolov 2015) and the Table 2 baselines, as one LightningModule.

The recurrent cores follow spec §3 (eqs. 1-6 of the paper and ``StackRNN.h``):

    h_t       = σ( U x_t + R h_{t-1} + Σ_s P_s s^(s)_{t-1}[0:k] )  σ logistic, pre-activation clipped to ±50
    y_t       = softmax( V h_t )                                      next-character distribution
    a^(s)_t   = softmax( A_s h_t )                                    [PUSH, POP] (+ NO-OP) per stack
    s_t[0]    = a_PUSH σ(D_s h_t) + a_POP s_{t-1}[1]  (+ a_NOOP s_{t-1}[0])
    s_t[i]    = a_PUSH s_{t-1}[i-1] + a_POP s_{t-1}[i+1]  (+ a_NOOP s_{t-1}[i])

No biases anywhere, empty cells hold -1, R = 0 on the toy tasks (recurrence only through the stacks).
"Rounding" replaces each action softmax by its one-hot argmax at validation/test time only.

Two training protocols (``protocol``):

- ``online`` (the full tier): the paper's and code's protocol, run by the compiled kernel
  ``stack_online.c`` in float64 over each epoch's single stream: one SGD step after every character
  (binary addition, as train_add.cpp: after every character of a result, the steps whose input is '=' or
  a result digit), only that character's output error back-propagated through the last 50 steps (or back
  to the last stack reset), error signals clipped element-wise at ±15 where the code clips them.
- ``batched`` (the cpu and smoke tiers): truncated BPTT over B parallel streams (a declared deviation):
  one SGD step per window of ``bptt`` characters, the loss summed over the window and averaged over
  streams, so the step per character matches online SGD; the state is carried across windows and
  detached at their boundaries. Gradients are clipped element-wise at 15 (Trainer setting), standing in
  for the code's clipping of error signals.
"""

from __future__ import annotations

import copy
import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from papers.stack_rnn import kernel
from papers.stack_rnn.tasks import sequence_accuracy, wrong_sequences
from repro.config import ConfigError

EMPTY = -1.0  # value of an empty stack cell [code]
PRE_CLIP = 50.0  # pre-activations are clipped to ±50 before a sigmoid [code]


def three_uniform_(weight: torch.Tensor) -> torch.Tensor:
    """The code's init: the sum of three independent U(-0.1, 0.1) draws (range ±0.3)."""
    with torch.no_grad():
        weight.copy_(sum(torch.empty_like(weight).uniform_(-0.1, 0.1) for _ in range(3)))
    return weight


class StackRNN(nn.Module):
    """The recurrent core, vectorised over a batch of streams and over stacks.

    With ``n_stacks=0`` and ``recurrent=True`` it is the plain sigmoid RNN baseline of Table 2 (the same
    bias-free Elman network the Stack RNN extends).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 40,
        n_stacks: int = 10,
        stack_size: int = 200,
        depth: int = 2,
        noop: bool = False,
        recurrent: bool = False,
        use_kernel: bool = True,
    ):
        super().__init__()
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.n_stacks, self.stack_size, self.depth = n_stacks, stack_size, depth
        self.n_actions = 3 if noop else 2  # order [push, pop, no-op] as in the code
        self.recurrent = recurrent
        # The compiled CPU window (kernel.py) serves the stack cores without R; it is the same computation.
        self.use_kernel = use_kernel and n_stacks > 0 and not recurrent
        # Whether the final stacks of a window may receive gradient (the module's overlap mode): the kernel
        # then keeps every cell of every step for the backward pass instead of the reachable top ones.
        self.full_stack_gradient = False
        self.embed = nn.Parameter(three_uniform_(torch.empty(vocab_size, hidden_size)))  # U (one-hot input)
        self.stack_to_hidden = nn.Parameter(three_uniform_(torch.empty(n_stacks * depth, hidden_size)))  # P
        # V, A and D read the same h_t: one matrix product gives [logits | action scores | push values].
        out = vocab_size + n_stacks * (self.n_actions + 1)
        self.readout = nn.Parameter(three_uniform_(torch.empty(hidden_size, out)))
        self.hidden_to_hidden = (  # R; absent (= 0, untrained) unless the task uses it
            nn.Parameter(three_uniform_(torch.empty(hidden_size, hidden_size))) if recurrent else None
        )

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.embed
        hidden = torch.zeros(batch, self.hidden_size, dtype=w.dtype, device=w.device)
        stacks = torch.full((batch, self.n_stacks, self.stack_size), EMPTY, dtype=w.dtype, device=w.device)
        return hidden, stacks

    def forward(
        self,
        inputs: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        resets: torch.Tensor | None = None,
        hard: torch.Tensor | bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Run a window. inputs [B, T] symbol ids; resets [B, T]: empty the stacks before step t;
        hard: rounding for all rows (bool) or per row ([B] bool). Returns logits [B, T, V], the final
        state, and the actions [B, T, S, n_actions] actually applied."""
        batch, steps = inputs.shape
        hidden, stacks = state
        v, s, a = self.vocab_size, self.n_stacks, self.n_actions
        if self.use_kernel and inputs.device.type == "cpu" and kernel.available():
            if isinstance(hard, bool):
                hard = torch.full((batch,), hard) if hard else None
            logits, stacks, hidden, actions = kernel.StackWindow.apply(
                self.embed,
                self.stack_to_hidden,
                self.readout,
                stacks,
                inputs,
                resets,
                hard,
                self.depth,
                a,
                self.full_stack_gradient,
                torch.is_grad_enabled(),
            )
            return logits, (hidden, stacks), actions
        empty = stacks.new_full((batch, s, 1), EMPTY)
        reset_steps = set(resets.any(0).nonzero().flatten().tolist()) if resets is not None else set()
        hard_rows = None
        if isinstance(hard, torch.Tensor):
            hard_rows = hard.view(batch, 1, 1)
        elif hard:
            hard_rows = torch.ones(batch, 1, 1, dtype=torch.bool, device=inputs.device)
        input_rows = self.embed[inputs]  # U x_t for every step at once
        logits, actions = [], []
        for t in range(steps):
            if t in reset_steps:
                stacks = torch.where(resets[:, t, None, None], EMPTY, stacks)
                if self.recurrent:
                    hidden = torch.where(resets[:, t, None], 0.0, hidden)
            pre = input_rows[:, t]
            if s:
                pre = pre + stacks[:, :, : self.depth].reshape(batch, s * self.depth) @ self.stack_to_hidden
            if self.recurrent:
                pre = pre + hidden @ self.hidden_to_hidden
            hidden = torch.sigmoid(pre.clamp(-PRE_CLIP, PRE_CLIP))
            out = hidden @ self.readout
            logits.append(out[:, :v])
            if not s:
                continue
            act = out[:, v : v + s * a].view(batch, s, a).softmax(-1)
            if hard_rows is not None:
                rounded = F.one_hot(act.argmax(-1), a).to(act.dtype)
                act = torch.where(hard_rows, rounded, act)
            push_value = torch.sigmoid(out[:, v + s * a :].clamp(-PRE_CLIP, PRE_CLIP))
            # [push value, s_{t-1}[0..p-1], empty]: cell i after a PUSH is padded[i], after a POP padded[i+2]
            # (the bottom cell receives the empty value), after a NO-OP padded[i+1].
            padded = torch.cat([push_value.unsqueeze(-1), stacks, empty], -1)
            new = torch.addcmul(act[..., 0:1] * padded[..., :-2], act[..., 1:2], padded[..., 2:])
            if a == 3:
                new = torch.addcmul(new, act[..., 2:3], stacks)
            stacks = new
            actions.append(act)
        logits = torch.stack(logits, 1)
        actions = torch.stack(actions, 1) if actions else logits.new_zeros(batch, steps, 0, a)
        return logits, (hidden, stacks), actions


class LSTMBaseline(nn.Module):
    """The LSTM baseline of Table 2: ``torch.nn.LSTM`` (1 or 2 layers) with a linear read-out."""

    def __init__(self, vocab_size: int, hidden_size: int = 50, num_layers: int = 1):
        super().__init__()
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.lstm = nn.LSTM(vocab_size, hidden_size, num_layers, batch_first=True)
        self.readout = nn.Linear(hidden_size, vocab_size)

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.readout.weight
        zeros = torch.zeros(self.num_layers, batch, self.hidden_size, dtype=w.dtype, device=w.device)
        return zeros, zeros.clone()

    def forward(self, inputs, state, resets=None, hard=False):
        """Same contract as ``StackRNN.forward``; a reset zeroes the LSTM state (its "empty stacks")."""
        x = F.one_hot(inputs, self.vocab_size).to(self.readout.weight.dtype)
        cuts = sorted(set(resets.any(0).nonzero().flatten().tolist()) | {0}) if resets is not None else [0]
        outputs = []
        for start, stop in zip(cuts, [*cuts[1:], inputs.shape[1]], strict=True):
            if resets is not None and resets[:, start].any():
                keep = (~resets[:, start]).to(x.dtype).view(1, -1, 1)
                state = (state[0] * keep, state[1] * keep)
            out, state = self.lstm(x[:, start:stop], state)
            outputs.append(out)
        logits = self.readout(torch.cat(outputs, 1))
        return logits, state, logits.new_zeros(*inputs.shape, 0, 0)


def detach(state):
    return tuple(t.detach() for t in state)


class StackRNNModule(L.LightningModule):
    """Next-character prediction on a stream, with the paper's validation, LR halving and test protocol.

    Args:
        task: generator name (``anbn``, ``anbncn``, ``anbncndn``, ``anb2n``, ``anbmcnm``, ``memorization``,
            ``addition``); fixes the vocabulary and whether training is supervised.
        architecture: ``stack`` (Stack RNN), ``rnn`` (sigmoid RNN, Table 2 baseline) or ``lstm``.
        hidden_size: hidden units (40 for the counting tasks, 100 for memorization and addition).
        n_stacks: number of stacks (10 in Table 2).
        stack_size: capacity p of each stack (200 in the code; keep it, see spec §8).
        depth: k, how many top cells of each stack the hidden layer reads (2).
        noop: add the NO-OP action (off for Table 2, on for addition).
        recurrent: use the recurrent matrix R (off on toy tasks: recurrence only through the stacks).
        num_layers: LSTM layers (lstm only).
        rounding: discretise the actions at validation (test always reports both soft and rounded).
        lr: initial SGD learning rate (0.1).
        lr_min: training stops once halving takes the learning rate below this (1e-5).
        overlap: back-propagate each window's errors through the previous window as well (truncated BPTT
            with k1 = bptt, k2 = 2 bptt), so every character's error reaches at least ``bptt`` steps back.
        use_kernel: run the stack core's windows through the compiled CPU kernel (``kernel.py``: the same
            equations, about seven times faster) when it can be built; false forces the PyTorch loop.
        protocol: ``batched`` (truncated BPTT over parallel streams, one SGD step per window) or ``online``
            (the code's: one SGD step per character, compiled kernel, float64, one stream, one CPU process;
            the data module must serve each epoch's stream whole: ``data.protocol: online``).
        error_clip: the code's element-wise clipping of error signals in the online protocol (15).
        solved_entropy: train_add.cpp's extra rule (None: off, as train_toy.cpp): once the best validation
            entropy is below this (0.1 in train_add.cpp, "< .1 means it works"), every epoch that does not
            improve on it goes back to the best snapshot, whatever the epoch; the learning rate still halves
            only when e > N/2.
    """

    def __init__(
        self,
        task: str = "anbn",
        architecture: str = "stack",
        hidden_size: int = 40,
        n_stacks: int = 10,
        stack_size: int = 200,
        depth: int = 2,
        noop: bool = False,
        recurrent: bool = False,
        num_layers: int = 1,
        rounding: bool = False,
        lr: float = 0.1,
        lr_min: float = 1e-5,
        overlap: bool = False,
        use_kernel: bool = True,
        protocol: str = "batched",
        error_clip: float = 15.0,
        solved_entropy: float | None = None,
    ):
        super().__init__()
        from papers.stack_rnn.tasks import get_task

        self.save_hyperparameters()
        self.task = get_task(task)
        vocab = self.task.vocab_size
        if architecture == "stack":
            self.core = StackRNN(vocab, hidden_size, n_stacks, stack_size, depth, noop, recurrent, use_kernel)
            self.core.full_stack_gradient = overlap
        elif architecture == "rnn":
            self.core = StackRNN(vocab, hidden_size, n_stacks=0, recurrent=True)
        elif architecture == "lstm":
            self.core = LSTMBaseline(vocab, hidden_size, num_layers)
        else:
            raise ValueError(f"unknown architecture '{architecture}'; valid: stack, rnn, lstm")
        self.has_stacks = architecture == "stack"
        if protocol not in ("batched", "online"):
            raise ValueError(f"unknown protocol '{protocol}'; valid: batched, online")
        if protocol == "online" and (architecture != "stack" or recurrent):
            raise ValueError(
                "protocol 'online' (the code's train_toy and train_add loops, compiled) serves the Stack RNN "
                f"without R; not architecture={architecture}, recurrent={recurrent}"
            )
        self.online = protocol == "online"
        self.automatic_optimization = not self.online  # online: the kernel makes the SGD steps itself
        self.lr = lr
        self.best_entropy = math.inf
        self.snapshot: dict[str, torch.Tensor] | None = None
        # Without -hard, the best snapshot under rounded validation is kept too (None: same as `snapshot`).
        self.best_rounded_entropy = math.inf
        self.rounded_snapshot: dict[str, torch.Tensor] | None = None
        self._state = None
        self._previous = None
        self._train_nll, self._train_chars = 0.0, 0.0
        self._test_correct: list[torch.Tensor] = []
        self.details: dict = {}
        # One entry per validated epoch: both validation entropies, the learning rate the epoch trained with
        # and the one the rule left for the next epoch, and whether the epoch became the best snapshot. The
        # record keeps it (test_details), so a claim about a run's schedule can be checked from its record.
        self.history: list[dict] = []
        self.best_epoch = -1
        self.best_rounded_epoch = -1

    @property
    def implementation(self) -> str:
        """Which code trains: the online kernel, the batched window kernel, or the PyTorch loop."""
        if self.online:
            return "online-sgd-kernel"
        uses_kernel = isinstance(self.core, StackRNN) and self.core.use_kernel and kernel.available()
        return "batched-tbptt-kernel" if uses_kernel else "pytorch-loop"

    @classmethod
    def check_config(cls, config: dict) -> None:
        """Refuses, when the config is read (before anything starts), settings the online protocol cannot
        honour: it is one stream trained by a compiled CPU kernel in float64, so one CPU process."""
        model, data = config["model"]["init_args"], config["data"]["init_args"]
        if model.get("protocol", "batched") != "online":
            return
        if data.get("protocol") != "online":
            raise ConfigError("model.protocol=online needs data.protocol=online (one stream, served whole)")
        trainer = config.get("trainer") or {}
        devices, accelerator = trainer.get("devices", "auto"), trainer.get("accelerator", "auto")
        if str(devices) not in ("1", "auto") or str(accelerator) != "cpu":
            raise ConfigError(
                "model.protocol=online trains one stream with a compiled CPU kernel (one SGD step per "
                f"character): it needs trainer.accelerator=cpu and trainer.devices=1, not accelerator="
                f"{accelerator}, devices={devices}; for several devices use the batched protocol (cpu tier)"
            )
        if str(trainer.get("precision")) not in ("64-true", "64", "double"):
            raise ConfigError(
                "model.protocol=online computes in float64, as the code: trainer.precision=64-true"
            )
        if trainer.get("gradient_clip_val"):
            raise ConfigError(
                "model.protocol=online clips error signals itself (model.error_clip): remove "
                "trainer.gradient_clip_val"
            )
        try:
            kernel.online_library()  # built (or found) now: a missing compiler stops the run before it starts
        except RuntimeError as err:
            raise ConfigError(str(err)) from err

    # ----------------------------------------------------------------------------------------------
    # training: truncated BPTT over parallel streams, or the code's online SGD
    def configure_optimizers(self):
        return torch.optim.SGD(self.core.parameters(), lr=self.lr)

    def _carried_state(self, batch_size: int):
        if (
            self._state is None
            or self._state[0].shape[-2 if isinstance(self.core, LSTMBaseline) else 0] != batch_size
        ):
            self._state = self.core.initial_state(batch_size)
        return self._state

    def on_train_epoch_start(self):
        self._state = None  # the stacks are emptied at the start of every epoch [code]
        self._previous = None
        self._train_nll, self._train_chars = 0.0, 0.0

    def training_step(self, batch, batch_idx):
        if self.online:
            return self._online_step(batch)
        inputs, targets, resets, mask = batch["inputs"], batch["targets"], batch["resets"], batch["loss_mask"]
        state = self._carried_state(inputs.shape[0])
        if self.hparams.overlap and self._previous is not None:
            # Re-run the previous window with gradient, so that the error of every character of this window
            # flows back at least one full window, as in the code (50 steps for every character).
            previous_inputs, previous_resets, previous_state = self._previous
            _, state, _ = self.core(previous_inputs, previous_state, previous_resets)
            self._previous = (inputs, resets, self._state)
        elif self.hparams.overlap:
            self._previous = (inputs, resets, state)
        logits, state, _ = self.core(inputs, state, resets)
        self._state = detach(state)
        nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        # Summed over the window, averaged over streams: the per-character step of online SGD.
        loss = (nll * mask).sum() / inputs.shape[0]
        # The training NLL is averaged over the windows between two log points and logged once: with the
        # compiled kernel a window takes a few milliseconds, and each self.log call adds Lightning's
        # per-call bookkeeping to every one of them.
        self._train_nll += (nll * mask).sum().detach()
        self._train_chars += mask.sum()
        every = self._trainer.log_every_n_steps if self._trainer is not None else 1
        if (batch_idx + 1) % every == 0:
            self.log("train/nll", self._train_nll / self._train_chars.clamp(min=1), prog_bar=True)
            self.log("lr", self.lr, prog_bar=True)
            self._train_nll, self._train_chars = 0.0, 0.0
        return loss

    def _online_step(self, batch):
        """One epoch's stream (one row) through the code's online loop, in place on the weights."""
        if batch["inputs"].shape[0] != 1:
            raise ValueError(
                "protocol 'online' trains one stream: set data.protocol=online (data.batch_size=1)"
            )
        core = self.core
        stacks = core.initial_state(1)[1][0].contiguous()
        with torch.no_grad():
            nll, steps = kernel.online_sgd(
                core.embed.data,
                core.stack_to_hidden.data,
                core.readout.data,
                stacks,
                batch["inputs"][0],
                batch["targets"][0],
                batch["resets"][0],
                batch["loss_mask"][0] > 0,
                lr=self.lr,
                depth=core.depth,
                n_actions=core.n_actions,
                bptt=self.trainer.datamodule.hparams.bptt,
                clip=self.hparams.error_clip,
            )
        # The kernel made the SGD steps; the optimizer's step (no gradients: it changes nothing) counts the
        # epoch as a step, which Lightning's checkpointing and logging go by.
        self.optimizers().step()
        mean = torch.tensor(nll / max(steps, 1), dtype=torch.float64)
        self.log("train/nll", mean, prog_bar=True)
        self.log("lr", self.lr, prog_bar=True)
        return mean

    # ----------------------------------------------------------------------------------------------
    # validation: entropy (mean -log10 p over the stream), LR halving with snapshot restore
    def on_validation_epoch_start(self):
        self._val_state = None
        self._val_sum = torch.zeros(self._rows, dtype=torch.float64)
        self._val_count = 0

    @property
    def _rows(self) -> int:
        """Rows of an evaluation pass: a Stack RNN is judged with soft (row 0) and rounded (row 1) actions."""
        return 2 if self.has_stacks else 1

    def validation_step(self, batch, batch_idx):
        rows = self._rows
        inputs, targets = batch["inputs"].expand(rows, -1), batch["targets"].expand(rows, -1)
        mask, resets = batch["loss_mask"].expand(rows, -1), batch["resets"].expand(rows, -1)
        state = self._val_state or self.core.initial_state(rows)
        hard = torch.arange(rows, device=inputs.device) == 1
        logits, self._val_state, _ = self.core(inputs, state, resets, hard=hard)
        nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        self._val_sum += (nll * mask).sum(1).double().cpu()
        self._val_count += int(batch["loss_mask"].sum())

    def on_validation_epoch_end(self):
        entropies = (self._val_sum / max(self._val_count, 1) / math.log(10)).tolist()  # base 10, as the paper
        self.log("val/entropy_soft", entropies[0])
        if self.has_stacks:
            self.log("val/entropy_rounding", entropies[1])
        # The code's -hard flag validates with rounded actions; without it, with soft ones.
        entropy = entropies[1] if self.hparams.rounding else entropies[0]
        self.log("val/entropy", entropy, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        epoch = self.current_epoch
        trained_lr = self.lr
        improved = entropy < self.best_entropy or epoch == 0
        if improved:
            self.best_entropy = entropy
            self.best_epoch = epoch
            self.snapshot = copy.deepcopy(self.core.state_dict())
        tracks_rounded = self.has_stacks and not self.hparams.rounding
        rounded_improved = tracks_rounded and (entropies[1] < self.best_rounded_entropy or epoch == 0)
        if rounded_improved:
            # The "+ rounding" row is judged on the snapshot that predicts best with rounded actions; when
            # that is the soft snapshot too, both share one object, and the test runs both rows in one pass.
            self.best_rounded_entropy = entropies[1]
            self.best_rounded_epoch = epoch
            self.rounded_snapshot = self.snapshot if improved else copy.deepcopy(self.core.state_dict())
        second_half = epoch > self.trainer.datamodule.hparams.nmax / 2
        solved = self.hparams.solved_entropy is not None and self.best_entropy < self.hparams.solved_entropy
        restored = not improved and (second_half or solved)
        if restored:
            # The code goes back to the best snapshot in the second half of the curriculum, and train_add.cpp
            # also once its best entropy says the model works; otherwise a worse entropy changes nothing.
            self.core.load_state_dict(self.snapshot)
        if not improved and second_half:
            # The rate halves only in the second half of the curriculum.
            self.lr /= 2
            for group in self.trainer.optimizers[0].param_groups:
                group["lr"] = self.lr
            if self.lr < self.hparams.lr_min:
                self.trainer.should_stop = True
        entry = {"epoch": epoch, "val_entropy_soft": entropies[0]}
        if self.has_stacks:
            entry["val_entropy_rounding"] = entropies[1]
        entry.update(lr=trained_lr, next_lr=self.lr, improved=bool(improved))
        if tracks_rounded:
            entry["rounded_improved"] = bool(rounded_improved)
        if self.hparams.solved_entropy is not None:
            entry["restored"] = bool(restored)
        self.history.append(entry)
        self.log("val/best_entropy", self.best_entropy)

    def on_fit_end(self):
        if self.snapshot is not None:  # test the best snapshot, as the code does
            self.core.load_state_dict(self.snapshot)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["stack_rnn"] = {
            "lr": self.lr,
            "best_entropy": self.best_entropy,
            "snapshot": self.snapshot,
            "best_rounded_entropy": self.best_rounded_entropy,
            "rounded_snapshot": self.rounded_snapshot,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_rounded_epoch": self.best_rounded_epoch,
        }

    def on_load_checkpoint(self, checkpoint):
        saved = checkpoint["stack_rnn"]
        self.lr, self.best_entropy, self.snapshot = saved["lr"], saved["best_entropy"], saved["snapshot"]
        self.best_rounded_entropy = saved["best_rounded_entropy"]
        self.rounded_snapshot = saved["rounded_snapshot"]
        self.history = saved.get("history", [])  # checkpoints written before the history was kept
        self.best_epoch = saved.get("best_epoch", -1)
        self.best_rounded_epoch = saved.get("best_rounded_epoch", -1)

    # ----------------------------------------------------------------------------------------------
    # test: the code's protocol on one continuous stream; row 0 soft, row 1 rounded
    def on_test_epoch_start(self):
        self._test_state = None
        self._test_correct = []

    def test_step(self, batch, batch_idx):
        rows = self._rows
        inputs, targets = batch["inputs"].expand(rows, -1), batch["targets"].expand(rows, -1)
        resets = batch["resets"].expand(rows, -1)  # the test's emptyStacks() steps (data.periodic_resets)
        hard = torch.arange(rows, device=inputs.device) == 1
        if self.rounded_snapshot is None or self.rounded_snapshot is self.snapshot:  # one set of weights
            state = self._test_state or self.core.initial_state(rows)
            logits, self._test_state, _ = self.core(inputs, state, resets, hard=hard)
        else:  # the rounded row runs the snapshot chosen by rounded validation entropy
            soft_state, rounded_state = self._test_state or (self.core.initial_state(1),) * 2
            soft, soft_state, _ = self.core(inputs[:1], soft_state, resets[:1])
            rounded, rounded_state, _ = functional_call(
                self.core, self.rounded_snapshot, (inputs[1:], rounded_state, resets[1:]), {"hard": True}
            )
            logits, self._test_state = torch.cat([soft, rounded]), (soft_state, rounded_state)
        self._test_correct.append((logits.argmax(-1) == targets).cpu())

    def on_test_epoch_end(self):
        stream = self.trainer.datamodule.test_stream
        correct = torch.cat(self._test_correct, 1)
        modes = ["soft", "rounding"] if self.has_stacks else ["soft"]
        lengths = None
        for row, mode in enumerate(modes):
            by_n = sequence_accuracy(correct[row], stream)
            lengths = sorted(by_n)
            solved = [n for n in lengths if by_n[n] == 1.0]
            suffix = "" if mode == "soft" else "_rounding"
            code_lengths = [n for n in lengths if n <= 59]  # the released code tests n = 2..59
            self.log(f"solved_pct{suffix}", 100.0 * sum(n <= 59 for n in solved) / len(code_lengths))
            self.log(f"solved_of_60{suffix}", float(len(solved[:60])))
            self.log(f"solved_pct60{suffix}", 100.0 * min(len(solved), 60) / 60)
            self.log(f"mean_accuracy{suffix}", sum(by_n.values()) / len(by_n))
            self.details.setdefault("accuracy_by_n", {"n": lengths})[mode] = [by_n[n] for n in lengths]
            # Which sequences failed (their place in the n block; 0 of the first block opens the test stream
            # on empty stacks), so that a claim about where a length is missed can be read from the record.
            wrong = wrong_sequences(correct[row], stream)
            self.details.setdefault("wrong_sequences", {})[mode] = {str(n): ids for n, ids in wrong.items()}
        self.log("val_entropy", self.best_entropy)
        if self.has_stacks:
            rounded = self.best_entropy if self.rounded_snapshot is None else self.best_rounded_entropy
            self.log("val_entropy_rounding", rounded)

    def test_details(self) -> dict:
        """The record's details: accuracy per test length (soft and rounded), the validation curve with the
        learning rate of every epoch, and the epochs of the tested snapshots (the soft one; for the "+
        rounding" row the rounded one, which is the soft one under -hard or when they coincide)."""
        details = dict(self.details)
        details["implementation"] = self.implementation
        details["val_curve"] = self.history
        details["best_epoch"] = self.best_epoch
        if self.has_stacks:
            rounded = self.best_epoch if self.rounded_snapshot is None else self.best_rounded_epoch
            details["best_epoch_rounding"] = rounded
        return details
