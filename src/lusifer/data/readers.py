"""Typed training rows and their readers (JSONL / JSONL.gz files, Hugging Face datasets).

Two row shapes cover both training stages:

- :class:`TextRow` for reconstruction-style data, one ``{"text": ...}`` object a line;
- :class:`PairRow` for pair data, ``{"query", "positive", "negatives"?, "instruction"?,
  "dataset"?, "label"?, "source"?, "license"?}`` a line.

A malformed row is never skipped: it raises :class:`DataFormatError` naming the file, the
line and the field, and saying what was expected.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DataFormatError",
    "PairRow",
    "TextRow",
    "iter_pair_rows",
    "iter_text_rows",
    "load_hf_pairs",
    "load_hf_texts",
    "read_pair_rows",
    "read_text_rows",
    "write_jsonl",
]


class DataFormatError(ValueError):
    """A data file (or data set) holds a row that does not have the expected shape."""

    def __init__(self, where: str, line: int | None, field: str | None, problem: str):
        self.where, self.line, self.field, self.problem = where, line, field, problem
        loc = where + (f", line {line}" if line is not None else "")
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{loc}: {what}{problem}")


@dataclass
class TextRow:
    """One text for reconstruction-style (stage 1) training."""

    text: str
    source: str | None = None


@dataclass
class PairRow:
    """One (query, positive, hard negatives) example with its task instruction."""

    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    instruction: str | None = None
    dataset: str = ""
    label: str | int | None = None
    source: str | None = None
    license: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict without empty optional fields."""
        out = asdict(self)
        return {k: v for k, v in out.items() if v not in (None, [], "") or k in _PAIR_REQUIRED}


_PAIR_REQUIRED = ("query", "positive")


# --------------------------------------------------------------------------- files


def _open_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            yield from enumerate(fh, start=1)
    except (gzip.BadGzipFile, EOFError) as e:
        raise DataFormatError(str(path), None, None, f"not a valid gzip file ({e})") from e


def _iter_objects(path: str | Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Yield (file, line number, JSON object) for each non-blank line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    where = str(path)
    for lineno, raw in _open_lines(path):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            # Decode leniently to find which field holds the bad bytes.
            bad_field = _field_with_bad_bytes(raw)
            raise DataFormatError(
                where,
                lineno,
                bad_field,
                f"invalid UTF-8 byte {raw[e.start : e.start + 1]!r} at byte {e.start} of "
                "the line; expected UTF-8 encoded text (re-encode the file as UTF-8)",
            ) from e
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(
                where,
                lineno,
                None,
                f"bad JSON ({e.msg} at column {e.colno}); expected one JSON object per line",
            ) from e
        if not isinstance(obj, dict):
            raise DataFormatError(
                where, lineno, None, f"expected a JSON object, got {type(obj).__name__}"
            )
        yield where, lineno, obj


def _field_with_bad_bytes(raw: bytes) -> str | None:
    try:
        obj = json.loads(raw.decode("utf-8", errors="surrogateescape"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    for key, value in obj.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and any("\udc80" <= c <= "\udcff" for c in v) for v in values):
            return key
    return None


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _req_str(obj: dict, key: str, where: str, line: int | None) -> str:
    if key not in obj:
        raise DataFormatError(where, line, key, "missing; expected a non-empty string")
    value = obj[key]
    if not isinstance(value, str):
        raise DataFormatError(
            where, line, key, f"expected a non-empty string, got {_type_name(value)}"
        )
    if not value.strip():
        raise DataFormatError(where, line, key, "empty; expected a non-empty string")
    return value


def _opt_str(obj: dict, key: str, where: str, line: int | None) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataFormatError(
            where, line, key, f"expected a string or null, got {_type_name(value)}"
        )
    return value


def _negatives(obj: dict, key: str, where: str, line: int | None) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataFormatError(
            where, line, key, f"expected a list of non-empty strings, got {_type_name(value)}"
        )
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise DataFormatError(
                where,
                line,
                f"{key}[{i}]",
                f"expected a non-empty string, got {_type_name(item) if not isinstance(item, str) else 'an empty string'}",
            )
    return list(value)


def _pair_from_obj(
    obj: dict, where: str, line: int | None, default_dataset: str, fields: dict[str, str]
) -> PairRow:
    label = obj.get("label")
    if label is not None and (not isinstance(label, str | int) or isinstance(label, bool)):
        raise DataFormatError(
            where, line, "label", f"expected a string, an integer or null, got {_type_name(label)}"
        )
    dataset = _opt_str(obj, "dataset", where, line) or default_dataset
    return PairRow(
        query=_req_str(obj, fields["query"], where, line),
        positive=_req_str(obj, fields["positive"], where, line),
        negatives=_negatives(obj, fields["negatives"], where, line),
        instruction=_opt_str(obj, "instruction", where, line),
        dataset=dataset,
        label=label,
        source=_opt_str(obj, "source", where, line),
        license=_opt_str(obj, "license", where, line),
    )


def _stem(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


_DEFAULT_FIELDS = {"query": "query", "positive": "positive", "negatives": "negatives"}


def iter_pair_rows(path: str | Path) -> Iterator[PairRow]:
    """Stream :class:`PairRow` s from a ``.jsonl`` or ``.jsonl.gz`` file.

    ``dataset`` defaults to the file name without extensions when a row has none.
    """
    default = _stem(path)
    for where, line, obj in _iter_objects(path):
        yield _pair_from_obj(obj, where, line, default, _DEFAULT_FIELDS)


def read_pair_rows(path: str | Path) -> list[PairRow]:
    """All :class:`PairRow` s of a ``.jsonl`` / ``.jsonl.gz`` file (see :func:`iter_pair_rows`)."""
    return list(iter_pair_rows(path))


def iter_text_rows(path: str | Path) -> Iterator[TextRow]:
    """Stream :class:`TextRow` s (``{"text": ..., "source"?: ...}``) from a JSONL(.gz) file."""
    for where, line, obj in _iter_objects(path):
        yield TextRow(
            text=_req_str(obj, "text", where, line), source=_opt_str(obj, "source", where, line)
        )


def read_text_rows(path: str | Path) -> list[TextRow]:
    """All :class:`TextRow` s of a ``.jsonl`` / ``.jsonl.gz`` file."""
    return list(iter_text_rows(path))


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


# --------------------------------------------------------------------------- datasets


def _load_hf(name_or_path: str | Path, split: str, **load_kwargs: Any):
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a declared dependency
        raise ImportError(
            "Reading Hugging Face datasets needs the `datasets` package: pip install datasets"
        ) from e

    path = Path(name_or_path)
    if path.is_dir() and (
        (path / "dataset_info.json").exists()
        or (path / "dataset_dict.json").exists()
        or (path / "state.json").exists()
    ):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise KeyError(f"{path}: no split {split!r}; available splits: {sorted(ds.keys())}")
            ds = ds[split]
        return ds
    if path.is_file():
        name = path.name.lower().removesuffix(".gz")
        for suffix, builder in (
            (".jsonl", "json"),
            (".json", "json"),
            (".parquet", "parquet"),
            (".csv", "csv"),
        ):
            if name.endswith(suffix):
                return datasets.load_dataset(
                    builder, data_files=str(path), split="train", **load_kwargs
                )
        raise ValueError(
            f"{path}: unsupported file type; expected .jsonl, .json, .parquet or .csv "
            "(optionally .gz), or a directory written by Dataset.save_to_disk"
        )
    # A local directory of data files, or a hub id (needs internet).
    return datasets.load_dataset(str(name_or_path), split=split, **load_kwargs)


def _check_columns(ds, where: str, needed: list[str]) -> None:
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise DataFormatError(
            where,
            None,
            missing[0],
            f"no such column; available columns: {ds.column_names}. "
            "Pass the right *_field argument.",
        )


def load_hf_pairs(
    name_or_path: str | Path,
    split: str = "train",
    query_field: str = "query",
    positive_field: str = "positive",
    negatives_field: str | None = None,
    *,
    instruction: str | None = None,
    dataset_name: str | None = None,
    limit: int | None = None,
    **load_kwargs: Any,
) -> list[PairRow]:
    """Pair rows from a Hugging Face dataset: a hub id (online), a directory written by
    ``save_to_disk``, or a local JSON/JSONL/Parquet/CSV file.

    ``positive_field`` and ``negatives_field`` may hold a string or a list of strings; a
    list positive uses its first item. Every row shares ``instruction``.
    """
    ds = _load_hf(name_or_path, split, **load_kwargs)
    where = f"{name_or_path} [{split}]"
    needed = [query_field, positive_field] + ([negatives_field] if negatives_field else [])
    _check_columns(ds, where, needed)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    dataset = dataset_name or _stem(str(name_or_path).rstrip("/"))
    fields = {"query": "query", "positive": "positive", "negatives": "negatives"}
    rows = []
    for i, record in enumerate(ds):
        positive = record[positive_field]
        if isinstance(positive, list) and positive:
            positive = positive[0]
        obj = {
            "query": record[query_field],
            "positive": positive,
            "negatives": record[negatives_field] if negatives_field else None,
            "instruction": instruction,
            "dataset": dataset,
        }
        try:
            rows.append(_pair_from_obj(obj, where, None, dataset, fields))
        except DataFormatError as e:
            original = e.field or ""
            for ours, theirs in (
                ("query", query_field),
                ("positive", positive_field),
                ("negatives", negatives_field),
            ):
                if theirs and (original == ours or original.startswith(ours + "[")):
                    original = theirs + original[len(ours) :]
            raise DataFormatError(where, None, original, f"row {i}: {e.problem}") from None
    return rows


def load_hf_texts(
    name_or_path: str | Path,
    split: str = "train",
    text_field: str = "text",
    *,
    limit: int | None = None,
    **load_kwargs: Any,
) -> list[TextRow]:
    """Text rows from a Hugging Face dataset (hub id, ``save_to_disk`` directory or local file)."""
    ds = _load_hf(name_or_path, split, **load_kwargs)
    where = f"{name_or_path} [{split}]"
    _check_columns(ds, where, [text_field])
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    source = str(name_or_path)
    rows = []
    for i, record in enumerate(ds):
        value = record[text_field]
        if not isinstance(value, str) or not value.strip():
            raise DataFormatError(
                where,
                None,
                text_field,
                f"row {i}: expected a non-empty string, got "
                f"{'an empty string' if isinstance(value, str) else _type_name(value)}",
            )
        rows.append(TextRow(text=value, source=source))
    return rows
