"""Training objectives: the paper's LM alignment, our distillations, and InfoNCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import LusiferModel
from ..model.pooling import pool

IGNORE_INDEX = -100


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
    soft: torch.Tensor,
    soft_mask: torch.Tensor,
    target_ids: torch.Tensor,
    target_mask: torch.Tensor,
    masked_target_ids: torch.Tensor | None = None,
    normalizer: float | None = None,
) -> torch.Tensor:
    """Token cross-entropy of the target LM on the target text, given the soft tokens:
    the mean over the labelled tokens, or their sum over ``normalizer`` (a micro-batch's
    share of its batch's mean).

    Causal attention: with bidirectional attention each position could see the token it
    must predict (the reference code's later defect)."""
    embeds, mask, labels = build_lm_inputs(
        model, soft, soft_mask, target_ids, target_mask, masked_target_ids
    )
    hidden = model.target.hidden_states(embeds, mask, causal=True)
    # Predict token t+1 from position t; project only the positions that carry a label.
    shift_hidden, shift_labels = hidden[:, :-1], labels[:, 1:]
    keep = shift_labels != IGNORE_INDEX
    logits = model.target.lm_logits(shift_hidden[keep])
    if normalizer is None:
        return F.cross_entropy(logits.float(), shift_labels[keep])
    return F.cross_entropy(logits.float(), shift_labels[keep], reduction="sum") / normalizer


def target_own_embedding(
    model: LusiferModel, target_ids: torch.Tensor, target_mask: torch.Tensor
) -> torch.Tensor:
    """The teacher: the original target's pooled embedding of its own tokens (no
    gradient); for a routed model, its native route (the target's own pooling and
    attention, adapters off), the space both routes share."""
    if model.routed:
        with torch.no_grad():
            return model.native_route(target_ids, target_mask)
    with torch.no_grad(), model.target.original():
        own = model.target.input_embeddings()(target_ids)
        return pool(model.target.hidden_states(own, target_mask), target_mask, model.config.pooling)


def distillation_loss(
    model: LusiferModel,
    soft: torch.Tensor,
    soft_mask: torch.Tensor,
    target_ids: torch.Tensor,
    target_mask: torch.Tensor,
    mse_weight: float = 1.0,
    normalizer: float | None = None,
) -> torch.Tensor:
    """(1 - cosine) + w * MSE between the target's pooled output on the soft tokens and
    the same target's own embedding of the same English text (its own tokens): the mean
    over the rows, or their sum over ``normalizer``.

    The teacher is the original target (adapters off), so a target LoRA trained with
    this loss learns to read soft tokens without moving what it is distilled towards."""
    student = pool(model.target.hidden_states(soft, soft_mask), soft_mask, model.config.pooling)
    teacher = target_own_embedding(model, target_ids, target_mask)
    student, teacher = student.float(), teacher.float()
    cosine = F.cosine_similarity(student, teacher, dim=-1)
    per_row = (1.0 - cosine) + mse_weight * (student - teacher).pow(2).mean(dim=-1)
    return per_row.mean() if normalizer is None else per_row.sum() / normalizer


def similarity_scores(a: torch.Tensor, b: torch.Tensor, similarity: str = "cosine") -> torch.Tensor:
    """[len(a), len(b)] scores between L2-normalised embeddings: cosine, or the
    reference's negative L2 distance (its NT-Xent over ``LpDistance``)."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    cosine = a @ b.T
    if similarity == "cosine":
        return cosine
    if similarity == "negative_l2":
        # |a - b| = sqrt(2 - 2 cos) for unit vectors; clamped so a text with itself has no
        # infinite gradient (such pairs are never scored)
        return -(2.0 - 2.0 * cosine).clamp(min=1e-12).sqrt()
    raise ValueError(f"similarity must be 'cosine' or 'negative_l2', got {similarity!r}")


def _pair_loss(
    scores: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
) -> torch.Tensor:
    """Mean over positive pairs (a, p) of -log(e^s_ap / (e^s_ap + sum_n e^s_an)), where n
    runs over anchor a's negatives (the NT-Xent form: other positives of the same anchor
    are in neither sum)."""
    if not bool(positive.any()):
        return scores.sum() * 0.0
    neg_lse = torch.logsumexp(scores.masked_fill(~negative, float("-inf")), dim=1)
    anchor, other = positive.nonzero(as_tuple=True)
    pos = scores[anchor, other]
    return (torch.logaddexp(pos, neg_lse[anchor]) - pos).mean()


def _owned_candidates(
    positives: torch.Tensor,
    negatives: torch.Tensor,
    positive_owner: torch.Tensor | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``positive_owner`` (positive j belongs to query j unless given) and ``negatives``
    (an empty batch as a 0-row matrix of the positives' width)."""
    if positive_owner is None:
        positive_owner = torch.arange(positives.shape[0], device=device)
    if not negatives.numel():
        negatives = positives.new_zeros(0, positives.shape[-1])
    return positive_owner, negatives


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    negative_owner: torch.Tensor,
    *,
    positive_owner: torch.Tensor | None = None,
    temperature: float = 0.05,
    in_batch_negatives: bool = True,
    symmetric: bool = False,
    similarity: str = "cosine",
) -> torch.Tensor:
    """InfoNCE on L2-normalised embeddings.

    Query i's candidates are every positive and every hard negative in the batch
    (``in_batch_negatives``), or only its own positives and its own negatives
    (``negative_owner[j]`` / ``positive_owner[j]`` is the query that text belongs to;
    by default positive j belongs to query j). With several positives per query, each
    is scored against the query's negatives (its other positives are left out).
    ``symmetric`` adds the positive -> query direction.
    """
    batch, device = queries.shape[0], queries.device
    positive_owner, negatives = _owned_candidates(positives, negatives, positive_owner, device)
    docs = torch.cat([positives, negatives])
    owner = torch.cat([positive_owner, negative_owner.to(device)])
    is_positive = torch.zeros(docs.shape[0], dtype=torch.bool, device=device)
    is_positive[: positives.shape[0]] = True
    own = owner.unsqueeze(0) == torch.arange(batch, device=device).unsqueeze(1)  # [B, D]
    positive = own & is_positive
    negative = ~positive if in_batch_negatives else own & ~is_positive
    scores = similarity_scores(queries, docs, similarity) / temperature
    loss = _pair_loss(scores, positive, negative)
    if symmetric and in_batch_negatives:
        back = similarity_scores(positives, queries, similarity) / temperature
        back_positive = positive[:, : positives.shape[0]].T
        loss = (loss + _pair_loss(back, back_positive, ~back_positive)) / 2
    return loss


def nt_xent(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    negative_owner: torch.Tensor,
    *,
    positive_owner: torch.Tensor | None = None,
    temperature: float = 0.05,
    in_batch_negatives: bool = True,
    similarity: str = "cosine",
) -> torch.Tensor:
    """The reference's contrastive loss (NT-Xent with labels).

    A query and its positives share a label, each hard negative has its own. Every
    ordered pair of distinct same-label texts (query->positive, positive->query,
    positive->positive) is a positive pair, scored against all texts of other labels
    (``in_batch_negatives``) or, for classification/clustering-style sets, only against
    those of its own (query, positives, negatives) row. Symmetric by construction."""
    device = queries.device
    batch = queries.shape[0]
    positive_owner, negatives = _owned_candidates(positives, negatives, positive_owner, device)
    embeddings = torch.cat([queries, positives, negatives])
    row = torch.cat(
        [torch.arange(batch, device=device), positive_owner.to(device), negative_owner.to(device)]
    )
    n_neg = negatives.shape[0]
    label = torch.cat(
        [row[: batch + positives.shape[0]], batch + torch.arange(n_neg, device=device)]
    )
    same_label = label.unsqueeze(0) == label.unsqueeze(1)
    itself = torch.eye(len(label), dtype=torch.bool, device=device)
    positive = same_label & ~itself
    negative = ~same_label
    if not in_batch_negatives:
        same_row = row.unsqueeze(0) == row.unsqueeze(1)
        positive, negative = positive & same_row, negative & same_row
    scores = similarity_scores(embeddings, embeddings, similarity) / temperature
    return _pair_loss(scores, positive, negative)


def contrastive_loss(kind: str, *args, symmetric: bool = False, **kwargs) -> torch.Tensor:
    """``info_nce`` (optionally ``symmetric``) or the reference's ``nt_xent``."""
    if kind == "nt_xent":
        return nt_xent(*args, **kwargs)
    if kind == "info_nce":
        return info_nce(*args, symmetric=symmetric, **kwargs)
    raise ValueError(f"loss must be 'info_nce' or 'nt_xent', got {kind!r}")


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


def aligned_target_tokens(encoded, target_tokenizer, texts: list[str], max_length: int):
    """``texts`` through the target's tokenizer (with offsets) and the
    :func:`token_alignment` of ``encoded`` (the encoder's tokenization of the same texts,
    with offsets) to it: (target tokens, [B, Le, Lt] weights)."""
    target = target_tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    weights = token_alignment(
        real_offsets(encoded),
        real_offsets(target),
        encoded["input_ids"].shape[1],
        target["input_ids"].shape[1],
    )
    return target, weights
