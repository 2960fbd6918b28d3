"""Pick a backend for a model reference: torch (any model), onnx (LUSIFER models and
encoder backbones used alone), or auto (the faster of the two on this machine, measured
once and cached; see :mod:`lusifer.onnx.calibration`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..types import BACKENDS as BACKENDS  # re-exported: lusifer.onnx.BACKENDS

if TYPE_CHECKING:
    from ..model.embedder import Embedder


def onnx_embedder(reference: str | Path, *, quantize: str | None, threads: int):
    """``reference`` on onnxruntime (CPU): a LUSIFER model's graph (``quantize="int8"``
    for dynamic int8), a BERT-like backbone's graph, or a decoder backbone on torch (the
    CPU, with a warning). :func:`lusifer.load` checks the arguments first."""
    from ..model import is_lusifer_folder

    if is_lusifer_folder(reference):  # also the reference code's layout
        from .runtime import OnnxLusifer

        return OnnxLusifer.from_pretrained(reference, quantize=quantize, threads=threads)
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
        return OnnxPlainEmbedder.from_embedder(embedder, threads=threads)
    except OnnxExportError as err:
        warnings.warn(f"{err}; using torch", stacklevel=3)
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
    the encoder sits on a GPU (or any device but the CPU), onnxruntime or the exporter is
    not installed, the backbone is a decoder, or the export fails. ``source`` is the folder a LUSIFER model came from (its export goes
    there)."""
    import importlib.util

    from ..devices import embedder_device
    from ..model import LusiferModel

    placed = embedder_device(encoder)
    if (placed is not None and placed.type != "cpu") or importlib.util.find_spec(
        "onnxruntime"
    ) is None:
        return encoder
    from .calibration import fastest
    from .export import OnnxExportError
    from .runtime import OnnxLusifer, OnnxPlainEmbedder

    build: Callable[[], Embedder]
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
