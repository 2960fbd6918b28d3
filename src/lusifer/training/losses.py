"""Training objectives: the paper's LM alignment, our distillations, and InfoNCE."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..model import LusiferModel
from ..model.pooling import pool

IGNORE_INDEX = -100


@contextlib.contextmanager
def _teacher_mode(target: torch.nn.Module):
    """The target as it was before LUSIFER: no dropout, LoRA adapters switched off.

    peft switches adapters back on by making them trainable again; their trainable flags
    are restored here, or a frozen target LoRA would collect gradients that no optimizer
    clears (and that the next stage would then start from)."""
    was_training = target.training
    trainable = {name: p.requires_grad for name, p in target.named_parameters()}
    target.eval()
    disable = getattr(target.model, "disable_adapter", None)
    try:
        with disable() if callable(disable) else contextlib.nullcontext():
            yield
    finally:
        target.train(was_training)
        for name, p in target.named_parameters():
            p.requires_grad_(trainable[name])


def build_lm_inputs(
    model: LusiferModel,
    soft: torch.Tensor,
    soft_mask: torch.Tensor,
    target_ids: torch.Tensor,
    target_mask: torch.Tensor,
    input_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lay out ``[BOS] + soft tokens + target-text tokens`` per row, right-padded.

    Labels are the target-text ids; BOS, soft tokens and padding get ``-100``.
    ``input_ids`` are the (optionally masked) ids fed in; labels always use ``target_ids``.
    """
    embedding = model.target.input_embeddings()
    input_ids = target_ids if input_ids is None else input_ids
    text_embeds = embedding(input_ids)
    bos_id = model.target.tokenizer.bos_token_id
    bos = (
        embedding.weight[bos_id].unsqueeze(0)
        if bos_id is not None
        else soft.new_zeros(0, soft.shape[-1])
    )
    rows, labels = [], []
    for i in range(soft.shape[0]):
        n_soft, n_text = int(soft_mask[i].sum()), int(target_mask[i].sum())
        rows.append(
            torch.cat(
                [bos.to(soft.dtype), soft[i, :n_soft], text_embeds[i, :n_text].to(soft.dtype)]
            )
        )
        labels.append(
            torch.cat(
                [
                    torch.full((bos.shape[0] + n_soft,), IGNORE_INDEX, device=soft.device),
                    target_ids[i, :n_text],
                ]
            )
        )
    length = max(r.shape[0] for r in rows)
    embeds = soft.new_zeros(len(rows), length, soft.shape[-1])
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=soft.device)
    label_t = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long, device=soft.device)
    for i, (row, lab) in enumerate(zip(rows, labels, strict=True)):
        embeds[i, : row.shape[0]] = row
        mask[i, : row.shape[0]] = 1
        label_t[i, : lab.shape[0]] = lab
    return embeds, mask, label_t


def lm_alignment_loss(
    model: LusiferModel,
    encoder_ids: torch.Tensor,
    encoder_mask: torch.Tensor,
    target_ids: torch.Tensor,
    target_mask: torch.Tensor,
    masked_target_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Token cross-entropy of the target LM on the target text, given the soft tokens.

    Causal attention: with bidirectional attention each position could see the token it
    must predict (the reference code's later defect)."""
    soft, soft_mask = model.soft_tokens(encoder_ids, encoder_mask)
    embeds, mask, labels = build_lm_inputs(
        model, soft, soft_mask, target_ids, target_mask, masked_target_ids
    )
    hidden = model.target.hidden_states(embeds, mask, causal=True)
    # Predict token t+1 from position t; project only the positions that carry a label.
    shift_hidden, shift_labels = hidden[:, :-1], labels[:, 1:]
    keep = shift_labels != IGNORE_INDEX
    logits = model.target.lm_logits(shift_hidden[keep])
    return F.cross_entropy(logits.float(), shift_labels[keep])


def target_own_embedding(
    model: LusiferModel, target_ids: torch.Tensor, target_mask: torch.Tensor
) -> torch.Tensor:
    """The teacher: the original target's pooled embedding of its own tokens (no gradient)."""
    with torch.no_grad(), _teacher_mode(model.target):
        own = model.target.input_embeddings()(target_ids)
        return pool(model.target.hidden_states(own, target_mask), target_mask, model.config.pooling)


def distillation_loss(
    model: LusiferModel,
    encoder_ids: torch.Tensor,
    encoder_mask: torch.Tensor,
    target_ids: torch.Tensor,
    target_mask: torch.Tensor,
    mse_weight: float = 1.0,
) -> torch.Tensor:
    """(1 - cosine) + w * MSE between the target's pooled output on the soft tokens and
    the same target's own embedding of the same English text (its own tokens).

    The teacher is the original target (adapters off), so a target LoRA trained with
    this loss learns to read soft tokens without moving what it is distilled towards."""
    soft, soft_mask = model.soft_tokens(encoder_ids, encoder_mask)
    student = pool(model.target.hidden_states(soft, soft_mask), soft_mask, model.config.pooling)
    teacher = target_own_embedding(model, target_ids, target_mask)
    student, teacher = student.float(), teacher.float()
    cosine = F.cosine_similarity(student, teacher, dim=-1)
    return (1.0 - cosine).mean() + mse_weight * F.mse_loss(student, teacher)


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    negative_owner: torch.Tensor,
    *,
    temperature: float = 0.05,
    in_batch_negatives: bool = True,
    symmetric: bool = False,
) -> torch.Tensor:
    """InfoNCE on L2-normalised embeddings.

    Query i's candidates are every positive and every hard negative in the batch
    (``in_batch_negatives``), or only its own positive and its own negatives
    (``negative_owner[j]`` is the query negative j belongs to). ``symmetric`` adds the
    positive -> query direction.
    """
    q = F.normalize(queries.float(), dim=-1)
    p = F.normalize(positives.float(), dim=-1)
    n = F.normalize(negatives.float(), dim=-1) if negatives.numel() else p.new_zeros(0, p.shape[-1])
    batch = q.shape[0]
    docs = torch.cat([p, n])
    scores = q @ docs.T / temperature
    labels = torch.arange(batch, device=q.device)
    if not in_batch_negatives:
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        allowed[labels, labels] = True
        if n.shape[0]:
            allowed[negative_owner, batch + torch.arange(n.shape[0], device=q.device)] = True
        scores = scores.masked_fill(~allowed, float("-inf"))
    loss = F.cross_entropy(scores, labels)
    if symmetric and in_batch_negatives:
        loss = (loss + F.cross_entropy(p @ q.T / temperature, labels)) / 2
    return loss


def relational_distillation(
    student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 0.05
) -> torch.Tensor:
    """InfoNCE from each text's LUSIFER embedding to the teacher's embeddings of the
    batch's texts: the student must pick out the teacher's embedding of its own text.

    Unlike matching each pair alone (cosine/MSE), this only asks the student to keep the
    teacher's neighbourhoods, which is what retrieval and classification read."""
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.detach().float(), dim=-1)
    labels = torch.arange(s.shape[0], device=s.device)
    return F.cross_entropy(s @ t.T / temperature, labels)


def real_offsets(encoding) -> list[list[tuple[int, int]]]:
    """Per row of a tokenizer output, the character offsets of its non-padding tokens."""
    return [
        [tuple(o) for o, m in zip(offsets, mask, strict=True) if m]
        for offsets, mask in zip(
            encoding["offset_mapping"].tolist(), encoding["attention_mask"].tolist(), strict=True
        )
    ]


def token_alignment(
    encoder_offsets: list[list[tuple[int, int]]],
    target_offsets: list[list[tuple[int, int]]],
    encoder_length: int,
    target_length: int,
) -> torch.Tensor:
    """Row-normalised [B, Le, Lt] weights linking each encoder token to the target tokens
    whose character spans overlap it (both tokenizers read the same text). Special tokens
    (empty spans) are linked first-to-first and last-to-last."""
    weights = torch.zeros(len(encoder_offsets), encoder_length, target_length)
    for b, (enc, tgt) in enumerate(zip(encoder_offsets, target_offsets, strict=True)):
        for j, (s1, e1) in enumerate(enc):
            if e1 <= s1:
                continue
            for k, (s2, e2) in enumerate(tgt):
                if e2 > s2 and s1 < e2 and s2 < e1:
                    weights[b, j, k] = 1.0
        weights[b, 0, 0] = 1.0  # <s> / [CLS] / BOS
        if enc and tgt and enc[-1][1] <= enc[-1][0] and tgt[-1][1] <= tgt[-1][0]:
            weights[b, len(enc) - 1, len(tgt) - 1] = 1.0  # </s> / [SEP]
    return weights / weights.sum(-1, keepdim=True).clamp(min=1.0)


def token_distillation_loss(
    model: LusiferModel,
    encoder_ids: torch.Tensor,
    encoder_mask: torch.Tensor,
    target_ids: torch.Tensor,
    alignment: torch.Tensor,
) -> torch.Tensor:
    """Each soft token should sit where the target's own input embeddings of the same
    characters sit: a dense, cheap signal (no pass through the target) that teaches the
    connector a token-level dictionary from the encoder's space into the target's."""
    soft, _ = model.soft_tokens(encoder_ids, encoder_mask)
    table = model.target.input_embeddings().weight
    with torch.no_grad():
        wanted = alignment.to(table.dtype) @ table[target_ids]  # [B, Le, d]
        valid = alignment.sum(-1) > 0
        scale = table.float().var(dim=0).sum()
    soft = soft[:, : wanted.shape[1]]
    error = (soft.float() - wanted.float()).pow(2).sum(-1) / scale
    return error[valid].mean()
