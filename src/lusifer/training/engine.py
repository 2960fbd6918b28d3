"""The training loop, on Hugging Face accelerate.

One loop serves both stages. DDP by default; FSDP or DeepSpeed come from an accelerate
config file (``accelerate launch --config_file ...``) with no code change. Every global
batch is drawn identically on every process (a function of seed and step) and each
process takes its slice, so N processes train exactly like one with the same global
batch, and a resumed run sees the batches it would have seen.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import io
import json
import math
import pickle
import random
import signal
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from ..config import ConfigError
from ..files import atomic_folder, atomic_write, discard, remove_partial
from ..model import LusiferModel
from ..model.lusifer import CheckpointError
from ..model.prompts import format_prompt
from ..threads import thread_policy
from .bucketing import embed_by_length
from .config import Objective, RunConfig, StageConfig
from .data import (
    TASKS,
    AlignmentExample,
    ContrastiveBatch,
    LoadedSource,
    alignment_batch,
    contrastive_batch,
    load_sources,
)
from .gradcache import gradcache_backward
from .losses import (
    contrastive_loss,
    distillation_loss,
    lm_alignment_loss,
    relational_distillation,
    target_own_embedding,
)

STATE_NAME = "trainer_state.json"
RNG_NAME = "rng-{rank}.pt"  # one per process
SUMMARY_NAME = "summary.json"
# Stage 2 counts as collapsed when a batch's embeddings are this alike for this many steps.
COLLAPSE_COSINE = 0.999
COLLAPSE_STEPS = 10


class TrainingModule(nn.Module):
    """What the distributed wrapper sees: one forward per objective, so gradient
    synchronisation (DDP/FSDP) always runs through ``forward``."""

    def __init__(self, model: LusiferModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, objective: str, **batch: Any) -> torch.Tensor:
        if objective == "embed":
            return self.model(
                batch["input_ids"],
                batch["attention_mask"],
                batch.get("pool_mask"),
                use_head=batch["use_head"],
            )
        if objective == "lm":
            return lm_alignment_loss(self.model, **batch)
        if objective == "distill":
            return distillation_loss(self.model, **batch)
        if objective == "teacher":
            return target_own_embedding(self.model, **batch)
        if objective == "native":  # a routed model's native route (no gradient reaches it)
            with torch.no_grad():
                return self.model.native_route(batch["input_ids"], batch["attention_mask"])
        raise ValueError(f"unknown objective {objective!r}")


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 keeping gradients; rows may differ in count per process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    sizes = [
        torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(dist.get_world_size())
    ]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], device=t.device))
    sizes = [int(s) for s in sizes]
    padded = torch.nn.functional.pad(t, (0, 0, 0, max(sizes) - t.shape[0]))
    parts = all_gather(padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


def _gather_ints(values: list[int], device: torch.device) -> list[list[int]]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [values]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, values)
    return out


def _logged_step(line: str) -> float:
    """The step of a log line; a line a kill cut short counts as after every step."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _gather_objects(value: Any) -> list[Any]:
    """``value`` of every process, in rank order (a list of one without distribution)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


class CheckpointWriteError(RuntimeError):
    """A checkpoint (or a stage's model) could not be written: a full disk, a read-only
    folder. Its partial folder was removed, what was saved before is intact, and the run
    resumes from it."""

    def __init__(self, folder: Path, kept: str, cause: BaseException) -> None:
        self.folder = folder
        full = _is_disk_full(cause)
        why = "the disk is full (no space left on device)" if full else f"{cause}"
        todo = (
            f"free space on the disk holding {folder.parent}"
            if full
            else f"fix the cause (is {folder.parent} writable?)"
        )
        super().__init__(
            f"writing {folder} failed: {why}. Nothing half-written was left behind and "
            f"{kept}; {todo}, then rerun `lusifer train CONFIG` (the same config) to resume."
        )


def _is_disk_full(err: BaseException | None) -> bool:
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err):  # e.g. safetensors' own error type
            return True
        err = err.__cause__ or err.__context__
    return False


def _write_bytes(path: Path, data: bytes) -> None:
    """Write a checkpoint file (through Python, so a full disk raises OSError(ENOSPC)
    rather than a writer library's own error)."""
    with open(path, "wb") as handle:
        handle.write(data)


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def load_safely(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain values only. A file
    holding other Python objects (which could run code while loading) is refused, and
    a damaged one (truncated, overwritten) is a :class:`CheckpointError` too."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines()]
        detail = next((ln for ln in lines if "Unsupported global" in ln), "")
        if detail:
            raise CheckpointError(
                f"{path} holds Python objects other than tensors and plain values "
                f"({detail}); it is not loaded, because loading it could run code on this "
                "machine. lusifer's checkpoints never hold such objects: resume only from "
                "checkpoints you trust, or delete this checkpoint folder to resume from an "
                "earlier one."
            ) from None
        marks = [i for i, ln in enumerate(lines) if "WeightsUnpickler error" in ln]
        after = [ln for ln in lines[marks[0] + 1 :] if ln] if marks else []
        raise CheckpointError(_unreadable(path, after[0] if after else str(err))) from None
    except Exception as err:  # a damaged file fails in many ways (EOF, zip, index errors)
        raise CheckpointError(_unreadable(path, f"{type(err).__name__}: {err}")) from None


def _unreadable(path: Path, why: str) -> str:
    """The message for a checkpoint file that is damaged (truncated, overwritten)."""
    why = why.strip().splitlines()[0].split(". ")[0][:200] if why.strip() else ""
    why = why if why and not why.endswith(":") else "empty or truncated"
    return (
        f"{path} cannot be read ({why}): it is damaged or not a checkpoint file; delete its "
        "checkpoint folder to resume from an earlier one"
    )


def _rng_state() -> dict[str, Any]:
    """This process's random state, as tensors and plain values (loadable with
    ``weights_only=True``): Python's, numpy's, torch's CPU and CUDA generators."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        key = n["key"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], key, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StageTrainer:
    """Trains one stage of a :class:`LusiferModel`; checkpoints, resumes, logs. (Ours,
    not transformers' ``Trainer``: :func:`lusifer.training.run_training` runs one per
    stage of a run file.)

    ``stage`` is the stage's name (its folder), ``objective`` what it trains:
    ``alignment`` (stage 1) or ``representation`` (stage 2)."""

    def __init__(
        self,
        model: LusiferModel,
        stage: str,
        config: StageConfig,
        run: RunConfig,
        output_dir: Path,
        accelerator: Accelerator,
        objective: Objective | None = None,
    ) -> None:
        self.model = model
        self.stage = stage
        self.objective: Objective = objective or config.objective or stage  # type: ignore[assignment]
        if self.objective not in ("alignment", "representation"):
            raise ValueError(f"stage {stage!r}: objective must be alignment or representation")
        self.config = config
        self.run = run
        self.output_dir = Path(output_dir)
        self.accelerator = accelerator
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        if accelerator.device.type == "cpu":  # this process's share of the cores
            thread_policy().apply_to_torch()
        if config.cross_route > 0 and not model.routed:
            raise ConfigError(
                f"{stage}.cross_route needs a routed model (model.routes): an unrouted model "
                "has no native route to train against"
            )
        if config.batch_size % self.world:
            raise ValueError(
                f"{stage}.batch_size={config.batch_size} must be divisible by the number of "
                f"processes ({self.world})"
            )
        self._interrupted = False
        self._collapsed_steps = 0
        self.sources: list[LoadedSource] = []
        self.total_steps = 0
        # what the stage actually drew (rehearsal reports): per source, stage-1 task
        # counts; per step, the positives and hard negatives per query that reached the loss
        self.task_counts: dict[str, dict[str, int]] = {}
        self.positives_per_query: list[int] = []
        self.negatives_per_query: list[int] = []

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        cfg, model = self.config, self.model
        objectives = cfg.objectives
        if self.objective == "alignment" and objectives.lm > 0 and not model.target.is_decoder:
            raise ValueError(
                f"alignment.objectives.lm={objectives.lm}, but the target {model.config.target!r} "
                "is an encoder with no LM head: use objectives.distill (and lm: 0)"
            )
        if cfg.train_head and model.head is None:
            raise ValueError(f"{self.stage}.train_head is set but the model has no projection_head")
        for part in ("encoder", "target"):
            if getattr(cfg, f"train_{part}_lora") and getattr(model.config, f"{part}_lora") is None:
                raise ValueError(
                    f"{self.stage}.train_{part}_lora is set but model.{part}_lora is not configured"
                )
        model.zero_grad(set_to_none=True)  # a stage starts from no gradients
        model.freeze(
            connector=cfg.train_connector,
            head=cfg.train_head,
            encoder_lora=cfg.train_encoder_lora,
            target_lora=cfg.train_target_lora,
        )
        if self.run.gradient_checkpointing:
            kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
            for backbone in (model.encoder, model.target.model):
                backbone.gradient_checkpointing_enable(**kwargs)
        self.sources = load_sources(cfg.data, self.run)
        self.total_steps = cfg.total_steps(sum(len(s) for s in self.sources))
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{self.stage}: nothing to train (every part is frozen)")
        self.optimizer = torch.optim.AdamW(
            params,
            lr=cfg.learning_rate,
            betas=tuple(cfg.adam_betas),
            weight_decay=cfg.weight_decay,
        )
        self.scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=cfg.warmup(self.total_steps),
            num_training_steps=self.total_steps,
            min_lr=cfg.min_learning_rate,
        )
        self.module, self.optimizer = self.accelerator.prepare(
            TrainingModule(model), self.optimizer
        )
        model.train()
        if not cfg.train_encoder_lora:
            # a frozen encoder reads texts as it will at inference (no dropout), like the
            # onnxruntime path (_encoder_runner) does
            model.encoder.eval()

    def _encoder_runner(self):
        """An onnxruntime session for the encoder when this stage trains none of it on
        CPU (``run.frozen_encoder_backend``: ``onnx``, or ``auto`` where it measures faster
        than torch here), else None (the torch encoder runs)."""
        backend = self.run.frozen_encoder_backend
        if backend == "torch":
            return None
        why_not = None
        if self.config.train_encoder_lora:
            why_not = f"{self.stage}.train_encoder_lora is set (the encoder trains)"
        elif self.accelerator.device.type != "cpu":
            why_not = f"training runs on {self.accelerator.device}, not the CPU"
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
                return OnnxEncoderStates(self.model, threads=threads)
            runner, calibration = fastest_frozen_encoder(
                self.model, threads=threads, max_length=self.run.max_length
            )
        except (ImportError, OnnxExportError) as err:  # e.g. a read-only or full cache folder
            if backend == "onnx":
                raise
            warnings.warn(f"{err}; the frozen encoder runs on torch instead", stacklevel=2)
            return None
        if self.accelerator.is_main_process:
            tqdm.write(f"{self.stage}: frozen encoder, {calibration.describe()}")
        return runner

    # ------------------------------------------------------------------- steps
    def _local_slice(self, items: list) -> list:
        per = len(items) // self.world
        return items[self.rank * per : (self.rank + 1) * per]

    def _target_tokens(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        device = self.accelerator.device
        enc = self.model.target.tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return {
            "target_ids": enc["input_ids"].to(device),
            "target_mask": enc["attention_mask"].to(device),
        }

    def _native_embeddings(
        self, texts: list[str], kinds: list[str], instructions: list[str | None]
    ) -> torch.Tensor:
        """The native route's embeddings of ``texts`` (rows in order, no gradient): each
        kind with its own prompt, cut at the run's ``max_length``."""
        native = self.model.native_route
        device = self.accelerator.device
        out = torch.zeros(len(texts), self.model.embedding_size, device=device)
        embed = lambda batch: self.module("native", **batch)  # noqa: E731
        rows = self.run.length_bucket_rows
        groups: dict[tuple[str, str | None], list[int]] = {}
        for i, key in enumerate(zip(kinds, instructions, strict=True)):
            groups.setdefault(key, []).append(i)
        for (kind, instruction), index in groups.items():
            enc = native.tokenize(
                [texts[i] for i in index],
                kind=kind,  # type: ignore[arg-type]
                max_length=self.run.max_length,
                instruction=instruction if self.model.config.use_instructions else None,
            )
            inputs = {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}
            reps = embed_by_length(embed, inputs, rows) if rows else embed(inputs)
            out[torch.tensor(index, device=device)] = reps.float()
        return out

    def _lm_target(self, example: AlignmentExample) -> str:
        """What the LM writes: the prompted text for reconstruction, else the answer."""
        if example.answer is not None:
            return example.answer
        config = self.model.config
        instruction = example.instruction if config.use_instructions else None
        return format_prompt(
            example.text,
            instruction,
            "query",
            query_template=config.query_template,
            document_template=config.document_template,
        )

    def _alignment_step(self, step: int) -> dict[str, float]:
        cfg, obj = self.config, self.config.objectives
        drawn = alignment_batch(
            self.sources, cfg.batch_size, self.run.seed, step, cfg.dataset_sampling
        )
        for example in drawn:
            counts = self.task_counts.setdefault(example.source, dict.fromkeys(TASKS, 0))
            counts[example.task] += 1
        examples: list[AlignmentExample] = self._local_slice(drawn)
        device = self.accelerator.device
        # the encoder reads "{instruction}.\n{text}" (the reference's collator format)
        enc = self.model.tokenize(
            [e.text for e in examples],
            instruction=[e.instruction for e in examples],
            kind="query",
            max_length=self.run.max_length,
        )
        encoder = {
            "encoder_ids": enc["input_ids"].to(device),
            "encoder_mask": enc["attention_mask"].to(device),
        }
        losses: dict[str, torch.Tensor] = {}
        if obj.lm > 0:
            tok = self.model.target.tokenizer
            texts = [self._lm_target(e) + (tok.eos_token or "") for e in examples]
            # the target text follows the soft tokens: no special tokens of its own
            enc_t = tok(
                texts,
                padding=True,
                truncation=True,
                max_length=obj.max_target_length,
                add_special_tokens=False,
                return_tensors="pt",
            )
            target = {"target_ids": enc_t["input_ids"], "target_mask": enc_t["attention_mask"]}
            if obj.mask_prob > 0:
                gen = torch.Generator().manual_seed(self.run.seed * 1_000_003 + step)
                drop = torch.rand(target["target_ids"].shape, generator=gen) < obj.mask_prob
                fill = tok.unk_token_id if tok.unk_token_id is not None else tok.pad_token_id
                target["masked_target_ids"] = target["target_ids"].masked_fill(drop, fill)
            batch = {**encoder, **{k: v.to(device) for k, v in target.items()}}
            losses["lm"] = self.module("lm", **batch)
        if obj.distill > 0:
            target = self._target_tokens([e.distill_text for e in examples], obj.max_target_length)
            batch = {**encoder, **target}
            losses["distill"] = self.module("distill", mse_weight=obj.distill_mse_weight, **batch)
        if not losses:
            raise ValueError("alignment: every objective weight is 0")
        weights = {"lm": obj.lm, "distill": obj.distill}
        total = sum(weights[k] * v for k, v in losses.items())
        self.accelerator.backward(total)
        return {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in losses.items()}}

    def _representation_step(self, step: int) -> dict[str, float]:
        cfg = self.config
        full: ContrastiveBatch = contrastive_batch(
            self.sources,
            cfg.batch_size,
            cfg.num_negatives,
            self.run.seed,
            step,
            cfg.dataset_sampling,
            num_positives=cfg.num_positives,
        )
        for counts, owners in (
            (self.positives_per_query, full.positive_owner),
            (self.negatives_per_query, full.negative_owner),
        ):
            counts.extend(owners.count(i) for i in range(len(full.queries)))
        per = cfg.batch_size // self.world
        lo, hi = self.rank * per, (self.rank + 1) * per
        queries = full.queries[lo:hi]
        instructions = full.instructions[lo:hi]

        def local(texts: list[str], owner: list[int]) -> tuple[list[str], list[int]]:
            keep = [j for j, o in enumerate(owner) if lo <= o < hi]
            return [texts[j] for j in keep], [owner[j] - lo for j in keep]

        positives, pos_owners = local(full.positives, full.positive_owner)
        negatives, neg_owners = local(full.negatives, full.negative_owner)
        texts = queries + positives + negatives
        kinds = ["query"] * len(queries) + ["document"] * (len(positives) + len(negatives))
        insts = instructions + [instructions[o] for o in pos_owners + neg_owners]
        enc = self.model.tokenize(
            texts, instruction=insts, kind=kinds, max_length=self.run.max_length
        )
        device = self.accelerator.device
        inputs = {
            k: enc[k].to(device) for k in ("input_ids", "attention_mask", "pool_mask") if k in enc
        }
        n_q, n_p = len(queries), len(positives)

        def global_owners(owners: list[int]) -> torch.Tensor:
            """Owner indices into the gathered queries (rank r's queries follow rank r-1's)."""
            return torch.tensor(
                [o + r * per for r, ows in enumerate(_gather_ints(owners, device)) for o in ows],
                dtype=torch.long,
                device=device,
            )

        positive_owner, negative_owner = global_owners(pos_owners), global_owners(neg_owners)

        local_teacher = None
        if self.model.routed and (cfg.target_distill > 0 or cfg.cross_route > 0):
            # the native route's embedding of each text: the space both routes share
            local_teacher = self._native_embeddings(texts, kinds, insts)
        elif cfg.target_distill > 0:
            # the target's own embedding of each text, read without the instruction
            with torch.no_grad():
                own = self._target_tokens(texts, self.run.max_length)
                teach = lambda batch: self.module("teacher", **batch)  # noqa: E731
                rows = self.run.length_bucket_rows
                local_teacher = (
                    embed_by_length(teach, own, rows, "target_mask") if rows else teach(own)
                )
        teacher = gather_with_grad(local_teacher) if local_teacher is not None else None
        parts: dict[str, float] = {}

        def contrastive(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            return contrastive_loss(
                cfg.loss,
                q,
                p,
                n,
                negative_owner,
                positive_owner=positive_owner,
                temperature=cfg.temperature,
                in_batch_negatives=full.in_batch_negatives,
                similarity=cfg.similarity,
                symmetric=cfg.symmetric,
            )

        def loss_fn(reps: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # near 1 when every text gets the same embedding
                unit = F.normalize(reps.detach().float(), dim=-1)
                parts["mean_cosine"] = float((unit @ unit.T).mean())
            q = gather_with_grad(reps[:n_q])
            p = gather_with_grad(reps[n_q : n_q + n_p])
            n = gather_with_grad(reps[n_q + n_p :])
            loss = contrastive(q, p, n)
            if teacher is None:
                return loss
            parts["contrastive"] = float(loss.detach())
            if cfg.target_distill > 0:
                distill = relational_distillation(
                    gather_with_grad(reps), teacher, temperature=cfg.temperature
                )
                parts["target_distill"] = float(distill.detach())
                loss = loss + cfg.target_distill * distill
            if cfg.cross_route > 0:
                # one side on the frozen native route, the other on the connector route,
                # both ways: a non-English query finds an English document the target
                # embedded alone, and an English query a non-English document
                nq, np_, nn_ = (
                    gather_with_grad(part)
                    for part in local_teacher.split([n_q, n_p, len(texts) - n_q - n_p])
                )
                cross = (contrastive(nq, p, n) + contrastive(q, np_, nn_)) / 2
                parts["cross_route"] = float(cross.detach())
                loss = loss + cfg.cross_route * cross
            return loss

        def embed(chunk: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.module("embed", use_head=cfg.use_head, **chunk)

        if cfg.gradcache_chunk_size:
            loss = gradcache_backward(
                embed,
                inputs,
                loss_fn,
                cfg.gradcache_chunk_size,
                backward=self.accelerator.backward,
                no_sync=lambda: self.accelerator.no_sync(self.module),
            )
        elif self.run.length_bucket_rows and self.world == 1:
            loss = loss_fn(embed_by_length(embed, inputs, self.run.length_bucket_rows))
            self.accelerator.backward(loss)
        else:
            loss = loss_fn(embed(inputs))
            self.accelerator.backward(loss)
        return {"loss": float(loss.detach()), **parts}

    # -------------------------------------------------------------- checkpoints
    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        done = [p for p in self.checkpoint_root.glob("step-*") if (p / STATE_NAME).is_file()]
        return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None

    def save_checkpoint(self, step: int) -> None:
        """Write the trained tensors, optimizer, scheduler and every process's RNG state
        as one folder, atomically and durably (see :func:`lusifer.files.atomic_folder`):
        a kill or power cut at any moment leaves the previous checkpoints intact. Every
        file loads without running code (safetensors, ``torch.load(weights_only=True)``,
        JSON). A failed write (a full disk) removes its partial folder and raises
        :class:`CheckpointWriteError`."""
        self.accelerator.wait_for_everyone()
        rng_states = _gather_objects(_rng_state())  # one per process, in rank order
        if self.accelerator.is_main_process:
            root = self.checkpoint_root
            final = root / f"step-{step:08d}"
            previous = self.latest_checkpoint()
            state = {
                "stage": self.stage,
                "step": step,
                "world_size": self.world,
                "config": asdict(self.config),
            }
            try:
                with atomic_folder(final) as tmp:
                    _write_bytes(
                        tmp / "model.safetensors", save_safetensors(self.model.trained_state_dict())
                    )
                    _write_bytes(tmp / "optimizer.pt", _torch_bytes(self.optimizer.state_dict()))
                    _write_bytes(tmp / "scheduler.pt", _torch_bytes(self.scheduler.state_dict()))
                    for rank, rng in enumerate(rng_states):
                        _write_bytes(tmp / RNG_NAME.format(rank=rank), _torch_bytes(rng))
                    # written last: a folder with it is complete
                    _write_bytes(tmp / STATE_NAME, json.dumps(state, indent=2).encode())
            except Exception as err:
                kept = (
                    f"the previous checkpoint {previous} is intact"
                    if previous is not None
                    else f"no earlier checkpoint of {self.stage} exists"
                )
                raise CheckpointWriteError(final, kept, err) from err
            kept = sorted(root.glob("step-*"), key=lambda p: p.name)
            for old in kept[: -self.run.keep_checkpoints]:
                discard(old)  # renamed away first: a kill never leaves half a checkpoint
        self.accelerator.wait_for_everyone()

    def remove_partial_checkpoints(self) -> None:
        """Remove what a killed run left half-written in ``checkpoints/`` (temporary
        folders of checkpoint writes and deletes)."""
        if not self.accelerator.is_main_process or not self.checkpoint_root.is_dir():
            return
        for tmp in remove_partial(self.checkpoint_root, only_dead=False):
            tqdm.write(f"{self.stage}: removed {tmp.name}, a checkpoint write that did not finish")

    def load_checkpoint(self, path: Path) -> int:
        """Restore what :meth:`save_checkpoint` wrote; returns its step. Nothing in the
        folder is unpickled beyond tensors and plain values (a checkpoint from someone
        else cannot run code here): anything else is refused with a CheckpointError."""
        try:
            state = json.loads((path / STATE_NAME).read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path / STATE_NAME} cannot be read ({err})") from None
        if state.get("stage") != self.stage:
            raise CheckpointError(f"{path} is a {state.get('stage')} checkpoint, not {self.stage}")
        try:
            weights = load_file(str(path / "model.safetensors"))
        except Exception as err:  # safetensors raises its own error type on a bad file
            raise CheckpointError(f"{path / 'model.safetensors'} cannot be read ({err})") from None
        self.model.load_trained_state_dict(weights, source=str(path))
        self.optimizer.load_state_dict(load_safely(path / "optimizer.pt"))
        self.scheduler.load_state_dict(load_safely(path / "scheduler.pt"))
        rng_file = path / RNG_NAME.format(rank=self.rank)
        if rng_file.is_file():
            _set_rng_state(load_safely(rng_file))
        else:
            warnings.warn(
                f"{path} has no random state for process {self.rank} (saved with "
                f"{state.get('world_size', 1)} processes, resumed with {self.world}); this "
                "process's dropout and sampling will not repeat the interrupted run's",
                stacklevel=2,
            )
        return int(state["step"])

    def _init_connector(self) -> None:
        """Closed-form connector start from the stage's own (English) training texts."""
        from .connector_init import least_squares_connector

        per_source = [
            [t.text for t in source.texts]
            + [r.query for r in source.pairs]
            + [r.positive for r in source.pairs]
            for source in self.sources
        ]
        rng = random.Random(self.run.seed)
        wanted = self.config.connector_init_examples
        if self.config.dataset_sampling == "round_robin":  # an equal share from each data set
            share = -(-wanted // len(per_source))
            picked = [t for texts in per_source for t in rng.sample(texts, min(share, len(texts)))]
        else:
            texts = [t for source_texts in per_source for t in source_texts]
            picked = rng.sample(texts, min(wanted, len(texts)))
        r2 = least_squares_connector(
            self.model,
            picked,
            max_length=self.run.max_length,
            show_progress=self.accelerator.is_main_process,
        )
        tqdm.write(
            f"{self.stage}: connector initialised by least squares on {len(picked)} texts (R^2 {r2:.3f})"
        )

    def _watch_collapse(self, step: int, mean_cosine: float) -> None:
        """Warn once when stage 2 has collapsed: every text of ``COLLAPSE_STEPS`` batches
        in a row got nearly the same embedding (InfoNCE then sits at ln(batch size))."""
        self._collapsed_steps = self._collapsed_steps + 1 if mean_cosine > COLLAPSE_COSINE else 0
        if self._collapsed_steps == COLLAPSE_STEPS:
            warnings.warn(
                f"{self.stage} step {step}: the embeddings have collapsed (mean cosine "
                f"between a batch's texts above {COLLAPSE_COSINE} for {COLLAPSE_STEPS} steps); "
                f"lower {self.stage}.learning_rate (now {self.config.learning_rate}) or add "
                f"{self.stage}.target_distill",
                stacklevel=2,
            )

    # --------------------------------------------------------------------- loop
    def _log(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with (self.output_dir / "log.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
        if self.run.report_to:
            self.accelerator.log(
                {f"{self.stage}/{k}": v for k, v in record.items()}, step=record["step"]
            )

    def _trim_log(self, step: int) -> None:
        """Drop log lines after ``step`` (a resumed run rewrites them)."""
        log = self.output_dir / "log.jsonl"
        if self.accelerator.is_main_process and log.exists():
            lines = [ln for ln in log.read_text().splitlines() if _logged_step(ln) <= step]
            atomic_write(log, "".join(ln + "\n" for ln in lines))

    @contextlib.contextmanager
    def _catch_interrupt(self):
        """First Ctrl-C: finish the step, save a checkpoint, stop. Second: abort."""

        def handler(signum, frame):
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True
            tqdm.write("Interrupted: saving a checkpoint after this step (Ctrl-C again to abort).")

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            previous = None
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def train(self, *, resume: bool = False, stop_after: int | None = None) -> bool:
        """Run the stage. Returns True when it finished, False when interrupted
        (a checkpoint was saved; ``resume=True`` continues from it)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        set_seed(self.run.seed)
        self._setup()
        start = 0
        if resume:
            self.remove_partial_checkpoints()
        elif self.accelerator.is_main_process:  # a fresh start never resumes an older run
            for old in self.checkpoint_root.glob("step-*"):
                discard(old)
        if resume and (ckpt := self.latest_checkpoint()) is not None:
            start = self.load_checkpoint(ckpt)
            tqdm.write(f"Resuming {self.stage} from {ckpt} (step {start})")
        # built once the encoder holds this stage's weights (after a resumed checkpoint)
        self.model.encoder_runner = self._encoder_runner()
        try:
            finished = self._train_from(start, stop_after)
        finally:
            self.model.encoder_runner = None
        if self.accelerator.is_main_process:
            atomic_write(self.output_dir / SUMMARY_NAME, json.dumps(self.summary(start), indent=2))
        return finished

    def summary(self, start: int = 0) -> dict[str, Any]:
        """What this stage read and drew: rows kept and skipped per source, and (for the
        steps run in this process, from ``start``) the stage-1 task mix per source and the
        positives and hard negatives per query that reached the loss."""
        mix = {
            source: {task: n / max(sum(counts.values()), 1) for task, n in counts.items()}
            for source, counts in sorted(self.task_counts.items())
        }

        def mean(values: list[float]) -> float | None:
            return sum(values) / len(values) if values else None

        return {
            "stage": self.stage,
            "objective": self.objective,
            "steps": self.total_steps,
            "steps_run_from": start,
            "rows": {s.name: len(s) for s in self.sources},
            "rows_skipped": {s.name: s.rows_skipped for s in self.sources},
            "task_mix": mix if self.objective == "alignment" else {},
            "examples_drawn": {s: sum(c.values()) for s, c in sorted(self.task_counts.items())},
            # the most any query had, and the mean (rows with fewer keep what they have)
            "positives_per_query": max(self.positives_per_query, default=None),
            "negatives_per_query": max(self.negatives_per_query, default=None),
            "positives_per_query_mean": mean(self.positives_per_query),
            "negatives_per_query_mean": mean(self.negatives_per_query),
        }

    def _train_from(self, start: int, stop_after: int | None) -> bool:
        if start == 0 and self.config.connector_init == "least_squares":
            self._init_connector()
        self._trim_log(start)
        cfg = self.config
        step_fn = (
            self._alignment_step if self.objective == "alignment" else self._representation_step
        )
        total = self.total_steps
        params = [p for p in self.model.parameters() if p.requires_grad]
        bar = tqdm(
            total=total,
            initial=start,
            desc=f"{self.stage}",
            unit="step",
            disable=not self.accelerator.is_main_process,
        )
        tic, seen = time.perf_counter(), 0
        finished = True
        with self._catch_interrupt():
            for step in range(start + 1, total + 1):
                metrics = step_fn(step)
                if not math.isfinite(metrics["loss"]):
                    raise FloatingPointError(
                        f"{self.stage} step {step}: loss is {metrics['loss']}; lower the learning "
                        f"rate (now {cfg.learning_rate}) or check the data"
                    )
                if self.objective == "representation":
                    self._watch_collapse(step, metrics.get("mean_cosine", 0.0))
                if cfg.max_grad_norm:
                    self.accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                seen += cfg.batch_size
                lr = self.scheduler.get_last_lr()[0]
                rate = seen / max(time.perf_counter() - tic, 1e-9)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{lr:.2e}", ex_s=f"{rate:.1f}")
                bar.update(1)
                if step % self.run.log_every == 0 or step == total or step == 1:
                    self._log({"step": step, "lr": lr, "examples_per_s": rate, **metrics})
                stopping = self._interrupted or (stop_after is not None and step >= stop_after)
                if step % self.run.save_every == 0 or step == total or stopping:
                    self.save_checkpoint(step)
                if stopping and step < total:
                    finished = False
                    break
        bar.close()
        self.model.eval()
        return finished
