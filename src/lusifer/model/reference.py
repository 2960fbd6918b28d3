"""Loading the reference implementation's published layout (``Hieuman/LUSIFER``) as a
:class:`LusiferModel`.

The layout is read in :mod:`lusifer.model.loading` (which also tells it apart from
LUSIFER's own layout); ``LusiferModel.from_pretrained`` loads either layout.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .loading import (
    REFERENCE_CONFIG,
    REFERENCE_WEIGHTS,
    is_reference_checkpoint,
    load_reference_layout,
    reference_config,
)
from .lusifer import LusiferModel

__all__ = [
    "REFERENCE_CONFIG",
    "REFERENCE_WEIGHTS",
    "is_reference_checkpoint",
    "load_reference_checkpoint",
    "reference_config",
]


def load_reference_checkpoint(
    directory: str | Path,
    *,
    encoder: str | None = None,
    target: str | None = None,
    merge: bool = False,
    device: str | torch.device | None = None,
) -> LusiferModel:
    """A :class:`LusiferModel` from a folder in the reference layout.

    ``encoder``/``target`` override the backbone references of its config (for their
    configs and tokenizers only). ``merge=True`` folds LoRA into the base weights.
    """
    return load_reference_layout(
        LusiferModel, directory, encoder=encoder, target=target, merge=merge, device=device
    )
