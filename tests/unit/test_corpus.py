"""Corpus-scale encoding (streamed readers, shards, manifest, resume, two processes) and
search (`lusifer.corpus`, `lusifer encode MODEL INPUT -o DIR`, `lusifer search`)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lusifer import LusiferModel
from lusifer.cli import app
from lusifer.corpus import (
    CorpusError,
    CorpusInputError,
    encode_corpus,
    load_manifest,
    scan_input,
    search,
    search_vectors,
    stream_records,
)

runner = CliRunner()
WORKER = Path(__file__).with_name("corpus_worker.py")
PHRASES = [
    "The cat sleeps on the sofa",
    "Le chat dort sur le canapé",
    "Der Zug fährt um acht Uhr ab",
    "Кошка спит на диване",
    "बिल्ली सोफे पर सो रही है",
    "猫がソファで寝ている",
    "El perro corre en el parque",
]


def mixed_lines(n: int) -> list[str]:
    return [f"{PHRASES[i % len(PHRASES)]} {i}" + " !" * (i % 5) for i in range(n)]


def write_txt(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, saved_tiny_model) -> Path:
    """A saved tiny LUSIFER model (random connector) that reads instructions."""
    return saved_tiny_model(tmp_path_factory.mktemp("corpus-model") / "model")


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return LusiferModel.from_pretrained(tiny_folder)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def read_corpus(outdir: Path) -> tuple[list[str], np.ndarray]:
    """Every (id, vector) of an output folder, in shard order."""
    from lusifer.corpus import shard_rows, shard_vectors

    manifest = load_manifest(outdir)
    ids, vectors = [], []
    for entry in manifest["shards"]:
        ids += [row["id"] for row in shard_rows(outdir, manifest, entry["index"])]
        vectors.append(np.asarray(shard_vectors(outdir, manifest, entry["index"]), np.float32))
    return ids, np.concatenate(vectors)


# ---------------------------------------------------------------- readers
def test_readers_for_each_format_and_a_folder(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    write_txt(folder / "b.txt", ["un", "deux"])
    (folder / "a.jsonl").write_text(
        '{"id": "x1", "text": "alpha"}\n{"text": "beta"}\n{"id": 7, "text": "gamma"}\n'
    )
    pq.write_table(pa.table({"text": ["p", "q"]}), folder / "sub" / "c.parquet")
    pq.write_table(pa.table({"id": [10, 11], "text": ["r", "s"]}), folder / "d.parquet")
    write_txt(folder / ".hidden.txt", ["never read"])
    (folder / "notes.md").write_text("not an input")
    got = [(r.id, r.text) for r in stream_records(folder)]
    assert got == [
        ("x1", "alpha"),
        ("a.jsonl:2", "beta"),
        ("7", "gamma"),
        ("b.txt:1", "un"),
        ("b.txt:2", "deux"),
        ("10", "r"),
        ("11", "s"),
        ("sub/c.parquet:1", "p"),
        ("sub/c.parquet:2", "q"),
    ]
    # a lone file: the default id is the line (row) number
    assert [r.id for r in stream_records(folder / "b.txt")] == ["1", "2"]
    assert [r.id for r in stream_records(folder / "sub" / "c.parquet")] == ["1", "2"]
    assert scan_input(folder).rows == 9 and scan_input(folder).files == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusInputError, match="holds no"):
        scan_input(tmp_path / "empty")
    with pytest.raises(CorpusInputError, match="must be a .txt"):
        scan_input(folder / "notes.md")
    with pytest.raises(CorpusInputError, match="does not exist"):
        scan_input(tmp_path / "missing.txt")


def _stream_peaks(tmp_path: Path, fmt: str, n: int) -> tuple[int, int, int]:
    """Python-heap and pyarrow peaks while streaming ``n`` rows, and the text's size."""
    lines = [f"{PHRASES[i % 7]} number {i:06d} " + "x" * 20 for i in range(n)]
    path = tmp_path / f"big-{n}.{fmt}"
    if fmt == "txt":
        write_txt(path, lines)
    elif fmt == "jsonl":
        path.write_text(
            "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(lines))
        )
    else:
        pq.write_table(pa.table({"text": lines}), path, row_group_size=4096)
    text_bytes = sum(len(t.encode()) for t in lines)
    del lines
    arrow_peak = count = 0
    tracemalloc.start()
    try:
        for _record in stream_records(path):
            count += 1
            if count % 1000 == 0:
                arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    return peak, arrow_peak, text_bytes


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "parquet"])
def test_readers_stream_in_constant_memory(tmp_path, fmt):
    """10k and 40k rows (0.7 and 2.8 MB of text) stream with the same memory: the
    Python-heap peak stays far below the text's size and does not grow with it, nor does
    what pyarrow holds (one row group at a time)."""
    small_peak, small_arrow, _ = _stream_peaks(tmp_path, fmt, 10_000)
    peak, arrow, text_bytes = _stream_peaks(tmp_path, fmt, 40_000)
    assert peak < text_bytes / 4, (peak, text_bytes)
    assert peak < 1.5 * small_peak + 65_536, (small_peak, peak)
    assert arrow < 1.5 * small_arrow + 65_536, (small_arrow, arrow)


def test_bad_lines_are_named_by_file_and_line(tmp_path, tiny_folder):
    folder = tmp_path / "in"
    folder.mkdir()
    write_txt(folder / "a.txt", ["fine"])
    (folder / "b.jsonl").write_bytes(
        b'{"text": "ok"}\n{"txt": "no"}\n\xff\n{"id": 1.5, "text": "x"}\n'
    )
    pq.write_table(pa.table({"text": ["ok", None]}), folder / "c.parquet")
    scan = scan_input(folder)
    assert (scan.rows, scan.bad) == (3, 4)
    with pytest.raises(CorpusInputError) as err:
        list(stream_records(folder))
    assert f"{folder / 'b.jsonl'}:2: no string field 'text'" in str(err.value)
    out = tmp_path / "out"
    result = runner.invoke(app, ["encode", str(tiny_folder), str(folder), "-o", str(out)])
    assert result.exit_code == 2
    for where in (
        f"{folder / 'b.jsonl'}:2: no string field 'text'",
        f"{folder / 'b.jsonl'}:3: invalid UTF-8",
        f"{folder / 'b.jsonl'}:4: 'id' must be a string or an integer",
        f"{folder / 'c.parquet'}:2: null 'text'",
        "--skip-bad-lines",
    ):
        assert where in result.output, result.output
    assert not out.exists()  # refused before anything is written
    result = runner.invoke(
        app, ["encode", str(tiny_folder), str(folder), "-o", str(out), "--skip-bad-lines"]
    )
    assert result.exit_code == 0, result.output
    assert f"skipped {folder / 'c.parquet'}:2" in result.output
    manifest = load_manifest(out)
    assert manifest["rows"] == 3 and manifest["input"]["bad_lines_skipped"] == 4


# ---------------------------------------------------------------- shards and manifest
def test_shards_and_manifest(tmp_path, tiny_folder, tiny):
    lines = mixed_lines(120)
    src = write_txt(tmp_path / "in.txt", lines)
    out = tmp_path / "out"
    args = ["encode", str(tiny_folder), str(src), "-o", str(out), "--shard-size", "50"]
    result = runner.invoke(app, [*args, "--kind", "document", "--instruction", "Find it"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["reference"] == str(tiny_folder)
    assert manifest["model"]["fingerprint"] == tiny.fingerprint()
    assert (manifest["dimension"], manifest["rows"], manifest["dtype"]) == (24, 120, "float32")
    assert (manifest["kind"], manifest["instruction"], manifest["normalized"]) == (
        "document",
        "Find it",
        True,
    )
    assert manifest["lusifer_version"] and manifest["format"] == "npy"
    assert [s["rows"] for s in manifest["shards"]] == [50, 50, 20]
    for shard in manifest["shards"]:
        for name, info in shard["files"].items():
            data = (out / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == info["sha256"] and len(data) == info["bytes"]
        assert (out / f"shard-{shard['index']:05d}.json").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", "encode-settings.json"]
        + [f"shard-0000{i}{ext}" for i in range(3) for ext in (".npy", ".ids.jsonl", ".json")]
    )
    ids, vectors = read_corpus(out)
    assert ids == [str(i) for i in range(1, 121)]
    want = tiny.encode(lines, instruction="Find it", kind="document")
    assert np.abs(vectors - want).max() < 1e-5

    # float16 shards
    result = runner.invoke(app, [*args[:4], str(tmp_path / "f16"), *args[5:], "--dtype", "float16"])
    assert result.exit_code == 0, result.output
    half = np.load(tmp_path / "f16" / "shard-00000.npy")
    assert half.dtype == np.float16 and load_manifest(tmp_path / "f16")["dtype"] == "float16"
    assert cosines(half, tiny.encode(lines[:50])).min() > 0.9999

    # parquet shards, texts stored
    result = runner.invoke(
        app,
        [
            *args[:4],
            str(tmp_path / "pq"),
            "--format",
            "parquet",
            "--store-text",
            "--shard-size",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "pq" / "shard-00002.parquet")
    assert table.schema.field("id").type == pa.string()
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.column("text").to_pylist() == lines[100:]
    ids, vectors = read_corpus(tmp_path / "pq")
    assert ids == [str(i) for i in range(1, 121)]
    assert np.abs(vectors - tiny.encode(lines)).max() < 1e-5


def test_npy_output_still_works_and_reads_new_inputs(tmp_path, tiny):
    folder = tmp_path / "in"
    folder.mkdir()
    write_txt(folder / "a.txt", ["hello", "world"])
    pq.write_table(pa.table({"text": ["bonjour"]}), folder / "b.parquet")
    result = runner.invoke(app, ["encode", "tiny:bert", str(folder), "-o", str(tmp_path / "x.npy")])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "x.npy").shape == (3, 24)
    result = runner.invoke(
        app,
        ["encode", "tiny:bert", str(folder), "-o", str(tmp_path / "x.npy"), "--format", "parquet"],
    )
    assert result.exit_code == 2 and "give a folder" in result.output


# ---------------------------------------------------------------- two processes
@pytest.mark.slow  # torchrun
def test_two_processes_equal_one(tmp_path, tiny_folder, tiny):
    lines = mixed_lines(300)
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"doc-{i:04d}", "text": t}, ensure_ascii=False) + "\n"
            for i, t in enumerate(lines)
        ),
        encoding="utf-8",
    )
    common = dict(kind="document", shard_size=50, instruction="Find it")
    encode_corpus(tiny, src, tmp_path / "one", model_reference=str(tiny_folder), **common)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "lusifer.cli",
            "encode",
            str(tiny_folder),
            str(src),
            "-o",
            str(tmp_path / "two"),
            "--kind",
            "document",
            "--shard-size",
            "50",
            "--instruction",
            "Find it",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0/2" in proc.stdout and "rank 1/2" in proc.stdout, proc.stdout
    # rank 0 took shards 0, 2, 4 and rank 1 shards 1, 3, 5
    assert "3 shard(s) encoded" in proc.stdout
    one_ids, one = read_corpus(tmp_path / "one")
    two_ids, two = read_corpus(tmp_path / "two")
    assert two_ids == one_ids == [f"doc-{i:04d}" for i in range(300)]
    assert sorted(two_ids) == two_ids
    assert cosines(one, two).min() >= 0.99999
    m1, m2 = load_manifest(tmp_path / "one"), load_manifest(tmp_path / "two")
    assert m1["settings_key"] == m2["settings_key"] and m2["rows"] == 300


# ---------------------------------------------------------------- resume
class Counting:
    """Wraps an encoder: counts the texts it encodes; raises (a crash) after ``fail_after``
    calls."""

    def __init__(self, inner, fail_after: int | None = None) -> None:
        self.inner, self.fail_after, self.texts, self.calls = inner, fail_after, 0, 0
        self.name = inner.name

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def encode(self, texts, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts, **kwargs)


def _mtimes(outdir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in outdir.glob("shard-*")}


@pytest.mark.slow  # kill/resume
def test_a_killed_run_resumes_and_other_arguments_are_refused(tmp_path, tiny_folder, tiny):
    src = write_txt(tmp_path / "in.txt", mixed_lines(250))
    kw = dict(shard_size=50, model_reference=str(tiny_folder))
    encode_corpus(tiny, src, tmp_path / "whole", **kw)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="killed"):
        encode_corpus(Counting(tiny, fail_after=2), src, out, **kw)
    assert sorted(p.name for p in out.glob("shard-*.json")) == [
        "shard-00000.json",
        "shard-00001.json",
    ]
    assert not (out / "manifest.json").exists()
    with pytest.raises(CorpusError, match="has not finished"):
        load_manifest(out)
    # what a kill leaves mid-shard: a temporary of a dead writer, and shard 1 half-written
    # under its real name with its record gone; shard 0 stays finished
    (out / ".shard-00002.npy.tmp-999999999-abc.npy").write_bytes(b"\x93NUMPY partial")
    (out / "shard-00001.json").unlink()
    data = (out / "shard-00001.npy").read_bytes()
    (out / "shard-00001.npy").write_bytes(data[: len(data) // 2])
    before = _mtimes(out)
    counter = Counting(tiny)
    report = encode_corpus(counter, src, out, **kw)
    assert report.skipped == [0] and report.encoded == [1, 2, 3, 4]
    assert counter.texts == 200  # shard 0 was not encoded again
    after = _mtimes(out)
    for name in ("shard-00000.npy", "shard-00000.ids.jsonl", "shard-00000.json"):
        assert after[name] == before[name], name
    assert not list(out.glob(".*tmp-*"))
    whole, resumed = load_manifest(tmp_path / "whole"), load_manifest(out)
    assert [s["files"] for s in resumed["shards"]] == [s["files"] for s in whole["shards"]]

    # a finished shard whose file no longer matches its record is encoded again
    npy = out / "shard-00003.npy"
    npy.write_bytes(npy.read_bytes()[:-8] + b"\x00" * 8)
    counter = Counting(tiny)
    report = encode_corpus(counter, src, out, **kw)
    assert report.encoded == [3] and counter.texts == 50
    assert load_manifest(out)["shards"] == whole["shards"]

    # an edited input: only the shard whose texts changed is encoded again
    lines = mixed_lines(250)
    lines[120] = "Une phrase toute nouvelle"
    write_txt(src, lines)
    counter = Counting(tiny)
    report = encode_corpus(counter, src, out, **kw)
    assert report.encoded == [2] and counter.texts == 50
    write_txt(src, mixed_lines(250))
    assert encode_corpus(tiny, src, out, **kw).encoded == [2]

    # the same command again: nothing to do; other arguments: refused, or --overwrite
    args = ["encode", str(tiny_folder), str(src), "-o", str(out), "--shard-size", "50"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "0 shard(s) encoded, 5 already done" in result.output
    for extra, key in (
        (["--kind", "document"], "kind"),
        (["--dtype", "float16"], "dtype"),
        (["--instruction", "Other task"], "instruction"),
    ):
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 2, result.output
        assert f"{key}: " in result.output and "--overwrite" in result.output, result.output
    result = runner.invoke(app, [*args[:-1], "25"])
    assert result.exit_code == 2 and "shard_size: 50 there, 25 now" in result.output
    result = runner.invoke(app, ["encode", "tiny:xlmr", *args[2:]])
    assert result.exit_code == 2 and "fingerprint" in result.output
    result = runner.invoke(app, [*args[:-1], "25", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert load_manifest(out)["shard_size"] == 25 and len(load_manifest(out)["shards"]) == 10
    assert json.loads((out / "shard-00000.json").read_text())["rows"] == 25


@pytest.mark.slow  # kill/resume
def test_a_sigkilled_process_resumes(tmp_path, tiny_folder, tiny):
    """SIGKILL a real encoding process once its first shard record is on disk: the rerun
    keeps the finished shards, redoes the rest and equals an uninterrupted run."""
    src = write_txt(tmp_path / "in.txt", mixed_lines(200))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(
        [sys.executable, str(WORKER), str(tiny_folder), str(src), str(out), "20", "0.4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "shard-00000.json").exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no shard record within 120 s"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    finished = sorted(int(p.name[6:11]) for p in out.glob("shard-*.json"))
    assert finished and len(finished) < 10 and not (out / "manifest.json").exists()
    counter = Counting(tiny)
    report = encode_corpus(counter, src, out, shard_size=20, model_reference=str(tiny_folder))
    assert report.skipped == finished
    assert counter.texts == 200 - 20 * len(finished)
    whole = tmp_path / "whole"
    encode_corpus(tiny, src, whole, shard_size=20, model_reference=str(tiny_folder))
    assert load_manifest(out)["shards"] == load_manifest(whole)["shards"]


# ---------------------------------------------------------------- search
class Table:
    """An encoder that looks its vectors up (a constructed case)."""

    name = "table"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def fingerprint(self) -> str:
        return "table-1"

    def encode(self, texts, *, normalize=True, **_kwargs):
        rows = np.stack([self.vectors[t] for t in texts]).astype(np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True) if normalize else rows


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_search_finds_the_exact_top_k(tmp_path, fmt):
    rng = np.random.default_rng(0)
    docs = [f"doc {i}" for i in range(23)]
    queries = [f"query {i}" for i in range(4)]
    table = Table({t: rng.standard_normal(8) for t in docs + queries})
    src = write_txt(tmp_path / "docs.txt", docs)
    out = tmp_path / "out"
    encode_corpus(table, src, out, shard_size=5, format=fmt, store_text=(fmt == "parquet"))
    doc_vecs, q_vecs = table.encode(docs), table.encode(queries)
    for k in (1, 3, 7, 30):
        got = search(out, queries, k, model=table, texts=src)
        for q, hits in enumerate(got):
            scores = doc_vecs @ q_vecs[q]
            want = np.argsort(-scores, kind="stable")[:k]
            assert [h.id for h in hits] == [str(i + 1) for i in want]
            assert np.allclose([h.score for h in hits], scores[want], atol=1e-6)
            assert [h.text for h in hits] == [docs[i] for i in want]
    one = search(out, "query 0", 2, model=table)
    assert len(one) == 2 and one[0].id == got[0][0].id
    # FAISS's flat index per block (faiss-cpu, the search extra) finds the same rows
    assert search_vectors(out, q_vecs, 7, engine="faiss") == search_vectors(
        out, q_vecs, 7, engine="numpy"
    )
    faiss_hits = search_vectors(out, q_vecs, 30, engine="faiss")  # k > every shard's rows
    assert [len(h) for h in faiss_hits] == [23] * 4
    flat = faiss.IndexFlatIP(8)
    flat.add(doc_vecs)
    want_scores, want_rows = flat.search(q_vecs, 30)
    for q, hits in enumerate(faiss_hits):
        assert [5 * shard + row for _, shard, row in hits] == list(want_rows[q][:23])
        assert np.allclose([s for s, _, _ in hits], want_scores[q][:23], atol=1e-6)


def test_search_command(tmp_path, tiny_folder):
    lines = mixed_lines(60)
    src = write_txt(tmp_path / "in.txt", lines)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["encode", str(tiny_folder), str(src), "-o", str(out), "--shard-size", "25"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", str(out), lines[41], "--k", "3", "--texts", str(src)])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[1].split()
    assert first[0] == "1" and float(first[1]) > 0.9999 and first[2] == "42"
    assert lines[41] in result.output
    result = runner.invoke(app, ["search", str(out), lines[0], lines[59], "--k", "2", "--json"])
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [r["hits"][0]["id"] for r in rows] == ["1", "60"]
    result = runner.invoke(app, ["search", str(tmp_path), "x"])
    assert result.exit_code == 2 and "no manifest.json" in result.output
    # another model: warned about, and refused when its vectors do not fit
    result = runner.invoke(app, ["search", str(out), "x", "--model", "tiny:xlmr"])
    assert result.exit_code == 2, result.output
    assert "is not the model that encoded" in result.output
    assert "32 dimensions, the corpus 24" in result.output


@pytest.mark.integration
def test_an_english_query_finds_its_french_and_hindi_documents(tmp_path):
    """multilingual-e5-small (bundled, offline) alone: shards of two documents each."""
    from lusifer import load_embedder

    docs = {
        "fr-cat": "Le chat dort sur le canapé du salon.",
        "hi-cat": "बिल्ली लिविंग रूम में सोफे पर सो रही है।",
        "de-train": "Der Zug nach Berlin fährt um acht Uhr ab.",
        "en-stocks": "Stock markets fell sharply after the announcement.",
        "fr-rain": "Il pleut beaucoup à Paris en novembre.",
        "hi-rain": "नवंबर में पेरिस में बहुत बारिश होती है।",
        "es-food": "Me gusta cocinar paella los domingos.",
    }
    src = tmp_path / "docs.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": k, "text": v}, ensure_ascii=False) + "\n" for k, v in docs.items()
        ),
        encoding="utf-8",
    )
    e5 = load_embedder("multilingual-e5-small")
    out = tmp_path / "out"
    encode_corpus(
        e5,
        src,
        out,
        kind="document",
        shard_size=2,
        store_text=True,
        model_reference="multilingual-e5-small",
    )
    hits = search(
        out,
        ["The cat is sleeping on the sofa.", "It rains a lot in Paris in November."],
        2,
        model=e5,
    )
    assert {h.id for h in hits[0]} == {"fr-cat", "hi-cat"}, hits[0]
    assert {h.id for h in hits[1]} == {"fr-rain", "hi-rain"}, hits[1]
    assert hits[0][0].text in (docs["fr-cat"], docs["hi-cat"])


# ---------------------------------------------------------------- concurrent ONNX export
# One process of `lusifer encode --backend onnx` under torchrun: load the model, wait for
# the other (a "go" file), export the graph into the shared folder (fp32, then int8, both
# processes at once), encode.
EXPORT_WORKER = """
import json, sys, time
from pathlib import Path

import numpy as np
import onnx

import lusifer.onnx.export as export
from lusifer import LusiferModel
from lusifer.onnx import OnnxLusifer

folder, export_dir, go, out = sys.argv[1:5]
texts = json.loads(sys.argv[5])
model = LusiferModel.from_pretrained(folder)
calls = []
for name in ("export_onnx", "quantize_int8"):  # count the exports this process really ran
    real = getattr(export, name)
    def counted(*args, _real=real, _name=name, **kwargs):
        calls.append(_name)
        return _real(*args, **kwargs)
    setattr(export, name, counted)
# a bigger model's shape inference takes seconds: widen onnxruntime's window likewise
infer = onnx.shape_inference.infer_shapes_path
def slow_infer(*args, **kwargs):
    infer(*args, **kwargs)
    time.sleep(1.0)
onnx.shape_inference.infer_shapes_path = slow_infer
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.01)
for quantize in (None, "int8"):
    fast = OnnxLusifer.from_model(model, quantize=quantize, threads=1, export_dir=export_dir)
    np.save(f"{out}-{quantize or 'fp32'}.npy", fast.encode(texts, kind="document"))
    if quantize is None:  # wait for the other process: both quantise at the same time
        Path(f"{out}.fp32-done").touch()
        while len(list(Path(out).parent.glob("*.fp32-done"))) < 2:
            time.sleep(0.01)
print("calls", json.dumps(calls), flush=True)
"""


@pytest.mark.slow  # new processes (or a fuzz run): the full suite only
def test_concurrent_onnx_exports_into_one_folder_are_safe(tmp_path, tiny_folder, tiny):
    """Two processes export the same model's graphs (fp32 and int8) into one folder at the
    same time, as `lusifer encode --backend onnx` does under torchrun on first use: both
    run the export (the race is real), both get a graph that loads and gives equal
    vectors, and no temporary is left behind. Exports are written to a unique temporary
    name (pid + uuid) and renamed into place (`lusifer.files.atomic_file`), so the last
    rename wins with a complete file and a reader opens either whole file."""
    from lusifer.onnx import OnnxLusifer, ensure_exported

    export_dir, go = tmp_path / "onnx", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                EXPORT_WORKER,
                str(tiny_folder),
                str(export_dir),
                str(go),
                str(tmp_path / f"rank{rank}"),
                json.dumps(PHRASES),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in range(2)
    ]
    try:
        for proc in procs:  # both loaded: start them together
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-3000:]
        go.touch()
        outputs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    calls = [json.loads(out.split("calls ", 1)[1]) for out, _ in outputs]
    # both processes found no graph and exported (and quantised) it themselves
    assert calls == [["export_onnx", "quantize_int8"]] * 2, calls

    assert not [p.name for p in export_dir.iterdir() if ".tmp-" in p.name]  # temporaries
    fp32 = ensure_exported(tiny, export_dir=export_dir)
    int8 = ensure_exported(tiny, quantize="int8", export_dir=export_dir)
    assert sorted(p.name for p in export_dir.iterdir()) == sorted([fp32.name, int8.name])
    want = tiny.encode(PHRASES, kind="document")
    for quantize, path in ((None, fp32), ("int8", int8)):
        tag = quantize or "fp32"
        final = OnnxLusifer(path, tiny, threads=1).encode(PHRASES, kind="document")
        for rank in range(2):
            got = np.load(tmp_path / f"rank{rank}-{tag}.npy")
            np.testing.assert_allclose(got, final, atol=1e-6, err_msg=f"rank {rank} {tag}")
        limit = 0.99999 if quantize is None else 0.9
        assert cosines(final, want).min() > limit, tag
