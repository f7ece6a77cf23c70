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
from ..proto.backoff import Backoff
from .engine import ClientSession, EngineError, ForwardedConnection, Pending, SessionClosed

log = logging.getLogger("wraith.client")


#: Refusals of a -R's earlier port before it settles for any port.
STICKY_PORT_TRIES = 10


async def register_remote(
    session: ClientSession,
    registry: fw.ForwardRegistry,
    wait: Callable[[Pending[Any]], Awaitable[Any]],
    *,
    quiet: bool = False,
) -> None:
    """Ask the server for every ``-R`` forward in REQUESTED state, once each.

    A -R of port 0 asks for the port it had on the previous session, so that
    a reconnect keeps the same server port.  Refused ones end up FAILED (see
    :func:`retry_remote`).  ``quiet`` logs refusals at debug level (retries).
    """
    for entry in registry.pending_remote():
        f = entry.forward
        assert isinstance(f, fw.RemoteForward)
        want = entry.port_to_request()
        pending = session.request_forward(fw.remote_bind_address(f.bind_host), want)
        try:
            port = int(await wait(pending))
        except SessionClosed:
            return
        except EngineError as exc:
            if registry.get(entry.id).state is not fw.ForwardState.REQUESTED:
                return  # the session went down meanwhile; the next one starts over
            registry.mark_failed(entry.id, str(exc))
            level = logging.DEBUG if quiet else logging.WARNING
            log.log(level, "remote forward of port %d refused by the server", want)
            continue
        if registry.get(entry.id).state is not fw.ForwardState.REQUESTED:
            return
        registry.mark_active(entry.id, port)
        log.info("remote forward listening on server port %d", port)


async def retry_remote(
    session: ClientSession,
    registry: fw.ForwardRegistry,
    wait: Callable[[Pending[Any]], Awaitable[Any]],
    sleep: Callable[[float], Awaitable[None]],
) -> None:
    """Ask again for refused ``-R`` forwards, with backoff, while ``session`` lives.

    After a reconnect the server may still hold the old session's port for a
    moment (until it notices that session is dead), so a refusal is not
    final.  A port-0 forward gives up its earlier port after
    :data:`STICKY_PORT_TRIES` refusals and takes any port.
    """
    backoff = Backoff(initial=0.5, cap=10.0)
    tries: dict[int, int] = {}
    while session.active:
        failed = registry.failed_remote()
        if not failed:
            return
        await sleep(backoff.next_delay())
        if not session.active:
            return
        for entry in registry.failed_remote():
            tries[entry.id] = n = tries.get(entry.id, 0) + 1
            if entry.previous_port is not None and n >= STICKY_PORT_TRIES:
                log.warning(
                    "server port %d is still taken: asking for any port instead",
                    entry.previous_port,
                )
                registry.forget_previous_port(entry.id)
            registry.retry(entry.id)
        await register_remote(session, registry, wait, quiet=True)


def cancel_remote(session: ClientSession | None, registry: fw.ForwardRegistry) -> None:
    """Ask the server to stop listening for every bound ``-R`` (shutdown); no reply awaited."""
    if session is None or not session.active:
        return
    for entry in registry.entries():
        f = entry.forward
        if isinstance(f, fw.RemoteForward) and entry.bound_port is not None:
            session.cancel_forward(fw.remote_bind_address(f.bind_host), entry.bound_port)


def forwarded_destination(
    registry: fw.ForwardRegistry, ev: ForwardedConnection
) -> fw.RemoteForward | None:
    """The ``-R`` forward a forwarded connection belongs to; None closes its channel."""
    entry = registry.find_remote(ev.bind_host, ev.bind_port)
    if entry is None or not isinstance(entry.forward, fw.RemoteForward):
        ev.channel.close()
        return None
    return entry.forward
