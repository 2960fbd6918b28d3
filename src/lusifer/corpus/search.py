"""Exact top-k search over an encoded corpus folder (see :mod:`lusifer.corpus.shards`).

Shards are read one at a time (npy shards memory-mapped, in blocks of rows), scored
against the queries (engine "faiss", auto's choice when faiss is installed: FAISS's brute-force
inner-product ``knn`` per block; engine "numpy": torch's matrix product and top-k), and the
per-block top-k merged, so memory does not grow with the corpus. Scores are inner
products: cosines for a normalised corpus.

:func:`search` (and ``lusifer search``) go through the folder's approximate index
(:mod:`.index`, ``lusifer index``) when it has a fresh one, unless ``exact``.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from .shards import CorpusError, load_manifest, shard_rows, shard_vectors

BLOCK_ROWS = 16_384
Engine = Literal["auto", "numpy", "faiss"]
ENGINES: tuple[str, ...] = get_args(Engine)


@dataclass(frozen=True)
class Hit:
    """One result: the row's ``id``, its ``score``, its ``text`` when known, and where
    it is stored (``shard``, ``row``)."""

    id: str
    score: float
    text: str | None
    shard: int
    row: int


def _faiss():
    try:
        return importlib.import_module("faiss")
    except ImportError:
        return None


def search_vectors(
    outdir: str | Path,
    queries: np.ndarray,
    k: int = 10,
    *,
    engine: str = "auto",
    manifest: dict | None = None,
) -> list[list[tuple[float, int, int]]]:
    """Exact top-``k`` of ``queries`` [q, dim] over every shard of ``outdir``: per query,
    ``(score, shard, row)`` best first."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    # auto: faiss when installed (its blocked product and top-k heaps beat torch's product
    # + topk by 1.26x at 1M rows x 1,000 queries: benchmarks/peers_search.py)
    faiss = _faiss() if engine in ("auto", "faiss") else None
    if engine == "faiss" and faiss is None:
        raise CorpusError("engine 'faiss' needs faiss: pip install faiss-cpu (or use numpy)")
    manifest = manifest or load_manifest(outdir)
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != manifest["dimension"]:
        raise CorpusError(
            f"the queries have {queries.shape[1]} dimensions, the corpus {manifest['dimension']}: "
            "encode them with the model that encoded the corpus"
        )
    n_q = queries.shape[0]
    best_scores = np.full((n_q, 0), -np.inf, np.float32)
    best_locs = np.zeros((n_q, 0, 2), np.int64)
    for entry in manifest["shards"]:
        index = entry["index"]
        vectors = shard_vectors(outdir, manifest, index)
        if vectors.shape[0] != entry["rows"]:
            raise CorpusError(
                f"shard {index} of {outdir} holds {vectors.shape[0]} rows, its manifest says "
                f"{entry['rows']}; rerun the `lusifer encode` command that made it"
            )
        for start in range(0, vectors.shape[0], BLOCK_ROWS):
            block = np.asarray(vectors[start : start + BLOCK_ROWS])
            top_scores, top_rows = _block_top(queries, block, k, faiss)
            rows = np.where(top_rows >= 0, top_rows.astype(np.int64) + start, -1)
            locs = np.stack([np.full(rows.shape, index, np.int64), rows], axis=-1)
            best_scores, best_locs = _merge(best_scores, best_locs, top_scores, locs, k)
        del vectors
    return [
        [
            (float(s), int(loc[0]), int(loc[1]))
            for s, loc in zip(best_scores[q], best_locs[q], strict=True)
            if loc[1] >= 0
        ]
        for q in range(n_q)
    ]


def _block_top(queries: np.ndarray, block: np.ndarray, k: int, faiss) -> tuple:
    """The best ``min(k, rows)`` scores [q, kk] and rows [q, kk] of one block (-1 rows for
    faiss's missing results)."""
    kk = min(k, block.shape[0])
    import torch

    if faiss is not None:  # brute force, blocked product and top-k heaps, no index built
        if block.dtype != np.float32:
            with warnings.catch_warnings():  # a read-only memory map, read and never written
                warnings.simplefilter("ignore", UserWarning)
                block = torch.from_numpy(block).float().numpy()  # faster cast than numpy's
        block = np.ascontiguousarray(block, dtype=np.float32)
        return faiss.knn(queries, block, kk, metric=faiss.METRIC_INNER_PRODUCT)

    # the block cast to fp32 (a writable copy of the memory-mapped rows), one matrix
    # product and torch's top-k: one pass each
    scores = torch.from_numpy(queries) @ torch.from_numpy(block.astype(np.float32)).T
    top = torch.topk(scores, kk, dim=1, sorted=False)
    return top.values.numpy(), top.indices.numpy()


def _merge(best_s, best_l, new_s, new_l, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of two candidate sets per query (score desc, then shard, row asc;
    missing results, row -1, last)."""
    scores = np.concatenate([best_s, new_s.astype(np.float32)], axis=1)
    locs = np.concatenate([best_l, new_l], axis=1)
    scores = np.where(locs[..., 1] < 0, -np.inf, scores)
    order = np.lexsort((locs[..., 1], locs[..., 0], -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(locs, order[..., None], 1)


def search_corpus(
    outdir: str | Path,
    queries: np.ndarray,
    k: int = 10,
    *,
    engine: str = "auto",
    manifest: dict | None = None,
    exact: bool = False,
) -> tuple[list[list[tuple[float, int, int]]], str | None]:
    """Top-``k`` through the folder's approximate index when it has a fresh one (and not
    ``exact``), else exact (:func:`search_vectors`); returns the results and a warning
    when a stale index (from another encoding of the folder) was passed over."""
    from .index import index_state, search_index

    manifest = manifest or load_manifest(outdir)
    if not exact:
        state, _ = index_state(outdir)
        if state == "fresh" and _faiss() is not None:
            return search_index(outdir, queries, k, manifest=manifest), None
        if state == "stale":
            warning = (
                f"the approximate index of {outdir} was built from another encoding of it: "
                f"searching exactly (rerun `lusifer index {outdir}` to rebuild it)"
            )
            return search_vectors(outdir, queries, k, engine=engine, manifest=manifest), warning
    return search_vectors(outdir, queries, k, engine=engine, manifest=manifest), None


def _texts_for(path: str | Path, wanted: set[str]) -> dict[str, str]:
    from .streaming import stream_records

    found: dict[str, str] = {}
    for record in stream_records(path, skip_bad_lines=True):
        if record.id in wanted and record.id not in found:
            found[record.id] = record.text
            if len(found) == len(wanted):
                break
    return found


def resolve_hits(
    outdir: str | Path,
    manifest: dict,
    results: list[list[tuple[float, int, int]]],
    *,
    texts: str | Path | None = None,
) -> list[list[Hit]]:
    """Turn ``(score, shard, row)`` into :class:`Hit` (reading only the shards hit), with
    texts from the shards (``store_text``) or from ``texts``, the encoded input."""
    needed: dict[int, set[int]] = {}
    for hits in results:
        for _, shard, row in hits:
            needed.setdefault(shard, set()).add(row)
    rows: dict[tuple[int, int], dict] = {}
    for shard, wanted in needed.items():
        for row, data in enumerate(shard_rows(outdir, manifest, shard)):
            if row in wanted:
                rows[(shard, row)] = data
    extra: dict[str, str] = {}
    if texts is not None:
        extra = _texts_for(texts, {str(data["id"]) for data in rows.values()})
    out = []
    for hits in results:
        out.append(
            [
                Hit(
                    id=str(rows[(shard, row)]["id"]),
                    score=score,
                    text=rows[(shard, row)].get("text") or extra.get(str(rows[(shard, row)]["id"])),
                    shard=shard,
                    row=row,
                )
                for score, shard, row in hits
            ]
        )
    return out


def search(
    outdir: str | Path,
    queries: str | Sequence[str],
    k: int = 10,
    *,
    model=None,
    instruction: str | None = None,
    texts: str | Path | None = None,
    engine: str = "auto",
    backend: str = "torch",
    batch_size: int = 32,
    device: str | None = None,
    exact: bool = False,
) -> list[Hit] | list[list[Hit]]:
    """Search the encoded corpus in ``outdir`` for ``queries`` (a string gives one list
    of hits, a list one list per query), best first.

    ``model`` is an embedder object or a reference (as ``lusifer encode`` takes it);
    default: the model the manifest names. Queries are encoded as ``kind="query"`` with
    ``instruction`` (default: the corpus's instruction) and the corpus's normalisation.
    ``texts`` is the encoded input file or folder, read to show the hits' texts when the
    shards do not store them. ``device`` is where the queries are encoded (a model loaded
    here: :func:`lusifer.load`'s automatic choice when None). The folder's approximate
    index (``lusifer index``) is used when it is fresh, unless ``exact``."""
    manifest = load_manifest(outdir)
    single = isinstance(queries, str)
    query_list = [queries] if single else list(queries)
    embedder = model
    if embedder is None or isinstance(embedder, str | Path):
        from ..loading import load

        reference = str(embedder) if embedder is not None else manifest["model"]["reference"]
        embedder = load(reference, backend=backend, device=device)
        device = None  # placed by the loader
    warning = fingerprint_warning(embedder, manifest)
    if warning:
        warnings.warn(warning, stacklevel=2)
    if instruction is None:
        instruction = manifest.get("instruction")
    vectors = embedder.encode(
        query_list,
        instruction=instruction,
        kind="query",
        batch_size=batch_size,
        max_length=manifest.get("max_length"),
        normalize=bool(manifest.get("normalized", True)),
        device=device,
    )
    results, stale = search_corpus(
        outdir, np.asarray(vectors), k, engine=engine, manifest=manifest, exact=exact
    )
    if stale:
        warnings.warn(stale, stacklevel=2)
    hits = resolve_hits(outdir, manifest, results, texts=texts)
    return hits[0] if single else hits


def fingerprint_warning(embedder, manifest: dict) -> str | None:
    """A warning when ``embedder`` is not the model that encoded the corpus."""
    expected = manifest.get("model", {}).get("fingerprint")
    got = embedder.fingerprint() if hasattr(embedder, "fingerprint") else None
    if expected and got and expected != got:
        return (
            f"the query model ({getattr(embedder, 'name', '?')}) is not the model that encoded "
            f"the corpus ({manifest['model']['reference']}, fingerprint {expected}); scores "
            "compare vectors from different spaces"
        )
    return None
