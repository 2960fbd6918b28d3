"""An approximate nearest-neighbour index over an encoded corpus folder (``lusifer index``).

The index is a faiss inverted file (IVF: ``nlist`` k-means cells, vectors kept as fp16,
inner product; a query scans the ``nprobe`` cells nearest to it), chosen by measurement
over faiss HNSW and usearch HNSW: on one core it builds several times faster than either
and reached a higher recall at the same speed (``benchmarks/peers_search.py``,
docs/research/benchmarks.md). It lives in ``DIR/ann-index/`` beside ``manifest.json``: ``index.faiss``
and ``index.json``, written together atomically (:func:`lusifer.files.atomic_folder`).
``index.json`` holds the digest of the manifest it was built from (a hash of
``manifest.json``, whose shard records carry each file's sha256), so an index left by an
earlier encoding of the folder is refused by :func:`load_index` (search falls back to
exact, with a warning) and rebuilt by :func:`build_index`.

Rows are numbered across shards in manifest order; :func:`search_index` maps the ids
faiss returns back to ``(score, shard, row)`` as :func:`.search.search_vectors` does.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..files import atomic_folder
from .shards import MANIFEST_FILE, CorpusError, load_manifest, shard_vectors

INDEX_DIR = "ann-index"
INDEX_FILE = "index.faiss"
INDEX_META = "index.json"
INDEX_VERSION = 1
ADD_ROWS = 65_536
DEFAULT_NPROBE = 32
TRAIN_PER_CELL = 39  # faiss's k-means warns below 39 training points a cell
KMEANS_ITERATIONS = 10


@dataclass
class IndexInfo:
    """What ``index.json`` records about an index."""

    manifest_digest: str
    rows: int
    dimension: int
    nlist: int
    nprobe: int = DEFAULT_NPROBE
    library: str = "faiss"
    kind: str = "ivf"
    storage: str = "fp16"
    build_seconds: float = 0.0
    version: int = INDEX_VERSION
    faiss_version: str = field(default="")


def faiss_module():
    """faiss, or a :class:`CorpusError` saying how to install it."""
    try:
        return importlib.import_module("faiss")
    except ImportError as err:
        raise CorpusError(
            "an approximate index needs faiss: pip install 'lusifer[search]' (faiss-cpu)"
        ) from err


def manifest_digest(outdir: str | Path) -> str:
    """A digest of ``outdir``'s manifest.json (its shards' sha256s included)."""
    data = (Path(outdir) / MANIFEST_FILE).read_bytes()
    return hashlib.sha256(data).hexdigest()[:24]


def index_dir(outdir: str | Path) -> Path:
    return Path(outdir) / INDEX_DIR


def read_info(outdir: str | Path) -> IndexInfo | None:
    """The index's record, or None when there is no (readable) index."""
    path = index_dir(outdir) / INDEX_META
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return IndexInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def index_state(outdir: str | Path) -> tuple[str, IndexInfo | None]:
    """``("missing" | "stale" | "fresh", info)`` of ``outdir``'s index."""
    info = read_info(outdir)
    if info is None or not (index_dir(outdir) / INDEX_FILE).is_file():
        return "missing", None
    if info.version != INDEX_VERSION or info.manifest_digest != manifest_digest(outdir):
        return "stale", info
    return "fresh", info


def default_nlist(rows: int) -> int:
    """About 4 sqrt(rows) cells (1M rows: 4,000), at least 1, at most rows / 39."""
    return max(1, min(int(4 * rows**0.5), rows // TRAIN_PER_CELL))


def _training_sample(outdir: Path, manifest: dict, count: int, seed: int) -> np.ndarray:
    """``count`` rows drawn evenly at random across the corpus (fp32)."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(manifest["rows"], size=count, replace=False))
    parts, first = [], 0
    for entry in manifest["shards"]:
        wanted = chosen[(chosen >= first) & (chosen < first + entry["rows"])] - first
        if len(wanted):
            vectors = shard_vectors(outdir, manifest, entry["index"])
            parts.append(np.asarray(vectors[wanted], dtype=np.float32))
        first += entry["rows"]
    return np.ascontiguousarray(np.concatenate(parts))


def _trained_index(faiss, outdir: Path, manifest: dict, nlist: int, seed: int):
    """An empty IVF-fp16 inner-product index, its cells trained on a sample."""
    dimension = manifest["dimension"]
    quantizer = faiss.IndexFlatIP(dimension)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, dimension, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.seed = seed
    sample = min(manifest["rows"], nlist * TRAIN_PER_CELL)
    index.train(_training_sample(outdir, manifest, sample, seed))
    return index


def build_index(
    outdir: str | Path,
    *,
    nlist: int | None = None,
    nprobe: int = DEFAULT_NPROBE,
    force: bool = False,
    seed: int = 0,
    progress=None,
) -> tuple[IndexInfo, bool]:
    """Build ``outdir``'s index unless a fresh one is there (``force`` rebuilds it);
    returns its record and whether it was built now. ``nlist`` defaults to
    :func:`default_nlist`; ``nprobe`` is the search depth recorded for searches.
    ``progress(rows_done, rows)`` is called after each block added."""
    faiss = faiss_module()
    outdir = Path(outdir)
    manifest = load_manifest(outdir)
    state, info = index_state(outdir)
    if state == "fresh" and info is not None and not force:
        return info, False
    if manifest["rows"] < 1:
        raise CorpusError(f"{outdir} holds no rows to index")
    digest = manifest_digest(outdir)
    start = time.perf_counter()
    nlist = nlist or default_nlist(manifest["rows"])
    index = _trained_index(faiss, outdir, manifest, nlist, seed)
    done = 0
    for entry in manifest["shards"]:
        vectors = shard_vectors(outdir, manifest, entry["index"])
        for first in range(0, vectors.shape[0], ADD_ROWS):
            block = np.ascontiguousarray(vectors[first : first + ADD_ROWS], dtype=np.float32)
            index.add(block)
            done += block.shape[0]
            if progress is not None:
                progress(done, manifest["rows"])
        del vectors
    info = IndexInfo(
        manifest_digest=digest,
        rows=int(index.ntotal),
        dimension=int(manifest["dimension"]),
        nlist=nlist,
        nprobe=nprobe,
        build_seconds=round(time.perf_counter() - start, 3),
        faiss_version=getattr(faiss, "__version__", ""),
    )
    if manifest_digest(outdir) != digest:
        raise CorpusError(f"{outdir} was encoded again while its index was built; rerun")
    with atomic_folder(index_dir(outdir)) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        (tmp / INDEX_META).write_text(json.dumps(asdict(info), indent=2), encoding="utf-8")
    return info, True


def load_index(outdir: str | Path):
    """``(faiss index, info)`` of a fresh index; a :class:`CorpusError` when it is missing
    or stale (built from another encoding of the folder)."""
    state, info = index_state(outdir)
    if state == "missing":
        raise CorpusError(f"{outdir} has no index: run `lusifer index {outdir}`")
    if state == "stale":
        raise CorpusError(
            f"the index in {index_dir(outdir)} was built from another encoding of {outdir} "
            f"(manifest digest {info.manifest_digest if info else '?'}, now "
            f"{manifest_digest(outdir)}): rerun `lusifer index {outdir}`"
        )
    faiss = faiss_module()
    index = faiss.read_index(str(index_dir(outdir) / INDEX_FILE))
    return index, info


def search_index(
    outdir: str | Path,
    queries: np.ndarray,
    k: int = 10,
    *,
    manifest: dict | None = None,
    nprobe: int | None = None,
    loaded=None,
) -> list[list[tuple[float, int, int]]]:
    """Approximate top-``k`` of ``queries`` through ``outdir``'s index: per query,
    ``(score, shard, row)`` best first, like :func:`.search.search_vectors`.
    ``loaded`` is a ``(index, info)`` pair from :func:`load_index` to reuse."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    manifest = manifest or load_manifest(outdir)
    index, info = loaded or load_index(outdir)
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != info.dimension:
        raise CorpusError(
            f"the queries have {queries.shape[1]} dimensions, the index {info.dimension}"
        )
    index.nprobe = min(nprobe or info.nprobe, info.nlist)
    scores, ids = index.search(queries, k)
    starts = np.cumsum([0] + [s["rows"] for s in manifest["shards"]])
    shard_numbers = np.array([s["index"] for s in manifest["shards"]], dtype=np.int64)
    out = []
    for q_scores, q_ids in zip(scores, ids, strict=True):
        keep = q_ids >= 0
        q_ids, q_scores = q_ids[keep].astype(np.int64), q_scores[keep]
        pos = np.searchsorted(starts, q_ids, side="right") - 1
        rows = q_ids - starts[pos]
        order = np.lexsort((rows, shard_numbers[pos], -q_scores))
        out.append([(float(q_scores[i]), int(shard_numbers[pos[i]]), int(rows[i])) for i in order])
    return out
