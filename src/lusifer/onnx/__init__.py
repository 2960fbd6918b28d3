"""The fast CPU path: one ONNX graph (encoder -> connector -> target -> pooling) run by
onnxruntime, optionally with int8 dynamic quantisation; plain encoder backbones (the
baselines) export too, and so does a frozen encoder alone, which CPU training reads
through onnxruntime."""

from ..threads import THREADS_ENV
from ..threads import cpu_threads as default_threads
from .backends import BACKENDS
from .export import (
    OnnxExportError,
    ensure_encoder_exported,
    ensure_exported,
    ensure_plain_exported,
    export_onnx,
    fingerprint,
    quantize_int8,
)
from .runtime import OnnxEncoderStates, OnnxLusifer, OnnxPlainEmbedder

__all__ = [
    "BACKENDS",
    "THREADS_ENV",
    "OnnxEncoderStates",
    "OnnxExportError",
    "OnnxLusifer",
    "OnnxPlainEmbedder",
    "default_threads",
    "ensure_encoder_exported",
    "ensure_exported",
    "ensure_plain_exported",
    "export_onnx",
    "fingerprint",
    "quantize_int8",
]
