"""``lusifer train RUN_FILE --estimate``: what each stage trains and how much GPU memory it
needs, before renting GPUs.

The backbones are built at full size on the meta device from their ``config.json`` (the
shipped run files' full-size backbones are bundled under ``resources/model_configs``, so
this runs offline), with the run's LoRA, connector and head, so the parameter counts are
exact. Memory is an estimate: weights, gradients and AdamW states per GPU for each
engine, plus activations from a per-layer model (a transformer layer keeps about
``s*b*h*(10 + 24*f/4h)`` activation bytes at 16 bits with SDPA attention; with gradient
checkpointing only each layer's input and one layer's recompute). Measure on a GPU
before trusting a tight fit.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Any

import torch

from ..config import LusiferConfig

GIB = 1024**3
# AdamW on fp32 trainable parameters: the weight, its gradient and two moments
_TRAINED_BYTES = {"weights": 4, "gradients": 4, "optimizer": 8}
# CUDA context, allocator slack, NCCL buffers
_OVERHEAD_GIB = 2.0
ENGINES = ("ddp", "fsdp", "zero2", "zero3")
#: The paper's trainable parameter counts (Section 4): stage 1 and stage 2.
PAPER_TRAINABLE = {"alignment": 12.4e6, "representation": 87.9e6}


def backbone_config(reference: str) -> Any:
    """A backbone's transformers config: bundled for the shipped run files' full-size
    backbones, else from its folder, bundled offline name or the hub."""
    from transformers import AutoConfig

    bundled = resources.files("lusifer") / "resources" / "model_configs"
    folder = bundled / reference.replace("/", "--")
    if folder.is_dir():
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        model_type = data.pop("model_type")
        return AutoConfig.for_model(model_type, **data)
    from ..backbones import resolve_backbone

    return AutoConfig.from_pretrained(resolve_backbone(reference))


@dataclasses.dataclass
class Shape:
    """What the activation model reads of a backbone."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int


@dataclasses.dataclass
class ModelCounts:
    """Parameter counts of a LUSIFER model built from its config (on the meta device)."""

    encoder: int
    encoder_lora: int
    target: int
    target_lora: int
    connector: int
    head: int
    encoder_shape: Shape
    target_shape: Shape

    @property
    def total(self) -> int:
        parts = (self.encoder, self.encoder_lora, self.target, self.target_lora)
        return sum(parts) + self.connector + self.head


def _shape(config: Any) -> Shape:
    return Shape(
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        vocab=config.vocab_size,
    )


def count_parameters(config: LusiferConfig) -> ModelCounts:
    """Build the encoder, target, LoRA, connector and head of ``config`` on the meta
    device (no memory, no weights) and count their parameters."""
    from transformers import AutoModel, AutoModelForCausalLM

    from ..backbones import is_decoder_config
    from ..model.connector import Connector
    from ..model.head import ProjectionHead
    from ..model.lora import add_lora

    def lora_and_base(module: torch.nn.Module, settings: Any) -> tuple[int, int]:
        base = sum(p.numel() for p in module.parameters())
        if settings is None:
            return base, 0
        wrapped = add_lora(module, settings)
        lora = sum(p.numel() for n, p in wrapped.named_parameters() if "lora_" in n)
        return base, lora

    encoder_config = backbone_config(config.encoder)
    target_config = backbone_config(config.target)
    with torch.device("meta"):
        try:
            encoder = AutoModel.from_config(encoder_config, add_pooling_layer=False)
        except TypeError:
            encoder = AutoModel.from_config(encoder_config)
        if is_decoder_config(target_config):
            target = AutoModelForCausalLM.from_config(target_config)
        else:
            target = AutoModel.from_config(target_config)
        encoder_base, encoder_lora = lora_and_base(encoder, config.encoder_lora)
        target_base, target_lora = lora_and_base(target, config.target_lora)
        connector = Connector(
            encoder_config.hidden_size,
            target_config.hidden_size,
            hidden_size=config.connector_hidden_size,
            activation=config.connector_activation,
            num_learned_tokens=config.num_learned_tokens,
            centering=config.connector_centering,
        )
        head = ProjectionHead(target_config.hidden_size) if config.projection_head else None
    return ModelCounts(
        encoder=encoder_base,
        encoder_lora=encoder_lora,
        target=target_base,
        target_lora=target_lora,
        connector=sum(p.numel() for p in connector.parameters()),
        head=sum(p.numel() for p in head.parameters()) if head is not None else 0,
        encoder_shape=_shape(encoder_config),
        target_shape=_shape(target_config),
    )


def _layer_bytes(shape: Shape, tokens: int, half: bool) -> float:
    """Activation bytes one layer keeps for ``tokens`` positions (batch x length)."""
    per_token = shape.hidden * (10 + 24 * shape.intermediate / (4 * shape.hidden))
    return tokens * per_token * (1 if half else 2)


def activation_bytes(shape: Shape, tokens: int, *, half: bool, checkpointing: bool) -> float:
    """Activation bytes of a backbone's forward over ``tokens`` positions kept for the
    backward pass."""
    layer = _layer_bytes(shape, tokens, half)
    if checkpointing:  # each layer's input, plus one layer recomputed at a time
        return shape.layers * tokens * shape.hidden * (2 if half else 4) + layer
    return shape.layers * layer


@dataclasses.dataclass
class StageEstimate:
    """One stage's counts and per-GPU memory (GiB) under each engine."""

    name: str
    objective: str
    trainable: int
    total: int
    rows_per_gpu: int
    per_forward: int  # rows (stage 1) or texts (stage 2) in one forward
    tokens_per_forward: int
    activation_gib: float
    memory_gib: dict[str, float]
    fits: dict[str, bool]
    micro_batch_that_fits: dict[str, int]


def _trainable(counts: ModelCounts, stage: Any) -> int:
    parts = [
        counts.connector if stage.train_connector else 0,
        counts.head if stage.train_head or stage.use_head else 0,
        counts.encoder_lora if stage.train_encoder_lora else 0,
        counts.target_lora if stage.train_target_lora else 0,
    ]
    return sum(parts)


def _state_bytes(counts: ModelCounts, trainable: int, engine: str, gpus: int) -> float:
    """Weights (fp32 as loaded), gradients and optimizer states on one GPU."""
    frozen = (counts.total - trainable) * 4
    trained = trainable * sum(_TRAINED_BYTES.values())
    if engine == "ddp":
        return frozen + trained
    if engine == "zero2":  # gradients and optimizer states sharded
        grads_and_states = trainable * (_TRAINED_BYTES["gradients"] + _TRAINED_BYTES["optimizer"])
        return frozen + trainable * _TRAINED_BYTES["weights"] + grads_and_states / gpus
    return (frozen + trained) / gpus  # fsdp (full shard) and zero3: everything sharded


def _stage_tokens(
    objective: str, stage: Any, config: LusiferConfig, run: Any, rows: int
) -> tuple[int, int, int]:
    """(texts, encoder tokens, target tokens) of one forward of ``rows`` rows."""
    length = run.max_length
    soft = length + config.num_learned_tokens
    if objective == "alignment":
        target_length = 1 + soft + stage.objectives.max_target_length
        return rows, rows * length, rows * target_length
    texts = rows * (1 + stage.num_positives + stage.num_negatives)
    return texts, texts * length, texts * soft


def estimate_stage(
    name: str,
    objective: str,
    stage: Any,
    counts: ModelCounts,
    config: LusiferConfig,
    run: Any,
    *,
    gpus: int,
    gpu_memory_gib: float,
) -> StageEstimate:
    """Counts and memory of one stage at its batch on ``gpus`` GPUs (each forward runs the
    local slice, or ``micro_batch`` rows or texts of it)."""
    trainable = _trainable(counts, stage)
    half = run.mixed_precision in ("bf16", "fp16")

    rows = max(1, stage.batch_size // gpus)
    local_texts = _stage_tokens(objective, stage, config, run, rows)[0]
    # one forward: ``size`` rows (stage 1) or texts (stage 2)
    whole = rows if objective == "alignment" else local_texts

    def activations(size: int) -> tuple[int, float]:
        texts, enc_tokens, tgt_tokens = _stage_tokens(objective, stage, config, run, rows)
        scale = size / whole
        enc_tokens, tgt_tokens = int(enc_tokens * scale), int(tgt_tokens * scale)
        total = activation_bytes(
            counts.encoder_shape, enc_tokens, half=half, checkpointing=run.gradient_checkpointing
        ) + activation_bytes(
            counts.target_shape, tgt_tokens, half=half, checkpointing=run.gradient_checkpointing
        )
        if objective == "alignment" and stage.objectives.lm > 0:
            # logits of the labelled positions: 16-bit out, fp32 for the loss and its grad
            labelled = size * stage.objectives.max_target_length
            total += labelled * counts.target_shape.vocab * (2 + 4 + 4)
        return enc_tokens + tgt_tokens, total

    size = min(stage.micro_batch or whole, whole)
    tokens, act = activations(size)
    memory, fits, fitting = {}, {}, {}
    for engine in ENGINES:
        state = _state_bytes(counts, trainable, engine, gpus)
        memory[engine] = (state + act) / GIB + _OVERHEAD_GIB
        fits[engine] = memory[engine] <= gpu_memory_gib
        free = (gpu_memory_gib - _OVERHEAD_GIB) * GIB - state
        best, candidate = 0, 1
        while candidate <= whole and activations(candidate)[1] <= free:
            best, candidate = candidate, candidate * 2
        fitting[engine] = best
    return StageEstimate(
        name=name,
        objective=objective,
        trainable=trainable,
        total=counts.total,
        rows_per_gpu=rows,
        per_forward=size,
        tokens_per_forward=tokens,
        activation_gib=act / GIB,
        memory_gib=memory,
        fits=fits,
        micro_batch_that_fits=fitting,
    )


def estimate_run(train_config: Any, *, gpus: int = 8, gpu_memory_gib: float = 80.0) -> list:
    """:class:`StageEstimate` of every stage of a run file."""
    if gpus < 1 or gpu_memory_gib <= 0:
        raise ValueError("gpus must be >= 1 and gpu_memory_gib > 0")
    config = train_config.model
    counts = count_parameters(config)
    return [
        estimate_stage(
            name,
            objective,
            stage,
            counts,
            config,
            train_config.run,
            gpus=gpus,
            gpu_memory_gib=gpu_memory_gib,
        )
        for name, objective, stage in train_config.stage_list()
    ]


def _millions(n: float) -> str:
    return f"{n / 1e6:,.1f}M"


def format_estimate(estimates: list[StageEstimate], *, gpus: int, gpu_memory_gib: float) -> str:
    """A Markdown report: parameters per stage beside the paper's, memory per GPU per engine."""
    lines = [
        f"Estimate for {gpus} GPU(s) of {gpu_memory_gib:g} GiB (weights fp32 as loaded, "
        "AdamW, activations from a per-layer model; measure before relying on a tight fit).",
        "",
        "| stage | objective | trainable | paper | total | rows/GPU | per forward "
        "| activations | " + " | ".join(f"{e} GiB" for e in ENGINES) + " | micro-batch that fits |",
        "|" + "---|" * (9 + len(ENGINES)),
    ]
    for est in estimates:
        paper = PAPER_TRAINABLE.get(est.objective)
        cells = [
            est.name,
            est.objective,
            _millions(est.trainable),
            _millions(paper) if paper else "-",
            _millions(est.total),
            str(est.rows_per_gpu),
            str(est.per_forward),
            f"{est.activation_gib:.1f}",
            *(f"{est.memory_gib[e]:.1f}" + ("" if est.fits[e] else " (no)") for e in ENGINES),
            ", ".join(f"{e} {est.micro_batch_that_fits[e]}" for e in ENGINES),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "A stage needs a smaller micro-batch where a cell says (no): stage 2 takes "
        "`micro_batch` (rows per forward in stage 1, texts per forward in stage 2; the "
        "gradient is accumulated to the whole batch's).",
    ]
    return "\n".join(lines)
