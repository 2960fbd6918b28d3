"""Serving against the server a user would run instead: ``lusifer serve all-MiniLM-L6-v2``
and sentence-transformers + FastAPI (benchmarks/_st_server.py) over the same local
folder, one after the other, each driven by benchmarks/serve_load.py's clients at 1, 8,
32 and 128 concurrent clients: requests/s, texts/s, p50/p99 latency, errors.

infinity-emb is the peer the issue names; it cannot be installed beside lusifer (its
latest release pins numpy<2, sentence-transformers<4, click<8.2, typer<0.13, rich<14),
so the comparison is with the plain server (see docs/research/benchmarks.md).

Not a test: prints one table and PASS/FAIL against the goal (>= 1.0x the peer's
throughput at 32 clients and a p99 no worse). Servers, clients and this script share
the cores they are given:

    taskset -c 1 .venv/bin/python benchmarks/peers_serve.py
    .venv/bin/python benchmarks/peers_serve.py --duration 5 --levels 1,32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
from _peers import machine_line, mixed_texts, verdict  # noqa: E402
from serve_load import HOST, free_port, run_level, start_server, stop_server, wait_healthy  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
MAX_LENGTH = 128  # serve_load starts lusifer serve with --max-length 128


def start_peer(folder: str, port: int, threads: int, log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(HERE / "_st_server.py"), folder, str(port), str(threads)]
    cmd.append(str(MAX_LENGTH))
    print("peer:", " ".join(cmd[1:]), flush=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def drive(name: str, start, bodies: list[bytes], args) -> list[dict]:
    """Start one server, warm it, run every level against it, stop it."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix="peers_serve_") as tmp:
        log_path = Path(tmp) / "server.log"
        proc = start(port, log_path)
        try:
            wait_healthy(proc, url, 300, log_path)
            for _ in range(3):  # warm-up, not measured
                httpx.post(f"{url}/v1/embeddings", json={"input": ["warm up"] * 8}, timeout=120)
            rows = []
            for clients in args.levels:
                row = asyncio.run(
                    run_level(
                        port,
                        bodies,
                        clients=clients,
                        duration=args.duration,
                        max_requests=10**9,
                        honour_retry_after=True,
                    )
                )
                row["server"] = name
                rows.append(row)
                print(f"  {name}, {clients} clients: {row['2xx']} ok in {row['wall']:.1f}s")
        finally:
            stop_server(proc)
    return rows


def report(rows: list[dict], per_request: int) -> None:
    print(
        "\n| server | clients | requests/s | texts/s | p50 ms | p99 ms | errors "
        "(non-2xx + no answer) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        errors = r["4xx"] + r["5xx"] + r["no_answer"]
        print(
            f"| {r['server']} | {r['clients']} | {r['rps']:.1f} | {r['rps'] * per_request:.1f} "
            f"| {r['p50']:.0f} | {r['p99']:.0f} | {errors} |"
        )
    ours = {r["clients"]: r for r in rows if r["server"] == "lusifer serve"}
    theirs = {r["clients"]: r for r in rows if r["server"] != "lusifer serve"}
    print("\n| ratio (lusifer / peer) | value | goal | result |\n|---|---:|---:|---|")
    for c in sorted(ours):
        speed = ours[c]["rps"] / max(theirs[c]["rps"], 1e-9)
        p99 = ours[c]["p99"] / max(theirs[c]["p99"], 1e-9)
        goal = c == 32
        print(
            f"| {c} clients: throughput | {speed:.2f}x | {'>= 1.0' if goal else '-'} | "
            f"{verdict(speed, '>=', 1.0) if goal else ''} |"
        )
        print(
            f"| {c} clients: p99 | {p99:.2f}x | {'<= 1.0' if goal else '-'} | "
            f"{verdict(p99, '<=', 1.0) if goal else ''} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,8,32,128", help="Concurrent clients per phase.")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per phase.")
    parser.add_argument("--threads", type=int, default=1, help="Each server's intra-op threads.")
    parser.add_argument("--per-request", type=int, default=1, help="Texts per request.")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    args = parser.parse_args()
    args.levels = [int(c) for c in args.levels.split(",")]
    print(machine_line(), flush=True)
    from lusifer.backbones import resolve_backbone

    folder = str(resolve_backbone(MODEL))
    texts = mixed_texts(2000)
    k = args.per_request
    bodies = [
        json.dumps({"input": [texts[(i * k + j) % len(texts)] for j in range(k)]}).encode()
        for i in range(len(texts))
    ]
    # lusifer serve with a queue deeper than the clients: both servers queue every request
    # (the default --max-queue 32 would shed some at 128 clients with 503 + Retry-After)
    served = SimpleNamespace(
        model=folder, backend=args.backend, quantize=None, threads=args.threads,
        max_queue=max(args.levels) * 2, max_batch_size=32, max_wait_ms=5.0,
    )  # fmt: skip
    rows = drive("lusifer serve", lambda p, log: start_server(served, p, log), bodies, args)
    rows += drive(
        "sentence-transformers + FastAPI",
        lambda p, log: start_peer(folder, p, args.threads, log),
        bodies,
        args,
    )
    print(
        f"\nmodel {MODEL} ({folder}), {k} text(s)/request, max length {MAX_LENGTH} tokens, "
        f"{args.duration:g} s per level, server threads {args.threads}, lusifer --backend "
        f"{args.backend} --max-queue {served.max_queue}"
    )
    report(rows, k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
