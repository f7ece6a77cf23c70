"""Carry a :class:`ByteSession`'s bytes between an asyncio connection and the engine.

The twin of :mod:`wraith.io_trio.pump`: one task reads, one writes what the
engine queued and fires the engine's timer.  A plain TCP connection is a raw
non-blocking socket: reads land in the engine's own buffer
(``sock_recv_into``) and the sealed packets leave in one ``writev``.  Other
connections (TLS) are a ``(StreamReader, StreamWriter)`` pair, written with
``drain()``.  Either way writes are bounded by the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from ..pumping import READ_SIZE, Reads
from ..ssh.engine import ByteSession
from .sockio import send_views
from .wake import Notifier

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def prepare(sock: socket.socket) -> socket.socket:
    """Make ``sock`` ready for :func:`pump`: non-blocking, no Nagle delay."""
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def pump(conn: socket.socket | Streams, session: ByteSession) -> None:
    loop = asyncio.get_running_loop()
    notifier = Notifier()
    session.set_output_waker(notifier.wake)
    sock = conn if isinstance(conn, socket.socket) else None
    streams = conn if not isinstance(conn, socket.socket) else None

    async def read_loop() -> None:
        reads = Reads(session, notifier.wake)
        while True:
            try:
                view = reads.buffer() if sock is not None else None
                if view is not None:
                    assert sock is not None
                    with view:
                        n = await loop.sock_recv_into(sock, view)
                    more = reads.filled(n, time.monotonic())
                else:
                    assert streams is not None
                    data = await streams[0].read(READ_SIZE)
                    more = reads.got(data, time.monotonic())
            except OSError:
                more = reads.got(b"", time.monotonic())
            if not more:
                return
            if reads.should_yield:
                # sock_recv_into returns without yielding when data is there.
                await asyncio.sleep(0)

    async def write_loop() -> None:
        try:
            while True:
                event = notifier.event()
                if sock is not None:
                    views = session.data_to_send_views()
                    if views:
                        await send_views(sock, views)
                        await asyncio.sleep(0)
                        continue
                else:
                    assert streams is not None
                    out = session.data_to_send()
                    if out:
                        streams[1].write(out)
                        await streams[1].drain()
                        continue
                if session.finished:
                    break
                timer = session.get_timer()
                try:
                    delay = None if timer is None else max(0.0, timer - time.monotonic())
                    async with asyncio.timeout(delay):
                        await event.wait()
                except TimeoutError:
                    session.handle_timer(time.monotonic())
        except OSError:
            session.receive_data(b"", time.monotonic())

    read_task = asyncio.ensure_future(read_loop())
    try:
        await write_loop()
    finally:
        session.set_output_waker(None)
        read_task.cancel()
        with contextlib.suppress(BaseException):
            await read_task
        if sock is not None:
            sock.close()
        else:
            assert streams is not None
            streams[1].close()
            with contextlib.suppress(OSError):
                await streams[1].wait_closed()
