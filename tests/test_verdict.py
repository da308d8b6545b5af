"""Golden-value tests of the verdict module: every kind of number the suite checks."""

import math

import pytest

from repro.papers import Experiment, Metric, Selection
from repro.verdict import MISS, NO_RESULT, NOT_IMPLEMENTED, NOT_RUN, PASS, SHOWN, agrees, fmt, judge, mean_std


def metric(**kw):
    base = dict(
        key="m",
        label="m",
        published=100.0,
        source="Table 2",
        evidence="paper",
        direction="higher",
        tolerance={"abs": 0.0},
        gate=("cpu",),
        aggregate="mean",
    )
    base.update(kw)
    return Metric(**base)


def experiment(*metrics, selection=None, implemented=True):
    return Experiment("exp", "title", "Table", tuple(metrics), selection or Selection(), implemented)


def records(*values, key="m", extra=None):
    return [{"seed": i + 1, "metrics": {key: v, **(extra[i] if extra else {})}} for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("kw", "value", "expected"),
    [
        (dict(), 100.0, True),  # percent of lengths solved: all solved
        (dict(), 98.3, False),
        (dict(published=0.86, tolerance={"abs": 0.02}), 0.84, True),  # AUC within 0.02
        (dict(published=0.86, tolerance={"abs": 0.02}), 0.8399, False),
        (dict(published=0.86, tolerance={"abs": 0.02}), 0.95, True),  # better than published agrees
        (dict(published=1.077, direction="lower", tolerance={"rel": 0.05}), 1.13, True),  # nats/char
        (dict(published=1.077, direction="lower", tolerance={"rel": 0.05}), 1.131, False),
        (dict(published=118.0, direction="lower", tolerance={"abs": 5}), 123.0, True),  # perplexity
        (dict(published=1.29, direction="lower", tolerance={"abs": 0.2}), 1.5, False),  # error %
        (dict(published=24.3, tolerance={"abs": 1.0}), 23.3, True),  # BLEU-4
        (dict(), math.nan, None),
        (dict(published=None), 1.0, None),
    ],
)
def test_agrees_golden(kw, value, expected):
    assert agrees(metric(**kw), value) is expected


def test_mean_std_is_sample_std():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(1.2909944487, abs=1e-9)
    assert mean_std([5.0]) == (5.0, 0.0)


def test_mean_over_seeds_gates():
    exp = experiment(metric(published=0.86, tolerance={"abs": 0.01}))
    agg = judge(exp, records(0.85, 0.86, 0.87), "cpu")
    row = agg["metrics"][0]
    assert row["reproduced"] == pytest.approx(0.86)
    assert row["std"] == pytest.approx(0.01)
    assert row["k"] == 3 and row["verdict"] == PASS and agg["verdict"] == PASS
    assert judge(exp, records(0.80, 0.84, 0.84), "cpu")["verdict"] == MISS


def test_selection_rule_picks_lowest_validation_entropy():
    exp = experiment(metric(aggregate="selected"), selection=Selection("best", "val_entropy", "min"))
    recs = records(
        100.0, 60.0, 96.0, extra=[{"val_entropy": 0.3}, {"val_entropy": 0.1}, {"val_entropy": 0.2}]
    )
    agg = judge(exp, recs, "cpu")
    assert agg["selection"]["selected_seed"] == 2
    assert agg["metrics"][0]["reproduced"] == 60.0
    assert agg["verdict"] == MISS  # the selected seed decides, not the best test score
    assert agg["metrics"][0]["k"] == 1 and "1/3 seeds reach it" in agg["metrics"][0]["text"]


def test_k_of_n_seeds():
    exp = experiment(metric(aggregate="k_of_n", min_k=2))
    assert judge(exp, records(100.0, 100.0, 50.0), "cpu")["verdict"] == PASS
    agg = judge(exp, records(100.0, 40.0, 50.0), "cpu")
    assert agg["verdict"] == MISS and agg["metrics"][0]["text"].startswith("1 of 3 seeds;")


def test_gating_depends_on_tier_and_evidence():
    assert judge(experiment(metric()), records(10.0), "smoke")["verdict"] == SHOWN
    unverified = metric(evidence="unverified", gate=())
    assert judge(experiment(unverified), records(10.0), "cpu")["metrics"][0]["verdict"] == SHOWN


def test_absent_data_unimplemented_and_missing_results_never_pass():
    assert judge(experiment(metric()), [], "cpu", data_present=False)["verdict"] == NOT_RUN
    # Records are judged on any machine: whether the data is here says nothing about what they hold.
    assert judge(experiment(metric()), records(100.0), "cpu", data_present=False)["verdict"] == PASS
    assert judge(experiment(metric(), implemented=False), [], "cpu")["verdict"] == NOT_IMPLEMENTED
    assert judge(experiment(metric()), [], "cpu")["verdict"] == NO_RESULT


def test_nan_metric_is_a_miss_when_gated():
    assert judge(experiment(metric()), records(math.nan), "cpu")["verdict"] == MISS


def test_a_metric_may_select_its_seed_by_its_own_rule():
    """The "+ rounding" row picks the seed with the best rounded validation entropy, the soft row by soft."""
    by_rounded = Selection("best", "val_entropy_rounding", "min")
    exp = experiment(
        metric(aggregate="selected"),
        metric(key="m", label="rounded", aggregate="selected", selection=by_rounded),
        selection=Selection("best", "val_entropy", "min"),
    )
    extra = [
        {"val_entropy": 0.1, "val_entropy_rounding": 0.5},
        {"val_entropy": 0.2, "val_entropy_rounding": 0.3},
    ]
    agg = judge(exp, records(60.0, 100.0, extra=extra), "cpu")
    soft, rounded = agg["metrics"]
    assert (soft["selected_seed"], soft["reproduced"], soft["verdict"]) == (1, 60.0, MISS)
    assert (rounded["selected_seed"], rounded["reproduced"], rounded["verdict"]) == (2, 100.0, PASS)
    assert agg["selection"]["selected_seed"] == 1 and agg["verdict"] == MISS


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.84127, "0.841"),
        (0.00271, "0.00271"),
        (1.67769, "1.68"),
        (57.333, "57.3"),
        (100.0, "100.0"),
        (-1.5, "-1.50"),
        (None, "–"),
        (float("nan"), "–"),
    ],
)
def test_fmt_keeps_three_significant_figures_and_a_decimal(value, text):
    assert fmt(value) == text
