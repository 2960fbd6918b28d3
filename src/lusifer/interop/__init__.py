"""Interoperability with other libraries (sentence-transformers)."""

from __future__ import annotations

__all__ = ["LusiferModule", "save_sentence_transformer", "to_sentence_transformer"]


def __getattr__(name: str):
    # Lazy: importing sentence-transformers is slow and optional.
    if name in __all__:
        from . import sentence_transformers as st

        return getattr(st, name)
    raise AttributeError(name)
