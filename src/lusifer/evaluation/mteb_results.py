"""``lusifer evaluate``'s results in mteb's own layout, as ``mteb.evaluate`` writes its cache.

``<output>/mteb/results/<model name as path>/<revision>/<TaskName>.json`` (an mteb
``TaskResult``: ``dataset_revision``, ``task_name``, ``mteb_version``, ``scores`` per split
as a list of per-subset dicts with ``main_score``, ``hf_subset``, ``languages`` and every
metric mteb computed, ``evaluation_time``), ``model_meta.json`` (an mteb ``ModelMeta``) and
``run_settings.jsonl``. The files are written by mteb itself
(``mteb.ResultCache(<output>/mteb).save_to_cache``), so mteb reads them back:

    mteb.ResultCache("<output>/mteb").load_results(include_remote=False)

The folder under ``results/`` is what the results repository
(github.com/embeddings-benchmark/results) holds per model (see docs/guides/publishing.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mteb.models import ModelMeta
    from mteb.results import TaskResult

    from ..types import TextEmbedder
    from .entry import TaskEntry

logger = logging.getLogger(__name__)

MTEB_FOLDER = "mteb"


def serialise_task_result(task_result: TaskResult) -> dict[str, Any]:
    """mteb's ``TaskResult`` as JSON-ready data (kept in lusifer's run files)."""
    return json.loads(task_result.model_dump_json())


def task_result(run: Mapping[str, Any], entry: TaskEntry) -> TaskResult:
    """The mteb ``TaskResult`` of a finished run: the one mteb returned when the run kept
    it, else rebuilt by mteb from the run's per-subset main scores (runs from before
    lusifer kept it, and runs reused from the cache)."""
    from mteb.results import TaskResult

    kept = run.get("mteb_result")
    if kept:
        return TaskResult.from_dict(kept)
    scores = {
        entry.split: {
            subset: {"main_score": value / 100.0, entry.main_metric: value / 100.0}
            for subset, value in run["subset_scores"].items()
        }
    }
    return TaskResult.from_task_results(
        entry.factory(), scores, evaluation_time=run.get("evaluation_time") or 0.0
    )


def model_meta(model: TextEmbedder, name: str, mteb_name: str | None = None) -> ModelMeta:
    """mteb's ``ModelMeta`` for an evaluated model: the one ``MtebEncoder`` gives mteb
    (name ``lusifer/<model>``, revision ``local``) unless ``mteb_name`` (``org/name`` or
    ``org/name@revision``, e.g. the hub repo the model was pushed to) names it, plus what
    lusifer knows (embedding size, parameters, maximum length)."""
    from .mteb_model import MtebEncoder

    meta = MtebEncoder(model).mteb_model_meta
    updates: dict[str, Any] = {"open_weights": True}
    if mteb_name:
        repo, _, revision = mteb_name.partition("@")
        updates.update(name=repo, revision=revision or "local", reference=None)
        if repo.count("/") == 1:
            updates["reference"] = f"https://huggingface.co/{repo}"
    size = getattr(model, "embedding_size", None)
    if isinstance(size, int):
        updates["embed_dim"] = size
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        try:
            updates["n_parameters"] = int(sum(p.numel() for p in parameters()))
        except Exception:  # an embedder whose parameters() is not torch's
            pass
    config = getattr(model, "config", None)
    max_length = getattr(config, "max_length", None)
    if isinstance(max_length, int):
        updates["max_tokens"] = max_length
    return meta.model_copy(update=updates)


def write_mteb_results(
    output_dir: str | Path,
    models: Sequence[TextEmbedder],
    names: Sequence[str],
    entries: Sequence[TaskEntry],
    runs: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    mteb_names: Sequence[str | None] | None = None,
    batch_size: int | None = None,
) -> Path:
    """Write every finished run in mteb's layout under ``<output_dir>/mteb`` through
    ``mteb.ResultCache.save_to_cache``; the folder."""
    import mteb

    root = Path(output_dir) / MTEB_FOLDER
    cache = mteb.ResultCache(root)
    by_key = {e.key: e for e in entries}
    chosen = list(mteb_names or [None] * len(models))
    for model, name, mteb_name in zip(models, names, chosen, strict=True):
        meta = model_meta(model, name, mteb_name)
        for key, run in runs.get(name, {}).items():
            entry = by_key.get(key)
            if entry is None:
                continue
            try:
                result = task_result(run, entry)
            except Exception as err:  # an mteb task that cannot be built offline
                logger.warning("no mteb result file for %s on %s: %s", name, key, err)
                continue
            cache.save_to_cache(
                result,
                meta,
                encode_kwargs={"batch_size": batch_size} if batch_size else None,
            )
    return root


def read_main_scores(folder: str | Path) -> dict[str, dict[str, float]]:
    """mteb's own reading of a layout written here: model name -> task name -> main score
    (0-1, mteb's mean over the evaluated subsets)."""
    import mteb

    results = mteb.ResultCache(folder).load_results(include_remote=False)
    return {
        m.model_name: {t.task_name: float(t.get_score()) for t in m.task_results}
        for m in results.model_results
    }
