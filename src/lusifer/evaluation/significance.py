"""Bootstrap statistics the paper does not report: per-task 95% CIs and paired tests.

Each task keeps per-example results from its mteb run (see ``local_mteb``); a replicate
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
  is the replicates' spread placed around mteb's score (see :func:`replicate_center`), so it
  runs narrow: at 100 items a 95% interval held the population V-measure 87% of the time
  (retrieval, STS, classification, bitext: 93-96%; tests/test_evaluation_statistics.py);
- bitext: accuracy per sentence, or for F1 (sklearn's weighted F1 in mteb's ``_compute_metrics``)
  its exact per-sentence decomposition (see :func:`bitext_f1_terms`).

The resampled indices depend only on (seed, task key, number of examples), so two models see
identical replicates and their difference is a paired bootstrap. The paired test's interval and
p-value come from one distribution, the B replicate differences placed around the reported
difference (see :func:`paired_test`): the percentile interval, and the two-sided p-value
``min(1, 2 * min(#{d_b <= 0}, #{d_b >= 0}) / B)``. They agree by construction: p < 1 - c
exactly when the level-c interval excludes 0 (p = 0 means p < 2 / B).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import f1_score

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
        return 100.0 * np.mean([macro_f1_rows(labels, p, indices) for p in predictions], axis=0)
    if task_type == "clustering":
        return 100.0 * v_measure_rows(labels, np.asarray(per_example["assignment"]), indices)
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


def _codes(*arrays: np.ndarray) -> tuple[int, list[np.ndarray]]:
    """Integer codes 0..k-1 shared by ``arrays`` (any label values), and k."""
    values, inverse = np.unique(np.concatenate(arrays), return_inverse=True)
    return values.size, np.split(inverse, np.cumsum([a.size for a in arrays])[:-1])


def _row_counts(
    codes: np.ndarray, size: int, indices: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """``out[b, c]`` = (weighted) number of draws in row b of ``indices`` whose code is c."""
    rows = indices.shape[0]
    flat = (codes[indices] + size * np.arange(rows)[:, None]).ravel()
    w = None if weights is None else weights[indices].ravel()
    return np.bincount(flat, weights=w, minlength=rows * size).reshape(rows, size)


def macro_f1_rows(labels: np.ndarray, predictions: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """sklearn's ``f1_score(average="macro", zero_division=0)`` on each resample (row of
    ``indices``): the mean over the classes present in the resample's labels or predictions."""
    size, (y, p) = _codes(labels, predictions)
    true, pred = _row_counts(y, size, indices), _row_counts(p, size, indices)
    tp = _row_counts(y, size, indices, weights=(y == p).astype(np.float64))
    total = true + pred
    f1 = np.divide(2.0 * tp, total, out=np.zeros_like(tp), where=total > 0)
    return f1.sum(axis=1) / (total > 0).sum(axis=1)


def _entropy_rows(p: np.ndarray) -> np.ndarray:
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=-1)


def v_measure_rows(labels: np.ndarray, assignment: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """sklearn's ``v_measure_score`` (mteb's clustering metric) on each resample."""
    (k, (y,)), (m, (a,)) = _codes(labels), _codes(assignment)
    table = _row_counts(y * m + a, k * m, indices).reshape(-1, k, m)
    p = table / indices.shape[1]
    p_true, p_pred = p.sum(axis=2), p.sum(axis=1)
    h_true, h_pred = _entropy_rows(p_true), _entropy_rows(p_pred)
    outer = p_true[:, :, None] * p_pred[:, None, :]
    ratio = np.divide(p, outer, out=np.ones_like(p), where=p > 0)
    mi = np.clip((p * np.log(ratio)).sum(axis=(1, 2)), 0.0, None)
    homogeneity = np.divide(mi, h_true, out=np.ones_like(mi), where=h_true > 0)
    completeness = np.divide(mi, h_pred, out=np.ones_like(mi), where=h_pred > 0)
    total = homogeneity + completeness
    return np.divide(
        2.0 * homogeneity * completeness, total, out=np.zeros_like(total), where=total > 0
    )


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


def _placed(replicates: np.ndarray, estimate: float | None, center: float | None) -> np.ndarray:
    """The finite replicates moved by ``estimate - center`` (when both are given)."""
    finite = replicates[np.isfinite(replicates)]
    if estimate is None or center is None:
        return finite
    return finite + (estimate - center)


def _order_interval(values: np.ndarray, confidence: float) -> Interval:
    """Percentile interval as order statistics: the j-th smallest and j-th largest of the B
    values, j the largest index with j < B (1 - c) / 2, so that the interval excludes 0 exactly
    when fewer than B (1 - c) / 2 values lie on one side of 0 (or on it)."""
    ordered = np.sort(values)
    tail = (1.0 - confidence) / 2.0 * ordered.size
    j = min(max(int(np.ceil(round(tail, 9))) - 1, 0), (ordered.size - 1) // 2)
    return Interval(float(ordered[j]), float(ordered[ordered.size - 1 - j]))


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
    values = _placed(replicates, estimate, center)
    return _order_interval(values, confidence) if values.size else None


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
            "p_value": round(self.p_value, 4) if np.isfinite(self.p_value) else None,
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
    different procedure (clustering). The replicates are moved by ``observed - center``; the
    percentile interval and the p-value, ``min(1, 2 * share of the moved replicates on the
    far side of 0)``, both come from that one distribution, so p < 1 - ``confidence`` exactly
    when the interval excludes 0.

    A NaN score (a model missing a language, a collapsed model's Spearman) gives no test:
    no interval and a NaN p-value (``None`` in :meth:`PairedTest.to_dict`), never p = 0.
    """
    if not np.isfinite(observed) or (center is not None and not np.isfinite(center)):
        return PairedTest(observed, None, float("nan"))
    diffs = _placed(replicate_differences, observed, center)
    if diffs.size == 0:
        return PairedTest(observed, None, float("nan"))
    far_side = min(np.count_nonzero(diffs <= 0), np.count_nonzero(diffs >= 0))
    p_value = min(1.0, 2.0 * far_side / diffs.size)
    return PairedTest(observed, _order_interval(diffs, confidence), p_value)


def mean_replicates(replicates: Sequence[np.ndarray]) -> np.ndarray:
    """Replicates of a plain mean of several task scores (e.g. a language average)."""
    return np.mean(np.stack(replicates), axis=0)
