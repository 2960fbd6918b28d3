"""Encoding a corpus into resumable shards, across processes, and the manifest.

An output folder holds, for shard ``i`` of ``shard_size`` consecutive records:

- ``shard-0000i.npy`` (rows x dim, float32 or float16) and ``shard-0000i.ids.jsonl``
  (``{"id": ...}`` a line, plus ``"text"`` with ``store_text``), or one
  ``shard-0000i.parquet`` (``id`` string, ``embedding`` list<float>, ``text`` with
  ``store_text``);
- ``shard-0000i.json``, the shard's record, written last: its rows, the sha256 and size
  of each file, and digests of the settings and of the shard's ids and texts;

plus ``encode-settings.json`` (written when a run starts) and ``manifest.json`` (written
when every shard's record is there; see :func:`manifest_for`). Every file is written
atomically (:mod:`lusifer.files`), so a killed run leaves finished shards and
temporaries; rerun with the same arguments, it checks each record against the files'
hashes and the input, skips what is done and encodes the rest. Other arguments
(another model, instruction, kind, dtype, shard size, format...) are refused unless
``overwrite``.

Several processes (torchrun, accelerate launch) each stream the whole input and encode
the shards ``i`` with ``i % world_size == rank``; whichever finishes last finds every
record complete and writes the manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from ..files import atomic_file, atomic_write, discard, remove_partial
from .streaming import (
    InputSummary,
)

MANIFEST_FILE = "manifest.json"
SETTINGS_FILE = "encode-settings.json"
MANIFEST_VERSION = 1
ShardDtype = Literal["float32", "float16"]
ShardFormat = Literal["npy", "parquet"]
DTYPES = {"float32": np.float32, "float16": np.float16}
FORMATS: tuple[str, ...] = get_args(ShardFormat)
DEFAULT_SHARD_SIZE = 10_000
HASH_CHUNK = 1 << 20


class CorpusError(ValueError):
    """An output folder cannot be used as asked (other settings, unfinished, damaged)."""


def shard_stem(index: int) -> str:
    return f"shard-{index:05d}"


def shard_files(index: int, fmt: str) -> list[str]:
    """The data files of shard ``index`` (its record ``shard-xxxxx.json`` comes last)."""
    stem = shard_stem(index)
    return [f"{stem}.parquet"] if fmt == "parquet" else [f"{stem}.ids.jsonl", f"{stem}.npy"]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class EncodeSettings:
    """Everything that decides the bytes of the shards; a rerun must give the same."""

    model: str
    fingerprint: str | None
    instruction: str | None
    kind: str
    dtype: str
    format: str
    shard_size: int
    normalize: bool
    max_length: int | None
    quantize: str | None
    store_text: bool

    def compared(self) -> dict:
        """The settings a rerun must match: the model by its fingerprint when it has one
        (so a moved or renamed model folder still resumes), else by its reference."""
        data = asdict(self)
        if self.fingerprint is not None:
            data.pop("model")
        return data

    def key(self) -> str:
        text = json.dumps(self.compared(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def differences(old: dict, new: EncodeSettings) -> list[str]:
    """``key: old there, new now`` for every compared setting that differs."""
    current = new.compared()
    previous = {k: v for k, v in old.items() if k in asdict(new)}
    if "model" not in current:
        previous.pop("model", None)
        if previous.get("fingerprint") != current.get("fingerprint"):
            current["model"], previous["model"] = new.model, old.get("model")
    return [
        f"{key}: {previous.get(key)!r} there, {current.get(key)!r} now"
        for key in sorted(set(current) | set(previous))
        if previous.get(key) != current.get(key)
    ]


@dataclass
class EncodeReport:
    """What :func:`encode_corpus` did in this process."""

    rows: int
    shards: int
    encoded: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    bad_lines: int = 0
    manifest: Path | None = None
    rank: int = 0
    world_size: int = 1


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _our_files(outdir: Path) -> list[Path]:
    names = [MANIFEST_FILE, SETTINGS_FILE]
    found = [outdir / n for n in names if (outdir / n).exists()]
    found += sorted(outdir.glob("shard-*"))
    found += sorted(p for p in outdir.glob(".*") if p.name.startswith((".shard-", ".manifest.")))
    found += sorted(outdir.glob(f".{SETTINGS_FILE}.tmp-*"))
    return found


def check_settings(outdir: Path, settings: EncodeSettings, *, overwrite: bool) -> dict | None:
    """The settings an earlier run left in ``outdir`` (None if none); raises
    :class:`CorpusError` when they differ and not ``overwrite``."""
    path = outdir / SETTINGS_FILE
    old = read_json(path) if path.exists() else None
    if path.exists() and old is None and not overwrite:
        raise CorpusError(f"{path} is damaged; pass --overwrite to start {outdir} over")
    if old is not None and not overwrite:
        diff = differences(old, settings)
        if diff:
            raise CorpusError(
                f"{outdir} holds embeddings made with other settings:\n  "
                + "\n  ".join(diff)
                + "\nRerun with the same arguments to resume, choose another output folder, "
                "or pass --overwrite to delete its shards and start over."
            )
    if old is None and not overwrite and any(outdir.glob("shard-*")):
        raise CorpusError(
            f"{outdir} holds shards but no {SETTINGS_FILE} to say how they were made; "
            "choose another output folder or pass --overwrite"
        )
    return old


def prepare_outdir(
    outdir: Path, settings: EncodeSettings, *, overwrite: bool, is_main: bool
) -> None:
    """Check ``outdir`` against ``settings`` (every process) and, in the main process,
    start it over when ``overwrite``, clear what killed runs left, drop a manifest that
    this run will rewrite and record the settings."""
    if outdir.exists() and not outdir.is_dir():
        raise CorpusError(f"output {outdir} is a file; the output must be a folder (or a .npy)")
    check_settings(outdir, settings, overwrite=overwrite)
    if not is_main:
        return
    outdir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for path in _our_files(outdir):
            discard(path)
    remove_partial(outdir, "shard-*")
    remove_partial(outdir, MANIFEST_FILE)
    if (outdir / MANIFEST_FILE).exists():
        discard(outdir / MANIFEST_FILE)
    payload = asdict(settings) | {"settings_key": settings.key()}
    atomic_write(outdir / SETTINGS_FILE, json.dumps(payload, indent=2, ensure_ascii=False))


# ------------------------------------------------------------------ one shard
def write_shard(
    outdir: Path,
    index: int,
    ids: list[str],
    vectors: np.ndarray,
    settings: EncodeSettings,
    texts_sha256: str,
    texts: list[str] | None = None,
) -> dict:
    """Write shard ``index`` (data files, then its record), each atomically; returns the
    record."""
    record_path = outdir / f"{shard_stem(index)}.json"
    if record_path.exists():  # an old record must never vouch for new, half-written files
        discard(record_path)
    names = shard_files(index, settings.format)
    if settings.format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, dim = vectors.shape
        flat = pa.array(np.ascontiguousarray(vectors).reshape(-1))
        offsets = pa.array(np.arange(0, rows * dim + 1, dim, dtype=np.int32))
        columns = {
            "id": pa.array(ids, pa.string()),
            "embedding": pa.ListArray.from_arrays(offsets, flat),
        }
        if texts is not None:
            columns["text"] = pa.array(texts, pa.string())
        with atomic_file(outdir / names[0], suffix=".parquet") as tmp:
            pq.write_table(pa.table(columns), tmp)
    else:
        lines = []
        for i, rid in enumerate(ids):
            row = {"id": rid} if texts is None else {"id": rid, "text": texts[i]}
            lines.append(json.dumps(row, ensure_ascii=False))
        atomic_write(outdir / names[0], "\n".join(lines) + "\n")
        with atomic_file(outdir / names[1], suffix=".npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(vectors))
    files = {
        name: {"sha256": sha256_file(outdir / name), "bytes": (outdir / name).stat().st_size}
        for name in names
    }
    record = {
        "shard": index,
        "rows": len(ids),
        "dimension": int(vectors.shape[1]),
        "dtype": settings.dtype,
        "settings_key": settings.key(),
        "texts_sha256": texts_sha256,
        "first_id": ids[0],
        "last_id": ids[-1],
        "files": files,
    }
    atomic_write(record_path, json.dumps(record, indent=2, ensure_ascii=False))
    return record


def read_record(
    outdir: Path,
    index: int,
    settings: EncodeSettings,
    texts_sha256: str | None,
    *,
    verify_hashes: bool,
) -> dict | None:
    """Shard ``index``'s record when it vouches for a finished shard of this run (same
    settings, same input rows, files of the recorded size and, with ``verify_hashes``,
    sha256); else None."""
    record = read_json(outdir / f"{shard_stem(index)}.json")
    if record is None or record.get("settings_key") != settings.key():
        return None
    if texts_sha256 is not None and record.get("texts_sha256") != texts_sha256:
        return None
    files = record.get("files")
    if not isinstance(files, dict) or sorted(files) != sorted(shard_files(index, settings.format)):
        return None
    for name, info in files.items():
        path = outdir / name
        try:
            if path.stat().st_size != info["bytes"]:
                return None
            if verify_hashes and sha256_file(path) != info["sha256"]:
                return None
        except (OSError, KeyError, TypeError):
            return None
    return record


# ------------------------------------------------------------------ manifest
def manifest_for(
    outdir: Path,
    settings: EncodeSettings,
    digests: list[str],
    *,
    backend: str | None,
    input_path: str,
    summary: InputSummary,
) -> dict | None:
    """The manifest when every shard's record is there for this run's input (checked by
    size, the hashes were checked when each was written), else None."""
    from .._version import __version__

    shards = []
    dimension = None
    for index, digest in enumerate(digests):
        record = read_record(outdir, index, settings, digest, verify_hashes=False)
        if record is None:
            return None
        dimension = record["dimension"]
        shards.append(
            {
                "index": index,
                "rows": record["rows"],
                "first_id": record["first_id"],
                "last_id": record["last_id"],
                "files": record["files"],
            }
        )
    return {
        "manifest_version": MANIFEST_VERSION,
        "lusifer_version": __version__,
        "model": {
            "reference": settings.model,
            "fingerprint": settings.fingerprint,
            "backend": backend,
            "quantize": settings.quantize,
        },
        "dimension": dimension,
        "normalized": settings.normalize,
        "instruction": settings.instruction,
        "kind": settings.kind,
        "dtype": settings.dtype,
        "format": settings.format,
        "shard_size": settings.shard_size,
        "max_length": settings.max_length,
        "store_text": settings.store_text,
        "settings_key": settings.key(),
        "input": {"path": input_path, "files": summary.files, "bad_lines_skipped": summary.bad},
        "rows": sum(s["rows"] for s in shards),
        "shards": shards,
    }


def _remove_stale_shards(outdir: Path, count: int) -> None:
    """Drop shards numbered ``count`` and up (left by an earlier, longer input)."""
    for path in outdir.glob("shard-*"):
        try:
            index = int(path.name[len("shard-") :].split(".", 1)[0])
        except ValueError:
            continue
        if index >= count:
            discard(path)


def finish(
    outdir: Path,
    settings: EncodeSettings,
    digests: list[str],
    *,
    backend: str | None,
    input_path: str,
    summary: InputSummary,
) -> Path | None:
    """Write ``manifest.json`` when every shard is complete; returns its path, or None
    while another process still has shards to write."""
    manifest = manifest_for(
        outdir, settings, digests, backend=backend, input_path=input_path, summary=summary
    )
    if manifest is None:
        return None
    _remove_stale_shards(outdir, len(digests))
    return atomic_write(outdir / MANIFEST_FILE, json.dumps(manifest, indent=2, ensure_ascii=False))


# ------------------------------------------------------------------ the run
# ------------------------------------------------------------------ reading
def load_manifest(outdir: str | Path) -> dict:
    """The manifest of a finished output folder; a clear :class:`CorpusError` otherwise."""
    outdir = Path(outdir)
    path = outdir / MANIFEST_FILE
    if not path.exists():
        if not outdir.is_dir():
            raise CorpusError(f"{outdir} is not a folder of encoded shards")
        done = len(list(outdir.glob("shard-*.json")))
        raise CorpusError(
            f"{outdir} has no {MANIFEST_FILE}: its encoding has not finished ({done} shard "
            "record(s) there). Rerun the same `lusifer encode` command to finish it."
        )
    manifest = read_json(path)
    if manifest is None or "shards" not in manifest:
        raise CorpusError(f"{path} is damaged; rerun the `lusifer encode` command that made it")
    return manifest


def shard_vectors(outdir: str | Path, manifest: dict, index: int, *, mmap: bool = True):
    """Shard ``index``'s embeddings (rows x dim): memory-mapped for npy shards."""
    outdir = Path(outdir)
    stem = shard_stem(index)
    if manifest["format"] == "parquet":
        import pyarrow.parquet as pq

        column = pq.read_table(outdir / f"{stem}.parquet", columns=["embedding"]).column(0)
        values = column.combine_chunks().values.to_numpy(zero_copy_only=False)
        return values.reshape(-1, manifest["dimension"])
    return np.load(outdir / f"{stem}.npy", mmap_mode="r" if mmap else None)


def shard_rows(outdir: str | Path, manifest: dict, index: int) -> list[dict]:
    """Shard ``index``'s rows as ``{"id": ..., "text": ...}`` (text when stored)."""
    outdir = Path(outdir)
    stem = shard_stem(index)
    if manifest["format"] == "parquet":
        import pyarrow.parquet as pq

        names = ["id", "text"] if manifest.get("store_text") else ["id"]
        return pq.read_table(outdir / f"{stem}.parquet", columns=names).to_pylist()
    with open(outdir / f"{stem}.ids.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
