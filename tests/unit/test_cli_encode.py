"""``lusifer encode`` end to end on small files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lusifer import LusiferModel
from lusifer.cli import app
from lusifer.corpus import CorpusInputError
from lusifer.corpus.streaming import read_records

runner = CliRunner()


def test_encode_txt_with_a_lusifer_folder(tmp_path, saved_tiny_model):
    saved_tiny_model(tmp_path / "model")
    src = tmp_path / "in.txt"
    src.write_text("hello world\nbonjour le monde\nПривет мир\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    result = runner.invoke(
        app,
        ["encode", str(tmp_path / "model"), str(src), "-o", str(out), "--instruction", "Find it"],
    )
    assert result.exit_code == 0, result.output
    got = np.load(out)
    expected = LusiferModel.from_pretrained(tmp_path / "model").encode(
        ["hello world", "bonjour le monde", "Привет мир"], instruction="Find it"
    )
    assert got.shape == expected.shape == (3, 24)
    assert np.abs(got - expected).max() < 1e-6


def test_encode_jsonl_with_a_plain_backbone(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"text": t}) for t in ["a", "b c"]) + "\n")
    out = tmp_path / "out.npy"
    result = runner.invoke(
        app, ["encode", "tiny:bert", str(src), "-o", str(out), "--kind", "document"]
    )
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (2, 24)
    # a plain backbone reads no instructions: the user is told the flag is not used
    result = runner.invoke(
        app, ["encode", "tiny:bert", str(src), "-o", str(out), "--instruction", "x"]
    )
    assert result.exit_code == 0, result.output
    assert "--instruction is not used" in result.output


def test_bad_lines_are_reported_by_number(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "ok"}\n{"txt": "no"}\nnot json\n\xff\xfe\n\n{"text": 3}\n')
    out = tmp_path / "out.npy"
    result = runner.invoke(app, ["encode", "tiny:bert", str(src), "-o", str(out)])
    assert result.exit_code == 2
    for line in (
        ":2: no string field 'text'",
        ":3: invalid JSON",
        ":4: invalid UTF-8",
        ":6:",
    ):
        assert line in result.output, result.output
    assert ":5:" not in result.output  # a blank line of a JSON-lines file is skipped
    assert not out.exists()
    result = runner.invoke(
        app, ["encode", "tiny:bert", str(src), "-o", str(out), "--skip-bad-lines"]
    )
    assert result.exit_code == 0 and np.load(out).shape == (1, 24)


def test_read_records_errors(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"fine\n\n")
    with pytest.raises(CorpusInputError) as err:
        read_records(path)
    assert [(p.line, p.why) for p in err.value.problems] == [(2, "blank line")]
    records, bad = read_records(path, skip_bad_lines=True)
    assert [r.text for r in records] == ["fine"] and [b.line for b in bad] == [2]


@pytest.mark.parametrize("command", ["encode", "serve"])
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--backend", "tensorrt", "'torch', 'onnx'"), ("--quantize", "int4", "'int8'")],
)
def test_encode_and_serve_refuse_a_bad_backend_choice(tmp_path, command, flag, value, message):
    texts = tmp_path / "in.txt"
    texts.write_text("hello\n")
    args = {"encode": [str(texts), "-o", str(tmp_path / "out.npy")], "serve": []}[command]
    result = runner.invoke(app, [command, "all-MiniLM-L6-v2", *args, flag, value])
    assert result.exit_code == 2
    assert message in result.output and flag in result.output
    assert not (tmp_path / "out.npy").exists()
