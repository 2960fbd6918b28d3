"""The mteb methods and settings lusifer's local tasks rely on, checked against the installed mteb.

``lusifer.evaluation.local_mteb`` subclasses mteb's abstract tasks and overrides some of their
methods (several private to mteb) to keep per-example results; pyproject.toml pins mteb to the
minor version this was written for. When an mteb upgrade renames, removes or re-signs one of
those methods, or changes the k-means settings we copy, these tests fail and name it.
"""

from __future__ import annotations

import inspect
import random

import numpy as np
import pytest

pytest.importorskip("mteb")

from mteb.abstasks import (  # noqa: E402
    AbsTaskBitextMining,
    AbsTaskClassification,
    AbsTaskClustering,
    AbsTaskRetrieval,
    AbsTaskSTS,
)

from lusifer.evaluation import local_mteb  # noqa: E402

# task type -> (the mteb class its local task subclasses, the mteb methods it overrides)
OVERRIDES = {
    "retrieval": (AbsTaskRetrieval, ("load_data", "task_specific_scores")),
    "reranking": (AbsTaskRetrieval, ("load_data", "task_specific_scores")),
    "sts": (AbsTaskSTS, ("load_data", "_calculate_scores")),
    "classification": (AbsTaskClassification, ("load_data", "_run_experiment")),
    "clustering": (AbsTaskClustering, ("load_data", "_evaluate_subset")),
    "bitext": (AbsTaskBitextMining, ("load_data", "_compute_metrics")),
}

# attributes of the mteb class the local tasks read or set
ATTRIBUTES = {
    AbsTaskRetrieval: ("metadata", "dataset", "data_loaded"),
    AbsTaskSTS: ("dataset", "data_loaded", "min_score", "max_score"),
    AbsTaskClassification: ("dataset", "data_loaded", "label_column_name"),
    AbsTaskClustering: (
        "dataset",
        "data_loaded",
        "label_column_name",
        "k_mean_batch_size",
        "max_fraction_of_documents_to_embed",
        "max_documents_per_cluster",
    ),
    AbsTaskBitextMining: ("dataset", "data_loaded"),
}


def _params(func) -> list[tuple[str, str, object]]:
    """Name, kind and default of each parameter (annotations are mteb's business)."""
    return [(p.name, p.kind.name, p.default) for p in inspect.signature(func).parameters.values()]


def _our_methods(cls: type) -> dict[str, object]:
    """The methods lusifer's own classes in ``cls``'s MRO define, nearest first."""
    found: dict[str, object] = {}
    for klass in cls.__mro__:
        if klass.__module__ != local_mteb.__name__:
            continue
        for name, value in vars(klass).items():
            if inspect.isfunction(value) and not name.startswith("__"):
                found.setdefault(name, value)
    return found


@pytest.mark.parametrize("task_type", sorted(OVERRIDES))
def test_every_overridden_mteb_method_exists_with_the_signature_we_override(task_type):
    base, hooks = OVERRIDES[task_type]
    cls = local_mteb.TASK_CLASSES[task_type]
    assert issubclass(cls, base)
    ours = _our_methods(cls)
    for hook in hooks:
        theirs = getattr(base, hook, None)
        assert theirs is not None, (
            f"mteb's {base.__name__}.{hook} is gone (renamed or removed in this mteb version); "
            f"lusifer.evaluation.local_mteb overrides it for its {task_type} tasks"
        )
        assert hook in ours, f"local {task_type} task no longer overrides {hook}: update OVERRIDES"
        assert _params(ours[hook]) == _params(theirs), (
            f"mteb's {base.__name__}.{hook} changed its signature to "
            f"{inspect.signature(theirs)}; lusifer.evaluation.local_mteb overrides it as "
            f"{inspect.signature(ours[hook])}"
        )
    # every other method of ours must not shadow an mteb method unnoticed
    for name in ours:
        if name not in hooks:
            assert not hasattr(base, name), (
                f"lusifer's {name} now overrides mteb's {base.__name__}.{name}: rename ours "
                f"or add it to OVERRIDES"
            )


@pytest.mark.parametrize("base", list(ATTRIBUTES), ids=lambda c: c.__name__)
def test_mteb_attributes_the_local_tasks_use_exist(base):
    for name in ATTRIBUTES[base]:
        declared = any(name in vars(k).get("__annotations__", {}) for k in base.__mro__)
        assert hasattr(base, name) or declared, (
            f"mteb's {base.__name__}.{name} is gone; lusifer.evaluation.local_mteb uses it"
        )


def test_recorder_is_an_mteb_encoder():
    from mteb.models import EncoderProtocol

    class Inner:
        mteb_model_meta = object()

    assert isinstance(local_mteb._Recorder(Inner()), EncoderProtocol)


def test_full_set_kmeans_has_mteb_clustering_settings(monkeypatch):
    """The bootstrap's k-means of all items is the one mteb fits in each clustering experiment."""
    import mteb.abstasks.clustering as clustering

    hook = "mteb.abstasks.clustering._evaluate_clustering_bootstrapped"
    evaluate = getattr(clustering, "_evaluate_clustering_bootstrapped", None)
    assert evaluate is not None, f"{hook} is gone; local_mteb._mteb_kmeans copies its settings"
    made = []
    real = clustering.MiniBatchKMeans

    def recording(*args, **kwargs):
        model = real(*args, **kwargs)
        made.append(model.get_params())
        return model

    monkeypatch.setattr(clustering, "MiniBatchKMeans", recording)
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((40, 4)).astype(np.float32)
    labels = [[i % 3] for i in range(40)]
    try:
        evaluate(
            embeddings,
            labels,
            n_clusters=2,
            cluster_size=20,
            kmean_batch_size=7,
            max_depth=None,
            rng_state=random.Random(0),
            seed=5,
        )
    except TypeError as err:
        pytest.fail(f"{hook} changed its signature ({err}); check local_mteb._mteb_kmeans")
    assert made, f"{hook} no longer builds sklearn's MiniBatchKMeans"
    assert made[0] == local_mteb._mteb_kmeans(3, 7, 5).get_params(), (
        f"{hook} now clusters with {made[0]}; local_mteb._mteb_kmeans copies the old settings"
    )
