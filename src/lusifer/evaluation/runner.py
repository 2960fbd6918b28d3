"""``evaluate``: run text embedders on a suite and/or local task dirs through mteb, resumably.

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
from typing import Any

from tqdm.auto import tqdm

from ..files import atomic_write
from ..types import TextEmbedder, reads_instructions
from . import distributed
from .entry import TaskEntry
from .languages import get_language
from .local_data import load_task_dirs
from .local_tasks import offline_suite_dirs
from .mteb_results import serialise_task_result, write_mteb_results
from .prefetch import prefetch_local_tasks
from .report import write_outputs
from .results import EvaluationReport  # also re-exported from here
from .suites import SUITES, build_crosslingual_suite, build_lusifer_suite, local_task_entry
from .summary import summarise

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


def model_fingerprint(model: TextEmbedder) -> str | None:
    """``model.fingerprint()`` when the embedder has one (LUSIFER, ONNX and plain models)."""
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
        or run.get("task_digest") != entry.digest
        or (model_name is not None and run.get("model") != model_name)
        or (identity is not None and run.get("model_fingerprint") != identity)
    ):
        return None  # another task definition or another model under the same name: redo
    return run


# Bump when a change to the code changes a task's scores (mteb's version is keyed too).
SCORING_VERSION = 1


def result_cache_path(model: TextEmbedder, identity: str | None, entry: TaskEntry) -> Path | None:
    """Where the lusifer cache keeps this model's finished result on this task, keyed by
    the model's fingerprint and backend, the task's digest and instruction (for a model
    that reads instructions) and the scoring code's version (``$LUSIFER_EVAL_CACHE``,
    else ``<lusifer cache>/evaluation``); None for a model without a fingerprint (it is
    never cached)."""
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
        entry.digest,
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
        "task_digest": entry.digest,
        "subset_scores": subset_scores,
        "per_example": getattr(task, "per_example", None) or None,
        "evaluation_time": round(time.monotonic() - started, 3),
        "mteb_version": mteb.__version__,
        "mteb_result": serialise_task_result(task_result),  # for the mteb layout
    }


def evaluate(
    models: Sequence[TextEmbedder],
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
        models: text embedders (``lusifer.types.TextEmbedder``), names must differ.
        suite: "lusifer", "lusifer-v2", "crosslingual" (mteb hub data, needs internet) or
            "offline" (the bundled local tasks), or None for ``task_dirs`` only.
        task_dirs: local task directories (see ``lusifer.evaluation.local_tasks``).
        languages: ISO 639-1 codes to keep (default: all of the suite's).
        output_dir: where ``results.json``, ``table.md``, ``table.csv``, ``chart.png`` and
            the per-run files go; rerunning with the same directory resumes.
        batch_size, show_progress: encoding batch size; progress bars.
        bootstrap, seed: bootstrap replicates for CIs and paired tests (0: none; each
            later model is tested against the first) and their seed.
        use_cache: reuse (and store) results of unchanged models on unchanged tasks in the
            lusifer cache (:func:`result_cache_path`), e.g. the demo's baselines.
        mteb_names: per model, the name (``org/name[@revision]``) its results carry in
            the mteb layout written to ``output_dir/mteb`` (default ``lusifer/<model>``).
        device: where the torch models run (moved there); None leaves them where they
            are, except under torchrun/accelerate with CUDA: ``cuda:LOCAL_RANK``.
        instructions: the mteb suites' instruction table, "reference" (the reference
            code's, the training sets' own) or "lusifer" (ours,
            :mod:`lusifer.evaluation.instructions`).

    Under torchrun/accelerate the (model, task) pairs are split across the processes and
    rank 0 writes the report (:mod:`lusifer.evaluation.distributed`)."""
    from .mteb_model import MtebEncoder

    names, slugs = _model_names(models)
    entries = resolve_tasks(suite, task_dirs, languages, instructions)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    task_instructions = {e.name: e.instruction for e in entries}

    runs: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
    errors: dict[str, dict[str, str]] = {}  # per model, the mteb tasks that failed
    shard = distributed.current_shard()
    distributed.place_models(models, device)  # each rank on its own GPU
    others: dict[str, list[TaskEntry]] = {name: [] for name in names}  # other ranks' pairs
    total, shown = len(models) * len(entries), show_progress and shard.is_main
    progress = tqdm(total=total, desc="Evaluating", disable=not shown, unit="task")
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
    if shard.is_main:  # files: results, tables, chart and mteb's layout
        report.files = write_outputs(report)
        report.files["mteb"] = write_mteb_results(
            output_dir, models, names, entries, runs, mteb_names=mteb_names, batch_size=batch_size
        )
    return report


def _model_names(models: Sequence[TextEmbedder]) -> tuple[list[str], list[str]]:
    """The models' names and their file-safe slugs (refused when empty or not distinct)."""
    from .mteb_model import model_slug

    if not models:
        raise ValueError("give at least one model")
    names = [getattr(m, "name", None) or type(m).__name__ for m in models]
    slugs = [model_slug(n) for n in names]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"model names must be distinct (after making them file-safe): {names}")
    return names, slugs


def _merge_ranks(
    shard: Any,
    models: Sequence[TextEmbedder],
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
    # every pending local task's texts, encoded once, in length-sorted batches
    prefetch_local_tasks(wrapper, pending, batch_size)
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
    model: TextEmbedder,
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
    model: TextEmbedder,
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
