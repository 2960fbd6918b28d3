"""The LUSIFER model and plain embedders."""

from __future__ import annotations

from pathlib import Path

import torch

from .embedder import PlainEmbedder
from .loading import ModelFolderError, is_lusifer_folder
from .lusifer import LusiferModel

__all__ = [
    "ModelFolderError",
    "LusiferModel",
    "PlainEmbedder",
    "is_lusifer_folder",
    "load_embedder",
]


def load_embedder(
    reference: str | Path,
    *,
    merge_lora: bool = True,
    device: str | torch.device | None = None,
) -> LusiferModel | PlainEmbedder:
    """A LUSIFER model folder, or a hub repo id holding one (its ``lusifer_config.json``,
    or the reference code's ``config.json``, marks it) -> ``LusiferModel``; anything else
    (a bundled offline backbone name, a local Hugging Face folder, a backbone's hub id)
    -> ``PlainEmbedder``. The torch backend of :func:`lusifer.load`, which calls it.

    The model is placed on ``device``; None picks one as :func:`lusifer.loading.default_device`
    does (``cuda:LOCAL_RANK`` under torchrun with CUDA, else ``cuda``, else ``mps``, else
    ``cpu``). A device this machine lacks is a ``ValueError`` naming those it has.

    A LUSIFER model comes with its LoRA folded into float32 backbones, to encode faster
    (:meth:`LusiferModel.merge_and_unload`); ``merge_lora=False`` keeps the adapters, as
    :meth:`LusiferModel.from_pretrained` does (to train further)."""
    from ..devices import place, resolve_device

    target = resolve_device(device)  # a bad device fails before anything is read
    model: LusiferModel | PlainEmbedder
    if is_lusifer_folder(reference):
        model = LusiferModel.from_pretrained(reference)
        model = model.merge_and_unload() if merge_lora else model
    else:
        model = PlainEmbedder.load(str(reference))
    return place(model, target)
