"""The CI smoke test of the main job: ``lusifer demo --quick`` end to end on the real
offline backbones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lusifer import LusiferModel
from lusifer.cli import app
from lusifer.model import PlainEmbedder
from lusifer.onnx.export import plain_export_path

pytestmark = pytest.mark.slow  # a system test: make test-fast leaves it out


@pytest.mark.integration
@pytest.mark.timeout(1500)
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--output", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    for name in ("results.json", "table.md", "table.csv", "chart.png"):
        assert (out / "eval" / name).is_file(), name
    assert "Gain over the English-only target" in result.output
    summary = json.loads((out / "summary.json").read_text())
    xl = summary["figures"]["crosslingual"]
    assert len(xl["languages"]) == 13
    # even in quick mode LUSIFER-mini beats the English-only target across languages
    assert xl["lusifer"] > xl["target"] + 10, xl

    # the demo's model folder reloads to exactly what training produced
    texts = ["Open the file in a new window.", "Ouvrir le fichier dans une nouvelle fenêtre."]
    model = LusiferModel.from_pretrained(out / "model")
    saved = model.encode(texts)
    trained = LusiferModel.from_pretrained(out / "train" / "model").encode(texts)
    assert np.abs(saved - trained).max() < 1e-6
    assert float(saved[0] @ saved[1]) > 0.5  # a translation pair lands close together

    # the demo evaluated it through the ONNX backend, whose export stays with the model,
    # and the baselines through theirs, exported once into the lusifer cache
    assert list((out / "model" / "onnx").glob("lusifer-*.onnx"))
    for reference in ("all-MiniLM-L6-v2", "multilingual-e5-small"):
        baseline = PlainEmbedder.load(reference, max_length=model.config.max_length)
        assert plain_export_path(baseline).is_file(), reference

    # and serves through the ONNX backend (it pools over the text only, like torch)
    fast = _encode(
        out / "model",
        _lines(tmp_path, texts),
        tmp_path / "onnx.npy",
        "--backend",
        "onnx",
        "--threads",
        "1",
        "--instruction",
        "Retrieve parallel sentences",
    )
    assert fast.exit_code == 0, fast.output[-3000:]
    want = model.encode(texts, instruction="Retrieve parallel sentences")
    assert np.abs(np.load(tmp_path / "onnx.npy") - want).max() < 1e-4

    # a second run resumes: nothing is retrained, re-saved, re-exported or re-evaluated
    runs = sorted((out / "eval" / "runs").rglob("*.json"))
    runs += sorted((out / "model").rglob("*.*"))
    stamps = [p.stat().st_mtime_ns for p in runs]
    result = CliRunner().invoke(app, ["demo", "--quick", "--output", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    assert [p.stat().st_mtime_ns for p in runs] == stamps
    assert "already finished" in result.output or "skipping" in result.output

    # another recipe into the same folder is refused, not mixed with the finished run
    result = CliRunner().invoke(
        app, ["demo", "--quick", "--output", str(out), "representation.steps=31"]
    )
    assert result.exit_code == 2 and "representation.steps: 30 -> 31" in result.output
    assert [p.stat().st_mtime_ns for p in runs] == stamps


def _encode(model_dir, texts_file, output, *options):
    """`lusifer encode MODEL TEXTS -o OUTPUT [options]` through the CLI."""
    command = ["encode", str(model_dir), str(texts_file), "-o", str(output), *options]
    return CliRunner().invoke(app, command)


def _lines(folder, texts):
    path = folder / "texts.txt"
    path.write_text("\n".join(texts) + "\n")
    return path


@pytest.mark.integration
@pytest.mark.timeout(1500)
def test_quick_routed_demo_keeps_english_exactly(tmp_path):
    """The routed recipe end to end: the demo trains it (encoder LoRA included), scores
    both routes, and `lusifer encode` of English text with the model it saved gives stock
    all-MiniLM-L6-v2's vectors, while other languages take the trained connector route."""
    from sentence_transformers import SentenceTransformer

    from lusifer.backbones.offline import ensure_offline_backbone

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--routed", "--quick", "--output", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    figures = json.loads((out / "summary.json").read_text())["figures"]
    assert figures["crosslingual"]["lusifer"] > figures["crosslingual"]["target"] + 10
    assert figures["connector_route"]["crosslingual"]["lusifer"] > figures["crosslingual"]["target"]

    model = LusiferModel.from_pretrained(out / "model")
    trained = model.trained_state_dict()
    encoder_lora = [
        v for k, v in trained.items() if "lora_B" in k and k.startswith("encoder_lora.")
    ]
    assert encoder_lora and max(float(v.abs().max()) for v in encoder_lora) > 0  # it learned

    english = ["Open the file in a new window.", "The package manager resolves dependencies."]
    encoded = _encode(out / "model", _lines(tmp_path, english), tmp_path / "en.npy")
    assert encoded.exit_code == 0, encoded.output[-3000:]
    stock = SentenceTransformer(str(ensure_offline_backbone("all-MiniLM-L6-v2")), device="cpu")
    want = stock.encode(english, normalize_embeddings=True)
    got = np.load(tmp_path / "en.npy")
    assert (got * want).sum(1).min() >= 0.99999
    french = "Ouvrir le fichier dans une nouvelle fenêtre."
    assert model.router.routes([french]) == ["connector"]
    # the translation lands beside MiniLM's own English vector
    assert float(model.encode([french])[0] @ got[0]) > 0.5
