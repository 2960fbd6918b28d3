"""Load test of ``lusifer serve`` on loopback: requests/s and latency at 1, 8 and 32
concurrent clients.

Not a test. Starts the real server (uvicorn, 127.0.0.1, a free port) in this process with
a bundled offline model, sends a bounded number of requests per level (and stops a level
at a time cap), and prints a table.

    .venv/bin/python benchmarks/serve_load.py
    .venv/bin/python benchmarks/serve_load.py --model runs/my-model --backend onnx --requests 400
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from _sentences import load_sentences  # noqa: E402


async def run_level(
    url: str, texts: list[str], *, clients: int, requests: int, per_request: int, cap_s: float
) -> dict:
    """``clients`` coroutines share a budget of ``requests`` requests; each request sends
    ``per_request`` texts. Stops early when ``cap_s`` seconds have passed."""
    latencies: list[float] = []
    errors: dict[int, int] = {}
    sent = 0
    deadline = time.perf_counter() + cap_s

    async def client(client_id: int, http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests and time.perf_counter() < deadline:
            i = sent
            sent += 1
            batch = [texts[(i * per_request + j) % len(texts)] for j in range(per_request)]
            start = time.perf_counter()
            r = await http.post(f"{url}/v1/embeddings", json={"input": batch})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors[r.status_code] = errors.get(r.status_code, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "clients": clients,
        "ok": len(latencies),
        "errors": errors,
        "wall": wall,
        "rps": len(latencies) / wall,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", help="A LUSIFER folder (default: e5-small -> MiniLM, untrained)."
    )
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--quantize", choices=["int8"], default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--requests", type=int, default=200, help="Requests per level.")
    parser.add_argument("--per-request", type=int, default=1, help="Texts per request.")
    parser.add_argument("--time-cap", type=float, default=60.0, help="Seconds per level at most.")
    parser.add_argument("--levels", default="1,8,32", help="Concurrent clients per level.")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    from lusifer import LusiferModel
    from lusifer.onnx import OnnxLusifer, default_threads, load_encoder
    from lusifer.serving import BackgroundServer, ServerSettings, create_app

    threads = default_threads(args.threads)
    if args.model:
        encoder = load_encoder(
            args.model, backend=args.backend, quantize=args.quantize, threads=threads
        )
    else:
        import torch

        torch.set_num_threads(threads)
        encoder = LusiferModel.build(encoder="multilingual-e5-small", target="all-MiniLM-L6-v2")
        if args.backend == "onnx":
            encoder = OnnxLusifer.from_model(encoder, quantize=args.quantize, threads=threads)
    settings = ServerSettings(
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=1024,
        max_length=128,
    )
    texts = load_sentences(2000)
    backend = args.backend + (f"+{args.quantize}" if args.quantize else "")
    app = create_app(encoder, model_name="bench", backend=backend, settings=settings)
    with BackgroundServer(app, host="127.0.0.1") as url:
        print(
            f"server {url}, backend {backend}, {threads} threads, {args.per_request} text(s)/request"
        )
        httpx.post(f"{url}/v1/embeddings", json={"input": texts[:8]}, timeout=120)  # warm-up
        rows = []
        for clients in (int(c) for c in args.levels.split(",")):
            row = asyncio.run(
                run_level(
                    url,
                    texts,
                    clients=clients,
                    requests=args.requests,
                    per_request=args.per_request,
                    cap_s=args.time_cap,
                )
            )
            rows.append(row)
            print(f"  {clients} clients done: {row['ok']} ok in {row['wall']:.1f}s", flush=True)
    print()
    print("| clients | requests ok | errors | wall s | requests/s | p50 ms | p99 ms |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "-"
        print(
            f"| {r['clients']} | {r['ok']} | {errors} | {r['wall']:.1f} | {r['rps']:.1f} | "
            f"{r['p50']:.0f} | {r['p99']:.0f} |"
        )


if __name__ == "__main__":
    main()
