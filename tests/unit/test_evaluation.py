"""Evaluation through mteb 2.x: local tasks, aggregation, statistics, resume, reports."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from helpers import TASK_ROWS as N
from helpers import FakeEmbedder, make_task_dirs, write_jsonl

from lusifer.evaluation import aggregation, significance
from lusifer.evaluation.local_data import load_task_dirs
from lusifer.evaluation.local_tasks import TaskDirError, read_task_spec

# Published numbers of the LUSIFER paper (arXiv 2501.00874), to test aggregation.
#: Table 1: per-language averages (0-100) and the reported overall average.
PAPER_TABLE1: Mapping[str, Mapping[str, float]] = {
    "Jina-v3": {"en": 59.84, "es": 61.23, "ru": 62.88, "fr": 58.94, "vi": 66.74, "fa": 78.35, "id": 58.51, "ar": 64.71, "fi": 73.57, "ko": 64.96, "hi": 64.19, "bn": 61.54, "te": 68.96, "sw": 49.20},
    "mGTE-base": {"en": 60.40, "es": 59.65, "ru": 61.02, "fr": 56.20, "vi": 65.81, "fa": 73.46, "id": 56.55, "ar": 61.97, "fi": 68.96, "ko": 61.22, "hi": 60.81, "bn": 58.24, "te": 63.58, "sw": 52.57},
    "BGE-M3": {"en": 60.09, "es": 60.60, "ru": 62.37, "fr": 57.34, "vi": 70.69, "fa": 78.97, "id": 58.78, "ar": 64.12, "fi": 75.60, "ko": 64.72, "hi": 64.61, "bn": 65.31, "te": 69.85, "sw": 54.20},
    "mE5-large": {"en": 61.91, "es": 61.97, "ru": 62.91, "fr": 59.40, "vi": 71.30, "fa": 78.08, "id": 55.21, "ar": 63.41, "fi": 76.53, "ko": 66.55, "hi": 63.75, "bn": 63.67, "te": 67.32, "sw": 51.55},
    "E5-Mistral": {"en": 66.64, "es": 61.84, "ru": 61.30, "fr": 59.65, "vi": 58.58, "fa": 72.55, "id": 58.25, "ar": 54.43, "fi": 66.97, "ko": 62.82, "hi": 56.23, "bn": 55.10, "te": 47.15, "sw": 50.61},
    "LUSIFER": {"en": 57.20, "es": 60.14, "ru": 59.82, "fr": 59.24, "vi": 67.69, "fa": 76.17, "id": 59.70, "ar": 55.60, "fi": 72.83, "ko": 65.23, "hi": 62.37, "bn": 58.43, "te": 69.30, "sw": 53.12},
}  # fmt: skip
PAPER_TABLE1_AVERAGES: Mapping[str, float] = {
    "Jina-v3": 63.83, "mGTE-base": 61.46, "BGE-M3": 64.80, "mE5-large": 64.54, "E5-Mistral": 59.44, "LUSIFER": 62.63,
}  # fmt: skip

#: Table 2: cross-lingual tasks (0-100) and the reported average.
PAPER_TABLE2: Mapping[str, Mapping[str, float]] = {
    "LUSIFER": {"MLQARetrieval": 36.68, "BelebeleRetrieval": 57.81, "STS17": 81.09, "STS22.v2": 70.49, "IndicCrosslingualSTS": 43.40},
    "E5-Mistral": {"MLQARetrieval": 31.54, "BelebeleRetrieval": 54.75, "STS17": 81.12, "STS22.v2": 71.37, "IndicCrosslingualSTS": 21.92},
}  # fmt: skip
PAPER_TABLE2_AVERAGES: Mapping[str, float] = {"LUSIFER": 57.89, "E5-Mistral": 52.14}


@pytest.fixture(scope="module")
def two_model_run(tmp_path_factory):
    from lusifer.evaluation import evaluate

    root = tmp_path_factory.mktemp("tasks")
    dirs, groups = make_task_dirs(root)
    perfect = FakeEmbedder("perfect", groups)
    random = FakeEmbedder("random")
    out = tmp_path_factory.mktemp("out")
    report = evaluate(
        [perfect, random],
        task_dirs=dirs,
        output_dir=out,
        bootstrap=300,
        seed=0,
        show_progress=False,
    )
    return report, perfect, random, dirs, out


def test_perfect_encoder_scores_100_and_random_near_chance(two_model_run):
    report, *_ = two_model_run
    for task in ("TinyBitext", "TinyRetrieval", "TinyReranking"):
        assert report.score("perfect", task) == pytest.approx(100.0)
    assert report.score("random", "TinyBitext") < 20  # chance is 1/30
    assert report.score("random", "TinyRetrieval") < 40  # one relevant among 30
    assert report.score("random", "TinyReranking") < 80
    # identical vectors for unrelated texts are impossible: random is clearly below perfect
    assert report.score("random", "TinyRetrieval") < report.score("perfect", "TinyRetrieval") - 50


def test_every_local_type_runs_offline_through_mteb(two_model_run):
    report, perfect, *_ = two_model_run
    tasks = report.summaries["perfect"].tasks
    assert {t.type for t in tasks.values()} == {
        "bitext",
        "retrieval",
        "reranking",
        "sts",
        "classification",
        "clustering",
    }
    for t in tasks.values():
        assert np.isfinite(t.score) and -100 <= t.score <= 100
        assert t.ci is not None and t.ci[0] <= t.ci[1]
    assert tasks["TinySTS"].metric == "cosine_spearman"
    assert tasks["TinyBitext"].languages == ["fr"]  # en-fr counts for fr
    assert tasks["TinyBitext"].crosslingual
    # instructions reached the encoder, documents were encoded as documents
    assert (2 * N, "Retrieve the French translation", "query") in perfect.calls  # both sides
    assert any(kind == "document" for _, _, kind in perfect.calls)


def test_bootstrap_statistic_reproduces_mteb_main_score(two_model_run):
    """The per-example formulas give mteb's own score on the unresampled data."""
    report, *_, out = two_model_run
    for model in ("perfect", "random"):
        for key in (
            "TinyBitext",
            "TinyRetrieval",
            "TinyReranking",
            "TinySTS",
            "TinyClassification",
        ):
            run = json.loads((out / "runs" / model / f"{key}.json").read_text())
            t = report.summaries[model].tasks[key]
            recomputed = significance.point_score(t.type, t.metric, run["per_example"])
            # mteb rounds retrieval means to 5 decimals (1e-3 on the 0-100 scale)
            assert recomputed == pytest.approx(t.score, abs=1e-3), (model, key)


def test_language_and_type_averages_follow_the_paper_rule(two_model_run):
    report, *_ = two_model_run
    s = report.summaries["random"]
    t = {k: v.score for k, v in s.tasks.items()}
    en = (t["TinyRetrieval"] + t["TinyReranking"]) / 2
    fr = (t["TinyBitext"] + t["TinySTS"] + t["TinyClassification"] + t["TinyClustering"]) / 4
    assert s.languages == pytest.approx({"en": en, "fr": fr})
    assert s.average == pytest.approx((en + fr) / 2)
    assert s.task_types["retrieval"] == pytest.approx(t["TinyRetrieval"])
    assert s.crosslingual == pytest.approx({"TinyBitext": t["TinyBitext"]})


def test_aggregation_by_hand():
    scores = {
        "A": {"en": 60.0},
        "B": {"en": 40.0, "fr": 70.0},  # a task with subsets in two languages
        "C": {"fr": 50.0},
    }
    langs = aggregation.language_averages(scores)
    assert langs == {"en": 50.0, "fr": 60.0}
    assert aggregation.overall_average(langs) == 55.0
    types = aggregation.type_averages(scores, {"A": "retrieval", "B": "sts", "C": "sts"})
    assert types == {"retrieval": 60.0, "sts": pytest.approx((40.0 + 60.0) / 2)}
    assert aggregation.task_language_scores(
        {"en-fr": 30.0, "fr": 50.0, "de": 1.0}, {"fr": ("en-fr", "fr")}
    ) == {"fr": 40.0}


def test_paper_table_averages_are_reproduced():
    for model, per_language in PAPER_TABLE1.items():
        assert len(per_language) == 14
        assert aggregation.overall_average(per_language) == pytest.approx(
            PAPER_TABLE1_AVERAGES[model], abs=0.01
        )
    assert aggregation.overall_average(PAPER_TABLE1["LUSIFER"]) == pytest.approx(62.63, abs=0.01)
    for model, per_task in PAPER_TABLE2.items():
        assert sum(per_task.values()) / len(per_task) == pytest.approx(
            PAPER_TABLE2_AVERAGES[model], abs=0.01
        )


def test_outputs_and_paired_test(two_model_run):
    report, _, _, _, out = two_model_run
    results = json.loads((out / "results.json").read_text())
    task = results["results"]["perfect"]["tasks"]["TinyRetrieval"]
    assert {"score", "metric", "languages", "split", "ci"} <= set(task)
    assert results["results"]["random"]["languages"].keys() == {"en", "fr"}
    assert (
        "average" in results["results"]["perfect"] and "task_types" in results["results"]["perfect"]
    )
    paired = results["paired_tests"][0]
    assert (paired["model_a"], paired["model_b"]) == ("perfect", "random")
    assert paired["tasks"]["TinyRetrieval"]["p_value"] < 0.05
    assert paired["tasks"]["TinyRetrieval"]["difference"] > 50
    # the models differ on STS too (different hashes), so p is a number; p and CI agree
    for test in [*paired["tasks"].values(), *paired["languages"].values()]:
        assert 0 <= test["p_value"] <= 1
        assert (test["p_value"] < 0.05) == (test["ci"][0] > 0 or test["ci"][1] < 0), test
    assert "en" in paired["languages"] and paired["languages"]["en"]["p_value"] < 0.05
    md = (out / "table.md").read_text()
    assert "Paired bootstrap test: perfect - random" in md
    assert "| perfect | 100.00 |" in md  # en average of the perfect encoder
    assert "Cross-lingual" in md
    csv_lines = (out / "table.csv").read_text().splitlines()
    assert csv_lines[0] == "model,en,fr,avg"
    assert csv_lines[1].startswith("perfect,100.00,")
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_skips_finished_tasks(two_model_run, tmp_path):
    from lusifer.evaluation import evaluate

    report, perfect, random, dirs, out = two_model_run
    before = len(perfect.calls), len(random.calls)
    again = evaluate(
        [perfect, random], task_dirs=dirs, output_dir=out, bootstrap=300, show_progress=False
    )
    assert (len(perfect.calls), len(random.calls)) == before
    assert again.score("random", "TinySTS") == report.score("random", "TinySTS")
    # a changed task reruns, the others stay finished
    sts = next(d for d in dirs if d.name == "TinySTS")
    rows = [json.loads(x) for x in (sts / "test.jsonl").read_text().splitlines()]
    rows[0]["score"] = 4.5
    write_jsonl(sts / "test.jsonl", rows)
    evaluate([random], task_dirs=dirs, output_dir=out, bootstrap=0, show_progress=False)
    assert len(random.calls) == before[1] + 1  # the STS pairs only, both sides in one call


def test_a_changed_model_under_the_same_name_is_evaluated_again(tmp_path):
    from lusifer.evaluation import evaluate

    dirs, groups = make_task_dirs(tmp_path / "tasks")
    dirs = [d for d in dirs if d.name in ("TinySTS", "TinyClustering")]

    model = FakeEmbedder("model", groups, fingerprint="v1")
    run = dict(task_dirs=dirs, output_dir=tmp_path / "out", bootstrap=0, show_progress=False)
    evaluate([model], **run)
    calls = len(model.calls)
    evaluate([model], **run)
    assert len(model.calls) == calls  # the same model: both tasks are finished
    model.version = "v2"  # e.g. retrained into the same folder
    evaluate([model], **run)
    assert len(model.calls) == 2 * calls  # both tasks redone


def test_language_filter(two_model_run, tmp_path):
    from lusifer.evaluation import evaluate

    _, _, _, dirs, _ = two_model_run
    encoder = FakeEmbedder("solo")
    report = evaluate(
        [encoder],
        task_dirs=dirs,
        languages=["en"],
        output_dir=tmp_path,
        bootstrap=0,
        show_progress=False,
    )
    assert set(report.summaries["solo"].tasks) == {"TinyRetrieval", "TinyReranking"}
    assert report.paired_tests == []


def test_paired_test_and_intervals():
    rng = np.random.default_rng(0)
    idx = significance.resample_indices(50, 400, 0, "task")
    assert np.array_equal(idx, significance.resample_indices(50, 400, 0, "task"))
    assert not np.array_equal(idx, significance.resample_indices(50, 400, 1, "task"))
    a = {"values": rng.uniform(0.5, 1.0, 50).tolist()}
    b = {"values": rng.uniform(0.0, 0.5, 50).tolist()}
    ra = significance.replicate_scores("retrieval", "ndcg_at_10", a, idx)
    rb = significance.replicate_scores("retrieval", "ndcg_at_10", b, idx)
    d = significance.point_score("retrieval", "ndcg_at_10", a) - significance.point_score(
        "retrieval", "ndcg_at_10", b
    )
    assert significance.paired_test(d, ra - rb).p_value < 0.01
    same = significance.paired_test(0.0, ra - ra)
    assert same.p_value == 1.0
    interval = significance.percentile_interval(ra)
    assert interval.low < 100 * np.mean(a["values"]) < interval.high


# --------------------------------------------------------------------------- malformed dirs


def _valid_sts(d: Path) -> None:
    d.mkdir(parents=True)
    (d / "task.json").write_text(json.dumps({"name": "Bad", "type": "sts", "languages": ["en"]}))
    write_jsonl(
        d / "test.jsonl",
        [
            {"sentence1": "a", "sentence2": "b", "score": 1},
            {"sentence1": "c", "sentence2": "d", "score": 2},
        ],
    )


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda d: (d / "task.json").unlink(), ["task.json", "file not found"]),
        (
            lambda d: (d / "task.json").write_text('{\n "name": "Bad",\n "type": sts}'),
            ["task.json", "line 3", "invalid JSON"],
        ),
        (
            lambda d: (d / "task.json").write_text(
                json.dumps({"name": "Bad", "type": "qa", "languages": ["en"]})
            ),
            ["task.json", "'type'", "unknown type 'qa'"],
        ),
        (
            lambda d: (d / "task.json").write_text(
                json.dumps({"name": "Bad", "type": "sts", "languages": ["xx"]})
            ),
            ["task.json", "'languages'", "xx"],
        ),
        (
            lambda d: (d / "task.json").write_text(
                json.dumps({"type": "sts", "languages": ["en"]})
            ),
            ["task.json", "'name'", "missing"],
        ),
        (
            lambda d: (d / "test.jsonl").write_text(
                '{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": "c", "score": 2}\n'
            ),
            ["test.jsonl", "line 2", "'sentence2'", "missing"],
        ),
        (
            lambda d: (d / "test.jsonl").write_text(
                '{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": "c", "sentence2": "d", "score": "high"}\n'
            ),
            ["test.jsonl", "line 2", "'score'", "expected a number"],
        ),
        (
            lambda d: (d / "test.jsonl").write_text(
                '{"sentence1": "a", "sentence2": "b", "score": 1}\nnot json\n'
            ),
            ["test.jsonl", "line 2", "invalid JSON"],
        ),
    ],
)
def test_malformed_task_dirs_name_file_line_field(tmp_path, breakage, expected):
    d = tmp_path / "bad"
    _valid_sts(d)
    breakage(d)
    with pytest.raises(TaskDirError) as err:
        load_task_dirs([d])
    for fragment in expected:
        assert fragment in str(err.value)


def test_malformed_retrieval_qrels(tmp_path):
    d = tmp_path / "ret"
    d.mkdir()
    (d / "task.json").write_text(
        json.dumps({"name": "R", "type": "retrieval", "languages": ["en"]})
    )
    write_jsonl(d / "corpus.jsonl", [{"_id": "d1", "text": "x"}])
    write_jsonl(d / "queries.jsonl", [{"_id": "q1", "text": "y"}])
    (d / "qrels").mkdir()
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\t1\n")
    with pytest.raises(
        TaskDirError, match=r"test\.tsv, line 3: field 'corpus-id': unknown corpus id 'd9'"
    ):
        load_task_dirs([d])
    write_jsonl(d / "corpus.jsonl", [{"_id": "d1", "text": "x"}, {"_id": "d1", "text": "z"}])
    with pytest.raises(TaskDirError, match=r"corpus\.jsonl, line 2: field '_id': duplicate id"):
        load_task_dirs([d])


def test_task_spec_defaults_and_unknown_keys(tmp_path):
    d = tmp_path / "t"
    _valid_sts(d)
    meta = {"name": "T", "type": "sts", "languages": ["en", "fr"], "source": "me", "license": "mit"}
    (d / "task.json").write_text(json.dumps(meta))
    spec = read_task_spec(d)
    assert spec.main_score == "cosine_spearman" and spec.instruction and spec.crosslingual
    assert spec.source == "me" and spec.license == "mit"
    # An unknown key (a typo such as "main_metric") is refused by name, like config keys.
    (d / "task.json").write_text(json.dumps({**meta, "main_metric": "f1", "notes": 1}))
    with pytest.raises(TaskDirError, match=r"task\.json: field 'main_metric': unknown key"):
        read_task_spec(d)


def test_cli_evaluate_runs_task_dirs(two_model_run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import lusifer.model
    from lusifer.cli import app

    _, _, _, dirs, _ = two_model_run
    made = {}

    def fake_loader(ref):
        made[ref] = FakeEmbedder(ref)
        return made[ref]

    monkeypatch.setattr(lusifer.model, "load_embedder", fake_loader)
    retrieval = next(d for d in dirs if d.name == "TinyRetrieval")
    bitext = next(d for d in dirs if d.name == "TinyBitext")
    args = ["evaluate", "m1", "m2", "--task-dir", str(retrieval), "--task-dir", str(bitext)]
    args += ["--output", str(tmp_path / "o"), "--bootstrap", "50", "--languages", "en,fr"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Paired bootstrap test: m1 - m2" in result.output
    assert set(made) == {"m1", "m2"} and all(m.calls for m in made.values())
    assert (tmp_path / "o" / "results.json").is_file()

    bad = CliRunner().invoke(app, ["evaluate", "m1", "--task-dir", str(tmp_path / "missing")])
    assert bad.exit_code == 2 and "not a directory" in bad.output
    assert CliRunner().invoke(app, ["evaluate", "m1", "--suite", "nope"]).exit_code != 0


def test_cli_evaluate_onnx_backend_gives_the_torch_scores(saved_tiny_model, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lusifer.cli import app

    monkeypatch.setenv("LUSIFER_CACHE", str(tmp_path / "cache"))  # the plain model's graph
    dirs, _ = make_task_dirs(tmp_path / "tasks")
    tasks = [d for d in dirs if d.name in ("TinySTS", "TinyRetrieval")]
    folder = saved_tiny_model(tmp_path / "m")
    scores = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / backend
        args = ["evaluate", str(folder), "tiny:bert", "--output", str(out), "--bootstrap", "0"]
        args += [a for d in tasks for a in ("--task-dir", str(d))]
        result = CliRunner().invoke(app, [*args, "--backend", backend, "--threads", "1"])
        assert result.exit_code == 0, result.output
        results = json.loads((out / "results.json").read_text())["results"]
        scores[backend] = {  # by model position: ONNX models carry "(onnx)" in their name
            (i, k): t["score"]
            for i, summary in enumerate(results.values())
            for k, t in summary["tasks"].items()
        }
    assert len(scores["onnx"]) == 4  # two models, two tasks
    for key, value in scores["torch"].items():
        assert scores["onnx"][key] == pytest.approx(value, abs=0.05), key
    assert list((folder / "onnx").glob("lusifer-*.onnx"))  # the export stays with the model
    assert list((tmp_path / "cache" / "onnx").glob("plain-*.onnx"))  # the backbone's, cached


def test_bundled_offline_suite_parses():
    from lusifer.evaluation.local_tasks import offline_suite_dirs
    from lusifer.evaluation.runner import resolve_tasks

    if not offline_suite_dirs():
        pytest.skip("the bundled offline suite is not built")
    entries = resolve_tasks("offline")  # parses and checks every task dir and data file
    assert entries
    for entry in entries:
        assert entry.instruction and entry.source == "local"
        assert "en" not in entry.languages or not entry.crosslingual  # en-xx counts for xx
    assert {e.key for e in resolve_tasks("offline", languages=["sw"])} <= {e.key for e in entries}


def test_hub_task_path_with_mteb_mock_task(tmp_path, monkeypatch):
    """A multi-subset mteb task (mteb's offline mock) split by language; a task that cannot
    load (as without internet) is reported and retried on the next run, not fatal."""
    from mteb.mocks.mock_tasks.retrieval import MockMultilingualRetrievalTask

    from lusifer.evaluation import runner
    from lusifer.evaluation.entry import TaskEntry

    def unreachable():
        raise ConnectionError("hub not reachable")

    def entry(key, factory, by_language):
        return TaskEntry(
            key=key,
            name=key,
            type="retrieval",
            main_metric="ndcg_at_10",
            split="test",
            instruction="Given a query, retrieve passages",
            subsets_by_language=by_language,
            crosslingual=False,
            source="mteb",
            digest="f",
            factory=factory,
        )

    entries = [
        entry(
            "MockMultilingualRetrievalTask",
            MockMultilingualRetrievalTask,
            {"en": ("eng",), "fr": ("fra",)},
        ),
        entry("Unreachable", unreachable, {"en": ("default",)}),
    ]
    monkeypatch.setattr(runner, "resolve_tasks", lambda *a, **k: entries)
    encoder = FakeEmbedder("hub")
    report = runner.evaluate(
        [encoder], suite="lusifer", output_dir=tmp_path, bootstrap=100, show_progress=False
    )
    task = report.summaries["hub"].tasks["MockMultilingualRetrievalTask"]
    assert set(task.subset_scores) == {"eng", "fra"}
    assert task.language_scores == {
        "en": task.subset_scores["eng"],
        "fr": task.subset_scores["fra"],
    }
    assert task.ci is None  # no per-example data from a hub task
    assert report.summaries["hub"].languages == task.language_scores
    assert "hub not reachable" in report.errors["hub"]["Unreachable"]
    assert "Failed tasks" in (tmp_path / "table.md").read_text()
    assert not (tmp_path / "runs" / "hub" / "Unreachable.json").exists()
    calls = len(encoder.calls)
    runner.evaluate(
        [encoder], suite="lusifer", output_dir=tmp_path, bootstrap=100, show_progress=False
    )
    assert len(encoder.calls) == calls  # the finished task is not rerun


def test_bitext_f1_decomposition_matches_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    labels = np.arange(40)
    predictions = np.where(rng.random(40) < 0.5, labels, rng.integers(0, 40, 40))  # collisions too
    expected = f1_score(labels, predictions, average="weighted", zero_division=0)
    assert significance.bitext_f1_terms(labels, predictions).mean() == pytest.approx(expected)
    per_example = {"labels": labels.tolist(), "predictions": predictions.tolist()}
    assert significance.point_score("bitext", "f1", per_example) == pytest.approx(100 * expected)


def test_intervals_contain_the_reported_score(two_model_run):
    report, *_ = two_model_run
    for summary in report.summaries.values():
        for task in summary.tasks.values():
            assert task.ci[0] - 1e-6 <= task.score <= task.ci[1] + 1e-6, task.key
        for lang, ci in summary.language_ci.items():
            assert ci[0] - 1e-6 <= summary.languages[lang] <= ci[1] + 1e-6


def test_read_jsonl_keeps_rows_as_written(tmp_path):
    from lusifer.evaluation.local_data import read_jsonl

    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": 2, "source": "s"}\n')
    rows = read_jsonl(path, {"text": "a non-empty string"})
    assert rows == [{"text": "a", "label": 1}, {"text": "b", "label": 2, "source": "s"}]
    assert rows.lines == [1, 3]
