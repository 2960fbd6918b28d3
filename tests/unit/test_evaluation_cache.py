"""Evaluation encodes each distinct text once per run, and reuses results of unchanged
models on unchanged tasks from the lusifer cache."""

from __future__ import annotations

import json

import pytest
from helpers import FakeEmbedder, make_task_dirs

from lusifer.evaluation import evaluate, runner


def fingerprinted(name, groups=()) -> FakeEmbedder:
    """A test encoder with a fingerprint (cacheable) that reads no instructions."""
    return FakeEmbedder(name, groups, fingerprint="v1", uses_instructions=False)


def _encoded_texts(model) -> int:
    return sum(n for n, _, _ in model.calls)


@pytest.fixture
def tasks(tmp_path):
    dirs, groups = make_task_dirs(tmp_path / "tasks")
    return dirs, groups


def _distinct(dirs) -> int:
    """Distinct (kind, text) pairs over all the tasks, as prefetch reads them."""
    from lusifer.evaluation.local_tasks import read_task_spec
    from lusifer.evaluation.prefetch import task_texts

    seen = set()
    for d in dirs:
        for kind, texts in task_texts(read_task_spec(d)).items():
            seen.update((kind, t) for t in texts)
    return len(seen)


def test_each_distinct_text_is_encoded_once_in_one_call_per_kind(tasks, tmp_path):
    dirs, groups = tasks
    shared = dirs[0].parent / "TinyClusteringCopy"  # a second task on the same texts
    shared.mkdir()
    for f in ("task.json", "test.jsonl"):
        text = (dirs[0].parent / "TinyClustering" / f).read_text()
        (shared / f).write_text(text.replace('"TinyClustering"', '"TinyClusteringCopy"'))
    model = fingerprinted("model", groups)
    evaluate(
        [model],
        task_dirs=[*dirs, shared],
        output_dir=tmp_path / "a",
        bootstrap=0,
        show_progress=False,
    )
    assert _encoded_texts(model) == _distinct(dirs)  # the copy's texts cost nothing
    assert sorted(kind for _, _, kind in model.calls) == ["document", "query"]


def test_classification_prefetch_encodes_only_the_training_texts_mteb_samples(tasks, tmp_path):
    """mteb trains each classification experiment on 8 texts a label; the prefetch
    encodes the union of those samples, not the whole training set, and mteb then asks
    for nothing else."""
    dirs, groups = tasks
    big = dirs[0].parent / "BigTrainClassification"
    big.mkdir()
    spec = json.loads((dirs[0].parent / "TinyClassification" / "task.json").read_text())
    (big / "task.json").write_text(json.dumps({**spec, "name": "BigTrainClassification"}))
    rows = [{"text": f"train {i}", "label": "abc"[i % 3]} for i in range(600)]
    (big / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = (dirs[0].parent / "TinyClassification" / "test.jsonl").read_text()
    (big / "test.jsonl").write_text(test)
    model = fingerprinted("model", groups)
    evaluate([model], task_dirs=[big], output_dir=tmp_path / "a", bootstrap=0, show_progress=False)
    assert len(model.calls) == 1  # everything mteb asked for was prefetched
    n_test = len(test.splitlines())
    assert 3 * 8 <= _encoded_texts(model) - n_test <= 3 * 8 * 10 < 600


def test_a_second_run_in_a_new_folder_reuses_cached_results(tasks, tmp_path, monkeypatch):
    dirs, groups = tasks
    model = fingerprinted("model", groups)
    first = evaluate(
        [model], task_dirs=dirs, output_dir=tmp_path / "a", bootstrap=50, show_progress=False
    )
    encoded = _encoded_texts(model)
    again = evaluate(
        [model], task_dirs=dirs, output_dir=tmp_path / "b", bootstrap=50, show_progress=False
    )
    assert _encoded_texts(model) == encoded  # nothing encoded, nothing scored
    for task in ("TinySTS", "TinyRetrieval", "TinyClustering"):
        assert again.score("model", task) == first.score("model", task)
        assert again.summaries["model"].tasks[task].ci == first.summaries["model"].tasks[task].ci
    # under another name (the cache keys on the fingerprint), the same results
    renamed = fingerprinted("renamed", groups)
    evaluate([renamed], task_dirs=dirs, output_dir=tmp_path / "c", bootstrap=0, show_progress=False)
    assert renamed.calls == []
    # --no-cache scores everything again
    evaluate(
        [model],
        task_dirs=dirs,
        output_dir=tmp_path / "d",
        bootstrap=0,
        show_progress=False,
        use_cache=False,
    )
    assert _encoded_texts(model) == 2 * encoded


def test_a_changed_model_sample_or_scoring_version_invalidates_the_cache(
    tasks, tmp_path, monkeypatch
):
    dirs, groups = tasks
    dirs = [d for d in dirs if d.name in ("TinySTS", "TinyClassification")]
    model = fingerprinted("model", groups)
    run = dict(task_dirs=dirs, bootstrap=0, show_progress=False)
    evaluate([model], output_dir=tmp_path / "a", **run)
    calls = len(model.calls)
    model.version = "v2"  # a retrained model
    evaluate([model], output_dir=tmp_path / "b", **run)
    assert len(model.calls) == 2 * calls
    sts = next(d for d in dirs if d.name == "TinySTS")  # another sample of a task
    rows = [json.loads(x) for x in (sts / "test.jsonl").read_text().splitlines()]
    rows[0]["score"] = 4.5
    (sts / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    evaluate([model], output_dir=tmp_path / "c", **run)
    assert len(model.calls) == 2 * calls + 1  # only the changed task
    monkeypatch.setattr(runner, "SCORING_VERSION", runner.SCORING_VERSION + 1)
    evaluate([model], output_dir=tmp_path / "d", **run)
    assert len(model.calls) == 3 * calls + 1


def test_models_without_a_fingerprint_are_never_cached(tasks, tmp_path):
    dirs, groups = tasks
    model = FakeEmbedder("plain", groups)
    evaluate(
        [model], task_dirs=dirs[:1], output_dir=tmp_path / "a", bootstrap=0, show_progress=False
    )
    calls = len(model.calls)
    evaluate(
        [model], task_dirs=dirs[:1], output_dir=tmp_path / "b", bootstrap=0, show_progress=False
    )
    assert len(model.calls) == 2 * calls


def test_a_lusifer_model_is_evaluated_again_when_its_backbone_changes_in_place(tasks, tmp_path):
    """The cache keys a LUSIFER model by its backbones' weights too: the same folder,
    whose local target backbone was updated in place, is not answered from the cache."""
    import torch

    from lusifer import LusiferModel
    from lusifer.backbones import load_backbone

    dirs, _ = tasks
    target = load_backbone("tiny:bert")
    backbone_dir = tmp_path / "target-backbone"
    target.model.save_pretrained(backbone_dir)
    target.tokenizer.save_pretrained(backbone_dir)
    folder = LusiferModel.build(encoder="tiny:xlmr", target=str(backbone_dir)).save_pretrained(
        tmp_path / "model", card=False
    )

    def evaluated_texts(output: str) -> int:
        model = LusiferModel.from_pretrained(folder)
        calls = []
        encode = model.encode
        model.encode = lambda texts, **kw: calls.append(len(texts)) or encode(texts, **kw)
        evaluate(
            [model], task_dirs=dirs[:1], output_dir=tmp_path / output, bootstrap=0,
            show_progress=False,
        )  # fmt: skip
        return sum(calls)

    assert evaluated_texts("a") > 0
    assert evaluated_texts("b") == 0  # unchanged: from the cache
    with torch.no_grad():  # the backbone folder updated in place: same names and shapes
        for p in target.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    target.model.save_pretrained(backbone_dir)
    assert evaluated_texts("c") > 0
