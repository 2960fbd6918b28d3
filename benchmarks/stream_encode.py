"""Corpus encoding to shards: peak memory against corpus size, and throughput against a
plain in-memory ``encode``.

Not a test: prints the machine, then

1. the peak RSS of ``lusifer encode MODEL INPUT -o DIR`` (streamed shards) and of
   ``lusifer encode MODEL INPUT -o X.npy`` (one matrix in memory) at each ``--sizes``
   (default 20,000 and 200,000 generated mixed-language lines), each run as a child
   process and measured with ``os.wait4`` (``ru_maxrss``);
2. texts/s of ``encode_corpus`` (read, encode, write shards) against ``model.encode`` on
   the same texts already in memory, in this process, one after the other, for the fast
   ``--model`` and for each ``--real-model`` at ``--real-n`` lines.

    .venv/bin/python benchmarks/stream_encode.py                       # tiny:xlmr, 20k + 200k
    .venv/bin/python benchmarks/stream_encode.py --sizes 20000 --real-model multilingual-e5-small
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sentences import load_sentences  # noqa: E402


def write_lines(path: Path, n: int) -> Path:
    """``n`` mixed-language lines (the offline suite's sentences, numbered so they differ)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i, text in enumerate(load_sentences(n)):
            f.write(" ".join(text.split()) + f" ({i})\n")
    return path


def child_peak_rss(command: list[str]) -> tuple[float, float]:
    """Run ``command``; (peak RSS in MiB, wall seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err.decode()[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start  # Linux: KiB


def throughput(
    model: str, n: int, workdir: Path, threads: int | None, batch_size: int, max_length: int | None
) -> dict:
    """texts/s of model.encode on texts in memory, then of encode_corpus on the same
    texts from a file, in this process."""
    from lusifer import load
    from lusifer.corpus import encode_corpus

    encoder = load(model, threads=threads)
    path = write_lines(workdir / f"tp-{n}.txt", n)
    texts = path.read_text(encoding="utf-8").splitlines()
    kw = {"kind": "document", "batch_size": batch_size, "max_length": max_length}
    encoder.encode(texts[:64], **kw)  # warm up
    start = time.perf_counter()
    encoder.encode(texts, **kw)
    plain = n / (time.perf_counter() - start)
    out = workdir / f"tp-{n}-shards"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    encode_corpus(encoder, path, out, model_reference=model, **kw)
    sharded = n / (time.perf_counter() - start)
    return {"model": model, "n": n, "plain": plain, "sharded": sharded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny:xlmr", help="A fast model for the big runs.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--max-length", type=int, default=32, help="Tokens kept per text by --model (speed)."
    )
    parser.add_argument(
        "--real-model", nargs="*", default=["multilingual-e5-small"], help="Throughput only."
    )
    parser.add_argument("--real-n", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None, help="Default: all cores.")
    parser.add_argument("--no-npy", action="store_true", help="Skip the in-memory .npy runs.")
    parser.add_argument("--workdir", default="runs/bench-stream-encode")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}")
    lusifer = [sys.executable, "-m", "lusifer.cli", "encode", args.model]
    extra = ["--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
    if args.threads:
        extra += ["--threads", str(args.threads)]

    print(
        f"\n## Peak RSS ({args.model}, --max-length {args.max_length}, "
        f"shard size {args.shard_size})\n"
    )
    print(
        "| lines | shards: peak RSS (MiB) | shards: s | .npy in memory: peak RSS (MiB) | .npy: s |"
    )
    print("|---|---|---|---|---|")
    for n in args.sizes:
        src = write_lines(workdir / f"lines-{n}.txt", n)
        out = workdir / f"shards-{n}"
        shutil.rmtree(out, ignore_errors=True)
        rss, secs = child_peak_rss(
            [*lusifer, str(src), "-o", str(out), "--shard-size", str(args.shard_size), *extra]
        )
        npy_rss, npy_secs = (float("nan"), float("nan"))
        if not args.no_npy:
            npy_rss, npy_secs = child_peak_rss(
                [*lusifer, str(src), "-o", str(workdir / f"matrix-{n}.npy"), *extra]
            )
        print(f"| {n:,} | {rss:.0f} | {secs:.1f} | {npy_rss:.0f} | {npy_secs:.1f} |", flush=True)

    print("\n## Throughput: encode_corpus (file -> shards) / model.encode (texts in memory)\n")
    print("| model (max length) | lines | encode texts/s | encode_corpus texts/s | ratio |")
    print("|---|---|---|---|---|")
    runs = [(args.model, min(args.sizes), args.max_length)]
    runs += [(m, args.real_n, None) for m in args.real_model]
    for model, n, max_length in runs:
        r = throughput(model, n, workdir, args.threads, args.batch_size, max_length)
        print(
            f"| {r['model']} ({max_length or 'default'}) | {r['n']:,} | {r['plain']:.1f} | {r['sharded']:.1f} | "
            f"{r['sharded'] / r['plain']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
