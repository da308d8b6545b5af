"""Golden-value tests of the caption metrics: hand-computed BLEU and ROUGE-L, CIDEr-D from an independent
implementation, METEOR pinned, and the Java, validation and key-naming rules around them.

Each real METEOR call loads its paraphrase table (seconds), so only the METEOR tests pay for it; the others
replace METEOR with NaN and keep everything else (Java tokenizer, BLEU, ROUGE-L, CIDEr) real.
"""

import math
import os
from collections import Counter
from pathlib import Path

import pytest
from pycocoevalcap.meteor.meteor import Meteor

import repro.captions
from repro.captions import (
    BLEU_PROXY_KEY,
    JavaMissingError,
    bleu_proxy,
    java_available,
    require_java,
    score_captions,
    tokenize,
)

needs_java = pytest.mark.skipif(not java_available(), reason="no Java runtime: PTB tokenizer and METEOR")

METRICS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]

# Two images, already lowercase and punctuation-free, so PTB tokenization leaves them as they are.
BLEU_HYP = {"a": "the cat the cat on the mat", "b": "a dog"}
BLEU_REFS = {
    "a": ["the cat is on the mat", "there is a cat on the mat"],
    "b": ["a dog barks loudly", "the dog is barking"],
}
# Corpus-level BLEU as pycocoevalcap computes it: clipped n-gram matches and n-gram counts summed over images,
# p_n = matches / n-grams, BLEU-N = (p_1 ... p_N)^(1/N) * BP with BP = exp(1 - r/c) when c < r, where c sums
# hypothesis lengths and r sums, per image, the reference length closest to the hypothesis length.
#   a: 7 words. Unigrams the x3 (refs allow 2), cat x2 (allow 1), on, mat -> 5 of 7.
#      Bigrams "the cat" x2 (allow 1), "cat the" (0), "cat on", "on the", "the mat" -> 4 of 6.
#      Trigrams "cat on the", "on the mat" of 5 -> 2 of 5. 4-grams "cat on the mat" -> 1 of 4.
#      Reference lengths 6 and 7: closest 7.
#   b: 2 words. "a", "dog" -> 2 of 2; "a dog" -> 1 of 1; no tri- or 4-grams. Reference lengths 4, 4: 4.
#   p_1 = 7/9, p_2 = 5/7, p_3 = 2/5, p_4 = 1/4; c = 9, r = 11, BP = exp(1 - 11/9) = exp(-2/9).
BP = math.exp(-2 / 9)
BLEU_EXPECTED = {
    "BLEU-1": 7 / 9 * BP,  # 0.622796
    "BLEU-2": math.sqrt(7 / 9 * 5 / 7) * BP,  # sqrt(5/9) * BP = 0.596834
    "BLEU-3": (7 / 9 * 5 / 7 * 2 / 5) ** (1 / 3) * BP,  # (2/9)^(1/3) * BP = 0.485012
    "BLEU-4": (7 / 9 * 5 / 7 * 2 / 5 * 1 / 4) ** (1 / 4) * BP,  # (1/18)^(1/4) * BP = 0.388751
}

# One image whose best precision and best recall come from different references.
ROUGE_HYP = {1: "a man rides a bike"}
ROUGE_REFS = {1: ["a man is riding a red bike down the road", "a man rides"]}


@pytest.fixture
def no_meteor(monkeypatch):
    """METEOR reads NaN: the test is about the other metrics and skips the slow paraphrase-table load."""
    monkeypatch.setattr(repro.captions, "meteor_score", lambda gts, res: math.nan)


@pytest.fixture
def no_java(tmp_path, monkeypatch):
    """A PATH with no `java` on it."""
    monkeypatch.setenv("PATH", str(tmp_path))


def child_processes() -> list[str]:
    """Live (not reaped) child processes of this test process, from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name_end = text.rindex(")")
        state, ppid = text[name_end + 2 :].split()[:2]
        if int(ppid) == os.getpid():
            children.append(f"{text[: name_end + 1]} {state}")
    return children


def cider_d(hyps: dict, refs: dict, n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al. 2015) of tokenized captions, written from the definition.

    Each caption is a vector per n-gram order of tf-idf weights: the n-gram's count times
    log(images) - log(max(1, images whose references hold it)). For a hypothesis and one reference, each order
    gives sum_g min(h_g, r_g) * r_g / (|h| |r|) (the clipped cosine), times the length penalty
    exp(-(len h - len r)^2 / (2 sigma^2)); an image scores 10 x the mean over orders and references, the
    corpus the mean over images. tf is the raw count, as in the COCO evaluation code the papers used (the
    paper normalises it), which changes the clipping.
    """

    def grams(caption):
        words = caption.split()
        return [Counter(tuple(words[i : i + k]) for i in range(len(words) - k + 1)) for k in range(1, n + 1)]

    df = Counter()
    for i in hyps:
        df.update({g for r in refs[i] for order in grams(r) for g in order})

    def tfidf(counts):
        return {g: c * (math.log(len(hyps)) - math.log(max(1, df[g]))) for g, c in counts.items()}

    def clipped_cosine(h, r):
        h, r = tfidf(h), tfidf(r)
        norms = math.sqrt(sum(v * v for v in h.values())) * math.sqrt(sum(v * v for v in r.values()))
        dot = sum(min(v, r.get(g, 0.0)) * r.get(g, 0.0) for g, v in h.items())
        return dot / norms if norms else 0.0

    images = []
    for i, hyp in hyps.items():
        total = 0.0
        for ref in refs[i]:
            penalty = math.exp(-((len(hyp.split()) - len(ref.split())) ** 2) / (2 * sigma**2))
            orders = zip(grams(hyp), grams(ref), strict=True)
            total += penalty * sum(clipped_cosine(h, r) for h, r in orders) / n
        images.append(10 * total / len(refs[i]))
    return sum(images) / len(images)


# --- golden values ---


@needs_java
def test_identical_captions_score_one():
    hyp = {1: "a dog runs across the grass", 2: "two people ride bikes down a road"}
    refs = {1: ["a dog runs across the grass"], 2: ["two people ride bikes down a road"]}
    scores = score_captions(hyp, refs)
    assert list(scores) == METRICS
    for n in range(1, 5):
        assert scores[f"BLEU-{n}"] == pytest.approx(1.0, abs=1e-6)
    assert scores["ROUGE-L"] == pytest.approx(1.0)
    # Measured: METEOR 1.5 scores an exact match 1.0.
    assert scores["METEOR"] == pytest.approx(1.0)


@needs_java
def test_bleu_hand_computed(no_meteor):
    scores = score_captions(BLEU_HYP, BLEU_REFS)
    for key, expected in BLEU_EXPECTED.items():
        assert scores[key] == pytest.approx(expected, abs=1e-6), key


@needs_java
def test_rouge_l_hand_computed(no_meteor):
    # LCS with reference 1 ("a man ... a ... bike") is 4: P = 4/5, R = 4/10. With reference 2 it is 3:
    # P = 3/5, R = 3/3. pycocoevalcap takes the best P and the best R separately, P = 0.8 and R = 1, then
    # F = (1 + beta^2) P R / (R + beta^2 P) with beta = 1.2: 2.44 * 0.8 / (1 + 1.44 * 0.8) = 0.907063.
    scores = score_captions(ROUGE_HYP, ROUGE_REFS)
    assert scores["ROUGE-L"] == pytest.approx(2.44 * 0.8 / (1 + 1.44 * 0.8), abs=1e-9)


@needs_java
def test_cider_matches_independent_implementation(no_meteor):
    # Three images, so idf is not zero everywhere (a single image makes every idf log 1 - log 1 = 0);
    # repeated n-grams to clip, differing lengths for the penalty, and two or three references each.
    hyps = {
        1: "a dog runs on the grass with a ball",
        2: "a cat sleeps on the the sofa",
        3: "two men ride bikes",
    }
    refs = {
        1: ["a dog runs on the grass", "a brown dog plays with a ball on the grass"],
        2: ["a cat sleeps on a sofa", "the cat is asleep on the couch"],
        3: ["two men ride bikes down a road", "a pair of cyclists on the road", "two people riding bicycles"],
    }
    expected = cider_d(hyps, refs)
    assert 0.5 < expected < 10  # a real signal, not the all-zero corner
    assert score_captions(hyps, refs)["CIDEr"] == pytest.approx(expected, abs=1e-9)


@needs_java
def test_meteor_pinned_and_ordered(capfd):
    # Regression value: pycocoevalcap 1.2's METEOR 1.5 (meteor-1.5.jar, -l en -norm) for this one pair,
    # measured once and pinned; it moves only if the jar, its paraphrase table or the wrapper changes.
    pinned = score_captions(ROUGE_HYP, ROUGE_REFS)["METEOR"]
    assert pinned == pytest.approx(0.47743229481671456, abs=1e-6)
    # Nothing on stdout or stderr (BLEU's statistics, the tokenizer's speed report), and no Java left running.
    assert capfd.readouterr() == ("", "")
    if Path("/proc/self/stat").exists():
        assert child_processes() == []

    # No word, stem, synonym or paraphrase in common ("a dog runs" would still match "a" to "the").
    disjoint = score_captions({1: "two zebras grazing"}, {1: ["the red car is parked"]})["METEOR"]
    assert disjoint == 0.0
    assert 1.0 > pinned > disjoint


def test_bleu_proxy_no_java(no_java):
    # All four n-gram orders match somewhere, so the unsmoothed torchmetrics BLEU-4 equals pycocoevalcap's.
    proxy = bleu_proxy(BLEU_HYP, BLEU_REFS)
    assert set(proxy) == {BLEU_PROXY_KEY} and BLEU_PROXY_KEY not in METRICS
    assert proxy[BLEU_PROXY_KEY] == pytest.approx(BLEU_EXPECTED["BLEU-4"], abs=1e-6)  # float32


# --- tokenizer ---


@needs_java
def test_tokenizer_lowercases_and_drops_punctuation(no_meteor):
    hyp, ref = tokenize({1: "A Dog, running."}, {1: ["A dog -- running!", "a DOG running"]})
    assert hyp == {1: ["a dog running"]}
    assert ref == {1: ["a dog running", "a dog running"]}
    refs = {1: ["a dog is running on the grass", "dog running"], 2: ["a cat", "the cat sleeps"]}
    raw = score_captions({1: "A dog, running.", 2: "The cat!"}, refs)
    clean = score_captions({1: "a dog running", 2: "the cat"}, refs)
    del raw["METEOR"], clean["METEOR"]  # NaN here, and NaN != NaN
    assert raw == clean


# --- validation, Java, keys ---


@pytest.mark.parametrize(
    ("hyps", "refs", "message"),
    [
        ({1: "a dog", 2: "a cat"}, {1: ["a dog"]}, "without references: 2"),
        ({1: "a dog"}, {1: ["a dog"], 7: ["a cat"], 8: ["a cow"]}, "without a hypothesis: 7, 8"),
        ({1: ["a dog", "a cat"]}, {1: ["a dog"]}, "exactly one hypothesis string; not a string for: 1"),
        ({"x": "a dog"}, {"x": "a dog"}, "bare string for: 'x'"),
        ({1: "a dog"}, {1: []}, "empty list of references: 1"),
        ({1: "a dog"}, {1: ["a dog", None]}, "not all strings for: 1"),
        ({}, {}, "no hypotheses"),
    ],
)
def test_invalid_inputs_name_the_ids(hyps, refs, message):
    with pytest.raises(ValueError, match=message):
        score_captions(hyps, refs)
    with pytest.raises(ValueError, match=message):
        bleu_proxy(hyps, refs)


def test_java_missing_says_how_to_install(no_java):
    assert not java_available()
    with pytest.raises(JavaMissingError) as excinfo:
        require_java()
    message = str(excinfo.value)
    hints = ["no `java` on PATH", "PTB tokenizer and METEOR", "apt-get install default-jre-headless"]
    hints += ["brew install openjdk", "conda install -c conda-forge openjdk", "make venv"]
    for hint in hints:
        assert hint in message
    with pytest.raises(JavaMissingError):
        score_captions({1: "a dog"}, {1: ["a dog"]})


def test_java_that_does_not_run_counts_as_missing(tmp_path, monkeypatch):
    # Like macOS's /usr/bin/java stub when no runtime is installed: on PATH, but `java -version` fails.
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\necho 'No Java runtime present' >&2\nexit 1\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(JavaMissingError, match="-version` failed"):
        require_java()


@needs_java
def test_beam_size_in_keys(no_meteor):
    plain = score_captions(BLEU_HYP, BLEU_REFS)
    beam3 = score_captions(BLEU_HYP, BLEU_REFS, beam=3)
    assert list(beam3) == [f"{m}@beam3" for m in METRICS]
    assert beam3["BLEU-4@beam3"] == plain["BLEU-4"]
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="beam"):
            score_captions(BLEU_HYP, BLEU_REFS, beam=bad)


@needs_java
def test_meteor_process_closed_when_scoring_fails(monkeypatch):
    # pycocoevalcap's Meteor keeps its lock held when compute_score raises, and its __del__ takes that lock:
    # score_captions must still stop the Java process and leave the lock free.
    started = []

    def failing(self, gts, res):
        started.append(self)
        self.lock.acquire()
        raise ValueError("could not convert string to float: ''")

    monkeypatch.setattr(Meteor, "compute_score", failing)
    with pytest.raises(ValueError, match="convert"):
        score_captions({1: "a dog"}, {1: ["a dog"]})
    (meteor,) = started
    assert meteor.meteor_p.returncode is not None
    assert not meteor.lock.locked()
