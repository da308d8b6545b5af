"""Marginal and BKT baselines of DKT (papers/dkt/baselines.py): hand-computed values, brute-force checks of
the EM equations, parameter recovery, monotone EM and no leakage of the answer being predicted."""

import itertools

import numpy as np
import pytest

from papers.dkt.baselines import BKT, Marginal

PARAMS = {"L0": [0.4], "T": [0.1], "G": [0.2], "S": [0.1]}


def student(q, a):
    return np.array(q, np.int64), np.array(a, np.int64)


def reference_predict(params, skill_of, q, a):
    """The forward filter written as a plain loop over time, one knowledge state per skill."""
    known = np.array(params["L0"], float)  # p(learned) before the next answer on each skill
    out = []
    for exercise, correct in zip(q, a, strict=True):
        k = skill_of[exercise]
        G, S, T = params["G"][k], params["S"][k], params["T"][k]
        p = known[k] * (1 - S) + (1 - known[k]) * G
        out.append(p)
        post = known[k] * (1 - S) / p if correct else known[k] * S / (1 - p)
        known[k] = post + (1 - post) * T
    return np.array(out)


def sample_students(params, skill_of, n_students, answers_per_skill, rng):
    """Students of a known BKT: per skill a chain of `answers_per_skill` answers; skills interleaved at random
    and each answer given to a random exercise of its skill."""
    skill_of = np.asarray(skill_of)
    n_skills = len(params["L0"])
    students = []
    for _ in range(n_students):
        skills = rng.permutation(np.repeat(np.arange(n_skills), answers_per_skill))
        learned = rng.random(n_skills) < np.array(params["L0"])
        q, a = [], []
        for k in skills:
            correct = rng.random() < (1 - params["S"][k] if learned[k] else params["G"][k])
            q.append(rng.choice(np.flatnonzero(skill_of == k)))
            a.append(int(correct))
            learned[k] = learned[k] or rng.random() < params["T"][k]
        students.append(student(q, a))
    return students


def brute_force_em_step(params, chains):
    """Log-likelihood and one EM update for one skill by enumerating every hidden path of every chain."""
    L0, T, G, S = (params[k] for k in ("L0", "T", "G", "S"))
    ll, first, xi01, from0, correct0, in0, wrong1, in1 = (0.0,) * 8
    for a in chains:
        paths, weights = list(itertools.product([0, 1], repeat=len(a))), []
        for s in paths:
            w = L0 if s[0] else 1 - L0
            for t in range(1, len(a)):
                w *= {(0, 0): 1 - T, (0, 1): T, (1, 0): 0.0, (1, 1): 1.0}[s[t - 1], s[t]]
            for st, at in zip(s, a, strict=True):
                w *= (1 - S if at else S) if st else (G if at else 1 - G)
            weights.append(w)
        total = sum(weights)
        ll += np.log(total)
        for s, w in zip(paths, weights, strict=True):
            w /= total
            first += w * s[0]
            for t in range(len(a)):
                if t < len(a) - 1 and s[t] == 0:
                    from0 += w
                    xi01 += w * s[t + 1]
                if s[t]:
                    in1, wrong1 = in1 + w, wrong1 + w * (1 - a[t])
                else:
                    in0, correct0 = in0 + w, correct0 + w * a[t]
    return ll, {"L0": first / len(chains), "T": xi01 / from0, "G": correct0 / in0, "S": wrong1 / in1}


# -----------------------------------------------------------------------------
# Marginal


def test_marginal_golden_values():
    students = [student([0, 0, 1], [1, 1, 0]), student([0, 4, 4], [1, 1, 1])]
    q = np.array([0, 1, 4, 2, 7])  # 2 lies inside the id range but was never answered, 7 beyond it
    # add-one: exercise 0 is 3/3 correct -> (3+1)/(3+2); exercise 1: 0/1 -> 1/3; exercise 4: 2/2 -> 3/4.
    # unseen exercises get the global training mean 5/6
    np.testing.assert_allclose(Marginal().fit(students).predict(q), [0.8, 1 / 3, 0.75, 5 / 6, 5 / 6])
    np.testing.assert_allclose(Marginal(smoothing=0).fit(students).predict(q), [1, 0, 1, 5 / 6, 5 / 6])


# -----------------------------------------------------------------------------
# BKT prediction


def test_bkt_forward_filter_golden_values():
    # L0 = .4, T = .1, G = .2, S = .1, answers 1, 0, 1 on one skill:
    #   t=1: f = .4;  p = .4*.9 + .6*.2 = .48;           a=1: f' = .36/.48 = .75
    #   t=2: f = .75 + .25*.1 = .775;  p = .775*.9 + .225*.2 = .7425;
    #        a=0: f' = .775*.1/(1-.7425) = .0775/.2575 = 31/103
    #   t=3: f = 31/103 + (72/103)*.1 = 38.2/103;  p = (.9*38.2 + .2*64.8)/103 = 47.34/103 = .45961...
    model = BKT.from_params(PARAMS, skill_of=np.zeros(3, np.int64))
    np.testing.assert_allclose(model.predict(*student([0, 1, 2], [1, 0, 1])), [0.48, 0.7425, 47.34 / 103])


def test_bkt_skills_are_separate_chains():
    params = {k: v * 2 for k, v in PARAMS.items()}
    # exercise 0 and 2 on skill 0, exercise 1 on skill 1: the wrong answer on skill 1 does not reach skill 0,
    # so step 3 is the golden step 2 above (.7425) and step 2 starts fresh (.48)
    model = BKT.from_params(params, skill_of=np.array([0, 1, 0]))
    np.testing.assert_allclose(model.predict(*student([0, 1, 2], [1, 0, 1])), [0.48, 0.48, 0.7425])
    # with exercise 1 mapped to skill 0 as well it is the single-chain golden sequence
    model = BKT.from_params(params, skill_of=np.array([0, 0, 0]))
    np.testing.assert_allclose(model.predict(*student([0, 1, 2], [1, 0, 1])), [0.48, 0.7425, 47.34 / 103])


def test_bkt_batched_filter_matches_plain_loop():
    rng = np.random.default_rng(0)
    n_skills, skill_of = 4, np.array([0, 1, 2, 3, 3, 1])
    params = {k: rng.uniform(0.05, 0.45, n_skills) for k in ("L0", "T", "G", "S")}
    lengths = [0, 1, 2, 7, 30, 3, 15]
    students = [student(rng.integers(0, 6, n), rng.integers(0, 2, n)) for n in lengths]
    predictions = BKT.from_params(params, skill_of).predict_many(students)
    for (q, a), p in zip(students, predictions, strict=True):
        np.testing.assert_allclose(p, reference_predict(params, skill_of, q, a))


def test_bkt_prediction_does_not_see_the_answer_it_predicts():
    rng = np.random.default_rng(1)
    model = BKT.from_params(
        {"L0": [0.3], "T": [0.2], "G": [0.25], "S": [0.15]}, skill_of=np.zeros(3, np.int64)
    )
    q, a = rng.integers(0, 3, 12), rng.integers(0, 2, 12)
    p = model.predict(q, a)
    for t in range(len(a) - 1):
        flipped = a.copy()
        flipped[t] = 1 - flipped[t]
        p_flipped = model.predict(q, flipped)
        np.testing.assert_array_equal(p_flipped[: t + 1], p[: t + 1])  # steps up to t: unchanged
        assert abs(p_flipped[t + 1] - p[t + 1]) > 1e-3  # the next step does use a_t


# -----------------------------------------------------------------------------
# BKT fitting


@pytest.mark.parametrize("max_guess_slip", [1.0, 0.5])
def test_bkt_em_step_matches_enumeration(max_guess_slip):
    """One EM iteration equals the EM update computed by summing over every hidden path, per skill. With the
    default bound 0.5 the unconstrained update of skill 1's slip (0.508) must be clamped to 0.5."""
    rng = np.random.default_rng(2)
    skill_of = np.array([0, 1, 1])
    students = [student(rng.integers(0, 3, n), rng.integers(0, 2, n)) for n in (1, 4, 9, 7, 10)]
    init = (0.35, 0.15, 0.25, 0.2)
    model = BKT(2, skill_of, max_iter=1, init=init, max_guess_slip=max_guess_slip).fit(students)
    for k in range(2):
        chains = [a[skill_of[q] == k] for q, a in students if np.any(skill_of[q] == k)]
        assert max(map(len, chains)) >= 4
        ll, expected = brute_force_em_step(dict(zip(("L0", "T", "G", "S"), init, strict=True)), chains)
        np.testing.assert_allclose(model.log_likelihoods[0][k], ll, rtol=1e-10)
        for name, value in expected.items():
            if name in ("G", "S"):
                value = min(value, max_guess_slip)
            np.testing.assert_allclose(model.params[name][k], value, rtol=1e-8, err_msg=f"skill {k} {name}")
    assert (model.params["S"][1] == 0.5) == (max_guess_slip == 0.5)


def test_bkt_em_recovers_known_parameters():
    rng = np.random.default_rng(3)
    truth = {"L0": [0.3, 0.6], "T": [0.15, 0.05], "G": [0.2, 0.3], "S": [0.1, 0.15]}
    skill_of = np.array([0, 0, 1, 1])
    students = sample_students(truth, skill_of, n_students=800, answers_per_skill=25, rng=rng)
    model = BKT(2, skill_of, max_iter=200, tol=1e-7).fit(students)
    tolerance = {"L0": 0.06, "T": 0.03, "G": 0.04, "S": 0.03}
    for name, value in model.params.items():
        np.testing.assert_allclose(value, truth[name], atol=tolerance[name], err_msg=name)


def test_bkt_log_likelihood_never_decreases():
    # data not drawn from a BKT, with chains of very different lengths, some at the G/S bound
    rng = np.random.default_rng(4)
    students = [
        student(rng.integers(0, 5, n), (rng.random(n) < 0.7).astype(int)) for n in rng.integers(1, 80, 60)
    ]
    students.append(student([4] * 30, [1] * 30))  # exercise 4 is always right...
    students = [(q, np.where(q == 4, 1, a)) for q, a in students]  # ...everywhere: S goes to its floor
    model = BKT(5, max_iter=60, tol=0).fit(students)
    ll = np.array(model.log_likelihoods)
    assert len(ll) == 60
    assert np.all(np.diff(ll, axis=0) >= -1e-9 * np.abs(ll[1:])), "EM decreased a skill's log-likelihood"
    assert ll[-1].sum() > ll[0].sum() + 1


def test_bkt_fit_with_skill_map_equals_fit_on_skill_ids():
    rng = np.random.default_rng(5)
    skill_of = np.array([1, 0, 1, 2, 0])
    students = [student(rng.integers(0, 5, n), rng.integers(0, 2, n)) for n in rng.integers(1, 20, 30)]
    mapped = BKT(3, skill_of, max_iter=20).fit(students)
    relabelled = BKT(3, max_iter=20).fit([(skill_of[q], a) for q, a in students])
    for name in ("L0", "T", "G", "S"):
        np.testing.assert_allclose(mapped.params[name], relabelled.params[name])
    q, a = students[0]
    np.testing.assert_allclose(mapped.predict(q, a), relabelled.predict(skill_of[q], a))
    # the map matters: treating every exercise as its own skill gives other parameters
    assert not np.allclose(BKT(5, max_iter=20).fit(students).params["G"][:3], mapped.params["G"])


@pytest.mark.parametrize("always", [0, 1])
def test_bkt_predictions_stay_inside_zero_one(always):
    rng = np.random.default_rng(6)
    students = [student(rng.integers(0, 2, 40), np.full(40, always)) for _ in range(20)]
    model = BKT(2, max_iter=50).fit(students)
    p = np.concatenate(model.predict_many(students))
    assert np.all(np.isfinite(p)) and np.all((p > 0) & (p < 1))
    assert np.all(model.params["G"] <= 0.5) and np.all(model.params["S"] <= 0.5)


def test_without_repeated_rows_drops_an_answer_repeated_on_another_tag_only():
    """bkt_variants: a multi-skill problem appears once per tag as consecutive rows with the same answer;
    a repeat on the same tag, or a different answer on another tag, is a real answer and stays."""
    from papers.dkt.bkt_variants import without_repeated_rows

    q = np.array([3, 5, 5, 7, 7, 2])
    a = np.array([1, 1, 1, 1, 0, 0])
    ((kept_q, kept_a),) = without_repeated_rows([(q, a)])
    # dropped: rows 1, 3 and 5 (each repeats the row before it on another tag); kept: row 2 (same tag as
    # row 1) and row 4 (another answer)
    assert kept_q.tolist() == [3, 5, 7] and kept_a.tolist() == [1, 1, 0]
