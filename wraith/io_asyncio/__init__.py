"""The asyncio driver: ``connect()`` and ``serve()`` as async context managers."""

from __future__ import annotations

from .client import Client, connect
from .server import Server, serve
from .streams import open_channel_streams

__all__ = ["Client", "Server", "connect", "open_channel_streams", "serve"]
