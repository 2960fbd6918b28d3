"""Collators: a drawn batch (a function of seed and step, the same on every process) ->
this process's slice as token tensors, ready for the objectives."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from ..model import LusiferModel
from ..model.prompts import format_prompt
from .config import Objectives
from .data import AlignmentExample, ContrastiveBatch

Tokens = dict[str, torch.Tensor]


def local_slice(items: list, rank: int, world: int) -> list:
    """This process's equal share of a global batch (rank r takes the r-th block)."""
    per = len(items) // world
    return items[rank * per : (rank + 1) * per]


def lm_target(model: LusiferModel, example: AlignmentExample) -> str:
    """What the LM writes: the prompted text for reconstruction, else the answer."""
    if example.answer is not None:
        return example.answer
    config = model.config
    instruction = example.instruction if config.use_instructions else None
    return format_prompt(
        example.text,
        instruction,
        "query",
        query_template=config.query_template,
        document_template=config.document_template,
    )


def _trim(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop trailing columns where no row has a token (right padding)."""
    used = mask.any(dim=0).nonzero()
    keep = int(used.max()) + 1 if used.numel() else 1
    return ids[:, :keep], mask[:, :keep]


@dataclass
class AlignmentInputs:
    """One process's stage-1 rows: the encoder's prompted tokens, and the target's tokens
    for each objective that is on (``lm``: the text the LM writes, with its masked copy
    when ``mask_prob`` > 0; ``distill``: the English text the teacher embeds)."""

    encoder_ids: torch.Tensor
    encoder_mask: torch.Tensor
    lm: Tokens | None = None
    distill: Tokens | None = None

    def __len__(self) -> int:
        return self.encoder_ids.shape[0]

    def rows(self, lo: int, hi: int) -> AlignmentInputs:
        """Rows ``lo:hi``, each tensor cut to the rows' longest text."""
        ids, mask = _trim(self.encoder_ids[lo:hi], self.encoder_mask[lo:hi])
        out = replace(self, encoder_ids=ids, encoder_mask=mask)
        for name in ("lm", "distill"):
            part = getattr(self, name)
            if part is None:
                continue
            sliced = {k: v[lo:hi] for k, v in part.items()}
            keep = _trim(sliced["target_ids"], sliced["target_mask"])[1].shape[1]
            setattr(out, name, {k: v[:, :keep] for k, v in sliced.items()})
        return out

    def micro_batches(self, size: int | None) -> list[AlignmentInputs]:
        """Consecutive slices of ``size`` rows (one slice when ``size`` is None)."""
        n = len(self)
        size = size or n
        return [self.rows(lo, min(lo + size, n)) for lo in range(0, n, size)]

    def to(self, device: torch.device) -> AlignmentInputs:
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = value.to(device)
            elif isinstance(value, dict):
                moved[f.name] = {k: v.to(device) for k, v in value.items()}
        return replace(self, **moved)


def target_tokens(model: LusiferModel, texts: list[str], max_length: int, **kwargs) -> Tokens:
    """The target tokenizer's ids and mask of ``texts`` (CPU)."""
    enc = model.target.tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt", **kwargs
    )
    return {"target_ids": enc["input_ids"], "target_mask": enc["attention_mask"]}


def alignment_inputs(
    model: LusiferModel,
    examples: list[AlignmentExample],
    objectives: Objectives,
    *,
    max_length: int,
    seed: int,
    step: int,
) -> AlignmentInputs:
    """Token tensors (CPU) of this process's stage-1 examples. The encoder reads
    ``{instruction}.\\n{text}`` (the reference's collator format)."""
    enc = model.tokenize(
        [e.text for e in examples],
        instruction=[e.instruction for e in examples],
        kind="query",
        max_length=max_length,
    )
    inputs = AlignmentInputs(enc["input_ids"], enc["attention_mask"])
    if objectives.lm > 0:
        tok = model.target.tokenizer
        texts = [lm_target(model, e) + (tok.eos_token or "") for e in examples]
        # the target text follows the soft tokens: no special tokens of its own
        lm = target_tokens(model, texts, objectives.max_target_length, add_special_tokens=False)
        if objectives.mask_prob > 0:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
            drop = torch.rand(lm["target_ids"].shape, generator=gen) < objectives.mask_prob
            fill = tok.unk_token_id if tok.unk_token_id is not None else tok.pad_token_id
            lm["masked_target_ids"] = lm["target_ids"].masked_fill(drop, fill)
        inputs.lm = lm
    if objectives.distill > 0:
        texts = [e.distill_text for e in examples]
        inputs.distill = target_tokens(model, texts, objectives.max_target_length)
    return inputs


@dataclass
class ContrastiveInputs:
    """One process's stage-2 texts: its queries, then the positives and hard negatives of
    those queries (owners index its queries), prompted and tokenized."""

    texts: list[str]
    kinds: list[str]
    instructions: list[str | None]
    tokens: Tokens
    n_queries: int
    n_positives: int
    positive_owner: list[int]
    negative_owner: list[int]
    in_batch_negatives: bool

    def split(self, reps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows of ``reps`` (one per text) as (queries, positives, negatives)."""
        q, p = self.n_queries, self.n_positives
        return reps[:q], reps[q : q + p], reps[q + p :]


def contrastive_inputs(
    model: LusiferModel, full: ContrastiveBatch, rank: int, world: int, *, max_length: int
) -> ContrastiveInputs:
    """This process's share of a global stage-2 batch: its block of queries and their own
    positives and negatives, tokenized with LUSIFER's prompts."""
    per = len(full.queries) // world
    lo, hi = rank * per, (rank + 1) * per

    def local(texts: list[str], owner: list[int]) -> tuple[list[str], list[int]]:
        keep = [j for j, o in enumerate(owner) if lo <= o < hi]
        return [texts[j] for j in keep], [owner[j] - lo for j in keep]

    queries, instructions = full.queries[lo:hi], full.instructions[lo:hi]
    positives, pos_owners = local(full.positives, full.positive_owner)
    negatives, neg_owners = local(full.negatives, full.negative_owner)
    texts = queries + positives + negatives
    kinds = ["query"] * len(queries) + ["document"] * (len(positives) + len(negatives))
    insts = instructions + [instructions[o] for o in pos_owners + neg_owners]
    enc = model.tokenize(texts, instruction=insts, kind=kinds, max_length=max_length)
    tokens = {k: enc[k] for k in ("input_ids", "attention_mask", "pool_mask") if k in enc}
    return ContrastiveInputs(
        texts=texts,
        kinds=kinds,
        instructions=insts,
        tokens=tokens,
        n_queries=len(queries),
        n_positives=len(positives),
        positive_owner=pos_owners,
        negative_owner=neg_owners,
        in_batch_negatives=full.in_batch_negatives,
    )
