"""What the router adds to a routed model's encode time (issue goal: at most 5%).

Not a test: on the same mixed-language texts, in one run, times the router alone
(``model.router.routes``) and the routed model's whole ``encode`` (route auto: routing,
then each route's batches) at the demo's batch size, and prints the router's share.

    .venv/bin/python benchmarks/router_overhead.py lusifer-demo/model --n 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import matmul_gflops  # noqa: E402
from _sentences import load_sentences  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a routed LUSIFER model folder")
    parser.add_argument("--n", type=int, default=2000, help="texts")
    parser.add_argument("--batch-size", type=int, default=64, help="the demo's: 64")
    parser.add_argument("--backend", default="auto", help="torch, onnx or auto")
    args = parser.parse_args()

    import lusifer

    model = lusifer.load(args.model, backend=args.backend, device="cpu")
    texts = load_sentences(args.n)
    model.router.routes(texts[:10])  # loads the identifier (once per process)
    model.encode(texts[:64], batch_size=args.batch_size)  # warm-up
    tic = time.perf_counter()
    routes = model.router.routes(texts)
    router = time.perf_counter() - tic
    tic = time.perf_counter()
    model.encode(texts, batch_size=args.batch_size)
    encode = time.perf_counter() - tic
    share = router / encode
    native = routes.count("native") / len(routes)
    print(f"machine: {os.cpu_count()} cores, fp32 matmul {matmul_gflops():.0f} GFLOP/s")
    print(f"{args.model} ({type(model).__name__}), {len(texts)} texts, batch {args.batch_size}")
    print(
        f"router alone: {len(texts) / router:.0f} texts/s; routed encode: {len(texts) / encode:.1f} texts/s"
    )
    print(f"native share {100 * native:.1f}%")
    print(
        f"router / routed encode time: {100 * share:.2f}% (goal <= 5%: {'PASS' if share <= 0.05 else 'FAIL'})"
    )


if __name__ == "__main__":
    main()
