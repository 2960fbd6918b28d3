"""The FastAPI app: OpenAI-compatible ``POST /v1/embeddings`` and ``GET /v1/models``,
plus ``GET /health``."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..model.routing import is_routed, routes_of
from ..types import reads_instructions
from .batcher import MicroBatcher, QueueFullError, ShuttingDownError
from .errors import ApiError
from .middleware import (
    REQUEST_ID_HEADER,
    RequestContextMiddleware,
    ShedWhenFullMiddleware,
    overloaded,
)
from .schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
)

log = logging.getLogger("lusifer.serving")

# Paths answered without the API key.
OPEN_PATHS = frozenset({"/health"})


@dataclass
class ServerSettings:
    """Limits and batching knobs of one server."""

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_inputs_per_request: int = 256
    max_chars_per_input: int = 32_000
    max_length: int | None = None  # tokens per text; None: the model's own limit
    # Texts per forward pass inside one micro-batch: the micro-batch is length-sorted and
    # cut into passes of this size, so short texts are not padded to the longest one.
    encode_batch_size: int = 16
    # When set, every request but GET /health needs ``Authorization: Bearer <api_key>``.
    api_key: str | None = field(default=None, repr=False)


IGNORED_INSTRUCTION_HEADER = "X-Lusifer-Instruction-Ignored"


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    """pydantic's ``("body", "input", 2)`` -> ``input[2]``."""
    parts = [p for p in loc if p != "body"]
    # Union members show up as type names ("str", "list[str]"); they are not fields.
    parts = [p for p in parts if not (isinstance(p, str) and ("[" in p or p in ("str",)))]
    if not parts:
        return None
    out = str(parts[0])
    for p in parts[1:]:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out if len(out) <= 80 else out[:77] + "..."  # e.g. a huge unknown key, cut short


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = list(exc.errors())
    # For ``input`` prefer the list-branch error that names the bad item.
    errors.sort(key=lambda e: -len(e.get("loc", ())))
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = _loc_to_param(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON: {first.get('msg')}")
    if param is None:  # valid JSON, but not an object (or no body at all)
        return ApiError(
            400,
            f'the request body must be a JSON object such as {{"input": "text"}}: '
            f"{first.get('msg')}",
        )
    if first.get("type") == "missing":
        return ApiError(400, f"'{param}' is required", param=param)
    return ApiError(400, f"'{param}': {first.get('msg')}", param=param)


def _lone_surrogate(text: str) -> int | None:
    """The position of a lone surrogate (JSON's ``"\\ud800"`` without its pair), or None:
    no tokenizer reads one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def make_encode_fn(embedder, *, max_length: int | None, batch_size: int):
    """The worker's callable: unit vectors and per-text token counts (embedder tokenizer)."""
    tokenizer = getattr(embedder, "tokenizer", None)

    def encode(texts: list[str], instruction: str | None, kind: str, route: str | None = None):
        kwargs: dict[str, Any] = {"max_length": max_length} if max_length is not None else {}
        if route is not None:
            kwargs["route"] = route
        vectors = embedder.encode(
            texts,
            instruction=instruction,
            kind=kind,
            batch_size=batch_size,
            normalize=True,
            **kwargs,
        )
        if tokenizer is not None:
            ids = tokenizer(
                texts, truncation=True, max_length=max_length or 512, add_special_tokens=True
            )["input_ids"]
            tokens = [len(x) for x in ids]
        else:
            tokens = [len(t.split()) for t in texts]
        return np.asarray(vectors, dtype=np.float32), tokens

    return encode


def _check_text(text: str, param: str, limit: int) -> None:
    """Refuse an input or instruction that is too long or not valid Unicode."""
    if len(text) > limit:
        raise ApiError(
            400, f"'{param}' has {len(text)} characters; at most {limit} per input", param=param
        )
    if (at := _lone_surrogate(text)) is not None:
        raise ApiError(
            400,
            f"'{param}' has a lone surrogate (an unpaired \\u escape) at character {at}; "
            "expected valid Unicode text",
            param=param,
        )


def _checked_request(
    body: EmbeddingRequest, settings: ServerSettings, dims: int | None, routes: tuple[str, ...]
) -> list[str]:
    """The request's texts, after every limit and field is checked (a 400 names the
    first bad one)."""
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise ApiError(400, "'input' must not be an empty list", param="input")
    if len(texts) > settings.max_inputs_per_request:
        raise ApiError(
            400,
            f"'input' has {len(texts)} items; at most {settings.max_inputs_per_request} "
            "per request",
            param="input",
        )
    for i, text in enumerate(texts):
        param = "input" if isinstance(body.input, str) else f"input[{i}]"
        if not text:
            raise ApiError(400, f"'{param}' is an empty string", param=param)
        _check_text(text, param, settings.max_chars_per_input)
    if body.instruction is not None:
        _check_text(body.instruction, "instruction", settings.max_chars_per_input)
    if body.dimensions is not None and dims is not None and body.dimensions > dims:
        raise ApiError(
            400, f"'dimensions' is {body.dimensions}; this model has {dims}", param="dimensions"
        )
    if body.route is not None and body.route not in routes:
        raise ApiError(
            400,
            f"'route' is {body.route!r}; this model takes {', '.join(routes)}",
            param="route",
        )
    return texts


def _embedding_content(
    vectors: np.ndarray, tokens: list[int], body: EmbeddingRequest, name: str
) -> dict[str, Any]:
    """The response body (the shape of ``EmbeddingResponse``, built by hand: validating
    thousands of floats through pydantic again costs more than the JSON itself)."""
    if body.dimensions is not None:
        vectors = vectors[:, : body.dimensions]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.clip(norms, 1e-12, None)
    vectors = vectors.astype("<f4", copy=False)
    if body.encoding_format == "base64":
        values = [base64.b64encode(v.tobytes()).decode("ascii") for v in vectors]
    else:
        values = vectors.tolist()
    total = int(sum(tokens))
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(values)],
        "model": name,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in the OpenAI error shape, with the request id."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Unknown paths and methods, in the same error shape as everything else.
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":
            # FastAPI's words when its JSON parser fails with other than a syntax error
            message = (
                "the request body could not be read as JSON (invalid UTF-8, nesting too "
                "deep or a number with too many digits)"
            )
        error = ApiError(exc.status_code, message, headers=exc.headers)
        return error.response()

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # Runs outside the request middleware, so it sets the request id header itself.
        request_id = request.scope.get("state", {}).get("request_id", "-")
        log.error("request_id=%s failed: %s: %s", request_id, type(exc).__name__, exc)
        message = f"the server failed on this request: {type(exc).__name__}: {exc}"
        return ApiError(500, message, type="server_error").response(
            headers={REQUEST_ID_HEADER: request_id}
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()


async def _submit(batcher: MicroBatcher, request: Request, *args: Any) -> tuple[Any, Any]:
    """Vectors and token counts from the batcher, its failures as API errors (the
    worker carries on after a model failure)."""
    try:
        return await batcher.submit(*args)
    except QueueFullError as err:
        raise overloaded(err) from None
    except ShuttingDownError as err:
        raise ApiError(503, str(err), type="server_shutting_down") from None
    except Exception as err:
        request_id = request.state.request_id
        log.error(
            "request_id=%s the model failed: %s: %s",
            request_id,
            type(err).__name__,
            err,
            exc_info=err,
        )
        message = f"the model failed on this request: {type(err).__name__}: {err}"
        raise ApiError(500, message, type="server_error") from None


def _add_info_routes(app: FastAPI, name: str, health: Callable[[], Health]) -> None:
    """``GET /health``, ``/v1/models`` and ``/v1/models/{id}``."""
    card = ModelCard(id=name, created=int(time.time()))

    @app.get("/health", response_model=Health)
    async def _health() -> Health:
        return health()

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return ModelList(data=[card])

    @app.get(
        "/v1/models/{model_id:path}",
        response_model=ModelCard,
        responses={404: {"model": ErrorResponse}},
    )
    async def model(model_id: str) -> ModelCard:
        if model_id != name:
            raise ApiError(
                404,
                f"the model '{model_id}' does not exist; this server serves '{name}'",
                param="model",
                code="model_not_found",
            )
        return card


def create_app(
    embedder,
    *,
    model_name: str | None = None,
    backend: str = "torch",
    settings: ServerSettings | None = None,
) -> FastAPI:
    """An app serving ``embedder`` (anything with the ``TextEmbedder.encode`` contract)."""
    settings = settings or ServerSettings()
    if settings.api_key is not None and not settings.api_key.strip():
        raise ValueError("the API key must not be empty (use None for no key)")
    name: str = model_name if model_name else getattr(embedder, "name", "lusifer")
    dims = getattr(embedder, "embedding_size", None)
    # A model built with ``use_instructions: false`` reads bare text; requests that send an
    # instruction still succeed (OpenAI clients cannot drop fields) and get a header saying so.
    uses_instructions = reads_instructions(embedder)
    routes, routed = routes_of(embedder), is_routed(embedder)
    batcher = MicroBatcher(
        make_encode_fn(
            embedder, max_length=settings.max_length, batch_size=settings.encode_batch_size
        ),
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.close()  # in-flight requests finish first

    app = FastAPI(
        title="LUSIFER embeddings",
        description="OpenAI-compatible multilingual embeddings from a LUSIFER model.",
        version="1",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.settings = settings
    # The last added runs first: request id and API key, then load shedding.
    app.add_middleware(ShedWhenFullMiddleware, batcher=batcher, path="/v1/embeddings")
    app.add_middleware(RequestContextMiddleware, api_key=settings.api_key, open_paths=OPEN_PATHS)
    _add_error_handlers(app)

    def health() -> Health:
        return Health(
            status="shutting_down" if batcher.closing else "ok",
            model=name,
            backend=backend,
            dimensions=dims,
            reads_instructions=uses_instructions,
            queued_requests=batcher.queued,
            max_queue=settings.max_queue,
        )

    _add_info_routes(app, name, health)

    @app.post(
        "/v1/embeddings",
        response_model=EmbeddingResponse,
        responses={code: {"model": ErrorResponse} for code in (400, 401, 500, 503)},
    )
    async def embeddings(
        body: EmbeddingRequest, request: Request
    ) -> EmbeddingResponse | JSONResponse:
        texts = _checked_request(body, settings, dims, routes)
        instruction = body.instruction if uses_instructions else None
        # only a routed model is told its route; the others have one route each
        route = body.route if routed and body.route != "auto" else None
        vectors, tokens = await _submit(batcher, request, texts, instruction, body.kind, route)
        headers = {}
        if body.instruction and not uses_instructions:
            headers[IGNORED_INSTRUCTION_HEADER] = "this model reads no instructions"
        return JSONResponse(_embedding_content(vectors, tokens, body, name), headers=headers)

    return app
