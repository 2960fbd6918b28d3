"""Embedding a batch in length-sorted chunks, each padded only to its own longest row.

A stage-2 batch mixes short queries with long documents: in the demo's batches 47% of the
padded token positions held a token. Padding costs the encoder, the connector and the
target as much as text does, so the rows are sorted by length, cut into chunks of
``rows`` and each chunk's trailing padding columns are dropped. With right padding (as
the tokenizers here pad) every row's embedding is what the whole batch would give, up to
float rounding; the rows come back in their original order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Batch = dict[str, torch.Tensor]


def length_sorted_chunks(
    inputs: Batch, rows: int, mask_key: str = "attention_mask"
) -> tuple[list[Batch], torch.Tensor]:
    """``inputs`` sorted by each row's token count (``mask_key``), cut into chunks of
    ``rows`` rows, every [batch, length] tensor trimmed to the chunk's longest row; and the
    order (chunk rows concatenated = ``inputs`` rows ``order``)."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    mask = inputs[mask_key]
    length = mask.shape[1]
    order = torch.argsort(mask.sum(dim=1), descending=True, stable=True)
    chunks = []
    for start in range(0, mask.shape[0], rows):
        index = order[start : start + rows]
        columns = mask[index]
        used = columns.any(dim=0).nonzero()
        # only trailing columns go: no row of the chunk has a token there
        keep = int(used.max()) + 1 if used.numel() else 1
        chunks.append(
            {
                k: (v[index][:, :keep] if v.dim() == 2 and v.shape[1] == length else v[index])
                for k, v in inputs.items()
            }
        )
    return chunks, order


def embed_by_length(
    embed: Callable[[Batch], torch.Tensor],
    inputs: Batch,
    rows: int,
    mask_key: str = "attention_mask",
) -> torch.Tensor:
    """``embed(inputs)``, computed chunk by chunk in length order (see the module's
    docstring), rows in input order; gradients flow as through one call."""
    chunks, order = length_sorted_chunks(inputs, rows, mask_key)
    reps = torch.cat([embed(chunk) for chunk in chunks])
    return reps[torch.argsort(order)]
