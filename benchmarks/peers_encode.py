"""Encoding against sentence-transformers: lusifer (``lusifer.load(ref, backend="auto")``
then ``.encode``) and ``SentenceTransformer(<the same local folder>).encode`` on the same
mixed-language texts, threads and batch size; and LUSIFER-mini against the two models it
is made of, each encoded by sentence-transformers (the cost ratio).

Not a test: prints one table with the ratios and PASS/FAIL against the goals
(lusifer >= 1.0x sentence-transformers on the plain models; LUSIFER-mini <= 1.0x the
cost of its two parts). Pin it to cores to compare runs:

    taskset -c 1 .venv/bin/python benchmarks/peers_encode.py            # 5,000 texts, 1 thread
    .venv/bin/python benchmarks/peers_encode.py --model runs/my-model --n 1000 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import machine_line, mixed_texts, verdict  # noqa: E402

ENCODER, TARGET = "multilingual-e5-small", "all-MiniLM-L6-v2"


def best_of(run: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed runs, in seconds (after one warm-up outside)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def st_model(name: str, max_length: int):
    """sentence-transformers over the bundled backbone's local folder, cut at the same
    ``max_length`` as lusifer, with the backbone's query prefix as its prompt."""
    from sentence_transformers import SentenceTransformer

    from lusifer.backbones import resolve_backbone
    from lusifer.backbones.offline import find_offline_backbone

    model = SentenceTransformer(str(resolve_backbone(name)), device="cpu")
    model.max_seq_length = max_length
    prefix = find_offline_backbone(name).query_prefix
    return model, prefix


def lusifer_mini(model_dir: str | None, work: Path) -> str:
    """A trained LUSIFER folder, or an untrained e5-small -> MiniLM one saved under ``work``
    (speed does not depend on training)."""
    if model_dir:
        return model_dir
    import torch

    from lusifer import LusiferModel

    torch.manual_seed(0)  # the same weights each run: auto's calibration is cached
    folder = work / "lusifer-mini-untrained"
    LusiferModel.build(encoder=ENCODER, target=TARGET).save_pretrained(folder)
    return str(folder)


def measure(texts: list[str], bs: int, threads: int, mini: str, args) -> dict:
    """Seconds of each run, every model loaded first and warmed on two batches."""
    import lusifer

    runs: dict[str, Callable[[list[str]], object]] = {}
    backends: dict[str, str] = {}
    for name in (TARGET, ENCODER, mini):
        enc = lusifer.load(name, backend="auto", threads=threads)
        backends[name] = type(enc).__name__
        runs[f"lusifer {name}"] = lambda t, e=enc: e.encode(
            t, batch_size=bs, max_length=args.max_length
        )
        if name == mini:
            continue
        st, prefix = st_model(name, min(args.max_length, enc.max_length))
        runs[f"st {name}"] = lambda t, m=st, p=prefix: m.encode(
            t, batch_size=bs, prompt=p or None, normalize_embeddings=True
        )
    import torch

    torch.set_num_threads(threads)  # sentence-transformers runs on torch's pool
    seconds = {}
    for label, run in runs.items():
        run(texts[: 2 * bs])  # warm-up: allocator, thread pools, kernels
        seconds[label] = best_of(lambda run=run: run(texts), args.repeats)
        print(f"  {label}: {seconds[label]:.1f}s", flush=True)
    return {"seconds": seconds, "backends": backends}


def report(result: dict, n: int, mini: str, args) -> None:
    s, backends = result["seconds"], result["backends"]
    print(
        f"\n{n} mixed-language texts, batch size {args.batch_size}, {args.threads} "
        f"thread(s), at most {args.max_length} tokens a text, best of {args.repeats}\n"
    )
    print(
        "| model | lusifer (backend auto) texts/s | sentence-transformers texts/s | ratio | goal | result |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name in (TARGET, ENCODER):
        ours, theirs = s[f"lusifer {name}"], s[f"st {name}"]
        ratio = theirs / ours
        print(
            f"| {name} (lusifer -> {backends[name]}) | {n / ours:.1f} | {n / theirs:.1f} | "
            f"{ratio:.2f}x speed | >= 1.0 | {verdict(ratio, '>=', 1.0)} |"
        )
    parts = s[f"st {ENCODER}"] + s[f"st {TARGET}"]
    cost = s[f"lusifer {mini}"] / parts
    print(
        f"| LUSIFER-mini (lusifer -> {backends[mini]}) vs st {ENCODER} + st {TARGET} | "
        f"{n / s[f'lusifer {mini}']:.1f} | {n / parts:.1f} (both parts) | {cost:.2f}x cost | "
        f"<= 1.0 | {verdict(cost, '<=', 1.0)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="A trained LUSIFER folder (default: untrained mini).")
    parser.add_argument("--n", type=int, default=5000, help="Number of texts.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--max-length", type=int, default=128, help="Tokens per text, both sides alike."
    )
    parser.add_argument("--repeats", type=int, default=1, help="Timed runs; the best counts.")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    texts = mixed_texts(args.n)
    with tempfile.TemporaryDirectory(prefix="lusifer-peers-") as work:
        mini = lusifer_mini(args.model, Path(work))
        result = measure(texts, args.batch_size, args.threads, mini, args)
    report(result, len(texts), mini, args)


if __name__ == "__main__":
    main()
