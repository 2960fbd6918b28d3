"""Typed training rows and their readers (JSONL / JSONL.gz files, Hugging Face datasets).

Two row shapes cover both training stages:

- :class:`TextRow` for reconstruction-style data, one ``{"text": ...}`` object a line;
- :class:`PairRow` for pair data, ``{"query", "positive", "negatives"?, "instruction"?,
  "dataset"?, "label"?, "source"?, "license"?}`` a line.

Files are read by :mod:`lusifer.jsonl` (gzip, byte order mark, blank lines). A malformed
row (bad JSON, a missing field, a wrong type) is never skipped: it raises
:class:`DataFormatError` naming the file, the line and the field, and saying what was
expected. A row whose text is empty or only whitespace (common in hub data sets, e.g.
wikitext's blank lines) is skipped and counted in a :class:`ReadStats`, as is an empty
hard negative. ``limit`` draws a seeded random subset, as the reference code does.
"""

from __future__ import annotations

import gzip
import io
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..jsonl import DataFormatError, check_unicode, read_lines

__all__ = [
    "DataFormatError",
    "PairRow",
    "ReadStats",
    "TextRow",
    "iter_pair_rows",
    "iter_text_rows",
    "read_pair_rows",
    "read_text_rows",
    "write_jsonl",
]


@dataclass
class TextRow:
    """One text for reconstruction-style (stage 1) training."""

    text: str
    source: str | None = None


@dataclass
class ReadStats:
    """What a reader kept and skipped (empty rows, empty hard negatives)."""

    rows: int = 0
    skipped_rows: int = 0
    dropped_negatives: int = 0


class _SkipRow(Exception):
    """A row whose required text is empty: skipped, not an error."""


@dataclass
class PairRow:
    """One (query, positive, hard negatives) example with its task instruction.

    ``other_positives`` holds further positives of the same query (the reference's data
    has a list of positives per query); ``positives`` gives them all."""

    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    instruction: str | None = None
    dataset: str = ""
    label: str | int | None = None
    source: str | None = None
    license: str | None = None
    other_positives: list[str] = field(default_factory=list)

    @property
    def positives(self) -> list[str]:
        return [self.positive, *self.other_positives]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict without empty optional fields; several positives are written
        as a list in ``positive``."""
        out = asdict(self)
        others = out.pop("other_positives")
        if others:
            out["positive"] = [out["positive"], *others]
        return {k: v for k, v in out.items() if v not in (None, [], "") or k in _PAIR_REQUIRED}


_PAIR_REQUIRED = ("query", "positive")


# --------------------------------------------------------------------------- files


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _req_str(obj: dict, key: str, where: str, line: int | None) -> str:
    """A required text field; raises :class:`_SkipRow` when it is empty or whitespace."""
    if key not in obj:
        raise DataFormatError(where, line, key, "missing; expected a non-empty string")
    value = obj[key]
    if not isinstance(value, str):
        raise DataFormatError(
            where, line, key, f"expected a non-empty string, got {_type_name(value)}"
        )
    check_unicode(value, where, line, key)
    if not value.strip():
        raise _SkipRow(key)
    return value


def _positives(obj: dict, key: str, where: str, line: int | None) -> list[str]:
    """A string or a list of strings; empty ones dropped, none left skips the row."""
    if key not in obj:
        raise DataFormatError(where, line, key, "missing; expected a non-empty string")
    value = obj[key]
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        if not isinstance(item, str):
            name = f"{key}[{i}]" if isinstance(value, list) else key
            raise DataFormatError(
                where, line, name, f"expected a non-empty string, got {_type_name(item)}"
            )
        check_unicode(item, where, line, f"{key}[{i}]" if isinstance(value, list) else key)
    kept = [item for item in items if item.strip()]
    if not kept:
        raise _SkipRow(key)
    return kept


def _opt_str(obj: dict, key: str, where: str, line: int | None) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataFormatError(
            where, line, key, f"expected a string or null, got {_type_name(value)}"
        )
    return check_unicode(value, where, line, key)


def _negatives(
    obj: dict, key: str, where: str, line: int | None, stats: ReadStats | None = None
) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataFormatError(
            where, line, key, f"expected a list of non-empty strings, got {_type_name(value)}"
        )
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise DataFormatError(
                where, line, f"{key}[{i}]", f"expected a non-empty string, got {_type_name(item)}"
            )
        check_unicode(item, where, line, f"{key}[{i}]")
    kept = [item for item in value if item.strip()]
    if stats is not None:
        stats.dropped_negatives += len(value) - len(kept)
    return kept


def _pair_from_obj(
    obj: dict,
    where: str,
    line: int | None,
    default_dataset: str,
    stats: ReadStats | None = None,
) -> PairRow:
    label = obj.get("label")
    if label is not None and (not isinstance(label, str | int) or isinstance(label, bool)):
        raise DataFormatError(
            where, line, "label", f"expected a string, an integer or null, got {_type_name(label)}"
        )
    dataset = _opt_str(obj, "dataset", where, line) or default_dataset
    query = _req_str(obj, "query", where, line)
    positive, *others = _positives(obj, "positive", where, line)
    return PairRow(
        query=query,
        positive=positive,
        negatives=_negatives(obj, "negatives", where, line, stats),
        instruction=_opt_str(obj, "instruction", where, line),
        dataset=dataset,
        label=label,
        source=_opt_str(obj, "source", where, line),
        license=_opt_str(obj, "license", where, line),
        other_positives=others,
    )


def _stem(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


def iter_pair_rows(path: str | Path, stats: ReadStats | None = None) -> Iterator[PairRow]:
    """Stream :class:`PairRow` s from a ``.jsonl`` or ``.jsonl.gz`` file.

    ``dataset`` defaults to the file name without extensions when a row has none;
    ``positive`` may be a string or a list of strings (several positives). Rows with an
    empty query or positive are skipped and counted in ``stats``.
    """
    default = _stem(path)
    stats = stats if stats is not None else ReadStats()
    where = str(path)
    for line, obj in read_lines(path):
        try:
            row = _pair_from_obj(obj, where, line, default, stats)
        except _SkipRow:
            stats.skipped_rows += 1
            continue
        stats.rows += 1
        yield row


def _seeded_subset(rows: list, limit: int | None, seed: int) -> list:
    """At most ``limit`` rows, a random subset drawn with ``seed``, in their file order."""
    if limit is None or len(rows) <= limit:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def read_pair_rows(
    path: str | Path, stats: ReadStats | None = None, *, limit: int | None = None, seed: int = 0
) -> list[PairRow]:
    """All :class:`PairRow` s of a ``.jsonl`` / ``.jsonl.gz`` file (see :func:`iter_pair_rows`),
    or a seeded random ``limit`` of them."""
    return _seeded_subset(list(iter_pair_rows(path, stats)), limit, seed)


def iter_text_rows(path: str | Path, stats: ReadStats | None = None) -> Iterator[TextRow]:
    """Stream :class:`TextRow` s (``{"text": ..., "source"?: ...}``) from a JSONL(.gz) file;
    empty texts are skipped and counted in ``stats``."""
    stats = stats if stats is not None else ReadStats()
    where = str(path)
    for line, obj in read_lines(path):
        try:
            text = _req_str(obj, "text", where, line)
        except _SkipRow:
            stats.skipped_rows += 1
            continue
        stats.rows += 1
        yield TextRow(text=text, source=_opt_str(obj, "source", where, line))


def read_text_rows(
    path: str | Path, stats: ReadStats | None = None, *, limit: int | None = None, seed: int = 0
) -> list[TextRow]:
    """All :class:`TextRow` s of a ``.jsonl`` / ``.jsonl.gz`` file, or a seeded random
    ``limit`` of them."""
    return _seeded_subset(list(iter_text_rows(path, stats)), limit, seed)


def write_jsonl(path: str | Path, rows: Iterable[PairRow | TextRow | dict[str, Any]]) -> int:
    """Write rows as UTF-8 JSONL (gzip when the name ends in ``.gz``, with a fixed mtime so
    the bytes are reproducible). Returns the number of rows written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "wb") as raw:
        stream: io.BufferedIOBase
        if path.name.endswith(".gz"):
            stream = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9)
        else:
            stream = raw
        try:
            for row in rows:
                obj = row.to_dict() if isinstance(row, PairRow) else row
                if isinstance(obj, TextRow):
                    obj = {k: v for k, v in asdict(obj).items() if v is not None}
                stream.write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")
                n += 1
        finally:
            if stream is not raw:
                stream.close()
    return n
