"""The exportable graph: token ids -> encoder -> connector -> target -> pooling, in one module."""

from __future__ import annotations

import torch
from torch import nn

from ..model.lusifer import LusiferModel
from ..model.target import transformer_body


class ExportableLusifer(nn.Module):
    """``LusiferModel.forward`` with the torch encoder, for
    the exporter: the graph is traced through the model's own :meth:`LusiferModel.embed_states`
    (connector with :func:`~lusifer.model.connector.place_learned_tokens`, the target's
    bidirectional mask, :func:`~lusifer.model.pooling.pooling_mask` and pooling, head), all
    free of data-dependent shapes, so it has a dynamic batch and length."""

    model: LusiferModel  # set with object.__setattr__, outside the module tree

    def __init__(self, model: LusiferModel, *, use_head: bool = False) -> None:
        super().__init__()
        # Kept outside the module tree: the tracer names nodes after the first path to
        # each submodule, and the named children below give predictable scope names
        # (``/lusifer_connector/...``, ``/lusifer_target/...``) in the graph.
        object.__setattr__(self, "model", model)
        self.use_head = use_head and model.head is not None
        self.lusifer_encoder = model.encoder
        self.lusifer_connector = model.connector.ff
        self.lusifer_target = transformer_body(model.target.model)
        self.learned_tokens = model.connector.learned_tokens
        self.lusifer_head = model.head if self.use_head else None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor
    ) -> torch.Tensor:
        """``pool_mask``: the tokens to pool over (the attention mask, or without the
        instruction for ``pool_instruction=False`` models); learned tokens always pool."""
        states = self.lusifer_encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        return self.model.embed_states(states, attention_mask, pool_mask, use_head=self.use_head)


class EncoderStates(nn.Module):
    """``input_ids, attention_mask -> `` the encoder's last-layer token states (its LoRA
    included): what a training stage with a frozen encoder reads (``OnnxEncoderStates``)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.lusifer_encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lusifer_encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
