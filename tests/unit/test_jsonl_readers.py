"""Every reader of JSON lines accepts and refuses the same files, naming the bad line.

The readers: ``lusifer encode f.jsonl -o x.npy``, ``lusifer encode f.jsonl -o DIR``, the
corpus reader behind ``lusifer mine --corpus``, the training readers (text and pair rows),
``lusifer mine``'s input and a local evaluation task folder's ``test.jsonl``. They all go
through :mod:`lusifer.jsonl`.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lusifer.cli import app
from lusifer.corpus import CorpusInputError
from lusifer.corpus.mining import load_pair_rows
from lusifer.corpus.streaming import read_records
from lusifer.data.readers import DataFormatError, read_pair_rows, read_text_rows
from lusifer.evaluation.local_data import load_task_dirs
from lusifer.evaluation.local_tasks import TaskDirError

runner = CliRunner()

ROWS = [
    json.dumps(
        {"text": f"text {i}", "query": f"q {i}", "positive": f"p {i}"}
        | {"sentence1": f"a {i}", "sentence2": f"b {i}", "score": i}
    ).encode()
    for i in range(3)
]
PLAIN = b"\n".join(ROWS) + b"\n"
GOOD = {
    "plain": PLAIN,
    "gzip": gzip.compress(PLAIN),
    "bom": b"\xef\xbb\xbf" + PLAIN,
    "crlf": b"\r\n".join(ROWS) + b"\r\n",
    "trailing-blank-line": PLAIN + b"\n",
}
# name -> (file, the line named, words every reader's message holds)
BAD = {
    "invalid-json-line-3": (b"\n".join([*ROWS[:2], b'{"text": "x",']) + b"\n", 3, "invalid JSON"),
    "invalid-utf8-line-3": (b"\n".join([*ROWS[:2], ROWS[2].replace(b"a 2", b"caf\xe9")]), 3, "invalid UTF-8"),
    "not-an-object-line-3": (b"\n".join([*ROWS[:2], b'["text", "x"]']), 3, "expected a JSON object"),
    "empty": (b"", 1, "no usable rows"),
}  # fmt: skip


def _cli(args: list[str]) -> str | None:
    result = runner.invoke(app, args)
    if result.exit_code == 0:
        return None
    assert result.exit_code == 2, result.output
    return result.output


def _library(read: Callable[[], object], *errors: type[Exception]) -> str | None:
    try:
        read()
    except errors as err:
        return str(err)
    return None


def _encode_npy(path: Path, tmp: Path) -> str | None:
    out = tmp / "x.npy"
    refused = _cli(["encode", "tiny:bert", str(path), "-o", str(out)])
    assert refused is not None or np.load(out).shape[0] == 3
    return refused


def _encode_dir(path: Path, tmp: Path) -> str | None:
    out = tmp / "shards"
    refused = _cli(["encode", "tiny:bert", str(path), "-o", str(out)])
    assert refused is not None or json.loads((out / "manifest.json").read_text())["rows"] == 3
    return refused


def _corpus(path: Path, tmp: Path) -> str | None:  # lusifer mine --corpus
    return _library(lambda: read_records(path), CorpusInputError)


def _texts(path: Path, tmp: Path) -> str | None:
    return _library(lambda: read_text_rows(path), DataFormatError)


def _pairs(path: Path, tmp: Path) -> str | None:
    return _library(lambda: read_pair_rows(path), DataFormatError)


def _mine_input(path: Path, tmp: Path) -> str | None:
    return _library(lambda: load_pair_rows(str(path)), DataFormatError)


def _task_folder(path: Path, tmp: Path) -> str | None:
    folder = tmp / "task"
    folder.mkdir()
    (folder / "task.json").write_text(json.dumps({"name": "T", "type": "sts", "languages": ["en"]}))
    (folder / "test.jsonl").write_bytes(path.read_bytes())  # gzip: found by its magic bytes
    return _library(lambda: load_task_dirs([folder]), TaskDirError)


READERS = {
    "encode-npy": _encode_npy,
    "encode-dir": _encode_dir,
    "mine-corpus": _corpus,
    "train-texts": _texts,
    "train-pairs": _pairs,
    "mine-input": _mine_input,
    "task-folder": _task_folder,
}


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / ("f.jsonl.gz" if name == "gzip" else "f.jsonl")
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("name", list(GOOD))
def test_every_reader_accepts_the_good_files(tmp_path, reader, name):
    path = _write(tmp_path, name, GOOD[name])
    assert READERS[reader](path, tmp_path) is None


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("name", list(BAD))
def test_every_reader_refuses_the_bad_files_naming_the_line(tmp_path, reader, name):
    data, line, words = BAD[name]
    path = _write(tmp_path, name, data)
    message = READERS[reader](path, tmp_path)
    assert message is not None, f"{reader} accepted {name}"
    flat = " ".join(message.split())  # the CLI wraps long lines
    assert re.search(rf"\.jsonl(:{line}:|, line {line}:)", flat), message
    assert words in flat, message
