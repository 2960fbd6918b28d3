"""``lusifer evaluate`` killed mid-run and rerun gives the uninterrupted run's scores, and a
damaged per-run file is scored again rather than read as finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FakeEmbedder, make_task_dirs

pytestmark = pytest.mark.slow  # a system test: make test-fast leaves it out


TASKS = ("TinySTS", "TinyClustering", "TinyRetrieval", "TinyClassification")


def evaluate_args(model: Path, dirs: list[Path], out: Path) -> list[str]:
    args = ["evaluate", str(model), "--output", str(out), "--bootstrap", "0", "--no-cache"]
    return args + [a for d in dirs for a in ("--task-dir", str(d))]


def scores(out: Path) -> dict[str, float]:
    results = json.loads((out / "results.json").read_text())["results"]
    return {
        task: t["score"] for summary in results.values() for task, t in summary["tasks"].items()
    }


def evaluate_in_process(args: list[str]) -> None:
    from typer.testing import CliRunner

    from lusifer.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def setup(tmp_path_factory, saved_tiny_model) -> tuple[Path, list[Path], dict[str, float]]:
    """A saved tiny LUSIFER model, four task folders and the uninterrupted run's scores."""
    root = tmp_path_factory.mktemp("eval-kill")
    folder = saved_tiny_model(root / "model")
    dirs = [d for d in make_task_dirs(root / "tasks")[0] if d.name in TASKS]
    evaluate_in_process(evaluate_args(folder, dirs, root / "whole"))
    whole = scores(root / "whole")
    assert set(whole) == set(TASKS)
    return folder, dirs, whole


@pytest.mark.timeout(240)
def test_a_killed_evaluation_reruns_to_the_same_scores(setup, tmp_path):
    folder, dirs, whole = setup
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LUSIFER_EVAL_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "lusifer.cli", *evaluate_args(folder, dirs, out)]
    log = (tmp_path / "evaluate.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while proc.poll() is None:  # kill once the first task's result is written
        if list(out.glob("runs/*/*.json")):
            os.kill(proc.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "evaluate wrote no result in 180 s"
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "evaluate.log").read_text()[-2000:]
    assert not (out / "results.json").exists()  # it died mid-run
    done = {p: p.read_bytes() for p in out.glob("runs/*/*.json")}
    assert 1 <= len(done) < len(TASKS)
    for path in done:  # every result on disk is whole JSON (atomic writes)
        json.loads(path.read_text())

    evaluate_in_process(evaluate_args(folder, dirs, out))
    assert scores(out) == pytest.approx(whole, abs=1e-6)
    for path, data in done.items():  # finished tasks were kept, not scored again
        assert path.read_bytes() == data
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # cut short
        lambda data: b"",  # empty
        lambda data: data.rstrip()[:-1],
        lambda data: b"null",  # valid JSON, not a run
    ],
    ids=["half", "empty", "cut-last-brace", "not-an-object"],
)
def test_a_half_written_run_file_is_not_read_as_finished(tmp_path, damage):
    from lusifer.evaluation import evaluate

    dirs = [d for d in make_task_dirs(tmp_path / "tasks")[0] if d.name in ("TinySTS", "TinyBitext")]
    run = dict(task_dirs=dirs, output_dir=tmp_path / "out", bootstrap=0, show_progress=False)
    encoder = FakeEmbedder("m")
    first = evaluate([encoder], **run, use_cache=False)
    path = tmp_path / "out/runs/m/TinySTS.json"
    path.write_bytes(damage(path.read_bytes()))
    calls = len(encoder.calls)
    again = evaluate([encoder], **run, use_cache=False)
    assert len(encoder.calls) > calls  # TinySTS was scored again
    assert again.score("m", "TinySTS") == first.score("m", "TinySTS")
    assert json.loads(path.read_text())["subset_scores"]  # and its file rewritten whole


def test_a_run_file_cut_inside_a_utf8_character_is_scored_again(tmp_path):
    from lusifer.evaluation import evaluate

    dirs = [d for d in make_task_dirs(tmp_path / "tasks")[0] if d.name == "TinySTS"]
    run = dict(task_dirs=dirs, output_dir=tmp_path / "out", bootstrap=0, show_progress=False)
    first = evaluate([FakeEmbedder("modèle")], **run, use_cache=False)
    (path,) = (tmp_path / "out/runs").glob("*/TinySTS.json")
    data = path.read_bytes()
    path.write_bytes(data[: data.index("è".encode()) + 1])  # half of the "è"
    again = evaluate([FakeEmbedder("modèle")], **run, use_cache=False)
    assert again.score("modèle", "TinySTS") == first.score("modèle", "TinySTS")
