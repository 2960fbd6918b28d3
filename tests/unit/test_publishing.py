"""Model cards, push_to_hub and the sentence-transformers files of a saved folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = "someone/lusifer-tiny"
TEXTS = ["Le chat dort sur le canapé.", "The cat is sleeping on the sofa.", "x"]

# what ``lusifer evaluate`` writes to results.json, cut to what a card reads
RESULTS = {
    "suite": "offline",
    "models": ["lusifer-tiny", "baseline"],
    "languages": ["en", "fr"],
    "results": {
        "lusifer-tiny": {
            "tasks": {
                "STS17": {
                    "name": "STS17",
                    "type": "sts",
                    "metric": "cosine_spearman",
                    "split": "test",
                    "score": 61.5,
                    "subset_scores": {"en-en": 70.0, "fr-en": 53.0},
                },
                "TinyRetrieval": {
                    "name": "TinyRetrieval",
                    "type": "retrieval",
                    "metric": "ndcg_at_10",
                    "split": "test",
                    "score": 42.125,
                    "subset_scores": {"default": 42.125},
                },
            },
            "languages": {"en": 56.06, "fr": 53.0},
            "average": 54.53,
        },
        "baseline": {"tasks": {}, "languages": {"en": 50.0}, "average": 50.0},
    },
}


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory("bert")


def test_card_metadata_is_what_the_hub_parses(tmp_path):
    """Front matter through huggingface_hub: languages, library, tags, base models, data
    sets from the training config, license, pipeline tag and a model-index."""
    from huggingface_hub import ModelCard

    from lusifer import LusiferConfig
    from lusifer.evaluation.languages import LUSIFER_LANGUAGES
    from lusifer.model.card import TAGS, build_model_card

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text(json.dumps(RESULTS))
    config = LusiferConfig(encoder="multilingual-e5-small", target="all-MiniLM-L6-v2")
    paper = Path(__file__).parents[2] / "src/lusifer/configs/paper.yaml"
    card = build_model_card(
        config,
        model_id=REPO,
        evaluation=tmp_path / "eval",  # the folder lusifer evaluate wrote
        training=paper,
        license="mit",
    )
    card.save(tmp_path / "README.md")
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.library_name == "lusifer" and data.pipeline_tag == "sentence-similarity"
    assert set(TAGS) <= set(data.tags) and data.license == "mit"
    assert data.language[:14] == list(LUSIFER_LANGUAGES) and len(data.language) > 14
    assert data.base_model == [
        "intfloat/multilingual-e5-small",
        "sentence-transformers/all-MiniLM-L6-v2",
    ]
    assert "Salesforce/wikitext" in data.datasets and "Hieuman/SQuAD" in data.datasets
    assert all(d.count("/") == 1 for d in data.datasets)  # hub ids only, no local files
    # model-index: one row per task and subset of the first evaluated model
    results = {(r.dataset_name, r.dataset_config): r for r in data.eval_results}
    assert set(results) == {
        ("MTEB STS17 (en-en)", "en-en"),
        ("MTEB STS17 (fr-en)", "fr-en"),
        ("MTEB TinyRetrieval", "default"),
    }
    sts = results[("MTEB STS17 (fr-en)", "fr-en")]
    assert (sts.task_type, sts.dataset_split, sts.metric_type, sts.metric_value) == (
        "STS",
        "test",
        "cosine_spearman",
        53.0,
    )
    assert sts.dataset_type.startswith("mteb/")  # the mteb task's hub data set
    assert results[("MTEB TinyRetrieval", "default")].task_type == "Retrieval"
    assert data.model_name == "lusifer-tiny"
    assert "| lusifer-tiny | 56.06 | 53.00 | 54.53 |" in card.text  # the results table
    # the bundled demo data is not on the hub: no datasets, but the recipe names it
    demo = Path(__file__).parents[2] / "src/lusifer/configs/demo-minilm.yaml"
    card = build_model_card(config, model_id=REPO, training=demo)
    assert card.data.datasets is None and card.data.to_dict().get("model-index") is None
    assert "bundled English data" in card.text and "| representation |" in card.text


def test_the_cards_usage_snippets_run_on_a_saved_folder(model, tmp_path, monkeypatch):
    """save_pretrained writes README.md; its sentence-transformers and lusifer snippets,
    with the folder's path in place of the repo id, run and give the model's vectors."""

    folder = model.save_pretrained(tmp_path / "m", model_id=REPO)
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n") and f'SentenceTransformer("{REPO}"' in text
    monkeypatch.chdir(tmp_path)  # the snippet loads a relative path, as a user's would
    scope: dict = {}
    exec(sentence_transformers_snippet(text).replace(REPO, "m"), scope)
    st_vectors = scope["embeddings"]
    want = model.encode(["Le chat dort sur le canapé.", "The cat is sleeping on the sofa."])
    np.testing.assert_allclose(st_vectors, want, atol=1e-5)
    scope = {}
    exec(lusifer_snippet(text).replace(REPO, "m"), scope)
    assert scope["docs"].shape == (2, model.embedding_size)
    # the folder still reloads with lusifer and through lusifer's own ST wrapper
    from lusifer import LusiferModel
    from lusifer.interop import to_sentence_transformer

    np.testing.assert_allclose(
        LusiferModel.from_pretrained(folder).encode(TEXTS), model.encode(TEXTS), atol=1e-6
    )
    np.testing.assert_allclose(
        to_sentence_transformer(folder).encode(TEXTS), model.encode(TEXTS), atol=1e-5
    )
    # card=False: the model files only
    bare = model.save_pretrained(tmp_path / "bare", card=False)
    assert sorted(p.name for p in bare.iterdir()) == ["lusifer_config.json", "model.safetensors"]


class FakeHub:
    """Stands in for the hub: ``HfApi`` whose uploads land in a local folder, and a
    ``snapshot_download`` that reads them back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.created: list[tuple[str, bool | None]] = []
        hub = self

        class Api:
            def __init__(self, token=None, **kwargs) -> None:
                self.token = token

            def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kw):
                assert repo_type == "model" and exist_ok
                hub.created.append((repo_id, private))
                (hub.root / repo_id).mkdir(parents=True, exist_ok=True)
                return f"https://huggingface.co/{repo_id}"

            def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kw):
                assert (hub.root / repo_id).is_dir(), "upload before create_repo"
                shutil.copytree(folder_path, hub.root / repo_id, dirs_exist_ok=True)
                return f"https://huggingface.co/{repo_id}/commit/{commit_message}"

        self.Api = Api

    def snapshot_download(self, repo_id, allow_patterns=None, **kwargs) -> str:
        return str(self.root / repo_id)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    import huggingface_hub

    hub = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", hub.Api)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    return hub


def test_push_to_hub_uploads_a_folder_that_loads_back(model, fake_hub):
    from huggingface_hub import ModelCard

    from lusifer import LusiferModel, load_embedder

    model.push_to_hub(REPO, private=True, evaluation=RESULTS, license="apache-2.0")
    assert fake_hub.created == [(REPO, True)]
    arrived = fake_hub.root / REPO
    assert {"lusifer_config.json", "model.safetensors", "README.md", "modules.json"} <= {
        p.name for p in arrived.iterdir()
    }
    card = ModelCard.load(arrived / "README.md")
    assert f'LusiferModel.from_pretrained("{REPO}")' in card.text
    assert card.data.license == "apache-2.0" and len(card.data.eval_results) == 3
    # by repo id (snapshot_download answers from the fake hub) and as a local folder
    for reloaded in (LusiferModel.from_pretrained(REPO), load_embedder(arrived)):
        np.testing.assert_allclose(reloaded.encode(TEXTS), model.encode(TEXTS), atol=1e-6)


def test_card_and_push_commands(model, fake_hub, tmp_path):
    from huggingface_hub import ModelCard
    from typer.testing import CliRunner

    from lusifer.cli import app

    run = tmp_path / "run"
    folder = model.save_pretrained(run / "model", card=False)
    (run / "train_config.yaml").write_text(
        "model: {encoder: tiny:xlmr, target: tiny:bert}\n"
        "stages:\n  - {name: rep, objective: representation, steps: 3, batch_size: 4,"
        " learning_rate: 1.0e-4, data: [{hf_dataset: sentence-transformers/natural-questions}]}\n"
    )
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text(json.dumps(RESULTS))
    runner = CliRunner()
    result = runner.invoke(app, ["card", str(folder), "--results", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    card = ModelCard.load(folder / "README.md")
    assert card.data.datasets == ["sentence-transformers/natural-questions"]  # the run's config
    assert len(card.data.eval_results) == 3 and (folder / "modules.json").is_file()
    result = runner.invoke(
        app,
        [
            "push",
            str(folder),
            REPO,
            "--results",
            str(tmp_path / "eval"),
            "--results-model",
            "baseline",
        ],
    )
    assert result.exit_code == 0, result.output
    pushed = ModelCard.load(fake_hub.root / REPO / "README.md")
    assert f'SentenceTransformer("{REPO}"' in pushed.text
    assert pushed.data.eval_results is None or pushed.data.eval_results == []  # baseline: no tasks
    bad = runner.invoke(app, ["push", str(tmp_path / "eval"), REPO])
    assert bad.exit_code == 2 and "not a LUSIFER folder" in bad.output


# ------------------------------------------------------- a pushed repo used by its repo id
PLAIN_REPO = "someone/plain-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache under ``tmp_path`` (the ``HF_HUB_CACHE`` layout:
    ``models--owner--name/refs/main`` naming a ``snapshots/<commit>/`` folder): the real
    ``hf_hub_download``/``snapshot_download`` and transformers answer from it, nothing
    else. Call it with ``{repo_id: folder}`` to put folders in it."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def put(repos: dict[str, Path]) -> Path:
        for repo_id, folder in repos.items():
            root = cache / f"models--{repo_id.replace('/', '--')}"
            shutil.copytree(folder, root / "snapshots" / COMMIT)
            (root / "refs").mkdir()
            (root / "refs" / "main").write_text(COMMIT)
        return cache

    return put


def test_a_hub_repo_id_holding_a_lusifer_model_loads_as_lusifer(model, hub_cache, tmp_path):
    """``load_embedder(repo_id)`` (what ``lusifer encode/evaluate/serve MODEL`` call)
    gives a LusiferModel with the saved folder's vectors when the repo holds
    ``lusifer_config.json``; a plain backbone's repo id still gives a PlainEmbedder."""
    from lusifer import LusiferModel, PlainEmbedder, load_embedder
    from lusifer.backbones import resolve_backbone
    from lusifer.model import is_lusifer_folder
    from lusifer.model.loading import hub_folder_layout

    folder = model.save_pretrained(tmp_path / "saved", model_id=REPO)
    plain = Path(resolve_backbone("tiny:xlmr"))  # a Hugging Face folder (config.json)
    reference = tmp_path / "reference-layout"  # the reference code's published config
    reference.mkdir()
    (reference / "config.json").write_text(
        json.dumps({"universal_learner_name_or_path": "tiny:xlmr"})
    )
    hub_cache({REPO: folder, PLAIN_REPO: plain, "someone/reference": reference})

    assert hub_folder_layout(REPO) == "lusifer"
    assert hub_folder_layout("someone/reference") == "reference"
    assert hub_folder_layout(PLAIN_REPO) is None
    assert hub_folder_layout("someone/not-cached") is None  # offline, not in the cache
    assert is_lusifer_folder(REPO) and not is_lusifer_folder(PLAIN_REPO)

    loaded = load_embedder(REPO)
    assert isinstance(loaded, LusiferModel)
    want = LusiferModel.from_pretrained(folder)
    for kind in ("query", "document"):
        np.testing.assert_allclose(
            loaded.encode(TEXTS, kind=kind, instruction="Find it"),
            want.encode(TEXTS, kind=kind, instruction="Find it"),
            atol=1e-6,
        )
    np.testing.assert_allclose(loaded.encode(TEXTS), model.encode(TEXTS), atol=1e-6)
    assert loaded.fingerprint() == want.fingerprint()

    backbone = load_embedder(PLAIN_REPO)
    assert type(backbone) is PlainEmbedder and backbone.reference == PLAIN_REPO
    np.testing.assert_allclose(
        backbone.encode(TEXTS), PlainEmbedder.load(str(plain)).encode(TEXTS), atol=1e-6
    )


def test_lusifer_commands_take_a_hub_repo_id(model, hub_cache, tmp_path, monkeypatch):
    """``lusifer encode REPO_ID`` writes the same matrix as the folder; ``--backend onnx``
    on a repo id runs the LUSIFER graph (exported into the lusifer cache, the snapshot
    being read-only by rights)."""
    from typer.testing import CliRunner

    from lusifer import load
    from lusifer.cli import app
    from lusifer.onnx import OnnxLusifer

    folder = model.save_pretrained(tmp_path / "saved", card=False)
    hub_cache({REPO: folder})
    texts = tmp_path / "in.txt"
    texts.write_text("".join(t + "\n" for t in TEXTS), encoding="utf-8")
    runner = CliRunner()
    for name, ref in (("folder", str(folder)), ("repo", REPO)):
        args = [
            "encode",
            ref,
            str(texts),
            "-o",
            str(tmp_path / f"{name}.npy"),
            "--kind",
            "document",
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "repo.npy"), np.load(tmp_path / "folder.npy"))

    monkeypatch.setenv("LUSIFER_CACHE", str(tmp_path / "lusifer-cache"))
    fast = load(REPO, backend="onnx", threads=1)
    assert isinstance(fast, OnnxLusifer)
    assert fast.onnx_path.parent == tmp_path / "lusifer-cache" / "onnx"
    got, want = fast.encode(TEXTS), model.encode(TEXTS)
    assert (got * want).sum(1).min() > 0.99999  # unit vectors: cosines


# ------------------------------------------------------------- the card's code
def sentence_transformers_snippet(card_text: str) -> str:
    """The card's sentence-transformers usage code (the test runs it)."""
    return _code_block_with(card_text, "SentenceTransformer(")


def lusifer_snippet(card_text: str) -> str:
    """The card's lusifer usage code."""
    return _code_block_with(card_text, "LusiferModel.from_pretrained(")


def _code_block_with(text: str, needle: str) -> str:
    blocks: list[str] = text.split("```python\n")[1:]
    for block in blocks:
        code = block.split("```", 1)[0]
        if needle in code:
            return code
    raise ValueError(f"no python code block with {needle!r} in the card")
