"""The ONNX fast path: one exported graph, fp32 and int8, against the torch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lusifer import load
from lusifer.model import PlainEmbedder
from lusifer.onnx import (
    OnnxEncoderStates,
    OnnxExportError,
    OnnxLusifer,
    OnnxPlainEmbedder,
    default_threads,
    ensure_exported,
    ensure_plain_exported,
)

SENTENCES = [
    "The weather is lovely today.",
    "Il fait très beau aujourd'hui.",
    "Сегодня прекрасная погода.",
    "आज मौसम बहुत अच्छा है।",
    "Hôm nay thời tiết rất đẹp.",
    "오늘 날씨가 정말 좋네요.",
    "Leo hali ya hewa ni nzuri sana.",
    "A longer English sentence about software packages, translations and help pages.",
]
MAX_LENGTH = 96


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("target", ["bert", "mistral", "qwen2"])
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_onnx_matches_torch(tiny_model_factory, tmp_path_factory, target, quantize):
    model = tiny_model_factory(target, num_learned_tokens=2)
    export_dir = tmp_path_factory.getbasetemp() / f"onnx-{target}"
    if quantize and target != "bert":
        with pytest.warns(UserWarning, match="decoder"):
            fast = OnnxLusifer.from_model(
                model, quantize=quantize, export_dir=export_dir, threads=1
            )
    else:
        fast = OnnxLusifer.from_model(model, quantize=quantize, export_dir=export_dir, threads=1)
    for kwargs in ({}, {"instruction": "Retrieve the translation", "kind": "document"}):
        want = model.encode(SENTENCES, max_length=MAX_LENGTH, batch_size=3, **kwargs)
        got = fast.encode(SENTENCES, max_length=MAX_LENGTH, batch_size=3, **kwargs)
        assert got.shape == want.shape and got.dtype == np.float32
        assert cosines(got, want).min() >= (0.99 if quantize else 0.99999)
    single = fast.encode(SENTENCES[1], max_length=MAX_LENGTH)
    assert single.shape == (model.embedding_size,)


def test_export_is_cached_and_keyed_on_weights(tiny_model_factory, tmp_path):
    import torch

    model = tiny_model_factory("bert", projection_head=True)
    first = ensure_exported(model, export_dir=tmp_path)
    mtime = first.stat().st_mtime_ns
    assert ensure_exported(model, export_dir=tmp_path) == first
    assert first.stat().st_mtime_ns == mtime  # not exported again
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    saved = model.connector.ff[0].bias.detach().clone()
    try:
        with torch.no_grad():
            model.connector.ff[0].bias.add_(1.0)
        assert ensure_exported(model, export_dir=tmp_path) != first
    finally:
        with torch.no_grad():
            model.connector.ff[0].bias.copy_(saved)
    head = ensure_exported(model, export_dir=tmp_path, use_head=True)
    fast = OnnxLusifer(head, model, use_head=True, threads=1)
    assert fast.fingerprint() == model.fingerprint()  # evaluation results carry over
    want = model.encode(SENTENCES[:3], max_length=MAX_LENGTH, use_head=True)
    assert cosines(fast.encode(SENTENCES[:3], max_length=MAX_LENGTH), want).min() > 0.99999
    with pytest.raises(ValueError, match="use_head"):
        fast.encode(SENTENCES[:1], use_head=False)


def test_onnx_matches_torch_with_connector_centering(tiny_model_factory, tmp_path):
    model = tiny_model_factory("bert", connector_centering=0.5, pool_instruction=False)
    fast = OnnxLusifer.from_model(model, export_dir=tmp_path, threads=1)
    kwargs = {"instruction": "Retrieve the translation", "kind": "document"}
    want = model.encode(SENTENCES, max_length=MAX_LENGTH, batch_size=3, **kwargs)
    got = fast.encode(SENTENCES, max_length=MAX_LENGTH, batch_size=3, **kwargs)
    assert cosines(got, want).min() > 0.99999


def test_onnx_model_without_instructions_ignores_them(tiny_model_factory, tmp_path):
    model = tiny_model_factory("bert", use_instructions=False)
    fast = OnnxLusifer.from_model(model, export_dir=tmp_path, threads=1)
    assert fast.uses_instructions is False
    got = fast.encode(SENTENCES[:3], instruction="Retrieve the translation", kind="document")
    assert cosines(got, model.encode(SENTENCES[:3])).min() > 0.99999


def test_from_pretrained_exports_next_to_the_model(tiny_model_factory, tmp_path):
    model = tiny_model_factory("llama")
    folder = model.save_pretrained(tmp_path / "m")
    with pytest.warns(UserWarning, match="decoder"):
        fast = load(folder, backend="onnx", quantize="int8", threads=1)
    assert fast.onnx_path.parent == folder / "onnx"
    assert ".int8" in fast.onnx_path.name
    want = model.encode(SENTENCES, max_length=MAX_LENGTH)
    assert cosines(fast.encode(SENTENCES, max_length=MAX_LENGTH), want).min() >= 0.99


def test_backend_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        load("tiny:bert", backend="tensorrt")
    with pytest.raises(ValueError, match="--backend onnx"):
        load("tiny:bert", backend="torch", quantize="int8")
    with pytest.raises(ValueError, match=str(tmp_path)):
        load(str(tmp_path), backend="onnx")  # neither a LUSIFER folder nor a backbone
    with pytest.raises(ValueError, match="LUSIFER model folders"):
        load("tiny:bert", backend="onnx", quantize="int8")
    monkeypatch.setenv("LUSIFER_NUM_THREADS", "3")
    assert default_threads() == 3
    assert default_threads(1) == 1
    monkeypatch.setenv("LUSIFER_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="LUSIFER_NUM_THREADS"):
        default_threads()


def test_plain_backbone_onnx_matches_torch_and_is_cached(tmp_path):
    embedder = PlainEmbedder.load("tiny:bert", max_length=MAX_LENGTH)
    embedder.prefixes = {"query": "query: ", "document": "passage: "}
    fast = OnnxPlainEmbedder.from_embedder(embedder, threads=1, export_dir=tmp_path)
    assert fast.fingerprint() == embedder.fingerprint()  # evaluation results carry over
    assert fast.name == "tiny:bert (onnx)"
    for kind in ("query", "document"):
        want = embedder.encode(SENTENCES, kind=kind, batch_size=3)
        got = fast.encode(SENTENCES, kind=kind, batch_size=3, instruction="ignored")
        assert got.shape == want.shape
        assert cosines(got, want).min() > 0.99999, kind
    # cached: the same graph file, not written again ...
    path, mtime = fast.onnx_path, fast.onnx_path.stat().st_mtime_ns
    assert ensure_plain_exported(embedder, export_dir=tmp_path) == path
    assert path.stat().st_mtime_ns == mtime
    # ... the prefixes and max length live outside the graph ...
    embedder.max_length = 16
    assert ensure_plain_exported(embedder, export_dir=tmp_path) == path
    # ... and other weights give another graph
    first = next(iter(embedder.backbone.parameters()))
    with torch.no_grad():
        first.add_(0.5)
    assert ensure_plain_exported(embedder, export_dir=tmp_path) != path
    with pytest.raises(ValueError, match="CPU"):
        fast.encode(SENTENCES[:1], device="cuda")


def test_plain_decoder_stays_on_torch(monkeypatch, tmp_path):
    monkeypatch.setenv("LUSIFER_CACHE", str(tmp_path))
    embedder = PlainEmbedder.load("tiny:llama")
    with pytest.raises(OnnxExportError, match="decoder"):
        ensure_plain_exported(embedder, export_dir=tmp_path)
    with pytest.warns(UserWarning, match="using torch"):
        fallback = load("tiny:llama", backend="onnx", threads=1)
    assert isinstance(fallback, PlainEmbedder)
    assert isinstance(load("tiny:bert", backend="onnx", threads=1), OnnxPlainEmbedder)
    assert list((tmp_path / "onnx").glob("plain-*.onnx"))  # exported into the lusifer cache


def test_plain_export_that_cannot_write_is_an_export_error(tmp_path):
    # a cache folder that cannot be created (here: a file in the way; read-only or full
    # disks fail at the same place) is an OnnxExportError, which callers turn into torch
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(OnnxExportError, match="tiny:bert"):
        ensure_plain_exported(PlainEmbedder.load("tiny:bert"), export_dir=blocker / "onnx")


def test_encode_cli_onnx_backend(tiny_model_factory, tmp_path):
    from typer.testing import CliRunner

    from lusifer.cli import app

    model = tiny_model_factory("bert")
    folder = model.save_pretrained(tmp_path / "m")
    texts = tmp_path / "in.txt"
    texts.write_text("\n".join(SENTENCES[:4]) + "\n")
    out = tmp_path / "out.npy"
    args = ["encode", str(folder), str(texts), "-o", str(out), "--max-length", str(MAX_LENGTH)]
    result = CliRunner().invoke(app, [*args, "--backend", "onnx", "--threads", "1"])
    assert result.exit_code == 0, result.output
    got = np.load(out)
    want = model.encode(SENTENCES[:4], max_length=MAX_LENGTH)
    assert cosines(got, want).min() > 0.99999
    bad = CliRunner().invoke(app, [*args, "--quantize", "int8"])
    assert bad.exit_code == 2 and "--backend onnx" in bad.output


@pytest.mark.integration
def test_real_e5_to_minilm_fp32_and_int8(tmp_path):
    from lusifer import LusiferModel

    # an untrained connector starts random, and int8's worst cosine moved between 0.976
    # and 0.991 with it (seeds 0-4, AVX2 without VNNI): the same start every run
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LusiferModel.build(encoder="multilingual-e5-small", target="all-MiniLM-L6-v2")
    want = model.encode(SENTENCES, instruction="Retrieve parallel sentences")
    for quantize in (None, "int8"):
        fast = OnnxLusifer.from_model(model, quantize=quantize, export_dir=tmp_path)
        got = fast.encode(SENTENCES, instruction="Retrieve parallel sentences")
        assert cosines(got, want).min() >= (0.99 if quantize else 0.9999), quantize


def matmul_names(path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == "MatMul"]


def test_onnx_with_lora_adapters_exports_them_merged(tiny_model_factory, tmp_path):
    """LoRA (random, non-zero) is folded into the weights: one MatMul per linear layer, as
    many as the same model without LoRA has, and the same embeddings as torch."""
    lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    model = tiny_model_factory("llama", encoder_lora=lora, target_lora=lora)
    fast = OnnxLusifer.from_model(model, export_dir=tmp_path, threads=1)
    want = model.encode(SENTENCES, max_length=MAX_LENGTH)
    assert cosines(fast.encode(SENTENCES, max_length=MAX_LENGTH), want).min() > 0.99999
    names = matmul_names(fast.onnx_path)
    assert not [n for n in names if "lora" in n or "base_layer" in n]
    plain = OnnxLusifer.from_model(tiny_model_factory("llama"), export_dir=tmp_path, threads=1)
    assert len(names) == len(matmul_names(plain.onnx_path))
    assert any(n.endswith("base_layer") for n, _ in model.named_modules())  # model kept its LoRA


def test_encoder_states_graph_matches_torch_and_is_keyed_on_the_encoder(
    tiny_model_factory, tmp_path
):
    """The graph CPU training reads a frozen encoder through: the encoder's token states
    with its LoRA, cached per encoder weights, exported without changing the model's mode."""
    lora = {"r": 4, "alpha": 8, "dropout": 0.1}
    model = tiny_model_factory("bert", encoder_lora=lora)
    model.train()
    try:
        runner = OnnxEncoderStates(model, export_dir=tmp_path, threads=1)
        assert model.encoder.training  # still in the caller's mode (dropout on)
        assert not [n for n in matmul_names(runner.onnx_path) if "lora" in n]  # LoRA merged
    finally:
        model.eval()
    enc = model.tokenize(SENTENCES, max_length=MAX_LENGTH)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        want = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(runner(ids, mask), want, atol=1e-4, rtol=1e-4)
    from lusifer.training.module import TrainingModule

    with torch.no_grad():  # training reads its frozen encoder through the runner
        inputs = {"input_ids": ids, "attention_mask": mask, "use_head": False}
        via_runner = TrainingModule(model, runner)("embed", **inputs).numpy()
        direct = TrainingModule(model)("embed", **inputs).numpy()
    assert cosines(via_runner, direct).min() > 0.99999
    assert OnnxEncoderStates(model, export_dir=tmp_path).onnx_path == runner.onnx_path
    lora_b = next(p for n, p in model.encoder.named_parameters() if "lora_B" in n)
    saved = lora_b.detach().clone()
    try:
        with torch.no_grad():
            lora_b.add_(0.5)  # a trained encoder LoRA is another graph
        assert OnnxEncoderStates(model, export_dir=tmp_path).onnx_path != runner.onnx_path
    finally:
        with torch.no_grad():
            lora_b.copy_(saved)


@pytest.mark.parametrize("learned_tokens", [0, 2])
def test_onnx_pools_over_the_text_only_like_torch(tiny_model_factory, tmp_path, learned_tokens):
    """pool_instruction=False (the demo's recipe): the graph leaves the instruction out of
    pooling exactly as the torch model does, and gives a different vector than pooling it."""
    model = tiny_model_factory("bert", pool_instruction=False, num_learned_tokens=learned_tokens)
    fast = OnnxLusifer.from_model(model, export_dir=tmp_path, threads=1)
    for kwargs in ({}, {"instruction": "Retrieve the translation of this sentence"}):
        want = model.encode(SENTENCES, max_length=MAX_LENGTH, batch_size=3, **kwargs)
        got = fast.encode(SENTENCES, max_length=MAX_LENGTH, batch_size=3, **kwargs)
        assert cosines(got, want).min() > 0.99999
    model.config.pool_instruction = True  # same weights, instruction pooled too
    try:
        everything = model.encode(SENTENCES, max_length=MAX_LENGTH, **kwargs)
    finally:
        model.config.pool_instruction = False
    assert cosines(got, everything).max() < 0.9999


# Every model variant the graph has a branch for: encoder and decoder targets, connector
# centering, learned tokens, head, instructions (pooled, left out of pooling, ignored) and
# each pooling; each feature appears on and off, on encoder and decoder targets.
PARITY_VARIANTS = {
    "bert": ("bert", {}),
    "bert-learned-centered-head-textpool": (
        "bert",
        {
            "num_learned_tokens": 2,
            "connector_centering": 0.5,
            "projection_head": True,
            "pool_instruction": False,
        },
    ),
    "bert-cls-noinstructions": ("bert", {"pooling": "cls", "use_instructions": False}),
    "mistral-learned": ("mistral", {"num_learned_tokens": 2}),
    "mistral-centered-head-textpool": (
        "mistral",
        {"connector_centering": 0.5, "projection_head": True, "pool_instruction": False},
    ),
    "qwen2-last-head-noinstructions": (
        "qwen2",
        {"pooling": "last", "projection_head": True, "use_instructions": False},
    ),
    "llama-learned-centered-textpool": (
        "llama",
        {"num_learned_tokens": 3, "connector_centering": 1.0, "pool_instruction": False},
    ),
}


@pytest.mark.parametrize("variant", sorted(PARITY_VARIANTS))
def test_onnx_runner_encodes_every_variant_like_torch(tiny_model_factory, tmp_path, variant):
    """The graph is the torch model's own forward (LusiferModel.embed_states after the
    encoder): torch ``encode`` and the ONNX runner's ``encode`` agree to 1e-4 everywhere."""
    target, options = PARITY_VARIANTS[variant]
    model = tiny_model_factory(target, **options)
    heads = (False, True) if model.head is not None else (False,)
    for use_head in heads:
        fast = OnnxLusifer.from_model(model, export_dir=tmp_path, threads=1, use_head=use_head)
        for kwargs in (
            {},
            {"instruction": "Retrieve the translation", "kind": "query"},
            {"instruction": "Retrieve the translation", "kind": "document"},
        ):
            for normalize in (True, False):
                want = model.encode(
                    SENTENCES, batch_size=3, use_head=use_head, normalize=normalize, **kwargs
                )
                got = fast.encode(SENTENCES, batch_size=3, normalize=normalize, **kwargs)
                assert got.shape == want.shape, (variant, use_head, kwargs)
                diff = float(np.abs(got - want).max())
                assert diff < 1e-4, (variant, use_head, kwargs, normalize, diff)


def _boolean_index_placement(embeds, attention_mask, learned_tokens):
    """The connector's placement as first written (boolean indexing; not traceable)."""
    batch, length, dim = embeds.shape
    n = learned_tokens.shape[0]
    lengths = attention_mask.sum(dim=1)
    out = embeds.new_zeros(batch, length + n, dim)
    positions = torch.arange(length + n).unsqueeze(0)
    real = positions < lengths.unsqueeze(1)
    learned = (positions >= lengths.unsqueeze(1)) & (positions < (lengths + n).unsqueeze(1))
    out[real] = embeds[attention_mask.bool()]
    out[learned] = learned_tokens.to(embeds.dtype).repeat(batch, 1)
    return out, (real | learned).to(attention_mask.dtype)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_place_learned_tokens_equals_boolean_indexing(padding_side):
    from lusifer.model.connector import place_learned_tokens

    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([5, 1, 7, 3])
    mask = (torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)).long()
    if padding_side == "left":
        mask = mask.flip(1)
    for n in (1, 3):
        embeds = torch.randn(4, 7, 6, generator=gen, requires_grad=True)
        tokens = torch.randn(n, 6, generator=gen, requires_grad=True)
        got, got_mask = place_learned_tokens(embeds, mask, tokens)
        want, want_mask = _boolean_index_placement(embeds, mask, tokens)
        assert torch.equal(got, want) and torch.equal(got_mask, want_mask)
        weights = torch.randn(got.shape, generator=gen)
        grads = torch.autograd.grad((got * weights).sum(), (embeds, tokens))
        want_grads = torch.autograd.grad((want * weights).sum(), (embeds, tokens))
        for g, w in zip(grads, want_grads, strict=True):
            torch.testing.assert_close(g, w)


def test_int8_keeps_the_widest_spread_matmuls_in_float(tiny_model_factory, tmp_path):
    """A planted outlier channel (one FFN unit of encoder layer 1 firing 100x) makes that
    layer's FFN output projection the widest-spread MatMul input: the int8 policy keeps it,
    and only the policy's share, in float32."""
    import copy

    from lusifer.onnx.export import calibration_feeds, int8_excluded_nodes, matmul_input_spread

    model = copy.deepcopy(tiny_model_factory("bert"))
    ffn_in = next(
        m for n, m in model.encoder.named_modules() if n.endswith("layer.1.intermediate.dense")
    )
    with torch.no_grad():
        ffn_in.weight[0] *= 100
        ffn_in.bias[0] = 100.0
    fp32 = ensure_exported(model, export_dir=tmp_path)
    spread = matmul_input_spread(fp32, calibration_feeds(model))
    assert set(spread) <= set(matmul_names(fp32)) and len(spread) > 10
    widest = max(spread, key=spread.__getitem__)
    assert widest.startswith("/lusifer_encoder/") and "layer.1/output/dense/MatMul" in widest
    assert int8_excluded_nodes(spread, share=0.0) == [widest]
    assert len(int8_excluded_nodes(spread, share=0.5)) == round(len(spread) / 2)
    int8 = ensure_exported(model, quantize="int8", export_dir=tmp_path)  # the shipped path
    kept = set(matmul_names(int8)) & set(spread)  # weight MatMuls still in float32
    assert kept == set(int8_excluded_nodes(spread))
    fast = OnnxLusifer(int8, model, threads=1)
    want = model.encode(SENTENCES, max_length=MAX_LENGTH)
    assert cosines(fast.encode(SENTENCES, max_length=MAX_LENGTH), want).min() >= 0.99


def test_int8_results_are_cached_apart_from_fp32(tiny_model_factory, tmp_path):
    """Both graphs report the torch model's fingerprint; the evaluation cache must still
    keep an int8 model's scores apart from the float32 model's."""
    from types import SimpleNamespace

    from lusifer.evaluation.runner import result_cache_path
    from lusifer.onnx.export import int8_tag

    model = tiny_model_factory("bert")
    fp32 = OnnxLusifer.from_model(model, export_dir=tmp_path, threads=1)
    int8 = OnnxLusifer.from_model(model, quantize="int8", export_dir=tmp_path, threads=1)
    assert (fp32.quantize, int8.quantize) == (None, int8_tag())
    task = SimpleNamespace(key="Task.en", digest="data", instruction=None)
    paths = {result_cache_path(m, m.fingerprint(), task) for m in (fp32, int8)}
    assert len(paths) == 2


def int8_weight_range(path) -> int:
    """The largest magnitude among an int8 graph's quantised weights."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = [numpy_helper.to_array(i) for i in graph.initializer if i.data_type == 3]
    return int(max(np.abs(w.astype(np.int32)).max() for w in weights))


def test_int8_weights_take_7_bits_where_the_cpu_would_saturate(
    tiny_model_factory, tmp_path, monkeypatch
):
    """x86 without VNNI saturates uint8 x int8 pair sums: weights get 7 bits there, and the
    graph is named apart, so a folder moved to a VNNI machine is quantised again."""
    from lusifer.onnx import export

    model = tiny_model_factory("bert")
    monkeypatch.setattr(export.platform, "machine", lambda: "x86_64")
    graphs = {}
    for flags in ({"avx2", "fma"}, {"avx2", "avx512_vnni"}):
        monkeypatch.setattr(export, "_cpu_flags", lambda flags=flags: flags)
        graphs[export.int8_reduce_range()] = export.ensure_exported(
            model, quantize="int8", export_dir=tmp_path
        )
    assert graphs[True].name.endswith("-r7.onnx")
    assert graphs[True] != graphs[False]
    assert int8_weight_range(graphs[True]) <= 64 < int8_weight_range(graphs[False])
    monkeypatch.setattr(export.platform, "machine", lambda: "aarch64")
    assert not export.int8_reduce_range()
