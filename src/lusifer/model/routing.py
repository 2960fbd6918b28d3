"""Routing: English text on the target alone (the native route), every other text through
the encoder and connector (the connector route), both landing in the target's own space.

The native route runs the target exactly as it runs alone: its own tokenizer, prompt,
token limit and pooling, with no LoRA, connector or head applied, so an English vector
of a routed model is the target's vector, and an index the target built stays valid.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..backbones import Backbone
from ..backbones.own_settings import own_settings
from ..config import ConfigError, LusiferConfig, RouteSettings
from ..types import ROUTES
from .embedder import PlainEmbedder, check_route
from .router import LanguageRouter
from .target import TargetModel


def complete_route_settings(
    settings: RouteSettings, target: Backbone, default_pooling: str
) -> RouteSettings:
    """``settings`` with every ``None`` filled from the target's own settings, so the
    saved config states exactly what the native route does."""
    own = own_settings(target)
    tokenizer_limit = getattr(target.tokenizer, "model_max_length", None)
    fallback = {
        "pooling": default_pooling,
        "query_prefix": "",
        "document_prefix": "",
        "max_length": min(512, tokenizer_limit) if isinstance(tokenizer_limit, int) else 512,
    }
    missing = {
        key: own.get(key, fallback[key]) if getattr(settings, key) is None else None
        for key in fallback
    }
    filled: dict[str, Any] = {k: v for k, v in missing.items() if v is not None}
    # the router's library, version and thresholds, so the folder says how it routes
    filled["router"] = LanguageRouter.from_settings(settings.router).describe()
    result = dataclasses.replace(settings, **filled)
    if result.max_length is not None and result.max_length < 1:
        raise ConfigError(f"routes.max_length must be >= 1, got {result.max_length}")
    return result


class NativeRoute(PlainEmbedder):
    """The target alone, as a plain embedder over the routed model's own target module
    (shared weights): every forward runs with the target's LoRA adapters switched off, so
    training never changes what it returns."""

    def __init__(self, target: TargetModel, reference: str, settings: RouteSettings) -> None:
        backbone = Backbone(reference, reference, target.model, target.tokenizer, target.is_decoder)
        super().__init__(
            backbone,
            pooling=str(settings.pooling),
            query_prefix=str(settings.query_prefix),
            document_prefix=str(settings.document_prefix),
            max_length=int(settings.max_length or 512),
        )
        # its own limit, not the tokenizer's (sentence-transformers cuts MiniLM at 256)
        self.max_length = int(settings.max_length or self.max_length)
        self.name = f"{reference} (native route)"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with self.backbone.original():
            return super().forward(input_ids, attention_mask)


class EncoderView:
    """An embedder whose ``encode`` always gets some options (``fixed``, e.g. a route or
    ``use_head``): same model, its own fingerprint and name, so cached results of the
    views never mix."""

    def __init__(self, encoder: Any, label: str, **fixed: Any) -> None:
        self.inner = encoder
        self.fixed = fixed
        self.name = f"{encoder.name} [{label}]"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode(self, texts: Any, **kwargs: Any) -> Any:
        return self.inner.encode(texts, **{**kwargs, **self.fixed})

    def fingerprint(self) -> str:
        import hashlib

        options = ",".join(f"{k}={v}" for k, v in sorted(self.fixed.items()))
        key = f"{self.inner.fingerprint()}|{options}"
        return hashlib.sha256(key.encode()).hexdigest()[:20]


class RouteView(EncoderView):
    """An embedder fixed to one route (``lusifer evaluate/encode/serve --route``)."""

    def __init__(self, encoder: Any, route: str) -> None:
        super().__init__(encoder, f"route {route}", route=route)
        self.route = route


def with_head(encoder: Any) -> Any:
    """A LUSIFER model whose ``encode`` returns the projection head's vectors (the
    reference code's encode output; ``lusifer evaluate --use-head``)."""
    if getattr(encoder, "head", None) is None and getattr(encoder, "use_head", None) is None:
        raise ValueError(
            f"{getattr(encoder, 'name', 'this model')} has no projection head "
            "(model.projection_head: false), so --use-head has nothing to use"
        )
    return EncoderView(encoder, "head", use_head=True)


def is_routed(encoder: Any) -> bool:
    """Whether ``encoder`` has a native route (a routed LUSIFER model, torch or ONNX)."""
    config = getattr(encoder, "config", None)
    return getattr(config, "routes", None) is not None


def routes_of(encoder: Any) -> tuple[str, ...]:
    """The routes ``encoder`` takes: all three on a routed LUSIFER model ("auto" and its
    one route when fixed by :class:`RouteView`), "auto" and "connector" on an unrouted
    one, "auto" and "native" on a backbone alone."""
    if isinstance(encoder, RouteView):
        return ("auto", encoder.route)
    if is_routed(encoder):
        return ROUTES
    if isinstance(getattr(encoder, "config", None), LusiferConfig):
        return ("auto", "connector")
    return ("auto", "native")


def with_route(encoder: Any, route: str | None) -> Any:
    """``encoder`` fixed to ``route`` (``None``: as it is). On a routed model "auto" is
    its default; an unrouted LUSIFER model has only the connector route, and a backbone
    alone only its own (native) one: other routes are refused with the reason."""
    if route is None:
        return encoder
    if is_routed(encoder):
        check_route(route, routed=True)
        return encoder if route == "auto" else RouteView(encoder, route)
    lusifer = isinstance(getattr(encoder, "config", None), LusiferConfig)
    check_route(route, routed=False, own="connector" if lusifer else "native")
    return encoder
