"""Scheduled Sampling (Bengio et al. 2015, spec §3) on the suite's captioning decoder.

The decoder is Show, Attend and Tell's soft-attention captioner (``papers.show_attend_tell.model``), trained
by maximum likelihood, log P(Y | X) = Σ_t log P(y_t | y_<t, X), with h_t = f(h_{t−1}, y_{t−1}). Scheduled
Sampling changes only which y_{t−1} the decoder reads while it trains. At training update i (the optimizer
steps taken so far), for every word after the first of every caption, on its own (spec pitfalls 1 and 4):

* with probability ε_i the true previous word y_{t−1} is fed;
* otherwise the model's own word ŷ_{t−1}, drawn from its output distribution at t − 1 (``own_word: sample``,
  the default; the spec leaves sample vs argmax [unverified], so ``argmax`` is a switch).

The fed word is a constant input: no gradient flows through the coin or through ŷ (pitfall 5). ε_i follows
one of the schedules of ``schedules.py``. i is Lightning's ``global_step``, which every checkpoint keeps, so a
resumed run continues the schedule at the update where it stopped (pitfall 2).

Evaluation is free-running (pitfall 6), as Show, Attend and Tell's: greedy decodes pick the best validation
epoch, the test decodes with beam 1 and 3 and scores BLEU-1..4, METEOR, ROUGE-L and CIDEr-D (×100). Beside
them this model reports the teacher-forced view of the same test images, one reference of each fed word by
word (``teacher_reference``): the negative log-likelihood per word and the share of words the model ranks
first; and the share of images whose free-running caption is exactly one of their references.

Subclassing the other paper's model is the suite's one import across papers (README): the decoder, its
attention, beam search and caption metrics are that paper's, and this paper's contribution is only its
training procedure.
"""

from __future__ import annotations

import torch

from papers.scheduled_sampling.schedules import Schedule
from papers.show_attend_tell.model import ShowAttendTell
from repro.data.captioning import caption_batch, encode, tokenize


class ScheduledSamplingCaptioner(ShowAttendTell):
    """Args:
    schedule: ``linear``, ``exponential``, ``inverse_sigmoid`` or ``constant`` (``schedules.py``).
    k, c, epsilon: the schedule's constants, in units of training updates: k (linear offset, exponential
        base, inverse sigmoid k), c (linear slope), epsilon (linear floor; constant: ε_i itself: 1 is
        teacher forcing, 0 Always Sampling).
    own_word: ``sample`` (a draw from p(y_{t−1} | ·)) or ``argmax`` (its most likely word).
    The others are Show, Attend and Tell's (soft attention, gate, doubly stochastic λ 1.0 fixed).
    """

    def __init__(
        self,
        schedule: str = "inverse_sigmoid",
        k: float = 1.0,
        c: float = 0.0,
        epsilon: float = 0.0,
        own_word: str = "sample",
        encoder: str | None = None,
        vocab_size: int = 10_000,
        word_dim: int = 512,
        hidden_dim: int = 1800,
        annotation_dim: int = 512,
        attention_dim: int = 512,
        dropout: float = 0.0,
        optimizer: str = "adam",
        lr: float = 2e-4,
        beam_size: int = 3,
        max_length: int = 100,
        patience: int | None = None,
        meteor: bool = True,
        seed: int = 1,
    ):
        if own_word not in ("sample", "argmax"):
            raise ValueError(f"model.own_word must be sample or argmax, not {own_word!r}")
        super().__init__(
            attention="soft",
            encoder=encoder,
            vocab_size=vocab_size,
            word_dim=word_dim,
            hidden_dim=hidden_dim,
            annotation_dim=annotation_dim,
            attention_dim=attention_dim,
            dropout=dropout,
            optimizer=optimizer,
            lr=lr,
            beam_size=beam_size,
            max_length=max_length,
            patience=patience,
            meteor=meteor,
            seed=seed,
        )
        self.schedule = Schedule(schedule, k, c, epsilon)
        self.teacher_forced: torch.Tensor | None = None

    # ----------------------------------------------------------------------------------------------
    # Training
    def teacher_forcing_probability(self) -> float:
        """ε_i at this update i."""
        return self.schedule(self.global_step)

    def own_word_probability(self) -> float:
        return 1.0 - self.teacher_forcing_probability()

    def own_words(self, log_probs: torch.Tensor) -> torch.Tensor:
        if self.hparams.own_word == "argmax":
            return log_probs.argmax(-1)
        return super().own_words(log_probs)

    def training_step(self, batch, batch_idx):
        epsilon = self.teacher_forcing_probability()
        self.log("train/teacher_forcing", epsilon, batch_size=len(batch["lengths"]))
        return super().training_step(batch, batch_idx)

    # ----------------------------------------------------------------------------------------------
    # Test: the free-running scores of Show, Attend and Tell, and the teacher-forced view beside them
    def on_test_epoch_start(self):
        super().on_test_epoch_start()
        self.teacher_forced = torch.zeros(3, device=self.device)  # −log p summed, words ranked first, words

    def test_step(self, batch, batch_idx):
        super().test_step(batch, batch_idx)
        data = self.trainer.datamodule
        references = data.references("test")
        index = {w: i for i, w in enumerate(data.vocabulary)}
        encoded = [
            encode(tokenize(teacher_reference(references[i], i)), index) for i in batch["index"].tolist()
        ]
        targets = {name: t.to(self.device) for name, t in caption_batch(encoded).items()}
        # The decodes above encoded the images too; a second encoder pass is a small share of the test.
        annotations = self.annotations(batch)
        self.teacher_forced += self.teacher_forced_totals(
            annotations, targets["captions"], targets["lengths"]
        )

    def teacher_forced_totals(self, annotations, captions, lengths) -> torch.Tensor:
        """(−log p summed, words ranked first, words) of the captions fed word by word (<eos> included)."""
        out = self.unroll(annotations, captions, lengths)
        right = (out.best_words == captions) & out.mask
        return torch.stack(
            [-(out.word_log_probs * out.mask).sum(), right.sum().float(), out.mask.sum().float()]
        )

    def test_values(self) -> dict[str, float]:
        values = super().test_values()
        totals = self.teacher_forced
        if self.trainer.world_size > 1:
            totals = self.all_gather(totals).sum(0)
        nll, right, words = totals.tolist()
        values["tf_nll_per_word"] = nll / words
        values["tf_word_accuracy"] = 100 * right / words
        for k in self.beams:
            hypotheses, references = self.captions(k, "test")
            exact = [tokenize(h) in [tokenize(r) for r in references[i]] for i, h in hypotheses.items()]
            values[f"exact@beam{k}"] = 100 * sum(exact) / len(exact)
        values["updates"] = float(self.global_step)
        values["final_teacher_forcing"] = self.teacher_forcing_probability()
        return values


def teacher_reference(references: list[str], image: int) -> str:
    """The reference a test image is teacher-forced on: one per image (all of them would cost a CPU run 20 s
    more), the (image mod count)-th, so that every template of the scenes appears and every run scores the
    same words."""
    return references[image % len(references)]
