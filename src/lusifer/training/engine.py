"""The stage trainer, on Hugging Face accelerate: a loop of draw -> collate -> objectives ->
backward -> optimizer step, with checkpoints.

Every global batch is drawn identically on every process (a function of seed and step) and
each process takes its slice, so N processes train exactly like one with the same global
batch, and a resumed run sees the batches it would have seen. DDP by default; FSDP or
DeepSpeed come from an accelerate config file: every process runs the same number of
forwards, one optimizer step per training step, gradients are clipped on the wrapped
module's parameters, and checkpoints gather sharded weights (tested: DDP on two CPU
processes; FSDP and DeepSpeed need GPUs and are not run here).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from ..config import ConfigError
from ..model import LusiferModel
from ..threads import thread_policy
from .backward import accumulated_backward, embedding_backward, holding_back
from .bucketing import embed_by_length
from .checkpoints import Checkpoints, rng_state, set_rng_state
from .collate import (
    AlignmentInputs,
    ContrastiveInputs,
    alignment_inputs,
    contrastive_inputs,
    local_slice,
    target_tokens,
)
from .config import Objective, RunConfig, StageConfig
from .connector_init import start_connector
from .data import LoadedSource, alignment_batch, contrastive_batch, load_sources
from .distributed import gather_objects, gather_with_grad, global_owners
from .losses import contrastive_loss, relational_distillation
from .module import TrainingModule, frozen_encoder_runner, native_embeddings, trained_names
from .records import StageRecord, StopRequest


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
        cross_terms = [t for t in ("cross_route", "route_match") if getattr(config, t) > 0]
        if cross_terms and not model.routed:
            raise ConfigError(
                f"{stage}.{cross_terms[0]} needs a routed model (model.routes): an unrouted model "
                "has no native route to train against"
            )
        if config.batch_size % self.world:
            raise ValueError(
                f"{stage}.batch_size={config.batch_size} must be divisible by the number of "
                f"processes ({self.world})"
            )
        self.sharded = accelerator.distributed_type in (
            DistributedType.FSDP,
            DistributedType.DEEPSPEED,
        )
        self.checkpoints = Checkpoints(self.output_dir / "checkpoints", stage, run.keep_checkpoints)
        tracker = accelerator.log if run.report_to else None
        self.record = StageRecord(
            stage, self.output_dir, main=accelerator.is_main_process, tracker=tracker
        )
        self.stop = StopRequest()
        self.sources: list[LoadedSource] = []
        self.total_steps = 0

    @property
    def checkpoint_root(self) -> Path:
        return self.checkpoints.root

    # ------------------------------------------------------------------ set-up
    def _check_and_freeze(self) -> None:
        cfg, model = self.config, self.model
        if self.objective == "alignment" and cfg.objectives.lm > 0 and not model.target.is_decoder:
            raise ValueError(
                f"alignment.objectives.lm={cfg.objectives.lm}, but the target "
                f"{model.config.target!r} is a BERT-like model with no LM head: use "
                "objectives.distill (and lm: 0)"
            )
        if self.objective == "alignment" and cfg.objectives.lm <= 0 and cfg.objectives.distill <= 0:
            raise ValueError("alignment: every objective weight is 0")
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
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"{self.stage}: nothing to train (every part is frozen)")
        if self.run.gradient_checkpointing:
            kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
            for backbone in (model.encoder, model.target.model):
                backbone.gradient_checkpointing_enable(**kwargs)

    def _prepare(self) -> None:
        """Optimizer, schedule and the accelerate-wrapped training module."""
        cfg, model = self.config, self.model
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=cfg.learning_rate,
            betas=(cfg.adam_betas[0], cfg.adam_betas[1]),
            weight_decay=cfg.weight_decay,
        )
        self.scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer,
            num_warmup_steps=cfg.warmup(self.total_steps),
            num_training_steps=self.total_steps,
            min_lr=cfg.min_learning_rate,
        )
        self.training_module = TrainingModule(model)
        self._trained_names = trained_names(self.training_module, model) if self.sharded else {}
        self.module, self.optimizer = self.accelerator.prepare(self.training_module, optimizer)
        model.train()
        if not cfg.train_encoder_lora:
            # a frozen encoder reads texts as it will at inference (no dropout), like the
            # onnxruntime path (_encoder_runner) does
            model.encoder.eval()

    def _sync(self, last: bool) -> contextlib.AbstractContextManager:
        return holding_back(self.accelerator, self.module, last)

    # ------------------------------------------------------------------- steps
    def _alignment_step(self, step: int) -> dict[str, float]:
        cfg, obj = self.config, self.config.objectives
        drawn = alignment_batch(
            self.sources, cfg.batch_size, self.run.seed, step, cfg.dataset_sampling
        )
        self.record.count_alignment(drawn)
        inputs = alignment_inputs(
            self.model,
            local_slice(drawn, self.rank, self.world),
            obj,
            max_length=self.run.max_length,
            seed=self.run.seed,
            step=step,
        )
        # each micro-batch's loss is its share of the whole local batch's mean
        tokens = float(inputs.lm["target_mask"].sum()) if inputs.lm is not None else 1.0
        parts = {name: 0.0 for name in ("lm", "distill") if getattr(obj, name) > 0}
        device = self.accelerator.device

        def micro_loss(micro: AlignmentInputs) -> torch.Tensor:
            micro = micro.to(device)
            encoder = {"encoder_ids": micro.encoder_ids, "encoder_mask": micro.encoder_mask}
            total = torch.zeros((), device=device)
            if micro.lm is not None:
                lm = self.module("lm", **encoder, **micro.lm, normalizer=tokens)
                parts["lm"] += float(lm.detach())
                total = total + obj.lm * lm
            if micro.distill is not None:
                distill = self.module(
                    "distill",
                    **encoder,
                    **micro.distill,
                    mse_weight=obj.distill_mse_weight,
                    normalizer=float(len(inputs)),
                )
                parts["distill"] += float(distill.detach())
                total = total + obj.distill * distill
            return total

        micro_batches = inputs.micro_batches(cfg.micro_batch)
        losses = [partial(micro_loss, micro) for micro in micro_batches]
        loss = accumulated_backward(losses, self.accelerator.backward, self._sync)
        return {"loss": float(loss), **parts}

    def _teacher(self, batch: ContrastiveInputs) -> torch.Tensor | None:
        """This process's teacher embeddings for ``target_distill``/``cross_route``: the
        native route's (routed models), else the target's own, read without instructions."""
        cfg = self.config
        native_terms = (cfg.target_distill, cfg.cross_route, cfg.route_match)
        if self.model.routed and max(native_terms) > 0:
            return native_embeddings(  # the space both routes share
                self.module,
                self.model,
                batch,
                max_length=self.run.max_length,
                bucket_rows=self.run.length_bucket_rows,
                device=self.accelerator.device,
            )
        if cfg.target_distill <= 0:
            return None
        device = self.accelerator.device
        own = {
            k: v.to(device)
            for k, v in target_tokens(self.model, batch.texts, self.run.max_length).items()
        }
        teach = lambda b: self.module("teacher", **b)  # noqa: E731
        rows = self.run.length_bucket_rows
        with torch.no_grad():
            return embed_by_length(teach, own, rows, "target_mask") if rows else teach(own)

    def _representation_step(self, step: int) -> dict[str, float]:
        cfg = self.config
        full = contrastive_batch(
            self.sources,
            cfg.batch_size,
            cfg.num_negatives,
            self.run.seed,
            step,
            cfg.dataset_sampling,
            num_positives=cfg.num_positives,
        )
        self.record.count_contrastive(full)
        batch = contrastive_inputs(
            self.model, full, self.rank, self.world, max_length=self.run.max_length
        )
        device = self.accelerator.device
        per = cfg.batch_size // self.world
        positive_owner = global_owners(batch.positive_owner, per, device)
        negative_owner = global_owners(batch.negative_owner, per, device)
        local_teacher = self._teacher(batch)
        teacher = gather_with_grad(local_teacher) if local_teacher is not None else None
        contrastive = partial(
            contrastive_loss,
            cfg.loss,
            negative_owner=negative_owner,
            positive_owner=positive_owner,
            temperature=cfg.temperature,
            in_batch_negatives=batch.in_batch_negatives,
            similarity=cfg.similarity,
            symmetric=cfg.symmetric,
        )
        parts: dict[str, float] = {}

        def loss_fn(reps: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # near 1 when every text gets the same embedding
                unit = F.normalize(reps.detach().float(), dim=-1)
                parts["mean_cosine"] = float((unit @ unit.T).mean())
            q, p, n = (gather_with_grad(part) for part in batch.split(reps))
            loss = contrastive(q, p, n)
            if teacher is None:
                return loss
            parts["contrastive"] = float(loss.detach())
            # every text, in the teacher's order (gathered once for both terms that read it)
            everyone = gather_with_grad(reps) if cfg.target_distill or cfg.route_match else reps
            if cfg.target_distill > 0:
                distill = relational_distillation(everyone, teacher, temperature=cfg.temperature)
                parts["target_distill"] = float(distill.detach())
                loss = loss + cfg.target_distill * distill
            if cfg.cross_route > 0:
                # one side on the frozen native route, the other on the connector route,
                # both ways: a non-English query finds an English document the target
                # embedded alone, and an English query a non-English document
                assert local_teacher is not None  # routed models have a native route
                nq, np_, nn_ = (gather_with_grad(part) for part in batch.split(local_teacher))
                cross = (contrastive(nq, p, n) + contrastive(q, np_, nn_)) / 2
                parts["cross_route"] = float(cross.detach())
                loss = loss + cfg.cross_route * cross
            if cfg.route_match > 0:
                student = F.normalize(everyone.float(), dim=-1)
                match = 1 - (student * F.normalize(teacher.float(), dim=-1)).sum(-1).mean()
                parts["route_match"] = float(match.detach())
                loss = loss + cfg.route_match * match
            return loss

        loss = embedding_backward(
            lambda chunk: self.module("embed", use_head=cfg.use_head, **chunk),
            {k: v.to(device) for k, v in batch.tokens.items()},
            loss_fn,
            micro_batch=cfg.micro_batch,
            bucket_rows=self.run.length_bucket_rows if self.world == 1 else None,
            backward=self.accelerator.backward,
            sync=self._sync,
        )
        return {"loss": float(loss), **parts}

    # -------------------------------------------------------------- checkpoints
    def latest_checkpoint(self) -> Path | None:
        return self.checkpoints.latest()

    def _trained_state(self) -> dict[str, torch.Tensor]:
        """The trained tensors in :meth:`LusiferModel.trained_state_dict`'s format; under
        FSDP/DeepSpeed gathered from every process's shard (all processes call this)."""
        if not self.sharded:
            return self.model.trained_state_dict()
        full = self.accelerator.get_state_dict(self.module)
        if not self.accelerator.is_main_process:
            return {}
        return {
            key: full[name].detach().cpu().contiguous() for name, key in self._trained_names.items()
        }

    def save_checkpoint(self, step: int) -> None:
        """Write the trained tensors, optimizer, scheduler and every process's RNG state
        as one checkpoint folder (:class:`Checkpoints`); a failed write (a full disk)
        raises :class:`CheckpointWriteError` and leaves the previous ones intact."""
        self.accelerator.wait_for_everyone()
        rng_states = gather_objects(rng_state())  # one per process, in rank order
        optimizer = self.optimizer.state_dict()
        optimizers = gather_objects(optimizer) if self.sharded else [optimizer]
        weights = self._trained_state()
        if self.accelerator.is_main_process:
            self.checkpoints.save(
                step,
                weights=weights,
                optimizer=optimizers,
                scheduler=self.scheduler.state_dict(),
                rng_states=rng_states,
                state={"world_size": self.world, "config": asdict(self.config)},
            )
        self.accelerator.wait_for_everyone()

    # --------------------------------------------------------------------- loop
    def _resume_point(self, resume: bool):
        """The checkpoint to resume from (None: a fresh start, which drops older ones)."""
        if not resume:
            if self.accelerator.is_main_process:
                self.checkpoints.discard_all()
            return None
        if self.accelerator.is_main_process:
            for tmp in self.checkpoints.remove_partial():
                tqdm.write(
                    f"{self.stage}: removed {tmp.name}, a checkpoint write that did not finish"
                )
        self.accelerator.wait_for_everyone()
        path = self.checkpoints.latest()
        return self.checkpoints.read(path, self.rank) if path is not None else None

    def prepare(self, *, resume: bool = False) -> int:
        """Set the stage up: parts frozen or trained, data loaded, the checkpoint to
        resume from read (or older ones dropped), optimizer and wrapped module built.
        Returns the step to start after."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        set_seed(self.run.seed)
        self._check_and_freeze()
        self.sources = load_sources(self.config.data, self.run)
        self.total_steps = self.config.total_steps(sum(len(s) for s in self.sources))
        checkpoint = self._resume_point(resume)
        if checkpoint is not None:  # before wrapping: a sharded engine shards what is loaded
            self.model.load_trained_state_dict(checkpoint.weights, source=str(checkpoint.path))
        self._prepare()
        if checkpoint is None:
            return 0
        tqdm.write(f"Resuming {self.stage} from {checkpoint.path} (step {checkpoint.step})")
        return self._restore(checkpoint)

    def step(self, step: int) -> dict[str, float]:
        """One training step's forwards and backwards: the gradients of the step's global
        batch accumulate in the trained parameters (the optimizer is not stepped)."""
        if self.objective == "alignment":
            return self._alignment_step(step)
        return self._representation_step(step)

    def train(self, *, resume: bool = False, stop_after: int | None = None) -> bool:
        """Run the stage. Returns True when it finished, False when interrupted
        (a checkpoint was saved; ``resume=True`` continues from it)."""
        start = self.prepare(resume=resume)
        # built once the encoder holds this stage's weights (after a resumed checkpoint)
        self.training_module.encoder_runner = frozen_encoder_runner(
            self.model,
            self.config,
            self.run,
            stage=self.stage,
            device=self.accelerator.device,
            main=self.accelerator.is_main_process,
        )
        try:
            finished = self._train_from(start, stop_after)
        finally:
            self.training_module.encoder_runner = None
        self.record.write_summary(self.summary(start))
        return finished

    def load_checkpoint(self, path: Path) -> int:
        """Restore a checkpoint folder into this prepared trainer (trained tensors,
        optimizer, scheduler, this process's random state); returns its step. Refuses
        anything but tensors and plain values (:meth:`Checkpoints.read`)."""
        checkpoint = self.checkpoints.read(path, self.rank)
        self.model.load_trained_state_dict(checkpoint.weights, source=str(path))
        return self._restore(checkpoint)

    def _restore(self, checkpoint) -> int:
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scheduler.load_state_dict(checkpoint.scheduler)
        if checkpoint.rng is not None:
            set_rng_state(checkpoint.rng)
        else:
            warnings.warn(
                f"{checkpoint.path} has no random state for process {self.rank} (saved with "
                f"{checkpoint.world_size} processes, resumed with {self.world}); this "
                "process's dropout and sampling will not repeat the interrupted run's",
                stacklevel=2,
            )
        return checkpoint.step

    def summary(self, start: int = 0) -> dict[str, Any]:
        """What this stage read and drew (:meth:`StageRecord.summary`)."""
        return self.record.summary(self.objective, self.total_steps, self.sources, start)

    def _train_from(self, start: int, stop_after: int | None) -> bool:
        if start == 0 and self.config.connector_init == "least_squares":
            start_connector(
                self.model,
                self.sources,
                self.config,
                self.run,
                stage=self.stage,
                show_progress=self.accelerator.is_main_process,
                encoder_states=self.training_module.encoder_states,
            )
        self.record.trim_log(start)
        cfg, total = self.config, self.total_steps
        bar = tqdm(
            total=total,
            initial=start,
            desc=f"{self.stage}",
            unit="step",
            disable=not self.accelerator.is_main_process,
        )
        tic, seen = time.perf_counter(), 0
        finished = True
        with self.stop.on_ctrl_c():
            for step in range(start + 1, total + 1):
                metrics = self.step(step)
                if not math.isfinite(metrics["loss"]):
                    raise FloatingPointError(
                        f"{self.stage} step {step}: loss is {metrics['loss']}; lower the learning "
                        f"rate (now {cfg.learning_rate}) or check the data"
                    )
                if self.objective == "representation":
                    self.record.watch_collapse(
                        step, metrics.get("mean_cosine", 0.0), cfg.learning_rate
                    )
                if cfg.max_grad_norm:  # the wrapped module's parameters: FSDP clips its own
                    self.accelerator.clip_grad_norm_(self.module.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                seen += cfg.batch_size
                lr = self.scheduler.get_last_lr()[0]
                rate = seen / max(time.perf_counter() - tic, 1e-9)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{lr:.2e}", ex_s=f"{rate:.1f}")
                bar.update(1)
                if step % self.run.log_every == 0 or step == total or step == 1:
                    self.record.log({"step": step, "lr": lr, "examples_per_s": rate, **metrics})
                stopping = self.stop.requested or (stop_after is not None and step >= stop_after)
                if step % self.run.save_every == 0 or step == total or stopping:
                    self.save_checkpoint(step)
                if stopping and step < total:
                    finished = False
                    break
        bar.close()
        self.model.eval()
        return finished
