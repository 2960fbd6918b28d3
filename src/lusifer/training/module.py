"""What the distributed wrapper wraps: the model's forward for each training objective,
reading the encoder through an onnxruntime runner when a stage keeps it frozen on CPU."""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..model import LusiferModel
from .bucketing import embed_by_length
from .collate import ContrastiveInputs
from .config import RunConfig, StageConfig
from .losses import distillation_loss, lm_alignment_loss, target_own_embedding

EncoderRunner = Any  # (input_ids, attention_mask) -> encoder token states


class TrainingModule(nn.Module):
    """What the distributed wrapper sees: one forward per objective, so gradient
    synchronisation (DDP/FSDP) always runs through ``forward``. ``encoder_runner`` (an
    onnxruntime session of a frozen encoder, or None for the torch encoder) gives the
    encoder's token states."""

    def __init__(self, model: LusiferModel, encoder_runner: EncoderRunner = None) -> None:
        super().__init__()
        self.model = model
        self.encoder_runner = encoder_runner

    def encoder_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.encoder_runner is not None:
            return self.encoder_runner(ids, mask).to(ids.device)
        return self.model.encoder_states(ids, mask)

    def forward(self, objective: str, **batch: Any) -> torch.Tensor:
        model = self.model
        if objective == "embed":
            states = self.encoder_states(batch["input_ids"], batch["attention_mask"])
            return model.embed_states(
                states, batch["attention_mask"], batch.get("pool_mask"), use_head=batch["use_head"]
            )
        if objective in ("lm", "distill"):
            ids, mask = batch.pop("encoder_ids"), batch.pop("encoder_mask")
            soft, soft_mask = model.connect(self.encoder_states(ids, mask), mask)
            loss = lm_alignment_loss if objective == "lm" else distillation_loss
            return loss(model, soft, soft_mask, **batch)
        if objective == "teacher":
            return target_own_embedding(model, **batch)
        if objective == "native":  # a routed model's native route (no gradient reaches it)
            with torch.no_grad():
                return model.native_route(batch["input_ids"], batch["attention_mask"])
        raise ValueError(f"unknown objective {objective!r}")


def trained_names(module: nn.Module, model: LusiferModel) -> dict[str, str]:
    """``module``'s state-dict name of each trained tensor -> its key in
    :meth:`LusiferModel.trained_state_dict` (matched by storage, before any wrapping), so
    a sharded engine's gathered full state dict can be read back in that format."""
    keys = {t.data_ptr(): k for k, t in model.trained_state_dict(views=True).items()}
    found = {
        name: keys[t.data_ptr()]
        for name, t in module.state_dict(keep_vars=True).items()
        if t.data_ptr() in keys
    }
    if sorted(found.values()) != sorted(keys.values()):
        raise RuntimeError("some trained tensors are not in the training module's state")
    return found


def frozen_encoder_runner(
    model: LusiferModel,
    config: StageConfig,
    run: RunConfig,
    *,
    stage: str,
    device: torch.device,
    main: bool,
) -> EncoderRunner:
    """An onnxruntime session for the encoder when this stage trains none of it on
    CPU (``run.frozen_encoder_backend``: ``onnx``, or ``auto`` where it measures faster
    than torch here), else None (the torch encoder runs)."""
    backend = run.frozen_encoder_backend
    if backend == "torch":
        return None
    why_not = None
    if config.train_encoder_lora:
        why_not = f"{stage}.train_encoder_lora is set (the encoder trains)"
    elif device.type != "cpu":
        why_not = f"training runs on {device}, not the CPU"
    elif importlib.util.find_spec("onnxruntime") is None:
        why_not = "onnxruntime is not installed (pip install 'lusifer[onnx]')"
    if why_not is not None:
        if backend == "onnx":
            raise ValueError(f"run.frozen_encoder_backend=onnx, but {why_not}")
        return None
    from ..onnx.backends import fastest_frozen_encoder
    from ..onnx.export import OnnxExportError
    from ..onnx.runtime import OnnxEncoderStates

    threads = torch.get_num_threads()
    try:
        if backend == "onnx":
            return OnnxEncoderStates(model, threads=threads)
        runner, calibration = fastest_frozen_encoder(
            model, threads=threads, max_length=run.max_length
        )
    except (ImportError, OnnxExportError) as err:  # e.g. a read-only or full cache folder
        if backend == "onnx":
            raise
        warnings.warn(f"{err}; the frozen encoder runs on torch instead", stacklevel=2)
        return None
    if main:
        tqdm.write(f"{stage}: frozen encoder, {calibration.describe()}")
    return runner


def native_embeddings(
    module: Any,
    model: LusiferModel,
    batch: ContrastiveInputs,
    *,
    max_length: int,
    bucket_rows: int,
    device: torch.device,
) -> torch.Tensor:
    """A routed model's native-route embeddings of a stage-2 batch's texts through the
    (wrapped) training ``module`` (rows in order, no gradient): each kind with its own
    prompt, cut at ``max_length``, in length-sorted chunks of ``bucket_rows`` when set."""
    native = model.native_route
    out = torch.zeros(len(batch.texts), model.embedding_size, device=device)
    groups: dict[tuple[str, str | None], list[int]] = {}
    for i, key in enumerate(zip(batch.kinds, batch.instructions, strict=True)):
        groups.setdefault(key, []).append(i)
    for (kind, instruction), index in groups.items():
        enc = native.tokenize(
            [batch.texts[i] for i in index],
            kind=kind,
            max_length=max_length,
            instruction=instruction if model.config.use_instructions else None,
        )
        inputs = {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}
        embed = lambda b: module("native", **b)  # noqa: E731
        reps = embed_by_length(embed, inputs, bucket_rows) if bucket_rows else embed(inputs)
        out[torch.tensor(index, device=device)] = reps.float()
    return out
