"""Direct socket I/O for the hot paths of the asyncio driver.

asyncio's streams copy every read into the ``StreamReader``'s buffer and out
again; on a raw non-blocking socket the engine's own receive buffer is filled
with ``sock_recv_into`` (which returns at once when data is there), and a list
of buffers goes out in one ``writev`` (no joining).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence

from ..buffers import batch, drop_sent


async def wait_writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await fut
    finally:
        loop.remove_writer(fd)


async def send_views(sock: socket.socket, views: Sequence[bytes | memoryview]) -> None:
    """Write every byte of ``views``, in order; waits only while the socket is full."""
    loop = asyncio.get_running_loop()
    fd = sock.fileno()
    pending = list(views)
    while pending:
        try:
            sent = os.writev(fd, batch(pending))
        except BlockingIOError:
            await wait_writable(loop, fd)
            continue
        drop_sent(pending, sent)
