"""Smaller copies of local task directories, for quick runs (the demo's --quick, smoke tests).

A sample keeps each task's layout, so it runs through the same loaders and evaluators.
Retrieval keeps every relevant document of the sampled queries plus a sample of the
others as distractors.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from ..files import atomic_folder
from .local_data import read_jsonl
from .local_tasks import read_task_spec


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _sample(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    if len(rows) <= n:
        return rows
    keep = sorted(rng.sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def sample_task_dir(source: Path, destination: Path, limit: int, *, seed: int = 0) -> Path:
    """Write a copy of task dir ``source`` with at most ``limit`` test items (queries,
    pairs, test rows; classification also keeps at most ``limit`` training rows)."""
    spec = read_task_spec(source)
    rng = random.Random(f"{seed}-{spec.name}")
    with atomic_folder(destination) as tmp:  # an existing copy is replaced whole
        shutil.copy(source / "task.json", tmp / "task.json")
        if spec.type == "retrieval":
            queries = _sample(read_jsonl(source / "queries.jsonl", {}), limit, rng)
            wanted = {q["_id"] for q in queries}
            lines = (source / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
            header, qrels = lines[0], [ln for ln in lines[1:] if ln.split("\t")[0] in wanted]
            relevant = {ln.split("\t")[1] for ln in qrels}
            corpus = read_jsonl(source / "corpus.jsonl", {})
            others = _sample([c for c in corpus if c["_id"] not in relevant], limit, rng)
            _write_jsonl(tmp / "queries.jsonl", queries)
            _write_jsonl(tmp / "corpus.jsonl", [c for c in corpus if c["_id"] in relevant] + others)
            (tmp / "qrels").mkdir()
            (tmp / "qrels" / "test.tsv").write_text(
                "\n".join([header, *qrels]) + "\n", encoding="utf-8"
            )
        else:
            for name in ("train.jsonl", "test.jsonl"):
                if (source / name).is_file():
                    _write_jsonl(tmp / name, _sample(read_jsonl(source / name, {}), limit, rng))
    return destination


def sample_task_dirs(sources: list[Path], folder: Path, limit: int, *, seed: int = 0) -> list[Path]:
    """Sample every task dir of ``sources`` into ``folder`` (kept when already there)."""
    out = []
    for source in sources:
        target = folder / source.name
        marker = target / ".sampled"
        expected = f"{limit}-{seed}"
        if not (marker.is_file() and marker.read_text() == expected):
            sample_task_dir(source, target, limit, seed=seed)
            marker.write_text(expected)
        out.append(target)
    return out
