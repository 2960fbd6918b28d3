"""Export a ``LusiferModel`` (optionally int8) or a plain backbone to one ONNX graph, cached
and written atomically."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_file, temporary_path
from ..model.embedder import PlainEmbedder, sampled_digest
from ..model.lora import merge_lora
from ..model.lusifer import LusiferModel
from .graph import EncoderStates, ExportableLusifer

OPSET = 17
INPUT_NAMES = ["input_ids", "attention_mask", "pool_mask"]
PLAIN_INPUT_NAMES = ["input_ids", "attention_mask"]
# Bumped whenever the graph's inputs or outputs change, so cached exports are redone.
GRAPH_VERSION = 4  # 4: LoRA merged into the backbones' weights
PLAIN_GRAPH_VERSION = 1
ENCODER_GRAPH_VERSION = 2  # 2: LoRA merged
OUTPUT_NAME = "embedding"
# Sample texts for tracing: different lengths, so the traced graph keeps the padding mask.
_TRACE_TEXTS = ["A short one.", "A somewhat longer sentence, so that this batch needs padding."]


class OnnxExportError(RuntimeError):
    """The model could not be exported or quantised."""


def _graph_key(meta: dict) -> str:
    """A hash of what a graph is built from (``meta``) plus the opset and the library
    versions that trace it: cached files are named after it."""
    import transformers

    versions = {
        "opset": OPSET,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    text = json.dumps({**meta, **versions}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _cached_graph_path(prefix: str, meta: dict, export_dir: str | Path | None) -> Path:
    """``<export_dir or lusifer cache/onnx>/<prefix>-<key>.onnx`` for a graph of ``meta``."""
    from ..backbones.cache import cache_root

    folder = Path(export_dir) if export_dir is not None else cache_root() / "onnx"
    return folder / f"{prefix}-{_graph_key(meta)}.onnx"


def fingerprint(model: LusiferModel, *, use_head: bool) -> str:
    """A key that changes whenever the exported graph would: the model's own fingerprint
    (config, trained tensors), head choice, opset and library versions."""
    return _graph_key({"model": model.fingerprint(), "use_head": use_head, "graph": GRAPH_VERSION})


def pool_mask(enc) -> torch.Tensor:
    """The tokens a graph pools over for this tokenizer output: the attention mask,
    unless :meth:`LusiferModel.tokenize` left the instruction out (``pool_mask``)."""
    return enc["pool_mask"] if "pool_mask" in enc else enc["attention_mask"]


def _trace_to_file(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    names: list[str],
    what: str,
    output_axes: dict[int, str] | None = None,
) -> Path:
    """``torch.onnx.export`` of ``module`` on ``inputs`` (dynamic batch and length) to
    ``path``, atomically. The output's dynamic axes are ``output_axes`` (the batch only,
    unless given)."""
    axes = {name: {0: "batch", 1: "length"} for name in names}
    try:  # a read-only or full disk ends here too, as an OnnxExportError
        with (
            atomic_file(path, suffix=".onnx") as tmp,
            torch.no_grad(),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # tracer warnings about Python-side branches
            torch.onnx.export(
                module,
                inputs,
                str(tmp),
                dynamo=False,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes={**axes, OUTPUT_NAME: output_axes or {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
            )
            _keep_unused_inputs(tmp, inputs, names)
    except Exception as err:
        raise OnnxExportError(f"exporting {what} to ONNX failed: {err}") from err
    return path


def _keep_unused_inputs(path: Path, inputs: tuple[torch.Tensor, ...], names: list[str]) -> None:
    """Declare again the inputs the exporter dropped because the graph never reads them
    (``pool_mask`` of a ``cls``-pooled model), so every graph takes the same feeds."""
    import onnx

    # weights in an external data file stay there: only the graph is read and rewritten
    model = onnx.load(str(path), load_external_data=False)
    declared = {i.name for i in model.graph.input}
    missing = [i for i, name in enumerate(names) if name not in declared]
    if not missing:
        return
    elem = {torch.int64: onnx.TensorProto.INT64, torch.int32: onnx.TensorProto.INT32}
    for i in missing:
        info = onnx.helper.make_tensor_value_info(
            names[i], elem[inputs[i].dtype], ["batch", "length"]
        )
        model.graph.input.insert(min(i, len(model.graph.input)), info)
    onnx.save(model, str(path))


def export_onnx(model: LusiferModel, path: str | Path, *, use_head: bool = False) -> Path:
    """Write the fp32 graph ``input_ids, attention_mask, pool_mask -> embedding`` to
    ``path`` (dynamic batch and length), atomically."""
    was_training = model.training
    device = model.device
    model.eval().to("cpu")
    try:
        wrapper = ExportableLusifer(lora_merged_copy(model), use_head=use_head).eval()
        enc = model.tokenize(_TRACE_TEXTS, instruction="Retrieve passages", kind="query")
        inputs = (enc["input_ids"], enc["attention_mask"], pool_mask(enc))
        return _trace_to_file(wrapper, inputs, Path(path), INPUT_NAMES, model.name)
    finally:
        model.to(device).train(was_training)


def lora_merged_copy(model: LusiferModel) -> LusiferModel:
    """A copy of ``model`` whose LoRA adapters are folded into the backbones' weights: the
    same function with one MatMul per linear layer instead of three (base, A, B), which
    runs faster and quantises as one weight. ``model`` itself is left as it is (it may
    still be trained); the copy costs the backbones' memory once more while exporting."""
    merged = copy.deepcopy(model)
    merged.encoder = merge_lora(merged.encoder)
    merged.target.model = merge_lora(merged.target.model)
    return merged


def plain_export_path(embedder: PlainEmbedder, export_dir: str | Path | None = None) -> Path:
    """Where :func:`ensure_plain_exported` keeps ``embedder``'s graph: named after the
    backbone reference, its pooling, its (sampled) weights, the opset and library versions;
    prefixes and max length are applied outside the graph and are not part of the key."""
    meta = {
        "reference": embedder.reference,
        "pooling": embedder.pooling,
        "weights": embedder.weights_digest(),
        "graph": PLAIN_GRAPH_VERSION,
    }
    return _cached_graph_path("plain", meta, export_dir)


def ensure_plain_exported(embedder: PlainEmbedder, *, export_dir: str | Path | None = None) -> Path:
    """The cached fp32 graph ``input_ids, attention_mask -> embedding`` of a plain
    (encoder-only) backbone, in ``<lusifer cache>/onnx`` unless ``export_dir`` is given.
    Decoder backbones used alone are not exported (they stay on torch)."""
    if embedder.backbone.is_decoder:
        raise OnnxExportError(
            f"{embedder.reference} is a decoder; decoders used alone run on torch only"
        )
    path = plain_export_path(embedder, export_dir)
    if path.is_file():
        return path
    was_training = embedder.training
    device = next(embedder.parameters()).device
    embedder.eval().to("cpu")
    enc = embedder.tokenize(_TRACE_TEXTS, kind="query")
    inputs = (enc["input_ids"], enc["attention_mask"])
    try:
        return _trace_to_file(embedder, inputs, path, PLAIN_INPUT_NAMES, embedder.reference)
    finally:
        embedder.to(device).train(was_training)


def encoder_export_path(model: LusiferModel, export_dir: str | Path | None = None) -> Path:
    """Where :func:`ensure_encoder_exported` keeps ``model``'s encoder graph: named after
    the encoder, its (sampled) weights with any LoRA, the opset and library versions."""
    meta = {
        "encoder": model.config.encoder,
        "weights": sampled_digest(model.encoder),
        "graph": ENCODER_GRAPH_VERSION,
    }
    return _cached_graph_path("encoder", meta, export_dir)


def ensure_encoder_exported(model: LusiferModel, *, export_dir: str | Path | None = None) -> Path:
    """The cached fp32 graph ``input_ids, attention_mask -> token states`` of ``model``'s
    encoder as it is now (LoRA included), in ``<lusifer cache>/onnx`` unless
    ``export_dir`` is given. The model must be on CPU; its training mode is kept."""
    if model.device.type != "cpu":
        raise OnnxExportError(f"the encoder graph is exported from a CPU model, not {model.device}")
    path = encoder_export_path(model, export_dir)
    if path.is_file():
        return path
    enc = model.tokenize(_TRACE_TEXTS, kind="query")
    inputs = (enc["input_ids"], enc["attention_mask"])
    # a LoRA-merged copy: the model's own encoder (maybe in training mode) is not touched
    encoder = merge_lora(copy.deepcopy(model.encoder)).eval()
    return _trace_to_file(
        EncoderStates(encoder),
        inputs,
        path,
        PLAIN_INPUT_NAMES,
        f"the encoder of {model.name}",
        output_axes={0: "batch", 1: "length"},
    )


# Which MatMuls stay float32 (v3). Dynamic int8 quantises each MatMul's input with one
# scale for the whole batch, so a layer whose inputs hold a few huge values (outlier
# channels or tokens) puts every ordinary value on a coarse grid. The policy measures each
# weight MatMul's input spread, (max - min) / RMS over the calibration texts, and keeps
# the widest INT8_FLOAT_SHARE of them in float32. On the trained demo model (e5-small ->
# MiniLM, 110 weight MatMuls) the three widest are e5's FFN output projections of layers
# 4, 0 and 5, which a one-at-a-time probe also found the costliest to quantise; keeping
# 2% (two of them) instead of 3% measured worse (benchmarks/int8_policy.py,
# docs/research/benchmarks.md).
INT8_POLICY = "v3"
INT8_FLOAT_SHARE = 0.03


def matmul_input_spread(
    model_path: str | Path, feeds: list[dict[str, np.ndarray]]
) -> dict[str, float]:
    """For every MatMul with a constant weight in the graph at ``model_path``: the spread
    (max - min) / RMS of its input over the real (unpadded) tokens of ``feeds``, run one
    at a time so that a large model's activations need not all be held at once."""
    import onnx
    import onnxruntime as ort

    graph_model = onnx.load(str(model_path), load_external_data=False)
    graph = graph_model.graph
    weights = {init.name for init in graph.initializer}
    inputs = {
        node.name: node.input[0]
        for node in graph.node
        if node.op_type == "MatMul" and node.input[1] in weights
    }
    declared = {out.name for out in graph.output}
    for tensor in sorted(set(inputs.values()) - declared):
        graph.output.append(
            onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None)
        )
    # written beside the source, so that weights kept in an external data file resolve
    augmented = temporary_path(model_path, ".onnx")
    stats: dict[str, list[float]] = {}  # tensor -> [min, max, sum of squares, count]
    try:
        onnx.save(graph_model, str(augmented))
        session = ort.InferenceSession(str(augmented), providers=["CPUExecutionProvider"])
        names = [out.name for out in session.get_outputs()]
        wanted = set(inputs.values())
        for feed in feeds:
            real = feed["attention_mask"].astype(bool)
            for name, value in zip(names, session.run(None, feed), strict=True):
                if name not in wanted:
                    continue
                x = value[real] if value.shape[:2] == real.shape else value
                x = x.astype(np.float64)
                low, high, squares, count = stats.get(name, [np.inf, -np.inf, 0.0, 0])
                stats[name] = [
                    min(low, x.min()),
                    max(high, x.max()),
                    squares + np.square(x).sum(),
                    count + x.size,
                ]
    finally:
        augmented.unlink(missing_ok=True)
    spread = {}
    for node, tensor in inputs.items():
        low, high, squares, count = stats[tensor]
        spread[node] = float((high - low) / max(np.sqrt(squares / count), 1e-12))
    return spread


def int8_reduce_range() -> bool:
    """Whether int8 weights take 7 bits on this CPU. x86 without VNNI multiplies uint8
    activations by int8 weights in 16-bit pair sums that saturate; onnxruntime's
    quantisation guide recommends ``reduce_range`` there. Measured on such a machine
    (AVX2, no VNNI; untrained e5-small -> MiniLM, 200 sentences): cosine to float32 mean
    0.986 -> 0.992, worst 0.971 -> 0.986."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False  # ARM's int8 dot products do not saturate
    flags = _cpu_flags()
    if flags is None:
        return True  # an x86 CPU we cannot inspect (macOS, Windows): the safe setting
    return not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux), else None."""
    try:
        found = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        return None
    return set(found[1].split()) if found else None


def int8_tag() -> str:
    """What names an int8 graph on this machine (its policy and weight bits): the graph's
    file name and the key that keeps its evaluation results apart from others'."""
    return f"int8-{INT8_POLICY}" + ("-r7" if int8_reduce_range() else "")


def int8_excluded_nodes(spread: dict[str, float], share: float = INT8_FLOAT_SHARE) -> list[str]:
    """The MatMuls kept in float32: the widest-spread ``share`` of them (at least one)."""
    widest = sorted(spread, key=spread.__getitem__, reverse=True)
    return widest[: max(1, round(share * len(widest)))]


def calibration_feeds(model: LusiferModel) -> list[dict[str, np.ndarray]]:
    """The backend calibration's mixed-language texts as one-text graph feeds."""
    from .samples import CALIBRATION_TEXTS

    feeds = []
    for text in CALIBRATION_TEXTS:
        enc = model.tokenize([text], kind="query")
        feed = (enc["input_ids"], enc["attention_mask"], pool_mask(enc))
        feeds.append(
            {n: t.numpy().astype(np.int64) for n, t in zip(INPUT_NAMES, feed, strict=True)}
        )
    return feeds


def quantize_int8(
    source: str | Path, path: str | Path, excluded: list[str], *, reduce_range: bool = False
) -> Path:
    """Dynamic int8 quantisation (per-channel weights; activations quantised on the fly),
    atomically; the MatMuls named in ``excluded`` stay float32 (:func:`ensure_exported`
    names them by ``INT8_POLICY``); ``reduce_range`` gives weights 7 bits
    (:func:`int8_reduce_range`).

    onnxruntime writes a shape-inferred copy of its input beside it under a fixed name
    (``<stem>-inferred.onnx``) and deletes it afterwards, so two processes quantising the
    same graph in a shared folder (``lusifer encode --backend onnx`` under torchrun) would
    delete or read each other's copy. It is given a link to ``source`` in a private
    temporary folder instead (a hidden ``.<name>.tmp-<pid>-...`` beside ``path``, removed
    afterwards), so that copy lands there."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = Path(path)
    quiet = logging.getLogger()
    level = quiet.level
    private = temporary_path(path)
    try:
        quiet.setLevel(logging.ERROR)  # onnxruntime's "consider pre-processing" notice
        private.mkdir(parents=True)
        own = private / Path(source).name
        try:
            os.symlink(Path(source).resolve(), own)
        except OSError:  # no symlinks here (e.g. Windows without the privilege)
            shutil.copyfile(source, own)
        with atomic_file(path, suffix=".onnx") as tmp:
            quantize_dynamic(
                str(own),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=excluded,
                reduce_range=reduce_range,
            )
    except Exception as err:
        raise OnnxExportError(f"int8 quantisation of {source} failed: {err}") from err
    finally:
        quiet.setLevel(level)
        shutil.rmtree(private, ignore_errors=True)
    return path


def default_export_dir(model: LusiferModel, source: str | Path | None = None) -> Path:
    """``<model folder>/onnx`` when the model came from a writable folder, else
    ``<lusifer cache>/onnx``."""
    if source is not None:
        folder = Path(source).expanduser()
        if folder.is_dir() and os.access(folder, os.W_OK):
            return folder / "onnx"
    from ..backbones.cache import cache_root

    return cache_root() / "onnx"


def ensure_exported(
    model: LusiferModel,
    *,
    quantize: str | None = None,
    use_head: bool = False,
    export_dir: str | Path | None = None,
    source: str | Path | None = None,
) -> Path:
    """The cached ONNX file for ``model`` (exported on first use)."""
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    folder = Path(export_dir) if export_dir is not None else default_export_dir(model, source)
    key = fingerprint(model, use_head=use_head)
    fp32 = folder / f"lusifer-{key}.onnx"
    if not fp32.is_file():
        export_onnx(model, fp32, use_head=use_head)
    if quantize is None:
        return fp32
    int8 = folder / f"lusifer-{key}.{int8_tag()}.onnx"
    if not int8.is_file():
        spread = matmul_input_spread(fp32, calibration_feeds(model))
        excluded = int8_excluded_nodes(spread)
        quantize_int8(fp32, int8, excluded, reduce_range=int8_reduce_range())
    return int8
