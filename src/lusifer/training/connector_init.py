"""A closed-form start for the connector: token-level least squares on English text.

Each encoder token state is paired with the target's own input embedding of the same
characters (character offsets from both tokenizers); the connector's output layer is
then the ridge-regression solution on its hidden features. On a CPU this replaces the
first few hundred gradient steps of alignment with a few seconds of linear algebra.
"""

from __future__ import annotations

import random

import torch
from tqdm.auto import tqdm

from ..model import LusiferModel
from ..model.lusifer import EncoderStates
from .config import RunConfig, StageConfig
from .losses import aligned_target_tokens


@torch.no_grad()
def token_pairs(
    model: LusiferModel,
    texts: list[str],
    *,
    max_length: int = 64,
    batch_size: int = 64,
    show_progress: bool = True,
    encoder_states: EncoderStates | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(encoder token states [N, d_enc], aligned target input embeddings [N, d_tgt]);
    the states from ``encoder_states`` (the training step's frozen-encoder runner), else
    from the torch encoder."""
    table = model.target.input_embeddings().weight.float()
    xs, ys = [], []
    for start in tqdm(
        range(0, len(texts), batch_size), desc="Connector init", disable=not show_progress
    ):
        batch = texts[start : start + batch_size]
        enc = model.tokenize(batch, max_length=max_length, return_offsets=True)
        tgt, weights = aligned_target_tokens(enc, model.target.tokenizer, batch, max_length)
        ids, mask = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
        states = model.connector_inputs(ids, mask, encoder_states).float().cpu()
        wanted = weights @ table.cpu()[tgt["input_ids"]]
        valid = weights.sum(-1) > 0
        xs.append(states[valid])
        ys.append(wanted[valid])
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def least_squares_connector(
    model: LusiferModel,
    texts: list[str],
    *,
    ridge: float = 1e-2,
    max_length: int = 64,
    show_progress: bool = True,
    encoder_states: EncoderStates | None = None,
) -> float:
    """Set the connector's output layer by ridge regression; returns the fitted R^2."""
    x, y = token_pairs(
        model,
        texts,
        max_length=max_length,
        show_progress=show_progress,
        encoder_states=encoder_states,
    )
    ff: list[torch.nn.Module] = list(model.connector.ff)
    first, activation, last = ff[0], ff[1], ff[2]
    assert isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear)
    hidden = activation(first(x.to(first.weight.dtype))).float()
    features = torch.cat([hidden, torch.ones(hidden.shape[0], 1)], dim=1)
    gram = features.T @ features
    gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0])
    solution = torch.linalg.solve(gram, features.T @ y.float())
    last.weight.copy_(solution[:-1].T.to(last.weight.dtype))
    last.bias.copy_(solution[-1].to(last.bias.dtype))
    residual = (features @ solution - y).pow(2).sum()
    return float(1 - residual / (y - y.mean(0)).pow(2).sum())


def start_connector(
    model: LusiferModel,
    sources: list,
    config: StageConfig,
    run: RunConfig,
    *,
    stage: str,
    show_progress: bool,
    encoder_states: EncoderStates | None = None,
) -> None:
    """Closed-form connector start from the stage's own (English) training texts, read
    by the encoder the stage's steps read (``encoder_states``)."""
    per_source = [
        [t.text for t in source.texts]
        + [r.query for r in source.pairs]
        + [r.positive for r in source.pairs]
        for source in sources
    ]
    rng = random.Random(run.seed)
    wanted = config.connector_init_examples
    if config.dataset_sampling == "round_robin":  # an equal share from each data set
        share = -(-wanted // len(per_source))
        picked = [t for texts in per_source for t in rng.sample(texts, min(share, len(texts)))]
    else:
        texts = [t for source_texts in per_source for t in source_texts]
        picked = rng.sample(texts, min(wanted, len(texts)))
    r2 = least_squares_connector(
        model,
        picked,
        max_length=run.max_length,
        show_progress=show_progress,
        encoder_states=encoder_states,
    )
    tqdm.write(
        f"{stage}: connector initialised by least squares on {len(picked)} texts (R^2 {r2:.3f})"
    )
