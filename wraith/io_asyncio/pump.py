"""Carry a :class:`ByteSession`'s bytes between an asyncio connection and the engine.

The twin of :mod:`wraith.io_trio.pump`.  A plain TCP connection becomes a
transport with a buffered protocol (:class:`_Link`): every read lands in the
engine's own receive buffer and is processed right in the loop's read
callback, with no task switch and no re-registration with epoll; a writer
task hands the sealed packets to ``transport.write`` one by one (no joining)
and fires the engine's timer.  Other connections (TLS) are a
``(StreamReader, StreamWriter)`` pair with a reader and a writer task.  Either
way writes are bounded: the writer waits while the transport holds more than
``WRITE_HIGH_WATER`` bytes (or ``drain()`` says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

from ..pumping import READ_SIZE, Reads
from ..ssh.engine import ByteSession
from .flow import FlowProtocol
from .wake import Notifier

#: Sealed packets the transport may hold before the writer waits for the socket.
WRITE_HIGH_WATER = 1024 * 1024
#: Seconds a closing connection may take to flush before it is cut.
CLOSE_TIMEOUT = 5.0

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def prepare(sock: socket.socket) -> socket.socket:
    """Make ``sock`` ready for :func:`pump`: non-blocking, no Nagle delay."""
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Link(FlowProtocol):
    """The SSH socket as an asyncio protocol: each read lands in the engine's
    own receive buffer and is processed in the loop's read callback, with no
    task switch and no per-read registration with epoll."""

    def __init__(self, session: ByteSession, wake: Callable[[], None]) -> None:
        self.reads = Reads(session, wake)
        self._wake = wake
        self._spare: bytearray | None = None  # for a session without get_buffer
        self.ended = False
        super().__init__()

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self.reads.buffer()
        if view is None:
            self._spare = self._spare or bytearray(READ_SIZE)
            view = memoryview(self._spare)
        return view

    def buffer_updated(self, nbytes: int) -> None:
        if self.ended:
            return
        now = time.monotonic()
        if self._spare is not None:
            more = self.reads.got(bytes(self._spare[:nbytes]), now)
        else:
            more = self.reads.filled(nbytes, now)
        self.ended = not more

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.reads.got(b"", time.monotonic())

    def eof_received(self) -> bool:
        self._end()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        self._mark_lost()
        self._wake()


async def _wait_timer(session: ByteSession, event: asyncio.Event) -> None:
    """Until ``event`` is set or the session's timer is due (then fire it)."""
    timer = session.get_timer()
    try:
        delay = None if timer is None else max(0.0, timer - time.monotonic())
        async with asyncio.timeout(delay):
            await event.wait()
    except TimeoutError:
        session.handle_timer(time.monotonic())


async def pump(conn: socket.socket | Streams, session: ByteSession) -> None:
    if isinstance(conn, socket.socket):
        await _pump_socket(conn, session)
    else:
        await _pump_streams(conn, session)


async def _pump_socket(sock: socket.socket, session: ByteSession) -> None:
    loop = asyncio.get_running_loop()
    notifier = Notifier()
    session.set_output_waker(notifier.wake)
    try:
        transport, link = await loop.connect_accepted_socket(
            lambda: _Link(session, notifier.wake), sock
        )
    except OSError:
        session.set_output_waker(None)
        session.receive_data(b"", time.monotonic())
        sock.close()
        return
    transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
    try:
        while True:
            event = notifier.event()
            views = session.data_to_send_views()
            if views:
                if transport.is_closing():
                    break  # the connection is gone: nothing more goes out
                for view in views:
                    transport.write(view)
                if not link.can_write.is_set():
                    await link.can_write.wait()
                continue
            if session.finished or transport.is_closing():
                break
            await _wait_timer(session, event)
    finally:
        session.set_output_waker(None)
        transport.close()  # after what is buffered went out...
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(link.lost)
        except TimeoutError:
            transport.abort()  # ...unless the peer stopped reading


async def _pump_streams(streams: Streams, session: ByteSession) -> None:
    notifier = Notifier()
    session.set_output_waker(notifier.wake)
    reader, writer = streams

    async def read_loop() -> None:
        reads = Reads(session, notifier.wake)
        while True:
            try:
                data = await reader.read(READ_SIZE)
            except OSError:
                data = b""
            if not reads.got(data, time.monotonic()):
                return

    async def write_loop() -> None:
        try:
            while True:
                event = notifier.event()
                out = session.data_to_send()
                if out:
                    writer.write(out)
                    await writer.drain()
                    continue
                if session.finished:
                    break
                await _wait_timer(session, event)
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
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
