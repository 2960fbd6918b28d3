"""Per-request plumbing, as pure ASGI middlewares: a request id on every request
(``X-Request-ID``, in the response headers and the server's log lines), the optional
API key (``Authorization: Bearer KEY``, compared in constant time), and shedding load
before a request's body is read while the queue is full."""

from __future__ import annotations

import contextvars
import hmac
import logging
import re
import uuid

from .batcher import MicroBatcher, QueueFullError
from .errors import ApiError

REQUEST_ID_HEADER = "X-Request-ID"
# The request being handled, for log lines (the access log is written inside its task).
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "lusifer_request_id", default="-"
)
# An incoming id is kept when it is short and plain (no spaces or quotes to garble a log
# line or a header); anything else is replaced by a fresh one.
_PLAIN_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Gives every log record a ``request_id`` attribute (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        message,
        type="invalid_request_error",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


class RequestContextMiddleware:
    """Sets the request id (the client's ``X-Request-ID`` if plain, else a new one),
    returns it as ``X-Request-ID`` on every response and keeps it in
    ``scope["state"]["request_id"]`` and :data:`current_request_id`.

    With ``api_key`` set, every HTTP request except those to ``open_paths`` must carry
    ``Authorization: Bearer <api_key>``; others get a 401 in OpenAI's error shape. The
    key is compared with :func:`hmac.compare_digest`, whose time does not depend on where
    the first differing byte is.
    """

    def __init__(
        self, app, *, api_key: str | None = None, open_paths: frozenset[str] = frozenset()
    ) -> None:
        if api_key is not None:
            # Header values lose their outer whitespace in transit; so does the key.
            api_key = api_key.strip()
            if not api_key:
                raise ValueError("the API key must not be empty")
        self.app = app
        self.api_key = api_key.encode("utf-8") if api_key is not None else None
        self.open_paths = open_paths

    def _check_key(self, authorization: bytes | None) -> ApiError | None:
        if self.api_key is None:
            return None
        if authorization is None:
            return _unauthorized("no API key given: send the header 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            token = b""
        # Always compared, whatever the scheme, so a wrong key costs the same time.
        if not hmac.compare_digest(token.strip(), self.api_key):
            return _unauthorized("invalid API key")
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = authorization = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value
            elif name == b"authorization":
                authorization = value
        if incoming is not None and _PLAIN_ID.fullmatch(incoming):
            request_id = incoming.decode("ascii")
        else:
            request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        current_request_id.set(request_id)
        id_header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0] != b"x-request-id"]
                message = {**message, "headers": [*headers, id_header]}
            await send(message)

        if self.api_key is not None and scope["path"] not in self.open_paths:
            error = self._check_key(authorization)
            if error is not None:
                await error.response()(scope, receive, send_with_id)
                return
        await self.app(scope, receive, send_with_id)


def overloaded(err: QueueFullError) -> ApiError:
    """The 503 for a full queue, with ``Retry-After``."""
    return ApiError(
        503,
        str(err),
        type="server_overloaded",
        code="queue_full",
        headers={"Retry-After": str(err.retry_after)},
    )


class ShedWhenFullMiddleware:
    """While the batcher's queue is full, answers ``POST path`` with the 503 at once,
    before the body is read, parsed and validated: under a storm of retries the server
    then spends its CPU on the model, not on requests it has no room for. (The queue
    itself stays the authority: a request let through here can still get the 503.)"""

    def __init__(self, app, *, batcher: MicroBatcher, path: str) -> None:
        self.app, self.batcher, self.path = app, batcher, path

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] == "http"
            and self.batcher.full
            and scope["path"] == self.path
            and scope["method"] == "POST"
        ):
            await overloaded(self.batcher.queue_full_error()).response()(scope, receive, send)
            return
        await self.app(scope, receive, send)
