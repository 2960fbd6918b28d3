"""The texts kept out of every task: the bundled English training data, and WordNet (the
training data's source)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from .common import ExcludedTexts, text_key


def training_strings(path: Path) -> Iterator[str]:
    """Every string field of the bundled training data (the fields a model may read)."""

    def walk(value) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from walk(v)
        elif isinstance(value, list):
            for v in value:
                yield from walk(v)

    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield from walk(json.loads(line))


def load_training_texts(path: Path) -> set[str]:
    """Every string field (20+ characters) of the bundled training data, normalised."""
    return {text_key(value) for value in training_strings(path) if len(value) >= 20}


def wordnet_strings(root: Path) -> Iterator[str]:
    """Lemmas, definitions and example sentences of WordNet (the training data's source)."""
    for part in ("noun", "verb", "adj", "adv"):
        path = root / "usr/share/wordnet" / f"data.{part}"
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  "):  # licence header
                continue
            fields, _, gloss = line.partition(" | ")
            cols = fields.split()
            n_words = int(cols[3], 16)
            yield from (w.replace("_", " ") for w in cols[4 : 4 + 2 * n_words : 2])
            yield from (g.strip().strip('"') for g in gloss.split(";") if g.strip())


def wordnet_texts(root: Path) -> set[str]:
    """Lemmas, definitions and example sentences of WordNet (the other training source).

    Excluded wholesale so that a later, larger training sample cannot collide with the
    suite (country names in iso-codes catalogs are also WordNet lemmas, for instance).
    """
    return {t for t in map(text_key, wordnet_strings(root)) if len(t) >= 10}


def excluded_texts(wordnet_root: Path, training_file: Path | None = None) -> ExcludedTexts:
    """WordNet's texts, and those of ``training_file`` (the bundled training data) if given."""
    groups = [wordnet_texts(wordnet_root)]
    if training_file is not None:
        groups.append(load_training_texts(training_file))
    return ExcludedTexts.union(*groups)
