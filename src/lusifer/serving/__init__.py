"""Serving embeddings over HTTP: an OpenAI-compatible API with micro-batching."""

from .app import ServerSettings, create_app
from .batcher import MicroBatcher, QueueFullError, ShuttingDownError
from .errors import ApiError
from .server import BackgroundServer, exposure_warning, free_port, is_loopback, log_config, serve

__all__ = [
    "ApiError",
    "BackgroundServer",
    "MicroBatcher",
    "QueueFullError",
    "ServerSettings",
    "ShuttingDownError",
    "create_app",
    "exposure_warning",
    "free_port",
    "is_loopback",
    "log_config",
    "serve",
]
