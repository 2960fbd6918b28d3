"""Hard-negative mining for stage-2 (contrastive) pair data.

The paper mines its hard negatives with an English retriever: take each query's top 128
passages and skip the first 30 (the likeliest false negatives), i.e. ranks 31..128.
Here any embedder ``lusifer encode`` accepts plays the retriever:

- the corpus is every distinct positive of the data (all positives of a row when it has
  several), plus optional extra passages; passages are deduplicated on their text with
  surrounding whitespace stripped, so an exact duplicate of a positive is that positive;
- queries are embedded as queries and the corpus as documents (cosine similarity, exact
  search in blocks, no index);
- a row's window is ranks ``skip + 1 .. top_k`` of the full ranked corpus (1-based;
  ``top_k`` is the search depth, skipped ranks included, as in the paper's "top-128,
  skipping the first 30" and FlagEmbedding's ``range_for_sampling``). Ranks count every
  passage, the row's own positives included;
- from the window the row's own positives are dropped, and so are the positives of every
  other row with the same query text (flattened data such as MS MARCO repeats a query
  once per positive) and the query text itself; the first ``num_negatives`` left (all
  when None), most similar first, become the row's ``negatives``.

:func:`mine_hard_negatives` yields the mined rows chunk by chunk, so a caller can write
them as they finish (``lusifer mine`` does, resumably).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .readers import PairRow

__all__ = [
    "MiningCorpus",
    "build_corpus",
    "embed_texts",
    "exclusions",
    "mine_hard_negatives",
    "rank_window",
    "row_positives",
    "rows_digest",
    "select_negatives",
    "validate_window",
]

# Scores of a query chunk against a corpus block are computed this many at a time
# (64 Mi float32 = 256 MiB) before the running top-k is merged.
_SCORE_BLOCK_ELEMENTS = 1 << 26


def row_positives(row: Any) -> list[str]:
    """All positives of a pair row (``row.positives`` when the reader gives several)."""
    positives = getattr(row, "positives", None)
    return list(positives) if positives else [row.positive]


def _key(text: str) -> str:
    return text.strip()


@dataclass
class MiningCorpus:
    """Distinct passages to mine from, and the index of each (stripped) text."""

    texts: list[str]
    index: dict[str, int]

    def __len__(self) -> int:
        return len(self.texts)

    def find(self, text: str) -> int | None:
        return self.index.get(_key(text))


def build_corpus(rows: Iterable[Any], extra: Iterable[str] = ()) -> MiningCorpus:
    """The distinct positives of ``rows`` (in row order), then the distinct ``extra``
    passages not already there; empty texts are left out."""
    texts: list[str] = []
    index: dict[str, int] = {}

    def add(text: str) -> None:
        key = _key(text)
        if key and key not in index:
            index[key] = len(texts)
            texts.append(text)

    for row in rows:
        for positive in row_positives(row):
            add(positive)
    for text in extra:
        add(text)
    return MiningCorpus(texts, index)


def exclusions(rows: Sequence[Any], corpus: MiningCorpus) -> list[set[int]]:
    """Per row, the corpus ids that must not become its negatives: the positives of every
    row with the same query text, and the query text itself when it is a passage."""
    by_query: dict[str, set[int]] = {}
    for row in rows:
        ids = by_query.setdefault(_key(row.query), set())
        ids.update(i for p in row_positives(row) if (i := corpus.find(p)) is not None)
    out = []
    for row in rows:
        ids = set(by_query[_key(row.query)])
        if (own := corpus.find(row.query)) is not None:
            ids.add(own)
        out.append(ids)
    return out


def validate_window(skip: int, top_k: int, num_negatives: int | None) -> None:
    """Refuse a window that cannot hold a negative."""
    if skip < 0:
        raise ValueError(f"skip must be >= 0, got {skip}")
    if top_k <= skip:
        raise ValueError(
            f"top_k ({top_k}) must be larger than skip ({skip}): the window is ranks skip+1..top_k"
        )
    if num_negatives is not None and num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1 (or None for all), got {num_negatives}")


def rank_window(
    queries: np.ndarray | torch.Tensor,
    corpus: np.ndarray | torch.Tensor,
    *,
    skip: int,
    top_k: int,
    device: str | torch.device | None = None,
    normalized: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Corpus ids and cosine scores at ranks ``skip + 1 .. top_k`` for each query.

    Exact search: the vectors are L2-normalised (unless ``normalized`` says they are),
    scored in blocks and the running top ``top_k`` merged. Returns (ids, scores), each [n_queries, min(top_k, N) - skip]
    (empty when the corpus has no more than ``skip`` passages), most similar first;
    equal scores are ordered by corpus id.
    """
    q = torch.as_tensor(queries, dtype=torch.float32, device=device)
    d = torch.as_tensor(corpus, dtype=torch.float32, device=device)
    if not normalized:
        q = torch.nn.functional.normalize(q, dim=-1)
        d = torch.nn.functional.normalize(d, dim=-1)
    n_q, n_d = q.shape[0], d.shape[0]
    k = min(top_k, n_d)
    if n_q == 0 or k <= skip:
        empty = np.zeros((n_q, 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    block = max(1, _SCORE_BLOCK_ELEMENTS // max(1, n_q))
    best_scores = torch.empty(n_q, 0, device=q.device)
    best_ids = torch.empty(n_q, 0, dtype=torch.long, device=q.device)
    with torch.inference_mode():
        for start in range(0, n_d, block):
            scores = q @ d[start : start + block].T
            ids = torch.arange(start, start + scores.shape[1], device=q.device).expand(n_q, -1)
            scores = torch.cat([best_scores, scores], dim=1)
            ids = torch.cat([best_ids, ids], dim=1)
            if scores.shape[1] > k:
                scores, pick = torch.topk(scores, k, dim=1)
                ids = torch.gather(ids, 1, pick)
            best_scores, best_ids = scores, ids
    scores_np = best_scores.cpu().numpy()
    ids_np = best_ids.cpu().numpy()
    order = np.lexsort((ids_np, -scores_np), axis=-1)
    ids_np = np.take_along_axis(ids_np, order, axis=1)
    scores_np = np.take_along_axis(scores_np, order, axis=1)
    return ids_np[:, skip:k], scores_np[:, skip:k]


def select_negatives(
    window: Iterable[int], excluded: set[int], num_negatives: int | None
) -> list[int]:
    """The first ``num_negatives`` ids of ``window`` (all when None) not in ``excluded``."""
    kept = [int(i) for i in window if int(i) not in excluded]
    return kept if num_negatives is None else kept[:num_negatives]


def embed_texts(
    embedder: Any,
    texts: list[str],
    *,
    kind: str,
    instruction: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    device: str | torch.device | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """``embedder.encode`` (the :class:`~lusifer.types.TextEmbedder` protocol) as float32
    L2-normalised rows; ``max_length`` / ``device`` are passed only when set."""
    kwargs: dict[str, Any] = {}
    if max_length is not None:
        kwargs["max_length"] = max_length
    if device is not None:
        kwargs["device"] = device
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = embedder.encode(
        texts,
        instruction=instruction,
        kind=kind,
        batch_size=batch_size,
        normalize=True,
        show_progress=show_progress,
        **kwargs,
    )
    return np.asarray(vectors, dtype=np.float32)


def rows_digest(rows: Iterable[Any]) -> str:
    """A digest of what mining reads from the rows (queries, positives, instructions,
    data set names, in order): a resumed run must see the same rows."""
    h = hashlib.sha256()
    for row in rows:
        item = [row.query, row_positives(row), row.instruction, getattr(row, "dataset", "")]
        h.update(json.dumps(item, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:20]


def mine_hard_negatives(
    embedder: Any,
    rows: Sequence[PairRow],
    *,
    corpus: MiningCorpus | None = None,
    corpus_vectors: np.ndarray | None = None,
    instruction: str | None = None,
    skip: int = 30,
    top_k: int = 128,
    num_negatives: int | None = None,
    start: int = 0,
    chunk_size: int = 1024,
    batch_size: int = 32,
    max_length: int | None = None,
    device: str | torch.device | None = None,
    show_progress: bool = False,
) -> Iterator[list[PairRow]]:
    """Mine hard negatives for ``rows[start:]`` with ``embedder`` as the retriever.

    Yields lists of rows (copies with ``negatives`` replaced by the mined passages, most
    similar first), in input order, one list per chunk of queries. Chunks are aligned to
    multiples of ``chunk_size`` so a resumed run batches the queries it has left as an
    uninterrupted run does. ``corpus`` defaults to :func:`build_corpus` over ``rows``;
    ``corpus_vectors`` (its document embeddings, e.g. cached by a previous run) skips
    embedding it. ``instruction`` is the retriever's task instruction (None: bare text).
    See the module docstring for the window and what is dropped from it.
    """
    validate_window(skip, top_k, num_negatives)
    if chunk_size < 1 or not 0 <= start <= len(rows):
        raise ValueError(
            f"chunk_size must be >= 1 and start in 0..{len(rows)}, got {chunk_size} and {start}"
        )
    if start == len(rows):
        return
    corpus = corpus if corpus is not None else build_corpus(rows)
    embed = functools.partial(
        embed_texts, embedder, instruction=instruction, batch_size=batch_size, max_length=max_length
    )
    if corpus_vectors is None:
        corpus_vectors = embed(
            corpus.texts, kind="document", device=device, show_progress=show_progress
        )
    if corpus_vectors.shape[0] != len(corpus):
        raise ValueError(
            f"corpus_vectors has {corpus_vectors.shape[0]} rows for {len(corpus)} passages"
        )
    if device is None:  # the encoder's own device (where lusifer.load placed it)
        from ..loading import embedder_device

        device = embedder_device(embedder)
    search_device = device if device is not None and str(device).startswith("cuda") else None

    def unit_rows(vectors: np.ndarray) -> torch.Tensor:
        tensor = torch.as_tensor(vectors, dtype=torch.float32, device=search_device)
        return torch.nn.functional.normalize(tensor, dim=-1)

    corpus_tensor = unit_rows(corpus_vectors)
    excluded = exclusions(rows, corpus)
    bar = tqdm(
        total=len(rows), initial=start, desc="Mining", unit="query", disable=not show_progress
    )
    try:
        position = start
        while position < len(rows):
            end = min(len(rows), (position // chunk_size + 1) * chunk_size)
            chunk = rows[position:end]
            query_vectors = embed([row.query for row in chunk], kind="query", device=device)
            ids, _ = rank_window(
                unit_rows(query_vectors), corpus_tensor, skip=skip, top_k=top_k, normalized=True
            )
            mined = []
            for offset, row in enumerate(chunk):
                picked = select_negatives(ids[offset], excluded[position + offset], num_negatives)
                mined.append(dataclasses.replace(row, negatives=[corpus.texts[i] for i in picked]))
            yield mined
            bar.update(len(chunk))
            position = end
    finally:
        bar.close()
