"""What the commands share: the options of the commands that load a model to embed with
(``encode``, ``search``, ``evaluate``, ``serve``, ``mine``), the one way they load it
(:func:`lusifer.load`), and the one way every command reports the package's errors
(:func:`reports_errors`)."""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable, Mapping
from typing import Annotated, TypeVar

import typer

from ..types import Backend, Quantize, Route

ModelArgument = Annotated[
    str,
    typer.Argument(
        help="A LUSIFER model folder, a bundled offline backbone (multilingual-e5-small, "
        "all-MiniLM-L6-v2, SmolLM2-135M-Instruct), a local Hugging Face folder or a hub id."
    ),
]
BackendOption = Annotated[
    Backend,
    typer.Option(
        help="torch; onnx (onnxruntime, CPU); or auto: the faster of the two on this machine "
        "(measured once per model, cached)."
    ),
]
QuantizeOption = Annotated[
    Quantize | None, typer.Option(help="int8: dynamic int8 quantisation (onnx backend).")
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
    Route | None,
    typer.Option(
        help="A routed model's route: auto (English on the target alone, other languages "
        "through the connector; the default), native or connector for every text."
    ),
]

# The errors a command reports as one line ``error: ...`` instead of a traceback, by the
# qualified name of a class in the error's MRO (nothing is imported to check them), with
# their exit code: 2 for a bad input, config, data set or choice (the package's own errors
# are ValueErrors), 1 for a checkpoint that could not be written.
KNOWN_ERRORS: dict[str, int] = {
    "builtins.ValueError": 2,
    "builtins.FileNotFoundError": 2,
    "lusifer.backbones.cache.CacheError": 2,
    "lusifer.backbones.offline.MissingBackbonePackageError": 2,
    "lusifer.training.checkpoints.CheckpointWriteError": 1,
}
Command = TypeVar("Command", bound=Callable[..., None])


def reports_errors(exit_codes: Mapping[str, int] | None = None) -> Callable[[Command], Command]:
    """Decorate a command so that the package's known errors (:data:`KNOWN_ERRORS`, then
    ``exit_codes`` for this command) and a full disk end it with a one-line message on
    stderr and their exit code; anything else propagates (a traceback: a bug)."""
    codes = {**KNOWN_ERRORS, **(exit_codes or {})}

    def decorate(command: Command) -> Command:
        @functools.wraps(command)
        def run(*args, **kwargs) -> None:
            try:
                command(*args, **kwargs)
            except Exception as err:
                if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
                    where = err.filename or "the output"
                    typer.echo(
                        f"error: the disk is full while writing {where}: free some space",
                        err=True,
                    )
                    raise typer.Exit(2) from None
                names = [f"{c.__module__}.{c.__qualname__}" for c in type(err).__mro__]
                code = next((codes[n] for n in names if n in codes), None)
                if code is None:
                    raise
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(code) from None

        return run  # type: ignore[return-value]

    return decorate


def load_embedder(
    model: str,
    backend: str,
    quantize: str | None,
    threads: int | None,
    device: str | None = None,
    route: str | None = None,
):
    """The model behind MODEL on the chosen backend, placed on ``device`` (None:
    automatic), through :func:`lusifer.load`, fixed to ``route`` when one is given."""
    from ..loading import load
    from ..model.routing import with_route

    embedder = load(model, backend=backend, quantize=quantize, device=device, threads=threads)
    return with_route(embedder, route)


def device_name(embedder) -> str | None:
    """Where ``embedder`` runs (``cuda:0``, ``cpu``), or None for an embedder that does not
    say."""
    from ..loading import embedder_device

    placed = embedder_device(embedder)
    return None if placed is None else str(placed)
