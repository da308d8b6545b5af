"""Show, Attend and Tell (Xu et al. 2015, spec §3): an LSTM that writes a caption word by word while it
attends to a grid of L annotation vectors a_i ∈ R^D.

Attention, from the previous hidden state::

    e_ti = wᵀ tanh(W_a a_i + W_h h_{t−1} + b),      α_t = softmax_i(e_t)

soft: ẑ_t = β_t Σ_i α_ti a_i with the gate β_t = σ(f_β(h_{t−1})) (the "selector"); hard: ẑ_t = a_{s_t},
s_t ~ Multinoulli(α_t) (β gates it too). The decoder LSTM reads [E y_{t−1}; ẑ_t] and its own h_{t−1}
(``nn.LSTMCell``: the gates of the concatenation [E y_{t−1}; h_{t−1}; ẑ_t]), starting from
c_0 = f_init,c(mean_i a_i) and h_0 = f_init,h(mean_i a_i), two MLPs. The deep output layer::

    p(y_t | ·) ∝ exp(L_o(E y_{t−1} + L_h h_t + L_z ẑ_t))

There is no start word (index 0 is <eos>): E y_{−1} is a zero vector. Training minimises, per caption,

    −log p(y | a) + λ Σ_i (1 − Σ_t α_ti)²            (doubly stochastic attention; λ = 1.0, spec §7.5)

summed over the caption's words (its <eos> included) and averaged over the batch. Hard attention replaces the
first term by the REINFORCE estimator of the variational lower bound (spec §3, pitfall 7): the caption's
log-likelihood under the sampled locations is backpropagated as usual (it does not reach the attention
network: the locations are samples), and the attention network gets
(log p(y | s, a) − b) ∇ log p(s | a) + λ_e ∇ H[s], where b is a moving average of log p(y | s, a),
b ← 0.9 b + 0.1 log p (updated after each sampled step; batch mean), and H the entropy of the α_t. With
probability 0.5 a training step uses the expected context Σ_i α_ti a_i instead of samples: that step is the
soft model's (plain backpropagation, no REINFORCE, no baseline update). One coin per step, as the spec's
``semi_sampling_p`` is read here.

Decoding is free-running (spec pitfall 3): greedy for the validation BLEU proxy that picks the best epoch, and
beam search batched over images for the test: beam 1 and ``beam_size`` (3: spec pitfall 1), every metric key
naming its beam (``BLEU-4@beam3``). A hard-attention model decodes with the expected context (deterministic;
half of its training steps used it). Test scores come from pycocoevalcap (``repro.captions``), ×100 as the
paper prints them.
"""

from __future__ import annotations

from typing import NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn

from repro import beam
from repro.callbacks import BestWeights
from repro.captions import bleu_proxy, require_java, score_captions
from repro.config import ConfigError, import_class
from repro.data.captioning import EOS, FEATURE_SHAPE, SCENE_WORDS, attention_hits, tokenize

EXAMPLES = 6  # test images whose decoded words and attention maps the record keeps, for the figures


class MnistEncoder(nn.Module):
    """Our encoder for the captioned MNIST scenes, trained from scratch with the decoder (the paper's is a
    frozen ImageNet VGG-19): W × W × 1 → (W/8)² cells × D, three stride-2 convolutions and one of stride 1,
    each followed by a ReLU (as VGG's conv5_4 features are)."""

    def __init__(self, annotation_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, annotation_dim, 3, padding=1),
            nn.ReLU(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).flatten(2).transpose(1, 2)  # B × L × D, cells row-major


class Attention(nn.Module):
    """f_att: e_ti = wᵀ tanh(W_a a_i + W_h h_{t−1} + b), α_t = softmax_i(e_t)."""

    def __init__(self, annotation_dim: int, hidden_dim: int, attention_dim: int):
        super().__init__()
        self.annotation = nn.Linear(annotation_dim, attention_dim)  # W_a, b
        self.hidden = nn.Linear(hidden_dim, attention_dim, bias=False)  # W_h
        self.score = nn.Linear(attention_dim, 1, bias=False)  # w (a bias would cancel in the softmax)

    def project(self, annotations: torch.Tensor) -> torch.Tensor:
        """W_a a_i + b: the same at every step, so computed once per image."""
        return self.annotation(annotations)

    def forward(self, projected: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        energies = self.score(torch.tanh(projected + self.hidden(h)[:, None, :])).squeeze(-1)
        return energies.softmax(-1)


class Step(NamedTuple):
    logits: torch.Tensor  # B × V
    state: tuple[torch.Tensor, torch.Tensor]  # (h_t, c_t)
    alpha: torch.Tensor  # B × L: α_t, from h_{t−1}
    location: torch.Tensor | None  # B: s_t when sampled


class Unrolled(NamedTuple):
    word_log_probs: torch.Tensor  # B × T: log p(y_t | y_<t, a)
    alphas: torch.Tensor  # B × T × L
    location_log_probs: torch.Tensor  # B × T: log α_{t, s_t} (zeros when not sampled)
    entropies: torch.Tensor  # B × T: H[α_t]
    inputs: torch.Tensor  # B × T: the previous word fed at each step (−1: none)
    mask: torch.Tensor  # B × T: steps inside the caption (its <eos> included)
    best_words: torch.Tensor  # B × T: the most likely word at each step (for teacher-forced accuracy)


class Decoded(NamedTuple):
    words: torch.Tensor  # B × T, <eos> after the caption's end
    scores: torch.Tensor  # B: log p of the caption (its <eos> included when it has one)
    alphas: torch.Tensor  # B × T × L: the α that produced each word


class ShowAttendTell(L.LightningModule):
    """Args:
    attention: ``soft`` (deterministic) or ``hard`` (stochastic, REINFORCE).
    encoder: ``mnist_conv`` (images in, our encoder, trained) or null (cached annotation vectors in).
    vocab_size: output words (the data's vocabulary must fit).
    word_dim, hidden_dim, annotation_dim, attention_dim: m (E), n (LSTM), D and the attention MLP's width.
    selector: the gating scalar β.
    doubly_stochastic: λ of the doubly stochastic penalty (1.0: spec §7.5).
    entropy_weight: λ_e of the hard model's entropy term (the code's 0.002).
    expected_context_probability: chance that a hard model's training step uses the expected context (0.5).
    baseline_decay: b ← decay · b + (1 − decay) · log p (0.9).
    sampling_probability: chance, per word after the first, of feeding the model's own sample instead of the
        reference word while training (0: teacher forcing, the paper's; the hook Scheduled Sampling needs).
    dropout: on the deep output's sum, while training.
    optimizer: ``adam`` (Flickr30k, COCO) or ``rmsprop`` (Flickr8k; Graves-style: centred, decay 0.95,
        momentum 0.9, eps 1e-4: spec §4).
    lr: the step size (the code's: Adam 2e-4, RMSProp 1e-4).
    beam_size: the reported beam (3); beam 1 is always reported beside it.
    max_length: the most words a decode writes before it is cut.
    patience: stop after this many epochs without a better validation BLEU proxy (null: never).
    meteor: score METEOR at the test (False skips its Java start, ~8 s a call: smoke configs only).
    seed: seeds sampling and dropout, per (seed, epoch, rank), so a resumed run draws what an uninterrupted
        one would.
    """

    def __init__(
        self,
        attention: str = "soft",
        encoder: str | None = None,
        vocab_size: int = 10_000,
        word_dim: int = 512,
        hidden_dim: int = 1800,
        annotation_dim: int = 512,
        attention_dim: int = 512,
        selector: bool = True,
        doubly_stochastic: float = 1.0,
        entropy_weight: float = 0.002,
        expected_context_probability: float = 0.5,
        baseline_decay: float = 0.9,
        sampling_probability: float = 0.0,
        dropout: float = 0.5,
        optimizer: str = "adam",
        lr: float = 2e-4,
        beam_size: int = 3,
        max_length: int = 100,
        patience: int | None = None,
        meteor: bool = True,
        seed: int = 1,
    ):
        super().__init__()
        if attention not in ("soft", "hard"):
            raise ValueError(f"model.attention must be soft or hard, not {attention!r}")
        if encoder not in (None, "mnist_conv"):
            raise ValueError(f"model.encoder must be mnist_conv or null, not {encoder!r}")
        if optimizer not in ("adam", "rmsprop"):
            raise ValueError(f"model.optimizer must be adam or rmsprop, not {optimizer!r}")
        if beam_size < 1 or max_length < 1:
            raise ValueError(f"model.beam_size and model.max_length must be >= 1: {beam_size}, {max_length}")
        self.save_hyperparameters()
        self.encoder = MnistEncoder(annotation_dim) if encoder == "mnist_conv" else None
        self.attention = Attention(annotation_dim, hidden_dim, attention_dim)
        self.init_h = init_mlp(annotation_dim, hidden_dim)
        self.init_c = init_mlp(annotation_dim, hidden_dim)
        self.embedding = nn.Embedding(vocab_size, word_dim)
        self.selector = nn.Linear(hidden_dim, 1) if selector else None
        self.lstm = nn.LSTMCell(word_dim + annotation_dim, hidden_dim)
        self.out_hidden = nn.Linear(hidden_dim, word_dim)  # L_h
        self.out_context = nn.Linear(annotation_dim, word_dim)  # L_z
        self.out_words = nn.Linear(word_dim, vocab_size)  # L_o
        self.register_buffer("baseline", torch.zeros(()))  # b: in the checkpoint, so a resumed run keeps it
        self.best = BestWeights("val/bleu4_proxy", mode="max")
        self.noise: torch.Generator | None = None
        self.decodes: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.attention_counts: dict[int, torch.Tensor] = {}
        self.examples: dict | None = None

    @classmethod
    def check_config(cls, config: dict) -> None:
        model, data = config["model"]["init_args"], config["data"]["init_args"]
        kind = import_class(config["data"]["class_path"]).input_kind
        if (kind == "images") != (model["encoder"] == "mnist_conv"):
            raise ConfigError(
                f"the data serve {kind}: set model.encoder={'mnist_conv' if kind == 'images' else 'null'}"
            )
        if kind == "features" and model["annotation_dim"] != FEATURE_SHAPE[1]:
            raise ConfigError(f"model.annotation_dim must be the features' {FEATURE_SHAPE[1]} channels")
        if kind == "features" and model["vocab_size"] != data["vocab_size"]:
            raise ConfigError(f"model.vocab_size {model['vocab_size']} differs from data.vocab_size")
        if kind == "images" and model["vocab_size"] < len(SCENE_WORDS):
            raise ConfigError(f"model.vocab_size must be at least the scenes' {len(SCENE_WORDS)} words")

    def configure_callbacks(self):
        callbacks = [self.best]
        if self.hparams.patience is not None:
            callbacks.append(EarlyStopping("val/bleu4_proxy", mode="max", patience=self.hparams.patience))
        return callbacks

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "rmsprop":
            return torch.optim.RMSprop(
                self.parameters(), lr=hp.lr, alpha=0.95, eps=1e-4, momentum=0.9, centered=True
            )
        return torch.optim.Adam(self.parameters(), lr=hp.lr)

    # ----------------------------------------------------------------------------------------------
    # The model, one step at a time
    def annotations(self, batch: dict) -> torch.Tensor:
        """B × L × D: a_1..a_L of each image."""
        return self.encoder(batch["images"]) if self.encoder is not None else batch["features"]

    def initial_state(self, annotations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = annotations.mean(1)
        return self.init_h(mean), self.init_c(mean)

    def embed(self, words: torch.Tensor) -> torch.Tensor:
        """E y; a zero vector for −1 (the step before the first word)."""
        return self.embedding(words.clamp(min=0)) * (words >= 0)[:, None]

    def context(self, annotations: torch.Tensor, alpha: torch.Tensor, location: torch.Tensor | None):
        """ẑ_t before the gate: a_{s_t} when a location was sampled, else the expectation Σ_i α_ti a_i."""
        if location is not None:
            return annotations[torch.arange(len(annotations), device=annotations.device), location]
        return torch.bmm(alpha[:, None, :], annotations).squeeze(1)

    def deep_output(self, previous: torch.Tensor, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """L_o(E y_{t−1} + L_h h_t + L_z ẑ_t): the logits of y_t."""
        hidden = previous + self.out_hidden(h) + self.out_context(z)
        p = self.hparams.dropout
        if self.training and p > 0:
            keep = torch.rand(hidden.shape, device=hidden.device, generator=self.noise) >= p
            hidden = hidden * keep / (1 - p)
        return self.out_words(hidden)

    def step(self, words, state, annotations, projected, sample: bool = False) -> Step:
        """One word: attend with h_{t−1}, read the context, update the LSTM, predict y_t."""
        h, c = state
        alpha = self.attention(projected, h)
        location = None
        if sample:
            location = torch.multinomial(alpha.detach(), 1, generator=self.noise).squeeze(1)
        z = self.context(annotations, alpha, location)
        if self.selector is not None:
            z = torch.sigmoid(self.selector(h)) * z  # β_t
        previous = self.embed(words)
        h, c = self.lstm(torch.cat([previous, z], dim=1), (h, c))
        return Step(self.deep_output(previous, h, z), (h, c), alpha, location)

    def unroll(
        self,
        annotations: torch.Tensor,
        captions: torch.Tensor,
        lengths: torch.Tensor,
        sample: bool = False,
        sampling_probability: float = 0.0,
    ) -> Unrolled:
        """The caption's steps with the reference words fed back (teacher forcing), or, with probability
        ``sampling_probability`` for each word of each caption on its own, the model's own word of the
        previous step (``own_words``; a constant input: no gradient flows through the choice or the word)."""
        batch, steps = captions.shape
        projected = self.attention.project(annotations)
        state = self.initial_state(annotations)
        words = torch.full((batch,), -1, dtype=torch.int64, device=captions.device)
        word_log_probs, alphas, location_log_probs, entropies, inputs, best = [], [], [], [], [], []
        p = sampling_probability
        for t in range(steps):
            out = self.step(words, state, annotations, projected, sample)
            state = out.state
            log_probs = out.logits.log_softmax(-1)
            word_log_probs.append(log_probs.gather(1, captions[:, t, None]).squeeze(1))
            best.append(log_probs.argmax(-1))
            alphas.append(out.alpha)
            log_alpha = out.alpha.clamp_min(1e-12).log()
            entropies.append(-(out.alpha * log_alpha).sum(-1))
            if out.location is not None:
                location_log_probs.append(log_alpha.gather(1, out.location[:, None]).squeeze(1))
            else:
                location_log_probs.append(torch.zeros_like(entropies[-1]))
            inputs.append(words)
            words = captions[:, t]
            if p > 0:
                own = self.own_words(log_probs.detach())
                coin = torch.rand(batch, device=words.device, generator=self.noise) < p
                words = torch.where(coin, own, words)
        mask = torch.arange(steps, device=captions.device)[None, :] < lengths[:, None]
        return Unrolled(
            torch.stack(word_log_probs, 1),
            torch.stack(alphas, 1),
            torch.stack(location_log_probs, 1),
            torch.stack(entropies, 1),
            torch.stack(inputs, 1),
            mask,
            torch.stack(best, 1),
        )

    def own_words(self, log_probs: torch.Tensor) -> torch.Tensor:
        """B: the word each caption's model would feed itself, a sample of its distribution p(y_t | ·)."""
        return torch.multinomial(log_probs.exp(), 1, generator=self.noise).squeeze(1)

    def losses(self, out: Unrolled, sampled: bool) -> dict[str, torch.Tensor]:
        """The training objective and its parts; a sampled step also moves the baseline b."""
        hp = self.hparams
        mask = out.mask.float()
        log_likelihood = (out.word_log_probs * mask).sum(1)  # log p(y | a) per caption
        coverage = (out.alphas * mask[..., None]).sum(1)  # Σ_t α_ti, B × L
        parts = {
            "nll": -log_likelihood.mean(),
            "nll_per_word": -log_likelihood.sum() / mask.sum(),
            "doubly_stochastic": ((1 - coverage) ** 2).sum(1).mean(),
        }
        parts["loss"] = parts["nll"] + hp.doubly_stochastic * parts["doubly_stochastic"]
        if sampled:
            reward = log_likelihood.detach()
            advantage = reward - self.baseline
            parts["reinforce"] = -(advantage * (out.location_log_probs * mask).sum(1)).mean()
            parts["entropy"] = (out.entropies * mask).sum(1).mean()
            parts["loss"] = parts["loss"] + parts["reinforce"] - hp.entropy_weight * parts["entropy"]
            # Under DDP the buffers are broadcast from rank 0 before each step: rank 0's average is kept.
            self.baseline.mul_(hp.baseline_decay).add_((1 - hp.baseline_decay) * reward.mean())
        return parts

    # ----------------------------------------------------------------------------------------------
    # Training and validation
    def on_train_epoch_start(self):
        key = (self.hparams.seed * 1_000_003 + self.current_epoch) * 1009 + self.global_rank
        self.noise = torch.Generator(device=self.device).manual_seed(key)

    def samples_locations(self) -> bool:
        """Whether this training step samples attention locations: a hard model's coin, which with
        probability ``expected_context_probability`` says "use the expected context" instead."""
        hp = self.hparams
        if hp.attention != "hard":
            return False
        coin = torch.rand((), device=self.device, generator=self.noise)
        return bool(coin >= hp.expected_context_probability)

    def own_word_probability(self) -> float:
        """The chance, for each word after the first of this training step's captions, of feeding the model's
        own word in place of the reference (``sampling_probability``; Scheduled Sampling's subclass makes it
        follow a schedule)."""
        return self.hparams.sampling_probability

    def training_step(self, batch, batch_idx):
        hp = self.hparams
        sampled = self.samples_locations()
        out = self.unroll(
            self.annotations(batch),
            batch["captions"],
            batch["lengths"],
            sample=sampled,
            sampling_probability=self.own_word_probability(),
        )
        parts = self.losses(out, sampled)
        size = len(batch["lengths"])
        self.log_dict({f"train/{k}": v for k, v in parts.items() if k != "nll_per_word"}, batch_size=size)
        self.log("train/nll_per_word", parts["nll_per_word"], prog_bar=True, batch_size=size)
        if hp.attention == "hard":
            self.log_dict({"train/baseline": self.baseline, "train/sampled": float(sampled)}, batch_size=size)
        return parts["loss"]

    def setup(self, stage: str):
        data = self.trainer.datamodule
        if data is not None and data.vocabulary and len(data.vocabulary) > self.hparams.vocab_size:
            raise ValueError(f"the data have {len(data.vocabulary)} words; raise model.vocab_size to that")

    def on_fit_start(self):
        require_java()  # the test's caption metrics need it: fail now rather than after training

    def on_validation_epoch_start(self):
        self.decodes = {1: []}

    def validation_step(self, batch, batch_idx):
        decoded = self.greedy(self.annotations(batch), self.hparams.max_length)
        self.decodes[1].append((batch["index"], self.pad(decoded.words)))

    def on_validation_epoch_end(self):
        hypotheses, references = self.captions(1, "valid")
        proxy = bleu_proxy(hypotheses, references)["bleu4_proxy"]
        self.log("val/bleu4_proxy", 100 * proxy, prog_bar=True)

    # ----------------------------------------------------------------------------------------------
    # Free-running decoding
    def decoding_step(self, words, state, annotations, projected):
        """One step for ``repro.beam``: (log p(y_t | ·), the new (h, c), α_t to record)."""
        out = self.step(words, state, annotations, projected)
        return out.logits.log_softmax(-1), out.state, out.alpha

    def greedy(self, annotations: torch.Tensor, max_length: int) -> Decoded:
        """The most likely word at each step, fed back, until <eos> or ``max_length`` words."""
        static = (annotations, self.attention.project(annotations))
        out = beam.greedy(self.decoding_step, self.initial_state(annotations), max_length, EOS, static)
        return Decoded(*out)

    def beam_search(self, annotations: torch.Tensor, beam_size: int, max_length: int) -> Decoded:
        """The most likely caption that beam search of width k finds, for every image at once
        (``repro.beam.beam_search``: each image keeps k hypotheses; a finished one stays in its beam with its
        score frozen; no length normalisation, the spec gives none). With k = 1 this is greedy decoding."""
        static = (annotations, self.attention.project(annotations))
        state = self.initial_state(annotations)
        return Decoded(*beam.beam_search(self.decoding_step, state, beam_size, max_length, EOS, static))

    def pad(self, words: torch.Tensor) -> torch.Tensor:
        """Decoded words padded with <eos> to ``max_length`` columns (batches and ranks line up)."""
        return F.pad(words, (0, self.hparams.max_length - words.shape[1]), value=EOS)

    def gathered(self, beam: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(index, words) of every decoded image of every rank, in index order."""
        index = torch.cat([i for i, _ in self.decodes[beam]]).to(self.device)
        words = torch.cat([w for _, w in self.decodes[beam]])
        if self.trainer.world_size > 1:
            # all_gather needs the same shape on every rank: pad to the largest share, index −1 marks padding.
            most = int(self.all_gather(torch.tensor(len(index), device=self.device)).max())
            index = F.pad(index, (0, most - len(index)), value=-1)
            words = F.pad(words, (0, 0, 0, most - len(words)), value=EOS)
            index, words = self.all_gather(index).flatten(0, 1), self.all_gather(words).flatten(0, 1)
            words, index = words[index >= 0], index[index >= 0]
        order = index.argsort()
        return index[order], words[order]

    def captions(self, beam: int, split: str) -> tuple[dict[int, str], dict[int, list[str]]]:
        """(hypotheses, references) of the images decoded with ``beam``, as ``repro.captions`` takes them."""
        data = self.trainer.datamodule
        index, words = self.gathered(beam)
        references = data.references(split)
        hypotheses = {int(i): text(row, data.vocabulary) for i, row in zip(index, words, strict=True)}
        return hypotheses, {i: references[i] for i in hypotheses}

    # ----------------------------------------------------------------------------------------------
    # Test
    @property
    def beams(self) -> list[int]:
        return sorted({1, self.hparams.beam_size})

    def on_test_epoch_start(self):
        self.decodes = {k: [] for k in self.beams}
        self.attention_counts = {k: torch.zeros(2, device=self.device) for k in self.beams}  # hits, named
        self.examples = None

    def test_step(self, batch, batch_idx):
        annotations = self.annotations(batch)
        for k in self.beams:
            decoded = self.beam_search(annotations, k, self.hparams.max_length)
            self.decodes[k].append((batch["index"], self.pad(decoded.words)))
            if "boxes" in batch:
                hits = attention_hits(
                    decoded.words, decoded.alphas, batch["labels"], batch["boxes"], batch["images"].shape[-1]
                )
                self.attention_counts[k] += torch.stack(hits).float()
            if k == self.hparams.beam_size and self.examples is None:
                self.examples = self.example_maps(batch["index"], decoded)

    def example_maps(self, index: torch.Tensor, decoded: Decoded) -> dict:
        """The first test images' decoded words and the α that produced each (the Figure 2/3 material)."""
        vocabulary = self.trainer.datamodule.vocabulary
        rows = []
        for i in range(min(EXAMPLES, len(index))):
            words = text(decoded.words[i], vocabulary).split()
            rows.append(
                {
                    "index": int(index[i]),
                    "words": words,
                    "alphas": decoded.alphas[i, : len(words) + 1].round(decimals=4).tolist(),  # + <eos>
                }
            )
        return {"beam": self.hparams.beam_size, "cells": decoded.alphas.shape[-1], "images": rows}

    def on_test_epoch_end(self):
        self.log_dict(self.test_values())

    def test_values(self) -> dict[str, float]:
        """Every test metric of the decodes gathered from all ranks (call it on every rank)."""
        values = {}
        for k in self.beams:
            hypotheses, references = self.captions(k, "test")
            values.update(caption_metrics(hypotheses, references, k, self.hparams.meteor))
            values[f"length_ratio@beam{k}"] = length_ratio(hypotheses, references)
            counts = self.attention_counts[k]
            if self.trainer.world_size > 1:
                counts = self.all_gather(counts).sum(0)
            hits, named = counts.tolist()
            if named:  # scenes with digit boxes only (not the caption sets)
                values[f"attention_accuracy@beam{k}"] = 100 * hits / named
        values["test_images"] = float(len(hypotheses))
        values["val_bleu4_proxy"] = self.best.best
        values["best_epoch"] = float(self.best.best_epoch if self.best.best_epoch is not None else -1)
        values["parameters"] = float(sum(p.numel() for p in self.parameters()))
        return values

    def test_details(self) -> dict:
        return {"val_curve": self.best.history, "attention_maps": self.examples}


def init_mlp(annotation_dim: int, hidden_dim: int) -> nn.Sequential:
    """f_init: mean annotation → an initial LSTM state; one hidden layer of D units (n_layers_init 2)."""
    return nn.Sequential(
        nn.Linear(annotation_dim, annotation_dim), nn.Tanh(), nn.Linear(annotation_dim, hidden_dim), nn.Tanh()
    )


def text(words: torch.Tensor, vocabulary: list[str]) -> str:
    """The words of a decode up to its first <eos>."""
    out = []
    for w in words.tolist():
        if w == EOS:
            break
        out.append(vocabulary[w])
    return " ".join(out)


def caption_metrics(hypotheses: dict, references: dict, beam: int, meteor: bool = True) -> dict[str, float]:
    """pycocoevalcap's BLEU-1..4, METEOR, ROUGE-L and CIDEr ×100 (the paper's scale), keyed with the beam.

    ``meteor=False`` leaves METEOR out, for smoke runs: its Java process takes ~8 s to start on each call.
    """
    scores = score_captions(hypotheses, references, beam=beam, meteor=meteor)
    return {name: 100 * value for name, value in scores.items()}


def length_ratio(hypotheses: dict, references: dict) -> float:
    """Hypothesis words over the closest reference's words, summed over images: BLEU's brevity penalty is
    exp(1 − 1/ratio) below 1 and 1 above. Counted on the suite's tokens, close to but not the PTB ones."""
    total_hyp, total_ref = 0, 0
    for i, hypothesis in hypotheses.items():
        length = len(tokenize(hypothesis))
        total_hyp += length
        total_ref += min((abs(len(tokenize(r)) - length), len(tokenize(r))) for r in references[i])[1]
    return total_hyp / max(total_ref, 1)
