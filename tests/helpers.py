"""Shared test helpers (not a test module): the tiny run config, the fake encoder, tiny
local task folders and the trained-weights randomiser. Fixtures live in ``conftest.py``
(``tiny_model_factory``, ``saved_tiny_model``)."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

#: the target architectures the tiny random backbones cover
TINY_TARGETS = ["bert", "llama", "mistral", "qwen2"]

#: a tiny LoRA for tiny backbones
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}

#: English (query, positive) pairs: the tiny training data
ENGLISH = [
    ("how do I install the package", "Run the installer and follow the steps on the screen."),
    ("what does the tool do", "It converts images between many common file formats."),
    ("which editor is small", "A small text editor for the terminal with syntax colours."),
    ("where are the fonts", "The fonts are stored in the shared data folder of the system."),
    ("a game about trains", "Build railway networks and deliver goods between the cities."),
    ("library for parsing", "This library parses configuration files and reports errors."),
    ("music player for the desktop", "Plays your music collection and manages the playlists."),
    ("backup tool with compression", "Creates compressed backups of your files on a schedule."),
]


def randomize_trained(model, seed: int = 0) -> None:
    """Give every trained tensor (connector, head, LoRA, learned tokens) random values,
    so tests see a model whose adapters actually do something (LoRA B starts at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("connector.", "head.")) or "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


# ------------------------------------------------------------------ the tiny run config


def write_pairs(path: Path, rows: Sequence[tuple[str, str]] = ENGLISH, repeat: int = 4) -> Path:
    """``rows`` as a training JSON-lines file (each ``repeat`` times, one instruction)."""
    with path.open("w") as f:
        for _ in range(repeat):
            for q, p in rows:
                f.write(
                    json.dumps({"query": q, "positive": p, "instruction": "Find the answer"}) + "\n"
                )
    return path


def tiny_run_config(tmp_path: Path, target: str = "llama", **sections: Mapping[str, Any]) -> dict:
    """A two-stage run on tiny random backbones (6 steps each, output in ``tmp_path/out``);
    ``sections`` update the config's sections key by key."""
    data = [{"path": str(write_pairs(tmp_path / "pairs.jsonl"))}]
    config: dict[str, Any] = {
        "model": {
            "encoder": "tiny:xlmr",
            "target": f"tiny:{target}",
            "encoder_lora": LORA,
            "target_lora": LORA,
        },
        "run": {
            "output_dir": str(tmp_path / "out"),
            "seed": 3,
            "save_every": 3,
            "log_every": 1,
            "max_length": 64,
        },
        "alignment": {
            "steps": 6,
            "batch_size": 4,
            "learning_rate": 3e-3,
            "objectives": {"lm": 1.0 if target != "bert" else 0.0, "distill": 1.0},
            "data": data,
        },
        "representation": {
            "steps": 6,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "train_target_lora": True,
            "data": data,
        },
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def write_run_config(tmp_path: Path, config: Mapping[str, Any], name: str = "run.yaml") -> Path:
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump(dict(config)))
    return path


# ------------------------------------------------------------------- the fake encoder


class Call(NamedTuple):
    texts: int
    instruction: str | None
    kind: str


def at_angle(degrees: float) -> list[float]:
    """The 2-d unit vector at ``degrees``: cosines between such vectors are known exactly."""
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


class FakeEmbedder:
    """A numpy stand-in for an embedding model (the ``TextEmbedder.encode`` contract).

    A text's vector: ``vectors[text]`` (stripped text too) when given; else the vector of
    its group (texts of one of ``groups`` share a random vector); else one hashed from
    (``name``, text). Rows are unit length. Every call is kept in ``calls``.

    ``fingerprint``: a version string that makes the model cacheable (change ``version``
    to change it); ``uses_instructions`` set only when given; ``delay`` seconds slept per
    call and ``per_text`` per text; ``error`` raised by encode; ``blocking``: encode waits
    for ``release`` (and sets ``entered``), so a test knows exactly where the model is.
    """

    def __init__(
        self,
        name: str = "fake",
        groups: Iterable[Iterable[str]] = (),
        dim: int = 32,
        *,
        vectors: Mapping[str, Sequence[float]] | None = None,
        fingerprint: str | None = None,
        uses_instructions: bool | None = None,
        delay: float = 0.0,
        per_text: float = 0.0,
        error: Exception | None = None,
        blocking: bool = False,
    ) -> None:
        self.name = name
        self.table: dict[str, np.ndarray] = {}
        rng = np.random.default_rng(123)
        for group in groups:
            vector = rng.normal(size=dim)
            for text in group:
                self.table[text] = vector
        for text, vector in (vectors or {}).items():
            self.table[text] = np.asarray(vector, dtype=np.float64)
            dim = len(vector)
        self.dim = self.embedding_size = dim
        if fingerprint is not None:
            self.version = fingerprint
            self.fingerprint = lambda: self.version
        if uses_instructions is not None:
            self.uses_instructions = uses_instructions
        self.delay, self.per_text, self.error = delay, per_text, error
        self.blocking = blocking
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls: list[Call] = []

    def vector(self, text: str) -> np.ndarray:
        vector = self.table.get(text)
        if vector is None:
            vector = self.table.get(text.strip())
        if vector is None:
            seed = int(hashlib.md5(f"{self.name}|{text}".encode()).hexdigest()[:8], 16)
            vector = np.random.default_rng(seed).normal(size=self.dim)
        return vector / np.linalg.norm(vector)

    def encode(self, texts, *, instruction=None, kind="query", **kwargs) -> np.ndarray:
        self.calls.append(Call(len(texts), instruction, kind))
        if self.blocking:
            self.entered.set()
            assert self.release.wait(30), "the test never released the model"
        if self.error is not None:
            raise self.error
        if self.delay or self.per_text:
            time.sleep(self.delay + self.per_text * len(texts))
        return np.asarray([self.vector(t) for t in texts], dtype=np.float32).reshape(
            len(texts), self.dim
        )


# ------------------------------------------------------------------ tiny local tasks

TASK_ROWS = 30


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_task_dirs(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """One tiny task dir per type; returns the dirs and the pairs a perfect encoder must match."""
    n = TASK_ROWS
    groups: list[tuple[str, str]] = []
    dirs = []

    def task(name, **meta):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "task.json").write_text(
            json.dumps({"name": name, **meta, "source": "test", "license": "cc0-1.0"})
        )
        dirs.append(d)
        return d

    d = task(
        "TinyBitext",
        type="bitext",
        languages=["en", "fr"],
        instruction="Retrieve the French translation",
    )
    pairs = [(f"english sentence number {i}", f"phrase francaise numero {i}") for i in range(n)]
    write_jsonl(
        d / "test.jsonl", [{"sentence1": a, "sentence2": b, "source": "x"} for a, b in pairs]
    )
    groups += pairs

    d = task("TinyRetrieval", type="retrieval", languages=["en"])
    write_jsonl(
        d / "corpus.jsonl",
        [{"_id": f"d{i}", "title": "", "text": f"document {i}"} for i in range(n)],
    )
    write_jsonl(d / "queries.jsonl", [{"_id": f"q{i}", "text": f"question {i}"} for i in range(n)])
    (d / "qrels").mkdir(exist_ok=True)
    (d / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(n))
    )
    groups += [(f"question {i}", f"document {i}") for i in range(n)]

    d = task("TinyReranking", type="reranking", languages=["en"])
    write_jsonl(
        d / "test.jsonl",
        [
            {
                "query": f"rq {i}",
                "positive": [f"rp {i}"],
                "negative": [f"rn {i} {j}" for j in range(4)],
            }
            for i in range(n)
        ],
    )
    groups += [(f"rq {i}", f"rp {i}") for i in range(n)]

    d = task("TinySTS", type="sts", languages=["fr"])
    write_jsonl(
        d / "test.jsonl",
        [{"sentence1": f"a {i}", "sentence2": f"b {i}", "score": i % 5} for i in range(n)],
    )

    d = task("TinyClassification", type="classification", languages=["fr"])
    write_jsonl(
        d / "train.jsonl", [{"text": f"train {i}", "label": "abc"[i % 3]} for i in range(45)]
    )
    write_jsonl(d / "test.jsonl", [{"text": f"test {i}", "label": "abc"[i % 3]} for i in range(n)])

    d = task("TinyClustering", type="clustering", languages=["fr"])
    write_jsonl(d / "test.jsonl", [{"text": f"item {i}", "label": i % 3} for i in range(n)])
    return dirs, groups


def run_torchrun(script: Path, nproc: int, *args: object, timeout: int = 500):
    """``torchrun --standalone`` (a free rendezvous port, so overlapping runs do not
    collide) of ``script`` on ``nproc`` CPU processes; fails the test on a non-zero exit."""
    import os
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", str(nproc), "--standalone", str(script)]
    # a rank that aborts (SIGABRT from native code) prints every Python thread's stack
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )
    fatal = proc.stderr.find("Fatal Python error")  # an aborted rank's stacks, then the tail
    head = proc.stderr[fatal : fatal + 2000] + "\n...\n" if fatal >= 0 else ""
    assert proc.returncode == 0, head + proc.stderr[-3000:]
    return proc
