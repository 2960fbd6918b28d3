"""A plain embedder: any backbone used directly (mean pooling), for baselines.

So the target alone and the encoder alone are encoded, evaluated and served exactly like
a LUSIFER model.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import torch
from torch import nn
from transformers import BatchEncoding

from ..backbones import Backbone, load_backbone
from ..encoding import clip_text, encode_in_batches, validate_options
from ..types import TextKind
from .pooling import pool
from .target import TargetModel

_SAMPLED_VALUES = 4096


def sampled_digest(module: nn.Module) -> str:
    """A hash of up to ``_SAMPLED_VALUES`` evenly spaced values of each tensor in
    ``module``'s state: a retrained or updated backbone changes it, and a 7B one hashes in
    moments."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            flat = tensor.reshape(-1)
            step = max(1, flat.numel() // _SAMPLED_VALUES)
            h.update(f"{name}{tuple(tensor.shape)}".encode())
            h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


class PlainEmbedder(nn.Module):
    """A backbone + pooling. Bundled offline backbones bring their own query/document
    prefixes (``query: ``/``passage: `` for multilingual-e5); instructions are ignored,
    since these models were not trained with ours, unless a prefix holds
    ``{instruction}``."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        pooling: str = "mean",
        query_prefix: str = "",
        document_prefix: str = "",
        max_length: int = 512,
    ) -> None:
        super().__init__()
        # the backbone (an encoder or a decoder) behind the wrapper LUSIFER uses for its
        # target: the same input embeddings, bidirectional or causal forward
        self.backbone = TargetModel(backbone)
        self.tokenizer = backbone.tokenizer
        self.pooling = pooling
        self.prefixes = {"query": query_prefix, "document": document_prefix}
        self.max_length = min(max_length, getattr(self.tokenizer, "model_max_length", max_length))
        self.reference = backbone.reference
        self.name = backbone.reference

    @property
    def uses_instructions(self) -> bool:
        """Whether a prefix reads the task instruction (evaluation then embeds a text
        once per instruction, not once for every task)."""
        return any("{instruction}" in p for p in self.prefixes.values())

    @classmethod
    def load(cls, reference: str, *, max_length: int = 512) -> PlainEmbedder:
        """A bundled offline backbone (with its prefixes and pooling) or a hub/local one;
        texts are cut at ``max_length`` tokens."""
        from ..backbones.offline import find_offline_backbone

        info = find_offline_backbone(reference) if "/" not in reference else None
        kwargs: dict = {"max_length": max_length}
        if info is not None:
            kwargs.update(
                pooling=info.pooling,
                query_prefix=info.query_prefix,
                document_prefix=info.document_prefix,
            )
        embedder = cls(load_backbone(reference), **kwargs)
        return embedder.eval()

    def weights_digest(self) -> str:
        """The backbone's :func:`sampled_digest`."""
        return sampled_digest(self.backbone)

    def fingerprint(self) -> str:
        """The backbone reference, how it is read and its (sampled) weights."""
        settings = [self.reference, self.pooling, self.prefixes, self.max_length]
        settings.append(self.weights_digest())
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]

    def tokenize(
        self,
        texts: list[str],
        *,
        kind: TextKind = "query",
        max_length: int | None = None,
        instruction: str | None = None,
    ) -> BatchEncoding:
        """Prefixed, clipped and padded token ids (CPU tensors) for ``texts``. A prefix
        holding ``{instruction}`` (an instruction-tuned embedder's, e.g. E5-Mistral's) takes
        ``instruction``, and is left out when there is none."""
        if kind not in self.prefixes:
            raise ValueError(f"kind must be 'query' or 'document', got {kind!r}")
        max_length = max_length or self.max_length
        prefix = self.prefixes[kind]
        if "{instruction}" in prefix:
            prefix = prefix.replace("{instruction}", instruction) if instruction else ""
        return self.tokenizer(
            [prefix + clip_text(t, max_length) for t in texts],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )

    @property
    def model(self) -> TargetModel:
        """Deprecated: the backbone, now :attr:`backbone` (it may be an encoder, so it was
        never the target model its type names)."""
        warnings.warn(
            "PlainEmbedder.model is deprecated; use PlainEmbedder.backbone",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.backbone

    @property
    def embedding_size(self) -> int:
        return self.backbone.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embeds = self.backbone.input_embeddings()(input_ids)
        # A decoder used alone stays causal: that is how it was trained.
        causal = self.backbone.is_decoder
        hidden = self.backbone.hidden_states(embeds, attention_mask, causal=causal)
        return pool(hidden, attention_mask, self.pooling)

    def encode(
        self,
        texts: str | list[str],
        *,
        instruction: str | None = None,
        kind: TextKind = "query",
        batch_size: int = 32,
        max_length: int | None = None,
        normalize: bool = True,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        show_progress: bool = False,
        convert_to: str = "numpy",
    ) -> np.ndarray | torch.Tensor:
        """Embed texts with this backbone alone (``instruction`` is ignored unless a
        prefix asks for it)."""
        instruction = validate_options(instruction, kind, max_length)
        if device is not None:
            self.to(device)
        run_device = next(self.parameters()).device

        def embed_batch(batch: list[str]) -> torch.Tensor:
            enc = self.tokenize(batch, kind=kind, max_length=max_length, instruction=instruction)
            enc = enc.to(run_device)
            with torch.autocast(run_device.type, dtype=dtype, enabled=dtype is not None):
                return self(enc["input_ids"], enc["attention_mask"])

        return encode_in_batches(
            texts,
            embed_batch,
            batch_size=batch_size,
            normalize=normalize,
            show_progress=show_progress,
            convert_to=convert_to,
            desc=f"Encoding ({self.name})",
            dim=self.embedding_size,
        )
