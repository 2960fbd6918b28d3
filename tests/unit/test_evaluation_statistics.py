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
