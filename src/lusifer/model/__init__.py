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


def load_text_encoder(
    reference: str | Path, *, merge_lora: bool = True
) -> LusiferModel | PlainEmbedder:
    """A LUSIFER model folder, or a hub repo id holding one (its ``lusifer_config.json``,
    or the reference code's ``config.json``, marks it) -> ``LusiferModel``; anything else
    (a bundled offline backbone name, a local Hugging Face folder, a backbone's hub id)
    -> ``PlainEmbedder``.

    A LUSIFER model comes with its LoRA folded into float32 backbones, to encode faster
    (:meth:`LusiferModel.merge_and_unload`); ``merge_lora=False`` keeps the adapters, as
    :meth:`LusiferModel.from_pretrained` does (to train further)."""
    if is_lusifer_checkpoint(reference):
        model = LusiferModel.from_pretrained(reference)
        return model.merge_and_unload() if merge_lora else model
    return PlainEmbedder.load(str(reference))
