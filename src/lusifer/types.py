"""Types shared across the package: what an embedding model must provide, and the hub
upload options."""

from __future__ import annotations

from typing import Literal, Protocol, TypedDict, get_args, runtime_checkable

import numpy as np

TextKind = Literal["query", "document"]
# how a model runs: torch, onnxruntime (CPU), or the faster of the two here
Backend = Literal["torch", "onnx", "auto"]
BACKENDS: tuple[str, ...] = get_args(Backend)
Quantize = Literal["int8"]  # dynamic int8 quantisation (onnx backend)


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns texts into embeddings: a LUSIFER model or a plain embedder.

    ``encode`` returns a float32 array of shape (len(texts), dim), rows in input order.
    ``instruction`` is a one-line English task description (None: bare text) and
    ``kind`` says whether the texts are queries or documents (the paper's prompts differ).
    An encoder that ignores ``instruction`` may say so with ``uses_instructions = False``
    (evaluation then reuses a text's embedding across tasks), and one with a
    ``fingerprint()`` method (a string that changes with its weights) has finished
    evaluation results redone when it changes, not reused.
    """

    name: str

    def encode(
        self,
        texts: list[str],
        *,
        instruction: str | None = None,
        kind: TextKind = "query",
        batch_size: int = 32,
        normalize: bool = True,
        show_progress: bool = False,
    ) -> np.ndarray: ...


def reads_instructions(encoder: object) -> bool:
    """Whether ``encoder`` uses the ``instruction`` it is given (``uses_instructions``;
    an encoder that does not say is taken to read them)."""
    return bool(getattr(encoder, "uses_instructions", True))


class UploadOptions(TypedDict, total=False):
    """How ``upload`` commits: the hub token (default: the logged-in one), whether a new
    repo is private, a branch, the commit message, and whether to open a pull request."""

    token: str | None
    private: bool | None
    revision: str | None
    commit_message: str | None
    create_pr: bool
