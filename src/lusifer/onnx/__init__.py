"""The fast CPU path: one ONNX graph (encoder -> connector -> target -> pooling) run by
onnxruntime, optionally with int8 dynamic quantisation."""

from .backends import BACKENDS, load_encoder
from .export import OnnxExportError, ensure_exported, export_onnx, fingerprint, quantize_int8
from .runtime import THREADS_ENV, OnnxLusifer, default_threads

__all__ = [
    "BACKENDS",
    "load_encoder",
    "THREADS_ENV",
    "OnnxExportError",
    "OnnxLusifer",
    "default_threads",
    "ensure_exported",
    "export_onnx",
    "fingerprint",
    "quantize_int8",
]
