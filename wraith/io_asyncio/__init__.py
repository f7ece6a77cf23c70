"""The asyncio driver: ``connect()`` and ``serve()`` as async context managers.

The names are imported on first use (PEP 562), so the client path
(``from wraith.io_asyncio import connect``) never loads the server, its TLS
front and h11: that keeps ``wraith connect``'s time to first byte down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .client import Client, connect
    from .server import Server, serve
    from .streams import open_channel_streams

__all__ = ["Client", "Server", "connect", "open_channel_streams", "serve"]

#: Where each public name lives.
_HOMES = {
    "Client": ".client",
    "Server": ".server",
    "connect": ".client",
    "open_channel_streams": ".streams",
    "serve": ".server",
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _HOMES)
