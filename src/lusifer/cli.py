"""The ``lusifer`` command line: thin drivers over the library.

Each sub-command lives in its own module under ``lusifer.commands`` and exposes
``register(app)``; add new ones to ``COMMAND_MODULES``.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="lusifer",
    help="LUSIFER: multilingual embeddings for an English-centric model, trained on English only.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """LUSIFER: train, evaluate, encode with and serve multilingual embedders."""


COMMAND_MODULES = [
    "lusifer.commands.encode",
    "lusifer.commands.evaluate",
    "lusifer.commands.train",
    "lusifer.commands.serve",
    "lusifer.commands.demo",
    "lusifer.commands.mine",
    "lusifer.commands.publish",
    "lusifer.commands.search",
    "lusifer.commands.index",
]

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


if __name__ == "__main__":
    app()
