"""Tiny random backbones built from configs in code, for fast unit tests.

They are real transformers models (XLM-R, BERT, Llama, Mistral, Qwen2 layouts) with a
byte-level tokenizer that covers every script, seeded so the same name always gives the
same weights. Referenced as ``tiny:<name>``; built once into the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    XLMRobertaConfig,
    XLMRobertaModel,
)

from .cache import build_atomic, cache_root

TINY_VERSION = "2"
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R order: bos=0, pad=1, eos=2


def _byte_level_tokenizer(add_eos: bool) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIALS + byte_chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    single = "<s> $A </s>" if add_eos else "<s> $A"
    tok.post_processor = processors.TemplateProcessing(
        single=single,
        pair=single + " $B" + (" </s>" if add_eos else ""),
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=256,
    )


VOCAB_SIZE = len(SPECIALS) + 256


def _xlmr() -> PreTrainedModel:
    config = XLMRobertaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=258,
        hidden_dropout_prob=0.0,  # deterministic: tests compare runs exactly
        attention_probs_dropout_prob=0.0,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    return XLMRobertaModel(config, add_pooling_layer=False)


def _bert() -> PreTrainedModel:
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=1,
    )
    return BertModel(config, add_pooling_layer=False)


def _decoder_kwargs() -> dict:
    return dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=40,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        tie_word_embeddings=True,
    )


TINY_BACKBONES: dict[str, tuple[Callable[[], PreTrainedModel], bool]] = {
    # name: (model factory, tokenizer appends EOS)
    "xlmr": (_xlmr, True),
    "bert": (_bert, True),
    "llama": (lambda: LlamaForCausalLM(LlamaConfig(**_decoder_kwargs())), False),
    "mistral": (lambda: MistralForCausalLM(MistralConfig(**_decoder_kwargs())), False),
    "qwen2": (lambda: Qwen2ForCausalLM(Qwen2Config(**_decoder_kwargs())), False),
}


def ensure_tiny_backbone(name: str, *, cache_dir: Path | None = None) -> Path:
    """Build (once) and return the folder of tiny backbone ``name`` (see ``TINY_BACKBONES``)."""
    if name not in TINY_BACKBONES:
        raise ValueError(f"unknown tiny backbone {name!r}; choose from {sorted(TINY_BACKBONES)}")
    factory, add_eos = TINY_BACKBONES[name]

    def build(folder: Path) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = factory()
        model.save_pretrained(folder)
        _byte_level_tokenizer(add_eos).save_pretrained(folder)

    root = cache_dir or cache_root()
    return build_atomic(
        root / "tiny" / f"{name}-v{TINY_VERSION}",
        build,
        name=f"tiny:{name}",
        sources={"lusifer-tiny": TINY_VERSION},
    )
