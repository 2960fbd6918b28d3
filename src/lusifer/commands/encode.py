"""``lusifer encode``: embed a file of texts into a .npy matrix."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated

import typer

from ..files import atomic_write
from ..types import TextKind


def encode_command(
    model: Annotated[
        str,
        typer.Argument(
            help="A LUSIFER model folder, a bundled offline backbone (multilingual-e5-small, "
            "all-MiniLM-L6-v2, SmolLM2-135M-Instruct), a local Hugging Face folder or a hub id."
        ),
    ],
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
    backend: Annotated[str, typer.Option(help="torch, or onnx (LUSIFER models, CPU).")] = "torch",
    quantize: Annotated[
        str | None, typer.Option(help="int8: dynamic int8 quantisation (onnx backend).")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Intra-op threads (default $LUSIFER_NUM_THREADS or all cores)."),
    ] = None,
) -> None:
    """Embed every text of INPUT with MODEL and save the matrix (rows in input order)."""
    import numpy as np

    from ..inputs import InputFileError, read_texts
    from ..onnx import load_encoder

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
    try:
        encoder = load_encoder(model, backend=backend, quantize=quantize, threads=threads)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
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
