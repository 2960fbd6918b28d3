"""The backward strategies of a training step, each giving the gradient of one forward
over the whole local batch.

- :func:`accumulated_backward` (stage 1): the batch in micro-batches, each loss already
  scaled to its share of the batch, gradients accumulated.
- :func:`embedding_backward` (stage 2, whose contrastive loss couples every text): the
  texts embedded whole, in length-sorted chunks (each padded only to its own longest
  text), or by GradCache: embed every chunk without a graph, take the loss's gradient
  with respect to the embeddings, then re-embed each chunk with a graph and
  back-propagate that cached gradient (RNG replayed, so dropout matches).

Under GradCache every process runs the same number of forwards (:func:`max_over_processes`;
a process with fewer chunks runs zero-weighted copies), since a sharded model (FSDP,
ZeRO-3) gathers its weights in each forward. ``sync(last)`` is the engine's context for one backward: only the
last one of a step synchronises gradients and steps a DeepSpeed engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

from .bucketing import length_sorted_chunks
from .distributed import max_over_processes

Batch = dict[str, torch.Tensor]
EmbedFn = Callable[[Batch], torch.Tensor]
SyncFn = Callable[[bool], contextlib.AbstractContextManager]


def no_sync_needed(last: bool) -> contextlib.AbstractContextManager:
    """The ``sync`` of a single process: nothing to hold back."""
    return contextlib.nullcontext()


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


def accumulated_backward(
    losses: Sequence[Callable[[], torch.Tensor]],
    backward: Callable[[torch.Tensor], None],
    sync: SyncFn = no_sync_needed,
) -> torch.Tensor:
    """Run and back-propagate each micro-batch's loss (its share of the batch's loss, so
    the gradients add up to one forward's); return their sum, detached."""
    total = torch.zeros(())
    for i, loss_fn in enumerate(losses):
        with sync(i == len(losses) - 1):
            loss = loss_fn()
            backward(loss)
        total = total + loss.detach().float().cpu()
    return total


def _chunks(inputs: Batch, rows: int, by_length: bool) -> tuple[list[Batch], torch.Tensor]:
    """Chunks of ``rows`` texts (in input order, or length-sorted and each padded only to
    its own longest text), padded up to the most any process has with copies of the
    first chunk; and the chunk rows' input order."""
    device = next(iter(inputs.values())).device
    if by_length:
        chunks, order = length_sorted_chunks(inputs, rows)
    else:
        n = next(iter(inputs.values())).shape[0]
        chunks = [{k: v[i : i + rows] for k, v in inputs.items()} for i in range(0, n, rows)]
        order = torch.arange(n)
    wanted = max_over_processes(len(chunks), device)
    chunks += [chunks[0]] * (wanted - len(chunks))
    return chunks, order


def _unsort(reps: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return reps[torch.argsort(order.to(reps.device))]


def embedding_backward(
    embed: EmbedFn,
    inputs: Batch,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    micro_batch: int | None,
    bucket_rows: int | None,
    backward: Callable[[torch.Tensor], None],
    sync: SyncFn = no_sync_needed,
) -> torch.Tensor:
    """Back-propagate ``loss_fn(embed(inputs))``: by GradCache in chunks of
    ``micro_batch`` texts (length-sorted when ``bucket_rows`` is set), else in one graph
    over length-sorted chunks of ``bucket_rows`` texts, else in one forward. Returns the
    loss, detached."""
    if micro_batch:
        return _gradcache(embed, inputs, loss_fn, micro_batch, bool(bucket_rows), backward, sync)
    if bucket_rows:  # one process only: DDP wants one forward per backward
        chunks, order = length_sorted_chunks(inputs, bucket_rows)
        loss = loss_fn(_unsort(torch.cat([embed(chunk) for chunk in chunks]), order))
    else:
        loss = loss_fn(embed(inputs))
    with sync(True):
        backward(loss)
    return loss.detach()


def _gradcache(
    embed: EmbedFn,
    inputs: Batch,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    micro_batch: int,
    by_length: bool,
    backward: Callable[[torch.Tensor], None],
    sync: SyncFn,
) -> torch.Tensor:
    n = next(iter(inputs.values())).shape[0]
    chunks, order = _chunks(inputs, micro_batch, by_length)
    real = -(-n // micro_batch)
    device = next(iter(inputs.values())).device
    states, reps = [], []
    with torch.no_grad():
        for chunk in chunks:  # padding chunks too: a sharded model gathers in each forward
            states.append(_RngState(device))
            reps.append(embed(chunk))
    cached = torch.cat(reps[:real]).detach().requires_grad_(True)
    loss = loss_fn(_unsort(cached, order))
    loss.backward()
    assert cached.grad is not None  # the loss depends on every embedding
    grads = list(cached.grad.split([r.shape[0] for r in reps[:real]]))
    grads += [torch.zeros_like(r) for r in reps[real:]]
    # Re-running the chunks must not disturb the RNG stream of the rest of training.
    after = _RngState(device)
    for i, (chunk, state, grad) in enumerate(zip(chunks, states, grads, strict=True)):
        state.restore()
        with sync(i == len(chunks) - 1):
            surrogate = (embed(chunk) * grad.to(reps[0].dtype)).sum()
            backward(surrogate)
    after.restore()
    return loss.detach()


@contextlib.contextmanager
def holding_back(accelerator, module: torch.nn.Module, last: bool) -> Iterator[None]:
    """The engine's ``sync``: every backward of a step but the last skips the gradient
    all-reduce (DDP/FSDP ``no_sync``) and, under DeepSpeed, the engine's step (accelerate
    steps a DeepSpeed engine in ``backward`` whenever ``sync_gradients`` is true)."""
    if last:
        yield
        return
    state = accelerator.gradient_state
    state._set_sync_gradients(False)  # what accelerate's own ``accumulate`` does
    try:
        with accelerator.no_sync(module):
            yield
    finally:
        state._set_sync_gradients(True)
