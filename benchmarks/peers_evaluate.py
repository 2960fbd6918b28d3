"""Evaluation against mteb: ``lusifer evaluate MODEL`` on bundled offline tasks against
``mteb.evaluate`` of the same model on the same tasks, registered as an mteb user would
(one ``AbsTask`` subclass per task with its ``TaskMetadata``:
``lusifer.evaluation.local_mteb.make_mteb_task``), the model on the same backend (lusifer's
encoder through its mteb adapter, ``MtebEncoder``). Each side runs in its own process,
first run with empty caches (a fresh ``LUSIFER_EVAL_CACHE``, a fresh mteb results cache):
wall time including imports and model loading, and every task's main score. A third run,
what an mteb user runs for a plain backbone: ``mteb.evaluate(SentenceTransformer(folder))``,
which encodes every task's texts on its own (``--no-stock`` skips it).

Not a test: prints one table and PASS/FAIL against the goals (main scores identical to
1e-4; lusifer <= 0.7x mteb's time).

    taskset -c 1 .venv/bin/python benchmarks/peers_evaluate.py              # 8 tasks
    .venv/bin/python benchmarks/peers_evaluate.py --all                     # --suite offline
    .venv/bin/python benchmarks/peers_evaluate.py --tasks Bitext.en-fr XlingRetrieval.en-fr
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import SUITE, machine_line, verdict  # noqa: E402

# two languages, every task type: a run of a few minutes on one core
QUICK = [
    f"{name}.{lang}" for name in ("Bitext", "XlingRetrieval") for lang in ("en-fr", "en-hi")
] + [
    f"{name}.{lang}"
    for name in ("HelpTopicClassification", "HelpTopicClustering")
    for lang in ("fr", "hi")
]

MTEB_SIDE = """
import json, sys, time
start = time.perf_counter()
import mteb
from mteb.cache import ResultCache
import lusifer
from lusifer.evaluation.local_mteb import make_mteb_task
from lusifer.evaluation.local_tasks import read_task_spec
from lusifer.evaluation.mteb_model import MtebEncoder
model_ref, backend, threads, batch, cache, out, *dirs = sys.argv[1:]
model = MtebEncoder(lusifer.load(model_ref, backend=backend, threads=int(threads)))
tasks = [make_mteb_task(read_task_spec(d)) for d in dirs]
result = mteb.evaluate(model, tasks, cache=ResultCache(cache), co2_tracker=False,
                       show_progress_bar=False, encode_kwargs={"batch_size": int(batch)})
scores = {}
for task_result in result.task_results:
    for row in task_result.scores["test"]:
        scores[f"{task_result.task_name}/{row['hf_subset']}"] = float(row["main_score"])
json.dump({"scores": scores, "errors": [str(e.exception) for e in result.exceptions]},
          open(out, "w"))
"""

# what an mteb user runs for a plain backbone: the stock sentence-transformers model (its own
# token limit and pooling) handed to mteb.evaluate, which encodes each task on its own
MTEB_STOCK = MTEB_SIDE.replace(
    "model = MtebEncoder(lusifer.load(model_ref, backend=backend, threads=int(threads)))",
    "import torch\n"
    "from sentence_transformers import SentenceTransformer\n"
    "from lusifer.backbones import resolve_backbone\n"
    "torch.set_num_threads(int(threads))\n"
    "model = SentenceTransformer(resolve_backbone(model_ref), device='cpu')",
)
assert MTEB_STOCK != MTEB_SIDE


def run(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd[:4])} ... failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return time.perf_counter() - start


def lusifer_side(dirs: list[Path], args, work: Path, env: dict) -> tuple[float, dict]:
    out = work / "lusifer-out"
    cmd = [sys.executable, "-m", "lusifer.cli", "evaluate", args.model, "-o", str(out)]
    cmd += ["--backend", args.backend, "--threads", str(args.threads)]
    cmd += ["--batch-size", str(args.batch_size), "--bootstrap", str(args.bootstrap)]
    cmd += ["--suite", "offline"] if args.all else [x for d in dirs for x in ("--task-dir", str(d))]
    seconds = run(cmd, {**env, "LUSIFER_EVAL_CACHE": str(work / "lusifer-cache")})
    results = json.loads((out / "results.json").read_text())
    (summary,) = results["results"].values()
    scores = {
        f"{task['name']}/{subset}": value / 100
        for task in summary["tasks"].values()
        for subset, value in task["subset_scores"].items()
    }
    return seconds, scores


def mteb_side(
    dirs: list[Path], args, work: Path, env: dict, script: str = MTEB_SIDE
) -> tuple[float, dict]:
    out = work / f"mteb-scores-{len(script)}.json"
    cache = work / f"mteb-cache-{len(script)}"
    cmd = [sys.executable, "-c", script, args.model, args.backend, str(args.threads)]
    cmd += [str(args.batch_size), str(cache), str(out), *map(str, dirs)]
    seconds = run(cmd, env)
    data = json.loads(out.read_text())
    if data["errors"]:
        raise SystemExit(f"mteb.evaluate failed: {data['errors'][0]}")
    return seconds, data["scores"]


def report(dirs, args, t_ours, ours, t_mteb, theirs, stock=None) -> None:
    common = sorted(set(ours) & set(theirs))
    diffs = [abs(ours[k] - theirs[k]) for k in common]
    worst = max(diffs) if diffs else float("nan")
    print(
        f"\n{args.model} on {len(dirs)} bundled task(s) ({len(common)} scored subsets), backend "
        f"{args.backend}, {args.threads} thread(s), batch size {args.batch_size}, lusifer "
        f"--bootstrap {args.bootstrap}; each side a fresh process with empty caches\n"
    )
    print("| run | wall s | subsets scored |\n|---|---:|---:|")
    print(f"| lusifer evaluate | {t_ours:.1f} | {len(ours)} |")
    print(f"| mteb.evaluate (same tasks, same encoder) | {t_mteb:.1f} | {len(theirs)} |")
    if stock:
        print(f"| mteb.evaluate(SentenceTransformer) | {stock[0]:.1f} | {len(stock[1])} |")
    ratio = t_ours / t_mteb
    print("\n| goal | value | target | result |\n|---|---:|---:|---|")
    print(
        f"| time lusifer / mteb, same encoder | {ratio:.2f} | <= 0.7 | {verdict(ratio, '<=', 0.7)} |"
    )
    if stock:
        ratio = t_ours / stock[0]
        print(
            f"| time lusifer / mteb with sentence-transformers | {ratio:.2f} | <= 0.7 | "
            f"{verdict(ratio, '<=', 0.7)} |"
        )
    same = len(common) == len(ours) == len(theirs)
    ok = "PASS" if same and worst <= 1e-4 else "FAIL"
    print(
        f"| largest main-score difference ({len(common)} subsets) | {worst:.2e} | <= 1e-4 | {ok} |"
    )
    if stock:
        worst = max((abs(ours[k] - stock[1][k]) for k in common if k in stock[1]), default=0)
        print(f"| largest difference to stock sentence-transformers | {worst:.2e} | - | - |")
    for key in common:
        line = f"  {key}: lusifer {ours[key]:.6f}, mteb {theirs[key]:.6f}"
        print(line + (f", stock {stock[1][key]:.6f}" if stock and key in stock[1] else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--tasks", nargs="+", default=QUICK, help="Task folder names.")
    parser.add_argument("--all", action="store_true", help="Every bundled task (--suite offline).")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx", "auto"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--bootstrap", type=int, default=0, help="lusifer's CI resamples (mteb computes none)."
    )
    parser.add_argument(
        "--no-stock",
        dest="stock",
        action="store_false",
        help="Skip the third run: mteb.evaluate of the stock SentenceTransformer model "
        "(plain backbones only).",
    )
    args = parser.parse_args()
    dirs = sorted(d for d in SUITE.iterdir() if (d / "task.json").is_file())
    if not args.all:
        missing = sorted(set(args.tasks) - {d.name for d in dirs})
        if missing:
            raise SystemExit(f"no bundled task(s) {missing}")
        dirs = [d for d in dirs if d.name in args.tasks]
    print(machine_line(), flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="peers_evaluate_") as tmp:
        work = Path(tmp)
        t_ours, ours = lusifer_side(dirs, args, work, env)
        print(f"  lusifer evaluate: {t_ours:.1f}s", flush=True)
        t_mteb, theirs = mteb_side(dirs, args, work, env)
        print(f"  mteb.evaluate: {t_mteb:.1f}s", flush=True)
        stock = None
        if args.stock:
            stock = mteb_side(dirs, args, work, env, MTEB_STOCK)
            print(f"  mteb.evaluate(SentenceTransformer): {stock[0]:.1f}s", flush=True)
    report(dirs, args, t_ours, ours, t_mteb, theirs, stock)


if __name__ == "__main__":
    main()
