"""``lusifer train --estimate``: parameter counts at full size on the meta device, and a
memory estimate per GPU that moves the right way with GPUs, engines and memory."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from lusifer.training.config import load_train_config
from lusifer.training.estimate import (
    PAPER_TRAINABLE,
    count_parameters,
    estimate_run,
    format_estimate,
)

PAPER = Path(__file__).parents[2] / "src/lusifer/configs/paper.yaml"


@pytest.fixture(scope="module")
def paper():
    return load_train_config(PAPER)


def test_paper_recipe_trains_as_many_parameters_as_the_paper_says(paper):
    estimates = estimate_run(paper, gpus=8, gpu_memory_gib=80)
    assert [e.objective for e in estimates] == ["alignment"] * 2 + ["representation"] * 2
    for est in estimates:  # 12.4M and 87.9M in the paper, rounded
        assert est.trainable == pytest.approx(PAPER_TRAINABLE[est.objective], rel=0.01)
    # XLM-R-large (560M) + Mistral-7B (7.25B) + adapters, connector and head
    assert 7.8e9 < estimates[0].total < 8.0e9
    report = format_estimate(estimates, gpus=8, gpu_memory_gib=80)
    assert "| align-reconstruct | alignment | 12.3M | 12.4M |" in report
    assert "| rep-all | representation | 87.8M | 87.9M |" in report


def test_counts_on_the_meta_device_equal_a_built_model():
    from lusifer import LusiferModel
    from lusifer.config import LoraSettings, LusiferConfig

    lora = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    config = LusiferConfig(
        encoder="tiny:xlmr",
        target="tiny:llama",
        encoder_lora=lora,
        target_lora=lora,
        projection_head=True,
        num_learned_tokens=2,
    )
    counts = count_parameters(config)
    model = LusiferModel.build(config)
    assert counts.total == sum(p.numel() for p in model.parameters())
    model.freeze(connector=True, head=True, encoder_lora=True, target_lora=True)
    trained = counts.connector + counts.head + counts.encoder_lora + counts.target_lora
    assert trained == model.trainable_parameter_count()


def test_memory_moves_with_gpus_engines_and_memory(paper):
    few = estimate_run(paper, gpus=2, gpu_memory_gib=80)
    many = estimate_run(paper, gpus=8, gpu_memory_gib=80)
    for a, b in zip(few, many, strict=True):
        assert a.rows_per_gpu == 4 * b.rows_per_gpu
        assert a.memory_gib["fsdp"] > b.memory_gib["fsdp"]
        for est in (a, b):
            assert est.memory_gib["zero3"] <= est.memory_gib["zero2"] <= est.memory_gib["ddp"]
    # stage 1 forwards micro-batches of 16 rows (the reference's): the same on 2 or 8 GPUs
    assert few[0].per_forward == many[0].per_forward == 16
    assert few[0].activation_gib == many[0].activation_gib
    unbatched = copy.deepcopy(paper)
    unbatched.stages[0].micro_batch = None  # the whole local slice at once: 128 rows on 2 GPUs
    whole = estimate_run(unbatched, gpus=2, gpu_memory_gib=80)[0]
    assert not whole.fits["ddp"] and whole.micro_batch_that_fits["ddp"] < 128
    small = estimate_run(paper, gpus=8, gpu_memory_gib=40)
    assert small[0].micro_batch_that_fits["ddp"] <= many[0].micro_batch_that_fits["ddp"]
    with pytest.raises(ValueError, match="gpus"):
        estimate_run(paper, gpus=0)


def test_train_estimate_prints_and_writes_the_table(tmp_path):
    from typer.testing import CliRunner

    from lusifer.cli import app

    args = ["train", str(PAPER), "--estimate", "--gpus", "4", "--gpu-memory", "40"]
    result = CliRunner().invoke(app, [*args, "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Estimate for 4 GPU(s) of 40 GiB" in result.output
    assert "| rep-all | representation | 87.8M | 87.9M |" in result.output
    assert (tmp_path / "estimate.md").read_text().startswith("Estimate for 4 GPU(s)")
    assert not (tmp_path / "align-reconstruct").exists()  # nothing trained


def test_estimate_measure_runs_real_steps_at_two_depths(tmp_path):
    """--measure on the CPU with the tiny backbones: every stage measured, extrapolated."""
    from helpers import tiny_run_config, write_run_config
    from typer.testing import CliRunner

    from lusifer.cli import app

    config = tiny_run_config(tmp_path, alignment={"micro_batch": 2})
    path = write_run_config(tmp_path, config)
    result = CliRunner().invoke(app, ["train", str(path), "--estimate", "--measure", "--gpus", "1"])
    assert result.exit_code == 0, result.output
    table = result.output.split("Measured")[1]
    assert "| alignment | cpu | 1, 2 |" in table and "| representation | cpu | 1, 2 |" in table
    result = CliRunner().invoke(app, ["train", str(path), "--measure"])
    assert result.exit_code != 0 and "only with --estimate" in result.output
