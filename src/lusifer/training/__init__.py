"""Two-stage English-only training: alignment, then representation finetuning."""

from .config import DataSource, Objectives, RunConfig, StageConfig, TrainConfig, load_train_config
from .pipeline import run_training

__all__ = [
    "DataSource",
    "Objectives",
    "RunConfig",
    "StageConfig",
    "TrainConfig",
    "load_train_config",
    "run_training",
]
