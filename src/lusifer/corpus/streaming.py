"""Reading a corpus to embed one record at a time, in constant memory.

Inputs: ``.txt`` (one text a line; the id is the line number), ``.jsonl`` / ``.ndjson``
(optionally ``.gz``, read by :mod:`lusifer.jsonl`; a ``text`` field and an optional ``id``,
default the line number), ``.parquet`` (a
``text`` column and an optional ``id`` column, read in record batches; the default id is
the row number, from 1), or a folder of such files read in sorted path order (recursive,
hidden files skipped), where default ids are ``<relative path>:<line>``. Ids are strings
(an integer id is written as its decimal string).

A bad line (invalid UTF-8, a blank ``.txt`` line, bad JSON, not a JSON object, no string
``text``, an id that is neither a string nor an integer, a null text in parquet, a JSON-lines
file without any row) is a :class:`BadLine` naming its
``file:line``; :func:`scan_input` lists them before anything is encoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..jsonl import SUFFIXES as JSONL_SUFFIXES
from ..jsonl import BadLine, DataFormatError, is_jsonl, iter_lines, text_lines

SUFFIXES = (".txt", *JSONL_SUFFIXES, ".parquet")
PARQUET_BATCH_ROWS = 2048
SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class Record:
    """One text to embed, with where it came from (``line``: line or row number, from 1)."""

    id: str
    text: str
    source: str
    line: int


class CorpusInputError(ValueError):
    """The input cannot be read as a corpus: missing, an unsupported file, or bad lines
    (``problems`` lists the first of them, ``count`` how many there are)."""

    def __init__(self, message: str, problems: list[BadLine] | None = None, count: int = 0):
        self.problems = list(problems or [])
        self.count = count or len(self.problems)
        if self.problems:
            shown = "\n".join(f"  {p}" for p in self.problems[:SHOWN_PROBLEMS])
            more = self.count - min(len(self.problems), SHOWN_PROBLEMS)
            message += f"\n{shown}" + (f"\n  ... and {more} more" if more > 0 else "")
        super().__init__(message)


def bad_lines_error(problems: list[BadLine], count: int) -> CorpusInputError:
    return CorpusInputError(
        f"{count} bad line(s) in the input; fix them, or pass --skip-bad-lines "
        "(skip_bad_lines=True) to skip and report them:",
        problems,
        count,
    )


def input_files(path: str | Path) -> list[tuple[Path, str]]:
    """The files of ``path`` (a file, or a folder read recursively in sorted order) with
    the prefix of their default ids (``""`` for a lone file, ``"<relative path>:"`` in a
    folder)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES)),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        files = [
            p for p in files if not any(part.startswith(".") for part in p.relative_to(path).parts)
        ]
        if not files:
            raise CorpusInputError(f"folder {path} holds no {', '.join(SUFFIXES)} files to read")
        return [(p, f"{p.relative_to(path).as_posix()}:") for p in files]
    if not path.exists():
        raise CorpusInputError(f"input {path} does not exist")
    if not path.name.lower().endswith(SUFFIXES):
        raise CorpusInputError(
            f"cannot read {path}: the input must be a {', '.join(SUFFIXES)} file or a folder "
            "of them"
        )
    return [(path, "")]


def _id_of(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return None


def _iter_lines(
    path: Path, prefix: str, is_jsonl: bool, text_field: str, id_field: str
) -> Iterator[Record | BadLine]:
    source = str(path)
    if not is_jsonl:
        for number, line in text_lines(path):
            if isinstance(line, BadLine):
                yield line
            elif not line.strip():
                yield BadLine(source, number, "blank line")
            else:
                yield Record(f"{prefix}{number}", line, source, number)
        return
    for item in iter_lines(path):
        if isinstance(item, BadLine):
            yield item
            continue
        number, row = item
        text = row.get(text_field)
        if not isinstance(text, str):
            yield BadLine(source, number, f"no string field {text_field!r}")
            continue
        rid = _id_of(row[id_field]) if id_field in row else f"{prefix}{number}"
        if rid is None:
            yield BadLine(source, number, f"{id_field!r} must be a string or an integer")
            continue
        yield Record(rid, text, source, number)


def _iter_parquet(
    path: Path, prefix: str, text_field: str, id_field: str
) -> Iterator[Record | BadLine]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with datasets
        raise CorpusInputError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    source = str(path)
    try:
        reader = pq.ParquetFile(path, pre_buffer=False)  # one row group at a time
    except (OSError, pa.ArrowException) as err:
        raise CorpusInputError(f"cannot read {path} as parquet: {err}") from None
    names = reader.schema_arrow.names
    if text_field not in names:
        raise CorpusInputError(
            f"{path} has no {text_field!r} column (columns: {', '.join(names)}); "
            "it needs a text column and may have an id column"
        )
    text_type = reader.schema_arrow.field(text_field).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise CorpusInputError(f"{path}: column {text_field!r} holds {text_type}, expected strings")
    columns = [text_field] + ([id_field] if id_field in names else [])
    row = 0
    for batch in reader.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        texts = batch.column(text_field).to_pylist()
        ids = batch.column(id_field).to_pylist() if id_field in names else None
        for i, text in enumerate(texts):
            row += 1
            if text is None:
                yield BadLine(source, row, f"null {text_field!r}")
                continue
            if not text.strip():
                yield BadLine(source, row, f"blank {text_field!r}")
                continue
            rid = f"{prefix}{row}" if ids is None else _id_of(ids[i])
            if rid is None:
                yield BadLine(source, row, f"{id_field!r} must be a string or an integer")
                continue
            yield Record(rid, text, source, row)


def iter_items(
    path: str | Path, *, text_field: str = "text", id_field: str = "id"
) -> Iterator[Record | BadLine]:
    """Every record and bad line of ``path`` in order, one at a time."""
    for file, prefix in input_files(path):
        if file.suffix.lower() == ".parquet":
            yield from _iter_parquet(file, prefix, text_field, id_field)
            continue
        try:
            yield from _iter_lines(file, prefix, is_jsonl(file), text_field, id_field)
        except DataFormatError as err:  # a damaged gzip file
            raise CorpusInputError(str(err)) from None


def stream_records(
    path: str | Path,
    *,
    skip_bad_lines: bool = False,
    on_bad_line=None,
    text_field: str = "text",
    id_field: str = "id",
) -> Iterator[Record]:
    """The records of ``path`` in order. A bad line raises :class:`CorpusInputError`
    naming its ``file:line``, or with ``skip_bad_lines`` is passed to ``on_bad_line``
    (when given) and skipped."""
    for item in iter_items(path, text_field=text_field, id_field=id_field):
        if isinstance(item, BadLine):
            if not skip_bad_lines:
                raise bad_lines_error([item], 1)
            if on_bad_line is not None:
                on_bad_line(item)
            continue
        yield item


def read_records(
    path: str | Path, *, skip_bad_lines: bool = False, text_field: str = "text"
) -> tuple[list[Record], list[BadLine]]:
    """Every record of ``path``, in memory, and the bad lines skipped; without
    ``skip_bad_lines`` any bad line raises :class:`CorpusInputError` listing them."""
    records: list[Record] = []
    bad: list[BadLine] = []
    for item in iter_items(path, text_field=text_field):
        (bad if isinstance(item, BadLine) else records).append(item)  # type: ignore[arg-type]
    if bad and not skip_bad_lines:
        raise bad_lines_error(bad[:SHOWN_PROBLEMS], len(bad))
    return records, bad


@dataclass
class InputSummary:
    """What one pass over the input found: ``rows`` good records, ``bad`` bad lines (the
    first :data:`SHOWN_PROBLEMS` kept in ``problems``), ``files`` files read."""

    rows: int = 0
    bad: int = 0
    files: int = 0
    problems: list[BadLine] = field(default_factory=list)


def scan_input(path: str | Path, *, text_field: str = "text", id_field: str = "id") -> InputSummary:
    """Count the records and bad lines of ``path`` in one constant-memory pass."""
    summary = InputSummary(files=len(input_files(path)))
    for item in iter_items(path, text_field=text_field, id_field=id_field):
        if isinstance(item, BadLine):
            summary.bad += 1
            if len(summary.problems) < SHOWN_PROBLEMS:
                summary.problems.append(item)
        else:
            summary.rows += 1
    return summary
