"""Hugging Face data sets as training rows: a hub id, a ``save_to_disk`` folder or a local
data file (JSON lines, CSV, Parquet) read with :mod:`datasets`, columns named by the run
file (a query, one or several positives, hard negatives in one list column or numbered
columns), with the same row checks and limits as the project's own files
(:mod:`lusifer.data.readers`)."""

from __future__ import annotations

import fnmatch
import gzip
import json
import random
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..jsonl import DataFormatError
from .readers import PairRow, ReadStats, TextRow, _pair_from_obj, _SkipRow, _stem, _type_name


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
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # a damaged folder: arrow, JSON or file errors
            raise DataFormatError(
                str(path), None, None, f"not a readable saved data set ({_reason(e)})"
            ) from e
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataFormatError(
                    str(path), None, None, f"no split {split!r}; available splits: {sorted(ds)}"
                )
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
                if builder == "json":
                    _refuse_deep_json(path)
                try:
                    return datasets.load_dataset(
                        builder, data_files=str(path), split="train", **load_kwargs
                    )
                except Exception as e:  # pandas, pyarrow or datasets: the file is malformed
                    raise DataFormatError(
                        str(path), None, None, f"not a readable {suffix[1:]} file ({_reason(e)})"
                    ) from e
        raise ValueError(
            f"{path}: unsupported file type; expected .jsonl, .json, .parquet or .csv "
            "(optionally .gz), or a directory written by Dataset.save_to_disk"
        )
    # A local directory of data files, or a hub id (needs internet).
    return datasets.load_dataset(str(name_or_path), split=split, **load_kwargs)


# A line (or .json file) with more brackets than this is parsed here first: pyarrow's
# JSON reader (under ``datasets``) overflows the C stack on JSON nested a few thousand
# levels deep and kills the whole process, where Python's parser stops at ~1000 levels.
_BRACKETS_WORTH_CHECKING = 256


def _refuse_deep_json(path: Path) -> None:
    """Raise :class:`DataFormatError` (file and line) for JSON nested too deeply to read,
    before ``datasets`` hands the file to pyarrow."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    per_line = ".jsonl" in path.name.lower()
    try:
        with opener(path, "rb") as fh:
            chunks = enumerate(fh, start=1) if per_line else [(None, fh.read())]
            for line, raw in chunks:
                if raw.count(b"[") + raw.count(b"{") <= _BRACKETS_WORTH_CHECKING:
                    continue
                try:
                    json.loads(raw)
                except RecursionError:
                    raise DataFormatError(
                        str(path), line, None, "bad JSON (nested too deeply)"
                    ) from None
                except ValueError:  # other faults: the reader below names them
                    continue
    except (OSError, EOFError, zlib.error):  # unreadable or bad gzip: the reader says so
        return


def _reason(err: BaseException) -> str:
    """A library's exception in one short line; ``datasets`` wraps the parser's error, whose
    message is the useful one."""
    while err.__cause__ is not None and type(err).__name__ == "DatasetGenerationError":
        err = err.__cause__
    first = (str(err).strip().splitlines() or [""])[0]
    if len(first) > 200:
        first = first[:200] + "..."
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _check_columns(ds, where: str, needed: list[str]) -> None:
    _check_columns_named(list(ds.column_names), where, needed)


def negative_columns(spec: str | list[str] | None, columns: list[str], where: str) -> list[str]:
    """The columns holding hard negatives: one column (a list or a string), a list of
    columns, or a pattern such as ``negative_*`` (numbered columns, in numeric order)."""
    if spec is None:
        return []
    if isinstance(spec, list):
        _check_columns_named(columns, where, spec)
        return list(spec)
    if any(c in spec for c in "*?["):
        matched = [c for c in columns if fnmatch.fnmatchcase(c, spec)]
        if not matched:
            raise DataFormatError(
                where, None, spec, f"no column matches this pattern; available columns: {columns}"
            )
        return sorted(
            matched, key=lambda c: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", c)]
        )
    _check_columns_named(columns, where, [spec])
    return [spec]


def _check_columns_named(columns: list[str], where: str, needed: list[str]) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataFormatError(
            where,
            None,
            missing[0],
            f"no such column; available columns: {columns}. Pass the right *_field argument.",
        )


def _limited_records(ds, limit: int | None, seed: int) -> Iterator[tuple[int, dict]]:
    """(row index, record) in the data set's order, or, with ``limit``, in a seeded random
    order (the caller stops once it has kept ``limit`` rows; skipped rows do not count)."""
    if limit is None or limit >= len(ds):
        yield from enumerate(ds)
        return
    order = list(range(len(ds)))
    random.Random(seed).shuffle(order)
    for start in range(0, len(order), 1000):
        chunk = order[start : start + 1000]
        yield from zip(chunk, ds.select(chunk), strict=True)


def load_hf_pairs(
    name_or_path: str | Path,
    split: str = "train",
    query_field: str = "query",
    positive_field: str = "positive",
    negatives_field: str | list[str] | None = None,
    *,
    instruction: str | None = None,
    dataset_name: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    stats: ReadStats | None = None,
    **load_kwargs: Any,
) -> list[PairRow]:
    """Pair rows from a Hugging Face dataset: a hub id (online), a directory written by
    ``save_to_disk``, or a local JSON/JSONL/Parquet/CSV file.

    ``positive_field`` may hold a string or a list of strings (several positives);
    ``negatives_field`` is a list column, a string column, a list of columns or a
    pattern of numbered columns (``negative_*``). Every row shares ``instruction``.
    ``limit`` keeps a random subset drawn with ``seed``; rows with an empty query or no
    non-empty positive are skipped and counted in ``stats``.
    """
    ds = _load_hf(name_or_path, split, **load_kwargs)
    where = f"{name_or_path} [{split}]"
    _check_columns(ds, where, [query_field, positive_field])
    neg_columns = negative_columns(negatives_field, list(ds.column_names), where)
    dataset = dataset_name or _stem(str(name_or_path).rstrip("/"))
    stats = stats if stats is not None else ReadStats()
    rows = []
    for i, record in _limited_records(ds, limit, seed):
        negatives: list[Any] = []
        for column in neg_columns:
            value = record[column]
            negatives.extend(value if isinstance(value, list) else [] if value is None else [value])
        obj = {
            "query": record[query_field],
            "positive": record[positive_field],
            "negatives": negatives,
            "instruction": instruction,
            "dataset": dataset,
        }
        try:
            rows.append(_pair_from_obj(obj, where, None, dataset, stats))
        except _SkipRow:
            stats.skipped_rows += 1
            continue
        except DataFormatError as e:
            original = e.field or ""
            for ours, theirs in (
                ("query", query_field),
                ("positive", positive_field),
                ("negatives", "+".join(neg_columns)),
            ):
                if theirs and (original == ours or original.startswith(ours + "[")):
                    original = theirs + original[len(ours) :]
            raise DataFormatError(where, None, original, f"row {i}: {e.problem}") from None
        stats.rows += 1
        if limit is not None and len(rows) >= limit:
            break
    return rows


def load_hf_texts(
    name_or_path: str | Path,
    split: str = "train",
    text_field: str = "text",
    *,
    limit: int | None = None,
    seed: int = 0,
    stats: ReadStats | None = None,
    **load_kwargs: Any,
) -> list[TextRow]:
    """Text rows from a Hugging Face dataset (hub id, ``save_to_disk`` directory or local
    file). Empty or whitespace rows are skipped and counted in ``stats``; ``limit`` keeps
    a random subset drawn with ``seed``."""
    ds = _load_hf(name_or_path, split, **load_kwargs)
    where = f"{name_or_path} [{split}]"
    _check_columns(ds, where, [text_field])
    source = str(name_or_path)
    stats = stats if stats is not None else ReadStats()
    rows = []
    for i, record in _limited_records(ds, limit, seed):
        value = record[text_field]
        if not isinstance(value, str):
            raise DataFormatError(
                where, None, text_field, f"row {i}: expected a string, got {_type_name(value)}"
            )
        if not value.strip():
            stats.skipped_rows += 1
            continue
        rows.append(TextRow(text=value, source=source))
        stats.rows += 1
        if limit is not None and len(rows) >= limit:
            break
    return rows
