"""One way to load a model to embed with, and where it runs.

:func:`load` is what every command that encodes (``encode``, ``search``, ``evaluate``,
``serve``, ``mine``) and the Python API's ``load_text_encoder`` / ``onnx.load_encoder``
go through: it reads ``MODEL`` on the chosen backend and places it on a device.

The device, when none is given (:func:`default_device`): ``cuda:LOCAL_RANK`` under
``torchrun`` / ``accelerate launch`` (``$LOCAL_RANK`` set) when CUDA is available, else
``cuda`` when CUDA is available, else ``mps`` when available, else ``cpu``. ONNX
(onnxruntime) runs on the CPU only.

Nothing here imports onnxruntime until the onnx or auto backend is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

BACKENDS = ("torch", "onnx", "auto")
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


def encoder_device(encoder: Any) -> torch.device | None:
    """Where ``encoder`` runs: its parameters' device for a torch module, ``cpu`` for an
    onnxruntime runner, None for anything else."""
    if isinstance(encoder, torch.nn.Module):
        first = next(encoder.parameters(), None)
        return first.device if first is not None else torch.device("cpu")
    from .onnx.backends import backend_of

    try:
        return torch.device("cpu") if backend_of(encoder) == "onnx" else None
    except ImportError:  # onnxruntime missing: it cannot be an onnx runner
        return None


def place(encoder: Any, device: str | torch.device | None = None) -> Any:
    """``encoder`` moved to ``device`` (resolved by :func:`resolve_device`) when it is a
    torch module; anything else is returned as it is."""
    target = resolve_device(device)
    if isinstance(encoder, torch.nn.Module):
        encoder.to(target)
    return encoder


def load(
    reference: str | Path,
    *,
    backend: str = "torch",
    quantize: str | None = None,
    device: str | torch.device | None = None,
    threads: int | None = None,
):
    """A ``TextEncoder`` for ``reference`` (what ``lusifer encode`` takes as ``MODEL``:
    a LUSIFER folder or hub id, a bundled backbone, a Hugging Face folder or hub id) on
    ``backend``, placed on ``device``.

    - ``backend="torch"``: a ``LusiferModel`` (LoRA folded in) or ``PlainEmbedder``,
      moved to ``device`` (None: :func:`default_device`).
    - ``backend="onnx"``: onnxruntime on the CPU (``quantize="int8"`` for LUSIFER
      models); a non-CPU ``device`` is a ``ValueError``. A decoder backbone used alone
      stays on torch (on the CPU, with a warning).
    - ``backend="auto"``: torch on a non-CPU device (the default one included); on the
      CPU the faster of torch and onnxruntime here (measured once and cached).

    ``threads`` (default ``$LUSIFER_NUM_THREADS``, else every core) sets torch's and
    onnxruntime's intra-op threads. A bad backend, quantisation or device is a
    ``ValueError`` naming the choices.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be 'int8' or None, got {quantize!r}")
    if backend != "onnx" and quantize is not None:
        raise ValueError("--quantize int8 needs --backend onnx")
    if backend == "onnx":
        target = resolve_device(device) if device is not None else torch.device("cpu")
        if target.type != "cpu":
            raise ValueError(
                f"the onnx backend runs on the CPU only, got device {str(device)!r}: use "
                "--device cpu with --backend onnx, or --backend torch (or auto) on "
                f"{target.type}"
            )
    else:
        target = resolve_device(device)
    from .threads import thread_policy

    policy = thread_policy(threads)
    policy.apply_to_torch()  # also for a backbone that stays on torch
    if backend == "onnx":
        from .onnx.backends import onnx_encoder

        return onnx_encoder(reference, quantize=quantize, threads=policy.threads)
    encoder = _torch_encoder(reference, target if device is not None else None)
    place(encoder, target)
    if backend == "auto" and target.type == "cpu":
        from .onnx.backends import fastest_backend

        return fastest_backend(encoder, source=reference, threads=policy.threads)
    return encoder


def _torch_encoder(reference: str | Path, device: torch.device | None):
    """The torch model behind ``reference`` through ``lusifer.model.load_text_encoder``
    (looked up when called, so that a replacement of it is used everywhere); ``device``
    is passed only when one was asked for."""
    from . import model

    if device is None:
        return model.load_text_encoder(reference)
    return model.load_text_encoder(reference, device=device)
