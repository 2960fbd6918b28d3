"""Where a model runs: the default device (``cuda:LOCAL_RANK`` under torchrun or
``accelerate launch`` with CUDA, else ``cuda``, else ``mps``, else ``cpu``), checking a
device name against this machine, and placing a model there. Imports nothing of lusifer's
own, so the model, the ONNX runners and the loader can all use it."""

from __future__ import annotations

import os
from typing import Any

import torch

DEVICE_HELP = (
    "Where the model runs: cpu, cuda, cuda:N, mps. Default: cuda:LOCAL_RANK under "
    "torchrun/accelerate, else cuda, else mps, else cpu (the onnx backend: cpu)."
)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _local_rank() -> int | None:
    """``$LOCAL_RANK`` (set by torchrun and accelerate launch) as an int, else None."""
    value = os.environ.get("LOCAL_RANK", "").strip()
    try:
        return int(value) if value else None
    except ValueError:
        return None


def local_cuda_device() -> torch.device | None:
    """This process's own GPU under torchrun/accelerate: ``cuda:LOCAL_RANK`` (modulo the
    GPUs present, so that more processes than GPUs share them), or None without CUDA or
    without ``$LOCAL_RANK``."""
    rank = _local_rank()
    if rank is None or not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    return torch.device("cuda", rank % count if count > 0 else rank)


def default_device() -> torch.device:
    """Where a model runs when no device is given: ``cuda:LOCAL_RANK`` under
    torchrun/accelerate with CUDA, else ``cuda``, else ``mps``, else ``cpu``."""
    local = local_cuda_device()
    if local is not None:
        return local
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list[str]:
    """The device names this machine accepts, for error messages."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names.append("cuda")
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` checked against this machine (None: :func:`default_device`).

    A bare ``cuda`` means this process's GPU (``cuda:LOCAL_RANK`` under torchrun). A name
    torch does not know (``gpu``, ``cuda:abc``), a CUDA device without CUDA (or past the
    last GPU) or ``mps`` where it is unavailable is a ``ValueError`` naming the devices
    available here."""
    if device is None:
        return default_device()
    here = ", ".join(available_devices())
    if isinstance(device, torch.device):
        dev = device
    else:
        if not isinstance(device, str) or not device.strip():
            raise ValueError(f"device must be a name: use one of {here}, got {device!r}")
        try:
            dev = torch.device(device.strip())
        except (RuntimeError, ValueError, TypeError):
            raise ValueError(
                f"unknown device {device!r}: use one of {here} (cuda:N picks a GPU)"
            ) from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} needs CUDA, not available here: use {here}")
        if dev.index is None:
            return default_device() if local_cuda_device() is not None else dev
        if dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(device)!r}: this machine has {torch.cuda.device_count()} "
                f"GPU(s): use one of {here}"
            )
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {str(device)!r} is not available here: use {here}")
        return dev
    module = getattr(torch, dev.type, None)  # xpu and the like, where torch has them
    is_available = getattr(module, "is_available", None)
    if callable(is_available) and is_available():
        return dev
    raise ValueError(f"device {str(device)!r} is not available here: use {here}")


def embedder_device(embedder: Any) -> torch.device | None:
    """Where ``embedder`` runs: its parameters' device for a torch module, ``cpu`` for an
    onnxruntime runner, None for anything else."""
    if isinstance(embedder, torch.nn.Module):
        first = next(embedder.parameters(), None)
        return first.device if first is not None else torch.device("cpu")
    # an onnxruntime runner (OnnxLusifer, OnnxPlainEmbedder) runs its graph on the CPU
    return torch.device("cpu") if getattr(embedder, "onnx_path", None) is not None else None


def place(embedder: Any, device: str | torch.device | None = None) -> Any:
    """``embedder`` moved to ``device`` (resolved by :func:`resolve_device`) when it is a
    torch module; anything else is returned as it is."""
    target = resolve_device(device)
    if isinstance(embedder, torch.nn.Module):
        embedder.to(target)
    return embedder


def close_process_group() -> None:
    """Leave the torch.distributed group, if one is open, as PyTorch asks of a process
    before it exits (it warns when a group is left open). Call it once the wrapped
    (DDP/FSDP) models are dropped: they hold the group, and a gloo group that is still
    alive when the interpreter shuts down can abort the process ("terminate called
    without an active exception": its worker thread frees a finished collective's
    tensors, which needs the GIL of an interpreter that is going away)."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()  # wrapped models in reference cycles still hold the group
        dist.destroy_process_group()
