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
        probe = sample_states
        if probe is None:
            probe = torch.randn(256, self.ff[0].in_features, device=reference.device)
        out_std = self.ff(probe.to(self.ff[0].weight.dtype)).float().std()
        ref_std = reference.float().std()
        if out_std > 0:
            self.ff[2].weight.mul_(ref_std / out_std)
            self.ff[2].bias.mul_(ref_std / out_std)
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
        batch, length, dim = embeds.shape
        n = self.num_learned_tokens
        lengths = attention_mask.sum(dim=1)  # [B]
        out = embeds.new_zeros(batch, length + n, dim)
        positions = torch.arange(length + n, device=embeds.device).unsqueeze(0)
        real = positions < lengths.unsqueeze(1)
        learned = (positions >= lengths.unsqueeze(1)) & (positions < (lengths + n).unsqueeze(1))
        out[real] = embeds[attention_mask.bool()]
        out[learned] = self.learned_tokens.to(embeds.dtype).repeat(batch, 1)
        mask = (real | learned).to(attention_mask.dtype)
        return out, mask
