"""The result records of an evaluation: :class:`TaskScore`, :class:`ModelSummary` and
:class:`EvaluationReport` (what :func:`lusifer.evaluation.runner.evaluate` returns and
:mod:`lusifer.evaluation.report` writes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aggregation import AGGREGATION_RULE
from .significance import CONFIDENCE


@dataclass
class TaskScore:
    """One model's result on one task (scores 0-100)."""

    key: str
    name: str
    type: str
    metric: str
    split: str
    languages: list[str]
    crosslingual: bool
    score: float  # mean over the evaluated subsets (cross-lingual mteb task: Table-2 rule)
    language_scores: dict[str, float]
    subset_scores: dict[str, float]
    ci: list[float] | None = None
    evaluation_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "metric": self.metric,
            "split": self.split,
            "languages": self.languages,
            "crosslingual": self.crosslingual,
            "score": round(self.score, 4),
            "ci": self.ci,
            "language_scores": {k: round(v, 4) for k, v in self.language_scores.items()},
            "subset_scores": {k: round(v, 4) for k, v in self.subset_scores.items()},
            "evaluation_time": self.evaluation_time,
        }


@dataclass
class ModelSummary:
    tasks: dict[str, TaskScore]
    languages: dict[str, float]
    language_ci: dict[str, list[float] | None]
    average: float | None
    task_types: dict[str, float]
    crosslingual: dict[str, float]
    crosslingual_average: float | None

    def to_dict(self) -> dict[str, Any]:
        r = lambda v: None if v is None else round(v, 4)  # noqa: E731
        return {
            "tasks": {k: t.to_dict() for k, t in self.tasks.items()},
            "languages": {k: r(v) for k, v in self.languages.items()},
            "language_ci": self.language_ci,
            "average": r(self.average),
            "task_types": {k: r(v) for k, v in self.task_types.items()},
            "crosslingual": {k: r(v) for k, v in self.crosslingual.items()},
            "crosslingual_average": r(self.crosslingual_average),
        }


@dataclass
class EvaluationReport:
    """What :func:`evaluate` returns and writes to ``results.json``."""

    suite: str | None
    models: list[str]
    languages: list[str]
    summaries: dict[str, ModelSummary]
    paired_tests: list[dict[str, Any]]
    bootstrap: int
    seed: int
    output_dir: Path
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def score(self, model: str, task: str) -> float:
        return self.summaries[model].tasks[task].score

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "models": self.models,
            "languages": self.languages,
            "aggregation": AGGREGATION_RULE,
            "statistics": {
                "bootstrap_replicates": self.bootstrap,
                "seed": self.seed,
                "confidence": CONFIDENCE,
                "method": (
                    "percentile bootstrap over test examples; paired tests share resamples, "
                    "p = min(1, 2 * share of resampled differences on the far side of 0)"
                ),
            },
            "results": {m: s.to_dict() for m, s in self.summaries.items()},
            "paired_tests": self.paired_tests,
            "errors": self.errors,
        }
