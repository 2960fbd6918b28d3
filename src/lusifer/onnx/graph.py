"""The exportable graph: token ids -> encoder -> connector -> target -> pooling, in one module."""

from __future__ import annotations

import torch
from torch import nn

from ..model.lusifer import LusiferModel
from ..model.pooling import pool, pooling_mask
from ..model.target import transformer_body

ENCODER_SCOPE = "/lusifer_encoder/"
CONNECTOR_SCOPE = "/lusifer_connector/"
TARGET_SCOPE = "/lusifer_target/"


class ExportableLusifer(nn.Module):
    """``LusiferModel.forward`` restated without data-dependent shapes, so the exporter
    gets one graph with dynamic batch and length.

    The connector's learned tokens are placed with ``gather``/``where`` instead of boolean
    indexing; a decoder target gets its bidirectional 4D mask built here from the padding
    mask (additive, float32) rather than by transformers' mask helpers.
    """

    def __init__(self, model: LusiferModel, *, use_head: bool = False) -> None:
        super().__init__()
        # Kept outside the module tree: the tracer names nodes after the first path to
        # each submodule, and the named children below give predictable scope names
        # (``/lusifer_connector/...``, ``/lusifer_target/...``) for the int8 policy.
        object.__setattr__(self, "model", model)
        self.use_head = use_head and model.head is not None
        self.lusifer_encoder = model.encoder
        self.lusifer_connector = model.connector.ff
        self.lusifer_target = transformer_body(model.target.model)
        self.learned_tokens = model.connector.learned_tokens
        self.lusifer_head = model.head if self.use_head else None

    def soft_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        states = self.lusifer_encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        embeds = self.lusifer_connector(m.connector.prepare(states, attention_mask))
        n = m.connector.num_learned_tokens
        if not n:
            return embeds, attention_mask
        batch, length, dim = embeds.shape
        lengths = attention_mask.sum(dim=1, keepdim=True)  # [B, 1]
        positions = torch.arange(length + n, device=embeds.device).unsqueeze(0)  # [1, L+N]
        real = positions < lengths
        learned = (positions >= lengths) & (positions < lengths + n)
        padded = torch.cat([embeds, embeds.new_zeros(batch, n, dim)], dim=1)
        index = (positions - lengths).clamp(0, n - 1)  # [B, L+N]
        tokens = self.learned_tokens.to(embeds.dtype)[index]  # [B, L+N, D]
        out = torch.where(real.unsqueeze(-1), padded, torch.zeros_like(padded))
        out = torch.where(learned.unsqueeze(-1), tokens, out)
        return out, (real | learned).to(attention_mask.dtype)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor
    ) -> torch.Tensor:
        """``pool_mask``: the tokens to pool over (the attention mask, or without the
        instruction for ``pool_instruction=False`` models); learned tokens always pool."""
        m = self.model
        embeds, mask = self.soft_tokens(input_ids, attention_mask)
        target = m.target
        if not target.is_decoder:
            hidden = self.lusifer_target(
                inputs_embeds=embeds, attention_mask=mask
            ).last_hidden_state
        else:
            # [B, 1, L, L] additive mask: every position sees every real position.
            keep = mask[:, None, None, :].to(torch.bool).expand(-1, 1, mask.shape[1], -1)
            bias = torch.zeros(keep.shape, dtype=embeds.dtype, device=embeds.device)
            bias = bias.masked_fill(~keep, torch.finfo(embeds.dtype).min)
            with target.attention_mode(False):
                hidden = self.lusifer_target(
                    inputs_embeds=embeds, attention_mask=bias, use_cache=False
                ).last_hidden_state
        n = m.connector.num_learned_tokens
        pooled = pool(hidden, pooling_mask(mask, attention_mask, pool_mask, n), m.config.pooling)
        return self.lusifer_head(pooled) if self.lusifer_head is not None else pooled


class EncoderStates(nn.Module):
    """``input_ids, attention_mask -> `` the encoder's last-layer token states (its LoRA
    included): what a training stage with a frozen encoder reads (``OnnxEncoderStates``)."""

    def __init__(self, model: LusiferModel) -> None:
        super().__init__()
        self.lusifer_encoder = model.encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lusifer_encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
