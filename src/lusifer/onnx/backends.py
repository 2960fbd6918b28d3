"""Pick a backend for a model reference: torch (any model) or onnx (LUSIFER models and
encoder backbones used alone)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

BACKENDS = ("torch", "onnx")


def load_encoder(
    reference: str | Path,
    *,
    backend: str = "torch",
    quantize: str | None = None,
    threads: int | None = None,
):
    """A ``TextEncoder`` for ``reference`` (as ``lusifer encode`` takes it) on ``backend``.

    ``threads`` (default ``$LUSIFER_NUM_THREADS``, else every core) sets torch's and
    onnxruntime's intra-op threads. ``quantize="int8"`` needs the onnx backend and a
    LUSIFER model. On onnx, a decoder backbone used alone stays on torch (with a warning).
    """
    from ..model import is_lusifer_checkpoint, load_text_encoder
    from .runtime import default_threads

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be 'int8' or None, got {quantize!r}")
    if backend == "torch" and quantize is not None:
        raise ValueError("--quantize int8 needs --backend onnx")
    n_threads = default_threads(threads)
    torch.set_num_threads(n_threads)  # also for a backbone that stays on torch below
    if backend == "torch":
        return load_text_encoder(reference)  # LUSIFER folders (either layout) or backbones
    if is_lusifer_checkpoint(reference):  # also the reference code's layout
        from .runtime import OnnxLusifer

        return OnnxLusifer.from_pretrained(reference, quantize=quantize, threads=n_threads)
    if quantize is not None:
        raise ValueError(
            f"--quantize int8 is for LUSIFER model folders; {str(reference)!r} is a plain "
            "backbone (it runs on ONNX in float32)"
        )
    from ..model import PlainEmbedder
    from .export import OnnxExportError
    from .runtime import OnnxPlainEmbedder

    embedder = PlainEmbedder.load(str(reference))
    try:
        return OnnxPlainEmbedder.from_embedder(embedder, threads=n_threads)
    except OnnxExportError as err:
        warnings.warn(f"{err}; using torch", stacklevel=2)
        return embedder
