"""Errors answered in OpenAI's shape ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An error answered in OpenAI's shape ``{"error": {message, type, param, code}}``,
    with optional extra response headers (``Retry-After``, ``WWW-Authenticate``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = (
            status,
            message,
            param,
            type,
            code,
        )
        self.headers = dict(headers or {})

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse(
            {"error": body}, status_code=self.status, headers={**self.headers, **(headers or {})}
        )
