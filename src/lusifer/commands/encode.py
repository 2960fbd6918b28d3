"""``lusifer encode``: embed a file of texts into a .npy matrix."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated

import typer

from ..files import atomic_write
from ..types import TextKind, reads_instructions
from .options import (
    BackendOption,
    ModelArgument,
    QuantizeOption,
    ThreadsOption,
    load_encoder_or_exit,
)


def encode_command(
    model: ModelArgument,
    input: Annotated[
        Path, typer.Argument(help=".txt (one text a line) or .jsonl (a 'text' field).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .npy matrix.")],
    instruction: Annotated[
        str | None, typer.Option(help="One-line English task instruction.")
    ] = None,
    kind: Annotated[str, typer.Option(help="query or document.")] = "query",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    max_length: Annotated[int | None, typer.Option(min=8)] = None,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the embeddings.")] = True,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, mps ...")] = None,
    skip_bad_lines: Annotated[
        bool, typer.Option(help="Skip (and report) bad lines instead of stopping.")
    ] = False,
    backend: BackendOption = "torch",
    quantize: QuantizeOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Embed every text of INPUT with MODEL and save the matrix (rows in input order)."""
    import numpy as np

    from ..inputs import InputFileError, read_texts

    if kind not in ("query", "document"):
        raise typer.BadParameter("must be 'query' or 'document'", param_hint="--kind")
    if output.suffix != ".npy":
        raise typer.BadParameter("the output must end in .npy", param_hint="--output")
    try:
        data = read_texts(input, skip_bad_lines=skip_bad_lines)
    except (InputFileError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    for line, why in data.skipped:
        typer.echo(f"skipped {input}:{line}: {why}", err=True)
    encoder = load_encoder_or_exit(model, backend, quantize, threads)
    if instruction and not reads_instructions(encoder):
        typer.echo(
            f"note: {model} reads bare text (no instructions); --instruction is not used",
            err=True,
        )
    kind_value: TextKind = kind  # type: ignore[assignment]
    vectors = encoder.encode(
        data.texts,
        instruction=instruction,
        kind=kind_value,
        batch_size=batch_size,
        max_length=max_length,
        normalize=normalize,
        device=device,
        show_progress=True,
    )
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    atomic_write(output, buffer.getvalue())
    typer.echo(f"wrote {vectors.shape[0]} x {vectors.shape[1]} embeddings to {output}")


def register(app: typer.Typer) -> None:
    app.command("encode")(encode_command)
