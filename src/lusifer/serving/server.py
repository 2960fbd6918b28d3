"""Running the app under uvicorn: in the foreground (the CLI) or in a background thread
(tests, benchmarks)."""

from __future__ import annotations

import copy
import ipaddress
import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine (127.0.0.0/8, ::1, ``localhost``).
    ``0.0.0.0``, ``::`` and names that resolve elsewhere (or not at all) are not."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning for serving on a non-loopback interface without an API key."""
    if api_key or is_loopback(host):
        return None
    return (
        f"warning: serving on {host}, which other machines can reach, without an API key: "
        "anyone who reaches it can use the model; pass --api-key (or set "
        "LUSIFER_API_KEY), or bind 127.0.0.1"
    )


def log_config() -> dict[str, Any]:
    """uvicorn's logging setup with the request id on every access line, and the
    ``lusifer`` logger (request-level errors) on uvicorn's stderr handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["request_id"] = {
        "()": "lusifer.serving.middleware.RequestIdFilter"
    }
    config["formatters"]["access"]["fmt"] = (
        '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s '
        "request_id=%(request_id)s"
    )
    config["handlers"]["access"]["filters"] = ["request_id"]
    config["loggers"]["lusifer"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def serve(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"):
    """Run until SIGINT/SIGTERM; uvicorn stops accepting, lets in-flight requests
    finish, then the app's lifespan drains the batch queue. Access log lines end with
    ``request_id=<id>`` (the ``X-Request-ID`` of the response)."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config(),
        timeout_graceful_shutdown=30,
    )


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` runs uvicorn in a thread on a free
    loopback port and stops it (gracefully) on exit."""

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=30,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="uvicorn")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the server on {self.url} failed to start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server on {self.url} did not start in {timeout}s")
            time.sleep(0.02)
        return self.url

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
