"""LUSIFER: multilingual embeddings from English-only training."""

__version__ = "0.1.0"

from .config import LoraSettings, LusiferConfig  # noqa: E402
from .model import LusiferModel, PlainEmbedder, load_text_encoder  # noqa: E402

__all__ = ["LoraSettings", "LusiferConfig", "LusiferModel", "PlainEmbedder", "load_text_encoder"]
