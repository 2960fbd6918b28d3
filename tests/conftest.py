"""Shared fixtures: tiny random backbones (fast), a saved tiny model, and the tiers (``slow``: system tests and real-backbone integration tests).

Helpers that are not fixtures (the fake encoder, tiny task folders, ...) are in
``helpers.py``; tests import them from there, never from another test module.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import TINY_TARGETS, randomize_trained

__all__ = ["TINY_TARGETS", "randomize_trained"]  # older tests import them from here

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# results cached by one session never answer another's (module fixtures included)
os.environ["LUSIFER_EVAL_CACHE"] = tempfile.mkdtemp(prefix="lusifer-eval-cache-")
torch.set_num_threads(min(2, torch.get_num_threads()))

SYSTEM = Path(__file__).parent / "system"
# Slow tests in modules the trainer refactor owns (marked here, not in the module; the
# refactor moves them into unit/ and system/): torchrun runs, rehearsals, whole runs.
SLOW_TESTS = {
    "test_training.py::test_train_command_end_to_end",
    "test_paper_recipe.py::test_two_processes_give_the_gradients_of_one_process",
    "test_paper_recipe.py::test_paper_yaml_rehearses_with_two_processes",
}


def pytest_collection_modifyitems(config, items):
    """``slow``: everything under tests/system/, every ``integration`` test (real offline
    backbones) and :data:`SLOW_TESTS`. ``make test-fast`` (``-m "not slow"``) leaves them
    out; ``make test`` runs everything."""
    for item in items:
        path = Path(item.path)
        if (
            SYSTEM in path.parents
            or item.get_closest_marker("integration")
            or f"{path.name}::{item.originalname}" in SLOW_TESTS
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _private_evaluation_cache(tmp_path_factory, monkeypatch):
    """Each test sees an empty evaluation-results cache (results of one test, or of an
    earlier session, must not answer another's evaluation)."""
    monkeypatch.setenv("LUSIFER_EVAL_CACHE", str(tmp_path_factory.mktemp("eval-cache")))


@pytest.fixture(scope="session")
def tiny_model_factory():
    """``make(target="bert", **build_kwargs)``: a tiny LUSIFER model (tiny XLM-R encoder,
    randomised trained tensors), built once per arguments and shared: do not train it."""
    from lusifer import LusiferModel

    cache = {}

    def make(target: str = "bert", **kwargs):
        key = (target, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        if key not in cache:
            model = LusiferModel.build(encoder="tiny:xlmr", target=f"tiny:{target}", **kwargs)
            randomize_trained(model)
            cache[key] = model
        return cache[key]

    return make


@pytest.fixture(scope="session")
def saved_tiny_model(tmp_path_factory, tiny_model_factory):
    """``save_to(folder)``: a fresh copy of the tiny bert-target model's saved folder
    (``save_pretrained``, saved once per session) at ``folder``; returns ``folder``."""
    master = tiny_model_factory("bert").save_pretrained(
        tmp_path_factory.mktemp("tiny-model") / "model"
    )

    def save_to(folder: Path) -> Path:
        shutil.copytree(master, folder)
        return Path(folder)

    return save_to
