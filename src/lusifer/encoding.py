"""Input checks and the batching loop every embedder here shares (through
:meth:`lusifer.model.embedder.Embedder.encode`): validate, sort by length, restore order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

# A text longer than this many characters per token of max_length cannot contribute
# more tokens; cutting it first keeps a 100k-character input cheap to tokenize.
CHARS_PER_TOKEN_BOUND = 32


def validate_texts(texts: str | Sequence[str]) -> list[str]:
    """Return ``texts`` as a list of valid strings.

    A lone string is one text. ``None`` or a non-string item is a ``TypeError`` naming
    its position. Unencodable characters (lone surrogates from broken UTF-8) are
    replaced with U+FFFD. Empty strings are allowed: they embed the prompt alone.
    """
    if isinstance(texts, str):
        texts = [texts]
    if texts is None or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    clean = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"texts[{i}] is {type(text).__name__} ({text!r:.40}), expected a string"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
        clean.append(text)
    return clean


def validate_options(
    instruction: object = None, kind: object = "query", max_length: object = None
) -> str | None:
    """Check ``encode``'s options before any text is tokenized; returns the instruction
    (lone surrogates replaced, as in :func:`validate_texts`).

    A non-string instruction is a ``TypeError``; a ``kind`` other than query/document or a
    ``max_length`` that is not a positive integer is a ``ValueError`` (a tokenizer would
    fail on them with its own error, or silently)."""
    if instruction is not None:
        if not isinstance(instruction, str):
            raise TypeError(
                f"instruction must be a string or None, got {type(instruction).__name__}"
            )
        instruction = instruction.encode("utf-8", "replace").decode("utf-8")
    if not isinstance(kind, str) or kind not in ("query", "document"):
        raise ValueError(f"kind must be 'query' or 'document', got {kind!r:.40}")
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
    ):
        raise ValueError(f"max_length must be a positive integer or None, got {max_length!r:.40}")
    return instruction


def clip_text(text: str, max_length: int) -> str:
    """Cut a text that is certainly longer than ``max_length`` tokens."""
    limit = max_length * CHARS_PER_TOKEN_BOUND
    return text if len(text) <= limit else text[:limit]


def token_lengths(tokenizer: Any, texts: list[str], max_length: int) -> list[int]:
    """Each text's token count (without special tokens or prompt), capped at
    ``max_length``: what it costs in a batch. Characters are a poor proxy across scripts
    (a Hindi sentence is several times as many tokens per character as a French one for
    an English WordPiece vocabulary), so length-sorting by them pads mixed-language input."""
    clipped = [clip_text(t, max_length) for t in texts]
    ids = tokenizer(clipped, add_special_tokens=False, truncation=True, max_length=max_length)[
        "input_ids"
    ]
    return [len(x) for x in ids]


def embed_in_length_order(
    texts: list[str],
    embed_batch: Callable[[list[str]], torch.Tensor],
    *,
    batch_size: int,
    lengths: Sequence[int] | None = None,
    show_progress: bool = False,
    desc: str = "Encoding",
) -> torch.Tensor:
    """float32 CPU rows of validated ``texts`` in input order, embedded longest first so
    each batch pads little (texts of one batch have similar lengths): a batch holds at most
    ``batch_size`` texts, and ends early where a text is under half the length of its
    first (longest) one, so that no text pads to more than twice its length (a server's
    batch of 32 single requests, from 20 to 500 characters, would otherwise run every
    text at the longest one's length). ``lengths`` are the texts' token counts
    (:func:`token_lengths`); without them, characters stand in."""
    if lengths is None:
        lengths = [len(t) for t in texts]
    if len(lengths) != len(texts):
        raise ValueError(f"{len(lengths)} lengths for {len(texts)} texts")
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    chunks: list[torch.Tensor] = []
    with (
        tqdm(total=len(texts), desc=desc, disable=not show_progress, unit="text") as bar,
        torch.inference_mode(),
    ):
        for rows in _length_batches([lengths[i] for i in order], batch_size):
            batch = [texts[order[i]] for i in rows]
            chunks.append(embed_batch(batch).float().cpu())
            bar.update(len(batch))
    if not chunks:
        return torch.zeros(0, 0)
    stacked = torch.cat(chunks)
    result = torch.empty_like(stacked)
    result[torch.tensor(order)] = stacked
    return result


def _length_batches(lengths: list[int], batch_size: int) -> list[range]:
    """Consecutive ranges over ``lengths`` (sorted longest first): at most ``batch_size``
    each, a new one where a length is under half its range's first."""
    batches, start = [], 0
    for i, length in enumerate(lengths):
        if i > start and (i - start == batch_size or 2 * length < lengths[start]):
            batches.append(range(start, i))
            start = i
    if start < len(lengths):
        batches.append(range(start, len(lengths)))
    return batches
