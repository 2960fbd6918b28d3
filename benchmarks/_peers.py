"""What the peers_* benchmarks share: the machine line, mixed-language texts from every
bundled offline task, and the goal verdict."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from _machine import matmul_gflops

SUITE = Path(__file__).resolve().parents[1] / "src" / "lusifer" / "resources" / "offline_suite"
TEXT_KEYS = ("text", "sentence1", "sentence2")


def machine_line() -> str:
    """Cores this process may use, of how many, and a measured fp32 matmul GFLOP/s."""
    import platform

    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {usable} of {os.cpu_count()} cores usable (taskset), torch "
        f"{torch.get_num_threads()} thread(s), fp32 matmul {matmul_gflops():.0f} GFLOP/s, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def mixed_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct texts drawn from every task (all languages) of the bundled offline
    suite, shuffled."""
    texts: set[str] = set()
    for path in sorted(SUITE.glob("*/*.jsonl")):
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                texts.update(str(row[k]) for k in TEXT_KEYS if row.get(k))
    pool = sorted(texts)
    random.Random(seed).shuffle(pool)
    if len(pool) < n:
        raise SystemExit(f"the offline suite holds {len(pool)} distinct texts, asked for {n}")
    return pool[:n]


def verdict(value: float, op: str, goal: float) -> str:
    ok = value >= goal if op == ">=" else value <= goal
    return "PASS" if ok else "FAIL"
