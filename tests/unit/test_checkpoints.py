"""The checkpoint writer: durable (fsync before rename, then the folder), atomic (a failed
or killed write leaves the previous state), safe to load (no pickled code), and every
process's random state saved and restored."""

from __future__ import annotations

import errno
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from helpers import tiny_run_config, write_run_config
from safetensors.torch import load_file

import lusifer.files as files
import lusifer.training.checkpoints as checkpoints
from lusifer import LusiferModel
from lusifer.files import TMP_MARK, atomic_folder, atomic_write
from lusifer.model.lusifer import ModelFolderError
from lusifer.training import load_train_config, run_training
from lusifer.training.checkpoints import CheckpointWriteError
from lusifer.training.engine import StageTrainer


def small_config(tmp_path: Path, steps: int = 2):
    config = tiny_run_config(
        tmp_path, target="bert", alignment={"steps": steps}, representation={"steps": steps}
    )
    config["run"]["save_every"] = 1
    return load_train_config(write_run_config(tmp_path, config))


def make_trainer(tmp_path: Path) -> StageTrainer:
    """A stage-1 trainer on tiny backbones, set up and one step into training."""
    cfg = small_config(tmp_path)
    name, objective, stage = cfg.stage_list()[0]
    model = LusiferModel.build(cfg.model)
    trainer = StageTrainer(
        model, name, stage, cfg.run, tmp_path / "out" / name, Accelerator(cpu=True), objective
    )
    trainer.prepare()
    trainer.step(1)
    trainer.optimizer.step()
    trainer.scheduler.step()
    return trainer


def draws() -> tuple[float, float, list[float]]:
    """One draw from each generator a training step uses."""
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


# ---------------------------------------------------------------- durability
def test_files_are_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path)
    events: list[tuple[str, str]] = []
    real = {
        "fsync_file": files.fsync_file,
        "fsync_dir": files.fsync_dir,
        "replace": os.replace,
        "rename": os.rename,
    }

    def record(kind: str):
        def wrapper(*args):
            events.append((kind, str(args[0])) if len(args) == 1 else (kind, str(args[1])))
            return real[kind](*args)

        return wrapper

    monkeypatch.setattr(files, "fsync_file", record("fsync_file"))
    monkeypatch.setattr(files, "fsync_dir", record("fsync_dir"))
    monkeypatch.setattr(files.os, "replace", record("replace"))
    monkeypatch.setattr(files.os, "rename", record("rename"))
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: fsyncs.append(fd) or real_fsync(fd))
    trainer.save_checkpoint(1)

    final = trainer.checkpoint_root / "step-00000001"
    renames = [i for i, (kind, dest) in enumerate(events) if kind in ("replace", "rename")]
    assert [events[i][1] for i in renames] == [str(final)]  # one rename, onto the final name
    (moved,) = renames
    before, after = events[:moved], events[moved + 1 :]
    written = {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng-0.pt"}
    written.add("trainer_state.json")
    synced = {Path(p).name for kind, p in before if kind == "fsync_file"}
    assert synced == written  # every file, before the rename
    tmp_dirs = [Path(p) for kind, p in before if kind == "fsync_dir"]
    assert tmp_dirs and TMP_MARK in tmp_dirs[-1].name  # the temporary folder's entries too
    assert ("fsync_dir", str(trainer.checkpoint_root)) in after  # then the rename itself
    assert len(fsyncs) >= len(written) + 2  # each of them reached os.fsync
    assert {p.name for p in final.iterdir()} == written


def test_atomic_write_fsyncs_the_file_before_replacing_and_the_folder_after(tmp_path, monkeypatch):
    events: list[str] = []
    real_file, real_dir, real_replace = files.fsync_file, files.fsync_dir, os.replace
    monkeypatch.setattr(files, "fsync_file", lambda p: events.append("file") or real_file(p))
    monkeypatch.setattr(files, "fsync_dir", lambda p: events.append(f"dir {p}") or real_dir(p))
    monkeypatch.setattr(
        files.os, "replace", lambda a, b: events.append("replace") or real_replace(a, b)
    )
    atomic_write(tmp_path / "log.jsonl", "one\n")
    assert events == ["file", "replace", f"dir {tmp_path}"]
    assert (tmp_path / "log.jsonl").read_text() == "one\n"


# ------------------------------------------------------------ partial writes
def test_partial_saves_are_removed_on_resume_and_never_read(tmp_path):
    cfg = small_config(tmp_path)
    out = Path(cfg.run.output_dir)
    assert run_training(cfg, stop_after=1) is None  # checkpoint step-1 of stage 1
    root = out / "alignment/checkpoints"
    # what kills leave: a checkpoint write (of a later step), a delete, the saves of
    # the stage's and the run's final model (the process ids are long gone)
    partials = [
        root / f".step-00000002{TMP_MARK}999999-abc",
        root / f".step-00000001{TMP_MARK}999999-trash-abc",
        out / "alignment" / f".final{TMP_MARK}999999-abc",
        out / f".model{TMP_MARK}999999-abc",
    ]
    for folder in partials:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    (partials[0] / "trainer_state.json").write_text(json.dumps({"stage": "alignment", "step": 2}))
    assert run_training(small_config(tmp_path), resume=True) == out / "model"
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]
    summary = json.loads((out / "alignment/summary.json").read_text())
    assert summary["steps_run_from"] == 1  # resumed from step-1, not the partial step-2


def test_remove_partial_keeps_a_live_writers_temporary(tmp_path):
    mine = tmp_path / f".cache-entry{TMP_MARK}{os.getpid()}-abc"
    dead = tmp_path / f".cache-entry{TMP_MARK}999999-abc"
    for folder in (mine, dead):
        folder.mkdir()
    assert files.remove_partial(tmp_path) == [dead]
    assert mine.exists() and not dead.exists()
    assert files.remove_partial(tmp_path, only_dead=False) == [mine]


# -------------------------------------------------------------- random state
def test_every_processes_random_state_is_saved_and_restored(tmp_path):
    trainer = make_trainer(tmp_path)
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    draws()
    trainer.save_checkpoint(1)
    expected = draws()  # what the run would draw next
    folder = trainer.checkpoint_root / "step-00000001"
    rng = torch.load(folder / "rng-0.pt", weights_only=True)  # plain values and tensors
    assert {"python", "numpy", "cpu"} <= set(rng)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)  # another process's state
    assert draws() != expected
    assert trainer.load_checkpoint(folder) == 1
    assert draws() == expected


# --------------------------------------------------------------- safe loading
class Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng-0.pt"])
def test_a_checkpoint_holding_pickled_code_is_refused_without_running_it(tmp_path, name):
    trainer = make_trainer(tmp_path)
    trainer.save_checkpoint(1)
    folder = trainer.checkpoint_root / "step-00000001"
    marker = tmp_path / "ran"
    torch.save({"state": {0: Payload(marker)}, "param_groups": []}, folder / name)
    with pytest.raises(ModelFolderError) as err:
        trainer.load_checkpoint(folder)
    message = str(err.value)
    assert name in message and "could run code" in message and "exec" in message
    assert not marker.exists()  # the object's code never ran
    torch.load(folder / name, weights_only=False)  # (the payload does run when unpickled)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize(
    "damage",
    [b"not a torch file", b"\x80\x04K", b"", b"PK\x03\x04garbage", "truncated"],
    ids=["text", "short-pickle", "empty", "bad-zip", "truncated"],
)
def test_a_damaged_checkpoint_file_is_a_checkpoint_error(tmp_path, damage):
    trainer = make_trainer(tmp_path)
    trainer.save_checkpoint(1)
    folder = trainer.checkpoint_root / "step-00000001"
    path = folder / "optimizer.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else damage)
    with pytest.raises(ModelFolderError) as err:  # never IndexError, EOFError, ...
        trainer.load_checkpoint(folder)
    message = str(err.value)
    assert f"{path} cannot be read" in message and "damaged" in message
    assert "could run code" not in message  # not mistaken for a hostile file


def test_a_damaged_weights_or_state_file_is_a_checkpoint_error(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.save_checkpoint(1)
    folder = trainer.checkpoint_root / "step-00000001"
    (folder / "model.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(ModelFolderError, match="model.safetensors cannot be read"):
        trainer.load_checkpoint(folder)
    (folder / "trainer_state.json").write_text('{"stage": "alignm')
    with pytest.raises(ModelFolderError, match="trainer_state.json cannot be read"):
        trainer.load_checkpoint(folder)


# ------------------------------------------------------------------ full disk
def disk_fills_at(monkeypatch, name: str) -> None:
    """Writing the checkpoint file ``name`` fails as on a full disk."""
    real = checkpoints._write_bytes

    def write(path: Path, data: bytes) -> None:
        if path.name == name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(checkpoints, "_write_bytes", write)


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_how_to_resume(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path)
    trainer.save_checkpoint(1)
    root = trainer.checkpoint_root
    before = {p.name: p.read_bytes() for p in (root / "step-00000001").iterdir()}
    disk_fills_at(monkeypatch, "optimizer.pt")
    with pytest.raises(CheckpointWriteError) as err:
        trainer.save_checkpoint(2)
    message = str(err.value)
    assert "disk is full" in message and "free space" in message
    assert "rerun `lusifer train CONFIG`" in message
    assert "step-00000001 is intact" in message and "step-00000002" in message
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
    assert sorted(p.name for p in root.iterdir()) == ["step-00000001"]  # no partial folder
    assert {p.name: p.read_bytes() for p in (root / "step-00000001").iterdir()} == before
    assert trainer.latest_checkpoint() == root / "step-00000001"
    assert trainer.load_checkpoint(root / "step-00000001") == 1


def test_a_full_disk_before_any_checkpoint_says_so(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path)
    disk_fills_at(monkeypatch, "model.safetensors")
    with pytest.raises(CheckpointWriteError, match="no earlier checkpoint of alignment exists"):
        trainer.save_checkpoint(1)
    assert list(trainer.checkpoint_root.iterdir()) == []


def test_a_run_that_fills_the_disk_resumes_once_there_is_space(tmp_path, monkeypatch):
    cfg = small_config(tmp_path)
    disk_fills_at(monkeypatch, "scheduler.pt")
    with pytest.raises(CheckpointWriteError, match="disk is full"):
        run_training(cfg)
    assert not list((Path(cfg.run.output_dir) / "alignment/checkpoints").iterdir())
    monkeypatch.undo()
    assert run_training(small_config(tmp_path), resume=True) is not None


def test_a_full_disk_while_saving_a_stages_model_keeps_its_checkpoint(tmp_path, monkeypatch):
    import lusifer.model.lusifer as lusifer_model

    cfg = small_config(tmp_path)
    real = lusifer_model.save_file

    def full(*args, **kwargs):  # as safetensors reports it, in its own error type
        raise RuntimeError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
            'message: "No space left on device" })'
        )

    monkeypatch.setattr(lusifer_model, "save_file", full)
    with pytest.raises(CheckpointWriteError) as err:
        run_training(cfg)
    message = str(err.value)
    assert "alignment/final failed: the disk is full" in message
    assert "alignment's last checkpoint" in message and "is intact" in message
    out = Path(cfg.run.output_dir)
    assert not (out / "alignment/final").exists()
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]
    assert (out / "alignment/checkpoints/step-00000002/trainer_state.json").is_file()
    monkeypatch.setattr(lusifer_model, "save_file", real)
    assert run_training(small_config(tmp_path), resume=True) == out / "model"
    assert json.loads((out / "alignment/summary.json").read_text())["steps_run_from"] == 2


# -------------------------------------------------------------- atomic_folder
def test_atomic_folder_keeps_the_old_folder_on_an_error(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)), atomic_folder(target) as tmp:
            (tmp / "weights").write_text("new, half written")
            raise error
        assert (target / "weights").read_text() == "old"
        assert [p.name for p in tmp_path.iterdir()] == ["model"]  # the temporary is gone


def test_atomic_folder_puts_the_old_folder_back_when_the_swap_fails(tmp_path, monkeypatch):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    real = os.replace
    calls: list[tuple[str, str]] = []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new folder onto the name, after the old one moved away
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(OSError, match="I/O error"), atomic_folder(target) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    monkeypatch.setattr(files.os, "replace", real)
    with atomic_folder(target) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # the old one was deleted


def test_checkpoint_folders_hold_only_safe_files(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.save_checkpoint(1)
    folder = trainer.checkpoint_root / "step-00000001"
    assert load_file(str(folder / "model.safetensors")).keys() == (
        trainer.model.trained_state_dict().keys()
    )
    for name in ("optimizer.pt", "scheduler.pt", "rng-0.pt"):
        torch.load(folder / name, weights_only=True)
    state = json.loads((folder / "trainer_state.json").read_text())
    assert state["stage"] == "alignment" and state["step"] == 1 and state["world_size"] == 1


def test_the_train_command_reports_a_refused_checkpoint_without_a_traceback(tmp_path):
    from typer.testing import CliRunner

    from lusifer.cli import app

    cfg = small_config(tmp_path)
    assert run_training(cfg, stop_after=1) is None
    folder = Path(cfg.run.output_dir) / "alignment/checkpoints/step-00000001"
    marker = tmp_path / "ran"
    torch.save({"state": Payload(marker)}, folder / "optimizer.pt")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "run.yaml")])
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "could run code" in result.output
    assert not isinstance(result.exception, ModelFolderError)  # reported, not raised
    assert not marker.exists()


def test_the_train_command_resumes_on_its_own_and_overwrite_starts_over(tmp_path):
    from typer.testing import CliRunner

    from lusifer.cli import app

    cfg = small_config(tmp_path, steps=3)
    out = Path(cfg.run.output_dir)
    assert run_training(cfg, stop_after=2) is None  # interrupted after step 2 of stage 1
    command = ["train", str(tmp_path / "run.yaml")]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "alignment/summary.json").read_text())
    assert summary["steps_run_from"] == 2  # resumed, not started over
    # a finished run is kept: nothing is retrained
    assert CliRunner().invoke(app, command).exit_code == 0
    assert json.loads((out / "alignment/summary.json").read_text()) == summary
    # another config is refused, and --overwrite starts over
    changed = CliRunner().invoke(app, [*command, "alignment.steps=2"])
    assert changed.exit_code == 2 and "another config" in changed.output
    result = CliRunner().invoke(app, [*command, "alignment.steps=2", "--overwrite"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "alignment/summary.json").read_text())
    assert summary["steps_run_from"] == 0
    assert sorted(p.name for p in (out / "alignment/checkpoints").iterdir()) == [
        "step-00000001",
        "step-00000002",
    ]
