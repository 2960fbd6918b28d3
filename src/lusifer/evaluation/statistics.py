"""Bootstrap statistics the paper does not report: per-task 95% CIs and paired tests.

Each task keeps per-example results from its mteb run (see ``local_tasks``); a replicate
resamples the task's examples (queries, pairs, test items) with replacement and recomputes
the main score from them:

- retrieval / reranking: mean of pytrec_eval's per-query values of the main metric (what
  mteb averages, e.g. per-query ``ndcg_cut_10`` for ``ndcg_at_10``);
- sts: Spearman (or Pearson) correlation of gold and cosine scores, as mteb's ``_calculate_scores``;
  Spearman is computed as the Pearson correlation of average ranks (scipy's definition);
- classification: accuracy over mteb's experiments (mean of per-example correctness, which
  equals the mean of per-experiment accuracies), or sklearn's macro F1 averaged over experiments;
- clustering: sklearn's ``v_measure_score`` (mteb's metric) of a k-means assignment of all items
  fit once with mteb's settings; the interval reflects item sampling, not k-means restarts, and
  is the replicates' spread placed around mteb's score (see :func:`replicate_center`);
- bitext: accuracy per sentence, or for F1 (sklearn's weighted F1 in mteb's ``_compute_metrics``)
  its exact per-sentence decomposition (see :func:`bitext_f1_terms`).

The resampled indices depend only on (seed, task key, number of examples), so two models see
identical replicates and their difference is a paired bootstrap. Two-sided p-value of the
paired test: ``(1 + #{|d_b - d| >= |d|}) / (B + 1)`` with ``d`` the observed difference and
``d_b`` the replicates (the shifted-replicate null of Efron & Tibshirani, ch. 16).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import f1_score, v_measure_score

CONFIDENCE = 0.95


def resample_indices(n: int, replicates: int, seed: int, key: str) -> np.ndarray:
    """``replicates`` x ``n`` indices in [0, n), the same for every model on the same task."""
    salt = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng([seed, salt, n])
    return rng.integers(0, n, size=(replicates, n))


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (x * y).sum(axis=1) / denom, np.nan)


def example_count(task_type: str, per_example: Mapping[str, Any]) -> int:
    if task_type in ("retrieval", "reranking"):
        return len(per_example["values"])
    if task_type == "sts":
        return len(per_example["gold"])
    return len(per_example["labels"])


def replicate_scores(
    task_type: str, metric: str, per_example: Mapping[str, Any], indices: np.ndarray
) -> np.ndarray:
    """The main score (0-100) on each row of ``indices`` (row = one resample of the examples)."""
    if task_type in ("retrieval", "reranking"):
        values = np.asarray(per_example["values"], dtype=np.float64)
        return 100.0 * values[indices].mean(axis=1)
    if task_type == "sts":
        gold = np.asarray(per_example["gold"], dtype=np.float64)[indices]
        pred = np.asarray(per_example["cosine"], dtype=np.float64)[indices]
        if metric.endswith("spearman"):
            gold, pred = rankdata(gold, axis=1), rankdata(pred, axis=1)
        return 100.0 * _rowwise_pearson(gold, pred)
    labels = np.asarray(per_example["labels"])
    if task_type == "classification":
        predictions = np.asarray(per_example["predictions"])  # experiments x examples
        if metric == "accuracy":
            correct = (predictions == labels[None, :]).mean(axis=0)
            return 100.0 * correct[indices].mean(axis=1)
        return 100.0 * np.array(
            [
                np.mean(
                    [
                        f1_score(labels[idx], p[idx], average="macro", zero_division=0)
                        for p in predictions
                    ]
                )
                for idx in indices
            ]
        )
    if task_type == "clustering":
        assignment = np.asarray(per_example["assignment"])
        return 100.0 * np.array([v_measure_score(labels[idx], assignment[idx]) for idx in indices])
    if task_type == "bitext":
        predictions = np.asarray(per_example["predictions"])
        if metric == "accuracy":
            return 100.0 * (predictions == labels)[indices].mean(axis=1)
        if len(np.unique(labels)) == len(labels):
            return 100.0 * bitext_f1_terms(labels, predictions)[indices].mean(axis=1)
        return 100.0 * np.array(
            [
                f1_score(labels[idx], predictions[idx], average="weighted", zero_division=0)
                for idx in indices
            ]
        )
    raise ValueError(f"no bootstrap statistic for task type {task_type!r}")


def bitext_f1_terms(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Per-sentence terms whose mean is sklearn's weighted F1 when every gold match is unique.

    With one gold sentence per label, the weighted F1 is the mean over sentences i of the F1
    of label i: 2 / (1 + c_i) when sentence i is matched correctly (c_i = how many sentences
    were matched to i), else 0. Resampling these terms avoids the upward bias of recomputing
    F1 on a resample with repeated sentences.
    """
    counts = np.bincount(predictions, minlength=int(max(labels.max(), predictions.max())) + 1)
    correct = predictions == labels
    return np.where(correct, 2.0 / (1.0 + counts[labels]), 0.0)


def point_score(task_type: str, metric: str, per_example: Mapping[str, Any]) -> float:
    """The main score recomputed from the per-example data (the identity resample)."""
    n = example_count(task_type, per_example)
    return float(replicate_scores(task_type, metric, per_example, np.arange(n)[None, :])[0])


def replicate_center(
    task_type: str, metric: str, per_example: Mapping[str, Any], replicates: np.ndarray
) -> float:
    """The value the replicates spread around: the full-data statistic, except for clustering,
    where V-measure on resamples with repeated items is biased upward and mteb's score is a
    mean over its own k-means experiments, so the replicates' mean is used."""
    if task_type == "clustering":
        return float(np.nanmean(replicates))
    return point_score(task_type, metric, per_example)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def to_list(self) -> list[float]:
        return [round(self.low, 4), round(self.high, 4)]


def percentile_interval(
    replicates: np.ndarray,
    confidence: float = CONFIDENCE,
    *,
    estimate: float | None = None,
    center: float | None = None,
) -> Interval | None:
    """Percentile interval of ``replicates``; with ``estimate`` and ``center`` it is moved by
    ``estimate - center`` (used where mteb's score comes from another procedure than the
    per-example statistic, i.e. clustering; elsewhere the shift is mteb's rounding only)."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return None
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    shift = 0.0 if estimate is None or center is None else estimate - center
    return Interval(float(low + shift), float(high + shift))


@dataclass(frozen=True)
class PairedTest:
    """Model A minus model B on identical resamples."""

    difference: float
    interval: Interval | None
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "difference": round(self.difference, 4),
            "ci": self.interval.to_list() if self.interval else None,
            "p_value": round(self.p_value, 4),
        }


def paired_test(
    observed: float,
    replicate_differences: np.ndarray,
    *,
    center: float | None = None,
    confidence: float = CONFIDENCE,
) -> PairedTest:
    """Two-sided paired bootstrap test of ``observed`` = score A - score B.

    ``center`` is the difference the replicates resample around (the per-example statistic on
    the full data); it defaults to ``observed`` and differs only where mteb's own score uses a
    different procedure (clustering).
    """
    diffs = replicate_differences[np.isfinite(replicate_differences)]
    if diffs.size == 0:
        return PairedTest(observed, None, float("nan"))
    center = observed if center is None else center
    extreme = np.count_nonzero(np.abs(diffs - center) >= abs(center))
    interval = percentile_interval(diffs, confidence, estimate=observed, center=center)
    return PairedTest(observed, interval, float((1 + extreme) / (diffs.size + 1)))


def mean_replicates(replicates: Sequence[np.ndarray]) -> np.ndarray:
    """Replicates of a plain mean of several task scores (e.g. a language average)."""
    return np.mean(np.stack(replicates), axis=0)
