"""``lusifer train``: run the two-stage training from a YAML config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def train_command(
    config: Annotated[Path, typer.Argument(help="A YAML run file (see src/lusifer/configs/).")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="key=value overrides with dotted keys, e.g. alignment.steps=200"),
    ] = None,
    stage: Annotated[
        str | None, typer.Option(help="Only this stage: alignment or representation.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder.")] = None,
    init_from: Annotated[
        Path | None, typer.Option(help="Start from the trained weights of this LUSIFER folder.")
    ] = None,
    allow_non_english: Annotated[
        bool, typer.Option(help="Train on data the English-only guard refuses (not the method).")
    ] = False,
) -> None:
    """Train a LUSIFER model: alignment, then representation finetuning (English data only)."""
    from ..config import ConfigError
    from ..data.language_guard import NonEnglishDataError
    from ..data.readers import DataFormatError
    from ..training import load_train_config, run_training

    extra = {}
    if output is not None:
        extra["run.output_dir"] = str(output)
    if allow_non_english:
        extra["run.allow_non_english"] = True
    if stage not in (None, "alignment", "representation"):
        raise typer.BadParameter("must be alignment or representation", param_hint="--stage")
    try:
        cfg = load_train_config(config, overrides or [], **extra)
        result = run_training(
            cfg, stages=[stage] if stage else None, resume=resume, init_from=init_from
        )
    except (ConfigError, NonEnglishDataError, DataFormatError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if result is None:
        typer.echo(f"Interrupted; continue with: lusifer train {config} --resume", err=True)
        raise typer.Exit(130)
    typer.echo(f"trained model saved to {result}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
