"""The speed paths change no result: one threading policy, the ``auto`` backend's cached
calibration, and stage 2's length-sorted chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import FakeEmbedder, tiny_run_config, write_run_config

from lusifer import load
from lusifer.model import PlainEmbedder
from lusifer.onnx import OnnxEncoderStates, OnnxLusifer, OnnxPlainEmbedder
from lusifer.onnx import calibration as calib
from lusifer.onnx.backends import backend_of, fastest_backend
from lusifer.threads import cpu_threads, thread_policy
from lusifer.training.bucketing import embed_by_length, length_sorted_chunks

TEXTS = ["a", "a somewhat longer text than the first", "mid size text", "", "x " * 30]


# ----------------------------------------------------------------------- threads
def test_processes_on_one_machine_share_its_cores(monkeypatch):
    monkeypatch.delenv("LUSIFER_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cores = cpu_threads()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cpu_threads() == max(1, cores // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * cores))
    assert cpu_threads() == 1  # never 0
    monkeypatch.setenv("LUSIFER_NUM_THREADS", "3")
    assert cpu_threads() == 3  # an explicit setting wins
    assert cpu_threads(5) == 5
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="threads"):
            cpu_threads(bad)


def test_onnxruntime_spins_only_without_torch_alongside():
    alone, mixed = thread_policy(2), thread_policy(2, alongside_torch=True)
    assert (alone.threads, alone.spinning, mixed.spinning) == (2, True, False)
    entry = "session.intra_op.allow_spinning"
    assert alone.session_options().get_session_config_entry(entry) == "1"
    options = mixed.session_options()
    assert options.get_session_config_entry(entry) == "0"
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)


# ------------------------------------------------------------------ calibration
def _fake(name: str, per_text_s: float, fingerprint: str = "fp") -> FakeEmbedder:
    """An encoder whose speed is set by the test (sleep per text)."""
    return FakeEmbedder(name, dim=2, per_text=per_text_s, fingerprint=fingerprint)


@pytest.fixture
def small_calibration(monkeypatch, tmp_path):
    monkeypatch.setenv("LUSIFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(calib, "CALIBRATION_TEXTS", calib.CALIBRATION_TEXTS[:8])
    monkeypatch.setattr(
        calib, "calibrate", _short(calib.calibrate, texts=calib.CALIBRATION_TEXTS[:8])
    )
    return tmp_path / "cache" / "calibration"


def _short(fn, **fixed):
    return lambda candidates, **kw: fn(candidates, **{"rounds": 2, "batch_size": 4, **fixed, **kw})


@pytest.mark.parametrize("faster", ["torch", "onnx"])
def test_auto_picks_the_measured_faster_backend_and_caches_the_choice(small_calibration, faster):
    slow, quick = 0.004, 0.0005
    torch_side = _fake("torch", quick if faster == "torch" else slow, fingerprint=faster)
    built = []

    def build():
        built.append(_fake("onnx", quick if faster == "onnx" else slow))
        return built[-1]

    chosen, result = calib.fastest(torch_side, build, threads=1)
    assert result.choice == faster and not result.cached
    assert (chosen is torch_side) == (faster == "torch")
    assert result.texts_per_s[faster] > result.texts_per_s["torch" if faster == "onnx" else "onnx"]
    (record,) = small_calibration.glob("*.json")
    assert json.loads(record.read_text())["choice"] == faster
    assert json.loads(record.read_text())["machine"]["threads"] == 1

    # a second process reads the choice: no measuring, the other backend never built
    n_built = len(built)
    torch_side.calls.clear()
    chosen, again = calib.fastest(torch_side, build, threads=1)
    assert again.cached and again.choice == faster and not torch_side.calls
    assert len(built) == n_built + (1 if faster == "onnx" else 0)
    # another thread count is another measurement
    _, other = calib.fastest(torch_side, build, threads=2)
    assert not other.cached
    # a damaged record is measured again, not trusted
    record.write_text("{not json")
    _, redone = calib.fastest(torch_side, build, threads=1)
    assert not redone.cached and redone.choice == faster


def test_auto_backend_on_a_real_tiny_model(small_calibration, tiny_model_factory, tmp_path):
    model = tiny_model_factory("bert")
    chosen = fastest_backend(model, source=None, threads=1)
    assert isinstance(chosen, type(model) | OnnxLusifer)
    want = model.encode(TEXTS, max_length=32)
    got = chosen.encode(TEXTS, max_length=32)
    assert np.abs(got - want).max() < 1e-4  # either backend: the same embeddings
    assert len(list(small_calibration.glob("*.json"))) == 1
    assert backend_of(chosen) in ("torch", "onnx")

    plain = load("tiny:bert", backend="auto", threads=1)
    assert isinstance(plain, PlainEmbedder | OnnxPlainEmbedder)
    assert len(list(small_calibration.glob("*.json"))) == 2
    with pytest.raises(ValueError, match="--backend onnx"):
        load("tiny:bert", backend="auto", quantize="int8")


@pytest.mark.parametrize("error", [ImportError("No module named 'onnx'"), "export"])
def test_auto_falls_back_to_torch_when_the_graph_cannot_be_built(
    small_calibration, monkeypatch, error
):
    from lusifer.onnx.export import OnnxExportError

    def fail(*_, **__):
        raise error if isinstance(error, Exception) else OnnxExportError("read-only cache")

    monkeypatch.setattr(OnnxPlainEmbedder, "from_embedder", fail)
    embedder = PlainEmbedder.load("tiny:bert", max_length=32)
    with pytest.warns(UserWarning, match="using torch"):
        assert fastest_backend(embedder, threads=1) is embedder


def test_auto_stays_on_torch_for_a_decoder_backbone(small_calibration):
    decoder = PlainEmbedder.load("tiny:llama", max_length=32)
    assert fastest_backend(decoder) is decoder
    assert not small_calibration.exists()  # nothing measured


# ---------------------------------------------------------------------- buckets
def test_length_sorted_chunks_trim_padding_and_keep_every_row():
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]])
    ids = torch.arange(20).reshape(4, 5) * mask
    chunks, order = length_sorted_chunks({"input_ids": ids, "attention_mask": mask}, rows=2)
    assert order.tolist() == [1, 3, 0, 2]  # longest first
    assert [c["attention_mask"].shape for c in chunks] == [(2, 5), (2, 2)]
    # every token survives, in its row
    rebuilt = torch.zeros_like(ids)
    start = 0
    for chunk in chunks:
        n, width = chunk["input_ids"].shape
        rebuilt[order[start : start + n], :width] = chunk["input_ids"]
        start += n
    assert torch.equal(rebuilt, ids)
    with pytest.raises(ValueError, match="rows"):
        length_sorted_chunks({"attention_mask": mask}, rows=0)


@pytest.mark.parametrize("target", ["bert", "llama"])
def test_chunked_embeddings_and_gradients_equal_the_whole_batch(tiny_model_factory, target):
    model = tiny_model_factory(target)
    model.eval()  # no dropout: the two ways must agree row by row
    texts = [t * (1 + i % 3) for i, t in enumerate(TEXTS * 3)]
    enc = model.tokenize(texts, max_length=32)
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "pool_mask") if k in enc}

    def embed(batch):
        return model(batch["input_ids"], batch["attention_mask"], batch.get("pool_mask"))

    params = [p for p in model.parameters() if p.requires_grad]
    whole = embed(inputs)
    grads_whole = torch.autograd.grad(whole.square().sum(), params)
    chunked = embed_by_length(embed, inputs, rows=4)
    grads_chunked = torch.autograd.grad(chunked.square().sum(), params)
    assert torch.allclose(whole, chunked, atol=1e-5)
    for a, b in zip(grads_whole, grads_chunked, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_stage_two_with_length_buckets_trains_like_the_whole_batch(tmp_path, monkeypatch):
    """Same data, same steps: with chunks of 2 rows (the teacher pass too) the trained
    tensors and losses equal the whole-batch run's up to rounding (no dropout here)."""
    from safetensors.torch import load_file

    from lusifer.training import backward, engine, load_train_config, run_training
    from lusifer.training.bucketing import length_sorted_chunks

    calls = []
    monkeypatch.setattr(  # the teacher pass
        engine, "embed_by_length", lambda *a, **k: calls.append(1) or embed_by_length(*a, **k)
    )
    monkeypatch.setattr(  # the student pass
        backward,
        "length_sorted_chunks",
        lambda *a, **k: calls.append(1) or length_sorted_chunks(*a, **k),
    )
    weights, losses = {}, {}
    for rows in (0, 2):
        folder = tmp_path / f"rows{rows}"
        folder.mkdir()
        config = tiny_run_config(
            folder, target="bert", alignment={"steps": 1}, representation={"target_distill": 1.0}
        )
        config["run"]["length_bucket_rows"] = rows
        out = run_training(load_train_config(write_run_config(folder, config)))
        weights[rows] = load_file(str(out / "model.safetensors"))
        log = (folder / "out" / "representation" / "log.jsonl").read_text().splitlines()
        losses[rows] = [json.loads(line)["loss"] for line in log]
    assert len(losses[0]) == 6 and len(calls) == 12  # student and teacher, each step
    assert np.allclose(losses[0], losses[2], atol=1e-4)
    drift = max(float((weights[0][k] - weights[2][k]).abs().max()) for k in weights[0])
    assert drift < 1e-4


@pytest.mark.parametrize("faster", ["torch", "onnx"])
def test_frozen_encoder_auto_runs_on_the_measured_faster_backend(
    small_calibration, monkeypatch, tmp_path, capsys, faster
):
    """``run.frozen_encoder_backend: auto`` measures torch against onnxruntime for the
    encoder's token states (here the measurement is fixed by the test), trains on the
    faster one, says which, and keeps the choice for the next stage or run."""
    from lusifer.training import load_train_config, run_training

    measured = []

    def fixed_rates(candidates, **_):
        measured.append(sorted(candidates))
        slow, quick = 10.0, 20.0
        return {name: quick if name == faster else slow for name in candidates}

    monkeypatch.setattr(calib, "calibrate", fixed_rates)
    used = []
    runner_call = OnnxEncoderStates.__call__
    monkeypatch.setattr(
        OnnxEncoderStates, "__call__", lambda self, *a: used.append(1) or runner_call(self, *a)
    )
    config = tiny_run_config(tmp_path, target="bert", representation={"train_encoder_lora": False})
    assert config["run"].get("frozen_encoder_backend", "auto") == "auto"
    run_training(load_train_config(write_run_config(tmp_path, config)), stages=["representation"])
    assert measured == [["onnx", "torch"]]
    assert f"frozen encoder, backend auto -> {faster}" in capsys.readouterr().out
    assert bool(used) == (faster == "onnx")  # the training steps read the chosen backend
    assert len(list(small_calibration.glob("*.json"))) == 1

    config["run"]["output_dir"] = str(tmp_path / "again")
    run_training(load_train_config(write_run_config(tmp_path, config)), stages=["representation"])
    assert measured == [["onnx", "torch"]]  # read from the cache, not measured again
    assert "measured earlier on this machine" in capsys.readouterr().out


def test_frozen_encoder_runner_gives_the_torch_encoders_states(
    small_calibration, tiny_model_factory
):
    """Where onnxruntime is chosen, its runner returns the torch encoder's token states
    (LoRA included); the real measurement on a tiny model picks one of the two."""
    from lusifer.onnx.backends import fastest_frozen_encoder

    model = tiny_model_factory("bert", encoder_lora={"r": 4, "alpha": 8, "dropout": 0.0})
    model.eval()
    runner, calibration = fastest_frozen_encoder(model, threads=1, max_length=16)
    assert (runner is None) == (calibration.choice == "torch")
    runner = runner or OnnxEncoderStates(model, threads=1)
    assert isinstance(runner, OnnxEncoderStates)
    enc = model.tokenize(TEXTS, max_length=16)
    with torch.no_grad():
        want = model.encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    got = runner(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(got, want.last_hidden_state, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- encode batches
def test_encode_batches_mixed_scripts_by_tokens_not_characters():
    """Latin and Chinese texts of the same character lengths are 1 and 3 tokens a
    character for tiny:bert's tokenizer; sorted by characters, batches would mix them and
    pad the Latin texts to three times their length. Sorted by tokens, no text in a batch
    is under half its batch's longest, and the vectors are those of one text at a time."""
    embedder = PlainEmbedder.load("tiny:bert", max_length=128)
    rng = np.random.default_rng(0)
    texts = []
    for n in rng.integers(18, 23, size=48):
        texts.append("".join(rng.choice(list("abcdefghij "), size=n)))
        texts.append("".join(rng.choice(list("你好世界天气"), size=n)))
    batches = []
    original = embedder.embed_tokens

    def recording(enc, **kwargs):
        batches.append(enc["attention_mask"].sum(dim=1).tolist())
        return original(enc, **kwargs)

    embedder.embed_tokens = recording
    vectors = embedder.encode(texts, batch_size=16)
    assert sum(len(b) for b in batches) == len(texts)
    for real in batches:
        assert max(real) <= 2 * min(real), real
    alone = np.stack([embedder.encode([t])[0] for t in texts[:6]])
    np.testing.assert_allclose(vectors[:6], alone, atol=1e-5)
