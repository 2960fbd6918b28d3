"""The mteb task classes that run local task folders (see :mod:`.local_tasks`).

Each task type is a subclass of the matching mteb abstract task whose ``load_data`` reads
the folder (:mod:`.local_data`). The subclasses also keep the per-example results of the
last evaluation (per-query scores, predictions, ...) in ``per_example`` for the bootstrap
statistics.

mteb (pinned to one minor version in pyproject.toml) has no public way to hand back the
per-example results the bootstrap needs, so each class overrides the mteb method that
holds them, calls mteb's own and records its inputs. ``load_data`` and
``task_specific_scores`` are mteb's documented extension points; ``_calculate_scores``,
``_run_experiment``, ``_evaluate_subset`` and ``_compute_metrics`` are private to mteb.
tests/unit/test_mteb_contract.py fails, naming the method, when mteb renames, removes or
re-signs any of them, or changes the k-means settings :func:`_mteb_kmeans` copies.
This module imports mteb: import it only to run a task.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mteb import TaskMetadata
from mteb.abstasks import (
    AbsTaskBitextMining,
    AbsTaskClassification,
    AbsTaskClustering,
    AbsTaskRetrieval,
    AbsTaskSTS,
)

from .entry import TYPE_TO_MTEB_TYPE
from .languages import get_language
from .local_data import load_task_data
from .local_tasks import LocalTaskSpec


def _mteb_kmeans(n_clusters: int, batch_size: int, seed: int) -> Any:
    """The k-means mteb's ``AbsTaskClustering`` fits in each clustering experiment (its
    settings live in the private ``mteb.abstasks.clustering._evaluate_clustering_bootstrapped``,
    which only clusters resamples drawn with replacement; mteb's public-facing
    ``ClusteringEvaluator`` uses other settings). Fitted once on every item for the bootstrap."""
    from sklearn.cluster import MiniBatchKMeans

    return MiniBatchKMeans(
        n_clusters=n_clusters,
        batch_size=batch_size,
        init="k-means++",
        n_init=1,
        random_state=seed,
    )


class _Recorder:
    """An mteb ``EncoderProtocol`` that delegates to the evaluated model and keeps what it
    returned (clustering needs the vectors)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.mteb_model_meta = inner.mteb_model_meta
        self.outputs: list[Any] = []

    def encode(self, inputs, **kwargs):  # noqa: ANN001
        out = self.inner.encode(inputs, **kwargs)
        self.outputs.append(out)
        return out

    def similarity(self, a, b):  # noqa: ANN001
        return self.inner.similarity(a, b)

    def similarity_pairwise(self, a, b):  # noqa: ANN001
        return self.inner.similarity_pairwise(a, b)


class _LocalMixin:
    spec: LocalTaskSpec
    dataset: Any  # mteb's AbsTask attributes this mixin fills in
    data_loaded: bool
    per_example: dict[str, Any]

    def load_data(self, num_proc: int | None = None, *, timer: Any = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = load_task_data(self.spec)
        self.per_example = {}
        self._after_load_data()
        self.data_loaded = True

    def _after_load_data(self) -> None:
        """Ours, not mteb's: set what depends on the loaded data."""


class LocalRetrievalTask(_LocalMixin, AbsTaskRetrieval):
    """Retrieval/reranking on local files; keeps per-query values of the main score."""

    def task_specific_scores(self, scores, qrels, results, hf_split, hf_subset):  # noqa: ANN001
        key = _pytrec_key(self.metadata.main_score)
        self.per_example = {
            "query_ids": list(scores),
            "values": [float(scores[q][key]) for q in scores],
        }
        return {}


class LocalSTSTask(_LocalMixin, AbsTaskSTS):
    """STS on local files; keeps gold scores and cosine similarities per pair."""

    def _after_load_data(self) -> None:
        scores = self.dataset["test"]["score"]
        self.min_score, self.max_score = min(scores), max(scores)

    def _calculate_scores(self, scores, normalized_scores):  # noqa: ANN001
        self.per_example = {
            "gold": list(map(float, normalized_scores)),
            "cosine": list(map(float, scores["cosine_scores"])),
        }
        return super()._calculate_scores(scores, normalized_scores)


class LocalClassificationTask(_LocalMixin, AbsTaskClassification):
    """Classification on local files; keeps every experiment's test predictions."""

    def _run_experiment(self, train_split, eval_split, train_embeddings, test_embeddings, timer):  # noqa: ANN001
        scores, predictions = super()._run_experiment(
            train_split, eval_split, train_embeddings, test_embeddings, timer
        )
        record = self.per_example.setdefault("predictions", [])
        record.append([int(p) for p in predictions])
        self.per_example["labels"] = [int(y) for y in eval_split[self.label_column_name]]
        return scores, predictions


class LocalClusteringTask(_LocalMixin, AbsTaskClustering):
    """Clustering on local files: every item is embedded and each of mteb's experiments clusters a
    resample of the full set. Also keeps one k-means assignment of all items (mteb's k-means
    settings) for the bootstrap."""

    max_fraction_of_documents_to_embed = None

    def _after_load_data(self) -> None:
        self.max_documents_per_cluster = len(self.dataset["test"])

    def _evaluate_subset(
        self,
        model,
        data_split,
        *,
        encode_kwargs,
        hf_split,
        hf_subset,
        prediction_folder=None,
        num_proc=None,
        timer,
        **kwargs,
    ):
        recorder = _Recorder(model)
        result = super()._evaluate_subset(
            recorder,
            data_split,
            encode_kwargs=encode_kwargs,
            hf_split=hf_split,
            hf_subset=hf_subset,
            prediction_folder=prediction_folder,
            num_proc=num_proc,
            timer=timer,
            **kwargs,
        )
        embeddings = np.asarray(recorder.outputs[-1], dtype=np.float32)
        labels = np.asarray(data_split[self.label_column_name])
        kmeans = _mteb_kmeans(np.unique(labels).size, self.k_mean_batch_size, self.seed)
        self.per_example = {
            "labels": labels.tolist(),
            "assignment": kmeans.fit_predict(embeddings).tolist(),
        }
        return result


class LocalBitextTask(_LocalMixin, AbsTaskBitextMining):
    """Bitext mining on local files; keeps the gold and predicted match of every sentence."""

    def _compute_metrics(self, nearest_neighbors, gold):  # noqa: ANN001
        self.per_example = {
            "labels": [int(g[1]) for g in gold],
            "predictions": [int(x["corpus_id"]) for x in nearest_neighbors],
        }
        return super()._compute_metrics(nearest_neighbors, gold)


#: The mteb task class of each local task type.
TASK_CLASSES: dict[str, type] = {
    "retrieval": LocalRetrievalTask,
    "reranking": LocalRetrievalTask,
    "sts": LocalSTSTask,
    "classification": LocalClassificationTask,
    "clustering": LocalClusteringTask,
    "bitext": LocalBitextTask,
}


def _pytrec_key(main_score: str) -> str:
    """mteb's ``ndcg_at_10`` is pytrec_eval's per-query ``ndcg_cut_10`` (and so on)."""
    metric, _, k = main_score.partition("_at_")
    return {
        "ndcg": f"ndcg_cut_{k}",
        "map": f"map_cut_{k}",
        "recall": f"recall_{k}",
        "precision": f"P_{k}",
    }[metric]


def _mteb_languages(spec: LocalTaskSpec) -> list[str]:
    return list(dict.fromkeys(get_language(code).mteb_code for code in spec.languages))


def make_mteb_task(spec: LocalTaskSpec) -> Any:
    """A fresh mteb task object for a local task.

    mteb describes a task by a class whose ``metadata`` attribute is a ``TaskMetadata``
    (``AbsTask.__init__`` reads it, and ``unload_data()`` drops an instance's own
    ``metadata``), so each local task is a new subclass carrying its metadata and spec.
    """
    metadata = TaskMetadata(
        name=spec.name,
        description=spec.description,
        dataset={"path": str(spec.path), "revision": spec.digest()},
        type=TYPE_TO_MTEB_TYPE[spec.type],
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=_mteb_languages(spec),
        main_score=spec.main_score,
        prompt=spec.instruction,
    )
    base = TASK_CLASSES[spec.type]
    cls = type(
        f"Local_{spec.type}_{abs(hash(spec.path))}", (base,), {"metadata": metadata, "spec": spec}
    )
    task = cls()
    task.per_example = {}
    return task
