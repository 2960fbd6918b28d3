"""Pick a backend for a model reference: torch (any model), onnx (LUSIFER models and
encoder backbones used alone), or auto (the faster of the two on this machine, measured
once and cached; see :mod:`lusifer.onnx.calibration`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

BACKENDS = ("torch", "onnx", "auto")


def load_encoder(
    reference: str | Path,
    *,
    backend: str = "torch",
    quantize: str | None = None,
    threads: int | None = None,
):
    """A ``TextEncoder`` for ``reference`` (as ``lusifer encode`` takes it) on ``backend``.

    ``threads`` (default ``$LUSIFER_NUM_THREADS``, else every core) sets torch's and
    onnxruntime's intra-op threads (:mod:`lusifer.threads`). ``quantize="int8"`` needs the
    onnx backend and a LUSIFER model. On onnx, a decoder backbone used alone stays on torch
    (with a warning). ``auto`` is torch where a GPU is present or onnxruntime is missing,
    else whichever encodes faster here (:func:`lusifer.onnx.calibration.fastest`).
    """
    from ..model import is_lusifer_checkpoint, load_text_encoder
    from ..threads import thread_policy

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be 'int8' or None, got {quantize!r}")
    if backend != "onnx" and quantize is not None:
        raise ValueError("--quantize int8 needs --backend onnx")
    policy = thread_policy(threads)
    policy.apply_to_torch()  # also for a backbone that stays on torch below
    n_threads = policy.threads
    if backend == "auto":
        return fastest_backend(load_text_encoder(reference), source=reference, threads=n_threads)
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


def fastest_backend(
    encoder,
    *,
    source: str | Path | None = None,
    threads: int | None = None,
    use_cache: bool = True,
):
    """``encoder`` (a torch ``LusiferModel`` or ``PlainEmbedder``) or its onnxruntime fp32
    graph, whichever encodes faster on this machine (measured once, cached). Torch where
    a GPU is present, onnxruntime or the exporter is not installed, the backbone is a
    decoder, or the export fails. ``source`` is the folder a LUSIFER model came from (its export goes
    there)."""
    import importlib.util

    from ..model import LusiferModel
    from .calibration import fastest
    from .export import OnnxExportError
    from .runtime import OnnxLusifer, OnnxPlainEmbedder

    if torch.cuda.is_available() or importlib.util.find_spec("onnxruntime") is None:
        return encoder
    if isinstance(encoder, LusiferModel):
        build = lambda: OnnxLusifer.from_model(encoder, threads=threads, source=source)  # noqa: E731
    elif encoder.backbone.is_decoder:
        return encoder
    else:
        build = lambda: OnnxPlainEmbedder.from_embedder(encoder, threads=threads)  # noqa: E731
    try:
        chosen, _ = fastest(encoder, build, threads=threads, use_cache=use_cache)
    except (ImportError, OnnxExportError) as err:  # e.g. the exporter (onnx) not installed
        warnings.warn(f"{err}; using torch", stacklevel=2)
        return encoder
    return chosen


def backend_of(encoder) -> str:
    """``onnx`` for an onnxruntime runner, else ``torch`` (what ``auto`` resolved to)."""
    from .runtime import OnnxLusifer, OnnxPlainEmbedder

    return "onnx" if isinstance(encoder, OnnxLusifer | OnnxPlainEmbedder) else "torch"


class _EncoderStatesTimer:
    """What :func:`~lusifer.onnx.calibration.calibrate` times for a frozen encoder: the
    token states of texts cut at training's ``max_length``, computed by ``states``."""

    def __init__(self, model, states, *, max_length: int, key: str) -> None:
        self.model, self.states, self.max_length, self.key = model, states, max_length, key

    def fingerprint(self) -> str:
        return self.key

    def encode(self, texts: list[str], *, batch_size: int, **_) -> None:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = texts[start : start + batch_size]
                enc = self.model.tokenize(batch, kind="query", max_length=self.max_length)
                self.states(enc["input_ids"], enc["attention_mask"])


def fastest_frozen_encoder(model, *, threads: int, max_length: int):
    """For a training stage that trains none of ``model``'s encoder on CPU: an
    :class:`~lusifer.onnx.runtime.OnnxEncoderStates` when onnxruntime computes the
    encoder's token states faster than torch on this machine, else None (torch runs it),
    with the :class:`~lusifer.onnx.calibration.Calibration` that decided (measured once
    per encoder weights, machine, threads and length, then cached)."""
    from .calibration import fastest
    from .export import encoder_export_path
    from .runtime import OnnxEncoderStates

    def torch_states(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    key = f"frozen-{encoder_export_path(model).stem}-length{max_length}"
    torch_side = _EncoderStatesTimer(model, torch_states, max_length=max_length, key=key)

    def build() -> _EncoderStatesTimer:
        runner = OnnxEncoderStates(model, threads=threads)
        return _EncoderStatesTimer(model, runner, max_length=max_length, key=key)

    chosen, calibration = fastest(torch_side, build, threads=threads)
    return (None if chosen is torch_side else chosen.states), calibration
