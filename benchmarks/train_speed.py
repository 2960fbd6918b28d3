"""Training speed on CPU, measured in one run: the demo's stages with the frozen encoder
run by torch and by onnxruntime (``run.frozen_encoder_backend``), each with the whole
batch at once and in length-sorted chunks of 16 texts (``run.length_bucket_rows``).

Not a test: prints the least-squares start's time, stage-2 examples/s for each variant
and the ratios, and how far apart the variants' trained tensors are (the target's own
dropout draws differ with the chunk shapes, so chunked runs differ by more than rounding).
Then the arithmetic: the floating-point operations of one stage-2 example (forward and
backward, the frozen encoder and the target's own distillation pass included), counted by
torch's ``FlopCounterMode``, times each variant's examples/s, as a share of this machine's
fp32 matmul GFLOP/s: near 1 means training runs at the hardware's speed, and only less
arithmetic (a smaller recipe) would make it faster.

    .venv/bin/python benchmarks/train_speed.py                 # demo recipe, 30 stage-2 steps
    .venv/bin/python benchmarks/train_speed.py --steps 60 --config src/lusifer/configs/demo-minilm.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import matmul_gflops  # noqa: E402

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "src/lusifer/configs/demo-minilm.yaml"


def _config(config: Path, backend: str, rows: int, steps: int, folder: Path):
    from lusifer.training import load_train_config

    overrides = [
        f"run.output_dir={folder}",
        f"run.frozen_encoder_backend={backend}",
        f"run.length_bucket_rows={rows}",
        f"representation.steps={steps}",
        f"run.save_every={steps}",
        "run.log_every=1",
    ]
    return load_train_config(config, overrides)


def run(config: Path, backend: str, rows: int, steps: int, folder: Path) -> dict:
    from safetensors.torch import load_file

    from lusifer.training import run_training

    cfg = _config(config, backend, rows, steps, folder)
    start = time.time()
    out = run_training(cfg)
    stage1_done = (folder / "alignment/final/model.safetensors").stat().st_mtime
    log = [json.loads(line) for line in (folder / "representation/log.jsonl").open()]
    return {
        # building the model, the least-squares start (and on first use the encoder's export)
        "alignment_s": stage1_done - start,
        "total_s": time.time() - start,
        "examples_per_s": log[-1]["examples_per_s"],
        "weights": load_file(str(out / "model.safetensors")),
    }


def stage2_flops_per_example(
    config: Path, rows: int, steps: int, trained: Path, folder: Path
) -> float:
    """Floating-point operations of one stage-2 training example, counted over ``steps``
    steps on the torch backend in chunks of ``rows`` texts (FlopCounterMode sees torch's
    operations only), starting from ``trained``'s stage 1."""
    from torch.utils.flop_counter import FlopCounterMode

    from lusifer.training import run_training

    shutil.copytree(trained / "alignment", folder / "alignment")
    cfg = _config(config, "torch", rows, steps, folder)
    stage = next(s for name, _, s in cfg.stage_list() if name == "representation")
    with FlopCounterMode(display=False) as counter:
        run_training(cfg, stages=["representation"])
    return counter.get_total_flops() / (steps * stage.batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG)
    parser.add_argument("--steps", type=int, default=30, help="Stage-2 steps per backend.")
    args = parser.parse_args()

    import torch

    variants = {
        "torch": ("torch", 0),
        "onnx": ("onnx", 0),
        "torch, chunks of 16": ("torch", 16),
        "onnx, chunks of 16": ("onnx", 16),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (backend, rows)) in enumerate(variants.items()):
            results[name] = run(args.config, backend, rows, args.steps, Path(tmp) / str(i))
        _, demo_rows = variants["onnx, chunks of 16"]  # the demo's setting
        flops = stage2_flops_per_example(
            args.config, demo_rows, 3, Path(tmp) / "0", Path(tmp) / "flops"
        )
    gflops = matmul_gflops()

    def drift(a: dict, b: dict) -> float:
        return max(float((a["weights"][k] - b["weights"][k]).abs().max()) for k in a["weights"])

    base, onnx, torch_chunked, chunked = results.values()
    print(f"\n{args.config.name}, {args.steps} stage-2 steps, {torch.get_num_threads()} threads")
    print(f"{'variant':<22}{'stage 1 (s)':>12}{'stage 2 ex/s':>14}{'total (s)':>11}")
    for name, r in results.items():
        print(
            f"{name:<22}{r['alignment_s']:>12.1f}{r['examples_per_s']:>14.2f}{r['total_s']:>11.1f}"
        )
    rate = lambda r: r["examples_per_s"]  # noqa: E731
    print(f"onnxruntime / torch, stage 2 examples/s: {rate(onnx) / rate(base):.2f}x")
    print(
        f"chunks / whole batch (onnxruntime), stage 2 examples/s: {rate(chunked) / rate(onnx):.2f}x"
    )
    print(
        f"chunks / whole batch (torch), stage 2 examples/s: {rate(torch_chunked) / rate(base):.2f}x"
    )
    print(
        f"with chunks, onnxruntime / torch, stage 2 examples/s: {rate(chunked) / rate(torch_chunked):.2f}x"
    )
    print(f"onnxruntime / torch, stage 1 time: {onnx['alignment_s'] / base['alignment_s']:.2f}x")
    print(f"largest difference between trained tensors, torch vs onnx: {drift(base, onnx):.2e}")
    print(f"largest difference, whole batch vs chunks: {drift(onnx, chunked):.2e}")
    print(
        f"\nstage 2 arithmetic: {flops / 1e9:.2f} GFLOP per example (FlopCounterMode); "
        f"this machine's fp32 matmul: {gflops:.0f} GFLOP/s"
    )
    for name, r in results.items():
        achieved = flops * rate(r) / 1e9
        print(f"{name:<22}{achieved:>8.0f} GFLOP/s = {achieved / gflops:.2f} of the matmul rate")


if __name__ == "__main__":
    main()
