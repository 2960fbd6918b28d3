"""Local-data tasks: a directory with ``task.json`` and data files, run offline through mteb.

Layout (``type`` in task.json):

- retrieval: BEIR files ``corpus.jsonl`` (``_id``, ``text``, optional ``title``),
  ``queries.jsonl`` (``_id``, ``text``), ``qrels/test.tsv`` (header, ``query-id corpus-id score``)
- reranking: ``test.jsonl`` rows ``{"query", "positive": [...], "negative": [...]}``
- sts: ``test.jsonl`` rows ``{"sentence1", "sentence2", "score"}``
- classification: ``train.jsonl`` and ``test.jsonl`` rows ``{"text", "label"}``
- clustering: ``test.jsonl`` rows ``{"text", "label"}``
- bitext: ``test.jsonl`` rows ``{"sentence1", "sentence2"}``

This module reads ``task.json`` (:func:`read_task_spec`, through the strict dataclass
loader :func:`lusifer.config.from_dict`); :mod:`.local_data` reads and checks the data
files (JSON lines through :mod:`lusifer.jsonl`); :mod:`.local_mteb` holds the mteb task
classes that run them and keep per-example results for the bootstrap statistics.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..config import ConfigError, from_dict
from ..config import short_repr as show
from ..jsonl import DataFormatError, check_unicode, json_problem, read_text
from .instructions import DEFAULT_INSTRUCTIONS
from .languages import get_language

TASK_TYPES: tuple[str, ...] = (
    "retrieval",
    "reranking",
    "sts",
    "classification",
    "clustering",
    "bitext",
)

#: Default main score per type: mteb's own choice for that task family.
DEFAULT_MAIN_SCORE: dict[str, str] = {
    "retrieval": "ndcg_at_10",
    "reranking": "map_at_1000",
    "sts": "cosine_spearman",
    "classification": "accuracy",
    "clustering": "v_measure",
    "bitext": "f1",
}
#: Main scores the bootstrap statistics know how to recompute per example.
SUPPORTED_MAIN_SCORES: dict[str, tuple[str, ...]] = {
    "retrieval": ("ndcg_at_10", "ndcg_at_1", "ndcg_at_5", "ndcg_at_20", "ndcg_at_100", "map_at_10", "map_at_100", "map_at_1000", "recall_at_10", "recall_at_100"),
    "reranking": ("map_at_1000", "map_at_10", "ndcg_at_10"),
    "sts": ("cosine_spearman", "cosine_pearson"),
    "classification": ("accuracy", "f1"),
    "clustering": ("v_measure",),
    "bitext": ("f1", "accuracy"),
}  # fmt: skip

DATA_FILES: dict[str, tuple[str, ...]] = {
    "retrieval": ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"),
    "reranking": ("test.jsonl",),
    "sts": ("test.jsonl",),
    "classification": ("train.jsonl", "test.jsonl"),
    "clustering": ("test.jsonl",),
    "bitext": ("test.jsonl",),
}


class TaskDirError(DataFormatError):
    """A malformed local task directory; the message names the file, line and field."""


def fail(
    path: Path, message: str, line: int | None = None, field_name: str | None = None
) -> TaskDirError:
    return TaskDirError(str(path), line, field_name, message)


@dataclass(frozen=True)
class LocalTaskSpec:
    """The parsed ``task.json`` of a local task directory."""

    path: Path
    name: str
    type: str
    languages: tuple[str, ...]
    instruction: str
    main_score: str
    description: str = ""
    source: str | None = None
    license: str | None = None
    # what the texts are about, e.g. "english-out-of-domain" (reports group tasks by it)
    domain: str | None = None

    @property
    def crosslingual(self) -> bool:
        return len(set(self.languages)) > 1

    def digest(self) -> str:
        """Hash of task.json and the data files: a changed task is rerun."""
        digest = hashlib.sha1()
        for rel in ("task.json", *DATA_FILES[self.type]):
            digest.update(rel.encode())
            digest.update((self.path / rel).read_bytes())
        return digest.hexdigest()[:16]


@dataclass
class TaskJson:
    """``task.json`` as written; only ``name``, ``type`` and ``languages`` are required."""

    name: str
    type: str
    languages: list[str]
    instruction: str | None = None
    main_score: str | None = None
    description: str | None = None
    source: str | None = None
    license: str | None = None
    domain: str | None = None


def _read_json(path: Path) -> Any:
    """The JSON value of ``path``, or a :class:`TaskDirError` naming the line at fault."""
    text = read_text(path, TaskDirError)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        line = getattr(err, "lineno", None)
        raise fail(path, f"invalid JSON ({json_problem(err)})", line) from None


def _task_json(path: Path) -> TaskJson:
    """``path`` read by the strict dataclass loader, its strings checked and stripped."""
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise fail(path, f"expected a JSON object, got {type(raw).__name__}")
    try:
        meta = from_dict(TaskJson, raw)
    except ConfigError as err:
        raise fail(path, err.problem, field_name=err.key) from None
    for key in (f.name for f in fields(TaskJson)):
        value = getattr(meta, key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                check_unicode(item, str(path), None, key, TaskDirError)
        if isinstance(value, str):
            if not value.strip():
                raise fail(path, f"expected a non-empty string, got {show(value)}", None, key)
            setattr(meta, key, value.strip())
    return meta


def read_task_spec(task_dir: str | Path) -> LocalTaskSpec:
    """Parse and check ``task_dir/task.json`` (not the data files: see :func:`.local_data.load_task_dirs`)."""
    task_dir = Path(task_dir)
    path = task_dir / "task.json"
    if not task_dir.is_dir():
        raise fail(task_dir, "not a directory (expected a task directory with task.json)")
    if not path.is_file():
        raise fail(path, "file not found; a task directory needs a task.json")
    meta = _task_json(path)
    if meta.type not in TASK_TYPES:
        expected = ", ".join(TASK_TYPES)
        raise fail(
            path, f"unknown type {show(meta.type)}; expected one of {expected}", None, "type"
        )
    if not meta.languages:
        codes = 'a non-empty list of language codes such as ["en"] or ["en", "fr"]'
        raise fail(path, f"expected {codes}, got []", field_name="languages")
    for code in meta.languages:
        try:
            get_language(code)
        except ValueError as err:
            raise fail(path, str(err), field_name="languages") from None
    main_score = meta.main_score or DEFAULT_MAIN_SCORE[meta.type]
    if main_score not in SUPPORTED_MAIN_SCORES[meta.type]:
        supported = ", ".join(SUPPORTED_MAIN_SCORES[meta.type])
        why = f"{show(main_score)} is not supported for {meta.type}; use one of {supported}"
        raise fail(path, why, field_name="main_score")
    return LocalTaskSpec(
        path=task_dir,
        name=meta.name,
        type=meta.type,
        languages=tuple(meta.languages),
        instruction=meta.instruction or DEFAULT_INSTRUCTIONS[meta.type],
        main_score=main_score,
        description=meta.description or f"Local {meta.type} task {meta.name}",
        source=meta.source,
        license=meta.license,
        domain=meta.domain,
    )


def offline_suite_dirs() -> list[Path]:
    """The bundled offline suite: ``lusifer/resources/offline_suite/*/`` holding a task.json."""
    from importlib.resources import files

    root = files("lusifer") / "resources" / "offline_suite"
    if not root.is_dir():
        return []
    return sorted(
        Path(str(p)) for p in root.iterdir() if p.is_dir() and (p / "task.json").is_file()
    )
