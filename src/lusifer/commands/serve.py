"""``lusifer serve``: an OpenAI-compatible embeddings server (FastAPI + uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import (
    BackendOption,
    DeviceOption,
    ModelArgument,
    QuantizeOption,
    RouteOption,
    ThreadsOption,
    load_embedder,
    reports_errors,
)


@reports_errors()
def serve_command(
    model: ModelArgument,
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    backend: BackendOption = "torch",
    quantize: QuantizeOption = None,
    device: DeviceOption = None,
    route: RouteOption = None,
    threads: ThreadsOption = None,
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Most texts gathered into one micro-batch.")
    ] = 32,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="How long to wait for more requests to batch.")
    ] = 5.0,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Queued requests before answering 503.")
    ] = 256,
    max_inputs_per_request: Annotated[int, typer.Option(min=1)] = 256,
    max_chars_per_input: Annotated[int, typer.Option(min=1)] = 32_000,
    max_length: Annotated[
        int | None, typer.Option(min=8, help="Tokens per text (default: the model's).")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="The name reported in responses (default: MODEL).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="LUSIFER_API_KEY",
            show_default=False,
            help="Require 'Authorization: Bearer KEY' on every request except GET /health.",
        ),
    ] = None,
) -> None:
    """Serve MODEL at POST /v1/embeddings and GET /v1/models (OpenAI-compatible),
    GET /health, /docs."""
    from ..serving import ServerSettings, create_app, exposure_warning, serve

    if api_key is not None and not api_key.strip():
        raise typer.BadParameter("the API key is empty", param_hint="--api-key")
    warning = exposure_warning(host, api_key)
    if warning:
        typer.echo(warning, err=True)
    embedder = load_embedder(model, backend, quantize, threads, device, route)
    settings = ServerSettings(
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_inputs_per_request=max_inputs_per_request,
        max_chars_per_input=max_chars_per_input,
        max_length=max_length,
        api_key=api_key,
    )
    from ..onnx.backends import backend_of

    backend_name = backend_of(embedder) + (f"+{quantize}" if quantize else "")
    app = create_app(
        embedder, model_name=model_name or model, backend=backend_name, settings=settings
    )
    serve(app, host=host, port=port)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
