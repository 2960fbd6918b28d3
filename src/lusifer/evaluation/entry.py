"""What the runner needs to know about one task, whatever its source (mteb hub or a local dir)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask
    from mteb.abstasks.task_metadata import TaskType

#: lusifer's task type names for mteb's ``TaskMetadata.type`` values.
MTEB_TYPE_TO_TYPE: Mapping[TaskType, str] = {
    "Retrieval": "retrieval",
    "Reranking": "reranking",
    "STS": "sts",
    "Classification": "classification",
    "MultilabelClassification": "multilabel_classification",
    "PairClassification": "pair_classification",
    "Clustering": "clustering",
    "BitextMining": "bitext",
    "Summarization": "summarization",
}
TYPE_TO_MTEB_TYPE: Mapping[str, TaskType] = {v: k for k, v in MTEB_TYPE_TO_TYPE.items()}


@dataclass(frozen=True)
class TaskEntry:
    """One task to run: how to build a fresh mteb task and how its subsets map to languages.

    ``subsets_by_language`` maps each language the task counts for to the hf subsets whose
    mean main score is the task's score for that language (mteb tasks: every subset involving
    the language, :func:`lusifer.evaluation.languages.involves`; local tasks:
    :func:`lusifer.evaluation.languages.aggregation_languages`). ``subset_languages`` gives an
    mteb subset's ISO 639-3 codes, for the cross-lingual (Table 2) score.
    """

    key: str  # unique within a run: file names and table columns
    name: str  # the mteb task name
    type: str  # lusifer type name (see MTEB_TYPE_TO_TYPE)
    main_metric: str
    split: str
    instruction: str | None
    subsets_by_language: Mapping[str, tuple[str, ...]]
    crosslingual: bool
    source: Literal["mteb", "local"]
    digest: str  # changes with the task's definition: a finished result is reused only if equal
    factory: Callable[[], AbsTask] = field(compare=False, repr=False)
    subset_languages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # a local task's definition (its data can be read ahead of scoring); None for mteb's
    spec: Any = field(default=None, compare=False, repr=False)

    @property
    def languages(self) -> list[str]:
        return list(self.subsets_by_language)

    @property
    def subsets(self) -> list[str]:
        return list(dict.fromkeys(s for subs in self.subsets_by_language.values() for s in subs))
