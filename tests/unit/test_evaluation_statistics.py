"""Paired bootstrap tests: the p-value and the percentile interval come from one distribution."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from lusifer.evaluation import significance

REPLICATES = 400
LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)
# effect of model A over model B: clearly negative, near zero (both signs), clearly positive
EFFECTS = (-0.6, -0.25, -0.12, -0.05, 0.0, 0.04, 0.1, 0.2, 0.3, 0.6)

PerExample = dict[str, Any]


def _retrieval(rng: np.random.Generator, effect: float, n: int = 60) -> tuple[PerExample, ...]:
    base = rng.uniform(0.0, 1.0, n)
    a = np.clip(base + effect + rng.normal(0.0, 0.35, n), 0.0, 1.0)
    b = np.clip(base + rng.normal(0.0, 0.35, n), 0.0, 1.0)
    return {"values": a.tolist()}, {"values": b.tolist()}


def _sts(rng: np.random.Generator, effect: float, n: int = 60) -> tuple[PerExample, ...]:
    gold = rng.uniform(0.0, 5.0, n)
    shared = rng.normal(0.0, 1.5, n)
    noise_a, noise_b = max(0.3, 1.5 - 3.0 * effect), max(0.3, 1.5 + 3.0 * effect)
    a = gold + shared + rng.normal(0.0, noise_a, n)
    b = gold + shared + rng.normal(0.0, noise_b, n)
    return (
        {"gold": gold.tolist(), "cosine": a.tolist()},
        {"gold": gold.tolist(), "cosine": b.tolist()},
    )


def _predictions(rng: np.random.Generator, labels: np.ndarray, accuracy: float) -> np.ndarray:
    wrong = rng.integers(0, labels.max() + 1, labels.size)
    return np.where(rng.random(labels.size) < np.clip(accuracy, 0.0, 1.0), labels, wrong)


def _classification(rng: np.random.Generator, effect: float, n: int = 60) -> tuple[PerExample, ...]:
    labels = rng.integers(0, 4, n)
    a = [_predictions(rng, labels, 0.5 + effect / 2).tolist() for _ in range(3)]
    b = [_predictions(rng, labels, 0.5 - effect / 2).tolist() for _ in range(3)]
    return (
        {"labels": labels.tolist(), "predictions": a},
        {"labels": labels.tolist(), "predictions": b},
    )


def _clustering(rng: np.random.Generator, effect: float, n: int = 60) -> tuple[PerExample, ...]:
    labels = rng.integers(0, 4, n)
    a = _predictions(rng, labels, 0.55 + effect / 2)
    b = _predictions(rng, labels, 0.55 - effect / 2)
    return (
        {"labels": labels.tolist(), "assignment": a.tolist()},
        {"labels": labels.tolist(), "assignment": b.tolist()},
    )


def _bitext(rng: np.random.Generator, effect: float, n: int = 60) -> tuple[PerExample, ...]:
    labels = np.arange(n)
    a = _predictions(rng, labels, 0.5 + effect / 2)
    b = _predictions(rng, labels, 0.5 - effect / 2)
    return (
        {"labels": labels.tolist(), "predictions": a.tolist()},
        {"labels": labels.tolist(), "predictions": b.tolist()},
    )


MAKERS: dict[str, Callable[..., tuple[PerExample, ...]]] = {
    "retrieval": _retrieval,
    "reranking": _retrieval,
    "sts": _sts,
    "classification": _classification,
    "clustering": _clustering,
    "bitext": _bitext,
}


def _runner_inputs(
    task_type: str, metric: str, a: PerExample, b: PerExample, key: str, rng: np.random.Generator
) -> tuple[float, np.ndarray, float]:
    """(reported difference, replicate differences, their centre) as ``runner._paired`` builds
    them: replicates on shared resamples, centred on the per-example statistic, except for
    clustering where mteb's score comes from its own k-means runs (here: the replicates'
    centre plus an offset of a few points, as mteb's scores differ from it)."""
    n = significance.example_count(task_type, a)
    idx = significance.resample_indices(n, REPLICATES, 0, key)
    ra = significance.replicate_scores(task_type, metric, a, idx)
    rb = significance.replicate_scores(task_type, metric, b, idx)
    ca = significance.replicate_center(task_type, metric, a, ra)
    cb = significance.replicate_center(task_type, metric, b, rb)
    observed = ca - cb
    if task_type == "clustering":
        observed += rng.normal(0.0, 4.0)
    return observed, ra - rb, ca - cb


@pytest.mark.parametrize(
    ("task_type", "metric"),
    [
        ("retrieval", "ndcg_at_10"),
        ("reranking", "map"),
        ("sts", "cosine_spearman"),
        ("sts", "cosine_pearson"),
        ("classification", "accuracy"),
        ("classification", "f1"),
        ("clustering", "v_measure"),
        ("bitext", "accuracy"),
        ("bitext", "f1"),
    ],
)
def test_p_value_agrees_with_the_interval(task_type, metric):
    """At every confidence level c: p < 1 - c exactly when the c-interval excludes 0."""
    rng = np.random.default_rng(zlib.crc32(f"{task_type}/{metric}".encode()))
    signs = set()
    for i, effect in enumerate(EFFECTS):
        a, b = MAKERS[task_type](rng, effect)
        observed, diffs, center = _runner_inputs(task_type, metric, a, b, f"case{i}", rng)
        for level in LEVELS:
            test = significance.paired_test(observed, diffs, center=center, confidence=level)
            excludes_zero = test.interval.low > 0 or test.interval.high < 0
            significant = test.p_value < round(1.0 - level, 10)
            assert significant == excludes_zero, (effect, level, test)
            if level >= 0.9:
                assert test.interval.low <= observed <= test.interval.high
            assert 0.0 <= test.p_value <= 1.0
        # p is the exact boundary: just wider intervals contain 0, just narrower ones do not
        half_step = 0.5 / diffs.size
        if test.p_value > 0:
            wider = significance.paired_test(
                observed, diffs, center=center, confidence=1 - test.p_value + half_step
            )
            assert wider.interval.low <= 0 <= wider.interval.high, (effect, test)
        if test.p_value < 1:
            narrower = significance.paired_test(
                observed, diffs, center=center, confidence=1 - test.p_value - half_step
            )
            assert narrower.interval.low > 0 or narrower.interval.high < 0, (effect, test)
        if test.p_value < 0.05:
            signs.add(np.sign(test.difference))
    assert signs == {-1.0, 1.0}  # the cases include clear differences of both signs


def test_p_value_is_the_two_sided_share_beyond_zero():
    diffs = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    test = significance.paired_test(3.5, diffs)
    assert test.p_value == pytest.approx(2 * 2 / 10)  # -1 and 0 lie at or below zero
    moved = significance.paired_test(4.5, diffs, center=3.5)  # the same spread around 4.5
    assert moved.p_value == pytest.approx(2 * 1 / 10)
    assert moved.interval.low == pytest.approx(test.interval.low + 1.0)
    assert significance.paired_test(0.0, np.zeros(50)).p_value == 1.0
    assert significance.paired_test(-3.0, -diffs - 10).p_value == 0.0
    empty = significance.paired_test(1.0, np.array([np.nan]))
    assert empty.interval is None and np.isnan(empty.p_value)


def test_vectorised_f1_and_v_measure_match_sklearn():
    from sklearn.metrics import f1_score, v_measure_score

    rng = np.random.default_rng(7)
    labels = rng.choice([3, 5, 8, 9], 40)  # any label values
    predictions = np.where(rng.random(40) < 0.6, labels, rng.choice([3, 5, 8, 11], 40))
    assignment = np.where(rng.random(40) < 0.6, labels, rng.integers(0, 4, 40))
    idx = np.vstack([significance.resample_indices(40, 50, 0, "t"), np.zeros((1, 40), int)])
    expected_f1 = [
        f1_score(labels[i], predictions[i], average="macro", zero_division=0) for i in idx
    ]
    expected_v = [v_measure_score(labels[i], assignment[i]) for i in idx]
    assert significance.macro_f1_rows(labels, predictions, idx) == pytest.approx(expected_f1)
    assert significance.v_measure_rows(labels, assignment, idx) == pytest.approx(expected_v)
    assert significance.v_measure_rows(labels, labels, idx[-1:])[0] == 1.0  # one cluster, one class


NULL_TASKS = [
    ("retrieval", "ndcg_at_10"),
    ("sts", "cosine_spearman"),
    ("classification", "accuracy"),
    ("clustering", "v_measure"),
    ("bitext", "accuracy"),
]


@pytest.mark.parametrize(("task_type", "metric"), NULL_TASKS)
def test_two_equal_systems_are_called_different_about_5_percent_of_the_time(task_type, metric):
    """Null calibration (not p against its own interval): two systems drawn from one
    process (no effect), 100 items, 300 seeded trials: about 5% of p-values below 0.05
    (binomial 99.9% range for 300 trials: 1% to 9%)."""
    rng, trials, called = np.random.default_rng(1), 300, 0
    for i in range(trials):
        a, b = MAKERS[task_type](rng, 0.0, n=100)
        idx = significance.resample_indices(
            significance.example_count(task_type, a), REPLICATES, 0, f"null{i}"
        )
        ra = significance.replicate_scores(task_type, metric, a, idx)
        rb = significance.replicate_scores(task_type, metric, b, idx)
        ca = significance.replicate_center(task_type, metric, a, ra)
        cb = significance.replicate_center(task_type, metric, b, rb)
        called += significance.paired_test(ca - cb, ra - rb, center=ca - cb).p_value < 0.05
    assert 0.01 <= called / trials <= 0.10, (task_type, called / trials)


def _flip(rng: np.random.Generator, labels: np.ndarray, accuracy: float) -> np.ndarray:
    """``labels`` kept with probability ``accuracy``, else another of the 4 classes."""
    other = (labels + rng.integers(1, 4, labels.size)) % 4
    return np.where(rng.random(labels.size) < accuracy, labels, other)


def _known(task_type: str, rng: np.random.Generator, n: int) -> tuple[PerExample, float | None]:
    """Per-example results drawn from a distribution whose main score is known (0-100);
    None for clustering, whose population V-measure is computed on a large sample."""
    if task_type == "retrieval":
        return {"values": rng.beta(2.0, 3.0, n).tolist()}, 40.0  # Beta(2, 3): mean 0.4
    if task_type == "sts":  # bivariate normal, rho 0.6: Spearman 6/pi asin(rho/2)
        z = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.6], [0.6, 1.0]], n)
        return {"gold": z[:, 0].tolist(), "cosine": z[:, 1].tolist()}, 600 / np.pi * np.arcsin(0.3)
    if task_type == "bitext":
        labels = np.arange(n)
        predictions = np.where(rng.random(n) < 0.7, labels, (labels + 1) % n)
        return {"labels": labels.tolist(), "predictions": predictions.tolist()}, 70.0
    labels = rng.integers(0, 4, n)
    if task_type == "classification":
        runs = [_flip(rng, labels, 0.7).tolist() for _ in range(3)]
        return {"labels": labels.tolist(), "predictions": runs}, 70.0
    return {"labels": labels.tolist(), "assignment": _flip(rng, labels, 0.7).tolist()}, None


@pytest.mark.parametrize(("task_type", "metric"), NULL_TASKS)
def test_the_95_percent_interval_covers_the_known_score(task_type, metric):
    """Coverage on a known distribution, 100 items, 300 seeded samples: the 95% interval
    holds the population score about 95% of the time. Clustering's falls short (87%
    here): its interval reflects item sampling only, and V-measure on 100 items is biased
    upward (the module docstring says so); its bound here is the shortfall measured."""
    from sklearn.metrics import v_measure_score

    big = np.random.default_rng(99)
    labels = big.integers(0, 4, 400_000)
    population_v = 100 * v_measure_score(labels, _flip(big, labels, 0.7))
    rng, trials, covered = np.random.default_rng(2), 300, 0
    for i in range(trials):
        per_example, truth = _known(task_type, rng, 100)
        truth = population_v if truth is None else truth
        n = significance.example_count(task_type, per_example)
        idx = significance.resample_indices(n, REPLICATES, 0, f"cover{i}")
        reps = significance.replicate_scores(task_type, metric, per_example, idx)
        interval = significance.percentile_interval(
            reps,
            estimate=significance.point_score(task_type, metric, per_example),
            center=significance.replicate_center(task_type, metric, per_example, reps),
        )
        covered += interval.low <= truth <= interval.high
    low = 0.80 if task_type == "clustering" else 0.92
    assert low <= covered / trials <= 0.99, (task_type, covered / trials)


def test_a_nan_score_gives_no_p_value():
    """A model missing a language or a collapsed model's NaN Spearman: no test, not p = 0."""
    diffs = np.linspace(-1.0, 3.0, 200)
    for observed, center in ((float("nan"), None), (float("nan"), 1.0), (1.0, float("nan"))):
        test = significance.paired_test(observed, diffs, center=center)
        assert test.interval is None and np.isnan(test.p_value)
        assert test.to_dict()["p_value"] is None and test.to_dict()["ci"] is None
    assert significance.paired_test(1.0, diffs).to_dict()["p_value"] is not None
