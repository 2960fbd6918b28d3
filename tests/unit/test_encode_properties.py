"""Property-based tests (Hypothesis) of what ``encode`` promises on tiny models: a text's
vector does not depend on the order of the list, the batch size, the padding its batch
needs, or duplicates beside it; no texts give a (0, D) matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lusifer.backbones import load_backbone
from lusifer.model.embedder import PlainEmbedder

# Tiny models are float32 on CPU: padding and batch shape move a vector by ~1e-7.
ATOL = 2e-5
PROPERTY = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)

# Several scripts, combining marks, emoji, whitespace and control characters; empty
# strings too (they embed the prompt alone).
ALPHABET = st.sampled_from(
    list("abcxyz ABC019.,!?\t\n") + list("éßøçñ") + list("кошка") + list("猫がマット")
    + list("قطة") + list("बिल्ली") + ["\u0301", "\u200b", "\x00", "😀", "\ufeff"]
)  # fmt: skip
TEXT = st.text(alphabet=ALPHABET, min_size=0, max_size=40)
TEXTS = st.lists(TEXT, min_size=1, max_size=6)


@pytest.fixture(
    scope="module", params=["lusifer-bert", "lusifer-llama", "plain-xlmr", "plain-llama"]
)
def encoder(request, tiny_model_factory):
    """LUSIFER with an encoder-style and a decoder-style target (learned tokens, no
    instruction pooling), and plain mean / last-token embedders."""
    if request.param == "lusifer-bert":
        return tiny_model_factory("bert")
    if request.param == "lusifer-llama":
        return tiny_model_factory("llama", num_learned_tokens=2, pool_instruction=False)
    if request.param == "plain-xlmr":
        return PlainEmbedder(load_backbone("tiny:xlmr"), max_length=64).eval()
    return PlainEmbedder(load_backbone("tiny:llama"), pooling="last", max_length=64).eval()


def encode(encoder, texts, **kwargs):
    kwargs.setdefault("batch_size", 1)
    return encoder.encode(texts, max_length=64, **kwargs)


def alone(encoder, texts, instruction=None, kind="query"):
    """Each text embedded by itself: no neighbours, no padding."""
    return np.stack([encode(encoder, [t], instruction=instruction, kind=kind)[0] for t in texts])


INSTRUCTION = st.sampled_from([None, "Retrieve passages that answer the question"])
KIND = st.sampled_from(["query", "document"])


@PROPERTY
@given(texts=TEXTS, data=st.data(), instruction=INSTRUCTION, kind=KIND)
def test_order_and_batch_size_never_change_a_vector(encoder, texts, data, instruction, kind):
    reference = alone(encoder, texts, instruction, kind)
    order = data.draw(st.permutations(range(len(texts))), label="order")
    batch_size = data.draw(st.integers(1, 8), label="batch_size")
    shuffled = encode(
        encoder,
        [texts[i] for i in order],
        instruction=instruction,
        kind=kind,
        batch_size=batch_size,
    )
    assert shuffled.shape == reference.shape and shuffled.dtype == np.float32
    np.testing.assert_allclose(shuffled, reference[order], atol=ATOL)


@PROPERTY
@given(texts=TEXTS, padding=st.text(alphabet=ALPHABET, min_size=41, max_size=200))
def test_padding_never_changes_a_vector(encoder, texts, padding):
    """Batched with a longer text, every short text is padded; its vector stays."""
    reference = alone(encoder, texts)
    padded = encode(encoder, [*texts, padding], batch_size=len(texts) + 1)
    np.testing.assert_allclose(padded[:-1], reference, atol=ATOL)


@PROPERTY
@given(texts=TEXTS, data=st.data())
def test_duplicates_never_change_a_vector(encoder, texts, data):
    picks = data.draw(st.lists(st.integers(0, len(texts) - 1), min_size=1, max_size=8))
    batch_size = data.draw(st.integers(1, 8), label="batch_size")
    reference = alone(encoder, texts)
    doubled = encode(encoder, texts + [texts[i] for i in picks], batch_size=batch_size)
    np.testing.assert_allclose(doubled[: len(texts)], reference, atol=ATOL)
    np.testing.assert_allclose(doubled[len(texts) :], reference[picks], atol=ATOL)


def test_empty_input_has_the_embedding_width(encoder):
    dim = encoder.embedding_size
    empty = encoder.encode([])
    assert empty.shape == (0, dim) and empty.dtype == np.float32
    as_torch = encoder.encode([], convert_to="torch")
    assert tuple(as_torch.shape) == (0, dim) and as_torch.dtype == torch.float32
    # Stacks with real vectors.
    assert np.concatenate([empty, encode(encoder, ["x"])]).shape == (1, dim)


def test_empty_input_with_the_head(tiny_model_factory):
    model = tiny_model_factory("bert", projection_head=True)
    assert model.encode([], use_head=True).shape == (0, model.embedding_size)
