"""``lusifer encode``: embed a file of texts into a .npy matrix, or a corpus (a file or a
folder of files, streamed) into resumable shards, across processes under torchrun or
accelerate launch."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Annotated

import typer

from ..corpus.shards import ShardDtype, ShardFormat
from ..files import atomic_write
from ..types import TextKind, reads_instructions
from .options import (
    BackendOption,
    DeviceOption,
    ModelArgument,
    QuantizeOption,
    RouteOption,
    ThreadsOption,
    load_embedder,
    reports_errors,
)


@reports_errors()
def encode_command(
    model: ModelArgument,
    input: Annotated[
        Path,
        typer.Argument(
            help=".txt (one text a line), .jsonl (a 'text' field, optional 'id'), .parquet "
            "('text' and optional 'id' columns), or a folder of them (read in sorted order)."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="A .npy file (one matrix, rows in input order), or a folder to write "
            "shards and manifest.json to (streamed, resumable, multi-process).",
        ),
    ],
    instruction: Annotated[
        str | None, typer.Option(help="One-line English task instruction.")
    ] = None,
    kind: Annotated[TextKind, typer.Option(help="query or document.")] = "query",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    max_length: Annotated[int | None, typer.Option(min=8)] = None,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the embeddings.")] = True,
    device: DeviceOption = None,
    route: RouteOption = None,
    skip_bad_lines: Annotated[
        bool, typer.Option(help="Skip (and report) bad lines instead of stopping.")
    ] = False,
    backend: BackendOption = "torch",
    quantize: QuantizeOption = None,
    threads: ThreadsOption = None,
    format: Annotated[
        ShardFormat, typer.Option("--format", help="Shards: npy (+ .ids.jsonl) or parquet.")
    ] = "npy",
    dtype: Annotated[ShardDtype, typer.Option(help="Stored values.")] = "float32",
    shard_size: Annotated[int, typer.Option(min=1, help="Rows per shard.")] = 10_000,
    store_text: Annotated[
        bool, typer.Option(help="Shards: store each row's text beside its id (for search).")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Shards: delete the folder's shards and manifest first and start over "
            "(to reuse a folder made with other settings)."
        ),
    ] = False,
) -> None:
    """Embed every text of INPUT with MODEL: into one .npy matrix (rows in input order), or,
    when -o is a folder, into shards with a manifest (see docs/guides/corpus-encoding.md)."""
    if output.suffix == ".npy":
        if format != "npy" or store_text:
            raise typer.BadParameter(
                "--format parquet and --store-text write shards: give a folder, not a .npy",
                param_hint="--output",
            )
        _encode_to_npy(
            model, input, output, instruction, kind, batch_size, max_length, normalize,
            device, skip_bad_lines, backend, quantize, threads, dtype, route=route,
        )  # fmt: skip
        return
    if output.suffix and not output.is_dir():
        raise typer.BadParameter(
            f"{output} is neither a .npy file nor a folder: name a new folder without an "
            "extension (or an existing folder) to write shards to",
            param_hint="--output",
        )
    _encode_to_shards(
        model, input, output, instruction, kind, batch_size, max_length, normalize, device,
        skip_bad_lines, backend, quantize, threads, dtype, format, shard_size, store_text,
        overwrite, route=route,
    )  # fmt: skip


def _encode_to_npy(
    model, input, output, instruction, kind, batch_size, max_length, normalize, device,
    skip_bad_lines, backend, quantize, threads, dtype, *, route=None,
) -> None:  # fmt: skip
    """One process, one matrix in memory: ``lusifer encode MODEL in.txt -o out.npy``."""
    import numpy as np

    from ..corpus.streaming import read_records

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        typer.echo(
            "error: a .npy output is written by one process; under torchrun or accelerate "
            "launch give -o a folder to write shards",
            err=True,
        )
        raise typer.Exit(2)
    records, bad = read_records(input, skip_bad_lines=skip_bad_lines)
    for line in bad:
        typer.echo(f"skipped {line}", err=True)
    embedder = load_embedder(model, backend, quantize, threads, device, route)
    if instruction and not reads_instructions(embedder):
        typer.echo(
            f"note: {model} reads bare text (no instructions); --instruction is not used",
            err=True,
        )
    vectors = embedder.encode(
        [r.text for r in records],
        instruction=instruction,
        kind=kind,
        batch_size=batch_size,
        max_length=max_length,
        normalize=normalize,
        show_progress=True,  # on the device the loader placed the model on
    )
    if dtype == "float16":
        vectors = vectors.astype(np.float16)
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    atomic_write(output, buffer.getvalue())
    typer.echo(f"wrote {vectors.shape[0]} x {vectors.shape[1]} embeddings to {output}")


def process_state(device: str | None, backend: str = "torch"):
    """accelerate's ``PartialState`` for this process (rank, world size, local rank,
    device; gloo on CPU, one GPU per local rank on CUDA). A single process is rank 0 of 1."""
    import torch
    from accelerate import PartialState

    cpu = (
        not torch.cuda.is_available()
        or backend == "onnx"  # onnxruntime runs on the CPU
        or (device is not None and device.strip().startswith("cpu"))
    )
    return PartialState(cpu=cpu)


def _encode_to_shards(
    model, input, output, instruction, kind, batch_size, max_length, normalize, device,
    skip_bad_lines, backend, quantize, threads, dtype, format, shard_size, store_text,
    overwrite, *, route=None,
) -> None:  # fmt: skip
    """Streamed, sharded, resumable; every process of a torchrun/accelerate launch runs it."""
    from ..corpus import encode_corpus, scan_input
    from ..corpus.streaming import bad_lines_error

    summary = scan_input(input)  # fail before loading a model (in every process alike)
    if summary.bad and not skip_bad_lines:
        typer.echo(f"error: {bad_lines_error(summary.problems, summary.bad)}", err=True)
        raise typer.Exit(2)
    state = process_state(device, backend)
    rank, world = state.process_index, state.num_processes
    # One GPU per local rank: the loader's default (and a bare --device cuda) under
    # torchrun/accelerate is cuda:LOCAL_RANK; on CPU each process takes its share of the
    # cores (lusifer.threads.cpu_threads).
    embedder = load_embedder(model, backend, quantize, threads, device, route)
    if rank == 0 and instruction and not reads_instructions(embedder):
        typer.echo(
            f"note: {model} reads bare text (no instructions); --instruction is not used",
            err=True,
        )
    try:
        report = encode_corpus(
            embedder,
            input,
            output,
            model_reference=model,
            instruction=instruction,
            kind=kind,
            dtype=dtype,
            format=format,
            shard_size=shard_size,
            batch_size=batch_size,
            max_length=max_length,
            normalize=normalize,
            skip_bad_lines=skip_bad_lines,
            store_text=store_text,
            overwrite=overwrite,
            quantize=quantize,
            summary=summary,
            backend=backend,
            rank=rank,
            world_size=world,
            barrier=state.wait_for_everyone if world > 1 else None,
            show_progress=True,
            log=lambda message: typer.echo(message, err=True),
        )
    finally:
        if world > 1:
            from ..devices import close_process_group

            close_process_group()
    who = f"rank {rank}/{world}: " if world > 1 else ""
    done = f"{len(report.encoded)} shard(s) encoded, {len(report.skipped)} already done"
    if report.manifest is not None:
        typer.echo(
            f"{who}wrote {report.rows} embeddings in {report.shards} shard(s) to {output} "
            f"({done}); manifest: {report.manifest}"
        )
    else:
        typer.echo(f"{who}{done}; the last process to finish writes {output}/manifest.json")


def register(app: typer.Typer) -> None:
    app.command("encode")(encode_command)
