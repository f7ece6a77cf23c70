"""The asyncio splice's socket feed: a tunnel's socket read straight into SSH packets.

``_SocketFeed`` reads a real socket (a socketpair here) from the loop's read
callback into the channel's ``write_into``.  The channel is a stand-in that
records what it was given and can close its window or fail: the engine's own
channels are driven through real tunnels in ``test_tunnel.py`` and the
others; these tests pin down the feed's own cases (window closed and
re-opened, end of stream, a failing channel) on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from wraith.io_asyncio.streams import _feed_to_channel, _SocketFeed
from wraith.io_asyncio.wake import Notifier
from wraith.ssh.engine import Channel, ChannelClosed


class FakeChannel(Channel):
    """Takes up to ``packet`` bytes per ``write_into`` while ``window`` allows."""

    supports_write_into = True

    def __init__(self, window: int, packet: int = 4096) -> None:
        self.window = window
        self.packet = packet
        self.got = bytearray()
        self.eof = False
        self.fail: BaseException | None = None
        self.waker: Callable[[], None] | None = None

    def open_window(self, n: int) -> None:
        self.window += n
        if self.waker is not None:
            self.waker()

    def write_into(self, fill: Callable[[memoryview], int]) -> int:
        if self.fail is not None:
            raise self.fail
        room = min(self.window, self.packet)
        if room <= 0:
            return -1
        buf = bytearray(room)
        with memoryview(buf) as view:
            n = fill(view)
        if n > 0:
            self.got += buf[:n]
            self.window -= n
        return n

    def write_eof(self) -> None:
        self.eof = True

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        self.waker = waker

    def read(self, max_bytes: int) -> bytes | None:
        return None

    def write(self, data: bytes | memoryview) -> int:
        n = min(len(data), self.window)  # only the bytes read before the feed
        self.got += data[:n]
        self.window -= n
        return n

    def close(self) -> None:
        pass

    @property
    def lost(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return False


@dataclass
class Running:
    channel: FakeChannel
    feed: _SocketFeed
    task: asyncio.Future[None]
    peer: socket.socket  # the other end of the socket the feed reads


@contextlib.asynccontextmanager
async def running_feed(window: int, first: bytes = b"") -> AsyncIterator[Running]:
    """A feed reading one end of a socketpair into a ``FakeChannel``, running."""
    local, peer = socket.socketpair()
    local.setblocking(False)
    channel = FakeChannel(window=window)
    notifier = Notifier()
    channel.set_waker(notifier.wake)
    feed = _SocketFeed(local.fileno(), channel, notifier.wake)
    task = asyncio.ensure_future(_feed_to_channel(feed, notifier, first, False))
    try:
        yield Running(channel, feed, task, peer)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        feed.close()
        local.close()
        peer.close()


def test_feed_waits_for_the_window_and_delivers_everything_in_order() -> None:
    async def main() -> None:
        async with running_feed(10_000) as r:
            channel, feed, task, peer = r.channel, r.feed, r.task, r.peer
            payload = os.urandom(100_000)
            peer.setblocking(False)
            sent = 0
            shut_seen = False
            for _ in range(3000):
                if sent < len(payload):
                    with contextlib.suppress(BlockingIOError):
                        sent += peer.send(payload[sent : sent + 16384])
                await asyncio.sleep(0.001)
                if not shut_seen and not feed.watching and channel.window == 0:
                    # The window is shut: the feed stopped watching the
                    # socket, and it read nothing it could not send.
                    shut_seen = True
                    assert len(channel.got) == 10_000
                    channel.open_window(len(payload))
                if sent == len(payload) and len(channel.got) == len(payload):
                    break
            assert shut_seen
            peer.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(task, 5)
            assert bytes(channel.got) == payload
            assert channel.eof  # the socket's EOF became the channel's

    asyncio.run(main())


def test_a_failing_channel_ends_the_feed_with_its_error() -> None:
    async def main() -> None:
        async with running_feed(1 << 20, b"first") as r:
            channel, feed, task, peer = r.channel, r.feed, r.task, r.peer
            peer.sendall(b"abc")
            for _ in range(200):
                if bytes(channel.got) == b"firstabc":
                    break
                await asyncio.sleep(0.005)
            assert bytes(channel.got) == b"firstabc"  # what came before the feed goes first
            channel.fail = ChannelClosed("channel is closed")
            peer.sendall(b"more")
            with pytest.raises(ConnectionResetError, match="SSH session lost"):
                await asyncio.wait_for(task, 5)
            assert not feed.watching  # nothing left registered with the loop
            assert not channel.eof

    asyncio.run(main())


def test_an_unexpected_error_in_the_read_callback_stops_watching() -> None:
    async def main() -> None:
        async with running_feed(1 << 20) as r:
            channel, feed, task, peer = r.channel, r.feed, r.task, r.peer
            await asyncio.sleep(0.01)
            assert feed.watching
            channel.fail = RuntimeError("engine bug")
            peer.sendall(b"x")
            with pytest.raises(RuntimeError, match="engine bug"):
                await asyncio.wait_for(task, 5)
            assert not feed.watching

    asyncio.run(main())
