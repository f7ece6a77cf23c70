"""The trio driver: ``connect()`` and ``serve()`` as async context managers."""

from __future__ import annotations

from .client import Client, connect
from .server import Server, serve
from .streams import ChannelStream

__all__ = ["ChannelStream", "Client", "Server", "connect", "serve"]
