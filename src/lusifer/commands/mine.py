"""``lusifer mine``: mine hard negatives for stage-2 pair data (resumable).

The output is pair JSONL that ``lusifer train`` reads, one row per input row, in input
order, written chunk by chunk. Beside it, ``<output>.mine.json`` records the settings;
rerunning the same command on a partial output (a killed run) keeps its complete lines,
drops a torn last one and carries on; on a finished output it does nothing; with other
settings it refuses. While a run is unfinished the corpus embeddings are kept in
``<output>.mine-corpus.npy`` so that a resumed run does not embed the corpus again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ..files import atomic_file, atomic_write
from .options import (
    BackendOption,
    DeviceOption,
    ModelArgument,
    QuantizeOption,
    ThreadsOption,
    device_name,
    load_encoder,
    reports_errors,
)

SIDECAR_SUFFIX = ".mine.json"
CORPUS_CACHE_SUFFIX = ".mine-corpus.npy"
SIDECAR_FORMAT = "lusifer-mine/1"
# Settings that change the output: a resumed run must match them all.
COMPARED = (
    "format",
    "model",
    "input_rows",
    "input_digest",
    "corpus_size",
    "corpus_digest",
    "instruction",
    "skip",
    "top_k",
    "num_negatives",
    "max_length",
    "quantize",
)
_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet", ".csv", ".csv.gz")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _sidecar(output: Path) -> Path:
    return output.with_name(output.name + SIDECAR_SUFFIX)


def _corpus_cache(output: Path) -> Path:
    return output.with_name(output.name + CORPUS_CACHE_SUFFIX)


def _model_reference(model: str) -> str:
    """MODEL as recorded: an existing local path made absolute, anything else as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _load_rows(
    input: str,
    query_field: str | None,
    positive_field: str | None,
    subset: str | None,
    split: str,
    instruction: str | None,
):
    """The pair rows of INPUT: the project's pair JSONL, or a Hugging Face data set."""
    from ..data.readers import DataFormatError, iter_pair_rows, load_hf_pairs

    path = Path(input).expanduser()
    name = path.name.lower()
    looks_like_file = name.endswith(_DATA_SUFFIXES) or input.startswith((".", "/", "~"))
    if not path.exists() and looks_like_file:
        raise _fail(f"input file {input} does not exist")
    pair_format = (
        path.is_file()
        and name.endswith((".jsonl", ".jsonl.gz"))
        and query_field is None
        and positive_field is None
        and subset is None
    )
    try:
        if pair_format:
            rows = list(iter_pair_rows(path))
        else:
            kwargs: dict[str, Any] = {"name": subset} if subset else {}
            rows = load_hf_pairs(
                str(path) if path.exists() else input,
                split,
                query_field or "query",
                positive_field or "positive",
                instruction=instruction,
                **kwargs,
            )
    except DataFormatError as err:
        raise _fail(str(err)) from None
    except (FileNotFoundError, KeyError, ValueError, OSError) as err:
        raise _fail(f"cannot read {input}: {err}") from None
    except Exception as err:  # datasets raises its own kinds (hub, network, builder)
        raise _fail(f"cannot load {input}: {type(err).__name__}: {err}") from None
    if not rows:
        raise _fail(f"{input} has no usable rows (an empty data set)")
    return rows


def _complete_lines(output: Path) -> int:
    """The number of complete lines of OUTPUT; a torn last line (no newline, from a
    killed run) is cut off."""
    count, last_newline, size = 0, -1, 0
    with output.open("rb") as f:
        while chunk := f.read(1 << 20):
            n = chunk.count(b"\n")
            if n:
                count += n
                last_newline = size + chunk.rfind(b"\n")
            size += len(chunk)
    if last_newline + 1 != size:
        with output.open("r+b") as f:
            f.truncate(last_newline + 1)
    return count


def _read_sidecar(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    for key in COMPARED:
        if old.get(key) == new.get(key):
            continue
        if key.endswith("_digest"):
            out.append(f"the {key.removesuffix('_digest')} texts changed")
        else:
            out.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return out


def _save_corpus_cache(path: Path, vectors) -> None:
    import numpy as np

    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, vectors)


def _load_corpus_cache(path: Path, size: int):
    import numpy as np

    if not path.is_file():
        return None
    try:
        vectors = np.load(path)
    except (OSError, ValueError):
        return None
    return vectors if vectors.ndim == 2 and vectors.shape[0] == size else None


def _texts_digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode("utf-8", "replace") + b"\n")
    return h.hexdigest()[:20]


@reports_errors()
def mine_command(
    model: ModelArgument,
    input: Annotated[
        str,
        typer.Argument(
            help="Pair data: the project's pair .jsonl(.gz) ({query, positive, ...} a line), "
            "or a Hugging Face data set (hub id, save_to_disk folder, .jsonl/.parquet/.csv "
            "file) read with --query-field / --positive-field."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the mined pair .jsonl.")
    ],
    query_field: Annotated[
        str | None, typer.Option(help="Data set column of the queries (default 'query').")
    ] = None,
    positive_field: Annotated[
        str | None,
        typer.Option(
            help="Data set column of the positives, a string or a list (default 'positive')."
        ),
    ] = None,
    subset: Annotated[str | None, typer.Option(help="Data set configuration (hub).")] = None,
    split: Annotated[
        str,
        typer.Option(help="Data set split (a hub data set also takes a slice: 'train[:50000]')."),
    ] = "train",
    corpus: Annotated[
        Path | None,
        typer.Option(
            help="Extra passages to mine from, besides the positives: .txt (one a line) or "
            ".jsonl (a 'text' field)."
        ),
    ] = None,
    instruction: Annotated[
        str | None,
        typer.Option(
            help="The retriever's task instruction (queries and passages); also written "
            "into rows that have none."
        ),
    ] = None,
    skip: Annotated[
        int, typer.Option(min=0, help="Skip the first SKIP ranks (likely false negatives).")
    ] = 30,
    top_k: Annotated[
        int,
        typer.Option(
            min=1,
            help="Search depth: negatives come from ranks SKIP+1..TOP_K (the paper: 31..128).",
        ),
    ] = 128,
    num_negatives: Annotated[
        int | None,
        typer.Option(min=1, help="Negatives kept per row, most similar first (default: all)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per encoder batch.")] = 32,
    chunk_size: Annotated[
        int, typer.Option(min=1, help="Queries searched (and written) per chunk.")
    ] = 1024,
    max_length: Annotated[int | None, typer.Option(min=8)] = None,
    device: DeviceOption = None,
    backend: BackendOption = "torch",
    quantize: QuantizeOption = None,
    threads: ThreadsOption = None,
    overwrite: Annotated[
        bool, typer.Option(help="Start again instead of resuming an existing output.")
    ] = False,
) -> None:
    """Mine hard negatives for INPUT's rows with MODEL as the retriever and write them,
    as pair data for `lusifer train`, to OUTPUT (resumable: rerun the same command)."""
    from ..data import mining
    from ..inputs import InputFileError, read_texts
    from ..types import reads_instructions

    if output.name.endswith(".gz") or output.suffix not in (".jsonl", ".ndjson"):
        raise typer.BadParameter("the output must end in .jsonl", param_hint="--output")
    if top_k <= skip:
        raise typer.BadParameter(
            f"must be larger than --skip ({skip}): negatives come from ranks SKIP+1..TOP_K",
            param_hint="--top-k",
        )
    rows = _load_rows(input, query_field, positive_field, subset, split, instruction)
    extra: list[str] = []
    if corpus is not None:
        try:
            extra = read_texts(corpus).texts
        except (InputFileError, FileNotFoundError) as err:
            raise _fail(str(err)) from None
    mining_corpus = mining.build_corpus(rows, extra)
    settings: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "model": _model_reference(model),
        "input": input,
        "input_rows": len(rows),
        "input_digest": mining.rows_digest(rows),
        "corpus_file": str(corpus) if corpus is not None else None,
        "corpus_size": len(mining_corpus),
        "corpus_digest": _texts_digest(extra),
        "instruction": instruction,
        "skip": skip,
        "top_k": top_k,
        "num_negatives": num_negatives,
        "max_length": max_length,
        "quantize": quantize,
    }
    sidecar, cache = _sidecar(output), _corpus_cache(output)
    previous = _read_sidecar(sidecar)
    done = 0
    if output.exists() and output.stat().st_size and not overwrite:
        if previous is None:
            raise _fail(
                f"{output} exists and has no readable {sidecar.name} (not made by lusifer "
                "mine); remove it, pick another --output, or pass --overwrite"
            )
        changed = _differences(previous, settings)
        if changed:
            raise _fail(
                f"{output} was mined with different settings ({'; '.join(changed)}); rerun "
                "with the same ones to resume, or pass --overwrite to start again"
            )
        done = _complete_lines(output)
        if done > len(rows):
            raise _fail(f"{output} has {done} lines for {len(rows)} input rows; pass --overwrite")
        if done == len(rows):
            cache.unlink(missing_ok=True)
            typer.echo(f"{output} is already complete ({done} rows); nothing to do")
            return
    encoder = load_encoder(model, backend, quantize, threads, device)
    device = device_name(encoder)  # where the loader placed it: the search runs there too
    if instruction and not reads_instructions(encoder):
        typer.echo(
            f"note: {model} reads bare text (no instructions); --instruction is not used "
            "for retrieval",
            err=True,
        )
    fingerprint = getattr(encoder, "fingerprint", None)
    settings["model_name"] = getattr(encoder, "name", model)
    settings["model_fingerprint"] = fingerprint() if callable(fingerprint) else None
    same = (
        not overwrite
        and previous is not None
        and not _differences(previous, settings)
        and previous.get("model_fingerprint") == settings["model_fingerprint"]
    )
    if done and not same:
        raise _fail(
            f"{output} was mined with other weights under the name {model} (its "
            "fingerprint changed); pass --overwrite to start again"
        )
    atomic_write(sidecar, json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    if done == 0:
        output.write_bytes(b"")
    if len(mining_corpus) <= skip:
        typer.echo(
            f"warning: the corpus has {len(mining_corpus)} passages, no more than --skip "
            f"({skip}): no negatives will be found; add passages with --corpus or lower --skip",
            err=True,
        )
    if done:
        typer.echo(f"resuming {output}: {done} of {len(rows)} rows already written", err=True)
    # A run killed after embedding the corpus left it in the cache (same settings only).
    corpus_vectors = _load_corpus_cache(cache, len(mining_corpus)) if same else None
    if corpus_vectors is None:
        corpus_vectors = mining.embed_texts(
            encoder,
            mining_corpus.texts,
            kind="document",
            instruction=instruction,
            batch_size=batch_size,
            max_length=max_length,
            device=device,
            show_progress=True,
        )
        _save_corpus_cache(cache, corpus_vectors)
    short = 0
    with output.open("ab") as out:
        for chunk in mining.mine_hard_negatives(
            encoder,
            rows,
            corpus=mining_corpus,
            corpus_vectors=corpus_vectors,
            instruction=instruction,
            skip=skip,
            top_k=top_k,
            num_negatives=num_negatives,
            start=done,
            chunk_size=chunk_size,
            batch_size=batch_size,
            max_length=max_length,
            device=device,
            show_progress=True,
        ):
            lines = []
            for row in chunk:
                short += len(row.negatives) < (num_negatives or 1)
                record = row.to_dict()
                if instruction and not record.get("instruction"):
                    record["instruction"] = instruction
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            out.write("".join(lines).encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
    cache.unlink(missing_ok=True)
    if short:
        what = f"fewer than {num_negatives} negatives" if num_negatives else "no negatives"
        typer.echo(
            f"warning: {short} row(s) mined in this run got {what} (corpus of "
            f"{len(mining_corpus)} passages, ranks {skip + 1}..{top_k})",
            err=True,
        )
    typer.echo(
        f"wrote {len(rows)} rows with mined negatives to {output} "
        f"({len(rows) - done} mined in this run)"
    )


def register(app: typer.Typer) -> None:
    app.command("mine")(mine_command)
