"""Rehearse a run file before renting GPUs: every stage for a few steps, on tiny backbones
of the same families, on local fixture copies of every data set it names.

A fixture has the columns, types and quirks of the data set it stands for (wikitext's
empty lines, list columns, numbered ``negative_1..N`` columns, several positives), so a
config that names a wrong column, a subset with one negative where it asks for 32, or a
reader that chokes on an empty row fails here in minutes instead of on the first GPU
hour. ``lusifer train CONFIG --rehearse --output DIR [--processes 2]`` writes
``DIR/rehearsal.json``.
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..files import atomic_write
from .config import DataSource, StageConfig, TrainConfig
from .data import TASKS, alignment_batch, load_sources

REHEARSAL_FILE = "rehearsal.json"
REHEARSAL_STEPS = 3
REHEARSAL_BATCH = 4  # global batch while rehearsing (a multiple of the process count)
FIXTURE_ROWS = 64
MIX_DRAWS_PER_SOURCE = 5000  # stage-1 draws per source behind the reported task mix

_NOUNS = "river garden teacher window market engine letter village doctor bridge kitchen".split()
_VERBS = "opens finds carries builds watches paints follows repairs explains visits".split()
_ADJS = "old quiet bright small busy narrow warm early careful simple".split()


def english_sentence(rng: random.Random, words: int = 12) -> str:
    """A plain English sentence (fixture text the English-only guard accepts)."""
    parts: list[str] = []
    while len(parts) < words:
        parts += [
            "the",
            rng.choice(_ADJS),
            rng.choice(_NOUNS),
            rng.choice(_VERBS),
            "the",
            rng.choice(_NOUNS),
            "in",
            "the",
            rng.choice(_ADJS),
            rng.choice(_NOUNS),
        ]
    return " ".join(parts[:words]).capitalize() + "."


# --------------------------------------------------------------------------- schemas
# A schema makes FIXTURE_ROWS rows (a dict of columns) shaped like the real data set.
Schema = Callable[[random.Random, int], dict[str, list[Any]]]


def _text(rng: random.Random, n: int = 12) -> str:
    return english_sentence(rng, n)


def _question(rng: random.Random) -> str:
    return f"what {rng.choice(_VERBS).removesuffix('s')} the {rng.choice(_NOUNS)}"


def _wikitext(rng: random.Random, n: int) -> dict[str, list[Any]]:
    rows = []
    for i in range(n):  # about a third empty, headings, paragraphs: as wikitext-103-raw
        rows.append(
            ""
            if i % 3 == 0
            else f" = {rng.choice(_NOUNS).title()} = \n"
            if i % 7 == 1
            else " " + _text(rng, 30) + " \n"
        )
    return {"text": rows}


def _imdb(rng: random.Random, n: int) -> dict[str, list[Any]]:
    return {"text": [_text(rng, 40) for _ in range(n)], "label": [i % 2 for i in range(n)]}


def _triplet(query: str, negatives: int | None) -> Schema:
    """query/anchor, positive and one ``negative`` column, or ``negative_1..N``."""

    def make(rng: random.Random, n: int) -> dict[str, list[Any]]:
        data: dict[str, list[Any]] = {
            query: [_question(rng) for _ in range(n)],
            "positive": [_text(rng, 30) for _ in range(n)],
        }
        if negatives == 1:
            data["negative"] = [_text(rng, 30) for _ in range(n)]
        elif negatives:
            for k in range(1, negatives + 1):
                data[f"negative_{k}"] = [_text(rng, 30) for _ in range(n)]
        return data

    return make


def _pairs(query: str, positive: str) -> Schema:
    def make(rng: random.Random, n: int) -> dict[str, list[Any]]:
        return {
            query: [_question(rng) for _ in range(n)],
            positive: [_text(rng, 30) for _ in range(n)],
        }

    return make


def _authors_set(rng: random.Random, n: int) -> dict[str, list[Any]]:
    """The authors' Hieuman/* sets: query, positive (list), negative (list), cluster."""
    return {
        "query": [_question(rng) for _ in range(n)],
        "positive": [[_text(rng, 30) for _ in range(1 + i % 4)] for i in range(n)],
        "negative": [[_text(rng, 25) for _ in range(40 if i % 5 else 20)] for i in range(n)],
        "cluster": [i % 7 for i in range(n)],
    }


def _mined_jsonl(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """What ``lusifer mine`` writes: query, positive, negatives (ranks 31..128)."""
    return [
        {
            "query": _question(rng),
            "positive": _text(rng, 30),
            "negatives": [_text(rng, 25) for _ in range(97)],
        }
        for _ in range(n)
    ]


# (hub id, subset) -> schema; None matches any subset. Checked against the data sets'
# cards; the Hieuman/* sets share one layout.
KNOWN_SCHEMAS: dict[tuple[str, str | None], Schema] = {
    ("Salesforce/wikitext", None): _wikitext,
    ("stanfordnlp/imdb", None): _imdb,
    ("sentence-transformers/msmarco-bm25", "triplet"): _triplet("query", 1),
    ("sentence-transformers/msmarco-bm25", "triplet-50"): _triplet("query", 50),
    ("sentence-transformers/natural-questions", None): _pairs("query", "answer"),
    ("sentence-transformers/squad", None): _pairs("question", "answer"),
    ("sentence-transformers/all-nli", "triplet"): _triplet("anchor", 1),
    ("sentence-transformers/all-nli", "pair"): _triplet("anchor", 0),
}


def schema_for(source: DataSource) -> tuple[Schema, bool]:
    """The fixture schema of a hub source, and whether it is known (else guessed from the
    source's own field names)."""
    name, subset = source.hf_dataset or "", source.hf_subset
    for key in ((name, subset), (name, None)):
        if key in KNOWN_SCHEMAS:
            return KNOWN_SCHEMAS[key], True
    if name.startswith("Hieuman/"):
        return _authors_set, True

    def guessed(rng: random.Random, n: int) -> dict[str, list[Any]]:
        if source.format == "texts":
            return {source.hf_text_field: [_text(rng, 30) for _ in range(n)]}
        data = _pairs(source.hf_query_field, source.hf_positive_field)(rng, n)
        negatives = source.hf_negatives_field
        if isinstance(negatives, str) and "*" not in negatives:
            data[negatives] = [[_text(rng, 25) for _ in range(8)] for _ in range(n)]
        return data

    return guessed, False


def _write_fixture(source: DataSource, folder: Path) -> tuple[DataSource, dict]:
    """Write (once) the fixture for one source; return the source pointed at it, and a
    note. A fixture's rows depend only on its name, so every process sees the same."""
    import datasets

    local = copy.deepcopy(source)
    if source.path:
        if Path(source.path).is_file():
            return local, {"fixture": None, "schema": "the local file itself"}
        target = folder / Path(source.path).name
        if not target.is_file():
            from ..data.readers import write_jsonl

            write_jsonl(target, _mined_jsonl(random.Random(target.name), FIXTURE_ROWS))
        local.path, local.name = str(target), source.name or source.path
        return local, {"fixture": str(target), "schema": "lusifer pair JSONL (lusifer mine)"}
    if source.bundled:
        return local, {"fixture": None, "schema": "bundled with lusifer"}
    schema, known = schema_for(source)
    slug = f"{source.hf_dataset}-{source.hf_subset or 'default'}".replace("/", "--")
    target = folder / slug
    if not (target / "dataset_dict.json").is_file():
        ds = datasets.Dataset.from_dict(schema(random.Random(slug), FIXTURE_ROWS))
        datasets.DatasetDict({source.hf_split: ds}).save_to_disk(str(target))
    local.hf_dataset, local.hf_subset = str(target), None
    local.name = source.name or source.hf_dataset
    return local, {"fixture": str(target), "schema": "known" if known else "guessed"}


# --------------------------------------------------------------------------- config
_FAMILIES = (
    ("mistral", "mistral"),
    ("llama", "llama"),
    ("smollm", "llama"),
    ("qwen", "qwen2"),
    ("xlm", "xlmr"),
    ("roberta", "xlmr"),
)


def tiny_family(name: str, *, encoder: bool) -> str:
    """The tiny backbone standing in for ``name`` (same family where one exists)."""
    lowered = name.lower()
    if lowered.startswith("tiny:"):
        return name
    for marker, tiny in _FAMILIES:
        if marker in lowered:
            return f"tiny:{tiny}"
    return "tiny:xlmr" if encoder else "tiny:bert"


def rehearsal_config(
    config: TrainConfig, output: Path, world_size: int
) -> tuple[TrainConfig, dict]:
    """The same run on tiny backbones, a few steps per stage, small batches and lengths;
    negatives, positives, losses, GradCache and data layout as configured."""
    cfg = copy.deepcopy(config)
    backbones = {"encoder": (config.model.encoder, tiny_family(config.model.encoder, encoder=True))}
    backbones["target"] = (config.model.target, tiny_family(config.model.target, encoder=False))
    cfg.model.encoder, cfg.model.target = backbones["encoder"][1], backbones["target"][1]
    cfg.model.encoder_signature, cfg.model.target_signature = {}, {}
    # the tiny tokenizers read bytes: long enough for an instruction and its text
    cfg.model.max_length = min(cfg.model.max_length, 192)
    if cfg.model.connector_hidden_size is not None:
        cfg.model.connector_hidden_size = min(cfg.model.connector_hidden_size, 64)
    cfg.run.output_dir = str(output / "run")
    cfg.run.mixed_precision = "no"
    cfg.run.max_length = min(cfg.run.max_length, 192)
    cfg.run.save_every = 2
    cfg.run.log_every = 1
    cfg.run.report_to = []
    batch = max(world_size, REHEARSAL_BATCH // world_size * world_size)
    for _, objective, stage in cfg.stage_list():
        stage.steps, stage.epochs = REHEARSAL_STEPS, None
        stage.batch_size = batch
        stage.warmup_steps = 1
        stage.connector_init_examples = min(stage.connector_init_examples, 64)
        stage.objectives.max_target_length = min(stage.objectives.max_target_length, 96)
        # the micro-batch paths run in every rehearsal: accumulation (stage 1), GradCache (2)
        local = batch // world_size
        if objective == "alignment":
            stage.micro_batch = max(1, min(stage.micro_batch or local, local // 2))
        else:
            stage.micro_batch = min(stage.micro_batch or 16, 16)
    return cfg, {k: {"configured": a, "rehearsed": b} for k, (a, b) in backbones.items()}


def _task_mix(stage: StageConfig, run, sources) -> dict[str, dict[str, float]]:
    """Stage-1 task fractions per source over the run's own first draws (the sampler is a
    function of seed and step): as many steps at the configured global batch as it
    takes for every source to have ``MIX_DRAWS_PER_SOURCE`` examples."""
    counts: dict[str, dict[str, int]] = {s.name: dict.fromkeys(TASKS, 0) for s in sources}
    step = 0
    while min(sum(c.values()) for c in counts.values()) < MIX_DRAWS_PER_SOURCE and step < 100_000:
        step += 1
        for ex in alignment_batch(
            sources, stage.batch_size, run.seed, step, stage.dataset_sampling
        ):
            counts[ex.source][ex.task] += 1
    return {
        source: {task: n / max(sum(c.values()), 1) for task, n in c.items()}
        | {"draws": sum(c.values())}
        for source, c in sorted(counts.items())
    }


def _read_log(stage_dir: Path) -> list[dict]:
    path = stage_dir / "log.jsonl"
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line]
        if path.exists()
        else []
    )


def rehearse(config: TrainConfig, output: str | Path) -> dict[str, Any]:
    """Run the rehearsal (in every process of a torchrun/accelerate launch) and, on the
    main process, write and return ``output/rehearsal.json``."""
    import torch
    from accelerate import Accelerator

    from .pipeline import run_training

    output = Path(output)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    world = accelerator.num_processes
    cfg, backbones = rehearsal_config(config, output, world)
    fixtures: dict[str, dict] = {}
    folder = output / "fixtures"
    with accelerator.main_process_first():
        folder.mkdir(parents=True, exist_ok=True)
        for stage_name, _, stage in cfg.stage_list():
            replaced = []
            for source in stage.data:
                local, note = _write_fixture(source, folder)
                fixtures[f"{stage_name}: {source.hf_dataset or source.path or source.bundled}"] = (
                    note
                )
                replaced.append(local)
            stage.data = replaced
    run_training(cfg, accelerator=accelerator)
    if not accelerator.is_main_process:
        return {}
    report: dict[str, Any] = {"world_size": world, "backbones": backbones, "stages": []}
    for (name, objective, stage), (_, _, original) in zip(
        cfg.stage_list(), config.stage_list(), strict=True
    ):
        stage_dir = Path(cfg.run.output_dir) / name
        summary = json.loads((stage_dir / "summary.json").read_text())
        log = _read_log(stage_dir)
        entry = {
            "name": name,
            "objective": objective,
            "steps": summary["steps"],
            "loss_first": log[0]["loss"] if log else None,
            "loss_last": log[-1]["loss"] if log else None,
            "negatives_per_query": summary["negatives_per_query"],
            "positives_per_query": summary["positives_per_query"],
            "negatives_per_query_mean": summary["negatives_per_query_mean"],
            "positives_per_query_mean": summary["positives_per_query_mean"],
            "rows_skipped": summary["rows_skipped"],
        }
        if objective == "alignment":
            # the mix at the configured global batch, on the fixture rows
            real = copy.deepcopy(stage)
            real.batch_size = original.batch_size
            entry["task_mix"] = _task_mix(real, cfg.run, load_sources(stage.data, cfg.run))
        report["stages"].append(entry)
    report["fixtures"] = fixtures
    atomic_write(output / REHEARSAL_FILE, json.dumps(report, indent=2))
    return report


def launch_processes(argv: list[str], processes: int) -> int:
    """Re-run this command under torchrun with ``processes`` local processes (CPU: gloo)."""
    import subprocess
    import sys

    if processes < 1:
        raise ConfigError(f"--processes must be >= 1, got {processes}")
    env = dict(os.environ, OMP_NUM_THREADS="1", LUSIFER_REHEARSAL_CHILD="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "lusifer.cli",
        *argv,
    ]
    return subprocess.call(command, env=env)
