"""``lusifer index``: build the approximate index ``lusifer search`` uses over a folder
``lusifer encode`` wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import reports_errors


@reports_errors()
def index_command(
    corpus: Annotated[
        Path, typer.Argument(help="A folder of shards and manifest.json (lusifer encode -o DIR).")
    ],
    nlist: Annotated[
        int | None,
        typer.Option(min=1, help="k-means cells (default about 4 sqrt(rows): 4,000 at 1M)."),
    ] = None,
    nprobe: Annotated[
        int,
        typer.Option(min=1, help="Cells a search scans: more is slower and finds more."),
    ] = 32,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even when the index is up to date.")
    ] = False,
) -> None:
    """Build CORPUS/ann-index (faiss IVF, fp16 vectors, inner product) beside its
    manifest; `lusifer search` then uses it (--exact to search every row). An index left by
    an earlier encoding of the folder is rebuilt."""
    from ..corpus.index import build_index, index_dir

    info, built = build_index(corpus, nlist=nlist, nprobe=nprobe, force=force)
    where = index_dir(corpus)
    if not built:
        typer.echo(
            f"{where} is up to date ({info.rows} rows, {info.nlist} cells); --force rebuilds"
        )
        return
    typer.echo(
        f"wrote {where}: {info.rows} rows, {info.nlist} cells, nprobe {info.nprobe}, "
        f"{info.build_seconds:.1f}s"
    )


def register(app: typer.Typer) -> None:
    app.command("index")(index_command)
