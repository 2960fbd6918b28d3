"""The LUSIFER model and plain embedders."""

from __future__ import annotations

from pathlib import Path

from .embedder import PlainEmbedder
from .loading import CheckpointError, is_lusifer_checkpoint
from .lusifer import LusiferModel

__all__ = [
    "CheckpointError",
    "LusiferModel",
    "PlainEmbedder",
    "is_lusifer_checkpoint",
    "load_text_encoder",
]


def load_text_encoder(reference: str | Path) -> LusiferModel | PlainEmbedder:
    """A LUSIFER model folder, or a hub repo id holding one (its ``lusifer_config.json``,
    or the reference code's ``config.json``, marks it) -> ``LusiferModel``; anything else
    (a bundled offline backbone name, a local Hugging Face folder, a backbone's hub id)
    -> ``PlainEmbedder``."""
    if is_lusifer_checkpoint(reference):
        return LusiferModel.from_pretrained(reference)
    return PlainEmbedder.load(str(reference))
