"""Training speed on CPU: the demo's stages with the frozen encoder run by torch and by
onnxruntime (``run.frozen_encoder_backend``), measured in one run.

Not a test: prints the least-squares start's time, stage-2 examples/s for each backend
and their ratio, and checks that both backends learned the same thing (the largest
difference between their trained tensors).

    .venv/bin/python benchmarks/train_speed.py                 # demo recipe, 30 stage-2 steps
    .venv/bin/python benchmarks/train_speed.py --steps 60 --config src/lusifer/configs/demo-minilm.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "src/lusifer/configs/demo-minilm.yaml"


def run(config: Path, backend: str, steps: int, folder: Path) -> dict:
    from safetensors.torch import load_file

    from lusifer.training import load_train_config, run_training

    overrides = [
        f"run.output_dir={folder}",
        f"run.frozen_encoder_backend={backend}",
        f"representation.steps={steps}",
        f"run.save_every={steps}",
        "run.log_every=1",
    ]
    cfg = load_train_config(config, overrides)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG)
    parser.add_argument("--steps", type=int, default=30, help="Stage-2 steps per backend.")
    args = parser.parse_args()

    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("torch", "onnx"):
            results[backend] = run(args.config, backend, args.steps, Path(tmp) / backend)
    a, b = results["torch"], results["onnx"]
    drift = max(float((a["weights"][k] - b["weights"][k]).abs().max()) for k in a["weights"])
    print(f"\n{args.config.name}, {args.steps} stage-2 steps, {torch.get_num_threads()} threads")
    print(f"{'frozen encoder on':<20}{'stage 1 (s)':>12}{'stage 2 ex/s':>14}{'total (s)':>11}")
    for name, r in results.items():
        print(
            f"{name:<20}{r['alignment_s']:>12.1f}{r['examples_per_s']:>14.2f}{r['total_s']:>11.1f}"
        )
    print(
        f"onnxruntime / torch, stage 2 examples/s: {b['examples_per_s'] / a['examples_per_s']:.2f}x"
    )
    print(f"onnxruntime / torch, stage 1 time: {b['alignment_s'] / a['alignment_s']:.2f}x")
    print(f"largest difference between the trained tensors: {drift:.2e}")


if __name__ == "__main__":
    main()
