"""The target model: an English-centric LLM or sentence encoder fed connector outputs.

A decoder target runs bidirectionally for embedding (every attention module gets
``is_causal=False`` and a full padding mask) and causally for the stage-1 LM loss; no
modeling file is copied (transformers >= 5 supports both through its mask utilities).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import nn
from transformers import PreTrainedModel

from ..backbones import Backbone
from .lora import AdaptableModel


def unwrap(model: nn.Module) -> PreTrainedModel:
    """The transformers model under an optional peft wrapper."""
    get_base = getattr(model, "get_base_model", None)
    return cast(PreTrainedModel, get_base() if callable(get_base) else model)


def transformer_body(model: nn.Module) -> nn.Module:
    """The bare transformer (no LM head) of a causal LM or encoder model."""
    base = unwrap(model)
    return getattr(base, base.base_model_prefix, base)


class TargetModel(nn.Module):
    """Wraps the target backbone; ``model`` may later be peft-wrapped for LoRA."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.model: AdaptableModel = backbone.model
        self.tokenizer = backbone.tokenizer
        self.is_decoder = backbone.is_decoder

    @property
    def config(self):
        return unwrap(self.model).config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def input_embeddings(self) -> nn.Embedding:
        return cast(nn.Embedding, unwrap(self.model).get_input_embeddings())

    @contextlib.contextmanager
    def attention_mode(self, causal: bool) -> Iterator[None]:
        """Set ``is_causal`` on every attention module for the duration of a forward."""
        modules: list[Any] = [  # modules with a plain bool attribute
            m
            for m in transformer_body(self.model).modules()
            if isinstance(getattr(m, "is_causal", None), bool)
        ]
        saved = [m.is_causal for m in modules]
        for m in modules:
            m.is_causal = causal
        try:
            yield
        finally:
            for m, value in zip(modules, saved, strict=True):
                m.is_causal = value

    @contextlib.contextmanager
    def original(self) -> Iterator[None]:
        """The target as it was before LUSIFER: no dropout, LoRA adapters switched off.

        peft switches adapters back on by making them trainable again; their trainable
        flags are restored here, or a frozen target LoRA would collect gradients that no
        optimizer clears (and that the next stage would then start from)."""
        was_training = self.training
        trainable = {name: p.requires_grad for name, p in self.named_parameters()}
        self.eval()
        disable = getattr(self.model, "disable_adapter", None)
        try:
            with disable() if callable(disable) else contextlib.nullcontext():
                yield
        finally:
            self.train(was_training)
            for name, p in self.named_parameters():
                p.requires_grad_(trainable[name])

    def hidden_states(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, *, causal: bool = False
    ) -> torch.Tensor:
        """Last-layer states [B, L, D] for ``inputs_embeds`` (right-padded)."""
        body = transformer_body(self.model)
        if not self.is_decoder:
            return body(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask
            ).last_hidden_state
        if causal:
            mask = attention_mask
        else:
            from transformers.masking_utils import create_bidirectional_mask

            mask = create_bidirectional_mask(
                config=body.config,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                allow_is_bidirectional_skip=False,
            )
        with self.attention_mode(causal):
            out = body(inputs_embeds=inputs_embeds, attention_mask=mask, use_cache=False)
        return out.last_hidden_state

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits from last-layer states (decoder targets only)."""
        if not self.is_decoder:
            raise TypeError("a BERT-like target has no language-model head")
        return unwrap(self.model).get_output_embeddings()(hidden)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.hidden_states(inputs_embeds, attention_mask)
