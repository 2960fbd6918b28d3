"""Fuzzing every reader with random and mutated input: invalid UTF-8, NUL bytes, huge
lines, wrong types, deep nesting, lone surrogates, huge integers.

The only outcomes allowed: a result, or the project's own error (DataFormatError,
CorpusInputError, TaskDirError, ConfigError, the TypeError/ValueError ``encode`` raises
itself, an HTTP 400 in the API's error shape) naming the file, line or field. Never
another library's exception escaping, never a hang.
"""

from __future__ import annotations

import gzip
import json
import tempfile
import traceback
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from lusifer.config import ConfigError
from lusifer.corpus import CorpusInputError
from lusifer.corpus.streaming import read_records
from lusifer.data.hub import load_hf_pairs, load_hf_texts
from lusifer.data.readers import (
    DataFormatError,
    PairRow,
    TextRow,
    read_pair_rows,
    read_text_rows,
)
from lusifer.evaluation.local_data import load_task_dirs
from lusifer.evaluation.local_tasks import TaskDirError, read_task_spec
from lusifer.training.config import TrainConfig, load_train_config

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure reproduces
    phases=[Phase.explicit, Phase.generate],  # no shrinking: huge inputs shrink for minutes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SRC = str(Path(__file__).resolve().parents[2] / "src" / "lusifer")
_TMP = Path(tempfile.mkdtemp(prefix="lusifer-fuzz-"))


def fresh(name: str) -> Path:
    """A new, empty folder holding nothing but what one example writes."""
    folder = _TMP / uuid.uuid4().hex
    folder.mkdir()
    return folder / name


def raised_by_lusifer(err: BaseException) -> bool:
    """Whether the innermost frame that raised ``err`` is lusifer's own code."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(SRC)


# ------------------------------------------------------------------ strategies
SPECIAL_TEXTS = [
    "",
    " \t",
    "\x00",
    "a\x00b",
    "\ud800",  # a lone surrogate (JSON "\ud800")
    "x\udfffy",
    "\ufeff",
    "\u2028",
    "é😀",
    "x" * 100_000,
]
texts = st.text(max_size=12) | st.sampled_from(SPECIAL_TEXTS)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | texts
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3)
)
INSERTS = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b'"', b"{", b"[", b",", b"\\ud800", b"\\"]


def dumps(value: Any, draw) -> bytes:
    """JSON text of ``value``: escaped (lone surrogates as \\ud800) or raw UTF-8 with
    surrogates passed through (invalid UTF-8 bytes)."""
    if draw(st.booleans()):
        return json.dumps(value, ensure_ascii=True).encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with a few random byte-level changes: cut, deleted, inserted bytes."""
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["cut", "delete", "insert", "random"]))
        if op == "cut":
            data = data[:at]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 5)) :]
        elif op == "insert":
            data = data[:at] + draw(st.sampled_from(INSERTS)) + data[at:]
        else:
            data = data[:at] + draw(st.binary(max_size=6)) + data[at:]
    return data


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


@st.composite
def objects(draw, base: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """``base`` with some fields dropped or replaced by random JSON values."""
    obj = dict(base)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(keys) | texts)
        if draw(st.integers(0, 3)) == 0:
            obj.pop(key, None)
        else:
            obj[key] = draw(json_values)
    return obj


@st.composite
def jsonl_line(draw, base: dict[str, Any], keys: list[str]) -> bytes:
    kind = draw(
        st.sampled_from(["object", "object", "mutated", "value", "bytes", "deep", "long", "big"])
    )
    if kind == "big":  # an integer beyond the 4300 digits Python reads
        key = draw(st.sampled_from(keys)).encode()
        return b'{"' + key + b'": -' + b"9" * draw(st.sampled_from([4301, 20_000])) + b"}"
    if kind == "object":
        return dumps(draw(objects(base, keys)), draw)
    if kind == "mutated":
        return draw(mutated(dumps(draw(objects(base, keys)), draw)))
    if kind == "value":
        return dumps(draw(json_values), draw)
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "deep":
        inner = deep(draw(st.sampled_from([100, 5_000, 200_000])))
        return b'{"' + keys[0].encode() + b'": ' + inner + b"}"
    return dumps({**base, keys[0]: "long " * 400_000}, draw)  # a 2 MB line


def jsonl_file(base: dict[str, Any], keys: list[str]) -> st.SearchStrategy[bytes]:
    return st.lists(jsonl_line(base, keys), min_size=1, max_size=4).map(lambda ls: b"\n".join(ls))


PAIR = {"query": "q", "positive": "p", "negatives": ["n"], "instruction": "i", "label": 1}
PAIR_KEYS = [*PAIR, "dataset", "source", "license"]
TEXT = {"text": "some text", "source": "s"}


def check_data_error(err: DataFormatError, path: Path, lines: int) -> None:
    assert err.where == str(path) and str(path) in str(err)
    if err.line is not None:
        assert 1 <= err.line <= lines and f"line {err.line}" in str(err)
    if err.field is not None and len(err.field) <= 80:
        assert f"field {err.field!r}" in str(err)
    assert len(str(err)) < 2_000  # a huge or deep value is never quoted whole


# ------------------------------------------------------------- training rows
@pytest.mark.timeout(120)
@FUZZ
@given(
    pairs=jsonl_file(PAIR, PAIR_KEYS),
    text=jsonl_file(TEXT, ["text", "source"]),
    gz=st.sampled_from([None, "whole", "cut"]),
)
def test_training_jsonl_readers(pairs: bytes, text: bytes, gz: str | None):
    for data, read in ((pairs, read_pair_rows), (text, read_text_rows)):
        name = "rows.jsonl.gz" if gz else "rows.jsonl"
        path = fresh(name)
        blob = gzip.compress(data) if gz else data
        path.write_bytes(blob[: len(blob) // 2] if gz == "cut" else blob)
        try:
            rows = read(path)
        except DataFormatError as err:
            check_data_error(err, path, data.count(b"\n") + 1)
            continue
        for row in rows:  # what is read is valid text, ready for a tokenizer
            for value in (getattr(row, "query", None), getattr(row, "text", None)):
                if value is not None:
                    assert isinstance(value, str) and value.strip()
                    value.encode("utf-8")


@pytest.mark.parametrize(
    ("name", "data", "field"),
    [
        ("bad-utf8.csv", b"query,positive\n\xff\xfe,ok\n", None),
        ("ragged.csv", b'query,positive\na,b,c,d\n"unclosed\n', None),
        ("nul.csv", b"query,positive\na\x00,b\n", None),
        ("int-query.csv", b"query,positive\n1,b\n", "query"),
        ("missing.csv", b"text,other\na,b\n", "query"),
        ("mixed.jsonl", b'{"query": "a", "positive": "b"}\n{"query": 5, "positive": [1]}\n', None),
        ("surrogate.jsonl", b'{"query": "\\ud800", "positive": "b"}\n', None),
        ("deep.jsonl", b'{"query": ' + deep(50_000) + b', "positive": "b"}\n', None),
        # nested this deep, pyarrow's JSON reader used to crash the process (SIGSEGV)
        ("deep.json", b'[{"query": ' + deep(10_000) + b', "positive": "b"}]', None),
        ("deep.jsonl.gz", gzip.compress(b'{"query": "a", "positive": ' + deep(9_000) + b"}"), None),
        ("bigint.jsonl", b'{"query": "a", "positive": ' + b"1" * 5000 + b"}\n", None),
        ("cut.parquet", None, None),
        ("garbage.parquet", b"PAR1 this is not parquet", None),
        ("empty.csv", b"", None),
    ],
)
def test_hugging_face_file_readers(tmp_path, name: str, data: bytes | None, field: str | None):
    path = tmp_path / name
    if data is None:  # a parquet file cut short
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"query": ["a"] * 50, "positive": ["b"] * 50}), path)
        path.write_bytes(path.read_bytes()[:-40])
    else:
        path.write_bytes(data)
    cache = {"cache_dir": str(tmp_path / "hf-cache")}
    readers = [
        ("pairs", lambda: load_hf_pairs(path, **cache)),
        ("texts", lambda: load_hf_texts(path, text_field="query", **cache)),
    ]
    for label, read in readers:
        try:
            rows = read()
        except DataFormatError as err:
            assert str(path) in str(err) and len(str(err)) < 2_000, err
            if field is not None and label == "pairs":
                assert err.field == field and f"field {field!r}" in str(err)
            continue
        for row in rows:
            assert isinstance(row, PairRow | TextRow)


# --------------------------------------------------------------- input texts
@pytest.mark.timeout(60)
@FUZZ
@given(
    data=st.one_of(
        jsonl_file({"text": "hello"}, ["text"]),
        st.lists(st.binary(max_size=30), max_size=5).map(lambda ls: b"\n".join(ls)),
        st.lists(texts, max_size=5).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")),
    ),
    suffix=st.sampled_from([".txt", ".jsonl"]),
    skip=st.booleans(),
)
def test_read_records(data: bytes, suffix: str, skip: bool):
    path = fresh("input" + suffix)
    path.write_bytes(data)
    lines = data.count(b"\n") + 1
    try:
        records, _ = read_records(path, skip_bad_lines=skip)
    except CorpusInputError as err:
        if "not a valid gzip file" in str(err):  # random bytes that start like gzip
            assert str(path) in str(err)
            return
        assert not skip and err.problems
        assert all(p.source == str(path) and 1 <= p.line <= lines for p in err.problems)
        assert f"{path}:{err.problems[0].line}:" in str(err) and len(str(err)) < 10_000
        return
    assert all(isinstance(r.text, str) and r.text.strip() for r in records)
    assert all(1 <= r.line <= lines for r in records)


# ---------------------------------------------------------------- task dirs
SPEC = {"name": "T", "type": "sts", "languages": ["en"], "source": "me", "license": "mit"}
SPEC_KEYS = [*SPEC, "instruction", "main_score", "description", "domain"]
STS_ROW = {"sentence1": "a", "sentence2": "b", "score": 1}


@st.composite
def task_folder(draw) -> tuple[bytes, bytes]:
    if draw(st.integers(0, 3)) == 0:
        spec = draw(mutated(dumps(draw(objects(SPEC, SPEC_KEYS)), draw)))
    else:
        spec = dumps(draw(objects(SPEC, SPEC_KEYS)), draw)
    good = b"\n".join(dumps({**STS_ROW, "score": i}, draw) for i in range(3))
    rows = draw(jsonl_file(STS_ROW, list(STS_ROW)))
    return spec, good + b"\n" + rows


@pytest.mark.timeout(120)
@FUZZ
@given(folder=task_folder())
def test_task_folders(folder: tuple[bytes, bytes]):
    spec, rows = folder
    task = fresh("task")
    task.mkdir()
    (task / "task.json").write_bytes(spec)
    (task / "test.jsonl").write_bytes(rows)
    try:
        (loaded,) = load_task_dirs([task])
    except TaskDirError as err:
        message = str(err)
        assert str(task) in message and len(message) < 2_000
        assert "task.json" in message or "test.jsonl" in message
        return
    assert loaded.type == "sts" and loaded.name.strip()


@pytest.mark.timeout(60)
@FUZZ
@given(key=st.text(min_size=1, max_size=20).filter(lambda k: k not in SPEC_KEYS), value=json_values)
def test_an_unknown_task_json_key_is_refused_by_name(key: str, value: Any):
    task = fresh("task")
    task.mkdir()
    (task / "task.json").write_text(json.dumps({**SPEC, key: value}))
    with pytest.raises(TaskDirError) as err:
        read_task_spec(task)
    shown = repr(key)  # a long or unprintable key is cut short in the message
    assert (shown if len(shown) <= 80 else shown[:30]) in str(err.value)
    assert "unknown key; valid keys: " in str(err.value) and len(str(err.value)) < 1_000
    assert str(task / "task.json") in str(err.value)


def test_qrels_fuzz_cases(tmp_path):
    """Retrieval qrels: bad bytes, a huge quoted field, wrong columns, huge numbers."""
    cases = [
        b"\xff\xfe",
        b"query-id\tcorpus-id\tscore\nq1\td1\t" + b"9" * 5000 + b"\n",
        b"query-id\tcorpus-id\tscore\nq1\td1\t1e999\n",
        b"query-id\tcorpus-id\tscore\nq1\td1\tnan\n",
        b'query-id\tcorpus-id\tscore\n"' + b"x" * 200_000 + b"\n",
        b"query-id\tcorpus-id\tscore\nq1\x00\td1\t1\n",
        b"",
    ]
    for i, qrels in enumerate(cases):
        d = tmp_path / f"r{i}"
        (d / "qrels").mkdir(parents=True)
        (d / "task.json").write_text(json.dumps({**SPEC, "type": "retrieval"}))
        (d / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
        (d / "queries.jsonl").write_text('{"_id": "q1", "text": "y"}\n')
        (d / "qrels/test.tsv").write_bytes(qrels)
        with pytest.raises(TaskDirError, match=r"test\.tsv"):
            load_task_dirs([d])


# ------------------------------------------------------------- train configs
VALID_CONFIG = {
    "model": {"encoder": "tiny:xlmr", "target": "tiny:bert"},
    "run": {"output_dir": "out", "seed": 3},
    "alignment": {"steps": 2, "batch_size": 2, "data": [{"path": "pairs.jsonl"}]},
    "representation": {"steps": 2, "batch_size": 2, "data": [{"path": "pairs.jsonl"}]},
}
CONFIG_KEYS = [
    "model.encoder",
    "model.max_length",
    "model.encoder_lora",
    "run.seed",
    "run.save_every",
    "run.output_dir",
    "alignment.steps",
    "alignment.learning_rate",
    "alignment.warmup_ratio",
    "alignment.data",
    "alignment.objectives.lm",
    "representation.batch_size",
    "representation.temperature",
    "representation.num_negatives",
    "stages",
]
YAML_SCALARS = [
    "1" * 5000,  # an integer beyond Python's 4300-digit conversion limit
    "0x" + "f" * 5000,
    "2001-02-30",  # a date that does not exist
    "!!int abc",
    "!!float x",
    "!!timestamp 2001-13-01",
    "!!python/object/apply:os.system [echo]",
    "!!binary zz",
    ".nan",
    "-.inf",
    "1e400",
    "~",
    "[" * 2000,
    "{a: [b, {c: d}]}",
    "'\\x00'",
    '"\\ud800"',
    "*undefined",
    "&a [*a]",
]


@st.composite
def yaml_text(draw) -> bytes:
    kind = draw(st.sampled_from(["values", "values", "scalar", "mutated", "random", "bytes"]))
    config = json.loads(json.dumps(VALID_CONFIG))
    if kind == "values":
        for _ in range(draw(st.integers(1, 3))):
            *parents, last = draw(st.sampled_from(CONFIG_KEYS)).split(".")
            node = config
            for key in parents:
                node = node.setdefault(key, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node[last] = draw(json_values)
        return yaml.safe_dump(config, allow_unicode=draw(st.booleans())).encode(
            "utf-8", "surrogatepass"
        )
    if kind == "scalar":
        key = draw(st.sampled_from(CONFIG_KEYS)).split(".")[-1]
        section = draw(st.sampled_from(["run", "alignment", "model"]))
        text = yaml.safe_dump(config) + f"\n{section}x: 1\n"  # an unknown key too, sometimes
        if draw(st.booleans()):
            text = yaml.safe_dump(config)
        return (
            text + f"{section}_extra:\n  {key}: {draw(st.sampled_from(YAML_SCALARS))}\n"
        ).encode()
    if kind == "mutated":
        return draw(mutated(yaml.safe_dump(config).encode()))
    if kind == "random":
        return draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    return draw(st.binary(max_size=60))


overrides = st.lists(
    st.one_of(
        st.builds(
            lambda k, v: f"{k}={v}", st.sampled_from(CONFIG_KEYS), st.sampled_from(YAML_SCALARS)
        ),
        st.builds(lambda k, v: f"{k}={json.dumps(v)}", st.sampled_from(CONFIG_KEYS), json_values),
        st.text(max_size=30),
    ),
    max_size=3,
)


@pytest.mark.slow  # new processes (or a fuzz run): the full suite only
@pytest.mark.timeout(120)
@settings(FUZZ, max_examples=60)
@given(data=yaml_text(), extra=overrides)
def test_train_config_files_and_overrides(data: bytes, extra: list[str]):
    path = fresh("run.yaml")
    path.write_bytes(data)
    for args in ((path, []), (path, extra), (None, extra)):
        try:
            config = load_train_config(*args)
        except ConfigError as err:
            message = str(err)
            named = [str(path)] if args[0] is not None else []
            named += [o.partition("=")[0].strip() for o in args[1]] + ["config"]
            named += [repr(o) for o in args[1]]  # an override that is no key=value
            assert any(n and n in message for n in named), message
            assert len(message) < 3_000
            assert raised_by_lusifer(err)
            continue
        assert isinstance(config, TrainConfig)


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    """'Billion laughs': aliases that expand to 10^9 strings if walked."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines += ["alignment:", "  steps: 2", "  data: *a8"]
    path = tmp_path / "bomb.yaml"
    path.write_text("model: {encoder: tiny:xlmr, target: tiny:bert}\n" + "\n".join(lines))
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    assert len(str(err.value)) < 3_000


# ------------------------------------------------------------------ encode
@pytest.fixture(scope="module")
def tiny_model(tiny_model_factory):
    return tiny_model_factory("bert")


encode_texts = st.one_of(
    texts,
    st.lists(texts, max_size=4),
    st.lists(st.one_of(texts, json_values), max_size=3),
    json_values,
    st.binary(max_size=10),
    st.tuples(texts, texts),
)


@pytest.mark.timeout(120)
@settings(FUZZ, max_examples=80)
# longer than the encoder has positions for: it used to fail inside torch (IndexError)
@example(data="x " * 100_000, instruction="Find", kind="query", batch_size=1, max_length=10**6)
@example(data=["a", "b"], instruction="\ud800", kind="document", batch_size=2, max_length=None)
@example(data=["a"], instruction=None, kind="query", batch_size=1, max_length=-5)
@given(
    data=encode_texts,
    instruction=st.one_of(st.none(), texts, st.integers(), st.lists(texts, max_size=2)),
    kind=st.sampled_from(["query", "document", "banana", None, 3]),
    batch_size=st.sampled_from([1, 2, 32, 0, -1]),
    max_length=st.sampled_from([None, 8, 64, 4, 0, -5, 10**6]),
)
def test_encode_inputs(tiny_model, data, instruction, kind, batch_size, max_length):
    try:
        out = tiny_model.encode(
            data, instruction=instruction, kind=kind, batch_size=batch_size, max_length=max_length
        )
    except (TypeError, ValueError) as err:
        assert raised_by_lusifer(err), "".join(traceback.format_exception(err))
        assert len(str(err)) < 2_000
        return
    dim = tiny_model.embedding_size
    assert out.shape == ((dim,) if isinstance(data, str) else (len(data), dim))
    assert np.isfinite(out).all()


# ------------------------------------------------------------------ server
@pytest.fixture(scope="module")
def client(tiny_model):
    from fastapi.testclient import TestClient

    from lusifer.serving import ServerSettings, create_app

    settings_ = ServerSettings(max_inputs_per_request=4, max_chars_per_input=5_000, max_length=32)
    app = create_app(tiny_model, model_name="tiny", settings=settings_)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


REQUEST = {"input": ["a text", "another"], "model": "tiny", "kind": "query"}
REQUEST_KEYS = [*REQUEST, "encoding_format", "dimensions", "instruction", "user"]


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["object", "object", "mutated", "value", "bytes", "deep", "big"]))
    if kind == "object":
        return dumps(draw(objects(REQUEST, REQUEST_KEYS)), draw)
    if kind == "mutated":
        return draw(mutated(dumps(draw(objects(REQUEST, REQUEST_KEYS)), draw)))
    if kind == "value":
        return dumps(draw(json_values), draw)
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "deep":
        return b'{"input": ' + deep(draw(st.sampled_from([50, 3_000, 100_000]))) + b"}"
    key = draw(st.sampled_from(["dimensions", "input", "kind"]))
    return b'{"input": "x", "' + key.encode() + b'": ' + b"7" * 5000 + b"}"


@pytest.mark.timeout(120)
@settings(FUZZ, max_examples=150)
@given(body=bodies())
def test_server_json_body(client, body: bytes):
    response = client.post(
        "/v1/embeddings", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code in (200, 400), (response.status_code, response.text[:500])
    payload = response.json()
    if response.status_code == 400:
        error = payload["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
        assert len(error["message"]) < 2_000
        return
    sent = json.loads(body)
    n = 1 if isinstance(sent["input"], str) else len(sent["input"])
    assert [d["index"] for d in payload["data"]] == list(range(n))


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": ' + deep(100_000) + b"}",
        b'{"input": "x", "dimensions": ' + b"7" * 5000 + b"}",
        b'{"input": "\xff\xfe"}',
    ],
    ids=["deep", "huge-int", "bad-utf8"],
)
def test_a_body_json_cannot_read_is_a_400_saying_why(client, body: bytes):
    response = client.post(
        "/v1/embeddings", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "could not be read as JSON" in response.json()["error"]["message"]
