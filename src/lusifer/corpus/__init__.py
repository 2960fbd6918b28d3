"""Corpus-scale encoding and search.

- :mod:`.streaming`: read ``.txt`` / ``.jsonl`` / ``.parquet`` files or a folder of them
  one record at a time (:func:`stream_records`, :func:`scan_input`).
- :mod:`.encode`: :func:`encode_corpus` writes resumable shards and a manifest, across
  processes (torchrun, accelerate launch); :mod:`.shards`: the shard format,
  :func:`load_manifest` reads it back.
- :mod:`.search`: :func:`search` finds the top-k rows for queries, shard by shard.
- :mod:`.mining`: resumable hard-negative mining into a pair JSONL (``lusifer mine``).
"""

from .encode import encode_corpus
from .search import Hit, search, search_vectors
from .shards import (
    CorpusError,
    EncodeReport,
    EncodeSettings,
    load_manifest,
    shard_rows,
    shard_vectors,
)
from .streaming import BadLine, CorpusInputError, Record, scan_input, stream_records

__all__ = [
    "BadLine",
    "CorpusError",
    "CorpusInputError",
    "EncodeReport",
    "EncodeSettings",
    "Hit",
    "Record",
    "encode_corpus",
    "load_manifest",
    "scan_input",
    "search",
    "search_vectors",
    "shard_rows",
    "shard_vectors",
    "stream_records",
]
