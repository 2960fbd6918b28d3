"""Running the app under uvicorn: in the foreground (the CLI) or in a background thread
(tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"):
    """Run until SIGINT/SIGTERM; uvicorn stops accepting, lets in-flight requests
    finish, then the app's lifespan drains the batch queue."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)


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
