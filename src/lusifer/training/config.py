"""Training configuration: YAML files validated into typed dataclasses.

A run file has a ``model`` section (a :class:`~lusifer.config.LusiferConfig`), a
``run`` section (output, precision, checkpointing) and one section per stage
(``alignment``, ``representation``). Unknown keys and wrong types are errors that name
the key; ``key=value`` overrides use dotted paths (``alignment.steps=200``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..config import ConfigError, LusiferConfig, from_dict

Stage = Literal["alignment", "representation"]
DatasetSampling = Literal["proportional", "round_robin"]
STAGES: tuple[Stage, ...] = ("alignment", "representation")


@dataclass
class DataSource:
    """One training data set. Exactly one of ``path``, ``bundled`` or ``hf_dataset``."""

    path: str | None = None  # a JSONL file: {"text"} rows or {"query","positive",...} rows
    bundled: str | None = None  # a bundled English set: "all" or a dataset name in it
    hf_dataset: str | None = None  # a hub id or a local datasets folder
    hf_split: str = "train"
    hf_subset: str | None = None  # a hub data set's configuration name (e.g. wikitext-103-raw-v1)
    hf_query_field: str = "query"
    hf_positive_field: str = "positive"
    hf_negatives_field: str | None = None
    hf_text_field: str = "text"
    format: Literal["pairs", "texts"] = "pairs"
    name: str | None = None
    instruction: str | None = None  # overrides the rows' own instruction
    limit: int | None = None  # the paper: at most 500k (stage 1), 50k/10k (stage 2) per set
    in_batch_negatives: bool = True  # False for classification/clustering-style sets
    # stage-1 task mix for pair data (the paper: q->p data 10% reconstruct, 90% q->p)
    reconstruct_prob: float = 0.1
    query_to_passage_prob: float = 0.9  # of what is not reconstruction; the rest is p->q

    def __post_init__(self) -> None:
        given = [k for k in ("path", "bundled", "hf_dataset") if getattr(self, k)]
        if len(given) != 1:
            raise ConfigError(
                f"a data source needs exactly one of path, bundled, hf_dataset (got {given or 'none'})"
            )
        for key in ("reconstruct_prob", "query_to_passage_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{key} must be within [0, 1], got {getattr(self, key)}")


@dataclass
class Objectives:
    """Stage-1 objectives and their weights."""

    lm: float = 1.0  # the paper's LM loss (decoder targets only)
    distill: float = 0.0  # ours: match the target's own embedding of the same English text
    distill_mse_weight: float = 1.0  # distillation = (1 - cosine) + w * MSE
    distill_token: float = (
        0.0  # ours: soft tokens -> the target's embeddings of the same characters
    )
    mask_prob: float = 0.0  # LLM-side token masking (0 in the paper's configs)
    max_target_length: int = 128


@dataclass
class StageConfig:
    """One training stage."""

    steps: int
    batch_size: int
    learning_rate: float
    data: list[DataSource]
    min_learning_rate: float = 1e-6
    warmup_steps: int | None = None  # None: min(0.1 x steps, 500) as the paper
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    max_grad_norm: float = 1.0
    train_connector: bool = True
    train_head: bool = False
    train_encoder_lora: bool = True
    train_target_lora: bool = False
    objectives: Objectives = field(default_factory=Objectives)
    # ours: "least_squares" starts the connector from token-level ridge regression on
    # English text (see lusifer.training.connector_init); "random" is the paper's start
    connector_init: Literal["random", "least_squares"] = "random"
    connector_init_examples: int = 2000
    # which data set each step draws from (as sentence-transformers' multi-dataset batch
    # samplers): "proportional" to their sizes, or "round_robin", each in turn, which
    # also gives every data set an equal share of the least-squares start's texts
    dataset_sampling: DatasetSampling = "proportional"
    # stage 2
    temperature: float = 0.05
    symmetric: bool = False
    num_negatives: int = 0
    gradcache_chunk_size: int | None = None  # None: no GradCache (whole batch at once)
    use_head: bool = False  # compute the contrastive loss on the projection head's output
    # ours: weight of relational distillation from the original target (adapters off):
    # each text's LUSIFER embedding must pick out, among the batch, the target's own
    # embedding of the same English text (InfoNCE at `temperature`). For targets that are
    # already embedders (the demo's MiniLM): it keeps their English neighbourhoods.
    target_distill: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ConfigError("steps must be >= 0 and batch_size >= 1")
        if self.steps == 0 and self.connector_init == "random":
            raise ConfigError("steps: 0 only makes sense with connector_init: least_squares")
        if not self.data:
            raise ConfigError("a stage needs at least one data source")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.target_distill < 0:
            raise ConfigError(f"target_distill must be >= 0, got {self.target_distill}")
        if self.target_distill > 0 and self.use_head:
            raise ConfigError(
                "target_distill compares embeddings with the target's own, so it needs "
                "use_head: false (the head's output lives in another space)"
            )

    @property
    def warmup(self) -> int:
        return (
            self.warmup_steps if self.warmup_steps is not None else min(int(0.1 * self.steps), 500)
        )


@dataclass
class RunConfig:
    output_dir: str = "runs/lusifer"
    seed: int = 777
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    max_length: int = 128  # encoder tokens per text during training
    # How a stage that trains none of the encoder runs it: "auto" = onnxruntime on CPU
    # when it is installed (same states; the demo's stage 2 1.17x faster,
    # benchmarks/train_speed.py), else torch.
    frozen_encoder_backend: Literal["auto", "torch", "onnx"] = "auto"
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    report_to: list[str] = field(default_factory=list)  # "tensorboard", "wandb"
    allow_non_english: bool = False  # override the English-only guard (not recommended)
    min_english_fraction: float = 0.8


@dataclass
class TrainConfig:
    model: LusiferConfig
    run: RunConfig = field(default_factory=RunConfig)
    alignment: StageConfig | None = None
    representation: StageConfig | None = None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["alignment.steps=200", "run.output_dir=out"]`` -> parsed (key, YAML value) pairs."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"override {item!r} must look like key=value (e.g. alignment.steps=200)"
            )
        parsed.append((key.strip(), yaml.safe_load(raw)))
    return parsed


def load_train_config(
    path: str | Path | None, overrides: list[str] = (), **extra: Any
) -> TrainConfig:
    """Read a YAML run file (or start empty), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    for key, value in parse_overrides(list(overrides)):
        _set_dotted(data, key, value)
    for key, value in extra.items():
        _set_dotted(data, key, value)
    try:
        return from_dict(TrainConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{path or 'config'}: {err}") from None
