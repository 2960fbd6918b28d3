"""``lusifer train RUN_FILE --estimate --measure``: real steps at full shape, with random
weights, on this machine's accelerator, and the hours each stage would take.

Each stage's backbones are built at full width from their configs (as ``--estimate``
does) but with ``layers`` transformer layers each, with the stage's LoRA, connector and
head; a few optimizer steps run on random token ids at the stage's lengths and
micro-batch, under the run's mixed precision. Run at two depths, peak memory and step time
are extrapolated linearly to the full depth (a transformer's cost is per layer), and the
step time to the stage's forwards per step and its steps.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from types import SimpleNamespace
from typing import Any

import torch

from ..backbones import Backbone, is_decoder_config
from ..model import LusiferModel
from .estimate import GIB, backbone_config


@dataclasses.dataclass
class StageMeasure:
    """One stage measured at two depths and extrapolated to full depth."""

    name: str
    device: str
    layers: tuple[int, int]
    full_layers: int
    peak_gib: float  # at full depth, per process
    forward_seconds: float  # one micro-batch forward and backward, at full depth
    forwards_per_step: int
    steps: int | None  # None: the stage is measured in epochs (its steps depend on the data)

    @property
    def hours(self) -> float | None:
        if self.steps is None:
            return None
        return self.forward_seconds * self.forwards_per_step * self.steps / 3600


def _backbone(reference: str, layers: int) -> tuple[Backbone, int]:
    """A random-weight backbone of ``reference``'s width with ``layers`` layers, and its
    full depth."""
    from transformers import AutoModel, AutoModelForCausalLM

    config = copy.deepcopy(backbone_config(reference))
    full = config.num_hidden_layers
    config.num_hidden_layers = layers
    decoder = is_decoder_config(config)
    cls = AutoModelForCausalLM if decoder else AutoModel
    model = cls.from_config(config)
    # random token ids need no tokenizer; the LM layout reads only the BOS id
    ids = SimpleNamespace(
        bos_token_id=getattr(config, "bos_token_id", None),
        model_max_length=getattr(config, "max_position_embeddings", 512),
    )
    return Backbone(reference, reference, model, ids, decoder), full  # type: ignore[arg-type]


def _random_ids(rows: int, length: int, vocab: int, device: torch.device) -> torch.Tensor:
    return torch.randint(5, vocab - 1, (rows, length), device=device)


def _time_steps(
    model: LusiferModel, stage: Any, objective: str, run: Any, device: torch.device, steps: int
) -> tuple[float, float]:
    """(peak GiB, seconds per micro-batch forward+backward) over ``steps`` steps."""
    from .module import TrainingModule

    module = TrainingModule(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    length = run.max_length
    enc_vocab = model.encoder.config.vocab_size
    tgt_vocab = model.target.input_embeddings().num_embeddings
    rows = stage.micro_batch or max(1, stage.batch_size)  # one micro-batch per timed step
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=run.mixed_precision != "no"
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings = []
    for _ in range(steps + 1):  # the first step warms up
        tic = time.perf_counter()
        ids = _random_ids(rows, length, enc_vocab, device)
        mask = torch.ones_like(ids)
        with autocast:
            if objective == "alignment":
                target = _random_ids(rows, stage.objectives.max_target_length, tgt_vocab, device)
                loss = module(
                    "lm" if stage.objectives.lm > 0 else "distill",
                    encoder_ids=ids,
                    encoder_mask=mask,
                    target_ids=target,
                    target_mask=torch.ones_like(target),
                )
            else:
                loss = module("embed", input_ids=ids, attention_mask=mask, use_head=stage.use_head)
                loss = loss.float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - tic)
    peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else 0.0
    return peak, sum(timings[1:]) / steps


def measure_stage(
    train_config: Any,
    index: int,
    *,
    layers: tuple[int, int] = (1, 2),
    steps: int = 3,
    gpus: int = 1,
    device: str | torch.device | None = None,
) -> StageMeasure:
    """Measure stage ``index`` of a run file at ``layers`` depths (see the module)."""
    name, objective, stage = train_config.stage_list()[index]
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = []
    for depth in layers:
        encoder, enc_full = _backbone(train_config.model.encoder, depth)
        target, tgt_full = _backbone(train_config.model.target, depth)
        model = LusiferModel(copy.deepcopy(train_config.model), encoder, target).to(device)
        model.freeze(
            connector=stage.train_connector,
            head=stage.train_head and model.head is not None,
            encoder_lora=stage.train_encoder_lora and model.config.encoder_lora is not None,
            target_lora=stage.train_target_lora and model.config.target_lora is not None,
        )
        if train_config.run.gradient_checkpointing:
            for backbone in (model.encoder, model.target.model):
                backbone.gradient_checkpointing_enable({"use_reentrant": False})
        results.append(_time_steps(model, stage, objective, train_config.run, device, steps))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    full = max(enc_full, tgt_full)
    (lo_mem, lo_time), (hi_mem, hi_time) = results
    extra = (full - layers[1]) / (layers[1] - layers[0])
    rows = max(1, stage.batch_size // gpus)
    micro = stage.micro_batch or rows
    texts = 1 if objective == "alignment" else 1 + stage.num_positives + stage.num_negatives
    forwards = -(-rows * texts // micro)
    if objective != "alignment":
        forwards = int(forwards * 4 / 3)  # GradCache: a no-grad pass, then forward + backward
    return StageMeasure(
        name=name,
        device=str(device),
        layers=layers,
        full_layers=full,
        peak_gib=hi_mem + (hi_mem - lo_mem) * extra,
        forward_seconds=hi_time + (hi_time - lo_time) * extra,
        forwards_per_step=forwards,
        steps=stage.steps if stage.epochs is None else None,
    )


def format_measures(measures: list[StageMeasure]) -> str:
    """A Markdown table of measured stages."""
    lines = [
        "| stage | device | depths run | full depth | peak GiB | s per forward | forwards/step "
        "| steps | hours (one process) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in measures:
        lines.append(
            f"| {m.name} | {m.device} | {m.layers[0]}, {m.layers[1]} | {m.full_layers} "
            f"| {m.peak_gib:.1f} | {m.forward_seconds:.3f} | {m.forwards_per_step} "
            f"| {m.steps if m.steps is not None else 'epochs'} "
            f"| {f'{m.hours:.1f}' if m.hours is not None else '-'} |"
        )
    return "\n".join(lines)
