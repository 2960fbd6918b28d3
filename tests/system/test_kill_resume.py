"""SIGKILL at random moments, then the same command again (it resumes): the run ends exactly as
an uninterrupted one.

``lusifer train`` runs in a subprocess on tiny backbones with LoRA dropout (so the saved
random state matters) and is killed between checkpoints, while a checkpoint is being
written, between the stages and while the final model is being saved. After every kill
each checkpoint left on disk must load without unpickling code; after the last resume
no temporary may be left and every loss and tensor must equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ENGLISH
from safetensors.torch import load_file

from lusifer.files import TMP_MARK

STAGES = ("alignment", "representation")
STEPS = 6
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONWARNINGS": "ignore",
}
ROWS = ENGLISH[:6]  # the training tests' English pairs
Trigger = Callable[[Path], bool]


def write_run(folder: Path) -> Path:
    """A tiny two-stage config with LoRA dropout in both stages and frequent saves."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = folder / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"query": q, "positive": p, "instruction": "Find the answer"}) + "\n"
            for q, p in ROWS * 3
        )
    )
    lora = {"r": 4, "alpha": 8, "dropout": 0.2}
    stage = {"steps": STEPS, "batch_size": 4, "data": [{"path": str(pairs)}]}
    config = {
        "model": {
            "encoder": "tiny:xlmr",
            "target": "tiny:bert",
            "encoder_lora": lora,
            "target_lora": lora,
        },
        "run": {
            "output_dir": str(folder / "out"),
            "seed": 5,
            "save_every": 2,
            "keep_checkpoints": 2,
            "log_every": 1,
            "max_length": 32,
        },
        "alignment": {**stage, "learning_rate": 3e-3, "objectives": {"lm": 0.0, "distill": 1.0}},
        "representation": {**stage, "learning_rate": 2e-3, "train_target_lora": True},
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(config: Path, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "lusifer.cli", "train", str(config)]
    with log.open("a") as handle:
        return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=ENV)


def run_until(config: Path, trigger: Trigger | None, delay: float) -> bool:
    """Run ``lusifer train`` (resuming what the output folder holds); SIGKILL it ``delay`` s
    after ``trigger`` first holds. Returns whether it was killed (False: it finished on its
    own, successfully)."""
    out, log = config.parent / "out", config.parent / "train.log"
    proc = launch(config, log)
    deadline = time.monotonic() + 240
    while proc.poll() is None:
        if trigger is not None and trigger(out):
            if delay:
                time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            if proc.returncode == -signal.SIGKILL:
                return True
            break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("lusifer train did not finish in 240 s")
        time.sleep(0.0005)
    assert proc.returncode == 0, log.read_text()[-3000:]
    return False


# ------------------------------------------------------------------ triggers
def logged_step(stage: str, step: int) -> Trigger:
    """Once ``stage`` logged ``step`` (a kill shortly after lands between checkpoints)."""

    def hit(out: Path) -> bool:
        try:
            return (out / stage / "log.jsonl").read_text().count("\n") >= step
        except OSError:
            return False

    return hit


def checkpoint_being_written(stage: str, nth: int = 1) -> Trigger:
    """While the ``nth`` checkpoint write of ``stage`` has its temporary folder."""
    seen: set[str] = set()

    def hit(out: Path) -> bool:
        try:
            names = os.listdir(out / stage / "checkpoints")
        except OSError:
            return False
        writes = {  # not the renamed-away folders of a replace or a delete
            n
            for n in names
            if n.startswith(".step-") and TMP_MARK in n and not ("-old-" in n or "-trash-" in n)
        }
        seen.update(writes)
        return bool(writes) and len(seen) >= nth

    return hit


def between_stages(out: Path) -> bool:
    return (out / "alignment/final/lusifer_config.json").is_file()


def final_model_being_saved(out: Path) -> bool:
    try:
        return any(n.startswith(".model" + TMP_MARK) for n in os.listdir(out))
    except OSError:
        return False


# ------------------------------------------------------------------- checks
def assert_checkpoints_load(out: Path) -> None:
    """Every checkpoint folder on disk is complete and loads without unpickling code."""
    for stage in STAGES:
        root = out / stage / "checkpoints"
        for folder in root.glob("step-*") if root.is_dir() else []:
            names = {p.name for p in folder.iterdir()}
            assert {"trainer_state.json", "model.safetensors", "optimizer.pt"} <= names, folder
            assert {"scheduler.pt", "rng-0.pt"} <= names, folder
            state = json.loads((folder / "trainer_state.json").read_text())
            assert state["stage"] == stage and state["step"] == int(folder.name.split("-")[1])
            assert load_file(str(folder / "model.safetensors"))
            for name in sorted(names):
                if name.endswith(".pt"):
                    torch.load(folder / name, map_location="cpu", weights_only=True)


def losses(out: Path, stage: str) -> list[tuple[int, float]]:
    lines = (out / stage / "log.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


def assert_same_run(out: Path, reference: Path) -> None:
    leftovers = [p for p in out.rglob("*") if TMP_MARK in p.name]
    assert not leftovers, leftovers
    assert_checkpoints_load(out)
    for stage in STAGES:
        got, want = losses(out, stage), losses(reference, stage)
        assert [s for s, _ in got] == [s for s, _ in want], stage
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6), stage
    for folder in ("alignment/final", "representation/final", "model"):
        got = load_file(str(out / folder / "model.safetensors"))
        want = load_file(str(reference / folder / "model.safetensors"))
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert torch.allclose(got[key], value, atol=1e-6, rtol=0), (folder, key)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    config = write_run(tmp_path_factory.mktemp("whole"))
    assert not run_until(config, None, 0.0)
    return config.parent / "out"


def scenario(seed: int) -> list[tuple[Trigger, float, str | None]]:
    """The kills of one seeded run, in order: (trigger, delay after it, the temporary the
    kill must leave behind when it lands during a write)."""
    rng = random.Random(seed)
    if seed == 0:  # during a stage-1 checkpoint write, then between the stages
        nth = rng.randint(1, 3)
        return [
            (checkpoint_being_written("alignment", nth), 0.0, "alignment/checkpoints/.step-*"),
            (between_stages, rng.uniform(0.0, 0.05), None),
        ]
    if seed == 1:  # between stage-1 checkpoints (stage 2 must still match), then during
        # a stage-2 checkpoint write
        nth = rng.randint(1, 3)
        return [
            (logged_step("alignment", rng.choice([3, 5])), rng.uniform(0.0, 0.05), None),
            (
                checkpoint_being_written("representation", nth),
                0.0,
                "representation/checkpoints/.step-*",
            ),
        ]
    # between stage-2 checkpoints, then while the final model is being saved
    return [
        (logged_step("representation", rng.choice([3, 5])), rng.uniform(0.0, 0.05), None),
        (final_model_being_saved, 0.0, ".model.tmp-*"),
    ]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path, uninterrupted, seed):
    config = write_run(tmp_path)
    out = tmp_path / "out"
    kills = 0
    for trigger, delay, temporary in scenario(seed):
        if not run_until(config, trigger, delay):
            break
        kills += 1
        if temporary is not None:  # the kill landed mid-write: its temporary is left
            assert list(out.glob(temporary)), sorted(str(p) for p in out.rglob("*"))
        assert_checkpoints_load(out)  # whatever the moment, what is on disk loads
    assert kills == 2, "a kill did not land (the run finished first)"
    assert not run_until(config, None, 0.0)  # resumes to the end
    assert_same_run(out, uninterrupted)
