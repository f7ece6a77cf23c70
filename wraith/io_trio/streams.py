"""trio streams over engine channels, and the splice between two streams.

:class:`ChannelStream` is what ``client.open_stream()`` returns: a real
``trio.abc.HalfCloseableStream``.  Reads are large (256 KiB) and writes go out
as far as the SSH window allows, then wait for a window adjust, so a slow
reader slows the sender and no buffer grows past about one window.

A channel cut by a lost session is not a clean end of stream: the stream raises
``BrokenResourceError`` and :func:`splice` resets the local socket (RST via
``SO_LINGER`` 0) instead of sending FIN.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

import trio

from ..buffers import READ_BUFFERS
from ..ssh.engine import Channel, ChannelClosed
from .sockio import send_views
from .wake import Notifier

READ_SIZE = 256 * 1024


class SessionLost(trio.BrokenResourceError):
    """The SSH session died under this channel."""


class ChannelStream(trio.abc.HalfCloseableStream):
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._notifier = Notifier()
        channel.set_waker(self._notifier.wake)
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        n = max_bytes or READ_SIZE
        ch = self.channel
        data = await self._notifier.poll(lambda: ch.read(n))
        if not data and ch.lost:
            raise SessionLost("SSH session lost")
        return data

    async def receive_chunks(self, max_bytes: int = READ_SIZE) -> list[bytes | memoryview]:
        """Like :meth:`receive_some`, as the channel's pieces unjoined (``[]`` at EOF).

        The pieces are read-only and stay valid; for :func:`splice`'s ``sendmsg``.
        """
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        ch = self.channel
        parts = await self._notifier.poll(lambda: ch.read_chunks(max_bytes))
        if not parts and ch.lost:
            raise SessionLost("SSH session lost")
        return parts

    async def send_from(self, fd: int, limit: int = READ_SIZE) -> int:
        """Read from the socket ``fd`` straight into SSH packets (Sans-IO
        channels) and send them, up to ``limit`` bytes while the socket has
        data; returns the bytes moved, 0 at the socket's EOF.  Waits only
        while the socket has nothing yet or the peer's window is closed."""
        ch = self.channel

        def fill(view: memoryview) -> int:
            return os.readv(fd, [view])

        moved = 0
        while True:
            if self._closed:
                raise trio.ClosedResourceError("stream is closed")
            event = self._notifier.event()
            try:
                n = ch.write_into(fill)
            except BlockingIOError:
                if moved:
                    return moved
                await trio.lowlevel.wait_readable(fd)
                continue
            except ChannelClosed as e:
                if ch.lost:
                    raise SessionLost("SSH session lost") from None
                raise trio.BrokenResourceError(str(e)) from None
            if n > 0:
                moved += n
                if moved < limit:
                    continue  # another packet while the socket has more
                return moved
            if n == 0:
                return moved  # EOF (reported next time if bytes came first)
            if moved:
                return moved
            await event.wait()  # the peer's window is full

    def send_now(self, data: bytes | bytearray | memoryview) -> int:
        """Send what the peer's window takes right now, without waiting; bytes sent.

        The bytes are copied into SSH packets before this returns.
        """
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        ch = self.channel
        try:
            return ch.write(data if isinstance(data, memoryview) else memoryview(data))
        except ChannelClosed as e:
            if ch.lost:
                raise SessionLost("SSH session lost") from None
            raise trio.BrokenResourceError(str(e)) from None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            event = self._notifier.event()
            sent = self.send_now(view)
            if sent:
                view = view[sent:]
                await trio.lowlevel.checkpoint()
            else:
                await event.wait()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        self.channel.write_eof()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.channel.set_waker(None)
            self.channel.close()
        await trio.lowlevel.checkpoint()


def set_reset_on_close(stream: trio.SocketStream) -> None:
    """Make the next close send RST instead of FIN."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def reset(stream: trio.SocketStream) -> None:
    set_reset_on_close(stream)
    await stream.aclose()


async def splice(local: trio.SocketStream, remote: ChannelStream) -> None:
    """Copy both ways until both ends are done; reset ``local`` if the tunnel broke."""
    broken = False

    async def upstream(cancel: trio.CancelScope) -> None:
        nonlocal broken
        fd = local.socket.fileno()
        try:
            if remote.channel.supports_write_into:
                # Each socket read lands in the SSH packet that carries it.
                while await remote.send_from(fd):
                    await trio.lowlevel.checkpoint()
                await remote.send_eof()
                return
            while True:
                # Read into a pooled buffer and hand it to the channel at once
                # (copied into SSH packets); the buffer is back in the pool
                # before anything waits, so idle or window-blocked
                # connections hold none.  What the window did not take yet
                # waits as bytes of its own.
                buf = READ_BUFFERS.take()
                rest = b""
                try:
                    with memoryview(buf) as view:
                        try:
                            n = os.readv(fd, [view])
                        except BlockingIOError:
                            n = -1
                        if n > 0:
                            sent = remote.send_now(view[:n])
                            rest = bytes(view[sent:n])
                finally:
                    READ_BUFFERS.give(buf)
                if n < 0:
                    await trio.lowlevel.wait_readable(fd)
                elif n == 0:
                    break
                elif rest:
                    await remote.send_all(rest)
                else:
                    await trio.lowlevel.checkpoint()
            await remote.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            broken = True
            cancel.cancel()

    async def downstream(cancel: trio.CancelScope) -> None:
        nonlocal broken
        fd = local.socket.fileno()
        try:
            while True:
                parts = await remote.receive_chunks(READ_SIZE)
                if not parts:
                    break
                await send_views(fd, parts)
            await local.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            broken = True
            cancel.cancel()

    completed = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upstream, nursery.cancel_scope)
            nursery.start_soon(downstream, nursery.cancel_scope)
        completed = not broken
    finally:
        with trio.CancelScope(shield=True):
            # Broken, or cancelled from outside (session gone, shutdown): RST.
            if not completed:
                set_reset_on_close(local)
            await local.aclose()
            await remote.aclose()
