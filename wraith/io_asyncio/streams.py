"""asyncio streams over engine channels, and the splice between two stream pairs.

:func:`open_channel_streams` wraps a channel in an ``asyncio.Transport`` so that
``client.open_stream()`` returns the standard ``(StreamReader, StreamWriter)``
pair.  Backpressure both ways: the reader task stops polling the channel when
the ``StreamReader`` pauses reading (so the SSH window is not replenished), and
``writer.drain()`` waits while more than one window is buffered.

A channel cut by a lost session is not a clean end of stream: the reader gets
``ConnectionResetError`` and :func:`splice` resets the local socket (RST via
``SO_LINGER`` 0) instead of sending FIN.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from ..buffers import READ_BUFFERS
from ..ssh.engine import Channel, ChannelClosed
from .flow import FlowProtocol
from .wake import Notifier

READ_SIZE = 256 * 1024
#: Bytes one read callback of a :class:`_SocketFeed` moves before it lets the
#: loop run other callbacks (it is called again while the socket has more).
FEED_TURN = 1024 * 1024
WRITE_HIGH_WATER = 2 * 1024 * 1024
STREAM_LIMIT = 1024 * 1024


class SessionLost(ConnectionResetError):
    """The SSH session died under this channel."""


class ChannelTransport(asyncio.Transport):
    def __init__(self, channel: Channel, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.channel = channel
        self._protocol = protocol
        self._notifier = Notifier()
        channel.set_waker(self._notifier.wake)
        # What write() was given and the channel did not take yet: chunks, so
        # a partial channel write never moves the rest (no memmove, no join).
        self._buffer: deque[bytes | memoryview] = deque()
        self._buffered = 0
        self._eof_pending = False
        self._closing = False
        self._reading = asyncio.Event()
        self._reading.set()
        self._write_paused = False
        self._done = False
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())

    # asyncio.Transport API ----------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "channel":
            return self.channel
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True
        self._notifier.wake()

    def abort(self) -> None:
        self._closing = True
        self._buffer.clear()
        self._buffered = 0
        self._finish(None)

    def is_reading(self) -> bool:
        return self._reading.is_set()

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()
        self._notifier.wake()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_pending or self._closing:
            raise RuntimeError("cannot write after write_eof() or close()")
        if not data:
            return
        # The caller may reuse a mutable buffer once write() returns: keep a copy.
        self._buffer.append(data if isinstance(data, bytes) else bytes(data))
        self._buffered += len(data)
        self._notifier.wake()
        if not self._write_paused and self._buffered > WRITE_HIGH_WATER:
            self._write_paused = True
            self._protocol.pause_writing()

    def write_eof(self) -> None:
        self._eof_pending = True
        self._notifier.wake()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # the pump -------------------------------------------------------------------

    async def _run(self) -> None:
        ch = self.channel
        read_done = False
        eof_sent = False
        try:
            while not self._done:
                event = self._notifier.event()
                progressed = False
                if self._buffer:
                    try:
                        sent = self._send_buffered(ch)
                    except ChannelClosed:
                        self._finish(SessionLost("SSH session lost") if ch.lost else None)
                        return
                    if sent:
                        progressed = True
                        if self._write_paused and self._buffered <= WRITE_HIGH_WATER // 4:
                            self._write_paused = False
                            self._protocol.resume_writing()
                if not self._buffer and self._eof_pending and not eof_sent:
                    ch.write_eof()
                    eof_sent = True
                if not self._buffer and self._closing:
                    self._finish(None)
                    return
                if not read_done and self._reading.is_set():
                    parts = ch.read_chunks(READ_SIZE)
                    if parts:
                        # Read-only views of immutable packets: safe to keep.
                        for part in parts:
                            self._protocol.data_received(part)  # type: ignore[arg-type]
                        progressed = True
                    elif parts is not None:
                        read_done = True
                        if ch.lost:
                            self._finish(SessionLost("SSH session lost"))
                            return
                        keep_open = self._protocol.eof_received()
                        if not keep_open and eof_sent:
                            self._finish(None)
                            return
                if read_done and ch.closed and not self._buffer:
                    self._finish(None)
                    return
                if progressed:
                    await asyncio.sleep(0)
                else:
                    await event.wait()
        except asyncio.CancelledError:
            self._finish(None)
            raise
        except Exception as exc:
            # Never die silently: the reader would wait forever.
            self._finish(SessionLost(f"channel failed: {type(exc).__name__}"))

    def _send_buffered(self, ch: Channel) -> int:
        """Hand the channel what its window takes, chunk by chunk; bytes sent."""
        total = 0
        buffer = self._buffer
        while buffer:
            chunk = buffer[0]
            sent = ch.write(chunk)
            total += sent
            if sent == len(chunk):
                buffer.popleft()
                continue
            if sent:
                buffer[0] = memoryview(chunk)[sent:]
            break
        self._buffered -= total
        return total

    def _finish(self, exc: Exception | None) -> None:
        if self._done:
            return
        self._done = True
        self._closing = True
        self.channel.set_waker(None)
        self.channel.close()
        if self._task is not asyncio.current_task():
            self._task.cancel()
        self._protocol.connection_lost(exc)


async def open_channel_streams(
    channel: Channel,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = ChannelTransport(channel, protocol)
    protocol.connection_made(transport)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


def set_reset_on_close(writer: asyncio.StreamWriter) -> None:
    """Make closing this socket send RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset(writer: asyncio.StreamWriter) -> None:
    set_reset_on_close(writer)
    writer.transport.abort()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.CancelledError):
        await writer.wait_closed()


async def _write_all(channel: Channel, data: bytes, notifier: Notifier) -> None:
    """All of ``data`` into the channel, waiting while the peer's window is full."""
    view = memoryview(data)
    while view:
        event = notifier.event()
        try:
            sent = channel.write(view)
        except ChannelClosed:
            raise SessionLost("SSH session lost") from None
        if sent:
            view = view[sent:]
        else:
            await event.wait()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        data = await reader.read(READ_SIZE)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def _to_channel(
    reader: asyncio.StreamReader, channel: Channel, notifier: Notifier, first: bytes
) -> None:
    data = first
    while True:
        await _write_all(channel, data, notifier)
        data = await reader.read(READ_SIZE)
        if not data:
            break
    channel.write_eof()


async def _chunks(channel: Channel, notifier: Notifier) -> list[bytes | memoryview]:
    """The channel's next chunks; ``[]`` at its clean end, ``SessionLost`` if cut."""
    parts = await notifier.poll(lambda: channel.read_chunks(READ_SIZE))
    if not parts and channel.lost:
        raise SessionLost("SSH session lost")
    return parts


async def _from_channel(channel: Channel, writer: asyncio.StreamWriter, notifier: Notifier) -> None:
    while parts := await _chunks(channel, notifier):
        for part in parts:
            writer.write(part)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


class _LocalLink(FlowProtocol):
    """A tunnel's local socket once its streams are done with: what it reads
    goes into the channel in the loop's read callback (through a pooled
    buffer, copied once into SSH packets), and writes to it have their own
    flow control.  What the peer's window does not take at once waits in
    ``rest`` with reading paused until the upstream task sent it."""

    def __init__(self, channel: Channel, notifier: Notifier) -> None:
        self.channel = channel
        self._wake = notifier.wake
        self.transport: asyncio.Transport | None = None
        self.rest = b""
        self.eof = False
        self.error: BaseException | None = None
        self._buf: bytearray | None = None
        super().__init__()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._buf is None:
            self._buf = READ_BUFFERS.take()
        return memoryview(self._buf)

    def buffer_updated(self, nbytes: int) -> None:
        buf, self._buf = self._buf, None
        assert buf is not None and self.transport is not None
        try:
            with memoryview(buf) as view:
                try:
                    sent = self.channel.write(view[:nbytes])
                except ChannelClosed:
                    self.error = SessionLost("SSH session lost")
                    self.transport.pause_reading()
                    self._wake()
                    return
                if sent < nbytes:
                    self.rest = bytes(view[sent:nbytes])
                    self.transport.pause_reading()  # until the window takes the rest
                    self._wake()
        finally:
            READ_BUFFERS.give(buf)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return True  # the other direction may still be writing to it

    def connection_lost(self, exc: Exception | None) -> None:
        if self._buf is not None:
            READ_BUFFERS.give(self._buf)
            self._buf = None
        if exc is not None and self.error is None:
            self.error = exc
        self.eof = True
        self._mark_lost()
        self._wake()


async def _link_to_channel(
    link: _LocalLink, transport: asyncio.Transport, notifier: Notifier, first: bytes
) -> None:
    channel = link.channel
    pending = first
    while True:
        await _write_all(channel, pending, notifier)
        pending = b""
        event = notifier.event()
        if link.error is not None:
            raise link.error
        if link.rest:
            pending, link.rest = link.rest, b""
            continue
        if not link.lost.done() and not link.eof:
            transport.resume_reading()
            await event.wait()
            continue
        if link.lost.done() and not link.eof:
            raise ConnectionResetError("local connection lost")
        break
    channel.write_eof()


class _SocketFeed:
    """A tunnel's local socket read straight into SSH packets (channels with
    ``write_into``: the Sans-IO engine), from the loop's read callback.

    Each read lands in the CHANNEL_DATA packet that carries it: no buffer of
    our own, no copy, no task switch.  The socket's transport stays paused;
    the feed reads through a duplicate of its descriptor (the loop lets only
    one owner watch a descriptor).  While the peer's window is closed the
    feed stops watching the socket, so nothing is read that cannot be sent;
    :func:`_feed_to_channel` starts it again on the next wake-up.
    """

    def __init__(self, fd: int, channel: Channel, wake: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = os.dup(fd)  # shares O_NONBLOCK with the socket
        self.channel = channel
        self._wake = wake
        self.watching = False
        self.eof = False
        self.error: BaseException | None = None

    def _fill(self, view: memoryview) -> int:
        return os.readv(self._fd, [view])

    def feed(self) -> bool:
        """Move what the socket has into the channel; True while the socket
        should be watched (it ran dry, or this turn's share is moved)."""
        moved = 0
        write_into = self.channel.write_into
        fill = self._fill
        while moved < FEED_TURN:
            try:
                n = write_into(fill)
            except BlockingIOError:
                return True
            except ChannelClosed:
                self.error = SessionLost("SSH session lost")
                return False
            except OSError as e:
                self.error = e
                return False
            if n > 0:
                moved += n
            elif n == 0:
                self.eof = True
                return False
            else:
                return False  # the peer's window is closed
        return True

    def _readable(self) -> None:
        try:
            more = self.feed()
        except Exception as exc:  # never leave a failing reader registered
            self.error = exc
            more = False
        if not more:
            self.stop()
            self._wake()

    def start(self) -> None:
        if not self.watching:
            self._loop.add_reader(self._fd, self._readable)
            self.watching = True

    def stop(self) -> None:
        if self.watching:
            self._loop.remove_reader(self._fd)
            self.watching = False

    def close(self) -> None:
        self.stop()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


async def _feed_to_channel(feed: _SocketFeed, notifier: Notifier, first: bytes, eof: bool) -> None:
    channel = feed.channel
    await _write_all(channel, first, notifier)
    feed.eof = eof
    while True:
        event = notifier.event()
        if feed.error is not None:
            raise feed.error
        if feed.eof:
            break
        if not feed.watching and feed.feed():
            feed.start()
            continue
        if feed.error is None and not feed.eof:
            await event.wait()  # watching the socket, or the window is closed
    channel.write_eof()


async def _channel_to_link(
    link: _LocalLink, transport: asyncio.Transport, notifier: Notifier
) -> None:
    while parts := await _chunks(link.channel, notifier):
        if link.lost.done():
            raise ConnectionResetError("local connection lost")
        for part in parts:
            transport.write(part)
        await link.can_write.wait()
    if link.lost.done():
        raise ConnectionResetError("local connection lost")
    transport.write_eof()


def _adopt(
    local: tuple[asyncio.StreamReader, asyncio.StreamWriter], link: _LocalLink
) -> tuple[asyncio.Transport, bytes] | None:
    """Take the local socket from its streams: its transport now talks to
    ``link``.  Returns the transport and the bytes the reader had buffered;
    None if that cannot be done (the streams then carry on)."""
    reader, writer = local
    transport = writer.transport
    buffered = getattr(reader, "_buffer", None)
    if (
        not isinstance(transport, asyncio.Transport)
        or not isinstance(buffered, bytearray)
        or reader.exception() is not None
        or transport.is_closing()
        or transport.get_write_buffer_size()
    ):
        return None
    transport.pause_reading()
    leftover = bytes(buffered)
    buffered.clear()
    link.eof = reader.at_eof() or bool(getattr(reader, "_eof", False))
    link.transport = transport
    transport.set_protocol(link)
    transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
    return transport, leftover


async def _splice_link(
    local: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    channel: Channel,
    first: bytes,
) -> bool:
    """The tunnel splice on an adopted socket; False if it could not adopt it."""
    notifier = Notifier()
    link = _LocalLink(channel, notifier)
    adopted = _adopt(local, link)
    if adopted is None:
        return False
    transport, leftover = adopted
    channel.set_waker(notifier.wake)
    sock = transport.get_extra_info("socket")  # an asyncio TransportSocket
    feed: _SocketFeed | None = None
    if channel.supports_write_into and sock is not None and sock.fileno() >= 0:
        feed = _SocketFeed(sock.fileno(), channel, notifier.wake)
        up = asyncio.ensure_future(_feed_to_channel(feed, notifier, first + leftover, link.eof))
    else:
        up = asyncio.ensure_future(_link_to_channel(link, transport, notifier, first + leftover))
    down = asyncio.ensure_future(_channel_to_link(link, transport, notifier))
    completed = False
    try:
        completed = await _both(up, down)
        if feed is not None:
            feed.close()  # the transport's descriptor is the socket's last
        if completed:
            transport.close()  # a FIN after what is buffered...
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.shield(link.lost)
    finally:
        if feed is not None:
            feed.close()
        if not completed:
            set_reset_on_close(local[1])  # broken or cancelled: RST
        if not link.lost.done():
            transport.abort()  # ...unless the peer stopped reading
        channel.set_waker(None)
        channel.close()
    return True


async def _both(up: asyncio.Future[None], down: asyncio.Future[None]) -> bool:
    """Wait for both directions; True if both ended cleanly (else both are stopped)."""
    completed = False
    try:
        pending: set[asyncio.Future[None]] = {up, down}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(t.exception() is not None for t in done):
                break
        else:
            completed = True
    finally:
        for t in (up, down):
            if not t.done():
                t.cancel()
        for t in (up, down):
            with contextlib.suppress(BaseException):
                await t
    return completed


async def splice(
    local: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    remote: tuple[asyncio.StreamReader, asyncio.StreamWriter] | Channel,
    first: bytes = b"",
) -> None:
    """Copy both ways until both ends are done; reset ``local`` if the tunnel broke.

    ``remote`` is a stream pair or, for a tunnel, the engine channel itself:
    its chunks then go to the socket with no stream buffer in between, and
    ``first`` (bytes the client sent early, say after its SOCKS request) goes
    to the channel before anything read from ``local``.
    """
    lr, lw = local
    if isinstance(remote, Channel) and await _splice_link(local, remote, first):
        return
    if isinstance(remote, Channel):
        notifier = Notifier()
        remote.set_waker(notifier.wake)
        up = asyncio.ensure_future(_to_channel(lr, remote, notifier, first))
        down = asyncio.ensure_future(_from_channel(remote, lw, notifier))
    else:
        if first:
            remote[1].write(first)
        up = asyncio.ensure_future(_copy(lr, remote[1]))
        down = asyncio.ensure_future(_copy(remote[0], lw))
    completed = False
    try:
        completed = await _both(up, down)
    finally:
        if completed:
            await _close(lw)
        else:
            reset(lw)
        if isinstance(remote, Channel):
            remote.set_waker(None)
            remote.close()
        elif completed:
            remote[1].close()
        else:
            remote[1].transport.abort()
