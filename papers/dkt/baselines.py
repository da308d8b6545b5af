"""The two Table-1 baselines of Deep Knowledge Tracing (Piech et al., 2015) that need no external code.

A student is a pair (q, a) of 1-D int64 arrays in time order: q_t the exercise id, a_t in {0, 1} whether
the answer was correct. Both baselines return, for every step t, a probability that a_t = 1.

Marginal
--------
p(a = 1 | q) = (correct_q + alpha) / (answers_q + 2 alpha), counted on the training students; alpha = 1 by
default (add-one / Laplace smoothing, so that no exercise gets a probability of exactly 0 or 1; alpha = 0 is
the raw frequency). An exercise never seen in training gets the global fraction correct of the training
answers. The prediction does not depend on the student's history.

Bayesian Knowledge Tracing (Corbett & Anderson, 1995)
-----------------------------------------------------
Every exercise q belongs to one skill k = skill_of[q]. Per skill, a student's knowledge is a hidden
two-state Markov chain, s_t in {0 = unlearned, 1 = learned}, with four parameters:

    p(s_1 = 1)                   = L0   prior knowledge
    p(s_{t+1} = 1 | s_t = 0)     = T    learning
    p(s_{t+1} = 1 | s_t = 1)     = 1    no forgetting
    p(a_t = 1 | s_t = 0)         = G    guess
    p(a_t = 0 | s_t = 1)         = S    slip

Each student's answers on one skill form one chain; answers on other skills do not touch it (standard BKT).

Prediction is the forward filter. With f_t = p(s_t = 1 | the student's earlier answers on this skill):

    p(a_t = 1 | history)  = f_t (1 - S) + (1 - f_t) G                    (the prediction for step t)
    posterior after a_t:  f'_t = f_t (1 - S) / p(a_t = 1)      if a_t = 1
                          f'_t = f_t S / p(a_t = 0)            if a_t = 0
    next prior:           f_{t+1} = f'_t + (1 - f'_t) T,   f_1 = L0

so the prediction for step t uses a_1..a_{t-1} only.

Fitting is EM (Baum-Welch), per skill over all chains of that skill. The E-step needs, per chain, the
smoothed state probabilities gamma_t(j) = p(s_t = j | the whole chain) and the expected learning events
xi_t = p(s_t = 0, s_{t+1} = 1 | the whole chain). The forward pass above gives f_t, f'_t and
c_t = p(a_t | a_<t), hence log p(chain) = sum_t log c_t. The backward pass works on posteriors (a
Rauch-Tung-Striebel-style smoother) rather than on the scaled beta messages, because beta_t(0) overflows
on chains of ~2,000 answers; since s_{t+1} = 0 implies s_t = 0, it is, from gamma_last(1) = f'_last:

    xi_t         = (1 - f'_t) T gamma_{t+1}(1) / f_{t+1}
    gamma_t(1)   = f'_t gamma_{t+1}(1) / f_{t+1}
    gamma_t(0)   = gamma_{t+1}(0) + xi_t

M-step, sums over all chains of the skill:

    L0 = mean over chains of gamma_1(1)
    T  = sum_{t < last} xi_t / sum_{t < last} gamma_t(0)
    G  = sum_t gamma_t(0) a_t / sum_t gamma_t(0)
    S  = sum_t gamma_t(1) (1 - a_t) / sum_t gamma_t(1)

Decisions:
  - Initialisation L0 = 0.4, T = 0.1, G = 0.2, S = 0.1 for every skill (G + S < 1: the learned state
    starts as the "more often correct" one).
  - Identifiability: G and S are clamped to at most 0.5 (`max_guess_slip`); otherwise EM may swap the
    meaning of the two states. All probabilities are also kept in [1e-6, 1 - 1e-6] so that logs stay finite.
    The expected complete-data log-likelihood is a sum of separate concave Bernoulli terms, one per
    parameter, so clamping each ratio to its interval is the exact constrained M-step: the log-likelihood
    still never decreases.
  - Convergence: stop when no skill's log-likelihood per answer improves by `tol` or more, or after
    `max_iter` EM iterations. A skill absent from training keeps the initial parameters.
  - Speed: all chains of all skills are fitted at once (skills only index the parameter arrays). Chains
    are stored "packed" like torch's PackedSequence: sorted by length, longest first, time-major, so step t
    of the k-th longest chain is at offsets[t] + k and the chains still running at step t are one
    contiguous slice. A python loop runs over time steps only (1,907 on ASSISTments), each step a numpy
    operation on every chain at once; padding would cost memory for nothing, since chain lengths span 1 to
    ~2,000.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-6

# -----------------------------------------------------------------------------
# Marginal


class Marginal:
    """Per-exercise fraction correct on the training students, with add-`smoothing` (Laplace) smoothing."""

    def __init__(self, smoothing: float = 1.0):
        self.smoothing = smoothing

    def fit(self, students: list[tuple[np.ndarray, np.ndarray]]) -> Marginal:
        q = np.concatenate([s[0] for s in students])
        a = np.concatenate([s[1] for s in students]).astype(np.float64)
        answers = np.bincount(q)
        correct = np.bincount(q, weights=a, minlength=len(answers))
        self.global_mean = float(a.mean())
        alpha = self.smoothing
        with np.errstate(invalid="ignore", divide="ignore"):
            p = (correct + alpha) / (answers + 2 * alpha)
        # ids below max(q) that were never answered are "unseen" just like ids beyond it
        self.p = np.where(answers > 0, p, self.global_mean)
        return self

    def predict(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q)
        seen = q < len(self.p)
        return np.where(seen, self.p[np.where(seen, q, 0)], self.global_mean)


# -----------------------------------------------------------------------------
# Chains in packed layout


class Packed:
    """Every (student, skill) chain of a list of students, in time-major packed layout.

    Arrays indexed by packed position: `a` (answer), `skill`, `flat` (index of that answer in the
    concatenation of all students, to put results back in time order), `has_next` (the chain goes on).
    `offsets[t]`, `sizes[t]`: step t of all chains is the slice offsets[t] : offsets[t] + sizes[t].
    """

    def __init__(self, students: list[tuple[np.ndarray, np.ndarray]], skill_of: np.ndarray):
        q = np.concatenate([s[0] for s in students]).astype(np.int64)
        a = np.concatenate([s[1] for s in students]).astype(np.int64)
        student = np.repeat(np.arange(len(students)), [len(s[0]) for s in students])
        skill = skill_of[q]
        n = len(q)
        # group answers by chain; lexsort is stable, so each chain stays in time order
        order = np.lexsort((skill, student))
        key = student[order] * (int(skill_of.max()) + 1) + skill[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if n else np.zeros(0, np.int64)
        lengths = np.diff(np.r_[starts, n])
        chain = np.repeat(np.arange(len(starts)), lengths)
        step = np.arange(n) - starts[chain]
        # rank chains by length, longest first: the chains alive at step t are ranks 0..sizes[t]-1
        rank = np.empty(len(starts), np.int64)
        rank[np.argsort(-lengths, kind="stable")] = np.arange(len(starts))
        ended_by = np.cumsum(np.bincount(lengths, minlength=lengths.max(initial=0) + 1))
        self.sizes = len(starts) - ended_by[:-1]  # sizes[t] = number of chains longer than t
        self.offsets = np.r_[0, np.cumsum(self.sizes)[:-1]].astype(np.int64)
        position = self.offsets[step] + rank[chain]
        self.flat = np.empty(n, np.int64)
        self.flat[position] = order
        self.a = a[self.flat]
        self.skill = skill[self.flat]
        self.has_next = np.zeros(n, bool)
        for o, next_size in zip(self.offsets, np.r_[self.sizes[1:], 0], strict=True):
            self.has_next[o : o + next_size] = True
        self.n_chains = len(starts)

    def steps(self) -> list[tuple[slice, slice | None]]:
        """For every step t: (slice of step t, slice of the same chains at step t - 1, None at t = 0)."""
        starts = [None] + list(self.offsets[:-1])
        return [
            (slice(o, o + size), None if before is None else slice(before, before + size))
            for o, size, before in zip(self.offsets, self.sizes, starts, strict=True)
        ]


# -----------------------------------------------------------------------------
# Bayesian Knowledge Tracing


class BKT:
    """Standard BKT, one (L0, T, G, S) per skill, fitted by EM. See the module docstring."""

    def __init__(
        self,
        n_skills: int,
        skill_of: np.ndarray | None = None,
        max_iter: int = 100,
        tol: float = 1e-4,
        init: tuple[float, float, float, float] = (0.4, 0.1, 0.2, 0.1),
        max_guess_slip: float = 0.5,
    ):
        self.n_skills = n_skills
        self.skill_of = np.arange(n_skills) if skill_of is None else np.asarray(skill_of, np.int64)
        assert self.skill_of.min() >= 0 and self.skill_of.max() < n_skills, "skill_of must map into skills"
        self.max_iter, self.tol, self.max_guess_slip = max_iter, tol, max_guess_slip
        self.L0, self.T, self.G, self.S = (np.full(n_skills, float(v)) for v in init)
        # per-skill log-likelihood at each E-step, i.e. of the parameters before each update (EM never
        # lowers it, so the final parameters are at least as good as the last entry)
        self.log_likelihoods: list[np.ndarray] = []

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {"L0": self.L0.copy(), "T": self.T.copy(), "G": self.G.copy(), "S": self.S.copy()}

    @classmethod
    def from_params(cls, params: dict[str, np.ndarray], skill_of: np.ndarray | None = None) -> BKT:
        """A BKT with given parameters (each an array with one value per skill), e.g. to predict or sample."""
        model = cls(len(np.atleast_1d(params["L0"])), skill_of)
        for name in ("L0", "T", "G", "S"):
            setattr(model, name, np.array(params[name], np.float64).reshape(-1))
        return model

    def _forward(self, packed: Packed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Filter every chain: prior f_t, posterior f'_t, c_t = p(a_t | a_<t) at every packed position."""
        G, S, T, L0 = (getattr(self, name)[packed.skill] for name in ("G", "S", "T", "L0"))
        e0 = np.where(packed.a == 1, G, 1 - G)  # p(a_t | unlearned)
        e1 = np.where(packed.a == 1, 1 - S, S)  # p(a_t | learned)
        prior, post, c = (np.empty(len(packed.a)) for _ in range(3))
        for now, before in packed.steps():
            f = L0[now] if before is None else post[before] + (1 - post[before]) * T[now]
            learned = f * e1[now]
            c[now] = learned + (1 - f) * e0[now]
            prior[now], post[now] = f, learned / c[now]
        return prior, post, c

    def _em_step(self, packed: Packed) -> np.ndarray:
        """One E-step and M-step; returns the per-skill log-likelihood of the parameters before the update."""
        prior, post, c = self._forward(packed)
        T = self.T[packed.skill]
        # backward smoother on posteriors (values stay in [0, 1]; the beta recursion overflows on long chains)
        g1, g0, xi01 = post.copy(), 1 - post, np.zeros(len(c))
        for now, before in reversed(packed.steps()[1:]):
            learned_next = g1[now] / prior[now]  # gamma_{t+1}(1) / f_{t+1}
            xi01[before] = (1 - post[before]) * T[now] * learned_next
            g1[before] = post[before] * learned_next
            g0[before] = g0[now] + xi01[before]

        def per_skill(weights, where=None):
            if where is None:
                return np.bincount(packed.skill, weights, minlength=self.n_skills)
            return np.bincount(packed.skill[where], weights[where], minlength=self.n_skills)

        def ratio(numerator, denominator, old, high):
            # skills without data keep their value; clamping is the exact constrained M-step (see docstring)
            safe = np.where(denominator > 0, denominator, 1.0)
            return np.clip(np.where(denominator > 0, numerator / safe, old), EPS, high)

        first = slice(0, packed.n_chains)  # step 1 of every chain
        chains = np.bincount(packed.skill[first], minlength=self.n_skills)
        self.L0 = ratio(np.bincount(packed.skill[first], g1[first], self.n_skills), chains, self.L0, 1 - EPS)
        self.T = ratio(per_skill(xi01, packed.has_next), per_skill(g0, packed.has_next), self.T, 1 - EPS)
        self.G = ratio(per_skill(g0 * packed.a), per_skill(g0), self.G, self.max_guess_slip)
        self.S = ratio(per_skill(g1 * (1 - packed.a)), per_skill(g1), self.S, self.max_guess_slip)
        return per_skill(np.log(c))

    def fit(self, students: list[tuple[np.ndarray, np.ndarray]]) -> BKT:
        packed = Packed(students, self.skill_of)
        answers = np.maximum(np.bincount(packed.skill, minlength=self.n_skills), 1)
        self.log_likelihoods = []
        for _ in range(self.max_iter):
            ll = self._em_step(packed)
            self.log_likelihoods.append(ll)
            if len(self.log_likelihoods) > 1 and np.all((ll - self.log_likelihoods[-2]) / answers < self.tol):
                break
        return self

    def predict_many(self, students: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """predict() for every student, filtered all at once."""
        packed = Packed(students, self.skill_of)
        prior, _, _ = self._forward(packed)
        S, G = self.S[packed.skill], self.G[packed.skill]
        p = np.empty(len(prior))
        p[packed.flat] = prior * (1 - S) + (1 - prior) * G  # back to time order
        return np.split(p, np.cumsum([len(s[0]) for s in students])[:-1])

    def predict(self, q: np.ndarray, a: np.ndarray) -> np.ndarray:
        """p(a_t = 1 | a_1..a_{t-1}) for every step t of one student (a_t itself is not used)."""
        return self.predict_many([(np.asarray(q), np.asarray(a))])[0]
