"""Routed models: English on the target alone (native route), the rest through the
connector, one space; the native route never changes, whatever training does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lusifer import LusiferModel
from lusifer.backbones import load_backbone
from lusifer.config import ConfigError
from lusifer.model import PlainEmbedder
from lusifer.model.routing import RouteView, with_route
from lusifer.training import load_train_config, run_training

ENGLISH = [
    "The cat is sleeping on the sofa in the afternoon.",
    "Open the file menu and choose save as to keep a copy of the document.",
]
OTHER = [
    "Le chat dort sur le canapé tout l'après-midi.",
    "Кошка спит на диване весь день.",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def routed(tiny_model_factory):
    # trained tensors randomised: LoRA B is no longer zero, so adapters change the target
    lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    return tiny_model_factory("bert", routes={}, encoder_lora=lora, target_lora=lora)


def target_alone(model: LusiferModel) -> PlainEmbedder:
    routes = model.config.routes
    backbone = load_backbone(model.config.target)
    return PlainEmbedder(backbone, pooling=routes.pooling, max_length=routes.max_length)


def test_routes_are_filled_from_the_target_and_saved(routed, tmp_path):
    routes = routed.config.routes
    assert routes.pooling == "mean" and routes.max_length and routes.query_prefix == ""
    folder = routed.save_pretrained(tmp_path / "m", card=False)
    saved = json.loads((folder / "lusifer_config.json").read_text())["config"]["routes"]
    assert saved["pooling"] == "mean" and saved["max_length"] == routes.max_length
    again = LusiferModel.from_pretrained(folder)
    texts = ENGLISH + OTHER
    np.testing.assert_allclose(again.encode(texts), routed.encode(texts), atol=1e-5)


def test_native_route_is_the_target_alone_with_adapters_off(routed):
    alone = target_alone(routed).encode(ENGLISH + OTHER)
    native = routed.encode(ENGLISH + OTHER, route="native")
    assert cosines(native, alone).min() >= 0.99999
    # the adapters are live on the connector route (so switching them off is what matched)
    assert any("lora_" in n for n, _ in routed.target.model.named_parameters())


def test_auto_sends_english_native_and_the_rest_through_the_connector(routed):
    texts = [ENGLISH[0], OTHER[0], ENGLISH[1], OTHER[1]]
    assert routed.router.routes(texts) == ["native", "connector", "native", "connector"]
    auto = routed.encode(texts)
    native = routed.encode(texts, route="native")
    connector = routed.encode(texts, route="connector")
    np.testing.assert_allclose(auto[[0, 2]], native[[0, 2]], atol=1e-6)
    np.testing.assert_allclose(auto[[1, 3]], connector[[1, 3]], atol=1e-6)
    assert cosines(native, connector).max() < 0.9999  # the two routes do differ
    assert routed.encode(ENGLISH[0]).shape == (routed.embedding_size,)
    assert routed.encode([]).shape == (0, routed.embedding_size)


def test_routes_are_checked(routed, tiny_model_factory):
    with pytest.raises(ValueError, match="route must be one of"):
        routed.encode(ENGLISH, route="english")
    with pytest.raises(ValueError, match="use_head"):
        routed.encode(ENGLISH, use_head=True)
    unrouted = tiny_model_factory("bert")
    with pytest.raises(ValueError, match="needs a routed model"):
        unrouted.encode(ENGLISH, route="native")
    assert unrouted.encode(ENGLISH, route="connector").shape == (2, unrouted.embedding_size)
    with pytest.raises(ConfigError, match="projection_head"):
        LusiferModel.build(encoder="tiny:xlmr", target="tiny:bert", routes={}, projection_head=True)


def test_merging_for_inference_keeps_the_native_route_exact(tmp_path, routed):
    folder = routed.save_pretrained(tmp_path / "m", card=False)
    merged = LusiferModel.from_pretrained(folder).merge_and_unload()
    texts = ENGLISH + OTHER
    for route in ("native", "connector", "auto"):
        got, want = merged.encode(texts, route=route), routed.encode(texts, route=route)
        assert cosines(got, want).min() >= 0.99999, route


def test_route_view_fixes_the_route_and_keys_its_own_results(routed, tiny_model_factory):
    view = with_route(routed, "connector")
    assert isinstance(view, RouteView)
    np.testing.assert_allclose(view.encode(ENGLISH), routed.encode(ENGLISH, route="connector"))
    assert view.fingerprint() != routed.fingerprint()
    assert with_route(routed, "native").fingerprint() != view.fingerprint()
    assert with_route(routed, "auto") is routed and with_route(routed, None) is routed
    unrouted = tiny_model_factory("bert")
    assert with_route(unrouted, "connector") is unrouted
    with pytest.raises(ValueError, match="needs a routed model"):
        with_route(unrouted, "native")


def test_onnx_routed_model_matches_torch(routed, tmp_path):
    from lusifer.onnx import OnnxLusifer

    fast = OnnxLusifer.from_model(routed, export_dir=tmp_path / "onnx", threads=1)
    texts = [ENGLISH[0], OTHER[0], ENGLISH[1], OTHER[1]]
    for route in ("auto", "native", "connector"):
        got, want = fast.encode(texts, route=route), routed.encode(texts, route=route)
        assert cosines(got, want).min() >= 0.99999, route
    with pytest.raises(ValueError, match="route must be one of"):
        fast.encode(texts, route="x")


def _routed_config(tmp_path: Path, **stage) -> Path:
    rows = [
        ("how do I compress backups", "A tool that creates compressed backups of your files."),
        ("music player for the terminal", "Plays audio files from the command line."),
        ("draw diagrams", "A vector drawing program for flowcharts and diagrams."),
        ("read email offline", "A mail client that keeps messages on your disk."),
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n" for q, p in rows * 4))
    lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    config = {
        "model": {
            "encoder": "tiny:xlmr",
            "target": "tiny:bert",
            "routes": {},
            "target_lora": lora,
            "use_instructions": False,
        },
        "run": {
            "output_dir": str(tmp_path / "out"),
            "seed": 1,
            "save_every": 100,
            "log_every": 1,
            "max_length": 48,
        },
        "representation": {
            "steps": 25,
            "batch_size": 4,
            "learning_rate": 1e-2,
            "train_target_lora": True,
            "train_encoder_lora": False,
            "data": [{"path": str(data)}],
            **stage,
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("term, weight", [("cross_route", 1.0), ("route_match", 5.0)])
def test_cross_route_training_lowers_its_term_and_never_moves_english(tmp_path, term, weight):
    cfg = load_train_config(_routed_config(tmp_path, target_distill=1.0, **{term: weight}))
    model = LusiferModel.build(cfg.model)
    before = model.encode(ENGLISH, route="native")
    before_connector = model.encode(OTHER, route="connector")
    out = run_training(cfg, model=model)
    rows = [
        json.loads(line)
        for line in (tmp_path / "out/representation/log.jsonl").read_text().splitlines()
    ]
    for r in rows:
        want = r["contrastive"] + r["target_distill"] + weight * r[term]
        assert abs(r["loss"] - want) < 1e-4
    values = [r[term] for r in rows]
    assert sum(values[-5:]) / 5 < 0.8 * sum(values[:5]) / 5, values
    trained = LusiferModel.from_pretrained(out)
    assert cosines(trained.encode(ENGLISH, route="native"), before).min() >= 0.99999
    assert cosines(trained.encode(OTHER, route="connector"), before_connector).min() < 0.999


@pytest.mark.parametrize("term", ["cross_route", "route_match"])
def test_cross_route_needs_a_routed_model(tmp_path, term):
    path = _routed_config(tmp_path, **{term: 1.0})
    config = yaml.safe_load(path.read_text())
    del config["model"]["routes"]
    path.write_text(yaml.safe_dump(config))
    cfg = load_train_config(path)
    with pytest.raises(ConfigError, match=f"{term} needs a routed model"):
        run_training(cfg)


@pytest.mark.parametrize("route", [None, "native", "connector"])
def test_sentence_transformers_routes_like_encode(routed, route):
    from lusifer.interop import to_sentence_transformer

    st = to_sentence_transformer(routed, route=route)
    texts = [ENGLISH[0], OTHER[0], ENGLISH[1], OTHER[1]]
    got = st.encode(texts, batch_size=3)
    want = routed.encode(texts, route=route)
    assert cosines(got, want).min() >= 0.99999


def test_mteb_wrapper_takes_a_route(routed):
    from lusifer.evaluation.mteb_model import MtebEncoder

    wrapped = MtebEncoder(routed, route="connector")
    assert isinstance(wrapped.model, RouteView) and wrapped.model.route == "connector"
    assert MtebEncoder(routed).model is routed


def test_cli_encode_takes_a_route(routed, tmp_path):
    from typer.testing import CliRunner

    from lusifer.cli import app

    folder = routed.save_pretrained(tmp_path / "m", card=False)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join([ENGLISH[0], OTHER[0]]) + "\n")
    runner = CliRunner()
    for route in ("native", "connector", "auto"):
        out = tmp_path / f"{route}.npy"
        result = runner.invoke(
            app, ["encode", str(folder), str(texts), "-o", str(out), "--route", route]
        )
        assert result.exit_code == 0, result.output
        want = routed.encode([ENGLISH[0], OTHER[0]], route=route)
        assert cosines(np.load(out), want).min() >= 0.99999, route
    bad = runner.invoke(app, ["encode", str(folder), str(texts), "-o", str(out), "--route", "x"])
    assert bad.exit_code == 2 and "--route" in bad.output
    plain = runner.invoke(
        app, ["encode", "tiny:bert", str(texts), "-o", str(out), "--route", "connector"]
    )
    assert plain.exit_code == 2 and "backbone alone" in plain.output


def test_server_takes_a_route_per_request(routed):
    import httpx

    from lusifer.serving import create_app
    from lusifer.serving.server import BackgroundServer

    texts = [ENGLISH[0], OTHER[0]]
    with BackgroundServer(create_app(routed, model_name="routed")) as url:
        for route in ("native", "connector", None):
            body = {"input": texts, **({"route": route} if route else {})}
            reply = httpx.post(f"{url}/v1/embeddings", json=body, timeout=60)
            assert reply.status_code == 200, reply.text
            got = np.array([d["embedding"] for d in reply.json()["data"]])
            assert cosines(got, routed.encode(texts, route=route)).min() >= 0.99999
        bad = httpx.post(f"{url}/v1/embeddings", json={"input": texts, "route": "x"}, timeout=60)
        assert bad.status_code == 400
    plain = PlainEmbedder(load_backbone("tiny:bert"))
    with BackgroundServer(create_app(plain, model_name="plain")) as url:
        ok = httpx.post(f"{url}/v1/embeddings", json={"input": texts, "route": "native"})
        assert ok.status_code == 200
        refused = httpx.post(f"{url}/v1/embeddings", json={"input": texts, "route": "connector"})
        assert refused.status_code == 400 and "native" in refused.json()["error"]["message"]


@pytest.mark.timeout(900)
@pytest.mark.slow  # a rehearsal
def test_e5_mistral_routed_config_rehearses(tmp_path):
    """The GPU recipe on an English embedding target, every stage for a few steps on tiny
    backbones of the same families and local copies of its data (one process)."""
    import subprocess
    import sys

    config = Path(__file__).parents[2] / "src/lusifer/configs/e5-mistral-routed.yaml"
    loaded = load_train_config(config)
    assert loaded.model.routes.pooling == "last" and not loaded.model.projection_head
    assert "{instruction}" in loaded.model.routes.query_prefix
    out = tmp_path / "rehearsal"
    lusifer = str(Path(sys.executable).with_name("lusifer"))
    args = [lusifer, "train", str(config), "--rehearse", "--processes", "1", "--output", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=850)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "rehearsal.json").read_text())
    assert report["backbones"]["target"]["rehearsed"] == "tiny:mistral"
    stages = report["stages"]
    assert [s["objective"] for s in stages] == ["alignment"] * 2 + ["representation"] * 2
    assert all(s["loss_first"] is not None and s["loss_last"] is not None for s in stages)
    for name in ("rep-retrieval", "rep-all"):
        rows = [json.loads(line) for line in (out / "run" / name / "log.jsonl").open()]
        terms = ("cross_route", "target_distill", "route_match")
        assert all(r[t] > 0 for r in rows for t in terms), rows[:2]


@pytest.mark.integration
def test_routed_minilm_english_equals_stock_sentence_transformers(tmp_path):
    """`lusifer encode` of English text with a routed e5-small -> MiniLM model gives
    stock sentence-transformers all-MiniLM-L6-v2's vectors, long texts included (its
    256-token limit, not LUSIFER's 128), whatever the trained parts hold."""
    from sentence_transformers import SentenceTransformer
    from typer.testing import CliRunner

    from lusifer.backbones.offline import ensure_offline_backbone
    from lusifer.cli import app

    config = load_train_config(
        Path(__file__).parents[2] / "src/lusifer/configs/demo-minilm-routed.yaml"
    )
    model = LusiferModel.build(config.model)
    assert model.config.routes.max_length == 256 and model.config.max_length == 128
    with torch.no_grad():  # trained parts that change the connector route's target
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    folder = model.save_pretrained(tmp_path / "routed", card=False)
    long = " ".join(["The package manager resolves dependencies before it installs."] * 40)
    english = [*ENGLISH, "Where does the cat sleep during the day?", long]
    (tmp_path / "en.txt").write_text("\n".join(english) + "\n")
    result = CliRunner().invoke(
        app, ["encode", str(folder), str(tmp_path / "en.txt"), "-o", str(tmp_path / "en.npy")]
    )
    assert result.exit_code == 0, result.output
    stock = SentenceTransformer(str(ensure_offline_backbone("all-MiniLM-L6-v2")), device="cpu")
    want = stock.encode(english, normalize_embeddings=True)
    assert model.router.routes(english) == ["native"] * len(english)
    assert cosines(np.load(tmp_path / "en.npy"), want).min() >= 0.99999
    # the connector route does differ (the check above is not vacuous)
    assert cosines(model.encode(english, route="connector"), want).max() < 0.999


def test_the_head_view_scores_the_projection_heads_vectors(tmp_path, tiny_model_factory):
    """``lusifer evaluate --use-head`` (the reference's encode output): the head's vectors,
    under their own name and fingerprint; a model without a head is refused."""
    from helpers import make_task_dirs
    from typer.testing import CliRunner

    from lusifer.cli import app
    from lusifer.model.routing import with_head

    model = tiny_model_factory("bert", projection_head=True)
    view = with_head(model)
    np.testing.assert_allclose(view.encode(ENGLISH), model.encode(ENGLISH, use_head=True))
    assert view.fingerprint() != model.fingerprint() and view.name.endswith("[head]")
    with pytest.raises(ValueError, match="no projection head"):
        with_head(tiny_model_factory("bert"))
    folder = model.save_pretrained(tmp_path / "model", card=False)
    dirs, _ = make_task_dirs(tmp_path / "tasks")
    args = ["evaluate", str(folder), "--task-dir", str(dirs[0]), "--bootstrap", "0"]
    result = CliRunner().invoke(app, [*args, "--use-head", "-o", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "[head]" in result.output
