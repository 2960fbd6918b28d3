"""One way to load a model to embed with, and where it runs.

:func:`load` is what every command that encodes (``encode``, ``search``, ``evaluate``,
``serve``, ``mine``) goes through: it reads ``MODEL`` on the chosen backend and places it on a device.

The device, when none is given (:func:`default_device`): ``cuda:LOCAL_RANK`` under
``torchrun`` / ``accelerate launch`` (``$LOCAL_RANK`` set) when CUDA is available, else
``cuda`` when CUDA is available, else ``mps`` when available, else ``cpu``. ONNX
(onnxruntime) runs on the CPU only.

Nothing here imports onnxruntime until the onnx or auto backend is asked for.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .devices import (  # noqa: F401 - re-exported: lusifer.loading.default_device, ...
    DEVICE_HELP,
    available_devices,
    default_device,
    embedder_device,
    local_cuda_device,
    place,
    resolve_device,
)
from .types import BACKENDS  # noqa: F401 - re-exported


def load(
    reference: str | Path,
    *,
    backend: str = "torch",
    quantize: str | None = None,
    device: str | torch.device | None = None,
    threads: int | None = None,
):
    """A ``TextEmbedder`` for ``reference`` (what ``lusifer encode`` takes as ``MODEL``:
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
        from .onnx.backends import onnx_embedder

        return onnx_embedder(reference, quantize=quantize, threads=policy.threads)
    embedder = _torch_embedder(reference, target if device is not None else None)
    place(embedder, target)
    if backend == "auto" and target.type == "cpu":
        from .onnx.backends import fastest_backend

        return fastest_backend(embedder, source=reference, threads=policy.threads)
    return embedder


def _torch_embedder(reference: str | Path, device: torch.device | None):
    """The torch model behind ``reference`` through ``lusifer.model.load_embedder``
    (looked up when called, so that a replacement of it is used everywhere); ``device``
    is passed only when one was asked for."""
    from . import model

    if device is None:
        return model.load_embedder(reference)
    return model.load_embedder(reference, device=device)
