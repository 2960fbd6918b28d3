"""``lusifer demo``: the main job (see ``lusifer.demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..demo import DemoTarget
from .options import reports_errors


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _print_tables(report) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..evaluation.report import language_rows, type_rows

    console = Console()
    for title, (header, rows) in (
        ("Per language (main scores x100, paper Table 1 layout)", language_rows(report)),
        ("Per task type", type_rows(report)),
    ):
        # one row per language (or task type), one column per model: fits a terminal
        table = Table(title=title, title_justify="left")
        table.add_column(header[0] if header[0] != "model" else "")
        for row in rows:
            table.add_column(row[0], justify="right")
        for i, name in enumerate(header[1:], start=1):
            table.add_row(name, *(row[i] for row in rows))
        console.print(table)


@reports_errors()
def demo_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where everything goes.")] = Path(
        "lusifer-demo"
    ),
    quick: Annotated[bool, typer.Option(help="A few minutes: fewer steps, smaller tasks.")] = False,
    target: Annotated[
        DemoTarget,
        typer.Option(help="minilm (all-MiniLM-L6-v2) or smollm2 (SmolLM2-135M, LM alignment)."),
    ] = "minilm",
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Training config overrides, e.g. alignment.steps=100")
    ] = None,
    cache: Annotated[
        bool,
        typer.Option(
            help="Reuse the baselines' cached results (they never change); --no-cache "
            "scores them again."
        ),
    ] = True,
    routed: Annotated[
        bool,
        typer.Option(
            help="Train the routed recipe (English on MiniLM alone, exactly its vectors, "
            "other languages through the connector) instead of the unrouted one."
        ),
    ] = False,
) -> None:
    """Train LUSIFER-mini on English only, offline, and show its zero-shot multilingual gain."""
    from ..demo import run_demo

    result = run_demo(
        output,
        quick=quick,
        target=target,
        overrides=overrides or [],
        use_cache=cache,
        routed=routed,
    )
    if result is None:
        typer.echo(
            f"Interrupted. Run the same command again to resume from the last checkpoint in {output}."
        )
        raise typer.Exit(130)
    _print_tables(result.report)
    _print_figures(result)


def _print_figures(result) -> None:
    """The demo's headline figures: the gap closed, the gain per language, English in and
    out of the training domain, the connector route, the time taken and where things are."""
    figures = result.figures
    xl = figures["crosslingual"]
    gains = figures["language_gain"]
    typer.echo("")
    if xl:
        closed = xl["gap_closed"]
        typer.echo(
            f"Cross-lingual retrieval (nDCG@10, en <-> {len(xl['languages'])} languages): target alone "
            f"{xl['target']:.1f}, LUSIFER-mini {xl['lusifer']:.1f}, encoder alone {xl['encoder']:.1f}"
            + (f" -> {100 * closed:.0f}% of the gap closed." if closed is not None else ".")
        )
    typer.echo(
        "Gain over the English-only target, per language: "
        + ", ".join(f"{lang} {gain:+.1f}" for lang, gain in gains.items())
    )
    en = figures["english"]
    typer.echo(
        f"English average: target alone {_fmt(en['target'])}, LUSIFER-mini {_fmt(en['lusifer'])}."
    )
    for key, label in (
        ("english_in_domain", "in the training domain (software, dictionary)"),
        ("english_out_of_domain", "out of the training domain (scripture, quotations)"),
    ):
        part = figures.get(key) or {}
        if part.get("lusifer") is not None:
            typer.echo(
                f"English {label}: target alone {_fmt(part['target'])}, LUSIFER-mini "
                f"{_fmt(part['lusifer'])}, encoder alone {_fmt(part['encoder'])}."
            )
    connector = figures.get("connector_route")
    if connector:
        xc = connector["crosslingual"]
        typer.echo(
            "Routes: English takes MiniLM alone (native), other languages the connector. "
            "The same model with every text on the connector route: cross-lingual "
            f"{xc['lusifer']:.1f} ({100 * (xc['gap_closed'] or 0):.0f}% of the gap), English in "
            f"the training domain {_fmt(connector['english_in_domain'])}, out of it "
            f"{_fmt(connector['english_out_of_domain'])}."
        )
    timings = ", ".join(f"{k} {v / 60:.1f} min" for k, v in result.timings.items())
    typer.echo(f"Time: {timings}.")
    typer.echo(
        f"Model: {result.model_dir}  Reports: {result.output_dir / 'eval'} (table.md, table.csv, "
        f"results.json, chart.png)  Summary: {result.output_dir / 'summary.json'}"
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
