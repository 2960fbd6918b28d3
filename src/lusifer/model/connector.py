"""The connector: a per-token MLP from the encoder's space into the target's input space."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class Connector(nn.Module):
    """Linear(d_enc, d_hidden) -> activation -> Linear(d_hidden, d_target), per token,
    plus ``num_learned_tokens`` trainable vectors appended after each sequence.

    ``centering`` (ours; 0 is the paper) subtracts that fraction of each text's mean
    encoder state from its token states before the MLP (:meth:`prepare`).
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int | None = None,
        activation: str = "relu",
        num_learned_tokens: int = 0,
        centering: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_size = hidden_size or input_size
        self.centering = centering
        self.ff = nn.Sequential(
            nn.Linear(input_size, hidden_size),
            ACTIVATIONS[activation](),
            nn.Linear(hidden_size, output_size),
        )
        self.num_learned_tokens = num_learned_tokens
        if num_learned_tokens:
            self.learned_tokens = nn.Parameter(torch.randn(num_learned_tokens, output_size))
        else:
            self.register_parameter("learned_tokens", None)

    @torch.no_grad()
    def match_output_scale(
        self, reference: torch.Tensor, sample_states: torch.Tensor | None = None
    ) -> None:
        """Scale the last layer so outputs start at the size of the target's own token
        embeddings (``reference``: its embedding matrix) for encoder states like
        ``sample_states``; training then starts in range."""
        first, last = self.ff[0], self.ff[2]
        assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
        probe = sample_states
        if probe is None:
            probe = torch.randn(256, first.in_features, device=reference.device)
        out_std = self.ff(probe.to(first.weight.dtype)).float().std()
        ref_std = reference.float().std()
        if out_std > 0:
            last.weight.mul_(ref_std / out_std)
            last.bias.mul_(ref_std / out_std)
        if self.learned_tokens is not None:
            self.learned_tokens.mul_(ref_std)

    def prepare(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the MLP reads: ``states`` [B, L, d_enc] minus ``centering`` x each row's
        mean over its attended tokens.

        The last-layer states of a text's tokens share a large common part (the text's
        gist and its language); the connector's job is per token, and on the demo's
        English-only recipe removing half of that part raised both English and
        cross-lingual retrieval (see the README's "What we tried")."""
        if not self.centering:
            return states
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
        return states - self.centering * mean

    def forward(
        self, states: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``states`` [B, L, d_enc] to [B, L + N, d_target]; the learned tokens are
        placed right after each row's last real token, so padding stays at the end."""
        embeds = self.ff(self.prepare(states, attention_mask))
        if self.learned_tokens is None:
            return embeds, attention_mask
        return place_learned_tokens(embeds, attention_mask, self.learned_tokens)


def place_learned_tokens(
    embeds: torch.Tensor, attention_mask: torch.Tensor, learned_tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``embeds`` [B, L, D] and the N ``learned_tokens`` [N, D] -> [B, L + N, D] and its
    mask: each row's real tokens (those ``attention_mask`` keeps, in order), then the learned
    tokens, then zeros for padding.

    Written with ``gather``/``where`` and no boolean indexing, so that a traced ONNX graph
    keeps a dynamic batch and length (the torch model and its export run this same code)."""
    length, dim = embeds.shape[1], embeds.shape[2]
    n = learned_tokens.shape[0]
    lengths = attention_mask.sum(dim=1, keepdim=True)  # [B, 1]
    positions = torch.arange(length + n, device=embeds.device).unsqueeze(0)  # [1, L + N]
    real = positions < lengths
    learned = (positions >= lengths) & (positions < lengths + n)
    # output position p < lengths takes the (p+1)-th real token: the number of tokens
    # before it counts the real ones before it (p) and any left padding
    seen = attention_mask.cumsum(dim=1)  # [B, L]
    source = (seen.unsqueeze(1) <= positions.unsqueeze(-1)).sum(dim=-1)  # [B, L + N]
    source = source.clamp(max=length - 1)
    kept = embeds.gather(1, source.unsqueeze(-1).expand(-1, -1, dim))
    tokens = learned_tokens.to(embeds.dtype)[(positions - lengths).clamp(0, n - 1)]
    out = torch.where(real.unsqueeze(-1), kept, torch.zeros_like(kept))
    out = torch.where(learned.unsqueeze(-1), tokens, out)
    return out, (real | learned).to(attention_mask.dtype)
