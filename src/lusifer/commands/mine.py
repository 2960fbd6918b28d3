"""``lusifer mine``: mine hard negatives for stage-2 pair data, resumably (the run is
:mod:`lusifer.corpus.mining`, the mining :mod:`lusifer.data.mining`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import (
    BackendOption,
    DeviceOption,
    ModelArgument,
    QuantizeOption,
    ThreadsOption,
    device_name,
    load_embedder,
    reports_errors,
)

InputArgument = Annotated[
    str,
    typer.Argument(
        help="Pair data: the project's pair .jsonl(.gz) ({query, positive, ...} a line), "
        "or a Hugging Face data set (hub id, save_to_disk folder, .jsonl/.parquet/.csv "
        "file) read with --query-field / --positive-field."
    ),
]
CorpusOption = Annotated[
    Path | None,
    typer.Option(
        help="Extra passages to mine from, besides the positives: .txt (one a line) or "
        ".jsonl (a 'text' field)."
    ),
]
InstructionOption = Annotated[
    str | None,
    typer.Option(
        help="The retriever's task instruction (queries and passages); also written "
        "into rows that have none."
    ),
]
PositiveFieldOption = Annotated[
    str | None,
    typer.Option(help="Data set column of the positives, a string or a list (default 'positive')."),
]
TopKOption = Annotated[
    int,
    typer.Option(
        min=1, help="Search depth: negatives come from ranks SKIP+1..TOP_K (the paper: 31..128)."
    ),
]
SplitOption = Annotated[
    str, typer.Option(help="Data set split (a hub data set also takes a slice: 'train[:50000]').")
]
SkipOption = Annotated[
    int, typer.Option(min=0, help="Skip the first SKIP ranks (likely false negatives).")
]
ChunkSizeOption = Annotated[
    int, typer.Option(min=1, help="Queries searched (and written) per chunk.")
]
OverwriteOption = Annotated[
    bool, typer.Option(help="Start again instead of resuming an existing output.")
]


@reports_errors()
def mine_command(
    model: ModelArgument,
    input: InputArgument,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the mined pair .jsonl.")
    ],
    query_field: Annotated[
        str | None, typer.Option(help="Data set column of the queries (default 'query').")
    ] = None,
    positive_field: PositiveFieldOption = None,
    subset: Annotated[str | None, typer.Option(help="Data set configuration (hub).")] = None,
    split: SplitOption = "train",
    corpus: CorpusOption = None,
    instruction: InstructionOption = None,
    skip: SkipOption = 30,
    top_k: TopKOption = 128,
    num_negatives: Annotated[
        int | None,
        typer.Option(min=1, help="Negatives kept per row, most similar first (default: all)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per embedder batch.")] = 32,
    chunk_size: ChunkSizeOption = 1024,
    max_length: Annotated[int | None, typer.Option(min=8)] = None,
    device: DeviceOption = None,
    backend: BackendOption = "torch",
    quantize: QuantizeOption = None,
    threads: ThreadsOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Mine hard negatives for INPUT's rows with MODEL as the retriever and write them,
    as pair data for `lusifer train`, to OUTPUT (resumable: rerun the same command)."""
    from ..corpus import mining as run
    from ..corpus.streaming import read_records
    from ..data.mining import build_corpus
    from ..types import reads_instructions

    if output.name.endswith(".gz") or output.suffix not in (".jsonl", ".ndjson"):
        raise typer.BadParameter("the output must end in .jsonl", param_hint="--output")
    if top_k <= skip:
        raise typer.BadParameter(
            f"must be larger than --skip ({skip}): negatives come from ranks SKIP+1..TOP_K",
            param_hint="--top-k",
        )
    rows = run.load_pair_rows(input, query_field, positive_field, subset, split, instruction)
    extra = [r.text for r in read_records(corpus)[0]] if corpus is not None else []
    mining_corpus = build_corpus(rows, extra)
    settings = run.mining_settings(
        model, input, rows, mining_corpus, extra, corpus, instruction=instruction, skip=skip,
        top_k=top_k, num_negatives=num_negatives, max_length=max_length, quantize=quantize,
    )  # fmt: skip
    done = run.resume_point(output, settings, overwrite=overwrite)
    if done == len(rows):
        typer.echo(f"{output} is already complete ({done} rows); nothing to do")
        return
    embedder = load_embedder(model, backend, quantize, threads, device)
    if instruction and not reads_instructions(embedder):
        typer.echo(
            f"note: {model} reads bare text (no instructions); --instruction is not used "
            "for retrieval",
            err=True,
        )
    report = run.mine_to_file(
        embedder, rows, mining_corpus, output, settings, done=done, overwrite=overwrite,
        batch_size=batch_size, chunk_size=chunk_size, show_progress=True,
        device=device_name(embedder),  # where the loader placed it: the search runs there too
        log=lambda message: typer.echo(message, err=True),
    )  # fmt: skip
    if report.short:
        what = f"fewer than {num_negatives} negatives" if num_negatives else "no negatives"
        typer.echo(
            f"warning: {report.short} row(s) mined in this run got {what} (corpus of "
            f"{len(mining_corpus)} passages, ranks {skip + 1}..{top_k})",
            err=True,
        )
    typer.echo(
        f"wrote {len(rows)} rows with mined negatives to {output} "
        f"({report.mined} mined in this run)"
    )


def register(app: typer.Typer) -> None:
    app.command("mine")(mine_command)
