"""Reading and checking the data files of a local task folder (see :mod:`.local_tasks`):
JSON lines through :mod:`lusifer.jsonl`, each row checked against the fields its task
type needs, and BEIR qrels; :func:`load_task_data` returns mteb's dataset structure.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..jsonl import check_unicode, read_lines, read_text
from .local_tasks import LocalTaskSpec, TaskDirError, fail, read_task_spec, show

_STR = "a non-empty string"
_NUM = "a number"
_STRLIST = "a list of strings"
_LABEL = "a string or integer label"


def _check_value(value: Any, kind: str) -> bool:
    if kind == _STR:
        return isinstance(value, str) and value.strip() != ""
    if kind == _NUM:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        try:
            return math.isfinite(float(value))
        except OverflowError:  # an integer beyond any float
            return False
    if kind == _STRLIST:
        return isinstance(value, list) and all(isinstance(x, str) and x.strip() for x in value)
    if kind == _LABEL:
        return (isinstance(value, str) and value != "") or (
            isinstance(value, int) and not isinstance(value, bool)
        )
    raise AssertionError(kind)


class JsonlRows(list):
    """The rows of a JSON-lines file (plain dicts, as written) plus ``lines``: each row's line number."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[int] = []


def _check_row(path: Path, line: int, row: dict, schema: dict[str, str], optional: dict) -> None:
    for key, kind in schema.items():
        if key not in row:
            raise fail(path, "missing (required)", line=line, field_name=key)
        if not _check_value(row[key], kind):
            raise fail(path, f"expected {kind}, got {show(row[key])}", line, key)
    for key, kind in optional.items():
        if row.get(key) is not None and not isinstance(row[key], str):
            raise fail(path, f"expected {kind}, got {show(row[key])}", line, key)
    for key in (*schema, *optional):
        values = row.get(key)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str):
                check_unicode(value, str(path), line, key, TaskDirError)


def read_jsonl(
    path: Path, schema: dict[str, str], optional: dict[str, str] | None = None
) -> JsonlRows:
    """Rows of a JSON-lines file, each checked against ``schema`` (field -> kind); extra fields are kept."""
    if not path.is_file():
        raise fail(path, "file not found")
    rows = JsonlRows()
    for line, row in read_lines(path, TaskDirError):
        _check_row(path, line, row, schema, optional or {})
        rows.append(row)
        rows.lines.append(line)
    return rows


def _read_qrels(path: Path, query_ids: set[str], corpus_ids: set[str]) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise fail(path, "file not found")
    reader = csv.reader(io.StringIO(read_text(path, TaskDirError), newline=""), delimiter="\t")
    try:
        qrels = _qrels_rows(path, reader, query_ids, corpus_ids)
    except csv.Error as err:  # e.g. a quoted field running past csv's size limit
        raise fail(path, f"unreadable TSV ({err})", line=reader.line_num) from None
    if not any(v > 0 for rels in qrels.values() for v in rels.values()):
        raise fail(path, "no relevant (score > 0) pairs")
    return qrels


def _qrels_rows(
    path: Path, reader: Any, query_ids: set[str], corpus_ids: set[str]
) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
        raise fail(
            path,
            f"expected the header 'query-id<TAB>corpus-id<TAB>score', got {show(header)}",
            line=1,
        )
    for line, cells in enumerate(reader, start=2):
        if not cells or not any(c.strip() for c in cells):
            continue
        if len(cells) < 3:
            raise fail(path, f"expected 3 tab-separated columns, got {len(cells)}", line)
        qid, did, score = (c.strip() for c in cells[:3])
        for kind, value, known, file in (
            ("query", qid, query_ids, "queries"),
            ("corpus", did, corpus_ids, "corpus"),
        ):
            if value not in known:
                why = f"unknown {kind} id {show(value)} (not in {file}.jsonl)"
                raise fail(path, why, line, f"{kind}-id")
        try:
            value = int(float(score))
        except (ValueError, OverflowError):  # not a number, nan, inf
            why = f"expected an integer relevance, got {show(score)}"
            raise fail(path, why, line, "score") from None
        qrels.setdefault(qid, {})[did] = value
    return qrels


def _unique_ids(path: Path, rows: JsonlRows) -> None:
    seen: set[str] = set()
    for row, line in zip(rows, rows.lines, strict=True):
        if row["_id"] in seen:
            raise fail(path, f"duplicate id {show(row['_id'])}", line=line, field_name="_id")
        seen.add(row["_id"])


def _label_ids(path: Path, *splits: list[dict[str, Any]]) -> tuple[list[list[int]], list[str]]:
    """Labels as integer ids (sorted by their string form) so every mteb metric accepts them."""
    names = sorted({str(row["label"]) for rows in splits for row in rows})
    index = {name: i for i, name in enumerate(names)}
    if len(names) < 2:
        raise fail(path, f"needs at least 2 distinct labels, found {names}", field_name="label")
    return [[index[str(row["label"])] for row in rows] for rows in splits], names


def _retrieval(d: Path) -> dict[str, Any]:
    from datasets import Dataset

    corpus = read_jsonl(d / "corpus.jsonl", {"_id": _STR, "text": _STR}, {"title": _STR})
    queries = read_jsonl(d / "queries.jsonl", {"_id": _STR, "text": _STR})
    _unique_ids(d / "corpus.jsonl", corpus)
    _unique_ids(d / "queries.jsonl", queries)
    qrels = _read_qrels(
        d / "qrels" / "test.tsv", {q["_id"] for q in queries}, {c["_id"] for c in corpus}
    )
    test = {
        "corpus": Dataset.from_dict(
            {
                "id": [c["_id"] for c in corpus],
                "text": [c["text"] for c in corpus],
                "title": [c.get("title") or "" for c in corpus],
            }
        ),
        "queries": Dataset.from_dict(
            {"id": [q["_id"] for q in queries], "text": [q["text"] for q in queries]}
        ),
        "relevant_docs": qrels,
        "top_ranked": None,
    }
    return {"default": {"test": test}}


def _reranking(d: Path) -> dict[str, Any]:
    from datasets import Dataset

    path = d / "test.jsonl"
    rows = read_jsonl(path, {"query": _STR, "positive": _STRLIST, "negative": _STRLIST})
    ids, texts, queries, qrels, top = [], [], [], {}, {}
    for i, row in enumerate(rows):
        for key in ("positive", "negative"):
            if not row[key]:
                raise fail(path, f"needs at least one {key}", rows.lines[i], key)
        qid = f"q{i}"
        queries.append((qid, row["query"]))
        docs = [(f"{qid}-p{j}", t, 1) for j, t in enumerate(row["positive"])]
        docs += [(f"{qid}-n{j}", t, 0) for j, t in enumerate(row["negative"])]
        for did, text, _rel in docs:
            ids.append(did)
            texts.append(text)
        qrels[qid] = {did: rel for did, _, rel in docs}
        top[qid] = [did for did, _, _ in docs]
    test = {
        "corpus": Dataset.from_dict({"id": ids, "text": texts, "title": [""] * len(ids)}),
        "queries": Dataset.from_dict(
            {"id": [q for q, _ in queries], "text": [t for _, t in queries]}
        ),
        "relevant_docs": qrels,
        "top_ranked": top,
    }
    return {"default": {"test": test}}


def _sts(d: Path) -> Any:
    from datasets import Dataset, DatasetDict

    rows = read_jsonl(d / "test.jsonl", {"sentence1": _STR, "sentence2": _STR, "score": _NUM})
    if len({row["score"] for row in rows}) < 2:
        why = "all scores are equal; a correlation needs varied scores"
        raise fail(d / "test.jsonl", why, field_name="score")
    columns = {k: [r[k] for r in rows] for k in ("sentence1", "sentence2")}
    return DatasetDict(
        test=Dataset.from_dict({**columns, "score": [float(r["score"]) for r in rows]})
    )


def _classification(d: Path) -> Any:
    from datasets import Dataset, DatasetDict

    train = read_jsonl(d / "train.jsonl", {"text": _STR, "label": _LABEL})
    test = read_jsonl(d / "test.jsonl", {"text": _STR, "label": _LABEL})
    (train_ids, test_ids), _ = _label_ids(d / "train.jsonl", train, test)
    return DatasetDict(
        train=Dataset.from_dict({"text": [r["text"] for r in train], "label": train_ids}),
        test=Dataset.from_dict({"text": [r["text"] for r in test], "label": test_ids}),
    )


def _clustering(d: Path) -> Any:
    from datasets import Dataset, DatasetDict

    rows = read_jsonl(d / "test.jsonl", {"text": _STR, "label": _LABEL})
    (ids,), _ = _label_ids(d / "test.jsonl", rows)
    return DatasetDict(
        test=Dataset.from_dict({"sentences": [r["text"] for r in rows], "labels": ids})
    )


def _bitext(d: Path) -> Any:
    from datasets import Dataset, DatasetDict

    rows = read_jsonl(d / "test.jsonl", {"sentence1": _STR, "sentence2": _STR})
    columns = {k: [r[k] for r in rows] for k in ("sentence1", "sentence2")}
    return DatasetDict(test=Dataset.from_dict(columns))


_LOADERS = {
    "retrieval": _retrieval,
    "reranking": _reranking,
    "sts": _sts,
    "classification": _classification,
    "clustering": _clustering,
    "bitext": _bitext,
}


def load_task_data(spec: LocalTaskSpec) -> Any:
    """Read and check the data files of ``spec``; returns the mteb dataset structure."""
    return _LOADERS[spec.type](spec.path)


def load_task_dirs(
    task_dirs: Sequence[str | Path], *, check_data: bool = True
) -> list[LocalTaskSpec]:
    """Parse every task dir (and, with ``check_data``, its data files) before anything runs."""
    specs = [read_task_spec(d) for d in task_dirs]
    names: dict[str, Path] = {}
    for spec in specs:
        if spec.name in names:
            why = f"{spec.name!r} is also the name of {names[spec.name]}; task names must be unique"
            raise fail(spec.path / "task.json", why, field_name="name")
        names[spec.name] = spec.path
        if check_data:
            load_task_data(spec)
    return specs
