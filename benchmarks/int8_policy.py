"""Which MatMuls int8 keeps in float32: speed and accuracy of four policies, one run.

Not a test. Quantises a LUSIFER model's fp32 graph (LoRA merged) four ways and prints,
for each, sentences/s against torch fp32 at every core, the cosine of its embeddings to
torch's on mixed-language sentences, and (with ``--suite``) the mean change of the task
scores on a folder of local tasks (e.g. a demo run's sampled suite):

- every MatMul quantised;
- by name (the previous policy): the connector, the target's first layer and every FFN
  output projection stay float32;
- by spread: the 2% or 3% (``lusifer.onnx.export``, the shipped policy) of MatMuls whose
  inputs spread widest ((max - min) / RMS on the calibration texts) stay float32.

    .venv/bin/python benchmarks/int8_policy.py --model lusifer-demo-time/model \\
        --suite lusifer-demo-time/suite
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _sentences import load_sentences  # noqa: E402

# The previous (v2) policy's names: connector, the target's first layer, FFN outputs.
_FIRST_TARGET_LAYER = re.compile(r"/lusifer_target/(?:.*/)?(?:layer|layers|h)\.0/")
_FFN_OUT = re.compile(r".*/(?:output/dense|mlp/down_proj|mlp/c_proj|mlp/fc2)/MatMul$")


def by_name(spread: dict[str, float]) -> list[str]:
    return [
        name
        for name in spread
        if name.startswith("/lusifer_connector/")
        or _FIRST_TARGET_LAYER.match(name)
        or (_FFN_OUT.match(name) and "/attention/" not in name)
    ]


def seconds(encoder, texts: list[str], batch_size: int) -> tuple[float, np.ndarray]:
    encoder.encode(texts[: 2 * batch_size], batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    vectors = encoder.encode(texts, batch_size=batch_size)
    return time.perf_counter() - start, vectors


def task_scores(encoder, name: str, suite: Path, output: Path) -> dict[str, float]:
    from lusifer.evaluation.runner import evaluate

    encoder.name = name
    tasks = sorted(p for p in suite.iterdir() if (p / "task.json").is_file())
    report = evaluate(
        [encoder],
        task_dirs=tasks,
        output_dir=output,
        bootstrap=0,
        use_cache=False,
        show_progress=False,
    )
    return {task: result.score for task, result in report.summaries[name].tasks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A trained LUSIFER folder.")
    parser.add_argument("--suite", type=Path, help="A folder of local tasks to score.")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from lusifer import LusiferModel
    from lusifer.onnx import OnnxLusifer
    from lusifer.onnx.export import (
        calibration_feeds,
        export_onnx,
        int8_excluded_nodes,
        int8_reduce_range,
        matmul_input_spread,
        quantize_int8,
    )
    from lusifer.threads import thread_policy

    policy = thread_policy()
    policy.apply_to_torch()
    model = LusiferModel.from_pretrained(args.model).eval()
    texts = load_sentences(args.n)
    work = Path(tempfile.mkdtemp(prefix="lusifer-int8-"))
    fp32 = export_onnx(model, work / "fp32.onnx")
    spread = matmul_input_spread(fp32, calibration_feeds(model))
    widest = sorted(spread, key=spread.__getitem__, reverse=True)[:5]
    print("widest input spreads:", ", ".join(f"{n} {spread[n]:.0f}" for n in widest))
    policies = {
        "every MatMul": [],
        "by name (v2)": by_name(spread),
        "by spread, widest 2%": int8_excluded_nodes(spread, share=0.02),
        "by spread, widest 3% (v3, shipped)": int8_excluded_nodes(spread),
    }
    with torch.inference_mode():
        torch_s, want = seconds(model, texts, args.batch_size)
    reference = None
    if args.suite:
        reference = task_scores(model, "torch-fp32", args.suite, work / "eval-torch")
    print(
        f"\n{len(texts)} sentences, {policy.threads} threads, torch fp32 {len(texts) / torch_s:.1f}/s,"
        f" int8 weights of {7 if int8_reduce_range() else 8} bits on this CPU"
    )
    print(
        "\n| int8 policy | MatMuls in float32 | sentences/s | / torch fp32 | cosine min / mean |"
        + (" task score change (mean, worst) |" if reference else "")
    )
    print("|---|---:|---:|---:|---|" + ("---|" if reference else ""))
    for i, (name, excluded) in enumerate(policies.items()):
        encoder = OnnxLusifer(
            quantize_int8(
                fp32, work / f"int8-{i}.onnx", excluded, reduce_range=int8_reduce_range()
            ),
            model,
            threads=policy.threads,
        )
        s, got = seconds(encoder, texts, args.batch_size)
        cos = (got * want).sum(1)
        row = (
            f"| {name} | {len(excluded)} of {len(spread)} | {len(texts) / s:.1f} | "
            f"{torch_s / s:.2f} | {cos.min():.3f} / {cos.mean():.4f} |"
        )
        if reference:
            scores = task_scores(encoder, f"int8-{i}", args.suite, work / f"eval-{i}")
            change = [scores[t] - reference[t] for t in reference]
            row += f" {statistics.mean(change):+.2f}, {min(change):+.1f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
