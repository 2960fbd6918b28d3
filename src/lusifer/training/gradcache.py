"""GradCache: a large contrastive batch in small memory, with exact gradients.

1. embed the batch chunk by chunk without building graphs (remembering each chunk's RNG
   state, so dropout is replayed identically);
2. compute the loss on all embeddings and its gradient with respect to them;
3. re-embed each chunk with a graph and back-propagate that cached gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

EmbedFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class _RngState:
    """Captures the CPU (and current CUDA device) RNG so a forward can be replayed."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.device = device

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def split_inputs(inputs: dict[str, torch.Tensor], chunk_size: int) -> list[dict[str, torch.Tensor]]:
    n = next(iter(inputs.values())).shape[0]
    return [{k: v[i : i + chunk_size] for k, v in inputs.items()} for i in range(0, n, chunk_size)]


def gradcache_backward(
    embed: EmbedFn,
    inputs: dict[str, torch.Tensor],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    no_sync: Callable[[], object] | None = None,
) -> torch.Tensor:
    """Back-propagate ``loss_fn(embed(inputs))`` chunk by chunk; return the loss (detached).

    ``backward`` is the engine's backward (e.g. ``accelerator.backward``); ``no_sync``
    returns a context that skips the distributed gradient sync (all chunks but the last).
    """
    chunks = split_inputs(inputs, chunk_size)
    device = next(iter(inputs.values())).device
    states, reps = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(_RngState(device))
            reps.append(embed(chunk))
    cached = torch.cat(reps).detach().requires_grad_(True)
    loss = loss_fn(cached)
    loss.backward()
    grads = cached.grad.split([r.shape[0] for r in reps])
    # Re-running the chunks must not disturb the RNG stream of the rest of training.
    after = _RngState(device)
    for i, (chunk, state, grad) in enumerate(zip(chunks, states, grads, strict=True)):
        state.restore()
        last = i == len(chunks) - 1
        context = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
        with context:
            surrogate = (embed(chunk) * grad.to(reps[i].dtype)).sum()
            backward(surrogate)
    after.restore()
    return loss.detach()
