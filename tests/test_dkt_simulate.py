"""Tests for papers/dkt/simulate.py: the simulated-students generator and its calibration to shipped files.

The calibration tests compare summary statistics of 20 generated data sets (seeds 100..119) with the 20
shipped versions per concept count.  A statistic passes when the two means differ by less than
``Z_LIMIT`` standard errors of the difference, the standard error being taken from the spread across the
20 shipped versions and across the 20 generated seeds (a two-sample z-test).  With fixed seeds the outcome is
reproducible; 4 standard errors leaves room for the c = 2 mean fraction correct (z = -1.9, the largest
|z| of the calibrated generator) and is still far from the values a wrong model gives: the paper-literal
generator (guess 0.25, standard normal skills) reaches |z| > 20 and one without learning |z| > 10, which
the negative-control tests check with the same comparison.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from papers.dkt.simulate import PAPER_GUESS, SimulatedStudents, correct_probability, read_info, simulate

SYNTHETIC = Path(os.environ.get("REPRO_DATA", "/nonexistent")) / "dkt_assistments" / "synthetic"
needs_data = pytest.mark.skipif(not SYNTHETIC.is_dir(), reason=f"no shipped synthetic data under {SYNTHETIC}")

N_VERSIONS = 20  # shipped versions per concept count, and generated seeds compared with them
Z_LIMIT = 4.0


# --------------------------------------------------------------------------------------------- statistics


def read_answers(path: Path) -> np.ndarray:
    """A shipped answers file: 4000 lines of 50 comma-separated 0/1, so every other byte is a digit."""
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    assert raw.size == 4000 * 50 * 2, f"{path}: unexpected size {raw.size}"
    separators = raw[1::2].reshape(4000, 50)
    assert (separators[:, :-1] == ord(",")).all() and (separators[:, -1] == ord("\n")).all()
    answers = (raw[0::2] - ord("0")).astype(np.int8).reshape(4000, 50)
    assert np.isin(answers, (0, 1)).all()
    return answers


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Exact ROC area (Mann-Whitney), ties counted one half."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0  # average 1-based rank of each distinct score
    ranks = mid_rank[inverse]
    n_pos = label.sum()
    n_neg = label.size - n_pos
    return float((ranks[label == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def answer_statistics(answers: np.ndarray, concept: np.ndarray, difficulty: np.ndarray) -> dict[str, float]:
    """Summary statistics of one data set (every student answers the exercises in the same order)."""
    fraction = answers.mean(0)  # per exercise
    corr = np.corrcoef(answers.T.astype(float))  # between exercises, over students
    same = concept[:, None] == concept[None, :]
    off_diagonal = ~np.eye(len(concept), dtype=bool)
    # Learning: fraction correct regressed on difficulty and on how often the concept was practised before.
    practised = np.array([(concept[:j] == concept[j]).sum() for j in range(len(concept))])
    design = np.column_stack([np.ones_like(difficulty), difficulty, practised])
    learning = np.linalg.lstsq(design, fraction, rcond=None)[0][2]
    # Floor: share of (student, concept) blocks of >= 20 answers with under 20 % correct; with a guess
    # probability of 0.25 this is rare.
    blocks = [
        answers[:, concept == k].mean(1) < 0.2 for k in np.unique(concept) if (concept == k).sum() >= 20
    ]
    # The paper's "Marginal" baseline: per-exercise fraction correct on the first half scored on the second.
    half = len(answers) // 2
    train, test = answers[:half], answers[half:]
    marginal = auc(np.broadcast_to(train.mean(0), test.shape).ravel(), test.ravel())
    return {
        "mean": answers.mean(),
        "std_over_exercises": fraction.std(),
        "corr_difficulty": np.corrcoef(difficulty, fraction)[0, 1],
        "corr_same_concept": corr[same & off_diagonal].mean(),
        "corr_cross_concept": corr[~same].mean() if (~same).any() else 0.0,
        "learning_per_practice": learning,
        "floor_blocks": np.concatenate(blocks).mean() if blocks else np.nan,
        "marginal_auc": marginal,
        "std_over_students": answers.mean(1).std(),
    }


def stack(stats: list[dict[str, float]]) -> dict[str, np.ndarray]:
    return {key: np.array([s[key] for s in stats]) for key in stats[0]}


def z_scores(shipped: dict[str, np.ndarray], generated: dict[str, np.ndarray]) -> dict[str, float]:
    """Two-sample z of the difference of means, per statistic (NaN statistics are skipped)."""
    out = {}
    for key, s in shipped.items():
        g = generated[key]
        if np.isnan(s).any() or np.isnan(g).any():
            continue
        se = np.sqrt(s.var(ddof=1) / s.size + g.var(ddof=1) / g.size)
        out[key] = float((g.mean() - s.mean()) / se)
    return out


def generated_statistics(n_concepts: int, n_seeds: int = N_VERSIONS, **kwargs) -> dict[str, np.ndarray]:
    data = [simulate(n_concepts=n_concepts, seed=100 + i, **kwargs) for i in range(n_seeds)]
    return stack([answer_statistics(d.answers, d.concept, d.difficulty) for d in data])


@pytest.fixture(scope="module")
def shipped_statistics() -> dict[int, dict[str, np.ndarray]]:
    out = {}
    for c in (2, 5):
        stats = []
        for v in range(N_VERSIONS):
            answers = read_answers(SYNTHETIC / f"naive_c{c}_q50_s4000_v{v}.csv")
            concept, difficulty = read_info(SYNTHETIC / "info" / f"naive_c{c}_q50_s4000_v{v}_info.txt")
            stats.append(answer_statistics(answers, concept, difficulty))
        out[c] = stack(stats)
    return out


# ------------------------------------------------------------------------------------------- generator


def test_irt_golden_value():
    # 1 / (1 + e^-0.5) = 0.6224593312018546, so p = 0.25 + 0.75 * 0.62245933... for alpha = 1, beta = 0.5.
    assert correct_probability(1.0, 0.5, 0.25) == pytest.approx(0.7168444984013909, abs=1e-12)
    # Far below the difficulty the probability falls to the guess floor, far above it rises to 1.
    assert correct_probability(-40.0, 0.0, 0.25) == pytest.approx(0.25, abs=1e-12)
    assert correct_probability(40.0, 0.0, 0.25) == pytest.approx(1.0, abs=1e-12)


def test_shapes_and_types():
    data = simulate(n_students=30, n_concepts=3, n_exercises=17, seed=1)
    assert isinstance(data, SimulatedStudents)
    assert data.answers.shape == (30, 17) and data.answers.dtype == np.int8
    assert data.p_correct.shape == (30, 17) and data.p_correct.dtype == np.float64
    assert data.concept.shape == (17,) and data.concept.dtype == np.int64
    assert data.difficulty.shape == (17,) and data.difficulty.dtype == np.float64
    assert np.isin(data.answers, (0, 1)).all()
    assert data.concept.min() >= 0 and data.concept.max() < 3


def test_deterministic_per_seed_and_different_across_seeds():
    a, b, other = (
        simulate(n_students=200, seed=7),
        simulate(n_students=200, seed=7),
        simulate(n_students=200, seed=8),
    )
    for field in ("answers", "concept", "difficulty", "p_correct"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.answers, other.answers)
    assert not np.array_equal(a.difficulty, other.difficulty)


@pytest.mark.parametrize("guess", [0.1, PAPER_GUESS])
def test_p_correct_is_a_probability_above_the_guess(guess):
    data = simulate(n_students=2000, seed=3, guess=guess)
    assert (data.p_correct >= guess).all()
    assert (data.p_correct > 0).all() and (data.p_correct < 1).all()
    # Skills spread widely, so some students sit close to the floor.
    assert data.p_correct.min() < guess + 0.01


def test_answers_are_drawn_with_p_correct():
    data = simulate(n_students=4000, seed=5)
    p, y = data.p_correct.ravel(), data.answers.ravel()
    # Calibration in deciles of p: observed frequency within 4 binomial standard errors of the mean p.
    edges = np.quantile(p, np.linspace(0, 1, 11))
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (p >= lo) & (p < hi)
        expected = p[sel].mean()
        assert abs(y[sel].mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / sel.sum())


def test_p_correct_follows_the_irt_rule_with_learning():
    """Rebuild p from the exercises: skill = initial skill + increment * earlier practice of the concept."""
    data = simulate(n_students=500, n_concepts=3, seed=11, guess=0.1, learning_increment=0.1)
    practised = np.array([(data.concept[:j] == data.concept[j]).sum() for j in range(data.concept.size)])
    # Invert the first exercise of each concept to recover the initial skill, then predict the others.
    logit = np.log((data.p_correct - 0.1) / (1 - data.p_correct))  # = skill - difficulty
    skill = logit + data.difficulty - 0.1 * practised
    for k in np.unique(data.concept):
        columns = skill[:, data.concept == k]
        np.testing.assert_allclose(columns, columns[:, :1].repeat(columns.shape[1], 1), atol=1e-6)
    # Skills of different concepts are different numbers (independent draws).
    first = [np.flatnonzero(data.concept == k)[0] for k in np.unique(data.concept)]
    assert len(first) == 3 and abs(np.corrcoef(skill[:, first].T)[0, 1]) < 0.2


def test_one_concept_works():
    data = simulate(n_students=1000, n_concepts=1, seed=2)
    assert (data.concept == 0).all()
    stats = answer_statistics(data.answers, data.concept, data.difficulty)
    assert stats["corr_same_concept"] > 0.3  # one skill drives every answer
    assert stats["learning_per_practice"] > 0


def test_learning_makes_later_same_concept_exercises_easier():
    # Learning draws no random numbers, so both calls share exercises, initial skills and uniforms.
    learned = simulate(n_students=1000, n_concepts=2, seed=4, learning_increment=0.1)
    static = simulate(n_students=1000, n_concepts=2, seed=4, learning_increment=0.0)
    np.testing.assert_array_equal(learned.concept, static.concept)
    first_of_concept = np.array([not (learned.concept[:j] == learned.concept[j]).any() for j in range(50)])
    np.testing.assert_allclose(learned.p_correct[:, first_of_concept], static.p_correct[:, first_of_concept])
    assert (learned.p_correct[:, ~first_of_concept] > static.p_correct[:, ~first_of_concept]).all()
    assert learned.answers[:, ~first_of_concept].mean() > static.answers[:, ~first_of_concept].mean()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        simulate(n_concepts=0)
    with pytest.raises(ValueError):
        simulate(guess=1.0)


# ------------------------------------------------------------------------------------------ shipped files


@needs_data
@pytest.mark.parametrize(("c", "version"), [(2, 0), (2, 1), (5, 0), (5, 7)])
def test_read_info_tab_and_comma_files(c, version):
    """v0 is tab-separated, others comma-separated; column 1 is the fraction correct of rows 2001..3999."""
    path = SYNTHETIC / "info" / f"naive_c{c}_q50_s4000_v{version}_info.txt"
    concept, difficulty = read_info(path)
    assert concept.shape == (50,) and concept.dtype == np.int64 and difficulty.shape == (50,)
    assert set(concept.tolist()) <= set(range(c))
    assert np.isfinite(difficulty).all() and 0.5 < difficulty.std() < 1.5
    fraction = np.array(
        [float(line.replace("\t", ",").split(",")[0]) for line in path.read_text().splitlines()]
    )
    answers = read_answers(SYNTHETIC / f"naive_c{c}_q50_s4000_v{version}.csv")
    np.testing.assert_allclose(answers[2001:].mean(0), fraction, atol=1e-12)


def test_read_info_rejects_wrong_columns(tmp_path):
    bad = tmp_path / "bad_info.txt"
    bad.write_text("0.5\t0.5\t1\n0.4\t0.5\t0\n")
    with pytest.raises(ValueError):
        read_info(bad)


@needs_data
@pytest.mark.parametrize("c", [2, 5])
def test_statistics_match_shipped_files(shipped_statistics, c):
    shipped = shipped_statistics[c]
    z = z_scores(shipped, generated_statistics(c))
    expected = {"mean", "std_over_exercises", "corr_difficulty", "corr_same_concept", "corr_cross_concept"}
    expected |= {"learning_per_practice", "marginal_auc", "std_over_students"}
    assert expected <= set(z)
    assert ("floor_blocks" in z) == (c == 2)  # only c = 2 has concepts with >= 20 exercises
    bad = {key: round(value, 2) for key, value in z.items() if abs(value) >= Z_LIMIT}
    assert not bad, f"c={c}: statistics off by >= {Z_LIMIT} standard errors: {bad}"
    # The shipped values these z-scores are about, as documented in the module.
    assert shipped["corr_same_concept"].mean() == pytest.approx(0.41, abs=0.015)
    assert abs(shipped["corr_cross_concept"].mean()) < 0.005


@needs_data
@pytest.mark.parametrize(
    ("kwargs", "must_fail"),
    [
        # The paper-literal reading: guess 0.25 and standard normal skills.
        ({"guess": PAPER_GUESS, "skill_std": 1.0}, {"mean", "corr_same_concept", "floor_blocks"}),
        # The best fit with guess fixed at 0.25: the skill spread cannot mimic the lower floor.
        (
            {"guess": PAPER_GUESS, "skill_mean": -0.75, "skill_std": 3.67, "learning_increment": 0.13},
            {"corr_same_concept", "floor_blocks"},
        ),
        # No learning.
        ({"learning_increment": 0.0}, {"mean", "corr_difficulty", "learning_per_practice"}),
    ],
)
def test_the_comparison_rejects_miscalibrated_generators(shipped_statistics, kwargs, must_fail):
    """Negative controls: the same comparison on 10 seeds must flag a wrong generator for c = 2."""
    z = z_scores(shipped_statistics[2], generated_statistics(2, n_seeds=10, **kwargs))
    failing = {key for key, value in z.items() if abs(value) >= Z_LIMIT}
    assert must_fail <= failing, f"{kwargs}: expected {must_fail} to fail, z = {z}"
