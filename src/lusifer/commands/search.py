"""``lusifer search``: top-k search over a folder ``lusifer encode`` wrote (through its
approximate index when ``lusifer index`` built one, else exact)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..corpus.search import Engine
from .options import (
    BackendOption,
    DeviceOption,
    RouteOption,
    ThreadsOption,
    load_embedder,
    reports_errors,
)


@reports_errors()
def search_command(
    corpus: Annotated[
        Path, typer.Argument(help="A folder of shards and manifest.json (lusifer encode -o DIR).")
    ],
    queries: Annotated[list[str], typer.Argument(help="One or more queries.")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="Hits per query.")] = 10,
    model: Annotated[
        str | None,
        typer.Option(help="The query model (default: the model the manifest names)."),
    ] = None,
    instruction: Annotated[
        str | None, typer.Option(help="Query instruction (default: the corpus's).")
    ] = None,
    texts: Annotated[
        Path | None,
        typer.Option(help="The encoded input (file or folder), to print the hits' texts."),
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(
            help="Exact search's engine: auto (faiss when installed, else numpy), faiss (a "
            "flat index per block) or numpy (torch's matrix product and top-k per block).",
        ),
    ] = "auto",
    exact: Annotated[
        bool,
        typer.Option(
            "--exact",
            help="Search every row exactly even when the folder has an approximate index "
            "(lusifer index).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per query.")] = False,
    device: DeviceOption = None,
    route: RouteOption = None,
    backend: BackendOption = "torch",
    threads: ThreadsOption = None,
) -> None:
    """Find the K rows of CORPUS nearest to each query (inner product; cosine for a
    normalised corpus): through its approximate index when `lusifer index` built a fresh
    one, else exactly, streamed shard by shard."""
    import numpy as np

    from ..corpus import load_manifest
    from ..corpus.search import fingerprint_warning, resolve_hits, search_corpus

    manifest = load_manifest(corpus)
    reference = model or manifest["model"]["reference"]
    embedder = load_embedder(reference, backend, None, threads, device, route)
    warning = fingerprint_warning(embedder, manifest)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    vectors = embedder.encode(
        list(queries),
        instruction=instruction if instruction is not None else manifest.get("instruction"),
        kind="query",
        max_length=manifest.get("max_length"),
        normalize=bool(manifest.get("normalized", True)),
    )  # on the device the loader placed the model on
    results, stale = search_corpus(
        corpus, np.asarray(vectors), k, engine=engine, manifest=manifest, exact=exact
    )
    if stale:
        typer.echo(f"warning: {stale}", err=True)
    hits = resolve_hits(corpus, manifest, results, texts=texts)
    for query, found in zip(queries, hits, strict=True):
        if as_json:
            rows = [{"id": h.id, "score": h.score, "text": h.text} for h in found]
            typer.echo(json.dumps({"query": query, "hits": rows}, ensure_ascii=False))
            continue
        typer.echo(f"query: {query}")
        for rank, hit in enumerate(found, start=1):
            text = "" if hit.text is None else "  " + " ".join(hit.text.split())[:120]
            typer.echo(f"{rank:>4}  {hit.score:.4f}  {hit.id}{text}")


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)
