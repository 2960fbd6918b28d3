"""Serving embeddings over HTTP: an OpenAI-compatible API with micro-batching."""

from .app import ApiError, ServerSettings, create_app
from .batcher import MicroBatcher, QueueFullError, ShuttingDownError
from .server import BackgroundServer, free_port, serve

__all__ = [
    "ApiError",
    "BackgroundServer",
    "MicroBatcher",
    "QueueFullError",
    "ServerSettings",
    "ShuttingDownError",
    "create_app",
    "free_port",
    "serve",
]
