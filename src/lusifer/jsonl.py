"""The one reader of JSON-lines files (``.jsonl`` / ``.ndjson``, optionally gzip-compressed).

Every reader of the package (``lusifer encode``, training data, ``lusifer mine``, local
evaluation task folders) goes through :func:`iter_lines`, so a file is accepted or refused
the same way everywhere:

- gzip: a name ending in ``.gz``, or JSON lines starting with gzip's magic bytes (a
  compressed ``test.jsonl``), is read decompressed; a damaged gzip stream refuses the file;
- a UTF-8 byte order mark before the first line is dropped; lines may end in ``\\r\\n``;
- blank (whitespace-only) lines are skipped;
- a line that is not UTF-8, not JSON, or not a JSON object is a :class:`BadLine`;
- a file without a single non-blank line is a :class:`BadLine` on line 1.

Strict readers raise the first bad line as a :class:`DataFormatError` (or a subclass);
the corpus reader lists every bad line, or skips them with ``--skip-bad-lines``.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GZIP_MAGIC = b"\x1f\x8b"
SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")


class DataFormatError(ValueError):
    """A data file (or data set) holds a row that does not have the expected shape; the
    message names the file, the line (when known), the field (when known) and the fix."""

    def __init__(self, where: str, line: int | None, field: str | None, problem: str):
        self.where, self.line, self.field, self.problem = where, line, field, problem
        loc = where + (f", line {line}" if line is not None else "")
        shown = repr(field if field is None or len(field) <= 80 else field[:80] + "...")
        what = f"field {shown}: " if field else ""  # a huge key is cut short
        super().__init__(f"{loc}: {what}{problem}")


@dataclass(frozen=True)
class BadLine:
    """One line that cannot be read, with why (and the field holding bad bytes, if any)."""

    source: str
    line: int
    why: str
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.why}"

    def error(self, cls: type[DataFormatError] = DataFormatError) -> DataFormatError:
        return cls(self.source, self.line, self.field, self.why)


def is_jsonl(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(SUFFIXES)


def _is_gzip(path: Path) -> bool:
    if path.name.lower().endswith(".gz"):
        return True
    if not is_jsonl(path):  # a .txt file is read as it is
        return False
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def text_lines(path: str | Path) -> Iterator[tuple[int, str | BadLine]]:
    """(line number, the line's text without its line end, or a :class:`BadLine` for a
    line that is not UTF-8) for every line; the first line's byte order mark dropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        with (gzip.open if _is_gzip(path) else open)(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    why = (
                        f"invalid UTF-8 byte {raw[err.start : err.start + 1]!r} at byte "
                        f"{err.start} of the line; expected UTF-8 encoded text (re-encode "
                        "the file as UTF-8)"
                    )
                    yield number, BadLine(str(path), number, why, _field_with_bad_bytes(raw))
                    continue
                yield number, (text.removeprefix("\ufeff") if number == 1 else text).rstrip("\r\n")
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataFormatError(str(path), None, None, f"not a valid gzip file ({err})") from err


def read_text(path: str | Path, error: type[DataFormatError] = DataFormatError) -> str:
    """The whole text of ``path`` (a byte order mark dropped), or ``error`` naming the line
    of the first byte that is not UTF-8 (for ``task.json`` and TSV files)."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        bad = raw[err.start : err.start + 1]
        line = 1 + raw.count(b"\n", 0, err.start)
        why = (
            f"invalid UTF-8 byte {bad!r}; expected UTF-8 encoded text (re-encode the file as UTF-8)"
        )
        raise error(str(path), line, None, why) from None


def json_problem(err: ValueError | RecursionError) -> str:
    """Why ``json.loads`` refused a text, in a few words (also for the errors it raises
    that are not ``JSONDecodeError``: nesting too deep, a number too long)."""
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at column {err.colno}"
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if "digits" in str(err):
        return "a number with too many digits"
    return str(err)


def iter_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]] | BadLine]:
    """(line number, JSON object) for every row of ``path``, or a :class:`BadLine`.
    Raises :class:`DataFormatError` for a damaged gzip file and ``FileNotFoundError``."""
    empty = True
    for number, text in text_lines(path):
        if isinstance(text, str) and not text.strip():
            continue
        empty = False
        if isinstance(text, BadLine):
            yield text
            continue
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as err:
            why = f"invalid JSON ({json_problem(err)}); expected one JSON object per line"
            yield BadLine(str(path), number, why)
            continue
        if not isinstance(obj, dict):
            why = f"expected a JSON object, got {type(obj).__name__}; write one object per line"
            yield BadLine(str(path), number, why)
            continue
        yield number, obj
    if empty:
        why = "no usable rows (the file is empty); expected one JSON object per line"
        yield BadLine(str(path), 1, why)


def read_lines(
    path: str | Path, error: type[DataFormatError] = DataFormatError
) -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`iter_lines`, raising the first bad line as ``error``."""
    for item in iter_lines(path):
        if isinstance(item, BadLine):
            raise item.error(error)
        yield item


def check_unicode(
    value: str,
    where: str,
    line: int | None,
    key: str,
    error: type[DataFormatError] = DataFormatError,
) -> str:
    """``value``, or ``error`` for a lone surrogate (a ``\\ud800`` escape without its pair,
    which JSON allows): no tokenizer or Arrow table takes one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise error(
            where,
            line,
            key,
            f"lone surrogate {value[err.start]!r} at character {err.start} (a broken \\u "
            "escape); expected valid Unicode text",
        ) from None
    return value


def _field_with_bad_bytes(raw: bytes) -> str | None:
    """The key whose string value holds the invalid UTF-8 bytes of ``raw``, if any."""
    try:
        obj = json.loads(raw.decode("utf-8", errors="surrogateescape"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    for key, value in obj.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and any("\udc80" <= c <= "\udcff" for c in v) for v in values):
            return key
    return None
