"""Summarising finished runs: per-task and per-language scores, the paper's tables,
bootstrap intervals and paired tests between models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np

from . import aggregation, significance
from .entry import TaskEntry
from .languages import order_languages
from .results import EvaluationReport, ModelSummary, TaskScore


def _task_score(entry: TaskEntry, subset_scores: dict[str, float]) -> float:
    """The plain mean over the evaluated subsets; for a cross-lingual mteb task, the paper's
    Table-2 score (:func:`aggregation.crosslingual_task_score`)."""
    if entry.crosslingual and entry.subset_languages:
        score = aggregation.crosslingual_task_score(subset_scores, entry.subset_languages)
        if score is not None:
            return score
    return fmean(subset_scores.values())


def _task_summary(
    entry: TaskEntry, run: dict[str, Any], bootstrap: int, seed: int
) -> tuple[TaskScore, tuple[np.ndarray, float] | None]:
    """One task's scores, with its bootstrap replicates and their centre when it has
    per-example results (one subset)."""
    subset_scores = {s: v for s, v in run["subset_scores"].items() if s in entry.subsets}
    language_scores = aggregation.task_language_scores(subset_scores, entry.subsets_by_language)
    score = TaskScore(
        key=entry.key,
        name=entry.name,
        type=entry.type,
        metric=entry.main_metric,
        split=entry.split,
        languages=order_languages(language_scores),
        crosslingual=entry.crosslingual,
        score=_task_score(entry, subset_scores),
        language_scores=language_scores,
        subset_scores=subset_scores,
        evaluation_time=run.get("evaluation_time"),
    )
    per_example = run.get("per_example")
    if not (bootstrap > 0 and per_example and len(subset_scores) == 1):
        return score, None
    n = significance.example_count(entry.type, per_example)
    idx = significance.resample_indices(n, bootstrap, seed, entry.key)
    reps = significance.replicate_scores(entry.type, entry.main_metric, per_example, idx)
    center = significance.replicate_center(entry.type, entry.main_metric, per_example, reps)
    interval = significance.percentile_interval(reps, estimate=score.score, center=center)
    score.ci = interval.to_list() if interval else None
    return score, (reps, center)


def _model_summary(
    tasks: dict[str, TaskScore],
    replicates: dict[str, np.ndarray],
    identity: dict[str, float],
) -> ModelSummary:
    """A model's language, type and cross-lingual averages, with a bootstrap interval per
    language whose tasks all have replicates."""
    per_task_lang = {k: t.language_scores for k, t in tasks.items()}
    lang_avgs = aggregation.language_averages(per_task_lang)
    language_ci: dict[str, list[float] | None] = {}
    for lang in lang_avgs:
        keys = [k for k, t in tasks.items() if lang in t.language_scores]
        language_ci[lang] = None
        if keys and all(k in replicates for k in keys):
            interval = significance.percentile_interval(
                significance.mean_replicates([replicates[k] for k in keys]),
                estimate=lang_avgs[lang],
                center=fmean(identity[k] for k in keys),
            )
            language_ci[lang] = interval.to_list() if interval else None
    cross = {k: t.score for k, t in tasks.items() if t.crosslingual}
    return ModelSummary(
        tasks=tasks,
        languages={k: lang_avgs[k] for k in order_languages(lang_avgs)},
        language_ci={k: language_ci[k] for k in order_languages(lang_avgs)},
        average=aggregation.overall_average(lang_avgs),
        task_types=aggregation.type_averages(per_task_lang, {k: t.type for k, t in tasks.items()}),
        crosslingual=cross,
        crosslingual_average=fmean(cross.values()) if cross else None,
    )


def summarise(
    entries: Sequence[TaskEntry],
    models: Sequence[str],
    runs: dict[str, dict[str, dict[str, Any]]],
    *,
    suite: str | None,
    bootstrap: int,
    seed: int,
    output_dir: Path,
) -> EvaluationReport:
    """Aggregate per-task runs into the paper's tables plus bootstrap significance."""
    by_key = {e.key: e for e in entries}
    summaries: dict[str, ModelSummary] = {}
    replicates: dict[str, dict[str, np.ndarray]] = {}
    identity: dict[str, dict[str, float]] = {}
    for model in models:
        tasks: dict[str, TaskScore] = {}
        replicates[model], identity[model] = {}, {}
        for key, run in runs[model].items():
            tasks[key], bootstrapped = _task_summary(by_key[key], run, bootstrap, seed)
            if bootstrapped is not None:
                replicates[model][key], identity[model][key] = bootstrapped
        summaries[model] = _model_summary(tasks, replicates[model], identity[model])
    paired = []
    if bootstrap > 0:
        reference = models[0]
        for other in models[1:]:
            paired.append(_paired(reference, other, summaries, replicates, identity))
    all_languages = order_languages({lang for s in summaries.values() for lang in s.languages})
    return EvaluationReport(
        suite=suite,
        models=list(models),
        languages=all_languages,
        summaries=summaries,
        paired_tests=paired,
        bootstrap=bootstrap,
        seed=seed,
        output_dir=output_dir,
    )


def _paired(
    a: str,
    b: str,
    summaries: dict[str, ModelSummary],
    replicates: dict[str, dict[str, np.ndarray]],
    identity: dict[str, dict[str, float]],
) -> dict[str, Any]:
    tasks_out = {}
    common = [k for k in summaries[a].tasks if k in summaries[b].tasks]
    for key in common:
        ra, rb = replicates[a].get(key), replicates[b].get(key)
        if ra is None or rb is None or ra.shape != rb.shape:
            continue
        test = significance.paired_test(
            summaries[a].tasks[key].score - summaries[b].tasks[key].score,
            ra - rb,
            center=identity[a][key] - identity[b][key],
        )
        tasks_out[key] = test.to_dict()
    languages_out = {}
    for lang in summaries[a].languages:
        keys = [k for k in common if lang in summaries[a].tasks[k].language_scores]
        if not keys or not all(k in tasks_out for k in keys):
            continue
        diffs = significance.mean_replicates([replicates[a][k] - replicates[b][k] for k in keys])
        center = fmean(identity[a][k] - identity[b][k] for k in keys)
        observed = summaries[a].languages[lang] - summaries[b].languages.get(lang, float("nan"))
        languages_out[lang] = significance.paired_test(observed, diffs, center=center).to_dict()
    return {"model_a": a, "model_b": b, "tasks": tasks_out, "languages": languages_out}
