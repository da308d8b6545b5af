"""Tests for papers/scheduled_sampling (the decay schedules, per-token sampling on the captioning decoder, the
teacher-forced test view, harness runs, figures and the ordering check, expected.yaml) against
specs/scheduled_sampling.md.

Harness runs read MNIST and score captions with Java (pycocoevalcap's PTB tokenizer): they skip without
either. Smoke configs skip METEOR (model.meteor: false) to keep the file fast.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

import repro.captions
from papers.scheduled_sampling import figures
from papers.scheduled_sampling.model import ScheduledSamplingCaptioner, teacher_reference
from papers.scheduled_sampling.schedules import Schedule, exponential, inverse_sigmoid, linear
from papers.show_attend_tell.model import ShowAttendTell
from repro import config as repro_config
from repro.data import data_root, mnist
from repro.data.captioning import EOS, UNK, CaptionedMNIST
from repro.papers import get_paper
from repro.verdict import NOT_RUN, judge
from tests import runs

needs_mnist_and_java = pytest.mark.skipif(
    not (repro.captions.java_available() and mnist.mnist_path("train-labels-idx1-ubyte.gz").exists()),
    reason=f"needs Java and MNIST under {data_root()} (REPRO_DATA=../shared/data)",
)
DECODER = dict(vocab_size=12, word_dim=8, hidden_dim=16, annotation_dim=6, attention_dim=8, dropout=0.0)


def captioner(schedule: str = "constant", **settings) -> ScheduledSamplingCaptioner:
    """A small decoder over given annotation vectors (no encoder)."""
    return ScheduledSamplingCaptioner(schedule=schedule, **{**DECODER, **settings})


def captions_of(batch: int, steps: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random captions of words 2.. (never <eos> or UNK) ending in <eos>, and their lengths."""
    words = torch.randint(
        2, DECODER["vocab_size"], (batch, steps), generator=torch.Generator().manual_seed(seed)
    )
    words[:, -1] = EOS
    return words, torch.full((batch,), steps)


# --------------------------------------------------------------------------------------------------
# The schedules (spec §3 and §8), golden values worked by hand (bc -l)


def test_linear_is_max_of_the_floor_and_k_minus_c_i_capped_at_one():
    assert [linear(i, k=1.0, c=0.1, epsilon=0.2) for i in (0, 3, 8, 9, 100)] == pytest.approx(
        [1.0, 0.7, 0.2, 0.2, 0.2]
    )
    assert linear(0, k=1.5, c=0.1, epsilon=0.0) == 1.0  # ε_0 = k, capped at 1
    assert linear(6, k=1.5, c=0.1, epsilon=0.0) == pytest.approx(0.9)
    values = [linear(i, k=1.0, c=0.00072, epsilon=0.1) for i in range(2000)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone non-increasing
    assert values[1250] == pytest.approx(0.1) and values[1249] > 0.1  # the floor at i = (k − ε)/c exactly


def test_exponential_is_k_to_the_i():
    assert exponential(0, 0.9) == 1.0
    assert exponential(1, 0.9) == pytest.approx(0.9)
    assert exponential(10, 0.9) == pytest.approx(0.3486784401)
    assert exponential(1250, 0.99816) == pytest.approx(0.100046660260544)  # the cpu tier's end


def test_inverse_sigmoid_is_k_over_k_plus_exp_i_over_k():
    assert inverse_sigmoid(0, 10) == pytest.approx(0.909090909090909)  # ε_0 = k/(k+1)
    assert inverse_sigmoid(10, 10) == pytest.approx(0.786269728480423)
    assert inverse_sigmoid(50, 10) == pytest.approx(0.063126068924139)
    assert inverse_sigmoid(1250, 170) == pytest.approx(0.098221593245715)  # the cpu tier's end
    values = [inverse_sigmoid(i, 170) for i in range(0, 5000, 10)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False) if a > 1e-300)  # decreasing
    assert inverse_sigmoid(10**7, 170) == 0.0  # → 0, without overflowing exp


def test_schedules_by_name_and_their_constraints():
    assert Schedule("linear", k=1.0, c=0.1, epsilon=0.2)(3) == pytest.approx(0.7)
    assert Schedule("exponential", k=0.9)(10) == pytest.approx(0.3486784401)
    assert Schedule("inverse_sigmoid", k=10)(10) == pytest.approx(0.786269728480423)
    assert [Schedule("constant", epsilon=e)(10**6) for e in (1.0, 0.5, 0.0)] == [1.0, 0.5, 0.0]
    for bad, message in (
        (dict(name="exponential", k=1.0), "0 < model.k < 1"),
        (dict(name="inverse_sigmoid", k=0.5), "model.k >= 1"),
        (dict(name="linear", c=0.1, epsilon=1.0), "0 <= model.epsilon < 1"),
        (dict(name="linear", c=0.0), "model.c > 0"),
        (dict(name="constant", epsilon=1.5), r"in \[0, 1\]"),
        (dict(name="cosine"), "must be one of constant, linear, exponential, inverse_sigmoid"),
    ):
        with pytest.raises(ValueError, match=message):
            Schedule(**bad)


def test_each_decay_ends_near_01_at_the_tiers_last_update():
    """The documented rule for the constants (README): every decay reaches ε ≈ 0.1 at the planned end."""
    for tier in ("smoke", "cpu", "full"):
        settings = figures.tier_settings(tier)
        for experiment in figures.DECAYS.values():
            end = figures.planned_updates(settings[experiment])
            assert 0.08 < figures.schedule_of(settings[experiment])(end) < 0.12, (tier, experiment)
        constant = {name: figures.schedule_of(settings[name])(0) for name in figures.EXPERIMENTS}
        assert (constant["mnist_baseline"], constant["mnist_uniform"], constant["mnist_always"]) == (
            1,
            0.5,
            0,
        )


def test_the_schedule_counts_updates_from_the_trainers_global_step():
    model = captioner("inverse_sigmoid", k=10)
    assert model.teacher_forcing_probability() == pytest.approx(0.909090909090909)  # i = 0 outside a trainer

    class AtUpdate:  # stands in for the Trainer: LightningModule.global_step reads trainer.global_step
        global_step = 50

    model._trainer = AtUpdate()
    assert model.teacher_forcing_probability() == pytest.approx(0.063126068924139)
    assert model.own_word_probability() == pytest.approx(1 - 0.063126068924139)


# --------------------------------------------------------------------------------------------------
# Sampling per token on the decoder (spec §3, pitfalls 1, 4 and 5)


def own_fed(model, p: float, batch: int = 400, steps: int = 12) -> torch.Tensor:
    """B × (T − 1): which inputs after the first were the model's own word. The model is made to say UNK
    whatever it sees, a word no reference has, so a fed UNK is exactly a model-fed position."""
    with torch.no_grad():
        model.out_words.bias[UNK] = 60.0
    captions, lengths = captions_of(batch, steps)
    model.noise = torch.Generator().manual_seed(1)
    out = model.unroll(torch.randn(batch, 9, 6), captions, lengths, sampling_probability=p)
    fed = out.inputs[:, 1:]
    assert ((fed == UNK) | (fed == captions[:, :-1])).all()
    return fed == UNK


def test_the_share_of_model_fed_words_is_one_minus_epsilon_with_a_coin_per_word():
    torch.manual_seed(0)
    model = captioner("constant", epsilon=0.7)
    own = own_fed(model, model.own_word_probability())
    assert own.float().mean().item() == pytest.approx(0.3, abs=0.02)  # 4,400 coins: std 0.007
    assert (own.float().mean(0) - 0.3).abs().max() < 0.08  # every position, not only on average
    mixed = (own.any(1) & ~own.all(1)).float().mean().item()
    assert mixed > 0.95  # one coin per sequence would make every row all-own or all-true (0.7¹¹ + 0.3¹¹ ≈ 2%)


def test_epsilon_one_is_teacher_forcing_exactly_and_draws_nothing():
    torch.manual_seed(1)
    model = captioner("constant", epsilon=1.0)
    forced = ShowAttendTell(**DECODER)
    forced.load_state_dict(model.state_dict())
    annotations, (captions, lengths) = torch.randn(6, 9, 6), captions_of(6, 7)
    model.noise = torch.Generator().manual_seed(3)
    assert model.own_word_probability() == 0.0
    ours = model.unroll(annotations, captions, lengths, sampling_probability=model.own_word_probability())
    theirs = forced.unroll(annotations, captions, lengths)
    assert torch.equal(ours.inputs[:, 1:], captions[:, :-1])
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(
        model.losses(ours, sampled=False)["loss"], forced.losses(theirs, sampled=False)["loss"]
    )
    assert torch.equal(model.noise.get_state(), torch.Generator().manual_seed(3).get_state())  # no draws
    assert captioner("exponential", k=0.9).own_word_probability() == 0.0  # ε_0 = 1: teacher forcing at i = 0


def test_own_words_are_samples_or_the_argmax_and_carry_no_gradient(monkeypatch):
    torch.manual_seed(2)
    annotations, (captions, lengths) = torch.randn(50, 9, 6), captions_of(50, 8)
    greedy = captioner("constant", epsilon=0.0, own_word="argmax")
    out = greedy.unroll(annotations, captions, lengths, sampling_probability=1.0)
    assert torch.equal(out.inputs[:, 1:], out.best_words[:, :-1])  # each fed word is the last step's argmax
    sampler = captioner("constant", epsilon=0.0)
    sampler.load_state_dict(greedy.state_dict())
    sampler.noise = torch.Generator().manual_seed(0)
    sampled = sampler.unroll(annotations, captions, lengths, sampling_probability=1.0)
    assert not torch.equal(sampled.inputs[:, 1:], sampled.best_words[:, :-1])  # draws, not the argmax
    seen = []
    original = ScheduledSamplingCaptioner.own_words

    def spy(self, log_probs):
        seen.append(log_probs.requires_grad)
        return original(self, log_probs)

    monkeypatch.setattr(ScheduledSamplingCaptioner, "own_words", spy)
    sampled = sampler.unroll(annotations, captions, lengths, sampling_probability=0.5)
    assert seen and not any(seen)  # the distribution is detached before a word is chosen from it
    assert sampled.inputs.dtype == torch.int64  # words, not embeddings: no straight-through path
    with pytest.raises(ValueError, match="model.own_word must be sample or argmax"):
        captioner(own_word="mean")


def test_overfits_one_batch_with_half_of_the_words_its_own(one_thread):
    torch.manual_seed(0)
    model = captioner("constant", epsilon=0.5, word_dim=16, hidden_dim=64, attention_dim=16)
    model.noise = torch.Generator().manual_seed(0)
    annotations = torch.randn(8, 9, 6)
    captions, lengths = captions_of(8, 6, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        out = model.unroll(annotations, captions, lengths, sampling_probability=model.own_word_probability())
        loss = model.losses(out, sampled=False)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert torch.equal(model.greedy(annotations, 8).words, captions)


def test_teacher_forced_totals_count_every_word_of_each_caption_and_nothing_after_it():
    torch.manual_seed(3)
    model = captioner().eval()
    annotations, (captions, _) = torch.randn(5, 9, 6), captions_of(5, 7, seed=2)
    lengths = torch.tensor([7, 3, 5, 1, 6])
    captions[torch.arange(5), lengths - 1] = EOS
    padded = torch.where(torch.arange(7) < lengths[:, None], captions, 0)
    with torch.no_grad():
        model.out_words.bias[5] = 60.0  # it ranks "5" first whatever it sees
        totals = model.teacher_forced_totals(annotations, padded, lengths)
        alone = [
            model.teacher_forced_totals(annotations[i : i + 1], padded[i : i + 1, :n], lengths[i : i + 1])
            for i, n in enumerate(lengths.tolist())
        ]
    assert torch.allclose(totals, torch.stack(alone).sum(0))
    inside = torch.arange(7) < lengths[:, None]
    assert totals[1] == ((padded == 5) & inside).sum() and totals[2] == lengths.sum()
    log_p = model.unroll(annotations, padded, lengths).word_log_probs.detach()
    assert totals[0].item() == pytest.approx(-(log_p * inside).sum().item(), rel=1e-6)


def test_each_test_image_is_teacher_forced_on_one_reference_by_its_index():
    references = ["a 1 and a 2", "a 2 and a 1", "a 1 to the left of a 2"]
    assert [teacher_reference(references, i) for i in (0, 1, 2, 3, 7)] == [
        references[i] for i in (0, 1, 2, 0, 1)
    ]


# --------------------------------------------------------------------------------------------------
# Harness runs


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    if not (repro.captions.java_available() and mnist.mnist_path("train-labels-idx1-ubyte.gz").exists()):
        pytest.skip("needs MNIST and Java")
    root = tmp_path_factory.mktemp("scheduled_sampling")
    return root, runs.module_smoke("scheduled_sampling", "mnist_inverse_sigmoid", root)


def test_smoke_run_scores_free_running_and_teacher_forced_and_logs_the_schedule(smoke_run):
    root, record = smoke_run
    metrics = record["metrics"]
    for beam in (1, 3):
        assert 0 <= metrics[f"BLEU-4@beam{beam}"] <= 100 and 0 <= metrics[f"exact@beam{beam}"] <= 100
        assert metrics[f"CIDEr@beam{beam}"] >= 0
    assert metrics["test_images"] == smoke_test_scenes()
    assert 0 <= metrics["tf_word_accuracy"] <= 100 and metrics["tf_nll_per_word"] > 0
    schedule = Schedule("inverse_sigmoid", k=3.5)
    assert metrics["final_teacher_forcing"] == pytest.approx(schedule(int(metrics["updates"])))
    work = root / "scheduled_sampling" / "mnist_inverse_sigmoid" / "smoke" / "seed1"
    checkpoints = sorted((work / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["epoch000.ckpt", "epoch001.ckpt"]
    # The schedule's i is in every checkpoint (pitfall 2): the second epoch ends where the run ended.
    assert torch.load(checkpoints[-1], weights_only=False)["global_step"] == metrics["updates"]
    with (work / "csv" / "metrics.csv").open() as f:
        logged = [
            (int(r["step"]), float(r["train/teacher_forcing"]))
            for r in csv.DictReader(f)
            if r.get("train/teacher_forcing")
        ]
    assert len(logged) >= 4
    for step, epsilon in logged:
        assert epsilon == pytest.approx(schedule(step), rel=1e-6)  # ε_i of the update it was used at


@needs_mnist_and_java
@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, harness_state):
    resumed, straight = runs.resumed_and_straight("scheduled_sampling", "mnist_linear", tmp_path)
    assert resumed["metrics"] == straight["metrics"]
    assert resumed["details"] == straight["details"]


@needs_mnist_and_java
@pytest.mark.slow
def test_ddp_two_cpu_processes_score_every_test_scene_once(tmp_path, harness_state):
    record = runs.ddp_smoke("scheduled_sampling", "mnist_exponential", tmp_path)
    assert record["metrics"]["test_images"] == smoke_test_scenes()
    assert 0 <= record["metrics"]["tf_word_accuracy"] <= 100 and record["metrics"]["tf_nll_per_word"] > 0


def smoke_test_scenes() -> int:
    """How many test scenes the smoke configs' 300 digits make."""
    data = CaptionedMNIST(limit=300)
    data.setup()
    return len(data.references("test"))


# --------------------------------------------------------------------------------------------------
# Figures and the ordering check


def fake_records(folder, tier: str, scores: dict[str, list[float]]) -> None:
    """Seed records (metrics only) and an aggregate for each experiment: BLEU-4 = METEOR = CIDEr = score."""
    for experiment, values in scores.items():
        where = folder / experiment / tier
        where.mkdir(parents=True)
        names = []
        for seed, value in enumerate(values, start=1):
            metrics = {key: value for key in (*figures.ORDERED_METRICS, "exact@beam3", "tf_word_accuracy")}
            metrics.update(updates=1250.0, final_teacher_forcing=0.1)
            (where / f"seed{seed}.json").write_text(json.dumps({"seed": seed, "metrics": metrics}))
            names.append(f"seed{seed}.json")
        (where / "aggregate.json").write_text(json.dumps({"records": names}))


def scores(**changes) -> dict[str, list[float]]:
    base = {name: [50.0, 51.0, 52.0] for name in figures.EXPERIMENTS}
    base["mnist_always"] = [10.0, 12.0, 11.0]
    return {**base, **changes}


def test_ordering_holds_on_the_papers_pattern_and_fails_otherwise(tmp_path):
    fake_records(tmp_path / "holds", "cpu", scores(mnist_linear=[49.5, 50.5, 51.5]))  # lower, within spread
    made = {p.name for p in figures.make_figures(tmp_path / "holds", "cpu")}
    assert made == {"schedules_cpu.png", "ordering_cpu.json", "comparison_cpu.png"}
    verdict = json.loads((tmp_path / "holds" / "ordering_cpu.json").read_text())
    assert verdict["holds"] is True and len(verdict["relations"]) == 3 * 4
    assert verdict["means"]["mnist_always"]["CIDEr@beam3"] == pytest.approx([11.0, 1.0])
    fake_records(tmp_path / "behind", "cpu", scores(mnist_exponential=[45.0, 46.0, 47.0]))
    assert figures.ordering(tmp_path / "behind", "cpu")["holds"] is False
    fake_records(tmp_path / "close", "cpu", scores(mnist_always=[47.0, 48.0, 49.0]))  # not far below
    verdict = figures.ordering(tmp_path / "close", "cpu")
    assert verdict["holds"] is False
    assert [r["holds"] for r in verdict["relations"] if r["claim"] == "mnist_baseline >> mnist_always"] == [
        False
    ] * 3
    partial = scores()
    del partial["mnist_always"]
    fake_records(tmp_path / "partial", "cpu", partial)
    assert figures.ordering(tmp_path / "partial", "cpu")["holds"] is None  # not run: no verdict


def test_figures_from_the_smoke_record(smoke_run, tmp_path):
    root, _ = smoke_run
    folder = tmp_path / "scheduled_sampling"
    shutil.copytree(root / "scheduled_sampling" / "mnist_inverse_sigmoid", folder / "mnist_inverse_sigmoid")
    (folder / "mnist_inverse_sigmoid" / "smoke" / "aggregate.json").write_text('{"records": ["seed1.json"]}')
    made = {p.name for p in figures.make_figures(folder, "smoke")}
    assert made == {"schedules_smoke.png", "ordering_smoke.json", "comparison_smoke.png"}
    verdict = json.loads((folder / "ordering_smoke.json").read_text())
    assert verdict["holds"] is None and verdict["seeds"] == {"mnist_inverse_sigmoid": 1}


# --------------------------------------------------------------------------------------------------
# expected.yaml (spec §5)

TABLE_1 = {  # spec §5: (BLEU-4, METEOR, CIDEr, evidence)
    "coco_baseline": (28.8, 24.2, 89.5, "secondary"),
    "coco_baseline_dropout": (28.1, 23.9, 87.0, "unverified"),
    "coco_always": (11.2, 15.7, 49.7, "secondary"),
    "coco_scheduled": (30.6, 24.3, 92.1, "secondary"),
    "coco_uniform": (29.2, 24.2, 90.9, "secondary"),
    "coco_baseline_ensemble10": (30.7, 25.1, 95.7, "secondary"),
    "coco_scheduled_ensemble5": (32.3, 25.4, 98.7, "secondary"),
}


TABLES_2_3 = {  # spec §5: Table 2 (F1) and Table 3 (frame error rates); LDC data, not implemented
    "parsing_baseline": {"F1": 86.54},
    "parsing_baseline_dropout": {"F1": 87.0},
    "parsing_scheduled": {"F1": 88.08},
    "parsing_scheduled_dropout": {"F1": 88.68},
    "speech_always": {"next_step_fer": 34.6, "decoding_fer": 35.8},
    "speech_baseline": {"next_step_fer": 15.0, "decoding_fer": 46.0},
    "speech_scheduled1": {"decoding_fer": 34.5},
}


def test_expected_holds_table_1_gating_at_full_only_and_our_benchmark_never_gates():
    paper = get_paper("scheduled_sampling")
    assert set(paper.experiments) == {*TABLE_1, *TABLES_2_3, *figures.EXPERIMENTS}
    for name, published in TABLES_2_3.items():
        experiment = paper.experiment(name)
        assert not experiment.implemented and "LDC" in experiment.note
        assert {m.key: m.published for m in experiment.metrics} == published
    for name, (*published, evidence) in TABLE_1.items():
        experiment = paper.experiment(name)
        table = {m.key: m for m in experiment.metrics if m.key in figures.ORDERED_METRICS}
        assert [table[key].published for key in figures.ORDERED_METRICS] == published
        assert {m.evidence for m in table.values()} == {evidence}
        gates = evidence == "secondary" and experiment.implemented
        for tier in ("smoke", "cpu", "full"):
            assert all(m.gates_at(tier) == (gates and tier == "full") for m in table.values()), (name, tier)
        assert experiment.data.name == "coco"
    assert [n for n in TABLE_1 if not paper.experiment(n).implemented] == [
        "coco_baseline_ensemble10",
        "coco_scheduled_ensemble5",
    ]
    for name in figures.EXPERIMENTS:
        experiment = paper.experiment(name)
        assert all(m.published is None and not m.gate for m in experiment.metrics)
        assert paper.tiers(name) == ["smoke", "cpu", "full"]


@pytest.mark.skipif((data_root() / "coco").exists(), reason="a COCO folder exists under the data root")
def test_without_coco_table_1_reads_not_run():
    experiment = get_paper("scheduled_sampling").experiment("coco_scheduled")
    assert not experiment.data_present()
    verdict = judge(experiment, [], "full", experiment.data_present())
    assert verdict["verdict"] == NOT_RUN and {m["verdict"] for m in verdict["metrics"]} == {NOT_RUN}


# --------------------------------------------------------------------------------------------------
# The captioned scenes' training caption: one a scene for Scheduled Sampling


@pytest.mark.skipif(
    not mnist.mnist_path("train-labels-idx1-ubyte.gz").exists(),
    reason=f"no MNIST under {data_root()}; set REPRO_DATA=../shared/data",
)
@pytest.mark.parametrize("target", ["canonical", "random"])
def test_a_canonical_target_is_each_scenes_first_reference_and_a_random_one_varies(target, monkeypatch):
    data = CaptionedMNIST(limit=300, batch_size=30, target=target)
    data.setup()
    drawn = []
    real_scenes = data.scenes

    def scenes(*args):
        made = real_scenes(*args)
        drawn.append(made["references"])
        return made

    monkeypatch.setattr(data, "scenes", scenes)
    batch = next(iter(data.training_batches(0)))
    words = [
        " ".join(data.vocabulary[token] for token in row[: length - 1])
        for row, length in zip(batch["captions"].tolist(), batch["lengths"].tolist(), strict=True)
    ]
    firsts = [references[0] for references in drawn[0]]
    assert all(caption in references for caption, references in zip(words, drawn[0], strict=True))
    assert (words == firsts) == (target == "canonical")


def test_every_scheduled_sampling_scene_experiment_trains_on_one_caption_a_scene():
    paper = get_paper("scheduled_sampling")
    names = [name for name in paper.experiments if name.startswith("mnist_")]
    assert len(names) == 6
    for name in names:
        for tier in paper.tiers(name):
            data = repro_config.load(paper.config_path(name, tier))["data"]["init_args"]
            assert data["target"] == "canonical", (name, tier)
