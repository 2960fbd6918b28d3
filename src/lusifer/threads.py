"""One threading policy for processes that run torch and onnxruntime.

Several processes on one machine (torchrun, accelerate) share its cores evenly. Within
a process, the two never compute at the same time here: training alternates the frozen encoder's
onnxruntime graph with torch's target step, and evaluation, ``encode`` and ``serve`` run
one model at a time. So each gets every core this process may use
(:func:`cpu_threads`), and onnxruntime's intra-op threads spin-wait for more work only
where no torch work follows (``spinning``): in a process where torch computes between
onnxruntime runs, spinning threads would hold cores that torch needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

THREADS_ENV = "LUSIFER_NUM_THREADS"


def cpu_threads(threads: int | None = None) -> int:
    """``threads``, else ``$LUSIFER_NUM_THREADS``, else this process's share of the cores
    it may use: all of them, or 1/N each for N processes on one machine
    (``$LOCAL_WORLD_SIZE``, set by torchrun and accelerate)."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        return threads
    env = os.environ.get(THREADS_ENV)
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"${THREADS_ENV} must be a positive integer, got {env!r}") from None
        if value < 1:
            raise ValueError(f"${THREADS_ENV} must be a positive integer, got {env!r}")
        return value
    if hasattr(os, "sched_getaffinity"):  # the cores this process may use (containers, taskset)
        cores = len(os.sched_getaffinity(0)) or 1
    else:
        cores = os.cpu_count() or 1
    try:
        local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_processes = 1
    return max(1, cores // local_processes)


@dataclass(frozen=True)
class ThreadPolicy:
    """Intra-op threads for torch and for each onnxruntime session, and whether
    onnxruntime's threads spin between runs."""

    threads: int
    spinning: bool

    def apply_to_torch(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def session_options(self):
        """onnxruntime ``SessionOptions`` for a CPU session under this policy."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if self.spinning else "0"
        )
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return options


def thread_policy(threads: int | None = None, *, alongside_torch: bool = False) -> ThreadPolicy:
    """The policy for this process: every core (or ``threads``), and no onnxruntime
    spinning when torch also computes in it (``alongside_torch``)."""
    return ThreadPolicy(threads=cpu_threads(threads), spinning=not alongside_torch)
