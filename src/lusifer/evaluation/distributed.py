"""``lusifer evaluate`` across processes (``torchrun`` or ``accelerate launch``).

Every process loads the models and lists the same (model, task) pairs; pair ``i`` (models
outer, tasks inner, in suite order) belongs to rank ``i % world_size``, a deterministic
round-robin that needs no communication. Each rank scores its own pairs and writes their
run files (``runs/<model>/<task>.json``) as a single process does; after a barrier every
rank reads the other ranks' run files, the failures of hub tasks are gathered, and rank 0
alone writes the report (``results.json``, tables, chart, mteb layout). Scores equal one
process's: each pair is scored by one process exactly as one process scores it.

The collectives run on a gloo group (CPU), so they work beside NCCL on GPUs: an existing
process group (``accelerate launch``) gets a gloo subgroup; otherwise one is started from
the ``torchrun`` environment. On CUDA each rank takes ``cuda:LOCAL_RANK`` and its torch
models are moved there (:func:`place_models`; ``lusifer evaluate`` loads them there
already, :func:`lusifer.load`'s default). The barrier
waits ``$LUSIFER_EVAL_TIMEOUT`` seconds (default 24 hours): ranks can finish hours apart
on hub suites.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

DEFAULT_TIMEOUT_S = 24 * 3600


@dataclass
class Shard:
    """This process's share of an evaluation."""

    rank: int = 0
    world_size: int = 1
    group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def owns(self, index: int) -> bool:
        """Whether pair ``index`` (round-robin over ranks) is this process's to score."""
        return index % self.world_size == self.rank

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (``[value]`` in one process)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value, group=self.group)
        return out


def _timeout() -> timedelta:
    return timedelta(seconds=float(os.environ.get("LUSIFER_EVAL_TIMEOUT", DEFAULT_TIMEOUT_S)))


def rank_device(device: str | None = None):
    """Where this process's torch models run in a multi-process evaluation:
    ``cuda:LOCAL_RANK`` when CUDA is present and no device is given (a bare ``cuda`` too),
    the given device otherwise (checked by :func:`lusifer.loading.resolve_device`), or
    None to leave them where they are (no CUDA, no device given)."""
    from ..devices import local_cuda_device, resolve_device

    if device is None:
        return local_cuda_device()
    return resolve_device(device)


def place_models(models: Sequence[Any], device: str | None = None) -> None:
    """Move each torch model to :func:`rank_device`, in place: under torchrun/accelerate
    each rank on its own GPU; nothing moves in one process without a device given.
    onnxruntime runners and other embedders stay as they are."""
    import torch

    target = rank_device(device)
    if target is None:
        return
    for model in models:
        if isinstance(model, torch.nn.Module):
            model.to(target)


def current_shard() -> Shard:
    """The shard of this process: one process unless launched with ``WORLD_SIZE`` > 1 or
    inside an initialised process group."""
    import torch
    import torch.distributed as dist

    from ..devices import local_cuda_device

    initialised = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if initialised else int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
    local = local_cuda_device()
    if local is not None:
        torch.cuda.set_device(local)
    if not initialised:
        dist.init_process_group("gloo", timeout=_timeout())
        group = None
    elif dist.get_backend() == "gloo":
        group = None
    else:  # NCCL from accelerate: object collectives on a CPU group beside it
        group = dist.new_group(backend="gloo", timeout=_timeout())
    return Shard(rank=dist.get_rank(), world_size=dist.get_world_size(), group=group)


def merge_runs(
    shard: Shard,
    runs: dict[str, dict[str, dict[str, Any]]],
    errors: dict[str, dict[str, str]],
    missing: dict[str, list[Any]],
    load: Any,
) -> None:
    """After every rank finished: fill ``runs`` with the other ranks' run files
    (``load(name, entry)`` reads one, None when absent) and ``errors`` with their
    failures, in place. ``missing`` lists, per model name, the entries left to others."""
    if not shard.distributed:
        return
    shard.barrier()
    for rank_errors in shard.gather(errors):
        for name, failed in rank_errors.items():
            errors.setdefault(name, {}).update(failed)
    for name, entries in missing.items():
        for entry in entries:
            if entry.key in errors.get(name, {}):
                continue
            run = load(name, entry)
            if run is None:
                errors.setdefault(name, {})[entry.key] = (
                    "no result from the process it was given to"
                )
            else:
                runs[name][entry.key] = run
