"""LoRA adapters through peft: add, read, write and merge them."""

from __future__ import annotations

from typing import TypeAlias, cast

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from peft import set_peft_model_state_dict as _set_state
from torch import nn
from transformers import PreTrainedModel

from ..config import LoraSettings

# A backbone's transformers model, wrapped by peft while it carries a LoRA adapter.
AdaptableModel: TypeAlias = PreTrainedModel | PeftModel


def add_lora(model: nn.Module, settings: LoraSettings) -> PeftModel:
    """Wrap ``model`` with a LoRA adapter on all linear layers (never the LM head)."""
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
    )
    return get_peft_model(model, config)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in get_peft_model_state_dict(model).items()}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    result = _set_state(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"LoRA weights do not fit this backbone: unexpected {unexpected[:5]}")


def has_lora(model: nn.Module) -> bool:
    """Whether ``model`` carries a (peft) LoRA adapter."""
    return isinstance(model, PeftModel)


def merge_lora(model: AdaptableModel) -> PreTrainedModel:
    """Fold the adapter into the base weights and return the plain model."""
    if isinstance(model, PeftModel):  # peft hands back the model it wrapped
        return cast(PreTrainedModel, model.merge_and_unload())
    return model
