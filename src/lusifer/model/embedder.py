"""The one ``encode`` contract every embedding model here implements (:class:`Embedder`),
and the plain embedder: any backbone used directly, for baselines and the native route.

``Embedder.encode`` validates, places, batches, normalises and orders once; a backend
(torch module or onnxruntime graph) only embeds one tokenized batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from transformers import BatchEncoding

from ..backbones import Backbone, load_backbone
from ..encoding import embed_in_length_order, token_lengths, validate_options, validate_texts
from ..types import ROUTES, TextKind
from .pooling import pool
from .prompts import PrefixProcessor
from .target import TargetModel

_SAMPLED_VALUES = 4096


def check_route(route: object, *, routed: bool, own: str = "connector") -> str:
    """The route to take: ``route`` on a routed model ("auto" by default); on any other
    model its ``own`` one, which "auto" means there. Unknown routes and routes the model
    does not have are refused."""
    if route is not None and route not in ROUTES:
        raise ValueError(f"route must be one of {list(ROUTES)}, got {route!r:.40}")
    if routed:
        return "auto" if route is None else str(route)
    if route not in (None, "auto", own):
        if own == "native":
            raise ValueError(
                f"route={route!r} needs a LUSIFER model: a backbone alone has only its own "
                "(native) route"
            )
        raise ValueError(
            f"route={route!r} needs a routed model (model.routes in its config); this model "
            "sends every text through the connector (route='connector')"
        )
    return own


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


class TextProcessor(Protocol):
    """Prompting and tokenization of one model: texts -> padded CPU token tensors."""

    tokenizer: Any

    @property
    def max_length(self) -> int: ...

    @property
    def uses_instructions(self) -> bool: ...

    def __call__(
        self,
        texts: list[str],
        *,
        kind: TextKind = "query",
        max_length: int | None = None,
        instruction: str | None = None,
    ) -> BatchEncoding: ...


class Embedder:
    """What every embedding model here provides, with ``encode`` written once.

    A backend sets ``name`` and ``processor`` and implements ``embedding_size``,
    ``fingerprint`` and :meth:`embed_tokens` (one tokenized batch -> [B, D] vectors);
    a routed model also has a :meth:`native_embedder` and a ``router``. ``own_route`` is
    what the model's own forward is: "connector" for LUSIFER, "native" for a backbone
    alone.
    """

    name: str
    processor: TextProcessor
    own_route: str = "native"
    router: Any  # routed models: their LanguageRouter

    # ------------------------------------------------------------ the contract
    @property
    def embedding_size(self) -> int:
        raise NotImplementedError

    @property
    def uses_instructions(self) -> bool:
        """False when instructions are ignored: evaluation then reuses one embedding per
        text across tasks."""
        return self.processor.uses_instructions

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def max_length(self) -> int:
        return self.processor.max_length

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def fingerprint(self) -> str:
        raise NotImplementedError

    def embed_tokens(self, enc: BatchEncoding, *, use_head: bool = False) -> torch.Tensor:
        """Vectors [B, D] of one tokenized batch (CPU tensors from :attr:`processor`)."""
        raise NotImplementedError

    # ------------------------------------------------------------- the hooks
    def native_embedder(self) -> Embedder | None:
        """A routed model's native route (the target alone); None when not routed."""
        return None

    @property
    def routed(self) -> bool:
        return False

    def check_use_head(self, use_head: bool | None, route: str) -> bool:
        """Whether to return the projection head's vectors; only LUSIFER models have one."""
        if use_head:
            raise ValueError(f"{self.name} has no projection head (use_head=True)")
        return False

    @contextlib.contextmanager
    def running(
        self, device: str | torch.device | None, dtype: torch.dtype | None
    ) -> Iterator[None]:
        """Where and how batches run (a torch module: placed, eval mode, autocast)."""
        yield

    # ----------------------------------------------------------------- encode
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
        use_head: bool | None = None,
        route: str | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts: float32 rows in input order (a lone string gives one row).

        ``instruction`` is an English task description (ignored unless the model reads
        instructions), ``kind`` "query" or "document". ``route`` (routed models): "auto"
        (default) sends text the router judges English to the target alone and the rest
        through the connector; "native" or "connector" sends every text one way."""
        instruction = validate_options(instruction, kind, max_length)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if convert_to not in ("numpy", "torch"):
            raise ValueError(f"convert_to must be 'numpy' or 'torch', got {convert_to!r}")
        route = check_route(route, routed=self.routed, own=self.own_route)
        head = self.check_use_head(use_head, route)
        single = isinstance(texts, str)
        texts = validate_texts(texts)
        if route == "auto":
            per_text = self.router.routes(texts)
        else:
            per_text = [route] * len(texts)
        result = torch.zeros(len(texts), self.embedding_size)
        with self.running(device, dtype):
            for name in ("native", "connector"):
                rows = [i for i, r in enumerate(per_text) if r == name]
                if not rows:
                    continue
                embedder = self if name == self.own_route else self.native_embedder()
                assert embedder is not None, "only a routed model has native rows"

                def embed_batch(batch: list[str], embedder: Embedder = embedder) -> torch.Tensor:
                    enc = embedder.processor(
                        batch, kind=kind, max_length=max_length, instruction=instruction
                    )
                    return embedder.embed_tokens(enc, use_head=head)

                chosen = [texts[i] for i in rows]
                limit = max_length or embedder.max_length
                vectors = embed_in_length_order(
                    chosen,
                    embed_batch,
                    batch_size=batch_size,
                    lengths=token_lengths(embedder.processor.tokenizer, chosen, limit),
                    show_progress=show_progress,
                    desc=f"Encoding ({embedder.name})",
                )
                if normalize:
                    vectors = torch.nn.functional.normalize(vectors, dim=-1)
                result[torch.tensor(rows)] = vectors
        out = result.numpy() if convert_to == "numpy" else result
        return out[0] if single else out


class TorchEmbedder(Embedder):
    """An :class:`Embedder` that is a torch module: ``encode`` runs it on ``device`` (moved
    there first when given), in eval mode, under autocast to ``dtype`` when given."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def running(
        self, device: str | torch.device | None, dtype: torch.dtype | None
    ) -> Iterator[None]:
        module: nn.Module = self  # type: ignore[assignment]
        if device is not None:
            module.to(device)
        run_device = self.device
        was_training = module.training
        # eval() and train() walk every submodule (3 ms a call for MiniLM, 10% of a one-text
        # encode): only when some submodule is in training mode
        switch = any(m.training for m in module.modules())
        if switch:
            module.eval()
        try:
            with torch.autocast(run_device.type, dtype=dtype, enabled=dtype is not None):
                yield
        finally:
            if switch:
                module.train(was_training)


class PlainEmbedder(TorchEmbedder, nn.Module):
    """A backbone + pooling. Bundled offline backbones bring their own query/document
    prefixes (``query: ``/``passage: `` for multilingual-e5); instructions are ignored,
    since these models were not trained with ours, unless a prefix holds
    ``{instruction}``."""

    processor: PrefixProcessor

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
        # the backbone (BERT-like or a decoder) behind the wrapper LUSIFER uses for its
        # target: the same input embeddings, bidirectional or causal forward
        self.backbone = TargetModel(backbone)
        self.pooling = pooling
        limit = getattr(backbone.tokenizer, "model_max_length", max_length)
        self.processor = PrefixProcessor(
            backbone.tokenizer,
            query_prefix=query_prefix,
            document_prefix=document_prefix,
            max_length=min(max_length, limit),
        )
        self.reference = backbone.reference
        self.name = backbone.reference

    @property
    def prefixes(self) -> dict[str, str]:
        return self.processor.prefixes

    @prefixes.setter
    def prefixes(self, value: dict[str, str]) -> None:
        self.processor.prefixes = dict(value)

    @property
    def max_length(self) -> int:
        return self.processor.max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        self.processor.max_length = value

    @classmethod
    def load(cls, reference: str, *, max_length: int | None = None) -> PlainEmbedder:
        """A backbone as its own files say it embeds alone (pooling, prompts, token limit:
        :func:`~lusifer.backbones.own_settings.own_settings`), so it equals the stock
        sentence-transformers model; texts are cut at ``max_length`` tokens when given,
        else at the backbone's own limit (512 when it states none)."""
        from ..backbones.own_settings import own_settings

        backbone = load_backbone(reference)
        own = own_settings(backbone)
        embedder = cls(
            backbone,
            pooling=own.get("pooling", "mean"),
            query_prefix=own.get("query_prefix", ""),
            document_prefix=own.get("document_prefix", ""),
            max_length=max_length or own.get("max_length", 512),
        )
        return embedder.eval()

    def weights_digest(self) -> str:
        """The backbone's :func:`sampled_digest`."""
        return sampled_digest(self.backbone)

    def fingerprint(self) -> str:
        """The backbone reference, how it is read and its (sampled) weights."""
        settings = [self.reference, self.pooling, self.prefixes, self.max_length]
        settings.append(self.weights_digest())
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]

    def tokenize(self, texts: list[str], **kwargs: Any) -> BatchEncoding:
        """:attr:`processor`: prefixed, clipped and padded token ids (CPU tensors)."""
        return self.processor(texts, **kwargs)

    @property
    def embedding_size(self) -> int:
        return self.backbone.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embeds = self.backbone.input_embeddings()(input_ids)
        # A decoder used alone stays causal: that is how it was trained.
        causal = self.backbone.is_decoder
        hidden = self.backbone.hidden_states(embeds, attention_mask, causal=causal)
        return pool(hidden, attention_mask, self.pooling)

    def embed_tokens(self, enc: BatchEncoding, *, use_head: bool = False) -> torch.Tensor:
        enc = enc.to(self.device)
        return self(enc["input_ids"], enc["attention_mask"])
