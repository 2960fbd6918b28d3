"""LUSIFER: multilingual embeddings from English-only training."""

from ._version import __version__ as __version__
from .config import LoraSettings, LusiferConfig
from .loading import default_device, load
from .model import LusiferModel, PlainEmbedder, load_embedder

__all__ = [
    "LoraSettings",
    "LusiferConfig",
    "LusiferModel",
    "PlainEmbedder",
    "default_device",
    "load",
    "load_embedder",
]
