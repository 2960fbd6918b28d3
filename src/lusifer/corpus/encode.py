"""Encoding a corpus into shards: the resumable, multi-process run behind ``lusifer encode
-o DIR`` (the shard format, settings and manifest are :mod:`lusifer.corpus.shards`)."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .shards import (
    DEFAULT_SHARD_SIZE,
    DTYPES,
    FORMATS,
    EncodeReport,
    EncodeSettings,
    check_settings,
    finish,
    prepare_outdir,
    read_record,
    write_shard,
)
from .streaming import (
    BadLine,
    CorpusInputError,
    InputSummary,
    Record,
    bad_lines_error,
    scan_input,
    stream_records,
)


def _shard_rows(rows: int, shard_size: int, index: int) -> int:
    return min(shard_size, rows - index * shard_size)


def _batches(records: Iterable[Record], shard_size: int) -> Iterator[tuple[int, list[Record]]]:
    """(index, [records]) for consecutive groups of ``shard_size``."""
    group: list[Record] = []
    index = 0
    for record in records:
        group.append(record)
        if len(group) == shard_size:
            yield index, group
            index += 1
            group = []
    if group:
        yield index, group


def _check_options(kind: str, dtype: str, format: str, shard_size: int, rank: int, world: int):
    if kind not in ("query", "document"):
        raise ValueError(f"kind must be 'query' or 'document', got {kind!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")


def _checked_input(
    input: str | Path, summary: InputSummary | None, skip_bad_lines: bool, say, main: bool
) -> InputSummary:
    """The input's summary: bad lines refused (or, when skipped, reported once)."""
    summary = summary or scan_input(input)
    if summary.bad and not skip_bad_lines:
        raise bad_lines_error(summary.problems, summary.bad)
    if main:
        for problem in summary.problems:
            say(f"skipped {problem}")
        if summary.bad > len(summary.problems):
            say(f"skipped {summary.bad - len(summary.problems)} more bad line(s)")
    if summary.rows == 0:
        raise CorpusInputError(f"{input} holds no texts to embed")
    return summary


def _group_digest(group: list[Record]) -> str:
    h = hashlib.sha256()
    for record in group:
        h.update(json.dumps([record.id, record.text], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _embed_shard(
    embedder: Any, texts: list[str], settings: EncodeSettings, bar, **encode
) -> np.ndarray:
    """One shard's vectors, encoded in chunks (the progress bar moves as they finish)."""
    chunk = max(256, encode["batch_size"] * 16)
    parts = []
    for start in range(0, len(texts), chunk):
        part = embedder.encode(texts[start : start + chunk], show_progress=False, **encode)
        parts.append(np.asarray(part, dtype=np.float32).astype(DTYPES[settings.dtype], copy=False))
        bar.update(len(part))
    return np.concatenate(parts)


def _progress(rows: int, shard_size: int, shards: int, rank: int, world: int, shown: bool):
    """A progress bar over the texts of this process's shards."""
    mine = [i for i in range(shards) if i % world == rank]
    desc = "Encoding shards" if world == 1 else f"Encoding shards (rank {rank}/{world})"
    return tqdm(
        total=sum(_shard_rows(rows, shard_size, i) for i in mine),
        desc=desc,
        unit="text",
        disable=not shown,
        position=rank if world > 1 else None,
    )


def _write_shards(
    embedder: Any,
    input: str | Path,
    outdir: Path,
    settings: EncodeSettings,
    report: EncodeReport,
    bar: Any,
    place: tuple[int, int],
    encode: dict[str, Any],
) -> tuple[list[str], list[BadLine]]:
    """Read the input once: every shard's digest (the manifest needs them all), and this
    process's shards (``index % world == rank``) encoded and written, or skipped when a
    finished one is already there. Returns the digests and the bad lines seen."""
    rank, world = place
    digests: list[str] = []
    bad_seen: list[BadLine] = []
    records = stream_records(input, skip_bad_lines=True, on_bad_line=bad_seen.append)
    for index, group in _batches(records, settings.shard_size):
        digest = _group_digest(group)
        digests.append(digest)
        if index % world != rank:
            continue
        if read_record(outdir, index, settings, digest, verify_hashes=True) is not None:
            report.skipped.append(index)
            bar.update(len(group))
        else:
            texts = [r.text for r in group]
            vectors = _embed_shard(embedder, texts, settings, bar, **encode)
            stored = texts if settings.store_text else None
            write_shard(outdir, index, [r.id for r in group], vectors, settings, digest, stored)
            report.encoded.append(index)
        bar.set_postfix(encoded=len(report.encoded), skipped=len(report.skipped))
    return digests, bad_seen


def encode_corpus(
    embedder,
    input: str | Path,
    outdir: str | Path,
    *,
    model_reference: str | None = None,
    instruction: str | None = None,
    kind: str = "query",
    dtype: str = "float32",
    format: str = "npy",
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = 32,
    max_length: int | None = None,
    normalize: bool = True,
    device: str | None = None,
    skip_bad_lines: bool = False,
    store_text: bool = False,
    overwrite: bool = False,
    quantize: str | None = None,
    backend: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
    summary: InputSummary | None = None,
) -> EncodeReport:
    """Embed every record of ``input`` (see :mod:`lusifer.corpus.streaming`) with
    ``embedder`` into shards under ``outdir``; resumes a killed run with the same
    arguments. In a multi-process run every process calls this with its ``rank``, the
    ``world_size`` and a ``barrier`` (waits for every process), and encodes the shards
    ``i % world_size == rank``. Returns what this process did; ``report.manifest`` is set
    in the process that wrote the manifest. ``summary``: :func:`scan_input` of ``input``,
    when the caller has it already."""
    say = log or (lambda message: print(message, file=sys.stderr))
    _check_options(kind, dtype, format, shard_size, rank, world_size)
    outdir = Path(outdir)
    summary = _checked_input(input, summary, skip_bad_lines, say, rank == 0)
    settings = EncodeSettings(
        model=str(model_reference or getattr(embedder, "name", type(embedder).__name__)),
        fingerprint=embedder.fingerprint() if hasattr(embedder, "fingerprint") else None,
        instruction=instruction,
        kind=kind,
        dtype=dtype,
        format=format,
        shard_size=shard_size,
        normalize=normalize,
        max_length=max_length,
        quantize=quantize,
        store_text=store_text,
    )
    prepare_outdir(outdir, settings, overwrite=overwrite, is_main=rank == 0)
    if barrier is not None:
        barrier()
    if rank != 0:  # the main process may have started the folder over: check what it wrote
        check_settings(outdir, settings, overwrite=False)

    n_shards = math.ceil(summary.rows / shard_size)
    report = EncodeReport(
        rows=summary.rows, shards=n_shards, bad_lines=summary.bad, rank=rank, world_size=world_size
    )
    bar = _progress(summary.rows, shard_size, n_shards, rank, world_size, show_progress)
    encode = dict(kind=kind, batch_size=batch_size, max_length=max_length, device=device)
    encode.update(instruction=instruction, normalize=normalize)
    digests, bad_seen = _write_shards(
        embedder, input, outdir, settings, report, bar, (rank, world_size), encode
    )
    bar.close()
    if len(digests) != n_shards or len(bad_seen) != summary.bad:
        raise CorpusInputError(
            f"{input} changed while it was being read ({summary.rows} texts counted first, "
            "another number later); rerun the command on an input nobody is writing to"
        )
    report.manifest = finish(
        outdir, settings, digests, backend=backend, input_path=str(input), summary=summary
    )
    return report
