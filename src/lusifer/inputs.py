"""Reading texts to embed from files: ``.txt`` (one a line) or ``.jsonl`` (a ``text`` field)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class InputFileError(ValueError):
    """An input file has bad lines; ``problems`` lists (line number, what is wrong)."""

    def __init__(self, path: Path, problems: list[tuple[int, str]]) -> None:
        self.path = path
        self.problems = problems
        shown = "\n".join(f"  {path}:{line}: {why}" for line, why in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} bad line(s) in {path}:\n{shown}{more}")


@dataclass
class TextFile:
    texts: list[str]
    line_numbers: list[int]
    skipped: list[tuple[int, str]]


def read_texts(path: str | Path, *, field: str = "text", skip_bad_lines: bool = False) -> TextFile:
    """Read texts from ``path``. Bad lines (invalid UTF-8, blank, bad JSON, missing or
    non-string ``field``) raise :class:`InputFileError` naming every line, or are
    skipped and reported when ``skip_bad_lines``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    is_jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    texts, numbers, problems = [], [], []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                problems.append((number, f"invalid UTF-8 at byte {err.start}"))
                continue
            if not line.strip():
                problems.append((number, "blank line"))
                continue
            if is_jsonl:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    problems.append((number, f"invalid JSON ({err.msg})"))
                    continue
                except RecursionError:
                    problems.append((number, "invalid JSON (nested too deeply)"))
                    continue
                except ValueError:  # an integer longer than Python reads (4300 digits)
                    problems.append((number, "invalid JSON (a number with too many digits)"))
                    continue
                value = row.get(field) if isinstance(row, dict) else None
                if not isinstance(value, str):
                    problems.append((number, f"no string field {field!r}"))
                    continue
                line = value
            texts.append(line)
            numbers.append(number)
    if problems and not skip_bad_lines:
        raise InputFileError(path, problems)
    return TextFile(texts, numbers, problems)
