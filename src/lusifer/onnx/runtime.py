"""``OnnxLusifer`` (a LUSIFER model) and ``OnnxPlainEmbedder`` (a backbone alone) run by
onnxruntime on CPU, with the torch model's tokenizer, prompts and batching loop."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch

from ..encoding import encode_in_batches, validate_options
from ..model.embedder import PlainEmbedder
from ..model.lusifer import LusiferModel
from ..model.routing import check_route, encode_routed
from ..threads import thread_policy
from ..types import TextKind
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


def _check_cpu(device: str | None) -> None:
    if device not in (None, "cpu"):
        raise ValueError(f"the ONNX backend runs on CPU only, got device={device!r}")


class _OnnxGraph:
    """What both ONNX runners keep of the torch model or embedder they were exported from:
    its fingerprint, tokenizer, width and name, and a CPU session of the graph."""

    def _open(
        self,
        onnx_path: str | Path,
        source: LusiferModel | PlainEmbedder,
        threads: int | None,
        tag: str = "onnx",
    ) -> None:
        self.onnx_path = Path(onnx_path)
        self._fingerprint = source.fingerprint()
        self.tokenizer = source.tokenizer
        self.embedding_size = source.embedding_size
        self.name = f"{source.name} ({tag})"
        self.session = cpu_session(self.onnx_path, threads)

    def fingerprint(self) -> str:
        """The torch model's fingerprint: both give the same embeddings."""
        return self._fingerprint


class OnnxLusifer(_OnnxGraph):
    """Same ``encode`` contract as :class:`LusiferModel`, run through onnxruntime.

    Build with :meth:`from_model` (a loaded model) or :meth:`from_pretrained` (a folder);
    the graph is exported on first use and cached (see :func:`ensure_exported`).
    """

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

    # The torch model's prompt formatting and tokenisation, reused as is.
    tokenize = LusiferModel.tokenize
    uses_instructions = LusiferModel.uses_instructions

    def embed_tokens(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, pool_mask: np.ndarray
    ) -> np.ndarray:
        feeds = dict(zip(INPUT_NAMES, (input_ids, attention_mask, pool_mask), strict=True))
        return self.session.run(None, {k: v.astype(np.int64) for k, v in feeds.items()})[0]

    def encode(
        self,
        texts: str | list[str],
        *,
        instruction: str | None = None,
        kind: TextKind = "query",
        batch_size: int = 32,
        max_length: int | None = None,
        normalize: bool = True,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        show_progress: bool = False,
        convert_to: str = "numpy",
        use_head: bool | None = None,
        route: str | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts (float32 rows in input order), on the routes of
        :meth:`LusiferModel.encode`. ``device``/``dtype`` exist for signature parity: only
        CPU float32 graphs are run."""
        instruction = validate_options(instruction, kind, max_length)
        _check_cpu(device)
        if use_head is not None and use_head != self.use_head:
            raise ValueError(
                f"this ONNX graph was exported with use_head={self.use_head}; re-export for "
                f"use_head={use_head}"
            )
        del dtype
        route = check_route(route, routed=self.native is not None)
        options = dict(
            instruction=instruction,
            kind=kind,
            batch_size=batch_size,
            max_length=max_length,
            normalize=normalize,
            show_progress=show_progress,
        )
        native = self.native
        return encode_routed(
            texts,
            route,
            router=self.router,
            encode_native=lambda batch, to: native.encode(batch, convert_to=to, **options),
            encode_connector=lambda batch, to: self._encode_connector(
                batch, convert_to=to, **options
            ),
            dim=self.embedding_size,
            convert_to=convert_to,
        )

    def _encode_connector(
        self,
        texts: str | list[str],
        *,
        instruction: str | None,
        kind: TextKind,
        batch_size: int,
        max_length: int | None,
        normalize: bool,
        show_progress: bool,
        convert_to: str,
    ) -> np.ndarray | torch.Tensor:

        def embed_batch(batch: list[str]) -> torch.Tensor:
            enc = self.tokenize(batch, instruction=instruction, kind=kind, max_length=max_length)
            out = self.embed_tokens(
                enc["input_ids"].numpy(), enc["attention_mask"].numpy(), pool_mask(enc).numpy()
            )
            return torch.from_numpy(out)

        return encode_in_batches(
            texts,
            embed_batch,
            batch_size=batch_size,
            normalize=normalize,
            show_progress=show_progress,
            convert_to=convert_to,
            desc="Encoding (LUSIFER, onnx)",
        )


class OnnxPlainEmbedder(_OnnxGraph):
    """Same ``encode`` contract as :class:`PlainEmbedder` (a baseline backbone alone, e.g.
    the target or the encoder), run through onnxruntime; encoder backbones only."""

    uses_instructions = PlainEmbedder.uses_instructions

    def __init__(
        self, onnx_path: str | Path, embedder: PlainEmbedder, *, threads: int | None = None
    ) -> None:
        self._open(onnx_path, embedder, threads)
        self.prefixes = embedder.prefixes
        self.max_length = embedder.max_length
        self.reference = embedder.reference

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

    # The torch embedder's prefixes and tokenisation, reused as is.
    tokenize = PlainEmbedder.tokenize

    def encode(
        self,
        texts: str | list[str],
        *,
        instruction: str | None = None,
        kind: TextKind = "query",
        batch_size: int = 32,
        max_length: int | None = None,
        normalize: bool = True,
        device: str | None = None,
        show_progress: bool = False,
        convert_to: str = "numpy",
    ) -> np.ndarray | torch.Tensor:
        """Embed texts with the backbone alone (``instruction`` is ignored unless a prefix
        asks for it)."""
        instruction = validate_options(instruction, kind, max_length)
        _check_cpu(device)

        def embed_batch(batch: list[str]) -> torch.Tensor:
            enc = self.tokenize(batch, kind=kind, max_length=max_length, instruction=instruction)
            feeds = {n: enc[n].numpy().astype(np.int64) for n in PLAIN_INPUT_NAMES}
            return torch.from_numpy(self.session.run(None, feeds)[0])

        return encode_in_batches(
            texts,
            embed_batch,
            batch_size=batch_size,
            normalize=normalize,
            show_progress=show_progress,
            convert_to=convert_to,
            desc=f"Encoding ({self.name})",
        )


class OnnxEncoderStates:
    """A frozen encoder's token states run by onnxruntime: set as
    ``LusiferModel.encoder_runner`` by training stages that train none of the encoder on
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
