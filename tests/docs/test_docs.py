"""docs/reference/run-files.md names every key a run file may hold."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lusifer.config import LoraSettings, LusiferConfig, RouteSettings
from lusifer.training.config import DataSource, Objectives, RunConfig, StageConfig, TrainConfig

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "run-files.md"


def test_run_files_page_names_every_key():
    text = PAGE.read_text(encoding="utf-8")
    classes = (
        TrainConfig,
        LusiferConfig,
        LoraSettings,
        RouteSettings,
        RunConfig,
        StageConfig,
        Objectives,
        DataSource,
    )
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in classes
        for f in dataclasses.fields(cls)
        if f"`{f.name}`" not in text
    ]
    assert not missing, f"docs/reference/run-files.md does not name: {missing}"
