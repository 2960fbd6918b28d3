"""``OnnxLusifer`` (a LUSIFER model) and ``OnnxPlainEmbedder`` (a backbone alone) run by
onnxruntime on CPU, with the torch model's tokenizer, prompts and batching loop."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BatchEncoding

from ..model.embedder import Embedder, PlainEmbedder
from ..model.lusifer import LusiferModel
from ..model.prompts import PrefixProcessor
from ..threads import thread_policy
from .export import (
    INPUT_NAMES,
    PLAIN_INPUT_NAMES,
    ensure_encoder_exported,
    ensure_exported,
    ensure_plain_exported,
    pool_mask,
)


def cpu_session(onnx_path: Path, threads: int | None, *, alongside_torch: bool = False):
    """An onnxruntime CPU session with every graph optimisation, under the process's
    threading policy (:mod:`lusifer.threads`)."""
    import onnxruntime as ort

    options = thread_policy(threads, alongside_torch=alongside_torch).session_options()
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


class _OnnxGraph(Embedder):
    """What both ONNX runners keep of the torch model or embedder they were exported from:
    its fingerprint, processor (prompts and tokenizer), width and name, and a CPU session
    of the graph. ``device``/``dtype`` exist for signature parity: only CPU float32
    graphs are run."""

    def _open(
        self,
        onnx_path: str | Path,
        source: LusiferModel | PlainEmbedder,
        threads: int | None,
        tag: str = "onnx",
    ) -> None:
        self.onnx_path = Path(onnx_path)
        self._fingerprint = source.fingerprint()
        self.processor = source.processor
        self._embedding_size = source.embedding_size
        self.name = f"{source.name} ({tag})"
        self.session = cpu_session(self.onnx_path, threads)

    @property
    def embedding_size(self) -> int:
        return self._embedding_size

    def fingerprint(self) -> str:
        """The torch model's fingerprint: both give the same embeddings."""
        return self._fingerprint

    def tokenize(self, texts: list[str], **kwargs: Any) -> BatchEncoding:
        """The torch model's prompts and tokenization (its :attr:`processor`)."""
        return self.processor(texts, **kwargs)

    @contextlib.contextmanager
    def running(
        self, device: str | torch.device | None, dtype: torch.dtype | None
    ) -> Iterator[None]:
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"the ONNX backend runs on CPU only, got device={device!r}")
        yield

    def _run(self, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        arrays = {name: t.numpy().astype(np.int64) for name, t in feeds.items()}
        return torch.from_numpy(self.session.run(None, arrays)[0])


class OnnxLusifer(_OnnxGraph):
    """Same ``encode`` contract as :class:`LusiferModel`, run through onnxruntime.

    Build with :meth:`from_model` (a loaded model) or :meth:`from_pretrained` (a folder);
    the graph is exported on first use and cached (see :func:`ensure_exported`).
    """

    own_route = "connector"

    def __init__(
        self,
        onnx_path: str | Path,
        model: LusiferModel,
        *,
        threads: int | None = None,
        use_head: bool = False,
    ) -> None:
        int8 = re.search(r"\.(int8[^.]*)\.onnx$", Path(onnx_path).name)
        # the quantisation (and its policy) keys cached evaluation results apart from fp32's
        self.quantize = int8[1] if int8 else None
        self._open(onnx_path, model, threads, "onnx, int8" if int8 else "onnx")
        self.config = model.config
        self.use_head = use_head
        # a routed model's native route: the target alone, on its own (fp32) graph
        self.native: OnnxPlainEmbedder | None = None
        self.router = None
        if model.routed:
            self.native = OnnxPlainEmbedder.from_embedder(
                model.native_route, threads=threads, export_dir=Path(onnx_path).parent
            )
            self.router = model.router

    @classmethod
    def from_model(
        cls,
        model: LusiferModel,
        *,
        quantize: str | None = None,
        threads: int | None = None,
        use_head: bool = False,
        export_dir: str | Path | None = None,
        source: str | Path | None = None,
    ) -> OnnxLusifer:
        if quantize and model.target.is_decoder:
            warnings.warn(
                "int8 with a decoder (LLM) target is approximate: on e5-small -> SmolLM2 with an "
                "untrained connector it gave cosine 0.87-0.999 to fp32 (encoder targets: "
                ">= 0.99). Check retrieval quality before relying on it.",
                stacklevel=2,
            )
        path = ensure_exported(
            model, quantize=quantize, use_head=use_head, export_dir=export_dir, source=source
        )
        return cls(path, model, threads=threads, use_head=use_head)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        quantize: str | None = None,
        threads: int | None = None,
        use_head: bool = False,
        export_dir: str | Path | None = None,
    ) -> OnnxLusifer:
        model = LusiferModel.from_pretrained(directory)
        return cls.from_model(
            model,
            quantize=quantize,
            threads=threads,
            use_head=use_head,
            export_dir=export_dir,
            source=directory,
        )

    @property
    def routed(self) -> bool:
        return self.native is not None

    def native_embedder(self) -> OnnxPlainEmbedder | None:
        return self.native

    def check_use_head(self, use_head: bool | None, route: str) -> bool:
        if use_head is not None and use_head != self.use_head:
            raise ValueError(
                f"this ONNX graph was exported with use_head={self.use_head}; re-export for "
                f"use_head={use_head}"
            )
        return self.use_head

    def embed_tokens(self, enc: BatchEncoding, *, use_head: bool = False) -> torch.Tensor:
        feeds = (enc["input_ids"], enc["attention_mask"], pool_mask(enc))
        return self._run(dict(zip(INPUT_NAMES, feeds, strict=True)))


class OnnxPlainEmbedder(_OnnxGraph):
    """Same ``encode`` contract as :class:`PlainEmbedder` (a baseline backbone alone, e.g.
    the target or the encoder), run through onnxruntime; encoder backbones only."""

    processor: PrefixProcessor

    def __init__(
        self, onnx_path: str | Path, embedder: PlainEmbedder, *, threads: int | None = None
    ) -> None:
        self._open(onnx_path, embedder, threads)
        self.reference = embedder.reference

    @property
    def prefixes(self) -> dict[str, str]:
        return self.processor.prefixes

    @classmethod
    def from_embedder(
        cls,
        embedder: PlainEmbedder,
        *,
        threads: int | None = None,
        export_dir: str | Path | None = None,
    ) -> OnnxPlainEmbedder:
        """Export ``embedder`` on first use (cached, see :func:`ensure_plain_exported`);
        raises ``OnnxExportError`` for a decoder backbone."""
        path = ensure_plain_exported(embedder, export_dir=export_dir)
        return cls(path, embedder, threads=threads)

    def embed_tokens(self, enc: BatchEncoding, *, use_head: bool = False) -> torch.Tensor:
        return self._run({name: enc[name] for name in PLAIN_INPUT_NAMES})


class OnnxEncoderStates:
    """A frozen encoder's token states run by onnxruntime: set as
    ``TrainingModule.encoder_runner`` by training stages that train none of the encoder on
    CPU (``run.frozen_encoder_backend``); ``benchmarks/train_speed.py`` measures it
    against torch. The graph holds the encoder's weights as they were when it was built."""

    def __init__(
        self,
        model: LusiferModel,
        *,
        threads: int | None = None,
        export_dir: str | Path | None = None,
    ) -> None:
        self.onnx_path = ensure_encoder_exported(model, export_dir=export_dir)
        # torch computes the rest of each training step between this graph's runs
        self.session = cpu_session(self.onnx_path, threads, alongside_torch=True)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {
            "input_ids": input_ids.cpu().numpy().astype(np.int64),
            "attention_mask": attention_mask.cpu().numpy().astype(np.int64),
        }
        return torch.from_numpy(self.session.run(None, feeds)[0])
