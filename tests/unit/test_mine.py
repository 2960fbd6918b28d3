"""Hard-negative mining: the window logic on hand-made vectors, ``lusifer mine`` end to end
with a tiny backbone (resume, refusals, errors)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import FakeEmbedder, at_angle
from typer.testing import CliRunner

from lusifer.cli import app
from lusifer.data import mining
from lusifer.data.mining import (
    build_corpus,
    mine_hard_negatives,
    rank_window,
    select_negatives,
)
from lusifer.data.readers import PairRow, read_pair_rows

runner = CliRunner()


def angle_encoder(angles: dict[str, float]) -> FakeEmbedder:
    """Each known text is a unit vector at a fixed angle: cosine ranks are known exactly."""
    return FakeEmbedder("angles", vectors={t: at_angle(a) for t, a in angles.items()})


def test_rank_window_takes_ranks_skip_plus_one_to_top_k(monkeypatch):
    corpus = np.array([at_angle(a) for a in (50, 10, 30, 20, 60, 40)])  # ids 0..5
    query = np.array([at_angle(0)])
    # ranked: 10(1) 20(3) 30(2) 40(5) 50(0) 60(4); ranks 2..5 -> ids 3, 2, 5, 0
    ids, scores = rank_window(query, corpus * 3.0, skip=1, top_k=5)  # unnormalised input
    assert ids.tolist() == [[3, 2, 5, 0]]
    assert np.allclose(scores[0], [math.cos(math.radians(a)) for a in (20, 30, 40, 50)])
    # a search depth past the corpus is cut to it; a window beyond it is empty
    assert rank_window(query, corpus, skip=4, top_k=128)[0].tolist() == [[0, 4]]
    assert rank_window(query, corpus, skip=6, top_k=128)[0].shape == (1, 0)
    # the blockwise merge gives the same answer with tiny blocks
    monkeypatch.setattr(mining, "_SCORE_BLOCK_ELEMENTS", 2)
    assert rank_window(query, corpus, skip=1, top_k=5)[0].tolist() == [[3, 2, 5, 0]]
    assert select_negatives([3, 2, 5, 0], {2, 0}, None) == [3, 5]
    assert select_negatives([3, 2, 5, 0], {2}, 2) == [3, 5]
    with pytest.raises(ValueError, match="larger than skip"):
        mining.validate_window(30, 30, None)


def test_mine_drops_positives_duplicates_and_same_query_positives():
    angles = {f"p{i}": 10.0 * i for i in range(1, 8)} | {"q": 0.0, "z": 68.0}
    rows = [
        PairRow(query="q", positive="p3", instruction="Find it", dataset="d"),
        PairRow(query="q", positive="p5", dataset="d"),  # the same query, another positive
        PairRow(query="z", positive="p7", dataset="d"),
    ]
    corpus = build_corpus(rows, ["p1", " p3 ", "p2", "p4", "p6"])
    assert corpus.texts == ["p3", "p5", "p7", "p1", "p2", "p4", "p6"]  # " p3 " is p3
    encoder = angle_encoder(angles)
    chunks = list(
        mine_hard_negatives(
            encoder,
            rows,
            corpus=corpus,
            skip=1,
            top_k=6,
            num_negatives=2,
            chunk_size=2,
            instruction="Retrieve",
        )
    )
    assert [len(c) for c in chunks] == [2, 1]
    mined = [row for chunk in chunks for row in chunk]
    # q ranks p1..p7; ranks 2..6 = p2 p3 p4 p5 p6; p3 and p5 (both q's positives) dropped
    assert mined[0].negatives == ["p2", "p4"]
    assert mined[1].negatives == ["p2", "p4"]
    # z (68 deg) ranks p7 p6 p5 p4 p3 p2 p1; rank 1 (its positive) skipped
    assert mined[2].negatives == ["p6", "p5"]
    assert mined[0].instruction == "Find it" and mined[0].query == "q"
    assert encoder.calls[0] == (7, "Retrieve", "document")
    assert {(c.kind, c.instruction) for c in encoder.calls[1:]} == {("query", "Retrieve")}
    # all negatives when num_negatives is None; a resumed start gives the same rows
    full = [
        r for c in mine_hard_negatives(encoder, rows, corpus=corpus, skip=1, top_k=6) for r in c
    ]
    assert full[0].negatives == ["p2", "p4", "p6"]
    tail = [
        r
        for c in mine_hard_negatives(encoder, rows, corpus=corpus, skip=1, top_k=6, start=2)
        for r in c
    ]
    assert tail == full[2:]


def test_every_positive_of_a_row_is_dropped():
    row = PairRow(query="q", positive="p1", dataset="d")
    if not hasattr(row, "other_positives"):
        pytest.skip("this reader has one positive per row")
    row = PairRow(query="q", positive="p1", other_positives=["p2"], dataset="d")
    angles = {f"p{i}": 10.0 * i for i in range(1, 6)} | {"q": 0.0}
    corpus = build_corpus([row], ["p3", "p4", "p5"])
    ((mined,),) = mine_hard_negatives(angle_encoder(angles), [row], corpus=corpus, skip=0, top_k=4)
    assert mined.negatives == ["p3", "p4"]


TOPICS = [
    "cats purr softly on the sofa",
    "dogs bark loudly at the postman",
    "the sun is a star of medium size",
    "rain falls from grey clouds",
    "python is a programming language",
    "paris is the capital of france",
    "bread needs yeast to rise",
    "chess is played on sixty-four squares",
    "the moon orbits the earth monthly",
    "tea is made from dried leaves",
    "violins have four strings",
    "bees make honey from nectar",
]


@pytest.fixture
def pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [
        {"query": f"what about {t.split()[1]}? ({i})", "positive": t}
        | ({"instruction": "Given a question, find the passage"} if i % 2 else {})
        for i, t in enumerate(TOPICS)
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


ARGS = ["--skip", "2", "--top-k", "9", "--num-negatives", "4", "--chunk-size", "4"]


def _mine(src, out, *extra):
    return runner.invoke(app, ["mine", "tiny:bert", str(src), "-o", str(out), *ARGS, *extra])


def test_cli_mines_pair_jsonl(tmp_path, pairs):
    out = tmp_path / "out" / "mined.jsonl"
    result = _mine(pairs, out, "--instruction", "Retrieve the passage")
    assert result.exit_code == 0, result.output
    rows = read_pair_rows(out)
    assert [r.query for r in rows] == [r.query for r in read_pair_rows(pairs)]
    for i, row in enumerate(rows):
        assert 1 <= len(row.negatives) <= 4
        assert row.positive not in row.negatives
        assert len(set(row.negatives)) == len(row.negatives)
        assert set(row.negatives) <= set(TOPICS)
        assert row.dataset == "pairs"
        expected = "Given a question, find the passage" if i % 2 else "Retrieve the passage"
        assert row.instruction == expected
    settings = json.loads((tmp_path / "out" / "mined.jsonl.mine.json").read_text())
    assert settings["skip"] == 2 and settings["top_k"] == 9 and settings["model"] == "tiny:bert"
    assert not (tmp_path / "out" / "mined.jsonl.mine-corpus.npy").exists()
    # a finished output is not redone
    before = out.read_bytes()
    result = _mine(pairs, out, "--instruction", "Retrieve the passage")
    assert result.exit_code == 0 and "already complete" in result.output
    assert out.read_bytes() == before


def test_resume_after_a_kill_gives_the_uninterrupted_file(tmp_path, pairs, monkeypatch):
    whole, partial = tmp_path / "whole.jsonl", tmp_path / "partial.jsonl"
    assert _mine(pairs, whole).exit_code == 0

    real_rank = mining.rank_window
    calls = []

    def dies_on_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_rank(*args, **kwargs)

    monkeypatch.setattr(mining, "rank_window", dies_on_third_chunk)
    result = _mine(pairs, partial)
    assert result.exit_code != 0
    assert partial.read_bytes().count(b"\n") == 8  # two chunks of four written
    cache = tmp_path / "partial.jsonl.mine-corpus.npy"
    assert cache.exists()
    with partial.open("ab") as f:  # a torn line, as from a kill mid-write
        f.write(b'{"query": "what ab')
    monkeypatch.setattr(mining, "rank_window", real_rank)

    # other settings are refused, and the partial output is left alone
    torn = partial.read_bytes()
    result = _mine(pairs, partial, "--skip", "3")
    assert result.exit_code == 2
    assert "different settings" in result.output and "skip: 2 -> 3" in result.output
    assert partial.read_bytes() == torn

    embedded = []
    real_embed = mining.embed_texts
    monkeypatch.setattr(
        mining,
        "embed_texts",
        lambda encoder, texts, **kw: (
            embedded.append(kw["kind"]) or real_embed(encoder, texts, **kw)
        ),
    )
    result = _mine(pairs, partial)
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "8 of 12" in result.output
    assert "document" not in embedded  # the corpus embeddings came from the cache
    assert partial.read_bytes() == whole.read_bytes()
    assert not cache.exists()

    # without the cache (e.g. killed before the first chunk was written) as well
    partial.write_bytes(b"".join(whole.read_bytes().splitlines(keepends=True)[:5]) + b'{"q')
    result = _mine(pairs, partial)
    assert result.exit_code == 0, result.output
    assert partial.read_bytes() == whole.read_bytes()


def test_refuses_an_output_it_did_not_write(tmp_path, pairs):
    out = tmp_path / "out.jsonl"
    out.write_text('{"query": "a", "positive": "b"}\n')
    result = _mine(pairs, out)
    assert result.exit_code == 2 and "not made by lusifer mine" in result.output
    assert _mine(pairs, out, "--overwrite").exit_code == 0
    assert len(read_pair_rows(out)) == len(TOPICS)


def test_hf_dataset_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "hf"
    datasets.Dataset.from_dict(
        {
            "question": [f"which one: {t.split()[0]} {i}" for i, t in enumerate(TOPICS)],
            "answer": TOPICS,
        }
    ).save_to_disk(str(folder))
    out = tmp_path / "out.jsonl"
    result = _mine(folder, out, "--query-field", "question")
    assert result.exit_code == 2
    assert "'positive'" in result.output and "'question', 'answer'" in result.output
    result = _mine(folder, out, "--query-field", "question", "--positive-field", "answer")
    assert result.exit_code == 0, result.output
    rows = read_pair_rows(out)
    assert len(rows) == len(TOPICS)
    assert all(r.negatives and r.positive not in r.negatives for r in rows)
    assert rows[0].dataset == "hf"


def test_clear_errors(tmp_path, pairs):
    result = _mine(tmp_path / "nope.jsonl", tmp_path / "out.jsonl")
    assert result.exit_code == 2 and "error:" in result.output and "does not exist" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = _mine(empty, tmp_path / "out.jsonl")
    assert result.exit_code == 2 and "no usable rows" in result.output
    result = _mine(pairs, tmp_path / "out.jsonl", "--corpus", str(tmp_path / "missing.txt"))
    assert result.exit_code == 2 and "missing.txt" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a"}\n')
    result = _mine(bad, tmp_path / "out.jsonl")
    assert result.exit_code == 2 and "'positive'" in result.output
    result = runner.invoke(
        app, ["mine", "tiny:bert", str(pairs), "-o", str(tmp_path / "o.jsonl"), "--top-k", "30"]
    )
    assert result.exit_code == 2 and "--top-k" in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_extra_corpus_passages_become_negatives(tmp_path, pairs):
    extra = tmp_path / "extra.txt"
    extra.write_text("owls hunt at night\nsnow is frozen water\n" + TOPICS[0] + "\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app,
        [
            "mine",
            "tiny:bert",
            str(pairs),
            "-o",
            str(out),
            "--skip",
            "0",
            "--top-k",
            "20",
            "--corpus",
            str(extra),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_pair_rows(out)
    # every passage but the row's own positive: 12 positives + 2 new extras - 1
    assert all(len(r.negatives) == 13 and r.positive not in r.negatives for r in rows)
    assert "owls hunt at night" in rows[0].negatives
