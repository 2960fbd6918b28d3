"""Stage checkpoints: the trained tensors, optimizer, scheduler and every process's random
state in one folder per step, written atomically and read without running code.

A checkpoint folder ``checkpoints/step-00000500`` holds ``model.safetensors`` (the trained
tensors only), ``optimizer.pt``, ``scheduler.pt``, ``rng-<rank>.pt`` and, written last,
``trainer_state.json``: a folder with it is complete.
"""

from __future__ import annotations

import errno
import io
import json
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from ..files import atomic_folder, discard, remove_partial
from ..model.lusifer import ModelFolderError

STATE_NAME = "trainer_state.json"
RNG_NAME = "rng-{rank}.pt"  # one per process
OPTIMIZER_NAME = "optimizer-{rank}.pt"  # one per process, when the optimizer is sharded


class CheckpointWriteError(RuntimeError):
    """A checkpoint (or a stage's model) could not be written: a full disk, a read-only
    folder. Its partial folder was removed, what was saved before is intact, and the run
    resumes from it."""

    def __init__(self, folder: Path, kept: str, cause: BaseException) -> None:
        self.folder = folder
        full = _is_disk_full(cause)
        why = "the disk is full (no space left on device)" if full else f"{cause}"
        todo = (
            f"free space on the disk holding {folder.parent}"
            if full
            else f"fix the cause (is {folder.parent} writable?)"
        )
        super().__init__(
            f"writing {folder} failed: {why}. Nothing half-written was left behind and "
            f"{kept}; {todo}, then rerun `lusifer train CONFIG` (the same config) to resume."
        )


def _is_disk_full(err: BaseException | None) -> bool:
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err):  # e.g. safetensors' own error type
            return True
        err = err.__cause__ or err.__context__
    return False


def _write_bytes(path: Path, data: bytes) -> None:
    """Write a checkpoint file (through Python, so a full disk raises OSError(ENOSPC)
    rather than a writer library's own error)."""
    with open(path, "wb") as handle:
        handle.write(data)


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def load_safely(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain values only. A file
    holding other Python objects (which could run code while loading) is refused, and
    a damaged one (truncated, overwritten) is a :class:`ModelFolderError` too."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines()]
        detail = next((ln for ln in lines if "Unsupported global" in ln), "")
        if detail:
            raise ModelFolderError(
                f"{path} holds Python objects other than tensors and plain values "
                f"({detail}); it is not loaded, because loading it could run code on this "
                "machine. lusifer's checkpoints never hold such objects: resume only from "
                "checkpoints you trust, or delete this checkpoint folder to resume from an "
                "earlier one."
            ) from None
        marks = [i for i, ln in enumerate(lines) if "WeightsUnpickler error" in ln]
        after = [ln for ln in lines[marks[0] + 1 :] if ln] if marks else []
        raise ModelFolderError(_unreadable(path, after[0] if after else str(err))) from None
    except Exception as err:  # a damaged file fails in many ways (EOF, zip, index errors)
        raise ModelFolderError(_unreadable(path, f"{type(err).__name__}: {err}")) from None


def _unreadable(path: Path, why: str) -> str:
    """The message for a checkpoint file that is damaged (truncated, overwritten)."""
    why = why.strip().splitlines()[0].split(". ")[0][:200] if why.strip() else ""
    why = why if why and not why.endswith(":") else "empty or truncated"
    return (
        f"{path} cannot be read ({why}): it is damaged or not a checkpoint file; delete its "
        "checkpoint folder to resume from an earlier one"
    )


def rng_state() -> dict[str, Any]:
    """This process's random state, as tensors and plain values (loadable with
    ``weights_only=True``): Python's, numpy's, torch's CPU and CUDA generators."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        key = n["key"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], key, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Checkpoint:
    """What :meth:`Checkpoints.read` returns of one folder."""

    path: Path
    step: int
    world_size: int
    weights: dict[str, torch.Tensor]
    optimizer: Any
    scheduler: Any
    rng: dict[str, Any] | None  # this process's random state, None when not saved


class Checkpoints:
    """The ``checkpoints/`` folder of one stage: the newest ``keep`` complete
    checkpoints, each a ``step-*`` folder."""

    def __init__(self, root: Path, stage: str, keep: int) -> None:
        self.root = Path(root)
        self.stage = stage
        self.keep = keep

    def latest(self) -> Path | None:
        done = [p for p in self.root.glob("step-*") if (p / STATE_NAME).is_file()]
        return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None

    def save(
        self,
        step: int,
        *,
        weights: dict[str, torch.Tensor],
        optimizer: list[Any],
        scheduler: Any,
        rng_states: list[dict[str, Any]],
        state: dict[str, Any],
    ) -> Path:
        """Write one checkpoint atomically and durably (:func:`lusifer.files.atomic_folder`:
        a kill at any moment leaves the previous ones intact), then drop the oldest
        beyond ``keep``. A failed write (a full disk) removes its partial folder and
        raises :class:`CheckpointWriteError`."""
        final = self.root / f"step-{step:08d}"
        previous = self.latest()
        try:
            with atomic_folder(final) as tmp:
                _write_bytes(tmp / "model.safetensors", save_safetensors(weights))
                # one state, or one per process when the optimizer is sharded
                for rank, part in enumerate(optimizer):
                    name = (
                        "optimizer.pt" if len(optimizer) == 1 else OPTIMIZER_NAME.format(rank=rank)
                    )
                    _write_bytes(tmp / name, _torch_bytes(part))
                _write_bytes(tmp / "scheduler.pt", _torch_bytes(scheduler))
                for rank, rng in enumerate(rng_states):
                    _write_bytes(tmp / RNG_NAME.format(rank=rank), _torch_bytes(rng))
                state = {"stage": self.stage, "step": step, **state}
                # written last: a folder with it is complete
                _write_bytes(tmp / STATE_NAME, json.dumps(state, indent=2).encode())
        except Exception as err:
            kept = (
                f"the previous checkpoint {previous} is intact"
                if previous is not None
                else f"no earlier checkpoint of {self.stage} exists"
            )
            raise CheckpointWriteError(final, kept, err) from err
        for old in sorted(self.root.glob("step-*"), key=lambda p: p.name)[: -self.keep]:
            discard(old)  # renamed away first: a kill never leaves half a checkpoint
        return final

    def read(self, path: Path, rank: int) -> Checkpoint:
        """One checkpoint folder. Nothing in it is unpickled beyond tensors and plain
        values (a checkpoint from someone else cannot run code here): anything else is
        refused with a ModelFolderError."""
        try:
            state = json.loads((path / STATE_NAME).read_text())
        except (OSError, ValueError) as err:
            raise ModelFolderError(f"{path / STATE_NAME} cannot be read ({err})") from None
        if state.get("stage") != self.stage:
            raise ModelFolderError(f"{path} is a {state.get('stage')} checkpoint, not {self.stage}")
        try:
            weights = load_file(str(path / "model.safetensors"))
        except Exception as err:  # safetensors raises its own error type on a bad file
            raise ModelFolderError(f"{path / 'model.safetensors'} cannot be read ({err})") from None
        rng_file = path / RNG_NAME.format(rank=rank)
        optimizer_file = path / OPTIMIZER_NAME.format(rank=rank)
        if not optimizer_file.is_file():
            optimizer_file = path / "optimizer.pt"
        return Checkpoint(
            path=path,
            step=int(state["step"]),
            world_size=int(state.get("world_size", 1)),
            weights=weights,
            optimizer=load_safely(optimizer_file),
            scheduler=load_safely(path / "scheduler.pt"),
            rng=load_safely(rng_file) if rng_file.is_file() else None,
        )

    def remove_partial(self) -> list[Path]:
        """Remove what a killed run left half-written (temporary folders of checkpoint
        writes and deletes); returns them."""
        if not self.root.is_dir():
            return []
        return list(remove_partial(self.root, only_dead=False))

    def discard_all(self) -> None:
        """Drop every checkpoint (a fresh start never resumes an older run)."""
        for old in self.root.glob("step-*"):
            discard(old)
