"""Pooling token states into one vector: mean (the paper), last token, or first (CLS)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def pooling_mask(
    soft_mask: torch.Tensor,
    attention_mask: torch.Tensor,
    pool_mask: torch.Tensor,
    num_learned_tokens: int,
) -> torch.Tensor:
    """The positions to pool over [B, L + N]: the prompt tokens ``pool_mask`` [B, L] keeps
    (the text without its instruction) plus the connector's learned tokens, which sit in
    ``soft_mask`` right after each row's ``attention_mask``. Written without boolean
    indexing so the ONNX graph can use it as is."""
    pad = (0, num_learned_tokens)
    learned = soft_mask - F.pad(attention_mask, pad)
    return learned + F.pad(pool_mask, pad)
