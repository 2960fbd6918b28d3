"""Where the demo's time goes, from one run, with this machine's speed beside it.

    .venv/bin/python benchmarks/demo_time.py [--output lusifer-demo-time] [--quick] [--target minilm] [--routed] [KEY=VALUE ...]

Runs ``lusifer demo`` (the results cache off, so the baselines are scored too) into
``--output`` (a finished run there is reused; KEY=VALUE are training-config overrides, as
``lusifer demo`` and ``benchmarks/demo_figures.py`` take them), then prints:
- the machine: cores, torch threads, and a measured fp32 matmul GFLOP/s (compare two
  machines' figures with it);
- each phase's minutes, as ``lusifer demo`` timed them;
- stage-2 training examples/s (the median of the logged rates);
- evaluation throughput against plain ``encode``: the seconds that encoding the
  evaluation's distinct texts takes with each model's own ``encode`` (the trained model
  with its LoRA merged, as the demo evaluates it; same backends, same batch size), divided
  by the evaluation's seconds. 1.0 would mean evaluation costs no
  more than encoding its texts once; the goal is at least 0.7.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import matmul_gflops  # noqa: E402


def distinct_texts(suite: Path) -> dict[str, list[str]]:
    """The distinct texts (by kind) that evaluating the sampled suite asks a model for."""
    from lusifer.evaluation.local_tasks import read_task_spec
    from lusifer.evaluation.prefetch import task_texts

    by_kind: dict[str, dict[str, None]] = {}
    for task in sorted(p for p in suite.iterdir() if (p / "task.json").is_file()):
        for kind, texts in task_texts(read_task_spec(task)).items():
            by_kind.setdefault(kind, {}).update(dict.fromkeys(texts))
    return {kind: list(texts) for kind, texts in by_kind.items()}


def plain_encode_seconds(
    out: Path, texts: dict[str, list[str]], target: str = "minilm"
) -> dict[str, float]:
    """Seconds each of the demo's three models takes to ``encode`` ``texts`` once, as the
    demo evaluated them: the trained model merged (``run_demo`` merges it before
    evaluating), every model on the backend the demo chose."""
    from lusifer.demo import ENCODER, TARGETS, _baselines, _fast_encoder
    from lusifer.model import LusiferModel

    model = LusiferModel.from_pretrained(out / "model")
    model.merge_and_unload()  # as run_demo does before it evaluates
    baselines, _ = _baselines(
        {name: name for name in (TARGETS[target], ENCODER)}, model.config.max_length
    )
    models = {"LUSIFER-mini": _fast_encoder(model, out / "model"), **baselines}
    spent = {}
    for name, encoder in models.items():
        start = time.perf_counter()
        for kind, batch in texts.items():
            encoder.encode(batch, kind=kind, batch_size=64, normalize=True, show_progress=False)
        spent[name] = time.perf_counter() - start
    return spent


def stage2_examples_per_s(out: Path) -> float | None:
    log = out / "train" / "representation" / "log.jsonl"
    if not log.is_file():
        return None
    rates = [json.loads(line).get("examples_per_s") for line in log.read_text().splitlines()]
    rates = [r for r in rates if r]
    return statistics.median(rates) if rates else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=Path("lusifer-demo-time"))
    parser.add_argument("--quick", action="store_true", help="the quick demo")
    parser.add_argument("--target", default="minilm", choices=["minilm", "smollm2"])
    parser.add_argument("--routed", action="store_true", help="the routed recipe")
    parser.add_argument("overrides", nargs="*", help="training-config overrides, e.g. run.seed=1")
    args = parser.parse_args()

    import torch

    from lusifer.demo import run_demo

    gflops = matmul_gflops()
    print(
        f"machine: {os.cpu_count()} cores, torch {torch.get_num_threads()} threads, "
        f"fp32 matmul {gflops:.0f} GFLOP/s",
        flush=True,
    )
    summary_file = args.output / "summary.json"
    if not summary_file.is_file():
        finished = run_demo(
            args.output,
            quick=args.quick,
            target=args.target,
            overrides=args.overrides,
            use_cache=False,
            routed=args.routed,
        )
        if finished is None:
            raise SystemExit("the demo was interrupted; run again to resume")
    timings = json.loads(summary_file.read_text())["timings_s"]
    print("| phase | minutes |\n|---|---|")
    for phase, seconds in timings.items():
        print(f"| {phase} | {seconds / 60:.1f} |")
    rate = stage2_examples_per_s(args.output)
    if rate:
        print(f"stage-2 training: {rate:.1f} examples/s (median of the logged rates)")

    texts = distinct_texts(args.output / "suite")
    spent = plain_encode_seconds(args.output, texts, args.target)
    n = sum(len(t) for t in texts.values())
    for name, seconds in spent.items():
        print(f"plain encode, {name}: {n} distinct texts in {seconds:.1f} s ({n / seconds:.0f}/s)")
    ratio = sum(spent.values()) / timings["evaluation"]
    print(
        f"evaluation {timings['evaluation'] / 60:.1f} min for 3 x {n} distinct texts; plain "
        f"encode of the same {sum(spent.values()) / 60:.1f} min: ratio {ratio:.2f} "
        f"({'PASS' if ratio >= 0.7 else 'FAIL'} >= 0.7)"
    )
    total = timings.get("total (excluding conversion)", 0) / 60
    verdict = "PASS" if total <= 15 else "FAIL"
    print(f"demo total (excluding conversion) {total:.1f} min ({verdict} <= 15)")


if __name__ == "__main__":
    main()
