"""Types shared across the package: what an embedding model must provide, and the hub
upload options."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, TypedDict, get_args, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

TextKind = Literal["query", "document"]
# how a model runs: torch, onnxruntime (CPU), or the faster of the two here
Backend = Literal["torch", "onnx", "auto"]
BACKENDS: tuple[str, ...] = get_args(Backend)
# which way a routed model sends a text: "auto" (the router decides per text), "native"
# (the target alone) or "connector" (embedder -> connector -> target)
Route = Literal["auto", "native", "connector"]
ROUTES: tuple[str, ...] = get_args(Route)
Quantize = Literal["int8"]  # dynamic int8 quantisation (onnx backend)


@runtime_checkable
class TextEmbedder(Protocol):
    """What evaluation, serving, search and mining call on an embedding model: every
    model here (:class:`lusifer.model.embedder.Embedder`: LUSIFER or a backbone alone,
    torch or onnxruntime) provides all of it.

    ``encode`` returns float32 rows of width ``embedding_size``, in input order.
    ``instruction`` is a one-line English task description (None: bare text) and
    ``kind`` says whether the texts are queries or documents (the paper's prompts differ).
    ``uses_instructions`` False means ``instruction`` is ignored (evaluation then reuses a
    text's embedding across tasks); ``fingerprint()`` changes with the weights and
    settings, so cached results of another model are redone, not reused. ``max_length``
    is the token limit, ``device`` where batches run. An embedder of your own needs only
    ``name`` and ``encode``: the rest is read with defaults where missing
    (:func:`reads_instructions`).
    """

    name: str

    @property
    def embedding_size(self) -> int: ...

    @property
    def uses_instructions(self) -> bool: ...

    @property
    def max_length(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def fingerprint(self) -> str: ...

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
    ) -> np.ndarray | torch.Tensor: ...


def reads_instructions(embedder: object) -> bool:
    """Whether ``embedder`` uses the ``instruction`` it is given (``uses_instructions``;
    an embedder that does not say is taken to read them)."""
    return bool(getattr(embedder, "uses_instructions", True))


class UploadOptions(TypedDict, total=False):
    """How ``upload`` commits: the hub token (default: the logged-in one), whether a new
    repo is private, a branch, the commit message, and whether to open a pull request."""

    token: str | None
    private: bool | None
    revision: str | None
    commit_message: str | None
    create_pr: bool
