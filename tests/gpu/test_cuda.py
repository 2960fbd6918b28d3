"""GPU paths (``pytest -m gpu``; skipped without CUDA, run by benchmarks/gpu_check.sh):
half-precision encode against fp32, the attention kernels, one training step per objective
on the GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import ENGLISH, tiny_run_config, write_run_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
TEXTS = [q for q, _ in ENGLISH] + ["Le chat dort.", "Кошка спит.", "猫が寝ている。"]


@pytest.fixture(scope="module")
def models():
    from lusifer import LusiferModel

    out = {}
    for target in ("bert", "llama"):
        model = LusiferModel.build(
            encoder="tiny:xlmr", target=f"tiny:{target}", projection_head=True
        )
        out[target] = model.to("cuda").eval()
    return out


@pytest.mark.parametrize("target", ["bert", "llama"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_encode_matches_fp32(models, target, dtype):
    model = models[target]
    want = model.encode(TEXTS)
    got = model.encode(TEXTS, dtype=dtype)
    cosines = (got * want).sum(axis=1)
    assert got.dtype == np.float32 and cosines.min() > 0.99, cosines.min()
    head = model.encode(TEXTS, dtype=dtype, use_head=True)
    assert np.isfinite(head).all()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_attention_kernels_agree(attention):
    from lusifer import LusiferModel

    model = LusiferModel.build(encoder="tiny:xlmr", target="tiny:llama").to("cuda").eval()
    base = model.encode(TEXTS)
    for module in (model.encoder, model.target.model):
        config = getattr(module, "config", None)
        if config is not None:
            config._attn_implementation = attention
    assert (model.encode(TEXTS) * base).sum(axis=1).min() > 0.9999


@pytest.mark.parametrize(
    ("stage", "target"),
    [("alignment", "llama"), ("alignment", "bert"), ("representation", "llama")],
)
def test_a_training_step_per_objective_on_the_gpu(tmp_path, stage, target):
    from lusifer.training import load_train_config, run_training

    sections = {
        "alignment": {"steps": 2, "micro_batch": 2},
        "representation": {"steps": 2, "micro_batch": 3},
    }
    config = tiny_run_config(tmp_path, target=target, **sections)
    config["run"]["mixed_precision"] = "bf16"
    out = run_training(load_train_config(write_run_config(tmp_path, config)), stages=[stage])
    assert out is not None and (out / "model.safetensors").is_file()
