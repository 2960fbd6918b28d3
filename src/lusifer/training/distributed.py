"""The collectives of a training step; each is a no-op in one process."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllGather(torch.autograd.Function):
    """All-gather of equal-sized blocks along dim 0. The backward gives each process the
    sum of every process's gradient for its own rows (a reduce-scatter, done by an
    all-reduce, which gloo has too); ours because torch deprecates
    ``torch.distributed.nn.functional.all_gather`` for a private module."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t.contiguous())
        ctx.rows, ctx.rank = t.shape[0], dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 keeping gradients; rows may differ in count per process."""
    if not is_distributed():
        return t
    sizes = [n for (n,) in gather_lists([t.shape[0]])]
    padded = torch.nn.functional.pad(t, (0, 0, 0, max(sizes) - t.shape[0]))
    parts = _AllGather.apply(padded).split(max(sizes))
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


def gather_lists(values: list[int]) -> list[list[int]]:
    """``values`` of every process, in rank order (a list of one without distribution)."""
    if not is_distributed():
        return [values]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, values)
    return out


def gather_objects(value: Any) -> list[Any]:
    """``value`` of every process, in rank order (a list of one without distribution)."""
    if not is_distributed():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def max_over_processes(n: int, device: torch.device) -> int:
    """The largest ``n`` of all processes: every process runs that many forwards, so a
    sharded model (FSDP, ZeRO-3), which gathers its weights in each forward, never
    waits on a process that has none left."""
    if not is_distributed():
        return n
    t = torch.tensor([n], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def global_owners(owners: list[int], per: int, device: torch.device) -> torch.Tensor:
    """Owner indices of this process's texts into the gathered queries: process r's
    ``per`` queries follow process r-1's."""
    index = [o + r * per for r, ows in enumerate(gather_lists(owners)) for o in ows]
    return torch.tensor(index, dtype=torch.long, device=device)
