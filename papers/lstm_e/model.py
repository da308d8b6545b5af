"""LSTM-E (Pan, Mei, Yao, Li & Rui, CVPR 2016, arXiv:1505.01861): an LSTM that describes a video, trained
jointly with an embedding of videos and sentences in one space (spec §3, a reconstruction from the abstract:
every detail below is [unverified] against the paper's §3).

A clip is one video vector v (mean-pooled CNN features on YouTube2Text; concatenated pooled frames on our
Moving MNIST clips), a sentence S = (w_1, …, w_{N_s}) one-hot words. Two linear maps into the joint space of
D_e dimensions::

    video       T_v v                                   (``video_embedding``, D_e × D_v, no bias)
    sentence    T_s(S) = (1 / N_s) Σ_t T_s w_t          (``word_embedding``: the mean of its word vectors)

    relevance   E_r(v, S) = ‖T_v v − T_s(S)‖²₂
    coherence   E_c(v, S) = −log P(S | v) = −Σ_{t=1}^{N_s + 1} log P(w_t | v, w_{<t})      (w_{N_s+1} = <eos>)

The LSTM reads T_v v at the first step, then T_s w_1, …, T_s w_{N_s} (the same word vectors that embed the
sentence), and a softmax over the vocabulary from each hidden state gives P(w_t | ·). Training minimises the
batch mean of

    E = w_relevance · E_r + w_coherence · E_c          (+ weight decay, Adam's ``weight_decay``)

with both weights explicit (spec pitfall 1: which term the paper's λ scales is unverified; its
(1 − λ)·E_r + λ·E_c is w_relevance = 1 − λ, w_coherence = λ). w_relevance = 0 is a plain video-to-text LSTM
whose first input is a linear map of v.

Inference: beam search from the video embedding (``repro.beam``), beam 1 (greedy) and ``beam_size`` reported,
every metric key naming its beam (``BLEU-4@beam5``): BLEU-4 and METEOR ×100 by pycocoevalcap
(``repro.captions``) against all references of a clip. Retrieval in the joint space: each test clip's
candidates are the first references of all test clips, ranked by ‖T_v v − T_s(S)‖²; recall@1 (``R@1``) is the
percentage of clips whose nearest candidate is one of the clip's own references (identical sentences of two
clips count as the same caption).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from repro import beam
from repro.captions import require_java, score_captions
from repro.config import ConfigError, import_class
from repro.data.captioning import EOS

EXAMPLES = 8  # test clips whose decoded captions the record keeps


def relevance_loss(video: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
    """E_r per pair: the squared Euclidean distance of the two embeddings (B × D_e each) -> B."""
    return (video - sentence).pow(2).sum(-1)


def sentence_mean(word_vectors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """T_s(S): the mean of the word vectors (B × T × D_e) of each sentence's N_s = lengths − 1 words (the
    <eos> and the padding after them are left out)."""
    words = lengths - 1
    mask = torch.arange(word_vectors.shape[1], device=lengths.device)[None, :] < words[:, None]
    return (word_vectors * mask[..., None]).sum(1) / words.clamp(min=1)[:, None]


def recall_at_1(videos: torch.Tensor, sentences: torch.Tensor, correct: torch.Tensor) -> float:
    """Percentage of videos (N × D_e) whose nearest sentence (M × D_e, squared distance; ties: the first)
    is a correct one (``correct``: N × M bool)."""
    nearest = torch.cdist(videos.double(), sentences.double()).argmin(1)
    return 100 * float(correct[torch.arange(len(videos)), nearest].double().mean())


class LSTME(L.LightningModule):
    """Args:
    video_dim: D_v, the length of a clip's video vector (the data's ``video_dim``).
    vocab_size: output words (the data's vocabulary must fit).
    embed_dim: D_e, the joint space (and the LSTM's input).
    hidden_dim: LSTM units.
    w_relevance, w_coherence: the weights of E_r and E_c.
    optimizer: ``adam`` (a suite choice: the spec captured none); ``lr``, ``weight_decay``.
    beam_size: the reported beam; beam 1 (greedy) is reported beside it.
    max_length: the most words a decode writes.
    meteor: score METEOR at the test (its Java start costs seconds a call: smoke configs turn it off).
    seed: run seed (weights are seeded by the harness).
    """

    def __init__(
        self,
        video_dim: int = 8192,
        vocab_size: int = 10_000,
        embed_dim: int = 512,
        hidden_dim: int = 1024,
        w_relevance: float = 0.3,
        w_coherence: float = 0.7,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        beam_size: int = 5,
        max_length: int = 30,
        meteor: bool = True,
        seed: int = 1,
    ):
        super().__init__()
        if optimizer != "adam":
            raise ValueError(f"model.optimizer must be adam, not {optimizer!r}")
        if w_relevance < 0 or w_coherence < 0 or w_relevance + w_coherence == 0:
            raise ValueError(f"the loss weights must be >= 0, not both 0: {w_relevance}, {w_coherence}")
        if beam_size < 1 or max_length < 1:
            raise ValueError(f"model.beam_size and model.max_length must be >= 1: {beam_size}, {max_length}")
        self.save_hyperparameters()
        self.video_embedding = nn.Linear(video_dim, embed_dim, bias=False)  # T_v
        self.word_embedding = nn.Embedding(vocab_size, embed_dim)  # T_s (its rows: T_s w for one-hot w)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.readout = nn.Linear(hidden_dim, vocab_size)
        self.outputs: list[dict[str, torch.Tensor]] = []
        self.examples: list[dict] = []

    @classmethod
    def check_config(cls, config: dict) -> None:
        model, data = config["model"]["init_args"], config["data"]["init_args"]
        data_class = import_class(config["data"]["class_path"])
        if "feature_dim" in data and model["video_dim"] != data["feature_dim"]:
            raise ConfigError(f"model.video_dim {model['video_dim']} differs from data.feature_dim")
        if "frames" in data:
            expected = data_class(**data).video_dim
            if model["video_dim"] != expected:
                raise ConfigError(f"model.video_dim must be the clips' {expected} (frames x (64/pool)^2)")

    def setup(self, stage: str):
        data = self.trainer.datamodule
        if data is not None and data.vocabulary and len(data.vocabulary) > self.hparams.vocab_size:
            raise ValueError(f"the data have {len(data.vocabulary)} words; raise model.vocab_size to that")

    def on_fit_start(self):
        require_java()  # the test's caption metrics need it: fail now rather than after training

    def configure_optimizers(self):
        hp = self.hparams
        return torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)

    # ----------------------------------------------------------------------------------------------
    # The two terms
    def embed(self, video: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor):
        """(T_v v, T_s(S), the word vectors T_s w_t of every position)."""
        words = self.word_embedding(captions)
        return self.video_embedding(video), sentence_mean(words, lengths), words

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch means of E_r, E_c and E, and E_c per word."""
        hp = self.hparams
        captions, lengths = batch["captions"], batch["lengths"]
        v, s, words = self.embed(batch["video"], captions, lengths)
        inputs = torch.cat([v[:, None], words[:, :-1]], dim=1)  # T_v v, then T_s w_1 .. T_s w_{N_s}
        hidden, _ = self.lstm(inputs)
        log_probs = self.readout(hidden).log_softmax(-1)
        mask = torch.arange(captions.shape[1], device=captions.device)[None, :] < lengths[:, None]
        nll = -(log_probs.gather(2, captions[..., None]).squeeze(2) * mask).sum(1)
        parts = {"relevance": relevance_loss(v, s).mean(), "coherence": nll.mean()}
        parts["loss"] = hp.w_relevance * parts["relevance"] + hp.w_coherence * parts["coherence"]
        parts["nll_per_word"] = nll.sum() / mask.sum()
        return parts

    def training_step(self, batch, batch_idx):
        parts = self.losses(batch)
        size = len(batch["lengths"])
        self.log_dict({f"train/{k}": v for k, v in parts.items() if k != "loss"}, batch_size=size)
        self.log("train/loss", parts["loss"], prog_bar=True, batch_size=size)
        return parts["loss"]  # equal local batches: DDP's mean of the ranks' means is the global mean

    def validation_step(self, batch, batch_idx):
        parts = self.losses(batch)
        size = len(batch["lengths"])
        self.log_dict({f"val/{k}": v for k, v in parts.items()}, batch_size=size, sync_dist=True)

    # ----------------------------------------------------------------------------------------------
    # Decoding
    def step(self, words: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], v: torch.Tensor):
        """One decoding step for ``repro.beam``: state (h, c), static T_v v; word −1 feeds T_v v."""
        h, c = state
        x = torch.where((words < 0)[:, None], v, self.word_embedding(words.clamp(min=0)))
        out, (h, c) = self.lstm(x[:, None], (h[None], c[None]))
        return self.readout(out[:, 0]).log_softmax(-1), (h[0], c[0]), None

    def start(self, video: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The decoder's zero initial state and T_v v."""
        v = self.video_embedding(video)
        zeros = v.new_zeros(len(v), self.hparams.hidden_dim)
        return (zeros, zeros), v

    def decode(self, video: torch.Tensor, beam_size: int) -> beam.Decoded:
        state, v = self.start(video)
        if beam_size == 1:
            return beam.greedy(self.step, state, self.hparams.max_length, EOS, static=(v,))
        return beam.beam_search(self.step, state, beam_size, self.hparams.max_length, EOS, static=(v,))

    # ----------------------------------------------------------------------------------------------
    # Test
    @property
    def beams(self) -> list[int]:
        return sorted({1, self.hparams.beam_size})

    def on_test_epoch_start(self):
        self.outputs = []

    @torch.no_grad()
    def test_step(self, batch, batch_idx):
        v, s, _ = self.embed(batch["video"], batch["captions"], batch["lengths"])
        out = {"index": batch["index"].to(self.device), "video": v, "sentence": s}
        parts = self.losses(batch)
        out["relevance"] = parts["relevance"].expand(len(v)) * 1.0
        out["coherence"] = parts["coherence"].expand(len(v)) * 1.0
        for k in self.beams:
            words = self.decode(batch["video"], k).words
            out[f"words{k}"] = F.pad(words, (0, self.hparams.max_length - words.shape[1]), value=EOS)
        self.outputs.append(out)

    def gathered(self) -> dict[str, torch.Tensor]:
        """Every test clip's outputs from every rank, in index order (``relevance``/``coherence``: each
        batch's mean repeated per clip, so their means weight batches by size)."""
        out = {k: torch.cat([o[k] for o in self.outputs]) for k in self.outputs[0]}
        if self.trainer.world_size > 1:
            n = len(out["index"])
            most = int(self.all_gather(torch.tensor(n, device=self.device)).max())
            padded = {k: F.pad(t, (0, 0) * (t.dim() - 1) + (0, most - n), value=-1) for k, t in out.items()}
            out = {k: self.all_gather(t).flatten(0, 1) for k, t in padded.items()}
            keep = out["index"] >= 0
            out = {k: t[keep] for k, t in out.items()}
        order = out["index"].argsort()
        return {k: t[order] for k, t in out.items()}

    def on_test_epoch_end(self):
        out = self.gathered()
        data = self.trainer.datamodule
        references = data.references("test")
        index = out["index"].tolist()
        refs = {i: references[i] for i in index}
        metrics: dict[str, float] = {}
        for k in self.beams:
            hypotheses = {
                i: text(row, data.vocabulary) for i, row in zip(index, out[f"words{k}"], strict=True)
            }
            scores = score_captions(hypotheses, refs, beam=k, meteor=self.hparams.meteor)
            metrics.update({name: 100 * value for name, value in scores.items()})
            if k == self.hparams.beam_size:
                self.examples = [
                    {"index": i, "generated": hypotheses[i], "reference": refs[i][0]}
                    for i in index[:EXAMPLES]
                ]
        first = [refs[i][0] for i in index]
        correct = torch.tensor([[c in refs[i] for c in first] for i in index])
        metrics["R@1"] = recall_at_1(out["video"], out["sentence"], correct)
        metrics["test_relevance"] = float(out["relevance"].mean())
        metrics["test_coherence"] = float(out["coherence"].mean())
        metrics["test_clips"] = float(len(index))
        metrics["parameters"] = float(sum(p.numel() for p in self.parameters()))
        self.log_dict(metrics)

    def test_details(self) -> dict:
        return {"examples": self.examples}


def text(words: torch.Tensor, vocabulary: list[str]) -> str:
    """The words of a decode up to its first <eos>."""
    out = []
    for w in words.tolist():
        if w == EOS:
            break
        out.append(vocabulary[w])
    return " ".join(out)
