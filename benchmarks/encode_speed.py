"""Encoding speed on CPU: LUSIFER (torch, ONNX fp32, ONNX int8, auto) against its parts
(torch and ONNX fp32), at one thread and at every core.

Not a test: prints sentences/s and the ratios the project promises, with PASS/FAIL.

    .venv/bin/python benchmarks/encode_speed.py            # e5-small -> MiniLM, 2,000 texts
    .venv/bin/python benchmarks/encode_speed.py --n 500 --model runs/my-model --threads 2
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _sentences import load_sentences  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def unsorted_encode(model, texts: list[str], batch_size: int) -> None:
    """LUSIFER batches in input order (no length sorting): each batch pads to its longest."""
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = model.tokenize(texts[start : start + batch_size])
            model(enc["input_ids"], enc["attention_mask"])


def measure(model, encoder_ref, target_ref, texts, bs, threads, export_dir) -> dict[str, float]:
    """Seconds per run at ``threads`` intra-op threads (torch and onnxruntime alike)."""
    from sentence_transformers import SentenceTransformer

    from lusifer.backbones import resolve_backbone
    from lusifer.model import PlainEmbedder
    from lusifer.onnx import OnnxLusifer, OnnxPlainEmbedder
    from lusifer.onnx.backends import backend_of, fastest_backend
    from lusifer.threads import thread_policy

    thread_policy(threads).apply_to_torch()
    unmerged = model
    model = copy.deepcopy(unmerged).merge_and_unload()  # what lusifer encode/serve run
    onnx_fp32 = OnnxLusifer.from_model(model, threads=threads, export_dir=export_dir)
    onnx_int8 = OnnxLusifer.from_model(
        model, quantize="int8", threads=threads, export_dir=export_dir
    )
    auto = fastest_backend(model, threads=threads)  # measured once per machine, cached
    encoder_alone = PlainEmbedder.load(encoder_ref)
    target_alone = PlainEmbedder.load(target_ref)
    encoder_onnx, target_onnx = (
        OnnxPlainEmbedder.from_embedder(e, threads=threads, export_dir=export_dir)
        for e in (encoder_alone, target_alone)
    )
    target_st = SentenceTransformer(resolve_backbone(target_ref), device="cpu")
    runs: dict[str, Callable[[list[str]], object]] = {
        "LUSIFER torch fp32 (sorted)": lambda t: model.encode(t, batch_size=bs),
        "LUSIFER torch fp32 (unsorted)": lambda t: unsorted_encode(model, t, bs),
        "LUSIFER torch fp32, LoRA unmerged": lambda t: unmerged.encode(t, batch_size=bs),
        "LUSIFER ONNX fp32": lambda t: onnx_fp32.encode(t, batch_size=bs),
        "LUSIFER ONNX int8": lambda t: onnx_int8.encode(t, batch_size=bs),
        f"LUSIFER auto (-> {backend_of(auto)})": lambda t: auto.encode(t, batch_size=bs),
        f"encoder alone ({encoder_ref})": lambda t: encoder_alone.encode(t, batch_size=bs),
        f"target alone ({target_ref})": lambda t: target_alone.encode(t, batch_size=bs),
        "encoder alone ONNX fp32": lambda t: encoder_onnx.encode(t, batch_size=bs),
        "target alone ONNX fp32": lambda t: target_onnx.encode(t, batch_size=bs),
        "target via sentence-transformers": lambda t: target_st.encode(t, batch_size=bs),
    }
    warm = texts[: min(len(texts), 2 * bs)]
    seconds: dict[str, float] = {}
    for name, run in runs.items():
        run(warm)  # warm-up: allocator, thread pools, ORT kernels
        seconds[name] = timed(lambda run=run: run(texts))
        print(f"  {threads} thread(s), {name}: {seconds[name]:.1f}s", flush=True)
    return seconds


def report(seconds: dict[str, float], n: int, threads: int, encoder_ref, target_ref) -> None:
    print(f"\n{threads} thread(s)\n")
    width = max(len(k) for k in seconds)
    print(f"| {'run':<{width}} | seconds | sentences/s |")
    print(f"|{'-' * (width + 2)}|--------:|------------:|")
    for name, s in seconds.items():
        print(f"| {name:<{width}} | {s:7.1f} | {n / s:11.1f} |")
    torch_s = seconds["LUSIFER torch fp32 (sorted)"]
    auto_s = next(s for name, s in seconds.items() if name.startswith("LUSIFER auto"))
    parts = seconds[f"encoder alone ({encoder_ref})"] + seconds[f"target alone ({target_ref})"]
    checks = [
        ("LUSIFER torch cost / (encoder + target alone)", torch_s / parts, "<=", 1.15),
        ("ONNX int8 speed / torch fp32 speed", torch_s / seconds["LUSIFER ONNX int8"], ">=", 2.0),
        ("sorted / unsorted speed", seconds["LUSIFER torch fp32 (unsorted)"] / torch_s, ">=", 1.5),
        # "never slower", within the 5% that two timings of one run differ by here
        ("auto speed / torch fp32 speed", torch_s / auto_s, ">=", 0.95),
    ]
    print()
    print("| ratio | value | goal | result |")
    print("|---|---:|---:|---|")
    for name, value, op, goal in checks:
        ok = value <= goal if op == "<=" else value >= goal
        print(f"| {name} | {value:.2f} | {op} {goal} | {'PASS' if ok else 'FAIL'} |")
    merging = seconds["LUSIFER torch fp32, LoRA unmerged"] / torch_s
    print(f"| LoRA merged / unmerged speed (torch) | {merging:.2f} | (no goal) | |")
    for part, ref in (("encoder", encoder_ref), ("target", target_ref)):
        ratio = seconds[f"{part} alone ({ref})"] / seconds[f"{part} alone ONNX fp32"]
        print(f"| {part} alone: ONNX fp32 speed / torch speed | {ratio:.2f} | (no goal) | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        help="A trained LUSIFER folder (default: e5-small -> MiniLM with the demo's LoRA, "
        "untrained).",
    )
    parser.add_argument("--encoder", default="multilingual-e5-small")
    parser.add_argument("--target", default="all-MiniLM-L6-v2")
    parser.add_argument("--n", type=int, default=2000, help="Number of sentences.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="Thread counts to measure (default: 1 and every core).",
    )
    parser.add_argument(
        "--export-dir", default=None, help="Where ONNX exports go (default: a temp dir)."
    )
    args = parser.parse_args()

    from lusifer import LoraSettings, LusiferModel
    from lusifer.threads import cpu_threads

    thread_counts = args.threads or sorted({1, cpu_threads()})
    texts = load_sentences(args.n)
    print(
        f"{len(texts)} sentences, batch size {args.batch_size}, threads {thread_counts}, "
        f"torch {torch.__version__}"
    )
    if args.model:
        model = LusiferModel.from_pretrained(args.model)
        encoder_ref, target_ref = model.config.encoder, model.config.target
    else:
        lora = LoraSettings(r=8, alpha=16)  # the demo's adapters, as a trained model has them
        model = LusiferModel.build(
            encoder=args.encoder, target=args.target, encoder_lora=lora, target_lora=lora
        )
        encoder_ref, target_ref = args.encoder, args.target
    export_dir = Path(args.export_dir or tempfile.mkdtemp(prefix="lusifer-onnx-"))
    results = {
        t: measure(model, encoder_ref, target_ref, texts, args.batch_size, t, export_dir)
        for t in thread_counts
    }
    for t, seconds in results.items():
        report(seconds, len(texts), t, encoder_ref, target_ref)


if __name__ == "__main__":
    main()
