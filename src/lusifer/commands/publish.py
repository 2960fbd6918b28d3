"""``lusifer card`` (write a saved folder's model card) and ``lusifer push`` (upload a
saved folder to the Hugging Face hub)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import reports_errors

FolderArgument = Annotated[
    Path, typer.Argument(help="A LUSIFER model folder (saved by save_pretrained or lusifer train).")
]
ResultsOption = Annotated[
    Path | None,
    typer.Option(
        "--results",
        help="The folder (or results.json) lusifer evaluate wrote: adds a model-index block.",
    ),
]
ResultsModelOption = Annotated[
    str | None,
    typer.Option(help="Which evaluated model the model-index reports (default: the first)."),
]
TrainConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--train-config",
        help="The run's train_config.yaml (default: the one beside MODEL in a run folder).",
    ),
]
LicenseOption = Annotated[str | None, typer.Option(help="A hub license id, e.g. mit.")]


@reports_errors()
def card_command(
    model: FolderArgument,
    results: ResultsOption = None,
    results_model: ResultsModelOption = None,
    train_config: TrainConfigOption = None,
    license: LicenseOption = None,
    repo_id: Annotated[
        str | None, typer.Option(help="The hub repo id the usage snippets load (default: MODEL).")
    ] = None,
) -> None:
    """(Re)write MODEL/README.md, the model card, and the sentence-transformers files."""
    import json

    from ..model.card import card_for_folder, write_model_card, write_sentence_transformers_files
    from ..model.loading import CONFIG_NAME, folder_layout

    if folder_layout(model) != "lusifer":
        typer.echo(f"error: {model} has no {CONFIG_NAME}: not a LUSIFER folder", err=True)
        raise typer.Exit(2)
    card = card_for_folder(
        model,
        model_id=repo_id,
        evaluation=results,
        evaluation_model=results_model,
        training=train_config,
        license=license,
    )
    max_length = json.loads((model / CONFIG_NAME).read_text())["config"].get("max_length", 512)
    write_sentence_transformers_files(model, max_seq_length=int(max_length))
    path = write_model_card(model, card)
    typer.echo(f"wrote {path}")


@reports_errors()
def push_command(
    model: FolderArgument,
    repo_id: Annotated[str, typer.Argument(help="The hub repo, e.g. your-name/lusifer-mini.")],
    results: ResultsOption = None,
    results_model: ResultsModelOption = None,
    train_config: TrainConfigOption = None,
    license: LicenseOption = None,
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    revision: Annotated[str | None, typer.Option(help="A branch to push to.")] = None,
    create_pr: Annotated[bool, typer.Option(help="Open a pull request instead.")] = False,
    message: Annotated[str | None, typer.Option(help="The commit message.")] = None,
) -> None:
    """Upload MODEL to the hub repo REPO_ID (created if missing) with a fresh model card;
    log in first (hf auth login, or HF_TOKEN)."""
    from ..model.hub import push_folder

    if results_model is not None and results is None:
        raise typer.BadParameter("needs --results", param_hint="--results-model")
    info = push_folder(
        model,
        repo_id,
        private=private or None,
        revision=revision,
        commit_message=message,
        create_pr=create_pr,
        evaluation=results,
        evaluation_model=results_model,
        training=train_config,
        license=license,
    )
    typer.echo(f"pushed {model} to {repo_id}: {getattr(info, 'commit_url', info)}")


def register(app: typer.Typer) -> None:
    app.command("card")(card_command)
    app.command("push")(push_command)
