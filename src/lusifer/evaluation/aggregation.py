"""The paper's aggregation: a language's score is the plain mean of its tasks' main scores,
the overall score the plain mean of the language scores.

A task's score for a language is the plain mean main score of the task's subsets assigned to
that language. For mteb tasks that is every subset involving the language, as mteb 1.14's
``get_task(name, languages=[iso3])`` and ``TaskResult.get_score(languages=[iso3])`` gave it
to the reference code (STS17 es-en counts for Spanish and for English); see
:func:`lusifer.evaluation.languages.involves`. Local tasks: an en-xx task counts for xx
(:func:`lusifer.evaluation.languages.aggregation_languages`). Per task type: the same
two-level mean restricted to tasks of that type (mean over the languages having such a task
of the language's mean over them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import fmean

AGGREGATION_RULE = (
    "A task's score for a language is the plain mean main score (0-100) of its subsets that "
    "involve the language (mteb 1.14's get_task/get_score rule, as in the reference code: "
    "STS17 es-en counts for Spanish and for English; a local en-xx task counts for xx only). "
    "A language's score is the plain mean over its tasks; the overall average is the plain "
    "mean of the language scores. A task-type average is the mean over languages of each "
    "language's mean over its tasks of that type. A cross-lingual task's Table-2 score, as "
    "the reference code computed it: over the subsets involving any of the 14 languages, the "
    "mean over every language of those subsets of the mean of the subsets involving it."
)


def crosslingual_task_score(
    subset_scores: Mapping[str, float], subset_languages: Mapping[str, Sequence[str]]
) -> float | None:
    """A cross-lingual task's Table-2 score, as the reference code's ``--eval_crosslingual``
    computed it from mteb 1.14: for each language (ISO 639-3) of the evaluated subsets,
    ``get_score(languages=[it])``, the mean over the subsets involving it; then the plain mean
    over those languages (None without subsets)."""
    languages = dict.fromkeys(x for s in subset_scores for x in subset_languages[s])
    per_language = [
        fmean(v for s, v in subset_scores.items() if lang in subset_languages[s])
        for lang in languages
    ]
    return fmean(per_language) if per_language else None


def task_language_scores(
    subset_scores: Mapping[str, float], subsets_by_language: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """A task's score per language: mean of the subset scores assigned to the language."""
    out = {}
    for language, subsets in subsets_by_language.items():
        values = [subset_scores[s] for s in subsets if s in subset_scores]
        if values:
            out[language] = fmean(values)
    return out


def language_averages(scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``scores[task][language]`` -> mean over tasks per language."""
    by_language: dict[str, list[float]] = {}
    for per_language in scores.values():
        for language, value in per_language.items():
            by_language.setdefault(language, []).append(value)
    return {language: fmean(values) for language, values in by_language.items()}


def overall_average(language_scores: Mapping[str, float]) -> float | None:
    """Mean of the language averages (None when there are none)."""
    return fmean(language_scores.values()) if language_scores else None


def type_averages(
    scores: Mapping[str, Mapping[str, float]], task_types: Mapping[str, str]
) -> dict[str, float]:
    """Per task type: mean over languages of the language's mean over its tasks of that type."""
    out = {}
    for task_type in sorted(set(task_types.values())):
        subset = {task: s for task, s in scores.items() if task_types[task] == task_type}
        average = overall_average(language_averages(subset))
        if average is not None:
            out[task_type] = average
    return out
