"""Prompts and tokenization: the paper's encoder-side prompts (an English instruction in
front of the text) and a plain embedder's own prefixes, one processor each, shared by
the torch and ONNX paths."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import BatchEncoding

from ..encoding import clip_text
from ..types import TextKind

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..config import LusiferConfig

QUERY_TEMPLATE = "{instruction}.\n{text}"
DOCUMENT_TEMPLATE = "{instruction}. Candidate:\n{text}"


def format_prompt(
    text: str,
    instruction: str | None,
    kind: TextKind,
    *,
    query_template: str = QUERY_TEMPLATE,
    document_template: str = DOCUMENT_TEMPLATE,
) -> str:
    """``{instruction}.\\n{text}`` for queries, ``{instruction}. Candidate:\\n{text}`` for
    documents; the bare text when there is no instruction."""
    if kind not in ("query", "document"):
        raise ValueError(f"kind must be 'query' or 'document', got {kind!r}")
    if not instruction:
        return text
    template = query_template if kind == "query" else document_template
    return template.format(instruction=instruction.strip().rstrip("."), text=text)


class PromptProcessor:
    """LUSIFER's prompting and tokenization, shared by the torch model and its ONNX graph:
    the instruction in front of each text (the paper's templates), clipped and padded
    encoder token ids, and a ``pool_mask`` leaving the instruction out of pooling when the
    config says so. Reads the model's config, so it follows any change to it."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: LusiferConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config

    @property
    def uses_instructions(self) -> bool:
        return self.config.use_instructions

    @property
    def max_length_cap(self) -> int:
        """The most tokens any call may ask for (the encoder's positions)."""
        return getattr(self.tokenizer, "model_max_length", None) or self.config.max_length

    @property
    def max_length(self) -> int:
        """The config's token limit, never above what the encoder has positions for."""
        return min(self.config.max_length, self.max_length_cap)

    def __call__(
        self,
        texts: list[str],
        *,
        instruction: str | None | list[str | None] = None,
        kind: TextKind | list[TextKind] = "query",
        max_length: int | None = None,
        return_offsets: bool = False,
    ) -> BatchEncoding:
        """Prompted token ids (CPU tensors); ``instruction`` and ``kind`` are one for all
        texts or one per text."""
        max_length = min(max_length or self.config.max_length, self.max_length_cap)
        n = len(texts)
        instructions = instruction if isinstance(instruction, list) else [instruction] * n
        if not self.config.use_instructions:
            instructions = [None] * n
        kinds = kind if isinstance(kind, list) else [kind] * n
        clipped = [clip_text(t, max_length) for t in texts]
        prompts = [
            format_prompt(
                text,
                inst,
                k,
                query_template=self.config.query_template,
                document_template=self.config.document_template,
            )
            for text, inst, k in zip(clipped, instructions, kinds, strict=True)
        ]
        exclude = not self.config.pool_instruction and any(instructions)
        enc = self.tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_offsets_mapping=return_offsets or exclude,
        )
        if exclude:
            # the text ends every prompt: tokens wholly before it belong to the instruction
            starts = torch.tensor([len(p) - len(t) for p, t in zip(prompts, clipped, strict=True)])
            offsets = enc["offset_mapping"]
            in_instruction = (offsets[..., 1] > offsets[..., 0]) & (
                offsets[..., 1] <= starts[:, None]
            )
            enc["pool_mask"] = enc["attention_mask"] * (~in_instruction).long()
            if not return_offsets:
                del enc["offset_mapping"]
        return enc


class PrefixProcessor:
    """A plain embedder's prompting and tokenization: its own query/document prefix (a
    prefix holding ``{instruction}``, as E5-Mistral's, takes the instruction and is left
    out when there is none; other prefixes ignore instructions)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        query_prefix: str = "",
        document_prefix: str = "",
        max_length: int = 512,
    ) -> None:
        self.tokenizer = tokenizer
        self.prefixes = {"query": query_prefix, "document": document_prefix}
        self.max_length = max_length

    @property
    def uses_instructions(self) -> bool:
        """Whether a prefix reads the task instruction (evaluation then embeds a text once
        per instruction, not once for every task)."""
        return any("{instruction}" in p for p in self.prefixes.values())

    def __call__(
        self,
        texts: list[str],
        *,
        kind: TextKind = "query",
        max_length: int | None = None,
        instruction: str | None = None,
    ) -> BatchEncoding:
        """Prefixed, clipped and padded token ids (CPU tensors)."""
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
