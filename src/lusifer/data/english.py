"""The bundled English training set (Debian package descriptions, WordNet 3.0, LibreOffice help).

Built by ``scripts/build_english_data.py``; row counts and licences are in
``lusifer/resources/data/README.md``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from importlib.resources import files
from pathlib import Path

from lusifer.data.readers import PairRow, iter_pair_rows

__all__ = ["BUNDLED_DATASETS", "bundled_english_path", "load_bundled_english"]

BUNDLED_FILE = "english_train.jsonl.gz"
BUNDLED_DATASETS = (
    "debian-descriptions",
    "libreoffice-help",
    "wordnet-definitions",
    "wordnet-examples",
)


def bundled_english_path() -> Path:
    """Path of the bundled ``english_train.jsonl.gz`` (package data, works when installed)."""
    resource = files("lusifer").joinpath("resources", "data", BUNDLED_FILE)
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled English data not found at {path}; the lusifer install is incomplete "
            "(reinstall it, or rebuild the file with scripts/build_english_data.py)"
        )
    return path


def load_bundled_english(
    datasets: list[str] | None = None,
    limit_per_dataset: int | None = None,
    seed: int = 0,
) -> list[PairRow]:
    """Rows of the bundled English training set.

    Args:
        datasets: which of :data:`BUNDLED_DATASETS` to load (all by default).
        limit_per_dataset: keep at most this many rows per data set, a seeded random
            sample (rows keep their file order).
        seed: sampling seed.
    """
    wanted = list(BUNDLED_DATASETS) if datasets is None else list(datasets)
    unknown = sorted(set(wanted) - set(BUNDLED_DATASETS))
    if unknown:
        raise ValueError(
            f"unknown bundled data set(s) {unknown}; available: {list(BUNDLED_DATASETS)}"
        )
    by_dataset: dict[str, list[PairRow]] = defaultdict(list)
    for row in iter_pair_rows(bundled_english_path()):
        if row.dataset in wanted:
            by_dataset[row.dataset].append(row)

    out: list[PairRow] = []
    for name in wanted:
        rows = by_dataset[name]
        if limit_per_dataset is not None and len(rows) > limit_per_dataset:
            keep = sorted(
                random.Random(f"{seed}:{name}").sample(range(len(rows)), limit_per_dataset)
            )
            rows = [rows[i] for i in keep]
        out.extend(rows)
    return out
