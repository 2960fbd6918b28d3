"""Command-line options shared by the commands that load a model to embed with
(``encode``, ``search``, ``evaluate``, ``serve``, ``mine``), and the one way they load it
(:func:`lusifer.load`)."""

from __future__ import annotations

from typing import Annotated

import typer

ModelArgument = Annotated[
    str,
    typer.Argument(
        help="A LUSIFER model folder, a bundled offline backbone (multilingual-e5-small, "
        "all-MiniLM-L6-v2, SmolLM2-135M-Instruct), a local Hugging Face folder or a hub id."
    ),
]
BackendOption = Annotated[
    str,
    typer.Option(
        help="torch; onnx (onnxruntime, CPU); or auto: the faster of the two on this machine "
        "(measured once per model, cached)."
    ),
]
QuantizeOption = Annotated[
    str | None, typer.Option(help="int8: dynamic int8 quantisation (onnx backend).")
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(min=1, help="Intra-op threads (default $LUSIFER_NUM_THREADS or all cores)."),
]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        help="Where the model runs: cpu, cuda, cuda:N or mps. Default: automatic "
        "(cuda:LOCAL_RANK under torchrun/accelerate, else cuda, else mps, else cpu; "
        "cpu for --backend onnx)."
    ),
]

RouteOption = Annotated[
    str | None,
    typer.Option(
        help="A routed model's route: auto (English on the target alone, other languages "
        "through the connector; the default), native or connector for every text."
    ),
]


def check_route_option(route: str | None) -> None:
    """A ``--route`` value that is none of the routes is a usage error (exit code 2)."""
    from ..model.routing import ROUTES

    if route is not None and route not in ROUTES:
        raise typer.BadParameter(f"must be one of {', '.join(ROUTES)}", param_hint="--route")


def load_encoder_or_exit(
    model: str,
    backend: str,
    quantize: str | None,
    threads: int | None,
    device: str | None = None,
    route: str | None = None,
):
    """The model behind MODEL on the chosen backend, placed on ``device`` (None:
    automatic), through :func:`lusifer.load`, fixed to ``route`` when one is given; a bad
    choice or an unloadable model ends the command with a one-line error (exit code 2)."""
    from ..loading import BACKENDS, load
    from ..model.routing import with_route

    if backend not in BACKENDS:
        raise typer.BadParameter(f"must be one of {', '.join(BACKENDS)}", param_hint="--backend")
    if quantize not in (None, "int8"):
        raise typer.BadParameter("only 'int8' is supported", param_hint="--quantize")
    check_route_option(route)
    try:
        encoder = load(model, backend=backend, quantize=quantize, device=device, threads=threads)
        return with_route(encoder, route)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def device_name(encoder) -> str | None:
    """Where ``encoder`` runs (``cuda:0``, ``cpu``), or None for an encoder that does not
    say."""
    from ..loading import encoder_device

    placed = encoder_device(encoder)
    return None if placed is None else str(placed)
