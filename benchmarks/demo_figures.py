"""The demo's goals, measured in one run of the full demo (not a timed test).

    .venv/bin/python benchmarks/demo_figures.py [--output DIR] [--quick] [--target minilm] [--routed] [KEY=VALUE ...]

Runs ``lusifer demo`` (resuming whatever is already in DIR, so use a fresh DIR for a
wall-time figure; converted backbones are cached first and their conversion, like the
baselines' first ONNX export, is timed apart; KEY=VALUE are training-config overrides, as ``lusifer demo`` takes them) and
prints the goals with PASS/FAIL:
- wall time (training + evaluation) <= 15 minutes on the machine it runs on;
- cross-lingual retrieval: LUSIFER-mini closes >= 90% of the target-alone -> encoder-alone
  gap on the mean nDCG@10, and no language falls below the target alone;
- English: LUSIFER-mini >= target alone - 1 point on the English average, and on the
  English-only tasks in the training domain and out of it (each);
- non-English topic classification and clustering: above the target alone in every language.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="demo folder (default: a fresh temp dir)"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--target", default="minilm", choices=["minilm", "smollm2"])
    parser.add_argument("--routed", action="store_true", help="the routed recipe")
    parser.add_argument("overrides", nargs="*", help="e.g. representation.target_distill=2.0")
    args = parser.parse_args()

    from lusifer.demo import ENCODER, LUSIFER_NAME, TARGETS, _ensure_backbones, run_demo

    tic = time.perf_counter()
    converted = _ensure_backbones([ENCODER, TARGETS[args.target]])
    conversion = time.perf_counter() - tic
    output = args.output or Path(tempfile.mkdtemp(prefix="lusifer-demo-bench-"))
    tic = time.perf_counter()
    result = run_demo(
        output,
        quick=args.quick,
        target=args.target,
        overrides=args.overrides,
        show_progress=True,
        routed=args.routed,
    )
    wall = time.perf_counter() - tic
    if result is None:
        raise SystemExit("interrupted")
    # first-run ONNX exports of the baselines are a one-off cost, like the conversion
    exports = {k: v for k, v in result.timings.items() if k.startswith("onnx export ")}
    wall -= sum(exports.values())
    conversion += sum(exports.values())
    converted.update(exports)
    report, figures = result.report, result.figures
    target_name = next(m for m in report.models if m.endswith("(target alone)"))
    ours, tgt = report.summaries[LUSIFER_NAME], report.summaries[target_name]

    def topic_ok(kind: str) -> tuple[bool, str]:
        rows = []
        for key, task in ours.tasks.items():
            if task.type == kind and "en" not in task.languages and not task.crosslingual:
                rows.append((task.languages[0], task.score, tgt.tasks[key].score))
        worst = min((a - b for _, a, b in rows), default=0.0)
        detail = ", ".join(f"{lang} {a - b:+.1f}" for lang, a, b in sorted(rows))
        return bool(rows) and worst > 0, detail or "no such tasks"

    xl = figures["crosslingual"]
    en = figures["english"]
    cls_ok, cls_detail = topic_ok("classification")
    clu_ok, clu_detail = topic_ok("clustering")
    goals = [
        ("wall time, training + evaluation (min)", f"{wall / 60:.1f}", "<= 15", wall <= 15 * 60),
        (
            "cross-lingual gap closed (%)",
            f"{100 * xl['gap_closed']:.1f}",
            ">= 90",
            xl["gap_closed"] >= 0.9,
        ),
        (
            "languages below the target alone",
            ", ".join(xl["below_target"]) or "none",
            "none",
            not xl["below_target"],
        ),
        (
            "English average: LUSIFER-mini - target alone",
            f"{en['lusifer'] - en['target']:+.2f}",
            ">= -1",
            en["lusifer"] - en["target"] >= -1,
        ),
        *(
            (
                f"English {label}: LUSIFER-mini - target alone",
                f"{part['lusifer'] - part['target']:+.2f}",
                ">= -1",
                part["lusifer"] - part["target"] >= -1,
            )
            for label, part in (
                ("in the training domain", figures["english_in_domain"]),
                ("out of the training domain", figures["english_out_of_domain"]),
            )
            if part["lusifer"] is not None and part["target"] is not None
        ),
        ("topic classification vs target, per language", cls_detail, "all > 0", cls_ok),
        ("topic clustering vs target, per language", clu_detail, "all > 0", clu_ok),
    ]
    print()
    print(
        f"first-run backbone conversion and ONNX export: {conversion:.1f} s ({', '.join(converted) or 'already cached'})"
    )
    print(
        f"cross-lingual nDCG@10: target alone {xl['target']:.1f}, LUSIFER-mini {xl['lusifer']:.1f}, "
        f"encoder alone {xl['encoder']:.1f}"
    )
    connector = figures.get("connector_route")
    if connector:  # a routed model: the same model with every text on the connector
        xc = connector["crosslingual"]
        print(
            f"connector route alone: cross-lingual {xc['lusifer']:.1f} "
            f"({100 * xc['gap_closed']:.1f}% of the gap), English in the training domain "
            f"{connector['english_in_domain']:.2f}, out of it {connector['english_out_of_domain']:.2f}"
        )
    print("| goal | measured | wanted | |")
    print("|---|---|---|---|")
    for name, measured, wanted, ok in goals:
        print(f"| {name} | {measured} | {wanted} | {'PASS' if ok else 'FAIL'} |")
    print(f"\nreports: {output / 'eval'}")


if __name__ == "__main__":
    main()
