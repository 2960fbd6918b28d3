"""One loader (``lusifer.load``) and where it places a model: the automatic device
(``cuda:LOCAL_RANK`` under torchrun, else cuda, mps, cpu), explicit devices, refusals,
and ``--device`` on every command that encodes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lusifer
import lusifer.devices
import lusifer.loading
import lusifer.serving
from lusifer import LusiferModel, PlainEmbedder, default_device, load, load_embedder
from lusifer.cli import app
from lusifer.loading import embedder_device, resolve_device

runner = CliRunner()
CUDA = torch.cuda.is_available()
TEXTS = ["The cat sleeps on the sofa", "Le chat dort sur le canapé", "Кошка спит на диване"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, saved_tiny_model) -> Path:
    """A saved tiny LUSIFER model."""
    return saved_tiny_model(tmp_path_factory.mktemp("m") / "model")


def _machine(monkeypatch, gpus: int) -> None:
    """A machine that reports ``gpus`` CUDA GPUs (no tensor may go there), no MPS and no
    torchrun rank."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(lusifer.devices, "_mps_available", lambda: False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


@pytest.fixture
def fake_gpus(monkeypatch):
    """A machine that reports two CUDA GPUs and no MPS."""
    _machine(monkeypatch, 2)


@pytest.fixture
def no_gpu(monkeypatch):
    _machine(monkeypatch, 0)


def devices_of(encoder) -> set[str]:
    return {p.device.type for p in encoder.parameters()} | {
        b.device.type for b in encoder.buffers()
    }


# --------------------------------------------------------------------------- the loader


def test_explicit_cpu_places_every_parameter_on_the_cpu(folder):
    model = load(folder, device="cpu")
    assert isinstance(model, LusiferModel)
    assert devices_of(model) == {"cpu"}
    plain = load("tiny:bert", device="cpu")
    assert isinstance(plain, PlainEmbedder)
    assert devices_of(plain) == {"cpu"}
    assert embedder_device(model) == torch.device("cpu")
    # the torch backend's own loader places as lusifer.load does
    assert devices_of(load_embedder(folder, device="cpu")) == {"cpu"}
    # and the placed model encodes as the unplaced one does
    want = LusiferModel.from_pretrained(folder).encode(TEXTS)
    assert np.abs(model.encode(TEXTS) - want).max() < 1e-5


def test_the_automatic_device_under_torchrun_is_the_local_rank_gpu(fake_gpus, monkeypatch):
    assert default_device() == torch.device("cuda")  # one process: the current GPU
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert default_device() == torch.device("cuda:1")
    assert resolve_device(None) == torch.device("cuda:1")
    assert resolve_device("cuda") == torch.device("cuda:1")  # a bare cuda: this rank's GPU
    assert resolve_device("cuda:0") == torch.device("cuda:0")  # an explicit one stays
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "3")  # more processes than GPUs: they share them
    assert default_device() == torch.device("cuda:1")


def test_the_automatic_device_without_cuda(no_gpu, monkeypatch):
    assert default_device() == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun on CPU: gloo, every rank on the CPU
    assert default_device() == torch.device("cpu")
    monkeypatch.setattr(lusifer.devices, "_mps_available", lambda: True)
    assert default_device() == torch.device("mps")


def test_bad_devices_are_clear_errors(no_gpu):
    for bad in ("gpu", "cuda:abc", "", "meta"):
        with pytest.raises(ValueError, match=r"cpu") as err:
            resolve_device(bad)
        assert "available" in str(err.value) or "use" in str(err.value)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        load("tiny:bert", device="gpu")
    with pytest.raises(ValueError, match="needs CUDA"):
        load("tiny:bert", device="cuda")
    with pytest.raises(ValueError, match="not available"):
        resolve_device("mps")


def test_a_gpu_past_the_last_is_refused(fake_gpus):
    with pytest.raises(ValueError, match=r"2 GPU\(s\).*cuda:0, cuda:1"):
        resolve_device("cuda:2")


def test_onnx_on_a_gpu_is_refused_before_anything_loads(fake_gpus, monkeypatch):
    import lusifer.model

    def must_not_load(*_, **__):
        raise AssertionError("loaded a model")

    monkeypatch.setattr(lusifer.model, "load_embedder", must_not_load)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=r"onnx backend runs on the CPU only.*--device cpu"):
            load("tiny:bert", backend="onnx", device=device)
    with pytest.raises(ValueError, match="quantize"):
        load("tiny:bert", backend="torch", quantize="int4")
    with pytest.raises(ValueError, match="torch, onnx, auto"):
        load("tiny:bert", backend="tensorrt")


def test_onnx_without_a_device_runs_on_the_cpu_even_beside_a_gpu(fake_gpus, monkeypatch):
    import lusifer.onnx.backends as backends

    seen = {}
    monkeypatch.setattr(backends, "onnx_embedder", lambda ref, **kw: seen.update(ref=ref) or "g")
    assert load("tiny:bert", backend="onnx") == "g" and seen == {"ref": "tiny:bert"}


def test_auto_on_a_gpu_is_torch_without_calibrating(fake_gpus, monkeypatch):
    import lusifer.onnx.backends as backends

    placed = []

    def fake_place(encoder, device=None):  # no tensor may go to the fake GPU
        placed.append(resolve_device(device))
        return encoder

    def no_calibration(*_, **__):
        raise AssertionError("calibrated on a GPU")

    monkeypatch.setattr(lusifer.loading, "place", fake_place)
    monkeypatch.setattr(lusifer.devices, "place", fake_place)  # load_embedder's
    monkeypatch.setattr(backends, "fastest_backend", no_calibration)
    for device in (None, "cuda", "cuda:1"):
        encoder = load("tiny:bert", backend="auto", device=device)
        assert isinstance(encoder, PlainEmbedder)
    assert placed[-1] == torch.device("cuda:1") and placed[0] == torch.device("cuda")


def test_auto_keeps_a_model_on_a_non_cpu_device_on_torch():
    from lusifer.onnx.backends import fastest_backend

    embedder = PlainEmbedder.load("tiny:bert").to("meta")
    assert fastest_backend(embedder, threads=1) is embedder


def test_each_rank_of_an_evaluation_takes_its_own_gpu(fake_gpus, monkeypatch):
    from lusifer.evaluation import distributed

    assert distributed.rank_device() is None  # one process: models stay where they are
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.rank_device() == torch.device("cuda:1")
    assert distributed.rank_device("cuda") == torch.device("cuda:1")
    assert distributed.rank_device("cpu") == torch.device("cpu")
    module = torch.nn.Linear(2, 2)
    distributed.place_models([module, object()], "cpu")  # others are left alone
    assert module.weight.device.type == "cpu"


def test_evaluation_ranks_stay_put_without_cuda(no_gpu, monkeypatch):
    from lusifer.evaluation import distributed

    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.rank_device() is None


# --------------------------------------------------------------------------- the commands


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_encode_and_search_take_device_cpu(tmp_path, folder):
    src = write_lines(tmp_path / "in.txt", TEXTS)
    out = tmp_path / "out.npy"
    result = runner.invoke(
        app, ["encode", str(folder), str(src), "-o", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    want = LusiferModel.from_pretrained(folder).encode(TEXTS)
    assert np.abs(np.load(out) - want).max() < 1e-5
    shards = tmp_path / "shards"
    args = ["encode", str(folder), str(src), "-o", str(shards), "--store-text", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", str(shards), TEXTS[1], "--k", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert TEXTS[1] in result.output.splitlines()[1]
    # a bad device is one line and exit code 2, for each command
    for args in (
        ["encode", str(folder), str(src), "-o", str(tmp_path / "bad.npy")],
        ["search", str(shards), "x"],
    ):
        result = runner.invoke(app, [*args, "--device", "gpu"])
        assert result.exit_code == 2, result.output
        assert "unknown device 'gpu'" in result.output and "cpu" in result.output
    result = runner.invoke(app, ["encode", "tiny:bert", str(src), "-o", str(tmp_path / "x.npy")])
    assert result.exit_code == 0, result.output  # no --device: automatic


def test_encode_refuses_onnx_on_cuda(tmp_path, fake_gpus):
    src = write_lines(tmp_path / "in.txt", TEXTS)
    args = ["encode", "tiny:bert", str(src), "-o", str(tmp_path / "x.npy"), "--backend", "onnx"]
    result = runner.invoke(app, [*args, "--device", "cuda"])
    assert result.exit_code == 2
    assert "onnx backend runs on the CPU only" in result.output


def test_evaluate_takes_device_cpu(tmp_path):
    task = tmp_path / "tasks" / "TinySTS"
    task.mkdir(parents=True)
    meta = {"name": "TinySTS", "type": "sts", "languages": ["en"]}
    (task / "task.json").write_text(json.dumps({**meta, "source": "test", "license": "cc0-1.0"}))
    rows = [{"sentence1": f"a {i}", "sentence2": f"b {i}", "score": i % 5} for i in range(12)]
    (task / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["evaluate", "tiny:bert", "--task-dir", str(task), "--bootstrap", "0"]
    args += ["--output", str(tmp_path / "o"), "--no-cache", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "results.json").is_file()
    result = runner.invoke(app, [*args[:-1], "cuda:abc"])
    assert result.exit_code == 2 and "unknown device 'cuda:abc'" in result.output


def test_serve_takes_device_cpu(monkeypatch, folder):
    from fastapi.testclient import TestClient

    real_create_app = lusifer.serving.create_app
    made = {}

    def create_app(encoder, **kwargs):
        made["encoder"] = encoder
        made["app"] = real_create_app(encoder, **kwargs)
        return made["app"]

    monkeypatch.setattr(lusifer.serving, "create_app", create_app)
    monkeypatch.setattr(lusifer.serving, "serve", lambda app, **kw: made.update(served=kw))
    monkeypatch.delenv("LUSIFER_API_KEY", raising=False)
    result = runner.invoke(app, ["serve", str(folder), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert devices_of(made["encoder"]) == {"cpu"} and made["served"]["port"] == 8000
    with TestClient(made["app"]) as client:
        answer = client.post("/v1/embeddings", json={"input": TEXTS[0]})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"][0]["embedding"]) == made["encoder"].embedding_size
    result = runner.invoke(app, ["serve", str(folder), "--device", "gpu"])
    assert result.exit_code == 2 and "unknown device" in result.output


def test_mine_takes_device_cpu(tmp_path):
    topics = ["cats sleep a lot", "trains leave at eight", "tea is made from leaves"]
    topics += ["bees make honey", "violins have strings", "the moon orbits the earth"]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"query": f"about {t}?", "positive": t}) + "\n" for t in topics)
    )
    out = tmp_path / "mined.jsonl"
    args = ["mine", "tiny:bert", str(pairs), "-o", str(out), "--skip", "1", "--top-k", "4"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == len(topics)
    result = runner.invoke(app, [*args, "--device", "gpu", "--overwrite"])
    assert result.exit_code == 2 and "unknown device" in result.output


def test_every_encoding_command_lists_the_device_choice():
    for command in ("encode", "evaluate", "serve", "search", "mine"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "--device" in result.output and "LOCAL_RANK" in result.output, command


@pytest.mark.slow  # new processes (or a fuzz run): the full suite only
def test_python_dash_m_lusifer_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "lusifer", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "encode" in result.stdout and "evaluate" in result.stdout
    assert "lusifer" in result.stdout


@pytest.mark.slow  # new processes (or a fuzz run): the full suite only
def test_import_lusifer_does_not_import_onnxruntime():
    code = "import sys, lusifer; lusifer.load; print('onnxruntime' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------- on a real GPU


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_on_cuda_the_default_places_every_parameter_on_the_gpu(folder):
    model = load(folder)
    assert devices_of(model) == {"cuda"}
    plain = load("tiny:bert", backend="auto")  # auto on a GPU: torch there
    assert devices_of(plain) == {"cuda"}
    want = LusiferModel.from_pretrained(folder).encode(TEXTS)
    assert np.abs(model.encode(TEXTS) - want).max() < 1e-3
    assert devices_of(load(folder, device="cpu")) == {"cpu"}
    last = f"cuda:{torch.cuda.device_count() - 1}"
    assert {p.device for p in load("tiny:bert", device=last).parameters()} == {torch.device(last)}


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_on_cuda_the_commands_run_on_the_gpu(tmp_path, folder, monkeypatch):
    src = write_lines(tmp_path / "in.txt", TEXTS)
    want = LusiferModel.from_pretrained(folder).encode(TEXTS)
    for device in ([], ["--device", "cuda"]):
        out = tmp_path / f"out{len(device)}.npy"
        result = runner.invoke(app, ["encode", str(folder), str(src), "-o", str(out), *device])
        assert result.exit_code == 0, result.output
        assert np.abs(np.load(out) - want).max() < 1e-3
    made = {}
    monkeypatch.setattr(lusifer.serving, "create_app", lambda enc, **kw: made.update(enc=enc))
    monkeypatch.setattr(lusifer.serving, "serve", lambda app, **kw: None)
    monkeypatch.delenv("LUSIFER_API_KEY", raising=False)
    result = runner.invoke(app, ["serve", str(folder)])
    assert result.exit_code == 0, result.output
    assert devices_of(made["enc"]) == {"cuda"}  # the bug: serve loaded on the CPU
