"""Client-side ``-R`` bookkeeping that both drivers share.

Registering the pending remote forwards on a session, and matching a
connection the server forwarded back to its local destination, are the same
decisions on trio and asyncio; only waiting differs, so the driver passes its
own ``wait`` for a :class:`~wraith.ssh.engine.Pending`.  Nothing here logs a
destination.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..proto import forwards as fw
from .engine import ClientSession, EngineError, ForwardedConnection, Pending

log = logging.getLogger("wraith.client")


async def register_remote(
    session: ClientSession,
    registry: fw.ForwardRegistry,
    wait: Callable[[Pending[Any]], Awaitable[Any]],
) -> None:
    """Ask the server for every ``-R`` forward still in REQUESTED state."""
    for entry in registry.pending_remote():
        f = entry.forward
        assert isinstance(f, fw.RemoteForward)
        pending = session.request_forward(fw.remote_bind_address(f.bind_host), f.bind_port)
        try:
            port = int(await wait(pending))
        except EngineError as exc:
            registry.mark_failed(entry.id, str(exc))
            log.warning("remote forward of port %d refused by the server", f.bind_port)
            continue
        registry.mark_active(entry.id, port)
        log.info("remote forward listening on server port %d", port)


def forwarded_destination(
    registry: fw.ForwardRegistry, ev: ForwardedConnection
) -> fw.RemoteForward | None:
    """The ``-R`` forward a forwarded connection belongs to; None closes its channel."""
    entry = registry.find_remote(ev.bind_host, ev.bind_port)
    if entry is None or not isinstance(entry.forward, fw.RemoteForward):
        ev.channel.close()
        return None
    return entry.forward
