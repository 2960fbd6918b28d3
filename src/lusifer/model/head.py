"""The optional projection head on top of the pooled embedding."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Linear(d, d) -> ReLU -> Linear(d, d), as in the paper."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(size, size), nn.ReLU(), nn.Linear(size, size))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)
