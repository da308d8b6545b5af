"""Deep Knowledge Tracing (Piech et al. 2015), written from the paper's equations (spec §3).

At step t the network reads the student's last interaction x_t = code(q_t, a_t) and predicts, for every
exercise j, the probability y_t[j] that the next answer on j is correct:

    x_t = C[q_t + M·a_t]                 C: one-hot (identity, 2M × 2M) or a fixed random N(0, 1) matrix
                                           (2M × N, "compressed sensing"; the official code's 100-d variant)
    h_t = RNN(x_t, h_{t-1})              LSTM (the paper's "DKT") or tanh RNN (the official code), h_0 learned
    y_t = σ(W_y · dropout(h_t) + b_y)    dropout on the readout only, never on the recurrence

and the loss scores only the next question: L = Σ_t BCE(y_t[q_{t+1}], a_{t+1}), averaged over the scored
positions of the minibatch. Padding after a student's last answer is masked out of the loss and metrics.

The test reports the exact pooled AUC over every next-answer prediction of every test student (spec §6), with
accuracy (threshold 0.5) and RMSE. With ``baselines`` on, the same test positions are also scored by the
per-exercise marginal and by BKT fitted by EM on the training students (``papers.dkt.baselines``), and, for
generated students, by the oracle that knows the true probabilities: Table 1 and Figure 3(a) compare on
identical predictions.
"""

from __future__ import annotations

import copy

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanSquaredError, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC


class DKT(nn.Module):
    """The network: interaction code -> recurrent layer -> dropout -> sigmoid readout over M exercises."""

    def __init__(
        self,
        n_skills: int,
        cell: str = "lstm",
        hidden_size: int = 200,
        encoding: str = "onehot",
        compressed_dim: int = 100,
        dropout: float = 0.5,
        encoding_seed: int = 12345,
    ):
        super().__init__()
        if cell not in ("lstm", "rnn"):
            raise ValueError(f"model.cell must be lstm or rnn, not {cell!r}")
        if encoding == "onehot":
            codes = torch.eye(2 * n_skills)
        elif encoding == "compressed":
            # A fixed draw, as the code's torch.manualSeed(12345) randn(2M, 100): part of the model,
            # not learned.
            codes = torch.randn(
                2 * n_skills, compressed_dim, generator=torch.Generator().manual_seed(encoding_seed)
            )
        else:
            raise ValueError(f"model.encoding must be onehot or compressed, not {encoding!r}")
        self.n_skills, self.cell = n_skills, cell
        self.register_buffer("codes", codes)
        recurrent = nn.LSTM if cell == "lstm" else nn.RNN  # nn.RNN is h_t = tanh(W x_t + U h_{t-1} + b)
        self.rnn = recurrent(codes.shape[1], hidden_size, batch_first=True)
        states = 2 if cell == "lstm" else 1  # (h_0, c_0) or h_0
        self.initial = nn.Parameter(torch.zeros(states, 1, 1, hidden_size))
        self.dropout = dropout
        self.dropout_seed = 0
        self._masks: torch.Generator | None = None  # the dropout masks' own random stream
        self.readout = nn.Linear(hidden_size, n_skills)

    def initial_state(self, batch: int):
        state = self.initial.expand(-1, -1, batch, -1).contiguous()
        return (state[0], state[1]) if self.cell == "lstm" else state[0]

    def forward(self, interactions: torch.Tensor) -> torch.Tensor:
        """Logits of y_t (before σ) for interactions [B, T] (index q_t + M·a_t): [B, T, M].

        The recurrence is causal, so the padding after a student's last answer cannot change any of their
        outputs; it only costs the steps, which length bucketing keeps few. (Packed sequences would skip
        them, but torch's packed LSTM backward on CPU grows quadratically with length: 12.8 s against 1.1 s
        padded for 100 students × 300 steps.)"""
        h, _ = self.rnn(self.codes[interactions], self.initial_state(interactions.shape[0]))
        return self.readout(self.drop(h))

    def reseed_dropout(self, seed: int) -> None:
        self.dropout_seed, self._masks = seed, None

    def drop(self, h: torch.Tensor) -> torch.Tensor:
        """Inverted dropout with masks from the network's own generator. The global stream will not do: a
        DataLoader draws from it whenever it starts an epoch's iterator, at a different moment in a resumed
        run than in an uninterrupted one."""
        if not self.training or self.dropout == 0:
            return h
        if self._masks is None or self._masks.device != h.device:
            self._masks = torch.Generator(device=h.device).manual_seed(self.dropout_seed)
        keep = torch.empty_like(h).bernoulli_(1 - self.dropout, generator=self._masks)
        return h * keep / (1 - self.dropout)


def row_chunks(lengths: torch.Tensor, max_steps: int) -> list[slice]:
    """Consecutive rows of a length-sorted batch whose padded size (rows × longest) stays within
    ``max_steps``: the 47 longest training students (up to 4,290 answers) then cost about their own steps,
    not 47 × 4,290, and the longest test student (8,214) never shares a batch-sized tensor."""
    chunks, start = [], 0
    for stop in range(1, len(lengths) + 1):
        longest = int(lengths[start:stop].max())
        if stop - start > 1 and (stop - start) * longest > max_steps:
            chunks.append(slice(start, stop - 1))
            start = stop - 1
    chunks.append(slice(start, len(lengths)))
    return chunks


def scores() -> MetricCollection:
    # thresholds=None: the exact AUC over every prediction (torchmetrics keeps them all, and gathers them
    # from every rank under DDP), not the official code's every-500th trapezoid (spec §3.2).
    return MetricCollection(
        {
            "auc": BinaryAUROC(thresholds=None),
            "accuracy": BinaryAccuracy(),
            "rmse": MeanSquaredError(squared=False),
        }
    )


class DKTModule(L.LightningModule):
    """DKT training and evaluation.

    Args:
        n_skills: M, the number of exercise ids (124 for ASSISTments, 50 for simulated students).
        cell / hidden_size / encoding / compressed_dim / dropout: the network (``DKT``).
        optimizer: ``sgd`` (with ``momentum``) or ``adam``; ``lr`` its learning rate.
        patience: stop after this many epochs without a better validation AUC; the test uses the weights of
            the best validation epoch (the paper gives no stopping rule; spec §7.9).
        max_steps: padded steps (students × longest) per forward pass; a batch runs in chunks of rows.
        baselines: also score the test positions with the marginal and BKT (and the oracle, when the data
            knows it).
        bkt_skills: ``exercise`` (one BKT skill per exercise id: ASSISTments' skill tags) or ``one`` (every
            exercise one skill: simulated students, whose concepts are hidden from every model).
        seed: run seed (the harness sets it; the weights are seeded by seed_everything).
    """

    def __init__(
        self,
        n_skills: int = 124,
        cell: str = "lstm",
        hidden_size: int = 200,
        encoding: str = "onehot",
        compressed_dim: int = 100,
        dropout: float = 0.5,
        optimizer: str = "adam",
        lr: float = 0.01,
        momentum: float = 0.9,
        patience: int = 5,
        max_steps: int = 50_000,
        baselines: bool = True,
        bkt_skills: str = "exercise",
        seed: int = 1,
    ):
        super().__init__()
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"model.optimizer must be sgd or adam, not {optimizer!r}")
        if bkt_skills not in ("exercise", "one"):
            raise ValueError(f"model.bkt_skills must be exercise or one, not {bkt_skills!r}")
        self.save_hyperparameters()
        self.net = DKT(n_skills, cell, hidden_size, encoding, compressed_dim, dropout)
        self.val_scores = scores().clone(prefix="val/")
        self.test_scores = scores()
        self.baseline_auc = nn.ModuleDict()
        self.best_auc = -1.0
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.baseline_predictions: dict[str, list[np.ndarray]] = {}
        self.details: dict = {}

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=hp.lr)
        return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum)

    def setup(self, stage: str):
        data = self.trainer.datamodule
        if data is not None and data.n_skills != self.hparams.n_skills:
            raise ValueError(
                f"model.n_skills={self.hparams.n_skills} but the data has {data.n_skills} exercise ids; set "
                f"model.n_skills={data.n_skills}"
            )

    def on_train_epoch_start(self):
        # Masks drawn from (seed, epoch, rank): a run resumed from an epoch's checkpoint continues exactly as
        # the uninterrupted run, and each DDP rank draws its own.
        self.net.reseed_dropout(hash((self.hparams.seed, self.current_epoch, self.global_rank)) % 2**63)

    # ----------------------------------------------------------------------------------------------
    def predict_next(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """y_t[q_{t+1}] (as a logit) and a_{t+1} for every scored step t = 0..n-2 of every student, with the
        batch row and t of each. The rows run in chunks of at most ``max_steps`` padded steps; the loss is a
        sum over steps, so chunking changes nothing but the cost."""
        n_skills = self.hparams.n_skills
        logits, targets, rows, times = [], [], [], []
        for chunk in row_chunks(batch["lengths"], self.hparams.max_steps):
            lengths = batch["lengths"][chunk]
            longest = int(lengths.max())
            q, a = batch["q"][chunk, :longest], batch["a"][chunk, :longest]
            mask = torch.arange(longest - 1, device=q.device)[None] < (lengths - 1)[:, None]
            y = self.net(q[:, :-1] + n_skills * a[:, :-1])[mask]  # [scored steps, M]; padding never scored
            logits.append(y.gather(1, q[:, 1:][mask][:, None]).squeeze(1))
            targets.append(a[:, 1:][mask])
            row, t = mask.nonzero(as_tuple=True)
            rows.append(row + chunk.start)
            times.append(t)
        return torch.cat(logits), torch.cat(targets), torch.cat(rows), torch.cat(times)

    def training_step(self, batch, batch_idx):
        logit, target, _, _ = self.predict_next(batch)
        # Summed over this rank's positions and divided by the whole group's count: DDP averages the ranks'
        # gradients, so multiplying by the world size makes the update the single-process one.
        loss_sum = F.binary_cross_entropy_with_logits(logit, target.to(logit.dtype), reduction="sum")
        loss = loss_sum * self.trainer.world_size / batch["scored_global"]
        self.log("train/loss", loss_sum / len(target), prog_bar=True, batch_size=len(target))
        return loss

    def validation_step(self, batch, batch_idx):
        if len(batch["lengths"]):
            logit, target, _, _ = self.predict_next(batch)
            self.val_scores.update(torch.sigmoid(logit), target)

    def on_validation_epoch_end(self):
        values = self.val_scores.compute()
        self.val_scores.reset()
        self.log_dict(values, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        auc = float(values["val/auc"])
        if auc > self.best_auc:
            self.best_auc, self.best_epoch = auc, self.current_epoch
            self.best_state = copy.deepcopy(self.net.state_dict())
        elif self.current_epoch - self.best_epoch >= self.hparams.patience:
            self.trainer.should_stop = True
        self.log("val/best_auc", self.best_auc)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["dkt"] = {
            "best_auc": self.best_auc,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
        }

    def on_load_checkpoint(self, checkpoint):
        saved = checkpoint["dkt"]
        self.best_auc, self.best_epoch, self.best_state = (
            saved["best_auc"],
            saved["best_epoch"],
            saved["best_state"],
        )

    # ----------------------------------------------------------------------------------------------
    def on_test_epoch_start(self):
        if self.best_state is not None:  # the weights of the best validation epoch
            self.net.load_state_dict(self.best_state)
        data = self.trainer.datamodule
        self.baseline_predictions = self.fit_baselines(data) if self.hparams.baselines else {}
        self.baseline_auc = nn.ModuleDict(
            {name: BinaryAUROC(thresholds=None) for name in self.baseline_predictions}
        )

    def fit_baselines(self, data) -> dict[str, list[np.ndarray]]:
        """Each baseline's prediction of every answer of every test student (index 0 is never scored)."""
        from papers.dkt.baselines import BKT, Marginal

        marginal = Marginal().fit(data.train + data.val)
        skill_of = None if self.hparams.bkt_skills == "exercise" else np.zeros(data.n_skills, dtype=np.int64)
        bkt = BKT(data.n_skills if skill_of is None else 1, skill_of=skill_of).fit(data.train + data.val)
        predictions = {
            "marginal": [marginal.predict(q) for q, _ in data.test],
            "bkt": bkt.predict_many(data.test),
        }
        if data.oracle is not None:
            predictions["oracle"] = data.oracle
        return predictions

    def test_step(self, batch, batch_idx):
        if not len(batch["lengths"]):
            return
        logit, target, rows, times = self.predict_next(batch)
        self.test_scores.update(torch.sigmoid(logit), target)
        students, answers = batch["index"][rows].tolist(), (times + 1).tolist()  # y_t predicts answer t + 1
        for name, per_student in self.baseline_predictions.items():
            p = [per_student[s][t] for s, t in zip(students, answers, strict=True)]
            self.baseline_auc[name].update(torch.tensor(p, dtype=torch.float32), target)

    def on_test_epoch_end(self):
        values = {k: float(v) for k, v in self.test_scores.compute().items()}
        for name, metric in self.baseline_auc.items():
            values[f"auc_{name}"] = float(metric.compute())
        values["val_auc"] = self.best_auc
        values["best_epoch"] = float(self.best_epoch)
        self.log_dict(values)
        self.details = {"example_student": self.trace_student(self.trainer.datamodule.test)}

    def trace_student(self, students) -> dict:
        """Figure 1's raw material: one test student's predicted p(correct) on each exercise they attempt,
        after every answer (y_t for all t, not just the next question)."""
        lengths = np.array([len(q) for q, _ in students])
        # The paper's student answers ~50 questions; take the test student nearest 50 with the most skills.
        near = np.argsort(np.abs(lengths - 50))[:20]
        pick = int(max(near, key=lambda i: (len(np.unique(students[i][0])), -i)))
        q, a = students[pick]
        self.net.eval()
        with torch.no_grad():
            interactions = torch.from_numpy(q + self.hparams.n_skills * a)[None].to(self.device)
            p = torch.sigmoid(self.net(interactions))[0].cpu().numpy()  # [len(q), M]: y_t after answer t
        skills = sorted(set(q.tolist()), key=q.tolist().index)
        return {
            "student": pick,
            "q": q.tolist(),
            "a": a.tolist(),
            "skills": skills,
            "p": p[:, skills].T.round(4).tolist(),  # [skill, t]: after answer t
        }

    def test_details(self) -> dict:
        return self.details
