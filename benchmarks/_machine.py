"""This machine's speed, measured the same way by every benchmark that reports it."""

from __future__ import annotations

import time


def matmul_gflops(n: int = 1024, seconds: float = 2.0) -> float:
    """fp32 n x n matmuls per second on this machine, in GFLOP/s (torch, all threads)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2 * n**3 * done / (time.perf_counter() - start) / 1e9
