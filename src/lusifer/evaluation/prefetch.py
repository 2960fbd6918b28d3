"""Read a suite's local tasks ahead of scoring and encode every distinct text once.

mteb scores one task at a time and asks the model for that task's texts in small
batches; the bundled tasks share many texts (the help-topic classification and
clustering tasks, bitext and retrieval). Reading every pending task's texts first and
encoding them in one length-sorted call per (instruction, kind) leaves mteb only cache
hits. A text this module does not foresee is simply encoded when mteb asks for it, so
the scores never depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .entry import TaskEntry
from .local_data import load_task_data
from .local_mteb import make_mteb_task
from .local_tasks import LocalTaskSpec


def _document(row: dict[str, Any]) -> str:
    """A corpus row as mteb gives it to the model: title and text joined."""
    title = row.get("title") or ""
    return f"{title} {row['text']}".strip() if title else row["text"]


def classification_train_texts(spec: LocalTaskSpec, train: Any) -> list[str]:
    """The training texts mteb's classification evaluator encodes: the union of its
    ``n_experiments`` undersamplings (``samples_per_label`` a label), drawn by mteb's own
    method. All of them if that private method changes shape."""
    task = make_mteb_task(spec)
    texts = list(train[task.input_column_name])
    try:
        order, chosen = None, set()
        for experiment in range(task.n_experiments):
            _, order, selected = task._undersample_data(train, experiment, order)
            chosen.update(selected)
    except (AttributeError, TypeError, ValueError):
        return texts
    return [texts[i] for i in sorted(chosen)]


def task_texts(spec: LocalTaskSpec) -> dict[str, list[str]]:
    """The texts mteb will ask the model to encode for a local task, by kind."""
    data = load_task_data(spec)
    if spec.type in ("retrieval", "reranking"):
        split = data["default"]["test"]
        return {
            "query": list(split["queries"]["text"]),
            "document": [_document(row) for row in split["corpus"]],
        }
    if spec.type in ("sts", "bitext"):
        test = data["test"]
        return {"query": list(test["sentence1"]) + list(test["sentence2"])}
    if spec.type == "classification":
        train = classification_train_texts(spec, data["train"])
        return {"query": train + list(data["test"]["text"])}
    if spec.type == "clustering":
        return {"query": list(data["test"]["sentences"])}
    return {}


def prefetch_local_tasks(wrapper: Any, entries: Sequence[TaskEntry], batch_size: int) -> int:
    """Encode the texts of ``entries`` (local tasks only) through ``wrapper``
    (a :class:`~lusifer.evaluation.mteb_model.MtebEncoder`) in one call per
    (instruction, kind). Returns the number of texts encoded."""
    groups: dict[tuple[str | None, str], list[str]] = {}
    for entry in entries:
        spec = getattr(entry, "spec", None)
        if entry.source != "local" or spec is None:
            continue
        instruction = wrapper.instructions.get(entry.name, entry.instruction)
        for kind, texts in task_texts(spec).items():
            scope = instruction if wrapper.reads_instructions else None
            groups.setdefault((scope, kind), []).extend(texts)
    encoded = 0
    for (instruction, kind), texts in groups.items():
        encoded += wrapper.prefetch(
            texts, instruction=instruction, kind=kind, batch_size=batch_size
        )
    return encoded
