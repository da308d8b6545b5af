"""Simulated students for Deep Knowledge Tracing (Piech et al. 2015, §"Simulated Data"; spec dkt.md §2.2).

The paper's generator was not released; only its output for 2 and 5 concepts is shipped
(``dkt_assistments/synthetic/naive_c{2,5}_q50_s4000_v{0..19}.csv`` plus ``info/..._info.txt``). Figure 3(a)
needs 1..5 concepts, so this module rebuilds the generator from the paper's rules and calibrates the
parameters the paper leaves out against the shipped files.

Model (one draw of a data set):

    concept[j]    ~ Uniform{0, .., C-1}                   for each exercise j = 0..E-1  (inferred)
    difficulty[j] ~ Normal(0, 1)                          beta_j                         (inferred)
    skill[s, k]   ~ Normal(0, 3^2), independent over s, k alpha_sk, the initial skill   (inferred)

    Every student answers exercises 0..E-1 in the same order.  At step j, with k = concept[j]:

    p[s, j]       = guess + (1 - guess) / (1 + exp(-(skill[s, k] - difficulty[j])))   [paper: IRT, c = guess]
    answer[s, j]  ~ Bernoulli(p[s, j])
    skill[s, k]  <- skill[s, k] + learning_increment                  [paper: "affine change"; a = 1 inferred]

so the skill used at step j is alpha_sk + learning_increment * (number of earlier exercises of concept k).
Concept ids are not part of the answers; a model sees only the exercise index and the answer.

What the shipped files say (all numbers computed from the 20 + 20 shipped files):

* Info files: columns 1-2 are the fraction correct and its sample std (ddof = 1) over 0-based rows
  2001..3999 of the answers (1,999 students; they match to 1e-14); column 3 is the concept and column 4
  the difficulty.  Only the two v0 files are tab-separated, the other 38 comma-separated (``read_info`` reads
  both).
* Difficulty (inferred Normal(0, 1), independent of concept and position): pooled over 1,000 exercises per
  concept count, mean -0.02 / +0.05 and std 1.011 / 1.012 (c = 2 / 5); skewness -0.02 / 0.06, excess
  kurtosis -0.24 / 0.05; Kolmogorov-Smirnov distance to N(0, 1) 0.021 / 0.030 (5 % critical value 0.043).
  Per-concept means (c = 5) lie within 0.15 of 0 (standard error 0.07).
* Concepts (inferred i.i.d. uniform, not balanced): the number of exercises per concept varies from 20 to 33
  of 50 (c = 2) and from 4 to 17 (c = 5); summed over the 20 versions the chi-square statistic against equal
  shares is 25.1 on 20 df (c = 2) and 74.6 on 80 df (c = 5), as expected for independent uniform draws and
  impossible for a balanced assignment.  Consecutive exercises share a concept 0.50 / 0.17 of the time
  (independent draws: 0.50 / 0.20).
* Skills are independent across concepts (inferred): the mean correlation between one student's answers to
  two exercises of *different* concepts is 0.001 (c = 2) and 0.000 (c = 5); for the *same* concept it is
  0.41 / 0.42.
* Guess, skill spread and learning (fitted): maximum marginal likelihood, integrating each student's initial
  skill per concept on a grid (-10..10, step 0.125) with the shipped difficulty and concept columns held
  fixed, one version at a time (15 fits: c = 2 v0, v1, v3-v7 and c = 5 v0-v7).  Over the 15 fits:
  guess 0.095-0.106 (mean 0.100), skill std 2.95-3.05 (mean 3.00), learning increment 0.098-0.104 per
  answered exercise of the concept (mean 0.100), skill mean -0.05..+0.03 (mean -0.004).  Checks of the form,
  with guess free, on c = 2 v0 and c = 5 v0-v2: a free multiplier on the difficulty fits 0.98-1.01 (the info
  column is beta in the units of alpha); a drift per time step shared by all concepts fits |drift| < 0.004
  (students learn only the practised concept); an increment that depends on the answer fits 0.10 after a
  correct and 0.10-0.11 after a wrong answer (learning does not depend on correctness); on c = 5 v0 the
  affine update alpha <- a * alpha + b is best at a = 1.00 (a = 0.99 / 1.01 are 20 / 9 nats worse,
  0.97 / 1.03 over 100), a normal skill distribution fits as well as a free (nonparametric) one on the grid
  (2 nats apart with ~160 more parameters), and uniform ones (half-width 4, 5.2, 6) are 200-800 nats worse.
  Hence the defaults, rounded: ``guess = 0.1``, ``skill_mean = 0``, ``skill_std = 3``,
  ``learning_increment = 0.1`` (all inferred).
* guess = 0.25, as the paper states, does not fit the shipped data (``guess`` stays a parameter, so the
  paper-literal value can be asked for, see ``PAPER_GUESS``): refitting with guess fixed at 0.25 costs
  1,200-1,900 nats per version (c = 2 v3, c = 5 v0, v3) and moves the skill to mean -0.6..-0.8, std 3.6-3.8.
  Model-free: with a floor of 0.25 a run of 25 answers has all wrong with probability at most
  0.75^25 = 7.5e-4 and at most one right with probability at most 0.0071, so among the 8,000
  (student, concept) blocks with exactly 25 exercises (c = 2, all versions) at most 6 and 57 are expected,
  even if every student were at the floor; the files have 25 and 89.

Statistics that the defaults reproduce, mean (std) over the 20 shipped versions vs 20 generated seeds
(100..119); tests/test_dkt_simulate.py holds the definitions and the tolerance (4 standard errors):

    statistic                                   c = 2 shipped   generated      c = 5 shipped   generated
    fraction correct, all answers               0.668 (0.014)   0.661 (0.011)  0.594 (0.012)   0.591 (0.011)
    std over exercises of fraction correct      0.117 (0.012)   0.119 (0.006)  0.104 (0.007)   0.105 (0.008)
    corr(difficulty, fraction correct)         -0.785 (0.056)  -0.790 (0.025) -0.942 (0.015)  -0.942 (0.014)
    answer corr, same concept                   0.410 (0.008)   0.408 (0.006)  0.417 (0.004)   0.417 (0.007)
    answer corr, different concepts             0.001 (0.007)  -0.003 (0.009)  0.001 (0.002)  -0.001 (0.003)
    d(fraction correct)/d(earlier practice)     0.0092          0.0094         0.0099          0.0099
    (student, concept) blocks under 20 % right  0.099 (0.014)   0.103 (0.014)  -               -
    marginal AUC (first half -> second half)    0.649 (0.015)   0.650 (0.009)  0.621 (0.009)   0.622 (0.009)
    std over students of fraction correct       0.214 (0.004)   0.214 (0.003)  0.153 (0.003)   0.152 (0.004)

The correlation with difficulty is weaker for c = 2 because each concept is practised twice as often, so
learning moves late exercises further.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAPER_GUESS = 0.25  # the guess probability the paper states; the shipped data fit ``guess = 0.1`` (see above)


@dataclass
class SimulatedStudents:
    """One simulated data set: every student answers exercises 0..E-1 in this order."""

    answers: np.ndarray  # [students, exercises] int8, 1 = correct
    concept: np.ndarray  # [exercises] int64, hidden concept of each exercise in 0..C-1
    difficulty: np.ndarray  # [exercises] float, beta of each exercise
    p_correct: np.ndarray  # [students, exercises] float, the probability each answer was drawn with (oracle)


def correct_probability(skill, difficulty, guess: float):
    """IRT with a guess floor: p = guess + (1 - guess) / (1 + exp(-(skill - difficulty)))."""
    return guess + (1.0 - guess) / (1.0 + np.exp(-(np.asarray(skill) - np.asarray(difficulty))))


def simulate(
    n_students: int = 4000,
    n_concepts: int = 5,
    n_exercises: int = 50,
    seed: int = 0,
    guess: float = 0.1,
    skill_mean: float = 0.0,
    skill_std: float = 3.0,
    difficulty_std: float = 1.0,
    learning_increment: float = 0.1,
) -> SimulatedStudents:
    """Draw exercises (concept, difficulty), students' initial skills, and their answers; see the module doc.

    The same arguments give the same data (numpy ``default_rng(seed)``).
    """
    if n_concepts < 1:
        raise ValueError(f"n_concepts must be at least 1, got {n_concepts}")
    if not 0.0 <= guess < 1.0:
        raise ValueError(f"guess must be in [0, 1), got {guess}")
    rng = np.random.default_rng(seed)
    concept = rng.integers(0, n_concepts, size=n_exercises).astype(np.int64)
    difficulty = rng.normal(0.0, difficulty_std, size=n_exercises)
    skill = rng.normal(skill_mean, skill_std, size=(n_students, n_concepts))
    # All uniforms are drawn up front, so the answers of one exercise do not depend on how many
    # random numbers the exercises before it used.
    uniform = rng.random((n_students, n_exercises))

    p_correct = np.empty((n_students, n_exercises))
    for j in range(n_exercises):
        k = concept[j]
        p_correct[:, j] = correct_probability(skill[:, k], difficulty[j], guess)
        # Learning: practising concept k raises its skill by a constant, whatever the answer was
        # (the fits found no dependence on correctness and a multiplier of 1 on the old skill).
        skill[:, k] += learning_increment
    answers = (uniform < p_correct).astype(np.int8)
    return SimulatedStudents(answers=answers, concept=concept, difficulty=difficulty, p_correct=p_correct)


def read_info(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Concept (int64) and difficulty (float) per exercise from a shipped ``*_info.txt``.

    Rows are exercises; the 4 columns are fraction correct, its std, concept, difficulty.  The separator is a
    tab in v0 and a comma in the other versions.
    """
    rows = [re.split(r"[\t,]", line.strip()) for line in Path(path).read_text().splitlines() if line.strip()]
    table = np.array(rows, dtype=float)
    if table.ndim != 2 or table.shape[1] != 4:
        raise ValueError(f"{path}: expected 4 columns per row, got shape {table.shape}")
    concept = table[:, 2].astype(np.int64)
    if not np.array_equal(concept, table[:, 2]):
        raise ValueError(f"{path}: concept column is not integer")
    return concept, table[:, 3]
