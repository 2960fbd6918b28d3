"""Training configuration: YAML files validated into typed dataclasses.

A run file has a ``model`` section (a :class:`~lusifer.config.LusiferConfig`), a
``run`` section (output, precision, checkpointing) and its stages: either a ``stages``
list (any number, run in order, each with a ``name`` and an ``objective``: the paper
runs two alignment stages, then two representation phases) or the two shorthand
sections ``alignment`` and ``representation``. Unknown keys and wrong types are errors
that name the key; ``key=value`` overrides use dotted paths (``alignment.steps=200``,
or a stage's name: ``align-reconstruct.steps=200``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..config import ConfigError, LusiferConfig, from_dict

Objective = Literal["alignment", "representation"]
DatasetSampling = Literal["proportional", "round_robin"]
STAGES: tuple[Objective, ...] = ("alignment", "representation")
# Stage-1 task groups, as the reference's data code lays them out (its constants.py):
# reconstruction-only sets, retrieval sets (PRETRAINING_PASSAGE2QUERY) and
# classification-style sets (PRETRAINING_QUERY2PASSAGE).
AlignmentTasks = Literal["reconstruction", "retrieval", "classification"]
# (reconstruct, query_to_passage) shares per group; passage_to_query takes the rest.
# retrieval: 30% query->passage, else 40% reconstruct, else passage->query = 30/28/42.
TASK_MIX_DEFAULTS: dict[str, tuple[float, float]] = {
    "reconstruction": (1.0, 0.0),
    "retrieval": (0.7 * 0.4, 0.3),
    "classification": (0.1, 0.9),
}


@dataclass
class DataSource:
    """One training data set. Exactly one of ``path``, ``bundled`` or ``hf_dataset``."""

    path: str | None = None  # a JSONL file: {"text"} rows or {"query","positive",...} rows
    bundled: str | None = None  # a bundled English set: "all" or a dataset name in it
    hf_dataset: str | None = None  # a hub id or a local datasets folder
    hf_split: str = "train"
    hf_subset: str | None = None  # a hub data set's configuration name (e.g. wikitext-103-raw-v1)
    hf_query_field: str = "query"
    hf_positive_field: str = "positive"  # a string column or a list column (several positives)
    # a list column, one string column, a list of columns, or a pattern of numbered
    # columns ("negative_*": negative_1 .. negative_N, in numeric order)
    hf_negatives_field: str | list[str] | None = None
    hf_text_field: str = "text"
    format: Literal["pairs", "texts"] = "pairs"
    name: str | None = None
    instruction: str | None = None  # overrides the rows' own instruction
    # at most this many rows, a random subset drawn with the run's seed (the paper: at
    # most 500k per set in stage 1, 50k/10k in stage 2)
    limit: int | None = None
    in_batch_negatives: bool = True  # False for classification/clustering-style sets
    # Stage-1 task group (None: "reconstruction" for texts, "classification" for pairs):
    # reconstruction reads a text (a pair reads "{query}. {positive}") and the LM writes
    # "{instruction}.\n{text}"; retrieval sets mix query->passage / reconstruct the
    # passage / passage->query 30/28/42; classification-style sets reconstruct the
    # query 10% and write the positive 90%. The two shares below override the group's
    # (given one alone, the group's other share shrinks to fit under 1).
    alignment_tasks: AlignmentTasks | None = None
    reconstruct_prob: float | None = None  # share of reconstruction examples
    query_to_passage_prob: float | None = None  # share of query->passage; the rest p->q

    def __post_init__(self) -> None:
        given = [k for k in ("path", "bundled", "hf_dataset") if getattr(self, k)]
        if len(given) != 1:
            raise ConfigError(
                f"a data source needs exactly one of path, bundled, hf_dataset (got {given or 'none'})"
            )
        for key in ("reconstruct_prob", "query_to_passage_prob"):
            value = getattr(self, key)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{key} must be within [0, 1], got {value}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        reconstruct, to_passage = self.task_mix()
        if reconstruct + to_passage > 1.0 + 1e-9:
            raise ConfigError(
                f"reconstruct_prob ({reconstruct}) + query_to_passage_prob ({to_passage}) "
                "must not exceed 1 (passage->query takes the rest)"
            )

    def task_group(self, has_pairs: bool) -> str:
        """The stage-1 task group these rows are drawn for."""
        if self.alignment_tasks is not None:
            return self.alignment_tasks
        return "classification" if has_pairs else "reconstruction"

    def task_mix(self, has_pairs: bool = True) -> tuple[float, float]:
        """(reconstruct, query_to_passage) shares; passage_to_query is the rest."""
        reconstruct, to_passage = TASK_MIX_DEFAULTS[self.task_group(has_pairs)]
        if self.reconstruct_prob is not None:
            reconstruct = self.reconstruct_prob
            if self.query_to_passage_prob is None:  # the group's share shrinks to fit
                to_passage = min(to_passage, 1.0 - reconstruct)
        if self.query_to_passage_prob is not None:
            to_passage = self.query_to_passage_prob
            if self.reconstruct_prob is None:
                reconstruct = min(reconstruct, 1.0 - to_passage)
        return reconstruct, to_passage


@dataclass
class Objectives:
    """Stage-1 objectives and their weights."""

    lm: float = 1.0  # the paper's LM loss (decoder targets only)
    distill: float = 0.0  # ours: match the target's own embedding of the same English text
    distill_mse_weight: float = 1.0  # distillation = (1 - cosine) + w * MSE
    mask_prob: float = 0.0  # LLM-side token masking (0 in the paper's configs)
    max_target_length: int = 128


@dataclass
class StageConfig:
    """One training stage: an alignment run (stage 1) or a representation phase (stage 2).

    Its length is ``steps`` or ``epochs`` (passes over the loaded rows at ``batch_size``);
    with both, whichever ends first."""

    batch_size: int
    learning_rate: float
    data: list[DataSource]
    steps: int | None = None
    epochs: float | None = None
    name: str | None = None  # its folder under the run's output; the shorthand sections' own name
    objective: Objective | None = None  # given by the shorthand sections
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
    # "info_nce": each query against the batch's positives and negatives (optionally
    # "symmetric", adding positive -> query). "nt_xent": the reference's loss: queries and
    # their positives share a label, each negative its own, and every same-label pair is
    # scored against all other-label texts (symmetric by construction).
    loss: Literal["info_nce", "nt_xent"] = "info_nce"
    # the scores' similarity: cosine, or the reference's negative L2 distance between the
    # L2-normalised embeddings
    similarity: Literal["cosine", "negative_l2"] = "cosine"
    symmetric: bool = False
    num_positives: int = 1  # positives per query, drawn at random from the row's positives
    num_negatives: int = 0  # hard negatives per query, drawn at random from the row's
    # rows (stage 1) or texts (stage 2, by GradCache) per forward on each process, the
    # gradient accumulated to exactly one forward's; None: the whole local batch at once
    micro_batch: int | None = None
    use_head: bool = False  # compute the contrastive loss on the projection head's output
    # ours: weight of relational distillation from the original target (adapters off):
    # each text's LUSIFER embedding must pick out, among the batch, the target's own
    # embedding of the same English text (InfoNCE at `temperature`). For targets that are
    # already embedders (the demo's MiniLM): it keeps their English neighbourhoods.
    target_distill: float = 0.0
    # ours, routed models only (model.routes): weight of the cross-route contrastive
    # term, queries on the frozen native route against connector-route candidates and
    # connector-route queries against native candidates (the existing-index case)
    cross_route: float = 0.0
    # ours, routed models only: weight of 1 - cosine between each text's connector-route
    # embedding and its native-route embedding (absolute position, not only neighbourhoods)
    route_match: float = 0.0

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None:
            raise ConfigError("a stage needs steps or epochs")
        if (self.steps is not None and self.steps < 0) or self.batch_size < 1:
            raise ConfigError("steps must be >= 0 and batch_size >= 1")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if self.steps == 0 and self.connector_init == "random":
            raise ConfigError("steps: 0 only makes sense with connector_init: least_squares")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise ConfigError(f"micro_batch must be >= 1 (or null), got {self.micro_batch}")
        if self.num_positives < 1 or self.num_negatives < 0:
            raise ConfigError("num_positives must be >= 1 and num_negatives >= 0")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise ConfigError(
                f"stage name {self.name!r} must be a folder name (letters, digits, . _ -)"
            )
        if not self.data:
            raise ConfigError("a stage needs at least one data source")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.target_distill < 0:
            raise ConfigError(f"target_distill must be >= 0, got {self.target_distill}")
        if self.route_match < 0:
            raise ConfigError(f"route_match must be >= 0, got {self.route_match}")
        if self.cross_route < 0:
            raise ConfigError(f"cross_route must be >= 0, got {self.cross_route}")
        if self.target_distill > 0 and self.use_head:
            raise ConfigError(
                "target_distill compares embeddings with the target's own, so it needs "
                "use_head: false (the head's output lives in another space)"
            )

    def total_steps(self, rows: int) -> int:
        """Steps to run given the loaded rows: ``steps``, or ``epochs`` passes, whichever
        is fewer."""
        if self.epochs is None:
            assert self.steps is not None  # __post_init__: steps or epochs
            return int(self.steps)
        by_epochs = max(1, math.ceil(self.epochs * rows / self.batch_size))
        return by_epochs if self.steps is None else min(self.steps, by_epochs)

    def warmup(self, total_steps: int) -> int:
        """``warmup_steps``, or min(0.1 x steps, 500) as the paper."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(int(0.1 * total_steps), 500)


@dataclass
class RunConfig:
    output_dir: str = "runs/lusifer"
    seed: int = 777
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    max_length: int = 128  # encoder tokens per text during training
    # How a stage that trains none of the encoder runs it on CPU: "auto" = whichever of
    # onnxruntime and torch computes its token states faster on this machine (measured
    # once, cached; torch without onnxruntime), same states either way.
    frozen_encoder_backend: Literal["auto", "torch", "onnx"] = "auto"
    # Stage 2 embeds each batch in length-sorted chunks of this many rows, each padded to
    # its own longest text (same embeddings; the demo's batches were 53% padding). 0: the
    # whole batch at once. With several processes or GradCache, only the teacher pass is
    # chunked (DDP expects one forward per backward).
    length_bucket_rows: int = 0
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    report_to: list[str] = field(default_factory=list)  # "tensorboard", "wandb"
    allow_non_english: bool = False  # override the English-only guard (not recommended)
    min_english_fraction: float = 0.8

    def __post_init__(self) -> None:
        if self.length_bucket_rows < 0:
            raise ConfigError(
                f"run.length_bucket_rows must be >= 0 (0: off), got {self.length_bucket_rows}"
            )


@dataclass
class TrainConfig:
    model: LusiferConfig
    run: RunConfig = field(default_factory=RunConfig)
    alignment: StageConfig | None = None  # shorthand for a one-alignment-stage run
    representation: StageConfig | None = None  # shorthand for a one-representation-phase run
    stages: list[StageConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.stages and (self.alignment or self.representation):
            raise ConfigError(
                "give either a stages list or the alignment/representation sections, not both"
            )
        for objective in STAGES:
            section = getattr(self, objective)
            if section is None:
                continue
            for key in ("name", "objective"):
                if getattr(section, key) not in (None, objective):
                    raise ConfigError(
                        f"{objective}.{key} must be {objective!r} (or use a stages list)"
                    )
        names = []
        for i, stage in enumerate(self.stages):
            if stage.name is None or stage.objective is None:
                raise ConfigError(f"stages[{i}] needs a name and an objective")
            names.append(stage.name)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"stage names must be unique; repeated: {', '.join(duplicates)}")

    def stage_list(self) -> list[tuple[str, Objective, StageConfig]]:
        """(name, objective, config) of every stage, in the order they run."""
        if self.stages:
            return [(s.name, s.objective, s) for s in self.stages]  # type: ignore[misc]
        return [(o, o, getattr(self, o)) for o in STAGES if getattr(self, o) is not None]

    def stage(self, name: str) -> StageConfig:
        for stage_name, _, stage in self.stage_list():
            if stage_name == name:
                return stage
        raise ConfigError(
            f"no stage named {name!r}; stages: {', '.join(n for n, _, _ in self.stage_list())}"
        )


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    stages = data.get("stages")
    if keys[0] not in data and isinstance(stages, list):
        # a stage's name addresses that stage of the stages list
        named = [s for s in stages if isinstance(s, dict) and s.get("name") == keys[0]]
        if named:
            data, keys = named[0], keys[1:]
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose refusal of a scalar it parsed but cannot build (a date that
    does not exist, an integer beyond Python's 4300 digits, ``!!float x``) is a YAML error
    marking the value's line and column, not a bare ``ValueError``."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as err:
            value = str(node.value if isinstance(node, yaml.ScalarNode) else node.tag)
            shown = repr(value if len(value) <= 60 else value[:60] + "...")
            reason = str(err).split(";")[0][:120]
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {shown} ({reason})", node.start_mark
            ) from None


# YAML 1.2 reads 4e-4 and 1e5 as numbers; PyYAML's YAML 1.1 wants a dot (4.0e-4) and reads
# them as strings, which would refuse a learning rate written the usual way
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` (plain values only, no Python objects) whose every refusal is a
    ``yaml.YAMLError`` (or a ``RecursionError`` for nesting too deep)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["alignment.steps=200", "run.output_dir=out"]`` -> parsed (key, YAML value) pairs."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"override {item!r} must look like key=value (e.g. alignment.steps=200)"
            )
        try:
            value = safe_load_yaml(raw)
        except (yaml.YAMLError, RecursionError) as err:
            raise ConfigError(f"override {key.strip()}: {_yaml_problem(err)}") from None
        parsed.append((key.strip(), value))
    return parsed


def _yaml_problem(err: BaseException) -> str:
    """A YAML parser's refusal in one line (with its line and column when it knows them)."""
    if isinstance(err, RecursionError):
        return "not valid YAML (nested too deeply)"
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"not valid YAML ({problem}{where})"


def _read_yaml(path: Path) -> Any:
    """A YAML file's content; bad UTF-8 or bad YAML is a :class:`ConfigError` naming the
    file and line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{path}, line {line}: invalid UTF-8 byte {raw[err.start : err.start + 1]!r}; "
            "expected a UTF-8 encoded YAML file"
        ) from None
    try:
        return safe_load_yaml(text)
    except (yaml.YAMLError, RecursionError) as err:
        raise ConfigError(f"{path}: {_yaml_problem(err)}") from None


def load_train_config(
    path: str | Path | None, overrides: Sequence[str] = (), **extra: Any
) -> TrainConfig:
    """Read a YAML run file (or start empty), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = _read_yaml(path)
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    for key, value in parse_overrides(list(overrides)):
        _set_dotted(data, key, value)
    for key, value in extra.items():
        _set_dotted(data, key, value)
    try:
        return from_dict(TrainConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{path or 'config'}: {err}") from None
