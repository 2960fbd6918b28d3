"""Shared fixtures: tiny random backbones (fast) and a helper to perturb trained weights."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# results cached by one session never answer another's (module fixtures included)
os.environ["LUSIFER_EVAL_CACHE"] = tempfile.mkdtemp(prefix="lusifer-eval-cache-")
torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_TARGETS = ["bert", "llama", "mistral", "qwen2"]


def randomize_trained(model, seed: int = 0) -> None:
    """Give every trained tensor (connector, head, LoRA, learned tokens) random values,
    so tests see a model whose adapters actually do something (LoRA B starts at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("connector.", "head.")) or "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


@pytest.fixture(autouse=True)
def _private_evaluation_cache(tmp_path_factory, monkeypatch):
    """Each test sees an empty evaluation-results cache (results of one test, or of an
    earlier session, must not answer another's evaluation)."""
    monkeypatch.setenv("LUSIFER_EVAL_CACHE", str(tmp_path_factory.mktemp("eval-cache")))


@pytest.fixture(scope="session")
def tiny_model_factory():
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
