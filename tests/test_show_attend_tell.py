"""Tests for papers/show_attend_tell (attention, losses, hard attention's estimator, decoding, the captioned
MNIST scenes, the Flickr8k files and feature cache, harness runs) against specs/show_attend_tell.md.

Tests that read MNIST skip when the data root has no ``mnist`` folder, the Flickr8k tests when it has no
``flickr8k`` folder, and every test that scores captions when no Java runtime works (pycocoevalcap's PTB
tokenizer and METEOR). Smoke configs skip METEOR (model.meteor: false) to keep the file fast.
"""

from __future__ import annotations

import csv
import math
import re
import shutil

import numpy as np
import pytest
import torch

import repro.captions
from papers.show_attend_tell.model import ShowAttendTell, Unrolled, caption_metrics, length_ratio
from repro import config as config_lib
from repro.config import ConfigError
from repro.data import DataError, data_root, mnist
from repro.data.captioning import (
    EOS,
    FEATURE_SHAPE,
    FLICKR8K_SHA256,
    SCENE_WORDS,
    CaptionedMNIST,
    FeatureCaptions,
    attention_hits,
    build_vocabulary,
    compose,
    describe,
    ink_boxes,
    read_split,
    read_token_file,
    tokenize,
)
from repro.papers import get_paper
from tests import runs

needs_mnist = pytest.mark.skipif(
    not mnist.mnist_path("train-labels-idx1-ubyte.gz").exists(),
    reason=f"no MNIST under {data_root()}; set REPRO_DATA=../shared/data",
)
needs_flickr8k = pytest.mark.skipif(
    not (data_root() / "flickr8k").exists(), reason=f"no flickr8k folder under {data_root()}"
)
needs_java = pytest.mark.skipif(
    not repro.captions.java_available(), reason="no Java runtime: PTB tokenizer and METEOR"
)


def tiny(**overrides) -> ShowAttendTell:
    """A small decoder over given annotation vectors (no encoder), deterministic (no dropout)."""
    settings = dict(vocab_size=12, word_dim=8, hidden_dim=16, annotation_dim=6, attention_dim=8, dropout=0.0)
    return ShowAttendTell(**{**settings, **overrides})


def captions_of(batch: int, steps: int, vocab: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random captions of ``steps`` − 1 words and <eos> (no word is <eos>), and their lengths."""
    generator = torch.Generator().manual_seed(seed)
    words = torch.randint(2, vocab, (batch, steps), generator=generator)
    words[:, -1] = EOS
    return words, torch.full((batch,), steps)


def gradients(module, loss) -> dict[str, torch.Tensor | None]:
    module.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {name: p.grad for name, p in module.named_parameters()}


def nonzero(grad) -> bool:
    return grad is not None and bool(grad.abs().sum() > 0)


# --------------------------------------------------------------------------------------------------
# Attention, gate, deep output (spec §3)


def test_alpha_is_a_distribution_over_the_cells():
    torch.manual_seed(0)
    model = tiny()
    annotations = torch.randn(5, 9, 6)
    out = model.unroll(annotations, *captions_of(5, 4))
    assert out.alphas.shape == (5, 4, 9)
    assert (out.alphas > 0).all()
    assert torch.allclose(out.alphas.sum(-1), torch.ones(5, 4))


def test_step_is_the_papers_equations_with_the_gate_and_the_deep_output():
    """The logits are L_o(E y_{t-1} + L_h h_t + L_z ẑ_t) with h_t the NEW state and ẑ_t = β_t Σ α a."""
    torch.manual_seed(1)
    model = tiny()
    a = torch.randn(3, 9, 6)
    projected = model.attention.project(a)
    h0, c0 = model.initial_state(a)
    words = torch.tensor([4, 7, 2])
    out = model.step(words, (h0, c0), a, projected)
    alpha = torch.softmax(
        model.attention.score(torch.tanh(projected + model.attention.hidden(h0)[:, None])), 1
    )
    beta = torch.sigmoid(model.selector(h0))
    z = beta * (alpha * a).sum(1)
    e = model.embedding(words)
    h1, c1 = model.lstm(torch.cat([e, z], 1), (h0, c0))
    expected = model.out_words(e + model.out_hidden(h1) + model.out_context(z))
    assert torch.allclose(out.alpha, alpha.squeeze(-1), atol=1e-6)
    assert torch.allclose(out.state[0], h1, atol=1e-6) and torch.allclose(out.state[1], c1, atol=1e-6)
    assert torch.allclose(out.logits, expected, atol=1e-5)
    # The first step has no previous word: E y_{-1} = 0.
    first = model.step(torch.full((3,), -1), (h0, c0), a, projected)
    h1, _ = model.lstm(torch.cat([torch.zeros(3, 8), z], 1), (h0, c0))
    assert torch.allclose(
        first.logits, model.out_words(model.out_hidden(h1) + model.out_context(z)), atol=1e-5
    )
    assert torch.equal(model.initial_state(a)[0], model.init_h(a.mean(1)))


def test_the_gate_scales_the_context():
    torch.manual_seed(2)
    model = tiny()
    a = torch.randn(4, 9, 6)
    state = model.initial_state(a)
    with torch.no_grad():
        model.selector.weight.zero_()
        model.selector.bias.fill_(-40.0)  # β = σ(-40) ≈ 0: the context is shut
    shut = model.step(torch.full((4,), 3), state, a, model.attention.project(a))
    blind = model.step(torch.full((4,), 3), state, torch.zeros_like(a), model.attention.project(a))
    assert torch.allclose(shut.logits, blind.logits, atol=1e-6)
    with torch.no_grad():
        model.selector.bias.fill_(40.0)  # β = 1: the plain expectation
    ungated = tiny(selector=False)
    ungated.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("selector")})
    opened = model.step(torch.full((4,), 3), state, a, model.attention.project(a))
    plain = ungated.step(torch.full((4,), 3), state, a, ungated.attention.project(a))
    assert torch.allclose(opened.logits, plain.logits, atol=1e-6)
    assert not torch.allclose(shut.logits, opened.logits, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# The training objective (spec §3) and hard attention's estimator (spec §3, pitfall 7)


def unrolled_from(alphas: torch.Tensor) -> Unrolled:
    batch, steps, _ = alphas.shape
    zeros = torch.zeros(batch, steps)
    mask = torch.ones(batch, steps, dtype=torch.bool)
    return Unrolled(zeros, alphas, zeros, zeros, zeros.long(), mask, zeros.long())


def test_doubly_stochastic_penalty_pushes_each_cells_total_attention_toward_one():
    """λ Σ_i (1 − Σ_t α_ti)²: 4 steps all looking at cell 0 of 4; a gradient step spreads them out."""
    energies = torch.tensor([[4.0, 0.0, 0.0, 0.0]] * 4).requires_grad_()
    model = tiny(doubly_stochastic=1.0)
    parts = model.losses(unrolled_from(torch.softmax(energies, -1)[None]), sampled=False)
    coverage = torch.softmax(energies, -1).sum(0)
    assert parts["doubly_stochastic"].item() == pytest.approx(((1 - coverage) ** 2).sum().item())
    assert parts["loss"].item() == pytest.approx(parts["nll"].item() + parts["doubly_stochastic"].item())
    parts["loss"].backward()
    moved = torch.softmax(energies.detach() - 0.5 * energies.grad, -1).sum(0)
    assert moved[0] < coverage[0] - 0.05  # the over-attended cell gets less
    assert (moved[1:] > coverage[1:] + 0.01).all()  # the neglected ones more
    assert ((1 - moved) ** 2).sum() < ((1 - coverage) ** 2).sum()
    off = tiny(doubly_stochastic=0.0).losses(unrolled_from(torch.softmax(energies, -1)[None]), sampled=False)
    assert off["loss"].item() == pytest.approx(off["nll"].item())


def test_hard_baseline_moves_as_b_is_09_b_plus_01_log_p_and_the_advantage_uses_the_old_b():
    torch.manual_seed(3)
    model = tiny(attention="hard")
    model.baseline.fill_(-7.0)
    out = model.unroll(torch.randn(6, 9, 6), *captions_of(6, 5), sample=True)
    log_p = out.word_log_probs.sum(1).detach()
    parts = model.losses(out, sampled=True)
    assert model.baseline.item() == pytest.approx(0.9 * -7.0 + 0.1 * log_p.mean().item(), rel=1e-6)
    expected = -((log_p + 7.0) * out.location_log_probs.sum(1)).mean()
    assert parts["reinforce"].item() == pytest.approx(expected.item(), rel=1e-6)
    entropy = -(out.alphas * out.alphas.log()).sum(-1).sum(1).mean()
    assert parts["entropy"].item() == pytest.approx(entropy.item(), rel=1e-5)
    before = model.baseline.clone()
    model.losses(out, sampled=False)  # an expected-context step leaves b alone
    assert torch.equal(model.baseline, before)


def test_the_sampled_path_reaches_the_attention_network_only_through_reinforce():
    torch.manual_seed(4)
    model = tiny(attention="hard")
    annotations, (captions, lengths) = torch.randn(6, 9, 6), captions_of(6, 5)
    out = model.unroll(annotations, captions, lengths, sample=True)
    assert ((out.location_log_probs < 0) & out.mask).all()  # log α_{t,s_t} of a real sample
    parts = model.losses(out, sampled=True)
    attention = [name for name, _ in model.named_parameters() if name.startswith("attention.")]
    nll = gradients(model, parts["nll"])
    assert not any(nonzero(nll[name]) for name in attention)  # the locations are samples
    assert (
        nonzero(nll["out_words.weight"])
        and nonzero(nll["lstm.weight_ih"])
        and nonzero(nll["selector.weight"])
    )
    reinforce = gradients(model, parts["reinforce"])
    assert all(nonzero(reinforce[name]) for name in attention)
    assert not nonzero(reinforce["out_words.weight"])  # the reward is a constant to REINFORCE
    # With the expected context (half of the steps) the likelihood's gradient reaches the attention directly.
    expected = model.losses(model.unroll(annotations, captions, lengths, sample=False), sampled=False)
    direct = gradients(model, expected["nll"])
    assert all(nonzero(direct[name]) for name in attention)
    assert "reinforce" not in expected


def test_hard_steps_use_the_expected_context_half_of_the_time():
    model = tiny(attention="hard", expected_context_probability=0.5)
    model.noise = torch.Generator().manual_seed(0)
    draws = [model.samples_locations() for _ in range(1000)]
    assert 0.45 < np.mean(draws) < 0.55
    assert not any(
        tiny(attention="hard", expected_context_probability=1.0).samples_locations() for _ in range(50)
    )
    assert all(
        tiny(attention="hard", expected_context_probability=0.0).samples_locations() for _ in range(50)
    )
    assert not any(tiny(attention="soft").samples_locations() for _ in range(50))


def test_sampling_probability_feeds_the_models_own_words_back():
    """The hook Scheduled Sampling needs: 0 is teacher forcing; 1 feeds the model's samples after step 0."""
    torch.manual_seed(5)
    model = tiny()
    annotations, (captions, lengths) = torch.randn(4, 9, 6), captions_of(4, 6)
    forced = model.unroll(annotations, captions, lengths)
    assert (forced.inputs[:, 0] == -1).all() and torch.equal(forced.inputs[:, 1:], captions[:, :-1])
    with torch.no_grad():
        model.out_words.bias[5] = 60.0  # the model says "5" whatever it sees
    own = model.unroll(annotations, captions, lengths, sampling_probability=1.0)
    assert (own.inputs[:, 1:] == 5).all()
    assert torch.equal(
        own.word_log_probs[:, 0], model.unroll(annotations, captions, lengths).word_log_probs[:, 0]
    )
    assert tiny(sampling_probability=0.25).own_word_probability() == 0.25  # what training_step passes on


# --------------------------------------------------------------------------------------------------
# Free-running decoding (spec §6, pitfalls 1 and 3)


def sentence_log_prob(model, annotations, words) -> torch.Tensor:
    """log p of each decoded caption (its <eos> included when it has one), scored with teacher forcing."""
    ends = [(row == EOS).nonzero()[0, 0].item() + 1 if (row == EOS).any() else len(row) for row in words]
    lengths = torch.tensor(ends)
    with torch.no_grad():
        out = model.unroll(annotations, words, lengths)
    return (out.word_log_probs * out.mask).sum(1)


def test_beam_1_is_greedy_decoding():
    torch.manual_seed(6)
    model = tiny().eval()
    annotations = torch.randn(16, 9, 6)
    greedy, beam = model.greedy(annotations, 8), model.beam_search(annotations, 1, 8)
    assert torch.equal(greedy.words, beam.words)
    assert torch.allclose(greedy.scores, beam.scores, atol=1e-5)
    assert torch.allclose(greedy.alphas, beam.alphas)


def test_beam_search_batched_equals_one_image_at_a_time():
    torch.manual_seed(7)
    model = tiny(vocab_size=6).eval()
    with torch.no_grad():
        model.out_words.bias[EOS] = 1.5  # captions of different lengths finish at different steps
    annotations = torch.randn(10, 9, 6)
    batched = model.beam_search(annotations, 3, 7)
    lengths = set()
    for i in range(10):
        alone = model.beam_search(annotations[i : i + 1], 3, 7)
        width = alone.words.shape[1]
        lengths.add(width)
        assert torch.equal(batched.words[i, :width], alone.words[0])
        assert (batched.words[i, width:] == EOS).all()
        assert batched.scores[i].item() == pytest.approx(alone.scores[0].item(), abs=1e-5)
        assert torch.allclose(batched.alphas[i, :width], alone.alphas[0], atol=1e-6)
    assert len(lengths) > 1


def test_beam_k_finds_a_caption_at_least_as_likely_as_greedy_and_scores_are_its_log_prob():
    torch.manual_seed(8)
    model = tiny(vocab_size=8).eval()
    with torch.no_grad():
        model.out_words.bias[EOS] = 0.3  # greedy captions of 0 to 10 words
    annotations = torch.randn(32, 9, 6)
    greedy = model.greedy(annotations, 10)
    for k in (2, 3, 5):
        beam = model.beam_search(annotations, k, 10)
        assert (beam.scores >= greedy.scores - 1e-5).all()
        assert torch.allclose(beam.scores, sentence_log_prob(model, annotations, beam.words), atol=1e-4)
    assert (model.beam_search(annotations, 5, 10).scores > greedy.scores + 1e-3).any()  # beam search matters
    assert torch.allclose(greedy.scores, sentence_log_prob(model, annotations, greedy.words), atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Captioned MNIST scenes (ours)


def blobs(count: int, rng) -> np.ndarray:
    """Digit stand-ins: a random rectangle of ink (values 1..255) somewhere in a 28 × 28 image."""
    digits = np.zeros((count, 28, 28), dtype=np.uint8)
    for d in digits:
        top, left = rng.integers(0, 10, 2)
        height, width = rng.integers(4, 19, 2)
        d[top : top + height, left : left + width] = rng.integers(1, 256, (height, width))
    return digits


def test_scenes_place_whole_digits_that_never_overlap():
    rng = np.random.default_rng(0)
    digits = blobs(60, rng)
    boxes = ink_boxes(digits)
    chosen = np.stack([rng.permutation(60)[:3] for _ in range(400)])
    chosen[::2, 2] = -1  # every other scene has two digits
    canvases, placed = compose(digits, boxes, chosen, 64, 2, rng)
    assert canvases.shape == (400, 64, 64) and (placed[::2, 2] == -1).all()
    for canvas, where, which in zip(canvases, placed, chosen, strict=True):
        ink = np.zeros_like(canvas, dtype=bool)
        present = [j for j in range(3) if which[j] >= 0]
        for j in present:
            top, left, bottom, right = where[j]
            t, lft, b, r = boxes[which[j]]
            assert np.array_equal(canvas[top:bottom, left:right], digits[which[j], t:b, lft:r])
            ink[top:bottom, left:right] = True
        assert not canvas[~ink].any()  # nothing outside the digits' boxes
        for i in present:
            for j in present:
                if i < j:
                    (ti, li, bi, ri), (tj, lj, bj, rj) = where[i], where[j]
                    assert bi + 2 <= tj or bj + 2 <= ti or ri + 2 <= lj or rj + 2 <= li


def test_templates_say_what_is_true_of_the_scene():
    # A 3 above a 7 whose box centres share a column: no left/right sentences, no "from left to right".
    labels, boxes = np.array([3, 7, -1]), np.array([[2, 20, 22, 36], [30, 22, 50, 34], [-1, -1, -1, -1]])
    assert sorted(describe(labels, boxes)) == sorted(
        ["from top to bottom a 3 and a 7", "a 3 above a 7", "a 7 below a 3", "a 3 and a 7", "a 7 and a 3"]
    )
    rng = np.random.default_rng(1)
    digits = blobs(30, rng)
    chosen = np.stack([rng.permutation(30)[:3] for _ in range(300)])
    canvases, placed = compose(digits, ink_boxes(digits), chosen, 64, 2, rng)
    checked = 0
    for scene in range(300):
        scene_labels = np.arange(3)  # one label per digit so that a sentence names boxes unambiguously
        box = dict(zip("012", placed[scene], strict=True))
        for sentence in describe(scene_labels, placed[scene]):
            if m := re.fullmatch(
                r"a (\d) (above|below|to the left of|to the right of) a (\d)( and a \d)?", sentence
            ):
                (t1, l1, b1, r1), (t2, l2, b2, r2) = box[m[1]], box[m[3]]
                holds = {
                    "above": b1 <= t2,
                    "below": b2 <= t1,
                    "to the left of": r1 <= l2,
                    "to the right of": r2 <= l1,
                }
                assert holds[m[2]], (sentence, box)
                checked += 1
            elif m := re.fullmatch(r"from (left to right|top to bottom) (.*)", sentence):
                named = re.findall(r"a (\d)", m[2])
                axis = 1 if m[1] == "left to right" else 0
                centres = [(box[d][axis] + box[d][axis + 2]) / 2 for d in named]
                assert centres == sorted(centres) and len(named) == 3
    assert checked > 600


@needs_mnist
def test_fixed_scenes_do_not_depend_on_the_run_but_training_scenes_do():
    a, b = CaptionedMNIST(limit=200, batch_size=10, seed=1), CaptionedMNIST(limit=200, batch_size=10, seed=2)
    for dm in (a, b):
        dm.setup()
    assert np.array_equal(a.fixed_set("test")["canvases"], b.fixed_set("test")["canvases"])
    assert a.references("test") == b.references("test")
    assert not np.array_equal(a.fixed_set("test")["canvases"][:5], a.fixed_set("valid")["canvases"][:5])
    first = next(iter(a.training_batches(0)))
    assert not torch.equal(first["images"], next(iter(b.training_batches(0)))["images"])
    assert not torch.equal(first["images"], next(iter(a.training_batches(1)))["images"])
    assert torch.equal(first["captions"], next(iter(a.training_batches(0)))["captions"])
    assert first["images"].shape == (10, 1, 64, 64) and first["images"].max() <= 1
    captions, lengths = first["captions"], first["lengths"]
    assert (captions[torch.arange(10), lengths - 1] == EOS).all() and (
        captions[:, : lengths.min() - 1] > 1
    ).all()
    scenes = sum(len(batch["lengths"]) for batch in a.training_batches(0))
    assert 200 / 3 <= scenes <= 200 / 2  # each training digit at most once, 2 or 3 to a scene


def test_attention_accuracy_counts_peaks_on_the_named_digits_box():
    words = torch.tensor([[SCENE_WORDS.index(w) for w in ["a", "3", "above", "a", "7", "a", "5", "<eos>"]]])
    labels, boxes = torch.tensor([[3, 7, -1]]), torch.tensor([[[0, 0, 20, 20], [40, 40, 60, 60], [-1] * 4]])
    alphas = torch.full((1, 8, 64), 1 / 64)
    alphas[0, 1, 2 * 8 + 2] = 1.0  # "3": cell (2, 2) = pixels 16..23, inside the 3's box (0..19)
    alphas[0, 4, 3 * 8 + 3] = 1.0  # "7": cell (3, 3) = pixels 24..31, outside the 7's box (40..59)
    hits, named = attention_hits(words, alphas, labels, boxes, canvas=64)
    assert (hits.item(), named.item()) == (1, 2)  # "5" names no digit of the scene: not counted


# --------------------------------------------------------------------------------------------------
# Flickr8k files (spec §2) and the feature cache


@needs_flickr8k
def test_flickr8k_token_file_splits_and_vocabulary():
    folder = data_root() / "flickr8k"
    captions = read_token_file(folder / "Flickr8k.token.txt")
    assert sum(len(c) for c in captions.values()) == 40_460 and len(captions) == 8_092
    assert all(len(c) == 5 for c in captions.values())
    assert "2258277193_586949ec62.jpg" in captions  # the .jpg.1#k quirk, read as the image it names
    assert not any(name.endswith(".1") for name in captions)
    assert captions["1000268201_693b08cb0e.jpg"][0].startswith("A child in a pink dress")
    splits = [read_split(folder / name) for name in list(FLICKR8K_SHA256)[1:]]
    assert [len(s) for s in splits] == [6_000, 1_000, 1_000]
    assert len(set().union(*map(set, splits))) == 8_000 and set().union(*map(set, splits)) <= set(captions)
    vocabulary = build_vocabulary([tokenize(c) for name in splits[0] for c in captions[name]], 10_000)
    assert vocabulary[:2] == ["<eos>", "UNK"] and vocabulary[2] == "a" and len(vocabulary) <= 10_000
    assert len(vocabulary) == 7_632  # every training word fits: the 10,000 cap never binds on Flickr8k
    assert all(re.fullmatch(r"[a-z0-9]+", w) for w in vocabulary[2:])


def test_tokenize_lowercases_and_deletes_punctuation():
    assert tokenize("A dog's T-shirt , running .") == ["a", "dogs", "tshirt", "running"]


def toy_caption_set(root, shape=FEATURE_SHAPE, features=True) -> None:
    """A caption set 'toy' of 8 images in Flickr8k's file formats, with a feature cache when asked."""
    folder = root / "toy"
    (folder / "vgg19_conv5_4").mkdir(parents=True)
    names = [f"img{i}.jpg" for i in range(8)]
    lines = [f"{n}#{k}\tA dog number {i} runs{'!' * k} ." for i, n in enumerate(names) for k in range(2)]
    (folder / "captions.token").write_text("\n".join(lines) + "\n")
    for split, chosen in (("train", names[:4]), ("valid", names[4:6]), ("test", names[6:])):
        (folder / f"{split}.txt").write_text("\n".join(chosen) + "\n")
    if features:
        for i, name in enumerate(names):
            np.save(folder / "vgg19_conv5_4" / f"{name}.npy", np.full(shape, i, dtype=np.float16))


def toy_data(**overrides) -> FeatureCaptions:
    files = dict(
        token_file="captions.token", train_list="train.txt", valid_list="valid.txt", test_list="test.txt"
    )
    return FeatureCaptions(
        dataset="toy", vocab_size=5, batch_size=3, eval_batch_size=4, **{**files, **overrides}
    )


def test_feature_cache_serves_annotation_vectors_and_captions(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path))
    toy_caption_set(tmp_path)
    data = toy_data()
    data.setup()
    assert data.vocabulary == ["<eos>", "UNK", "a", "dog", "number"]  # 3 most frequent; ties alphabetical
    assert data.references("test")[1] == ["A dog number 7 runs .", "A dog number 7 runs! ."]
    batches = list(data.training_batches(0))
    assert sum(len(b["lengths"]) for b in batches) == 8  # 4 images x 2 captions
    first = batches[0]
    assert first["features"].shape[1:] == FEATURE_SHAPE and first["features"].dtype == torch.float32
    assert first["captions"][0].tolist() == [2, 3, 4, 1, 1, 0]  # a dog number UNK UNK <eos>
    test = list(data.evaluation_batches("test"))
    assert [b["index"].tolist() for b in test] == [[0, 1]] and test[0]["features"][1, 0, 0] == 7


def test_missing_features_name_what_is_missing_and_how_to_make_them(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path))
    toy_caption_set(tmp_path, features=False)
    with pytest.raises(DataError) as err:
        toy_data(images="/photos/toy").setup()
    message = str(err.value)
    what = ("8 of the 8 toy images", "vgg19_conv5_4", "img0.jpg.npy", "196 x 512", "VGG-19 conv5_4")
    how = ("repro features PAPER EXPERIMENT --images /photos/toy", "data.features")
    for part in what + how:
        assert part in message, part
    wrong = tmp_path / "wrong"
    toy_caption_set(wrong, shape=(14, 14, 512))
    monkeypatch.setenv("REPRO_DATA", str(wrong))
    data = toy_data()
    data.setup()
    with pytest.raises(
        DataError, match=r"img\d.jpg.npy: features of shape \(14, 14, 512\), expected \(196, 512\)"
    ):
        next(iter(data.training_batches(0)))


@needs_flickr8k
def test_flickr8k_without_features_says_so(tmp_path):
    with pytest.raises(
        DataError, match="of the 8000 flickr8k images.*repro features PAPER EXPERIMENT --images DIR"
    ):
        FeatureCaptions(features=str(tmp_path)).setup()


@needs_flickr8k
@needs_java
def test_flickr8k_smoke_run_on_stand_in_features(tmp_path, monkeypatch, harness_state):
    """The real-data path end to end: the official text files, random arrays standing in for the features."""
    folder = tmp_path / "data" / "flickr8k"
    (folder / "vgg19_conv5_4").mkdir(parents=True)
    for name in FLICKR8K_SHA256:
        (folder / name).symlink_to(data_root() / "flickr8k" / name)
    rng = np.random.default_rng(0)
    for name in list(FLICKR8K_SHA256)[1:]:  # the split lists: the smoke config reads 40 images of each
        for image in read_split(folder / name)[:40]:
            np.save(folder / "vgg19_conv5_4" / f"{image}.npy", rng.random(FEATURE_SHAPE, dtype=np.float32))
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "data"))
    assert get_paper("show_attend_tell").experiment("flickr8k_soft").data_present()
    record = runs.smoke("show_attend_tell", "flickr8k_soft", tmp_path / "out")
    assert record["metrics"]["test_images"] == 40 and 0 <= record["metrics"]["BLEU-4@beam3"] <= 100
    assert "attention_accuracy@beam3" not in record["metrics"]  # no digit boxes on photographs
    assert {d["sha256"] for d in record["data"]} == set(FLICKR8K_SHA256.values())
    assert record["details"]["attention_maps"]["cells"] == 196


def test_configs_that_cannot_work_are_refused_when_read():
    paper = get_paper("show_attend_tell")
    with pytest.raises(ConfigError, match="model.encoder=mnist_conv"):
        config_lib.load(paper.config_path("mnist_soft", "smoke"), ["model.encoder=null"])
    with pytest.raises(ConfigError, match="model.encoder=null"):
        config_lib.load(paper.config_path("flickr8k_soft", "smoke"), ["model.encoder=mnist_conv"])
    with pytest.raises(ConfigError, match="vocab_size 5000 differs from data.vocab_size"):
        config_lib.load(paper.config_path("flickr8k_soft", "full"), ["model.vocab_size=5000"])
    with pytest.raises(ConfigError, match="the features' 512 channels"):
        config_lib.load(paper.config_path("coco_hard", "full"), ["model.annotation_dim=256"])


# --------------------------------------------------------------------------------------------------
# Training


def test_overfits_one_batch(one_thread):
    torch.manual_seed(0)
    model = ShowAttendTell(
        vocab_size=12, word_dim=16, hidden_dim=64, annotation_dim=6, attention_dim=16, dropout=0.0
    )
    annotations = torch.randn(8, 9, 6)
    captions, lengths = captions_of(8, 6, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = model.losses(model.unroll(annotations, captions, lengths), sampled=False)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert torch.equal(model.greedy(annotations, 8).words, captions)


@needs_java
def test_caption_metrics_without_meteor_are_score_captions_without_it(monkeypatch):
    monkeypatch.setattr(repro.captions, "meteor_score", lambda gts, res: math.nan)  # skip its slow Java start
    hypotheses = {1: "a 3 above a 7", 2: "a 4 and a 4", 3: "a 1"}
    references = {
        1: ["a 3 above a 7", "a 7 below a 3"],
        2: ["a 4 and a 2", "a 2 and a 4"],
        3: ["a 1 and a 2", "a 1 alone"],
    }
    full = caption_metrics(hypotheses, references, beam=3, meteor=True)
    quick = caption_metrics(hypotheses, references, beam=3, meteor=False)
    assert set(full) - set(quick) == {"METEOR@beam3"}
    assert quick == pytest.approx({k: v for k, v in full.items() if k != "METEOR@beam3"})
    assert 0 < quick["BLEU-1@beam3"] <= 100  # x100: the paper's scale
    # Hypothesis words 5 + 5 + 2 over the closest references' 5 + 5 + 3.
    assert length_ratio(hypotheses, references) == pytest.approx(12 / 13)


# --------------------------------------------------------------------------------------------------
# Harness runs


@pytest.fixture(scope="module")
def hard_smoke(tmp_path_factory):
    if not (repro.captions.java_available() and mnist.mnist_path("train-labels-idx1-ubyte.gz").exists()):
        pytest.skip("needs MNIST and Java")
    root = tmp_path_factory.mktemp("sat")
    return root, runs.module_smoke("show_attend_tell", "mnist_hard", root)


def test_smoke_run_writes_scores_at_both_beams_checkpoints_and_logs(hard_smoke):
    root, record = hard_smoke
    metrics = record["metrics"]
    data = CaptionedMNIST(limit=300)
    data.setup()
    assert metrics["test_images"] == len(data.references("test"))
    for beam in (1, 3):
        for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr", "attention_accuracy", "length_ratio"):
            assert f"{name}@beam{beam}" in metrics
        assert (
            0 <= metrics[f"BLEU-4@beam{beam}"] <= 100
            and 0 <= metrics[f"attention_accuracy@beam{beam}"] <= 100
        )
    assert "METEOR@beam3" not in metrics  # the smoke config skips it
    assert metrics["val_bleu4_proxy"] == max(h["val/bleu4_proxy"] for h in record["details"]["val_curve"])
    maps = record["details"]["attention_maps"]
    assert maps["beam"] == 3 and maps["cells"] == 64 and len(maps["images"]) == 6
    for example in maps["images"]:
        assert len(example["alphas"]) in (len(example["words"]), len(example["words"]) + 1)
        assert all(sum(alpha) == pytest.approx(1, abs=1e-3) for alpha in example["alphas"])
    work = root / "show_attend_tell" / "mnist_hard" / "smoke" / "seed1"
    assert sorted(p.name for p in (work / "checkpoints").glob("*.ckpt")) == ["epoch000.ckpt", "epoch001.ckpt"]
    with (work / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    sampled = [float(r["train/sampled"]) for r in rows if r.get("train/sampled")]
    assert 0 < np.mean(sampled) < 1  # some steps sampled locations, some used the expected context
    assert any(r.get("train/reinforce") for r in rows) and any(r.get("val/bleu4_proxy") for r in rows)


def test_figures_from_a_record(hard_smoke, tmp_path):
    from papers.show_attend_tell import figures

    root, _ = hard_smoke
    folder = tmp_path / "show_attend_tell"
    shutil.copytree(root / "show_attend_tell" / "mnist_hard", folder / "mnist_hard")
    (folder / "mnist_hard" / "smoke" / "aggregate.json").write_text('{"records": ["seed1.json"]}')
    made = {p.name for p in figures.make_figures(folder, "smoke")}
    assert made == {"samples.png", "bleu_curve_smoke.png", "attention_mnist_hard_smoke.png"}


@needs_mnist
@needs_java
@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, harness_state):
    resumed, straight = runs.resumed_and_straight("show_attend_tell", "mnist_hard", tmp_path)
    assert resumed["metrics"] == straight["metrics"]
    assert resumed["details"] == straight["details"]


@needs_mnist
@needs_java
@pytest.mark.slow
def test_ddp_two_cpu_processes_score_every_test_scene_once(tmp_path, harness_state):
    record = runs.ddp_smoke("show_attend_tell", "mnist_soft", tmp_path)
    data = CaptionedMNIST(limit=300)
    data.setup()
    assert record["metrics"]["test_images"] == len(data.references("test"))
    assert 0 <= record["metrics"]["BLEU-4@beam3"] <= 100
