"""Evaluation results in mteb's own layout, and evaluation split across processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_task_dirs

TASKS = ("TinyBitext", "TinyRetrieval", "TinySTS", "TinyClassification")
MODELS = ("lusifer[tiny:xlmr -> tiny:bert]", "tiny:xlmr")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, saved_tiny_model):
    """A tiny LUSIFER folder and a tiny plain encoder on four tiny local tasks, in this
    process: the reference for the multi-process run."""
    from lusifer import load_embedder
    from lusifer.evaluation import evaluate

    root = tmp_path_factory.mktemp("publishing")
    folder = saved_tiny_model(root / "model")
    dirs = [d for d in make_task_dirs(root / "tasks")[0] if d.name in TASKS]
    models = [load_embedder(folder), load_embedder("tiny:xlmr")]
    assert tuple(m.name for m in models) == MODELS
    report = evaluate(
        models,
        task_dirs=dirs,
        output_dir=root / "one",
        bootstrap=50,
        show_progress=False,
        use_cache=False,
        mteb_names=["someone/lusifer-tiny@abc123", None],
    )
    return report, folder, dirs, models, root


def _main_scores_from_runs(out: Path, slug: str) -> dict[str, float]:
    """Our per-task score (mean over subsets, 0-100) from lusifer's own run files."""
    scores = {}
    for path in (out / "runs" / slug).glob("*.json"):
        run = json.loads(path.read_text())
        values = list(run["subset_scores"].values())
        scores[run["task"]] = sum(values) / len(values)
    return scores


def test_mteb_reads_the_layout_back_with_our_main_scores(one_process):
    from lusifer.evaluation.mteb_results import read_main_scores

    report, *_ = one_process
    layout = report.files["mteb"]
    assert layout == report.output_dir / "mteb"
    # mteb's own folder names: results/<name as path>/<revision>/<Task>.json + model_meta.json
    lusifer_dir = layout / "results" / "someone__lusifer-tiny" / "abc123"
    plain_dir = layout / "results" / "lusifer__tiny_xlmr" / "local"
    for folder in (lusifer_dir, plain_dir):
        assert {p.name for p in folder.glob("*.json")} == {f"{t}.json" for t in TASKS} | {
            "model_meta.json"
        }
    meta = json.loads((lusifer_dir / "model_meta.json").read_text())
    assert (meta["name"], meta["revision"], meta["embed_dim"]) == (
        "someone/lusifer-tiny",
        "abc123",
        24,
    )
    task = json.loads((lusifer_dir / "TinySTS.json").read_text())
    assert {"mteb_version", "task_name", "scores", "evaluation_time", "dataset_revision"} <= set(
        task
    )
    row = task["scores"]["test"][0]
    assert row["hf_subset"] == "default" and row["languages"] == ["fra-Latn"]
    assert "cosine_pearson" in row  # every metric mteb computed, not only the main score

    loaded = read_main_scores(layout)  # mteb.ResultCache(...).load_results()
    assert set(loaded) == {"someone/lusifer-tiny", "lusifer/tiny_xlmr"}
    for mteb_name, model in zip(("someone/lusifer-tiny", "lusifer/tiny_xlmr"), MODELS, strict=True):
        assert set(loaded[mteb_name]) == set(TASKS)
        for key in TASKS:
            ours = report.score(model, key)
            assert 100 * loaded[mteb_name][key] == pytest.approx(ours, abs=1e-4), (model, key)


def test_runs_without_mteb_results_are_rebuilt_by_mteb(one_process, tmp_path):
    """Run files from before the layout existed (or cached ones) keep only main scores;
    mteb rebuilds TaskResults from them and reads the same main scores back."""
    from lusifer.evaluation.mteb_model import model_slug
    from lusifer.evaluation.mteb_results import read_main_scores, write_mteb_results
    from lusifer.evaluation.runner import resolve_tasks

    report, _, dirs, models, _ = one_process
    entries = resolve_tasks(None, dirs)
    runs = {}
    for model in models:
        runs[model.name] = {}
        for path in (report.output_dir / "runs" / model_slug(model.name)).glob("*.json"):
            run = json.loads(path.read_text())
            run.pop("mteb_result")
            runs[model.name][run["task"]] = run
    layout = write_mteb_results(tmp_path, models, [m.name for m in models], entries, runs)
    loaded = read_main_scores(layout)
    for model in models:
        for key in TASKS:
            got = 100 * loaded[f"lusifer/{model_slug(model.name)}"][key]
            assert got == pytest.approx(report.score(model.name, key), abs=1e-4)


def _without_times(payload: dict) -> dict:
    for summary in payload["results"].values():
        for task in summary["tasks"].values():
            task.pop("evaluation_time")
    return payload


@pytest.mark.timeout(300)
@pytest.mark.slow  # torchrun
def test_two_processes_give_the_report_of_one(one_process, tmp_path):
    """torchrun with 2 CPU processes: the 8 (model, task) pairs split round-robin, rank 0
    merges one report; scores, CIs and paired tests equal the one-process run's."""
    from lusifer.evaluation.distributed import Shard

    report, folder, dirs, _, root = one_process
    assert [i for i in range(8) if Shard(1, 2).owns(i)] == [1, 3, 5, 7]
    out = tmp_path / "two"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--standalone",  # a free rendezvous port: overlapping runs do not collide
            "-m",
            "lusifer.cli",
            "evaluate",
            str(folder),
            "tiny:xlmr",
            *[arg for d in dirs for arg in ("--task-dir", str(d))],
            "--output",
            str(out),
            "--bootstrap",
            "50",
            "--no-cache",
            "--mteb-name",
            "someone/lusifer-tiny@abc123",
            "--mteb-name",
            "lusifer/tiny_xlmr",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote results:") == 1  # one report, from rank 0
    one = _without_times(json.loads((report.output_dir / "results.json").read_text()))
    two = _without_times(json.loads((out / "results.json").read_text()))
    assert two["results"] == one["results"]
    assert two["paired_tests"] == one["paired_tests"] and two["errors"] == {}
    # every pair was scored once, by the rank it belonged to, and merged in suite order
    assert list(two["results"][MODELS[0]]["tasks"]) == list(TASKS)
    for slug in ("lusifer_tiny_xlmr_-_tiny_bert", "tiny_xlmr"):
        assert _main_scores_from_runs(out, slug) == pytest.approx(
            _main_scores_from_runs(report.output_dir, slug)
        )
    from lusifer.evaluation.mteb_results import read_main_scores

    want = read_main_scores(report.output_dir / "mteb")
    got = read_main_scores(out / "mteb")
    assert set(got) == set(want)
    for name, scores in want.items():
        assert got[name] == pytest.approx(scores)
