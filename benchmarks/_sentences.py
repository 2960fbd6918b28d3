"""Mixed-language, mixed-length sentences from the bundled offline suite (XlingRetrieval)."""

from __future__ import annotations

import json
import random
from pathlib import Path

SUITE = Path(__file__).resolve().parents[1] / "src" / "lusifer" / "resources" / "offline_suite"


def load_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` texts from every XlingRetrieval task's queries and corpus, shuffled (repeated
    if the suite holds fewer)."""
    texts: list[str] = []
    for task in sorted(SUITE.glob("XlingRetrieval.*")):
        for name in ("queries.jsonl", "corpus.jsonl"):
            with (task / name).open(encoding="utf-8") as f:
                texts.extend(json.loads(line)["text"] for line in f if line.strip())
    if not texts:
        raise SystemExit(f"no XlingRetrieval texts under {SUITE}")
    rng = random.Random(seed)
    rng.shuffle(texts)
    return [texts[i % len(texts)] for i in range(n)]
