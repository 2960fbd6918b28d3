"""The LUSIFER model on tiny random backbones: shapes, invariances, attention, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import TINY_TARGETS, randomize_trained

from lusifer import LusiferModel
from lusifer.config import ConfigError
from lusifer.model import ModelFolderError
from lusifer.model.connector import Connector
from lusifer.model.pooling import pool
from lusifer.model.prompts import format_prompt

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Bonjour",
    "Привет, как дела? Это более длинное предложение на русском языке.",
    "短い",
    "A somewhat longer English sentence that needs more padding positions than the others do.",
]
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


@pytest.mark.parametrize("target", TINY_TARGETS)
def test_shapes_and_dtypes(tiny_model_factory, target):
    model = tiny_model_factory(target)
    out = model.encode(TEXTS, batch_size=2)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == (len(TEXTS), model.embedding_size)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    raw = model.encode(TEXTS, normalize=False, convert_to="torch")
    assert isinstance(raw, torch.Tensor) and raw.dtype == torch.float32
    assert not torch.allclose(raw.norm(dim=1), torch.ones(len(TEXTS)))
    assert model.encode("one text").shape == (model.embedding_size,)


@pytest.mark.parametrize("target", TINY_TARGETS)
def test_single_vs_batch_and_order(tiny_model_factory, target):
    model = tiny_model_factory(target, target_lora=LORA, encoder_lora=LORA, num_learned_tokens=2)
    batch = model.encode(TEXTS, batch_size=5)
    single = np.stack([model.encode(t) for t in TEXTS])
    reordered = model.encode(TEXTS[::-1], batch_size=3)[::-1]
    cos_single = (batch * single).sum(1)
    cos_order = (batch * reordered).sum(1)
    assert cos_single.min() > 1 - 1e-5, cos_single
    assert cos_order.min() > 1 - 1e-5, cos_order
    # and the texts really get different embeddings
    assert (batch @ batch.T)[0, 2] < 0.9999


@pytest.mark.parametrize("target", ["llama", "mistral", "qwen2"])
def test_decoder_bidirectional_for_embedding_causal_for_lm(tiny_model_factory, target):
    model = tiny_model_factory(target)
    torch.manual_seed(0)
    embeds = torch.randn(2, 6, model.target.input_embeddings().embedding_dim)
    changed = embeds.clone()
    changed[:, -1] += 1.0
    mask = torch.ones(2, 6, dtype=torch.long)
    with torch.no_grad():
        bi_a = model.target.hidden_states(embeds, mask, causal=False)
        bi_b = model.target.hidden_states(changed, mask, causal=False)
        ca_a = model.target.hidden_states(embeds, mask, causal=True)
        ca_b = model.target.hidden_states(changed, mask, causal=True)
    assert (bi_a[:, 0] - bi_b[:, 0]).abs().max() > 1e-4  # first position sees the last
    assert torch.allclose(ca_a[:, :-1], ca_b[:, :-1], atol=1e-6)  # causal: it cannot
    # the attention flags are restored after each call
    flags = {m.is_causal for m in model.target.model.modules() if hasattr(m, "is_causal")}
    assert flags == {True}


@pytest.mark.parametrize("target", TINY_TARGETS)
def test_padding_never_changes_an_embedding(tiny_model_factory, target):
    model = tiny_model_factory(target, num_learned_tokens=3)
    enc = model.tokenize(["short text"])
    pad_id = model.tokenizer.pad_token_id
    ids = torch.cat([enc["input_ids"], torch.full((1, 7), pad_id)], dim=1)
    mask = torch.cat([enc["attention_mask"], torch.zeros(1, 7, dtype=torch.long)], dim=1)
    with torch.no_grad():
        plain = model(enc["input_ids"], enc["attention_mask"])
        padded = model(ids, mask)
    assert torch.allclose(plain, padded, atol=1e-5)


def test_learned_tokens_follow_each_sequence():
    conn = Connector(4, 3, num_learned_tokens=2)
    states = torch.randn(2, 4, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    out, new_mask = conn(states, mask)
    assert out.shape == (2, 6, 3)
    assert new_mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
    assert torch.allclose(out[1, 2:4], conn.learned_tokens)
    assert torch.allclose(out[0, 4:6], conn.learned_tokens)
    assert torch.all(out[1, 4:] == 0)


def test_pooling_methods():
    states = torch.arange(2 * 3 * 2, dtype=torch.float).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert torch.allclose(pool(states, mask, "mean")[1], states[1, :2].mean(0))
    assert torch.allclose(pool(states, mask, "last")[1], states[1, 1])
    assert torch.allclose(pool(states, mask, "cls"), states[:, 0])
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(states, mask, "max")


def test_prompts_follow_the_paper():
    assert format_prompt("t", "Find the answer.", "query") == "Find the answer.\nt"
    assert format_prompt("t", "Find the answer", "document") == "Find the answer. Candidate:\nt"
    assert format_prompt("t", None, "query") == "t"
    with pytest.raises(ValueError, match="kind"):
        format_prompt("t", "x", "passage")


def test_instruction_and_kind_change_the_embedding(tiny_model_factory):
    model = tiny_model_factory("bert")
    bare = model.encode("water boils at 100 degrees")
    query = model.encode("water boils at 100 degrees", instruction="Retrieve a passage")
    doc = model.encode(
        "water boils at 100 degrees", instruction="Retrieve a passage", kind="document"
    )
    assert float(bare @ query) < 0.99999 and float(query @ doc) < 0.99999


def test_connector_centering_subtracts_part_of_each_texts_mean():
    states = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert Connector(4, 3).prepare(states, mask) is states  # the paper: no centering
    full = Connector(4, 3, centering=1.0).prepare(states, mask)
    assert torch.allclose(full[0].mean(0), torch.zeros(4), atol=1e-6)
    assert torch.allclose(full[1, :3].mean(0), torch.zeros(4), atol=1e-6)  # padding left out
    half = Connector(4, 3, centering=0.5).prepare(states, mask)
    assert torch.allclose(half[1, :3], states[1, :3] - 0.5 * states[1, :3].mean(0), atol=1e-6)
    # what sits in padded positions never reaches a real token
    noisy = states.clone()
    noisy[1, 3:] = 1e3
    assert torch.allclose(Connector(4, 3, centering=0.5).prepare(noisy, mask)[1, :3], half[1, :3])


def test_connector_centering_is_part_of_the_saved_model(tmp_path):
    torch.manual_seed(0)
    model = LusiferModel.build(encoder="tiny:xlmr", target="tiny:bert", connector_centering=0.5)
    randomize_trained(model)
    model.save_pretrained(tmp_path / "m")
    loaded = LusiferModel.from_pretrained(tmp_path / "m")
    assert loaded.connector.centering == 0.5
    assert np.abs(loaded.encode(TEXTS) - model.encode(TEXTS)).max() < 1e-6
    model.connector.centering = 0.0  # same weights, no centering: other embeddings
    assert np.abs(loaded.encode(TEXTS) - model.encode(TEXTS)).max() > 1e-3
    with pytest.raises(ConfigError, match="connector_centering"):
        LusiferModel.build(encoder="tiny:xlmr", target="tiny:bert", connector_centering=1.5)


@pytest.mark.parametrize("target", ["bert", "llama"])
def test_save_load_round_trip(tmp_path, tiny_model_factory, target):
    model = tiny_model_factory(
        target, target_lora=LORA, encoder_lora=LORA, projection_head=True, num_learned_tokens=2
    )
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "1_Normalize",  # sentence-transformers' Normalize module (lusifer.model.card)
        "README.md",  # the model card
        "config_sentence_transformers.json",
        "lusifer_config.json",
        "lusifer_module.json",
        "model.safetensors",
        "modules.json",
    ]
    loaded = LusiferModel.from_pretrained(tmp_path / "m")
    for use_head in (False, True):
        a = model.encode(TEXTS, use_head=use_head)
        b = loaded.encode(TEXTS, use_head=use_head)
        assert np.abs(a - b).max() < 1e-6
    # the fingerprint survives the round trip and changes with the trained weights
    assert loaded.fingerprint() == model.fingerprint()
    with torch.no_grad():
        loaded.connector.ff[0].bias.add_(1e-3)
    assert loaded.fingerprint() != model.fingerprint()
    # saving over an existing folder replaces it whole
    model.save_pretrained(tmp_path / "m")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_merged_save_stands_alone(tmp_path, tiny_model_factory):
    model = tiny_model_factory("llama", target_lora=LORA, encoder_lora=LORA)
    model.save_pretrained(tmp_path / "merged", merge=True)
    meta = json.loads((tmp_path / "merged" / "lusifer_config.json").read_text())
    assert meta["config"]["target"] == "./target" and meta["config"]["target_lora"] is None
    loaded = LusiferModel.from_pretrained(tmp_path / "merged")
    a, b = model.encode(TEXTS), loaded.encode(TEXTS)
    assert (a * b).sum(1).min() > 1 - 1e-5


def test_merging_lora_for_inference_keeps_embeddings_and_fingerprint(tmp_path, tiny_model_factory):
    """``merge_and_unload`` folds LoRA into the backbones: same vectors, same fingerprint,
    no adapters left; saving as adapters or training is refused, a whole save still works."""
    import copy

    from lusifer.model.lora import has_lora

    model = tiny_model_factory("llama", target_lora=LORA, encoder_lora=LORA)
    merged = copy.deepcopy(model).merge_and_unload()
    assert merged.lora_merged and not has_lora(merged.encoder) and not has_lora(merged.target.model)
    assert merged.fingerprint() == model.fingerprint()
    for kind in ("query", "document"):
        np.testing.assert_allclose(
            merged.encode(TEXTS, kind=kind), model.encode(TEXTS, kind=kind), atol=1e-5
        )
    assert merged.merge_and_unload() is merged  # a second call changes nothing
    with pytest.raises(RuntimeError, match="merge=True"):
        merged.save_pretrained(tmp_path / "adapters")
    assert not (tmp_path / "adapters").exists()
    with pytest.raises(RuntimeError, match="from_pretrained"):
        merged.freeze(connector=True, head=False, encoder_lora=False, target_lora=False)
    merged.save_pretrained(tmp_path / "whole", merge=True)
    reloaded = LusiferModel.from_pretrained(tmp_path / "whole")
    np.testing.assert_allclose(reloaded.encode(TEXTS), model.encode(TEXTS), atol=1e-5)


def test_half_precision_models_keep_their_adapters(tiny_model_factory):
    """Added into bf16 weights, the LoRA update would be rounded: no merge there."""
    import copy

    model = copy.deepcopy(tiny_model_factory("bert", target_lora=LORA)).to(torch.bfloat16)
    assert not model.merge_and_unload().lora_merged
    assert "target_lora" in {k.split(".")[0] for k in model.trained_state_dict()}


def test_load_embedder_merges_lora_unless_asked_not_to(tmp_path, tiny_model_factory):
    from lusifer import load_embedder

    model = tiny_model_factory("bert", target_lora=LORA, encoder_lora=LORA)
    folder = model.save_pretrained(tmp_path / "m", card=False)
    loaded, kept = load_embedder(folder), load_embedder(folder, merge_lora=False)
    assert loaded.lora_merged and not kept.lora_merged
    assert loaded.fingerprint() == kept.fingerprint() == model.fingerprint()
    np.testing.assert_allclose(loaded.encode(TEXTS), kept.encode(TEXTS), atol=1e-5)


def test_checkpoint_for_another_backbone_is_refused(tmp_path, tiny_model_factory):
    model = tiny_model_factory("bert")
    path = model.save_pretrained(tmp_path / "m")
    meta_path = path / "lusifer_config.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["target"] = "tiny:llama"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFolderError, match="different target backbone"):
        LusiferModel.from_pretrained(path)


def test_missing_or_extra_tensors_are_refused(tmp_path, tiny_model_factory):
    from safetensors.torch import load_file, save_file

    model = tiny_model_factory("bert")
    path = model.save_pretrained(tmp_path / "m")
    state = load_file(str(path / "model.safetensors"))
    save_file({**state, "head.net.0.weight": torch.zeros(2, 2)}, str(path / "model.safetensors"))
    with pytest.raises(ModelFolderError, match="unexpected"):
        LusiferModel.from_pretrained(path)
    state.pop("connector.ff.0.weight")
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ModelFolderError, match="missing"):
        LusiferModel.from_pretrained(path)


def test_not_a_lusifer_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="not a LUSIFER model folder"):
        LusiferModel.from_pretrained(tmp_path)


def test_bad_inputs(tiny_model_factory):
    model = tiny_model_factory("bert")
    empty = model.encode([""])
    assert np.isfinite(empty).all() and empty.shape == (1, model.embedding_size)
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        model.encode(["ok", None])
    with pytest.raises(TypeError, match=r"texts\[0\] is int"):
        model.encode([42])
    with pytest.raises(TypeError, match="texts must be"):
        model.encode(None)
    huge = model.encode("word " * 20_000, max_length=64)  # 100k characters
    assert np.isfinite(huge).all()
    broken = model.encode("caf\udce9 au lait")  # lone surrogate from undecodable bytes
    assert np.isfinite(broken).all()
    with pytest.raises(ValueError, match="kind"):
        model.encode("x", instruction="y", kind="passage")
    assert model.encode([]).shape[0] == 0


def test_invalid_config_key_names_the_key():
    with pytest.raises(ConfigError, match="pooling_mode"):
        LusiferModel.build(encoder="tiny:xlmr", target="tiny:bert", pooling_mode="mean")
    with pytest.raises(ConfigError, match="pooling"):
        LusiferModel.build(encoder="tiny:xlmr", target="tiny:bert", pooling="max")
    with pytest.raises(ConfigError, match="encoder_lora.rank"):
        LusiferModel.build(encoder="tiny:xlmr", target="tiny:bert", encoder_lora={"rank": 4})


def test_decoder_as_encoder_is_refused():
    with pytest.raises(ConfigError, match="causal LM"):
        LusiferModel.build(encoder="tiny:llama", target="tiny:bert")


def test_freeze_policy(tiny_model_factory):
    model = LusiferModel.build(
        encoder="tiny:xlmr", target="tiny:llama", encoder_lora=LORA, target_lora=LORA
    )
    model.freeze(connector=True, head=False, encoder_lora=True, target_lora=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("connector.") for n in trainable)
    assert any(n.startswith("encoder.") and "lora_" in n for n in trainable)
    assert not any(n.startswith("target.") for n in trainable)
    assert all("lora_" in n or n.startswith("connector.") for n in trainable)
    randomize_trained(model)


def test_instruction_tokens_can_be_left_out_of_pooling():
    from lusifer.model.pooling import pool

    model = LusiferModel.build(encoder="tiny:xlmr", target="tiny:bert", pool_instruction=False)
    randomize_trained(model)
    enc = model.tokenize(["a cat"], instruction="Find it", kind="query")
    prompt_ids = enc["input_ids"][0].tolist()
    pooled = enc["pool_mask"][0].tolist()
    text_ids = model.tokenizer("a cat", add_special_tokens=False)["input_ids"]
    # pooled: <s>, the text's tokens and </s>; the instruction ("Find it.\n") is not
    assert pooled.count(1) == len(text_ids) + 2
    assert [i for i, keep in zip(prompt_ids, pooled, strict=True) if keep][1:-1] == text_ids
    with torch.no_grad():
        embeds, mask = model.soft_tokens(enc["input_ids"], enc["attention_mask"])
        hidden = model.target.hidden_states(embeds, mask)
        expected = torch.nn.functional.normalize(pool(hidden, enc["pool_mask"], "mean"), dim=-1)
    got = model.encode("a cat", instruction="Find it", convert_to="torch")
    assert torch.allclose(got, expected[0], atol=1e-6)
    # the paper's default pools everything
    assert "pool_mask" not in LusiferModel.build(encoder="tiny:xlmr", target="tiny:bert").tokenize(
        ["a"], instruction="x"
    )


def test_a_model_without_instructions_reads_the_bare_text(tmp_path):
    model = LusiferModel.build(encoder="tiny:xlmr", target="tiny:bert", use_instructions=False)
    randomize_trained(model)
    assert model.uses_instructions is False
    enc = model.tokenize(["a cat", "a dog"], instruction=["Find it", None], kind="document")
    bare = model.tokenize(["a cat", "a dog"])
    assert torch.equal(enc["input_ids"], bare["input_ids"]) and "pool_mask" not in enc
    got = model.encode(["a cat"], instruction="Find it", kind="document")
    assert np.allclose(got, model.encode(["a cat"]), atol=1e-6)
    # saved with the model; the paper's default reads instructions
    reloaded = LusiferModel.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert reloaded.uses_instructions is False
    paper = LusiferModel.build(encoder="tiny:xlmr", target="tiny:bert")
    assert paper.uses_instructions is True
    prompted = paper.tokenize(["a cat"], instruction="Find it")["input_ids"]
    assert prompted.shape[1] > paper.tokenize(["a cat"])["input_ids"].shape[1]


def test_plain_embedder_cuts_texts_at_max_length():
    from lusifer.model import PlainEmbedder

    embedder = PlainEmbedder.load("tiny:bert", max_length=12)
    assert embedder.max_length == 12
    head = "abcdefghijklmnopqrstuvwxyz"
    short, long = embedder.encode([head, head + " and a great deal more text after it"])
    # only the first 12 tokens are read, so the extra tail changes nothing
    np.testing.assert_allclose(short, long, atol=1e-6)
    roomy = PlainEmbedder.load("tiny:bert", max_length=128)
    a, b = roomy.encode([head, head + " and a great deal more text after it"])
    assert np.abs(a - b).max() > 1e-3


def test_plain_embedder_reads_its_folders_sentence_transformers_settings(tmp_path):
    """A backbone folder's own token limit and pooling (sentence_bert_config.json,
    1_Pooling), as sentence-transformers reads them; an explicit max_length wins."""
    from lusifer.backbones import load_backbone
    from lusifer.model import PlainEmbedder

    backbone = load_backbone("tiny:bert")
    folder = tmp_path / "st-folder"
    backbone.model.save_pretrained(folder)
    backbone.tokenizer.save_pretrained(folder)
    # states none: 512, or the tokenizer's own limit when lower
    limit = min(512, backbone.tokenizer.model_max_length)
    assert PlainEmbedder.load(str(folder)).max_length == limit != 10
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 10}))
    (folder / "1_Pooling").mkdir()
    pooling = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    embedder = PlainEmbedder.load(str(folder))
    assert (embedder.max_length, embedder.pooling) == (10, "cls")
    assert PlainEmbedder.load(str(folder), max_length=64).max_length == 64


@pytest.mark.integration
def test_plain_minilm_equals_stock_sentence_transformers_on_long_texts():
    """``lusifer.load("all-MiniLM-L6-v2")`` is the stock model: its 256-token limit, not
    512, so a text longer than 256 tokens gets the same vector."""
    from sentence_transformers import SentenceTransformer

    import lusifer
    from lusifer.backbones.offline import ensure_offline_backbone

    texts = [" ".join(["The package manager resolves dependencies first."] * 60), "a cat"]
    stock = SentenceTransformer(str(ensure_offline_backbone("all-MiniLM-L6-v2")), device="cpu")
    want = stock.encode(texts, normalize_embeddings=True)
    got = lusifer.load("all-MiniLM-L6-v2").encode(texts)
    assert (got * want).sum(axis=1).min() >= 0.99999


def test_plain_embedder_backbone():
    from lusifer.model import PlainEmbedder
    from lusifer.model.target import TargetModel

    for reference, is_decoder in (("tiny:bert", False), ("tiny:llama", True)):
        embedder = PlainEmbedder.load(reference)
        assert isinstance(embedder.backbone, TargetModel)
        assert embedder.backbone.is_decoder is is_decoder
        assert embedder.embedding_size == embedder.backbone.hidden_size
        # the registered submodule is the backbone, and nothing else
        assert [name for name, _ in embedder.named_children()] == ["backbone"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    import os

    from lusifer.files import atomic_write

    path = tmp_path / "sub" / "report.json"
    atomic_write(path, '{"old": 1}')
    assert path.read_text() == '{"old": 1}'

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, b'{"new": 2}')
    assert path.read_text() == '{"old": 1}'
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]  # no temp left


def test_the_head_runs_on_a_half_precision_target():
    from lusifer import LusiferModel

    model = LusiferModel.build(encoder="tiny:xlmr", target="tiny:bert", projection_head=True)
    want = model.encode(["hello there", "bonjour"], use_head=True)
    model.target.model.to(torch.bfloat16)
    got = model.encode(["hello there", "bonjour"], use_head=True)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert (got * want).sum(axis=1).min() > 0.98  # bf16 rounding only
