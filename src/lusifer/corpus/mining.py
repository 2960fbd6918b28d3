"""Resumable hard-negative mining into a pair JSONL file (what ``lusifer mine`` runs; the
mining itself is :mod:`lusifer.data.mining`).

The output holds one row per input row, in input order, written chunk by chunk. Beside it,
``<output>.mine.json`` records the settings; rerunning on a partial output (a killed run)
keeps its complete lines, drops a torn last one and carries on; on a finished output it
does nothing; with other settings it refuses. While a run is unfinished the corpus
embeddings are kept in ``<output>.mine-corpus.npy`` so that a resumed run does not embed
the corpus again. Like :mod:`.shards`, a run's settings are compared with what the output
records (:func:`.shards.read_json`), and a refusal says what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import mining
from ..files import atomic_file, atomic_write
from .shards import read_json

SIDECAR_SUFFIX = ".mine.json"
CORPUS_CACHE_SUFFIX = ".mine-corpus.npy"
SIDECAR_FORMAT = "lusifer-mine/1"
# Settings that change the output: a resumed run must match them all.
COMPARED = (
    "format",
    "model",
    "input_rows",
    "input_digest",
    "corpus_size",
    "corpus_digest",
    "instruction",
    "skip",
    "top_k",
    "num_negatives",
    "max_length",
    "quantize",
)
_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet", ".csv", ".csv.gz")


class MiningError(ValueError):
    """The input cannot be read, or the output cannot be resumed as asked."""


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + SIDECAR_SUFFIX)


def corpus_cache_path(output: Path) -> Path:
    return output.with_name(output.name + CORPUS_CACHE_SUFFIX)


def load_pair_rows(
    input: str,
    query_field: str | None = None,
    positive_field: str | None = None,
    subset: str | None = None,
    split: str = "train",
    instruction: str | None = None,
) -> list:
    """The pair rows of ``input``: the project's pair JSONL, or a Hugging Face data set
    (hub id, ``save_to_disk`` folder, data file) read with the given columns."""
    from ..data.hub import load_hf_pairs
    from ..data.readers import DataFormatError, iter_pair_rows

    path = Path(input).expanduser()
    name = path.name.lower()
    looks_like_file = name.endswith(_DATA_SUFFIXES) or input.startswith((".", "/", "~"))
    if not path.exists() and looks_like_file:
        raise MiningError(f"input file {input} does not exist")
    fields = (query_field, positive_field, subset)
    pair_format = (
        path.is_file() and name.endswith((".jsonl", ".jsonl.gz")) and fields == (None,) * 3
    )
    try:
        if pair_format:
            rows = list(iter_pair_rows(path))
        else:
            kwargs: dict[str, Any] = {"name": subset} if subset else {}
            rows = load_hf_pairs(
                str(path) if path.exists() else input,
                split,
                query_field or "query",
                positive_field or "positive",
                instruction=instruction,
                **kwargs,
            )
    except DataFormatError:
        raise
    except (FileNotFoundError, KeyError, ValueError, OSError) as err:
        raise MiningError(f"cannot read {input}: {err}") from None
    except Exception as err:  # datasets raises its own kinds (hub, network, builder)
        raise MiningError(f"cannot load {input}: {type(err).__name__}: {err}") from None
    if not rows:
        raise MiningError(f"{input} has no usable rows (an empty data set)")
    return rows


def _texts_digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode("utf-8", "replace") + b"\n")
    return h.hexdigest()[:20]


def mining_settings(
    model: str,
    input: str,
    rows: Sequence[Any],
    corpus: mining.MiningCorpus,
    extra: list[str],
    corpus_file: Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """What the sidecar records: the model (an existing local path made absolute), the
    input and corpus with digests of their texts, and ``options`` (``instruction``,
    ``skip``, ``top_k``, ``num_negatives``, ``max_length``, ``quantize``)."""
    path = Path(model).expanduser()
    return {
        "format": SIDECAR_FORMAT,
        "model": str(path.resolve()) if path.exists() else model,
        "input": input,
        "input_rows": len(rows),
        "input_digest": mining.rows_digest(rows),
        "corpus_file": str(corpus_file) if corpus_file is not None else None,
        "corpus_size": len(corpus),
        "corpus_digest": _texts_digest(extra),
        **options,
    }


def complete_lines(output: Path) -> int:
    """The number of complete lines of ``output``; a torn last line (no newline, from a
    killed run) is cut off."""
    count, last_newline, size = 0, -1, 0
    with output.open("rb") as f:
        while chunk := f.read(1 << 20):
            n = chunk.count(b"\n")
            if n:
                count += n
                last_newline = size + chunk.rfind(b"\n")
            size += len(chunk)
    if last_newline + 1 != size:
        with output.open("r+b") as f:
            f.truncate(last_newline + 1)
    return count


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    for key in COMPARED:
        if old.get(key) == new.get(key):
            continue
        if key.endswith("_digest"):
            out.append(f"the {key.removesuffix('_digest')} texts changed")
        else:
            out.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return out


def resume_point(output: Path, settings: dict, *, overwrite: bool = False) -> int:
    """How many rows of ``output`` an earlier run with these ``settings`` wrote (0: start;
    ``settings["input_rows"]``: finished, and the corpus cache is removed); raises
    :class:`MiningError` when the output was made otherwise, unless ``overwrite``."""
    if overwrite or not output.exists() or not output.stat().st_size:
        return 0
    sidecar = sidecar_path(output)
    previous = read_json(sidecar)
    if previous is None:
        raise MiningError(
            f"{output} exists and has no readable {sidecar.name} (not made by lusifer "
            "mine); remove it, pick another --output, or pass --overwrite"
        )
    changed = _differences(previous, settings)
    if changed:
        raise MiningError(
            f"{output} was mined with different settings ({'; '.join(changed)}); rerun "
            "with the same ones to resume, or pass --overwrite to start again"
        )
    done, total = complete_lines(output), settings["input_rows"]
    if done > total:
        raise MiningError(f"{output} has {done} lines for {total} input rows; pass --overwrite")
    if done == total:
        corpus_cache_path(output).unlink(missing_ok=True)
    return done


@dataclass
class MiningReport:
    """What :func:`mine_to_file` did: rows written in this run, and how many of them got
    fewer negatives than asked (none, when ``num_negatives`` is not set)."""

    mined: int
    short: int


def _load_corpus_cache(path: Path, size: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        vectors = np.load(path)
    except (OSError, ValueError):
        return None
    return vectors if vectors.ndim == 2 and vectors.shape[0] == size else None


def _corpus_vectors(embedder, corpus, output: Path, settings: dict, same: bool, **embed):
    """The corpus embeddings: from the cache a killed run with the same settings left,
    else embedded now and cached until the run finishes."""
    cache = corpus_cache_path(output)
    vectors = _load_corpus_cache(cache, len(corpus)) if same else None
    if vectors is None:
        vectors = mining.embed_texts(
            embedder,
            corpus.texts,
            kind="document",
            instruction=settings["instruction"],
            max_length=settings["max_length"],
            **embed,
        )
        with atomic_file(cache) as tmp, open(tmp, "wb") as handle:
            np.save(handle, vectors)
    return vectors


def mine_to_file(
    embedder,
    rows: Sequence[Any],
    corpus: mining.MiningCorpus,
    output: Path,
    settings: dict,
    *,
    done: int = 0,
    overwrite: bool = False,
    batch_size: int = 32,
    chunk_size: int = 1024,
    device: str | None = None,
    show_progress: bool = False,
    log: Callable[[str], None] = print,
) -> MiningReport:
    """Mine ``rows[done:]`` with ``embedder`` as the retriever (``settings`` from
    :func:`mining_settings`, ``done`` from :func:`resume_point`) and append them to
    ``output``, chunk by chunk, each flushed to disk."""
    fingerprint = getattr(embedder, "fingerprint", None)
    settings = {
        **settings,
        "model_name": getattr(embedder, "name", settings["model"]),
        "model_fingerprint": fingerprint() if callable(fingerprint) else None,
    }
    previous = None if overwrite else read_json(sidecar_path(output))
    same = (
        previous is not None
        and not _differences(previous, settings)
        and previous.get("model_fingerprint") == settings["model_fingerprint"]
    )
    if done and not same:
        raise MiningError(
            f"{output} was mined with other weights under the name {settings['model']} (its "
            "fingerprint changed); pass --overwrite to start again"
        )
    atomic_write(sidecar_path(output), json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    if done == 0:
        output.write_bytes(b"")
    skip, top_k, wanted = settings["skip"], settings["top_k"], settings["num_negatives"]
    instruction = settings["instruction"]
    if len(corpus) <= skip:
        log(
            f"warning: the corpus has {len(corpus)} passages, no more than --skip "
            f"({skip}): no negatives will be found; add passages with --corpus or lower --skip"
        )
    if done:
        log(f"resuming {output}: {done} of {len(rows)} rows already written")
    common: dict[str, Any] = dict(batch_size=batch_size, device=device, show_progress=show_progress)
    vectors = _corpus_vectors(embedder, corpus, output, settings, same, **common)
    short = 0
    with output.open("ab") as out:
        for chunk in mining.mine_hard_negatives(
            embedder,
            rows,
            corpus=corpus,
            corpus_vectors=vectors,
            instruction=instruction,
            skip=skip,
            top_k=top_k,
            num_negatives=wanted,
            start=done,
            chunk_size=chunk_size,
            max_length=settings["max_length"],
            **common,
        ):
            lines = []
            for row in chunk:
                short += len(row.negatives) < (wanted or 1)
                record = row.to_dict()
                if instruction and not record.get("instruction"):
                    record["instruction"] = instruction
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            out.write("".join(lines).encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
    corpus_cache_path(output).unlink(missing_ok=True)
    return MiningReport(mined=len(rows) - done, short=short)
