"""Both stages end to end: build the model, train alignment then representation, save."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..config import ConfigError
from ..files import atomic_write, remove_partial
from ..model import LusiferModel
from ..model.lusifer import CONFIG_NAME, WEIGHTS_NAME
from .checkpoints import CheckpointWriteError
from .config import TrainConfig, load_train_config
from .engine import StageTrainer
from .records import SUMMARY_NAME

CONFIG_FILE = "train_config.yaml"
# run settings that do not change what is trained (the guard's settings only decide
# whether the same data is accepted)
BOOKKEEPING = {
    "run.output_dir",
    "run.frozen_encoder_backend",
    "run.length_bucket_rows",
    "run.save_every",
    "run.keep_checkpoints",
    "run.log_every",
    "run.report_to",
    "run.allow_non_english",
    "run.min_english_fraction",
}
# filled in from the backbones when the model is built (their names are compared)
DERIVED = ("model.encoder_signature", "model.target_signature")


def _differences(old: object, new: object, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            diff
            for key in sorted(set(old) | set(new))
            for diff in _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def _plain(config: TrainConfig) -> dict:
    return yaml.safe_load(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def check_resumable(out: Path, config: TrainConfig) -> None:
    """Refuse to resume a run folder that was started with another recipe: its
    checkpoints and finished stages would silently mix two trainings."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return
    try:
        # read through the config classes, so keys added since then take their defaults
        previous = _plain(load_train_config(path))
    except (OSError, yaml.YAMLError, ConfigError) as err:
        raise ConfigError(f"{path} cannot be read ({err}); delete {out} to train afresh") from None
    current = _plain(config)
    changed = [
        d
        for d in _differences(previous, current)
        if d.split(":", 1)[0] not in BOOKKEEPING and not d.startswith(DERIVED)
    ]
    if changed:
        raise ConfigError(
            f"{out} holds a run started with another config ({'; '.join(changed)}); "
            "resume with the same config, train into another output folder, or start over "
            "(lusifer train --overwrite)"
        )


def _load_trained(model: LusiferModel, folder: Path) -> None:
    model.load_trained_state_dict(load_file(str(folder / WEIGHTS_NAME)), source=str(folder))


def _remove_partial_saves(out: Path, names: list[str]) -> None:
    """Remove the temporaries of saves a killed run did not finish (``.model.tmp-*`` in
    the run folder, ``.final.tmp-*`` in a stage's folder); checkpoints clean their own."""
    for folder in [out, *(out / name for name in names)]:
        if folder.is_dir():
            for tmp in remove_partial(folder, only_dead=False):
                tqdm.write(f"removed {tmp}, a save that did not finish")


def _save_model(model: LusiferModel, folder: Path, kept: str, training: Any = None) -> None:
    try:
        model.save_pretrained(folder, training=training)  # the card names the recipe
    except Exception as err:
        raise CheckpointWriteError(folder, kept, err) from err


def _check_stage_names(plan: list, stages: list[str] | None) -> list[str]:
    """The plan's stage names; refuses an empty plan and unknown ``stages``."""
    names = [name for name, _, _ in plan]
    if not plan:
        raise ConfigError("the config has no stages (give a stages list or an alignment section)")
    unknown = [s for s in stages or [] if s not in names]
    if unknown:
        raise ConfigError(
            f"no stage named {', '.join(map(repr, unknown))}; this config's stages: "
            f"{', '.join(names)}"
        )
    return names


def run_training(
    config: TrainConfig,
    *,
    stages: list[str] | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    accelerator: Accelerator | None = None,
    model: LusiferModel | None = None,
    stop_after: int | None = None,
) -> Path | None:
    """Train the configured stages in order and return the final model folder
    (``<output_dir>/model``), or None when interrupted (resume later with ``resume``).

    Layout: ``<output_dir>/<stage name>/{checkpoints/, log.jsonl, summary.json, final/}``
    and ``<output_dir>/model``. ``stages`` picks stages by name (default: all). A
    finished stage is skipped on resume; a stage whose previous stage did not run in
    this call starts from that stage's ``final`` when there is one, or from
    ``init_from``. ``stop_after`` stops each stage after that step as if interrupted.
    """
    out = Path(config.run.output_dir)
    plan = config.stage_list()
    names = _check_stage_names(plan, stages)
    accelerator = accelerator or Accelerator(
        mixed_precision=config.run.mixed_precision,
        log_with=config.run.report_to or None,
        project_dir=str(out),
    )
    if config.run.report_to:
        accelerator.init_trackers("lusifer")
    if resume:
        check_resumable(out, config)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            _remove_partial_saves(out, names)
        atomic_write(out / CONFIG_FILE, yaml.safe_dump(_plain(config), sort_keys=False))
    set_seed(config.run.seed)  # the connector's initialisation is part of the run
    model = model or LusiferModel.build(config.model)
    if init_from is not None:
        _load_trained(model, Path(init_from))
    model.to(accelerator.device)
    ran_previous = False
    for index, (name, objective, stage_config) in enumerate(plan):
        if stages and name not in stages:
            ran_previous = False
            continue
        stage_dir = out / name
        final = stage_dir / "final"
        if resume and (final / CONFIG_NAME).is_file():
            tqdm.write(f"{name}: already finished ({final}), skipping")
            _load_trained(model, final)
            ran_previous = True
            continue
        if index > 0 and not ran_previous and init_from is None:
            previous = out / plan[index - 1][0] / "final"
            if (previous / CONFIG_NAME).is_file():
                _load_trained(model, previous)
        trainer = StageTrainer(
            model, name, stage_config, config.run, stage_dir, accelerator, objective=objective
        )
        if not trainer.train(resume=resume, stop_after=stop_after):
            return None
        if accelerator.is_main_process:
            kept = f"{name}'s last checkpoint (in {trainer.checkpoint_root}) is intact"
            _save_model(model, final, kept)
        accelerator.wait_for_everyone()
        ran_previous = True
    if accelerator.is_main_process:
        _save_model(model, out / "model", "every stage's final model is intact", config)
        _report_skipped(out, [name for name, _, _ in plan])
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out / "model"


def _report_skipped(out: Path, names: list[str]) -> None:
    """At the end of a run, say which data sets had empty rows skipped (from each stage's
    summary.json), so a set that lost most of its rows does not go unnoticed."""
    for name in names:
        path = out / name / SUMMARY_NAME
        if not path.is_file():
            continue
        skipped = json.loads(path.read_text()).get("rows_skipped", {})
        for source, n in skipped.items():
            if n:
                tqdm.write(f"{name}: {source}: {n} empty row(s) skipped")
