"""Ablations as in the paper, on LUSIFER-mini, in one run and one table.

    .venv/bin/python benchmarks/ablations.py [--output DIR] [--scale 1.0] [--limit 100]

Variants (all trained on the bundled English data, evaluated on a sample of the bundled
offline suite: cross-lingual retrieval in every language, English retrieval and
classification in the training domain and out of it, topic classification):
- full: both stages (the demo recipe);
- without stage 1: no alignment (random connector), representation only;
- without stage 2: alignment only;
- connector only: no LoRA trained in either stage;
- without target distillation: stage 2 with InfoNCE alone (the paper's stage 2);
- target distillation x3, x10: stage 2 weighs the target distillation 3 or 10 (the recipe: 1);
- without connector centering: the connector reads the raw encoder states (the paper);
- with instructions: trained and evaluated with the paper's instruction prompts;
- without help paragraphs: the bundled English data without its LibreOffice help pairs;
- SmolLM2 target, distillation alignment vs the paper's LM alignment (both then stage 2).
``--scale`` multiplies every stage's steps (0.3 for a quicker, rougher table).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _without_help(stage: str, extra: str = "") -> str:
    """An override giving ``stage`` the demo's bundled data minus the help paragraphs."""
    sets = ("debian-descriptions", "wordnet-definitions", "wordnet-examples")
    return (
        f"{stage}.data=[" + ", ".join(f"{{bundled: {n}, limit: 20000{extra}}}" for n in sets) + "]"
    )


VARIANTS: dict[str, tuple[str, list[str], list[str] | None]] = {
    # name: (demo target, overrides, stages)
    "full (minilm)": ("minilm", [], None),
    "without stage 1": ("minilm", [], ["representation"]),
    "without stage 2": ("minilm", [], ["alignment"]),
    "connector only": (
        "minilm",
        ["alignment.train_target_lora=false", "representation.train_target_lora=false"],
        None,
    ),
    "without target distillation": ("minilm", ["representation.target_distill=0.0"], None),
    # the English / cross-lingual trade-off (docs/research/english-out-of-domain.md): the weight on
    # the target's own embeddings of the same English text (the demo recipe: 1)
    "target distillation x3": ("minilm", ["representation.target_distill=3.0"], None),
    "target distillation x10": ("minilm", ["representation.target_distill=10.0"], None),
    "without connector centering": ("minilm", ["model.connector_centering=0.0"], None),
    "with instructions": ("minilm", ["model.use_instructions=true"], None),
    "without help paragraphs": (
        "minilm",
        [
            _without_help("alignment", ", reconstruct_prob: 0.5, query_to_passage_prob: 0.45"),
            _without_help("representation"),
        ],
        None,
    ),
    "smollm2, distillation alignment": (
        "smollm2",
        ["alignment.objectives.lm=0.0", "alignment.objectives.distill=1.0"],
        None,
    ),
    "smollm2, LM alignment": (
        "smollm2",
        ["alignment.objectives.lm=1.0", "alignment.objectives.distill=0.0"],
        None,
    ),
}
TASKS = (
    "XlingRetrieval.",
    "DebianDescriptionRetrieval.",
    "DebianSectionClassification.",
    "HelpTopicClassification.",
    # English out of the training domain (scripts/build_english_ood.py)
    "BiblePassageRetrieval.",
    "BibleDivisionClassification.",
    "FortuneTopicClassification.",
    "FortuneTopicClustering.",
)


def scaled_steps(steps: int, scale: float) -> int:
    """A stage's steps times ``scale``, at least 1 unless the stage has none (the demo's
    stage 1 is the least-squares start alone: 0 gradient steps)."""
    return 0 if steps == 0 else max(1, round(steps * scale))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=Path("lusifer-ablations"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps")
    parser.add_argument("--limit", type=int, default=100, help="test items per task")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    args = parser.parse_args()

    from lusifer.demo import demo_config_path
    from lusifer.evaluation.local_tasks import offline_suite_dirs, read_task_spec
    from lusifer.evaluation.runner import evaluate
    from lusifer.evaluation.sampling import sample_task_dirs
    from lusifer.evaluation.suites import split_english_ood
    from lusifer.model import LusiferModel, PlainEmbedder
    from lusifer.training import load_train_config, run_training

    tasks = sample_task_dirs(
        [d for d in offline_suite_dirs() if d.name.startswith(TASKS)],
        args.output / "suite",
        args.limit,
    )
    ood = [read_task_spec(d).name for d in split_english_ood(tasks)[1]]
    rows = {}
    for name, (target, overrides, stages) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        slug = name.replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")
        base = load_train_config(demo_config_path(target))
        steps = [
            f"{stage}.steps={scaled_steps(getattr(base, stage).steps, args.scale)}"
            for stage in ("alignment", "representation")
        ]
        config = load_train_config(
            demo_config_path(target),
            [*steps, *overrides],
            **{"run.output_dir": str(args.output / slug)},
        )
        # a finished variant is not trained again and keeps the time it took to train
        timing = args.output / slug / "train_seconds.json"
        tic = time.perf_counter()
        trained = run_training(config, stages=stages, resume=True)
        if not timing.is_file():
            timing.write_text(json.dumps({"train_s": time.perf_counter() - tic}))
        train_s = json.loads(timing.read_text())["train_s"]
        model = LusiferModel.from_pretrained(trained)
        model.name = name
        report = evaluate(
            [model], task_dirs=tasks, output_dir=args.output / slug / "eval", bootstrap=0
        )
        rows[name] = {"train_s": train_s, **_figures(report.summaries[name], ood)}
        print(f"{name}: {rows[name]}", flush=True)
    names = ["all-MiniLM-L6-v2", "multilingual-e5-small"]
    if any(VARIANTS[n][0] == "smollm2" for n in rows):
        names.append("SmolLM2-135M-Instruct")
    # the baselines read as many tokens per text as the LUSIFER variants (as in the demo)
    max_length = load_train_config(demo_config_path("minilm")).model.max_length
    baselines = evaluate(
        [PlainEmbedder.load(n, max_length=max_length) for n in names],
        task_dirs=tasks,
        output_dir=args.output / "baselines",
        bootstrap=0,
    )
    for name, summary in baselines.summaries.items():
        rows[f"{name} alone"] = {"train_s": 0.0, **_figures(summary, ood)}
    (args.output / "ablations.json").write_text(json.dumps(rows, indent=2))
    print(
        "| variant | cross-lingual retrieval | English in domain | English out of domain "
        "| topic classification (non-en) | train min |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['xling']:.1f} | {r['en']:.1f} | {r['en_ood']:.1f} | {r['topic']:.1f} "
            f"| {r['train_s'] / 60:.1f} |"
        )


def _figures(summary, ood: list[str]) -> dict[str, float]:
    from lusifer.evaluation.suites import english_by_domain

    def mean(values):
        values = list(values)
        return sum(values) / len(values) if values else float("nan")

    tasks = summary.tasks.values()
    english = english_by_domain(summary, ood)
    nan = float("nan")
    return {
        "xling": mean(t.score for t in tasks if t.crosslingual and t.type == "retrieval"),
        "en": nan if english["in_domain"] is None else english["in_domain"],
        "en_ood": nan if english["out_of_domain"] is None else english["out_of_domain"],
        "topic": mean(
            t.score for t in tasks if t.name.startswith("HelpTopic") and "en" not in t.languages
        ),
    }


if __name__ == "__main__":
    main()
