"""The backend ``auto``: whichever of torch and onnxruntime (fp32) encodes a model's texts
faster on the machine at hand, measured once in a few seconds and kept in the lusifer
cache.

Which one wins depends on the machine, the thread count and the model: on a 2-core x86
box onnxruntime fp32 was about twice torch's speed at one thread and slower than torch at
two (``benchmarks/encode_speed.py`` prints both), so a figure from another machine
cannot decide it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import atomic_write
from ..threads import cpu_threads
from .samples import CALIBRATION_TEXTS

logger = logging.getLogger(__name__)

# 2: torch encodes LUSIFER models with LoRA merged (LusiferModel.merge_and_unload)
CACHE_VERSION = 2


@dataclass
class Calibration:
    """The backend chosen, each candidate's texts/s, and whether this was read from the
    cache rather than measured now."""

    choice: str
    texts_per_s: dict[str, float] = field(default_factory=dict)
    cached: bool = False

    def describe(self) -> str:
        rates = ", ".join(f"{k} {v:.0f} texts/s" for k, v in self.texts_per_s.items())
        how = "measured earlier on this machine" if self.cached else "measured now"
        return f"backend auto -> {self.choice} ({rates}; {how})"


def machine_key(threads: int) -> dict[str, Any]:
    """What the measurement depends on besides the model."""
    import onnxruntime
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _cache_file(fingerprint: str, threads: int) -> Path:
    from ..backbones.cache import cache_root
    from .export import ENCODER_GRAPH_VERSION, GRAPH_VERSION, PLAIN_GRAPH_VERSION

    # a changed graph (e.g. LoRA merged in version 4) runs at another speed: measure again
    graphs = [GRAPH_VERSION, PLAIN_GRAPH_VERSION, ENCODER_GRAPH_VERSION]
    key = json.dumps([CACHE_VERSION, graphs, fingerprint, machine_key(threads)], sort_keys=True)
    return cache_root() / "calibration" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def texts_per_second(encoder: Any, texts: tuple[str, ...], batch_size: int) -> float:
    """One timed ``encode`` of ``texts`` (after the caller's warm-up)."""
    start = time.perf_counter()
    encoder.encode(list(texts), batch_size=batch_size, show_progress=False)
    return len(texts) / (time.perf_counter() - start)


def calibrate(
    candidates: dict[str, Any],
    *,
    rounds: int = 3,
    batch_size: int = 16,
    texts: tuple[str, ...] = CALIBRATION_TEXTS,
) -> dict[str, float]:
    """Each candidate's best texts/s over ``rounds``, the candidates taking turns so that
    a busy moment of the machine does not fall on one of them only."""
    for encoder in candidates.values():  # warm-up: first-call allocations, lazy init
        encoder.encode(list(texts[:batch_size]), batch_size=batch_size, show_progress=False)
    best = dict.fromkeys(candidates, 0.0)
    for _ in range(rounds):
        for name, encoder in candidates.items():
            best[name] = max(best[name], texts_per_second(encoder, texts, batch_size))
    return best


def fastest(
    torch_embedder: Any,
    build_onnx: Callable[[], Any],
    *,
    threads: int | None = None,
    use_cache: bool = True,
) -> tuple[Any, Calibration]:
    """The faster of ``torch_embedder`` and the onnxruntime embedder ``build_onnx()`` makes
    (built only when measuring or when the cached choice is onnx). Ties go to torch, the
    reference path."""
    n_threads = cpu_threads(threads)
    path = _cache_file(torch_embedder.fingerprint(), n_threads)
    if use_cache and path.is_file():
        try:
            record = json.loads(path.read_text())
            calibration = Calibration(record["choice"], record["texts_per_s"], cached=True)
        except (ValueError, KeyError, TypeError, OSError):
            calibration = None  # a damaged record is measured again
        if calibration is not None and calibration.choice in ("torch", "onnx"):
            embedder = torch_embedder if calibration.choice == "torch" else build_onnx()
            logger.info(calibration.describe())
            return embedder, calibration
    onnx_embedder = build_onnx()
    rates = calibrate({"torch": torch_embedder, "onnx": onnx_embedder})
    choice = "onnx" if rates["onnx"] > rates["torch"] else "torch"
    calibration = Calibration(choice, {k: round(v, 2) for k, v in rates.items()})
    record = {"choice": choice, "texts_per_s": calibration.texts_per_s}
    record["machine"] = machine_key(n_threads)
    try:
        atomic_write(path, json.dumps(record, indent=2))
    except OSError as err:  # a read-only cache: the choice still holds for this process
        logger.warning("could not keep the backend calibration in %s: %s", path, err)
    logger.info(calibration.describe())
    return (onnx_embedder if choice == "onnx" else torch_embedder), calibration
