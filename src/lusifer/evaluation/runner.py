"""``evaluate``: run text encoders on a suite and/or local task dirs through mteb, resumably.

Each finished (model, task) result is written atomically to
``output_dir/runs/<model>/<task>.json``; a rerun with the same task definition skips it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..files import atomic_write
from ..types import TextEncoder, reads_instructions
from . import aggregation, distributed, significance
from .entry import TaskEntry
from .languages import get_language, order_languages
from .local_data import load_task_dirs
from .local_tasks import offline_suite_dirs
from .mteb_results import serialise_task_result, write_mteb_results
from .prefetch import prefetch_local_tasks
from .report import write_outputs
from .results import EvaluationReport, ModelSummary, TaskScore  # also re-exported from here
from .suites import SUITES, build_crosslingual_suite, build_lusifer_suite, local_task_entry

logger = logging.getLogger(__name__)

RUN_FORMAT = 1


# --------------------------------------------------------------------------- task selection


def resolve_tasks(
    suite: str | None,
    task_dirs: Sequence[Path] = (),
    languages: Sequence[str] | None = None,
    instructions: str = "reference",
) -> list[TaskEntry]:
    """The task entries of a suite plus local task dirs, restricted to ``languages``; the
    mteb suites take their instructions from the ``instructions`` table (local tasks carry
    their own)."""
    if languages is not None:
        for code in languages:
            get_language(code)
    entries: list[TaskEntry] = []
    dirs = [Path(d) for d in task_dirs]
    if suite is None:
        pass
    elif suite == "lusifer":
        entries += build_lusifer_suite(languages, instructions=instructions)
    elif suite == "lusifer-v2":
        entries += build_lusifer_suite(languages, newest_versions=True, instructions=instructions)
    elif suite == "crosslingual":
        entries += build_crosslingual_suite(languages, instructions=instructions)
    elif suite == "offline":
        bundled = offline_suite_dirs()
        if not bundled:
            raise FileNotFoundError(
                "the bundled offline suite (lusifer/resources/offline_suite/*/task.json) is not installed"
            )
        dirs = bundled + dirs
    else:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    for spec in load_task_dirs(dirs):
        entry = local_task_entry(spec)
        if languages is None or set(entry.languages) & set(languages):
            entries.append(entry)
    keys = [e.key for e in entries]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(
            f"task names must be unique across the suite and task dirs; repeated: {duplicates}"
        )
    if not entries:
        raise ValueError("no tasks to run: give --suite and/or --task-dir (and check --languages)")
    return entries


# --------------------------------------------------------------------------- running


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _write_json_atomic(path: Path, payload: Any) -> None:
    atomic_write(path, json.dumps(payload, ensure_ascii=False, indent=1))


def model_fingerprint(model: TextEncoder) -> str | None:
    """``model.fingerprint()`` when the encoder has one (LUSIFER, ONNX and plain models)."""
    method = getattr(model, "fingerprint", None)
    return str(method()) if callable(method) else None


def _load_finished(
    path: Path, entry: TaskEntry, model_name: str | None, identity: str | None
) -> dict[str, Any] | None:
    """A finished run of this task by this model (``model_name`` None: any name, as the
    cache keys on the fingerprint), or None."""
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # cut short anywhere, even inside a UTF-8 character
        return None
    if (
        not isinstance(run, dict)
        or run.get("format") != RUN_FORMAT
        or run.get("fingerprint") != entry.fingerprint
        or (model_name is not None and run.get("model") != model_name)
        or (identity is not None and run.get("model_fingerprint") != identity)
    ):
        return None  # another task definition or another model under the same name: redo
    return run


# Bump when a change to the code changes a task's scores (mteb's version is keyed too).
SCORING_VERSION = 1


def result_cache_path(model: TextEncoder, identity: str | None, entry: TaskEntry) -> Path | None:
    """Where the lusifer cache keeps this model's finished result on this task, keyed by
    the model's fingerprint and backend, the task's data hash and instruction (for a model
    that reads instructions) and the scoring code's version (``$LUSIFER_EVAL_CACHE``, else ``<lusifer cache>/evaluation``); None for a
    model without a fingerprint (it is never cached)."""
    if identity is None:
        return None
    import hashlib

    import mteb

    from ..backbones.cache import cache_root

    key = [
        type(model).__name__,
        str(getattr(model, "quantize", None)),
        identity,
        entry.key,
        entry.fingerprint,
        entry.instruction if reads_instructions(model) else None,
        RUN_FORMAT,
        SCORING_VERSION,
        mteb.__version__,
    ]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    root = os.environ.get("LUSIFER_EVAL_CACHE")
    return (Path(root) if root else cache_root() / "evaluation") / f"{digest}.json"


def _run_one(
    wrapper: Any, entry: TaskEntry, batch_size: int, show_progress: bool
) -> dict[str, Any]:
    import mteb

    task = entry.factory()
    started = time.monotonic()
    result = mteb.evaluate(
        wrapper,
        task,
        cache=None,
        overwrite_strategy="always",
        co2_tracker=False,
        show_progress_bar=False,
        encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress},
    )
    if result.exceptions:
        raise RuntimeError(f"{entry.name}: {result.exceptions[0].exception}")
    task_result = result.task_results[0]
    rows = task_result.scores[entry.split]
    subset_scores = {row["hf_subset"]: 100.0 * float(row["main_score"]) for row in rows}
    return {
        "format": RUN_FORMAT,
        "task": entry.key,
        "fingerprint": entry.fingerprint,
        "subset_scores": subset_scores,
        "per_example": getattr(task, "per_example", None) or None,
        "evaluation_time": round(time.monotonic() - started, 3),
        "mteb_version": mteb.__version__,
        "mteb_result": serialise_task_result(task_result),  # for the mteb layout
    }


def evaluate(
    models: Sequence[TextEncoder],
    *,
    suite: str | None = None,
    task_dirs: Sequence[Path] = (),
    languages: Sequence[str] | None = None,
    output_dir: Path,
    batch_size: int = 32,
    bootstrap: int = 1000,
    seed: int = 0,
    show_progress: bool = True,
    use_cache: bool = True,
    mteb_names: Sequence[str | None] | None = None,
    device: str | None = None,
    instructions: str = "reference",
) -> EvaluationReport:
    """Evaluate ``models`` on a suite and/or local task dirs; write results, tables and a chart.

    Args:
        models: text encoders (``lusifer.types.TextEncoder``), names must differ.
        suite: "lusifer", "lusifer-v2", "crosslingual" (mteb hub data, needs internet) or
            "offline" (the bundled local tasks), or None for ``task_dirs`` only.
        task_dirs: local task directories (see ``lusifer.evaluation.local_tasks``).
        languages: ISO 639-1 codes to keep (default: all of the suite's).
        output_dir: where ``results.json``, ``table.md``, ``table.csv``, ``chart.png`` and
            the per-run files go; rerunning with the same directory resumes.
        batch_size: encoding batch size.
        bootstrap: bootstrap replicates for CIs and paired tests (0 disables them); with
            several models, each later model is tested against the first.
        seed: seed of the bootstrap resamples.
        show_progress: show progress bars.
        use_cache: reuse (and store) results of unchanged models on unchanged tasks in the
            lusifer cache (:func:`result_cache_path`), e.g. the demo's baselines.
        mteb_names: per model, the name (``org/name[@revision]``) its results carry in
            the mteb layout written to ``output_dir/mteb`` (default ``lusifer/<model>``).
        device: where the torch models run (moved there); None leaves them where they
            are, except under torchrun/accelerate with CUDA: ``cuda:LOCAL_RANK``.
        instructions: the mteb suites' instruction table, "reference" (the reference
            code's, the training sets' own) or "lusifer" (ours,
            :mod:`lusifer.evaluation.instructions`).

    Under ``torchrun``/``accelerate launch`` the (model, task) pairs are split across the
    processes and rank 0 writes the report (:mod:`lusifer.evaluation.distributed`).
    """
    from .mteb_model import MtebEncoder, model_slug

    if not models:
        raise ValueError("give at least one model")
    names = [getattr(m, "name", None) or type(m).__name__ for m in models]
    slugs = [model_slug(n) for n in names]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"model names must be distinct (after making them file-safe): {names}")
    entries = resolve_tasks(suite, task_dirs, languages, instructions)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    task_instructions = {e.name: e.instruction for e in entries}

    runs: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
    errors: dict[str, dict[str, str]] = {}
    shard = distributed.current_shard()
    distributed.place_models(models, device)  # each rank on its own GPU
    others: dict[str, list[TaskEntry]] = {name: [] for name in names}  # other ranks' pairs
    progress = tqdm(
        total=len(models) * len(entries),
        desc="Evaluating",
        disable=not (show_progress and shard.is_main),
        unit="task",
    )
    for model_index, (model, name, slug) in enumerate(zip(models, names, slugs, strict=True)):
        owned = [shard.owns(model_index * len(entries) + i) for i in range(len(entries))]
        mine = [e for e, own in zip(entries, owned, strict=True) if own]
        others[name] = [e for e, own in zip(entries, owned, strict=True) if not own]
        progress.update(len(others[name]))
        wrapper = MtebEncoder(model, task_instructions, show_progress=show_progress)
        runs[name], failed = _evaluate_model(
            wrapper, name, mine, output_dir / "runs" / slug, batch_size, use_cache, progress
        )
        if failed:
            errors[name] = failed
    progress.close()
    if shard.distributed:
        runs = _merge_ranks(shard, models, names, slugs, entries, runs, errors, others, output_dir)
    report = summarise(
        entries, names, runs, suite=suite, bootstrap=bootstrap, seed=seed, output_dir=output_dir
    )
    report.errors = errors
    if shard.is_main:
        report.files = write_outputs(report)
        report.files["mteb"] = write_mteb_results(
            output_dir, models, names, entries, runs, mteb_names=mteb_names, batch_size=batch_size
        )
    return report


def _merge_ranks(
    shard: Any,
    models: Sequence[TextEncoder],
    names: list[str],
    slugs: list[str],
    entries: Sequence[TaskEntry],
    runs: dict[str, dict[str, dict[str, Any]]],
    errors: dict[str, dict[str, str]],
    others: dict[str, list[TaskEntry]],
    output_dir: Path,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every rank's runs, read back from the shared output folder, in task order."""
    identities = {name: model_fingerprint(m) for m, name in zip(models, names, strict=True)}
    slug_of = dict(zip(names, slugs, strict=True))
    distributed.merge_runs(
        shard,
        runs,
        errors,
        others,
        lambda name, entry: _load_finished(
            output_dir / "runs" / slug_of[name] / f"{_safe(entry.key)}.json",
            entry,
            name,
            identities[name],
        ),
    )
    return {n: {e.key: r[e.key] for e in entries if e.key in r} for n, r in runs.items()}


def _evaluate_model(
    wrapper: Any,
    name: str,
    entries: Sequence[TaskEntry],
    run_dir: Path,
    batch_size: int,
    use_cache: bool,
    progress: Any,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """One model's runs on ``entries`` (finished ones reused) and the mteb tasks that
    failed, each with its error."""
    model = wrapper.model
    identity = model_fingerprint(model)
    runs: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    pending = []
    for entry in entries:
        run = _finished_run(model, name, identity, entry, run_dir, use_cache)
        if run is None:
            pending.append(entry)
        else:
            runs[entry.key] = run
            progress.update(1)
    # every pending local task's texts, encoded once, in large length-sorted batches
    prefetch_local_tasks(wrapper, pending, max(batch_size, 64))
    for entry in pending:
        progress.set_postfix_str(f"{name} | {entry.key}")
        run, error = _run_and_store(
            wrapper, model, name, identity, entry, run_dir, batch_size, use_cache
        )
        if run is not None:
            runs[entry.key] = run
        else:
            errors[entry.key] = error
        progress.update(1)
    return runs, errors


def _finished_run(
    model: TextEncoder,
    name: str,
    identity: str | None,
    entry: TaskEntry,
    run_dir: Path,
    use_cache: bool,
) -> dict[str, Any] | None:
    """A finished run of ``model`` on ``entry``: this output folder's, else the lusifer
    cache's (copied into the folder); None when it must run."""
    path = run_dir / f"{_safe(entry.key)}.json"
    run = _load_finished(path, entry, name, identity)
    cached = result_cache_path(model, identity, entry) if use_cache else None
    if run is None and cached is not None:
        run = _load_finished(cached, entry, None, identity)
        if run is not None:
            run["model"] = name
            _write_json_atomic(path, run)
    return run


def _run_and_store(
    wrapper: Any,
    model: TextEncoder,
    name: str,
    identity: str | None,
    entry: TaskEntry,
    run_dir: Path,
    batch_size: int,
    use_cache: bool,
) -> tuple[dict[str, Any] | None, str]:
    """Run ``entry`` and write its run to the output folder and the cache: (run, "") or,
    when an mteb task fails, (None, the error) so the others still run; a local task's
    failure is raised (it is the user's data)."""
    try:
        run = _run_one(wrapper, entry, batch_size, wrapper.show_progress)
    except Exception as err:
        if entry.source == "local":
            raise
        logger.warning("%s on %s failed: %s", name, entry.key, err)
        return None, f"{type(err).__name__}: {err}"
    run["model"] = name
    run["model_fingerprint"] = identity
    _write_json_atomic(run_dir / f"{_safe(entry.key)}.json", run)
    cached = result_cache_path(model, identity, entry) if use_cache else None
    if cached is not None:
        try:
            _write_json_atomic(cached, run)
        except OSError as err:  # a read-only or full cache only costs the reuse
            logger.warning("could not cache %s on %s: %s", name, entry.key, err)
    return run, ""


# --------------------------------------------------------------------------- summarising


def _task_score(entry: TaskEntry, subset_scores: dict[str, float]) -> float:
    """The plain mean over the evaluated subsets; for a cross-lingual mteb task, the paper's
    Table-2 score (:func:`aggregation.crosslingual_task_score`)."""
    if entry.crosslingual and entry.subset_languages:
        score = aggregation.crosslingual_task_score(subset_scores, entry.subset_languages)
        if score is not None:
            return score
    return fmean(subset_scores.values())


def _task_summary(
    entry: TaskEntry, run: dict[str, Any], bootstrap: int, seed: int
) -> tuple[TaskScore, tuple[np.ndarray, float] | None]:
    """One task's scores, with its bootstrap replicates and their centre when it has
    per-example results (one subset)."""
    subset_scores = {s: v for s, v in run["subset_scores"].items() if s in entry.subsets}
    language_scores = aggregation.task_language_scores(subset_scores, entry.subsets_by_language)
    score = TaskScore(
        key=entry.key,
        name=entry.name,
        type=entry.type,
        metric=entry.main_metric,
        split=entry.split,
        languages=order_languages(language_scores),
        crosslingual=entry.crosslingual,
        score=_task_score(entry, subset_scores),
        language_scores=language_scores,
        subset_scores=subset_scores,
        evaluation_time=run.get("evaluation_time"),
    )
    per_example = run.get("per_example")
    if not (bootstrap > 0 and per_example and len(subset_scores) == 1):
        return score, None
    n = significance.example_count(entry.type, per_example)
    idx = significance.resample_indices(n, bootstrap, seed, entry.key)
    reps = significance.replicate_scores(entry.type, entry.main_metric, per_example, idx)
    center = significance.replicate_center(entry.type, entry.main_metric, per_example, reps)
    interval = significance.percentile_interval(reps, estimate=score.score, center=center)
    score.ci = interval.to_list() if interval else None
    return score, (reps, center)


def _model_summary(
    tasks: dict[str, TaskScore],
    replicates: dict[str, np.ndarray],
    identity: dict[str, float],
) -> ModelSummary:
    """A model's language, type and cross-lingual averages, with a bootstrap interval per
    language whose tasks all have replicates."""
    per_task_lang = {k: t.language_scores for k, t in tasks.items()}
    lang_avgs = aggregation.language_averages(per_task_lang)
    language_ci: dict[str, list[float] | None] = {}
    for lang in lang_avgs:
        keys = [k for k, t in tasks.items() if lang in t.language_scores]
        language_ci[lang] = None
        if keys and all(k in replicates for k in keys):
            interval = significance.percentile_interval(
                significance.mean_replicates([replicates[k] for k in keys]),
                estimate=lang_avgs[lang],
                center=fmean(identity[k] for k in keys),
            )
            language_ci[lang] = interval.to_list() if interval else None
    cross = {k: t.score for k, t in tasks.items() if t.crosslingual}
    return ModelSummary(
        tasks=tasks,
        languages={k: lang_avgs[k] for k in order_languages(lang_avgs)},
        language_ci={k: language_ci[k] for k in order_languages(lang_avgs)},
        average=aggregation.overall_average(lang_avgs),
        task_types=aggregation.type_averages(per_task_lang, {k: t.type for k, t in tasks.items()}),
        crosslingual=cross,
        crosslingual_average=fmean(cross.values()) if cross else None,
    )


def summarise(
    entries: Sequence[TaskEntry],
    models: Sequence[str],
    runs: dict[str, dict[str, dict[str, Any]]],
    *,
    suite: str | None,
    bootstrap: int,
    seed: int,
    output_dir: Path,
) -> EvaluationReport:
    """Aggregate per-task runs into the paper's tables plus bootstrap significance."""
    by_key = {e.key: e for e in entries}
    summaries: dict[str, ModelSummary] = {}
    replicates: dict[str, dict[str, np.ndarray]] = {}
    identity: dict[str, dict[str, float]] = {}
    for model in models:
        tasks: dict[str, TaskScore] = {}
        replicates[model], identity[model] = {}, {}
        for key, run in runs[model].items():
            tasks[key], bootstrapped = _task_summary(by_key[key], run, bootstrap, seed)
            if bootstrapped is not None:
                replicates[model][key], identity[model][key] = bootstrapped
        summaries[model] = _model_summary(tasks, replicates[model], identity[model])
    paired = []
    if bootstrap > 0:
        reference = models[0]
        for other in models[1:]:
            paired.append(_paired(reference, other, summaries, replicates, identity))
    all_languages = order_languages({lang for s in summaries.values() for lang in s.languages})
    return EvaluationReport(
        suite=suite,
        models=list(models),
        languages=all_languages,
        summaries=summaries,
        paired_tests=paired,
        bootstrap=bootstrap,
        seed=seed,
        output_dir=output_dir,
    )


def _paired(
    a: str,
    b: str,
    summaries: dict[str, ModelSummary],
    replicates: dict[str, dict[str, np.ndarray]],
    identity: dict[str, dict[str, float]],
) -> dict[str, Any]:
    tasks_out = {}
    common = [k for k in summaries[a].tasks if k in summaries[b].tasks]
    for key in common:
        ra, rb = replicates[a].get(key), replicates[b].get(key)
        if ra is None or rb is None or ra.shape != rb.shape:
            continue
        test = significance.paired_test(
            summaries[a].tasks[key].score - summaries[b].tasks[key].score,
            ra - rb,
            center=identity[a][key] - identity[b][key],
        )
        tasks_out[key] = test.to_dict()
    languages_out = {}
    for lang in summaries[a].languages:
        keys = [k for k in common if lang in summaries[a].tasks[k].language_scores]
        if not keys or not all(k in tasks_out for k in keys):
            continue
        diffs = significance.mean_replicates([replicates[a][k] - replicates[b][k] for k in keys])
        center = fmean(identity[a][k] - identity[b][k] for k in keys)
        observed = summaries[a].languages[lang] - summaries[b].languages.get(lang, float("nan"))
        languages_out[lang] = significance.paired_test(observed, diffs, center=center).to_dict()
    return {"model_a": a, "model_b": b, "tasks": tasks_out, "languages": languages_out}
