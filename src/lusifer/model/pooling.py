"""Pooling token states into one vector: mean (the paper), last token, or first (CLS)."""

from __future__ import annotations

import torch

POOLING_METHODS = ("mean", "last", "cls")


def pool(states: torch.Tensor, attention_mask: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """Pool ``states`` [B, L, D] over positions where ``attention_mask`` [B, L] is 1.

    Sequences are right-padded: ``last`` takes each row's last real position.
    """
    mask = attention_mask.to(states.dtype).unsqueeze(-1)
    if method == "mean":
        return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    if method == "last":
        last = attention_mask.sum(dim=1).long().clamp(min=1) - 1
        return states[torch.arange(states.shape[0], device=states.device), last]
    if method == "cls":
        return states[:, 0]
    raise ValueError(f"unknown pooling method {method!r}; choose from {POOLING_METHODS}")
