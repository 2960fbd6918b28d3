"""The approximate index (`lusifer index DIR`, lusifer.corpus.index) with real faiss: it
finds what exact search finds when every cell is scanned, k larger than a shard included;
search uses it when fresh, passes over a stale one, and `lusifer index` rebuilds that."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from lusifer.cli import app
from lusifer.corpus import encode_corpus, load_manifest, search, search_vectors
from lusifer.corpus.index import (
    INDEX_DIR,
    INDEX_META,
    build_index,
    default_nlist,
    index_state,
    load_index,
    search_index,
)
from lusifer.corpus.shards import CorpusError

runner = CliRunner()


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


@pytest.fixture()
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    docs = [f"doc {i}" for i in range(90)]
    queries = [f"query {i}" for i in range(5)]
    table = Table({t: rng.standard_normal(16) for t in docs + queries})
    src = tmp_path / "docs.txt"
    src.write_text("".join(d + "\n" for d in docs), encoding="utf-8")
    out = tmp_path / "out"
    encode_corpus(table, src, out, shard_size=8, dtype="float16")
    return table, src, out, table.encode(queries), queries


@pytest.mark.parametrize("nlist", [None, 4])
def test_the_index_finds_the_exact_top_k_when_every_cell_is_scanned(corpus, nlist):
    _, _, out, q_vecs, _ = corpus
    info, built = build_index(out, nlist=nlist, nprobe=4)
    assert built and info.rows == 90 and info.nlist == (nlist or default_nlist(90))
    assert index_state(out)[0] == "fresh"
    for k in (1, 10, 20, 200):  # 20 and 200: more than a shard's 8 rows
        exact = search_vectors(out, q_vecs, k, engine="numpy")
        approx = search_index(out, q_vecs, k)
        assert [len(h) for h in approx] == [min(k, 90)] * 5
        for a, e in zip(approx, exact, strict=True):
            assert np.allclose([s for s, _, _ in a], [s for s, _, _ in e], atol=1e-3)
            # the same rows (an order may differ between scores a rounding apart)
            assert {loc[1:] for loc in a} == {loc[1:] for loc in e}
        assert [h[0][1:] for h in approx] == [h[0][1:] for h in exact]
    again, built = build_index(out)
    assert not built and again == info  # fresh: kept


def test_search_uses_a_fresh_index_and_passes_over_a_stale_one(corpus, monkeypatch):
    table, src, out, _, queries = corpus
    build_index(out, nlist=2, nprobe=1)  # one cell of two: finds less than exact search
    approx = search(out, queries, 30, model=table)
    exact = search(out, queries, 30, model=table, exact=True)
    assert [len(h) for h in exact] == [30] * 5
    assert [[h.id for h in hits] for hits in approx] != [[h.id for h in hits] for hits in exact]
    # the folder encoded again (other shards): the index is stale, refused, then rebuilt
    encode_corpus(table, src, out, shard_size=7, dtype="float16", overwrite=True)
    assert index_state(out)[0] == "stale"
    with pytest.raises(CorpusError, match="another encoding"):
        load_index(out)
    with pytest.warns(UserWarning, match="another encoding"):
        stale = search(out, queries, 30, model=table)
    assert [[h.id for h in hits] for hits in stale] == [
        [h.id for h in hits] for hits in search(out, queries, 30, model=table, exact=True)
    ]
    result = runner.invoke(app, ["index", str(out), "--nprobe", "64"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and index_state(out)[0] == "fresh"
    meta = json.loads((out / INDEX_DIR / INDEX_META).read_text())
    assert meta["rows"] == load_manifest(out)["rows"] == 90 and meta["nprobe"] == 64
    result = runner.invoke(app, ["index", str(out)])
    assert result.exit_code == 0 and "up to date" in result.output
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fresh index: no warning
        assert search(out, queries[0], 3, model=table)


def test_index_and_search_commands(tmp_path, tiny_model_factory):
    folder = tmp_path / "model"
    tiny_model_factory("bert").save_pretrained(folder)
    lines = [f"line number {i} " + "word " * (i % 7) for i in range(50)]
    src = tmp_path / "in.txt"
    src.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["encode", str(folder), str(src), "-o", str(out), "--shard-size", "6"]
    )
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["index", str(tmp_path)]).exit_code == 2  # no manifest
    result = runner.invoke(app, ["index", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / INDEX_DIR / "index.faiss").is_file()

    def hits(*extra: str) -> list[list[str]]:
        args = ["search", str(out), lines[7], lines[33], "--k", "15", "--json", *extra]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        rows = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
        return [[h["id"] for h in r["hits"]] for r in rows]

    indexed, exact = hits(), hits("--exact")
    # 50 rows: one cell, scanned whole (fp16 in the index: near ties may swap)
    assert [set(r) for r in indexed] == [set(r) for r in exact]
    assert [r[0] for r in indexed] == ["8", "34"] and all(len(r) == 15 for r in indexed)
