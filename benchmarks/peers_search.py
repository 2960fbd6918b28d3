"""Search against faiss: exact ``lusifer search`` (``search_vectors`` over fp16 npy shards,
both engines) against faiss ``IndexFlatIP`` holding the same vectors in memory, and the
approximate index ``lusifer index`` builds (faiss IVF, fp16): queries/s, recall@10
against exact search, build time and memory.

Two corpora of unit 384-d fp16 vectors in 100k-row shards: "random" (uniform on the
sphere, random queries: the timing case, and the worst case for any approximate index,
since nothing is clustered) and "clustered" (points around 1% as many centres, queries
near corpus points: how embeddings of real text sit; recall is measured there too), and
with ``--kinds text`` real text: distinct texts of the bundled suite (14 languages) encoded
by ``--text-model`` (128 tokens), other texts of it as queries; the suite holds about 44,000
texts, so this corpus is small (``--rows 20000``: a quarter of an hour to encode on one core).

Not a test: prints one table and PASS/FAIL against the goals (exact within 1.2x of faiss
flat's time; the index >= 10x exact's queries/s with recall@10 >= 0.95 at 1M vectors).

    taskset -c 1 .venv/bin/python benchmarks/peers_search.py            # 1M vectors
    .venv/bin/python benchmarks/peers_search.py --rows 200000 --queries 200
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _peers import machine_line, mixed_texts, verdict  # noqa: E402

SHARD_ROWS = 100_000
GIB = 1024**3


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_corpus(outdir: Path, rows: int, dim: int, kind: str, seed: int) -> np.ndarray:
    """fp16 shards and a manifest as ``lusifer encode --dtype float16`` lays them out;
    returns queries for this corpus."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((max(1, rows // 100), dim), dtype=np.float32))
    shards = []
    for index, first in enumerate(range(0, rows, SHARD_ROWS)):
        n = min(SHARD_ROWS, rows - first)
        x = rng.standard_normal((n, dim), dtype=np.float32)
        if kind == "clustered":
            x = centres[rng.integers(0, len(centres), n)] + x / np.sqrt(dim)
        np.save(outdir / f"shard-{index:05d}.npy", unit(x).astype(np.float16))
        ids = "".join(json.dumps({"id": str(first + i)}) + "\n" for i in range(n))
        (outdir / f"shard-{index:05d}.ids.jsonl").write_text(ids)
        shards.append({"index": index, "rows": n})
    manifest = {"manifest_version": 1, "format": "npy", "dtype": "float16", "dimension": dim}
    manifest.update(rows=rows, shards=shards, normalized=True, model={"reference": "random"})
    (outdir / "manifest.json").write_text(json.dumps(manifest))
    return rng


def write_text_corpus(outdir: Path, rows: int, n_queries: int, model: str) -> np.ndarray:
    """``rows`` real texts encoded by ``model`` as fp16 shards and a manifest, as
    :func:`write_corpus` lays them out; returns ``n_queries`` other texts' vectors."""
    import lusifer

    texts = mixed_texts(rows + n_queries)
    encoder = lusifer.load(model)
    vectors = encoder.encode(texts, kind="document", max_length=128, show_progress=True)
    shards = []
    for index, first in enumerate(range(0, rows, SHARD_ROWS)):
        part = vectors[first : min(first + SHARD_ROWS, rows)]
        np.save(outdir / f"shard-{index:05d}.npy", part.astype(np.float16))
        ids = "".join(json.dumps({"id": str(first + i)}) + "\n" for i in range(len(part)))
        (outdir / f"shard-{index:05d}.ids.jsonl").write_text(ids)
        shards.append({"index": index, "rows": len(part)})
    manifest = {"manifest_version": 1, "format": "npy", "dtype": "float16"}
    manifest.update(dimension=int(vectors.shape[1]), rows=rows, shards=shards, normalized=True)
    manifest["model"] = {"reference": model}
    (outdir / "manifest.json").write_text(json.dumps(manifest))
    return np.ascontiguousarray(vectors[rows:], dtype=np.float32)


def make_queries(outdir: Path, rng, n: int, dim: int, kind: str) -> np.ndarray:
    if kind == "random":
        return unit(rng.standard_normal((n, dim), dtype=np.float32))
    first = np.load(outdir / "shard-00000.npy", mmap_mode="r")
    near = np.asarray(first[rng.integers(0, first.shape[0], n)], dtype=np.float32)
    return unit(near + 0.5 * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def recall(found: list, truth: list, k: int) -> float:
    got = [
        len({loc[1:] for loc in f[:k]} & {loc[1:] for loc in t[:k]}) / k
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(got))


def available_memory() -> int:
    """Bytes the kernel could give this process now (MemAvailable: free pages and the page
    cache it can drop, such as the shards just written); free pages where not Linux."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def faiss_flat(outdir: Path, manifest: dict, queries: np.ndarray, k: int) -> dict:
    import faiss

    need = manifest["rows"] * manifest["dimension"] * 4
    avail = available_memory()
    if need > avail * 0.8:
        return {"skipped": f"needs {need / GIB:.1f} GiB of {avail / GIB:.1f} free"}
    from lusifer.corpus import shard_vectors

    flat = faiss.IndexFlatIP(manifest["dimension"])
    start = time.perf_counter()
    for entry in manifest["shards"]:
        flat.add(np.asarray(shard_vectors(outdir, manifest, entry["index"]), np.float32))
    build = time.perf_counter() - start
    _, seconds = timed(lambda: flat.search(queries, k))
    return {"seconds": seconds, "build": build, "memory": need}


def measure(outdir: Path, queries: np.ndarray, args) -> list[dict]:
    from lusifer.corpus import load_manifest, search_vectors
    from lusifer.corpus.index import build_index, index_dir, load_index, search_index

    manifest = load_manifest(outdir)
    n_q, k = len(queries), args.k
    block = 16_384 * manifest["dimension"] * 4 + n_q * 16_384 * 4
    rows, exact = [], None
    for engine in ("auto", "numpy"):  # auto: faiss's knn per block, faiss being installed
        search_vectors(outdir, queries[:4], k, engine=engine, manifest=manifest)  # warm-up
        found, seconds = timed(
            lambda engine=engine: search_vectors(
                outdir, queries, k, engine=engine, manifest=manifest
            )
        )
        exact = exact or found
        what = f"lusifer search, exact (engine {engine})"
        rows.append({"what": what, "s": seconds, "recall": 1.0, "memory": block})
    flat = faiss_flat(outdir, manifest, queries, k)
    if "skipped" in flat:
        rows.append({"what": f"faiss IndexFlatIP: skipped ({flat['skipped']})"})
    else:
        rows.append(
            {
                "what": "faiss IndexFlatIP (fp32 in memory)",
                "s": flat["seconds"],
                "recall": 1.0,
                "build": flat["build"],
                "memory": flat["memory"],
            }
        )
    if manifest["rows"] > args.max_index_rows:
        rows.append(
            {"what": f"lusifer index: skipped (over --max-index-rows {args.max_index_rows:,})"}
        )
        return _with_qps(rows, n_q)
    info, build = timed(lambda: build_index(outdir, force=True)[0])
    loaded = load_index(outdir)
    size = (index_dir(outdir) / "index.faiss").stat().st_size
    for nprobe in args.nprobe:
        search_index(outdir, queries[:4], k, manifest=manifest, nprobe=nprobe, loaded=loaded)
        found, t = timed(
            lambda nprobe=nprobe: search_index(
                outdir, queries, k, manifest=manifest, nprobe=nprobe, loaded=loaded
            )
        )
        rows.append(
            {
                "what": f"lusifer index (IVF {info.nlist} cells, fp16), nprobe {nprobe}",
                "s": t,
                "recall": recall(found, exact, k),
                "build": build,
                "memory": size,
                "nprobe": nprobe,
            }
        )
    return _with_qps(rows, n_q)


def _with_qps(rows: list[dict], n_q: int) -> list[dict]:
    for r in rows:
        if "s" in r:
            r["qps"] = n_q / r["s"]
    return rows


def report(results: dict, args) -> None:
    print(
        f"\n{args.queries} queries at once, k={args.k}, {args.dim}-d fp16 shards of "
        f"{SHARD_ROWS:,} rows; recall@{args.k} against exact search; memory: what the "
        "search holds (exact: one block and its scores; faiss flat: the fp32 vectors; index: "
        "its file, read whole)\n"
    )
    print("| corpus | rows | search | queries/s | recall@10 | build s | memory MiB |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for (kind, rows), table in results.items():
        for r in table:
            if "s" not in r:
                print(f"| {kind} | {rows:,} | {r['what']} | - | - | - | - |")
                continue
            build = f"{r['build']:.0f}" if "build" in r else "-"
            print(
                f"| {kind} | {rows:,} | {r['what']} | {r['qps']:.1f} | {r['recall']:.3f} | "
                f"{build} | {r['memory'] / 2**20:.0f} |"
            )
    print("\n| goal | value | target | result |\n|---|---:|---:|---|")
    for (kind, rows), table in results.items():
        exact, flat = table[0], table[2]
        if "s" in flat:  # skipped when the fp32 copy would not fit in memory
            ratio = exact["s"] / flat["s"]
            print(
                f"| {kind} {rows:,}: exact time / faiss flat time | {ratio:.2f} | <= 1.2 | "
                f"{verdict(ratio, '<=', 1.2)} |"
            )
        index = next((r for r in table if r.get("nprobe") == args.goal_nprobe), None)
        if index is None:
            continue
        speed = index["qps"] / exact["qps"]
        print(
            f"| {kind} {rows:,}: index (nprobe {args.goal_nprobe}) speed / exact | "
            f"{speed:.1f}x | >= 10 | {verdict(speed, '>=', 10)} |"
        )
        print(
            f"| {kind} {rows:,}: index (nprobe {args.goal_nprobe}) recall@10 | "
            f"{index['recall']:.3f} | >= 0.95 | {verdict(index['recall'], '>=', 0.95)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["random", "clustered"],
        choices=["random", "clustered", "text"],
    )
    parser.add_argument("--text-model", default="multilingual-e5-small", help="For --kinds text.")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--goal-nprobe", type=int, default=32, help="lusifer index's default")
    parser.add_argument(
        "--max-index-rows",
        type=int,
        default=2_000_000,
        help="Build the index only up to this many rows (10M: about 15 min on one core).",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch's and faiss's threads.")
    parser.add_argument("--workdir", help="Where the shards go (default: a temp dir).")
    args = parser.parse_args()
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    print(machine_line(), f"faiss {faiss.__version__}", flush=True)
    results = {}
    for rows in args.rows:
        for kind in args.kinds:
            with tempfile.TemporaryDirectory(prefix="peers_search_", dir=args.workdir) as tmp:
                outdir = Path(tmp)
                if kind == "text":
                    queries = write_text_corpus(outdir, rows, args.queries, args.text_model)
                else:
                    rng = write_corpus(outdir, rows, args.dim, kind, seed=0)
                    queries = make_queries(outdir, rng, args.queries, args.dim, kind)
                results[(kind, rows)] = measure(outdir, queries, args)
            for r in results[(kind, rows)]:
                print(f"  {kind} {rows}: {r['what']}: {r.get('qps', 0):.1f} q/s", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    report(results, args)
    print(f"\npeak RSS of this process: {peak:.1f} GiB")


if __name__ == "__main__":
    main()
