"""Carry a :class:`ByteSession`'s bytes between a trio socket stream and the engine.

Any byte stream will do: a TCP socket, or TLS over one (``tls://``).
One task reads, one writes what the engine queued and fires its timer; the
engine's clock is ``time.monotonic()``.  On plain TCP the reader fills the
engine's own receive buffer (``readv`` on the descriptor, see
:mod:`.sockio`) and the writer hands the sealed packets to one ``writev``;
neither yields to the scheduler when the socket is ready (:mod:`wraith.pumping`
decides when to).  Writes are bounded by the socket: the writer finishes one
batch before taking more, and what the engine can queue is bounded by the SSH
channel windows.
"""

from __future__ import annotations

import math
import time

import trio

from ..pumping import READ_SIZE, Reads
from ..ssh.engine import ByteSession
from .sockio import recv_into, send_views
from .wake import Notifier


async def pump(stream: trio.abc.Stream, session: ByteSession) -> None:
    notifier = Notifier()
    session.set_output_waker(notifier.wake)
    # Plain TCP: read into the engine's own buffer and write its packets with
    # sendmsg, no copies on our side.  Other streams (TLS) go through the API.
    fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None

    async def reader(cancel: trio.CancelScope) -> None:
        reads = Reads(session, notifier.wake)
        while True:
            try:
                view = reads.buffer() if fd is not None else None
                if view is not None:
                    assert fd is not None
                    with view:
                        n = await recv_into(fd, view)
                    more = reads.filled(n, time.monotonic())
                else:
                    data = await stream.receive_some(READ_SIZE)
                    more = reads.got(data, time.monotonic())
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                more = reads.got(b"", time.monotonic())
            if not more:
                return
            if reads.should_yield:
                await trio.lowlevel.checkpoint()

    async def writer(cancel: trio.CancelScope) -> None:
        try:
            while True:
                event = notifier.event()
                if fd is not None:
                    views = session.data_to_send_views()
                    if views:
                        await send_views(fd, views)
                        continue
                else:
                    out = session.data_to_send()
                    if out:
                        await stream.send_all(out)
                        continue
                if session.finished:
                    break
                timer = session.get_timer()
                delay = math.inf if timer is None else max(0.0, timer - time.monotonic())
                with trio.move_on_after(delay):
                    await event.wait()
                    continue
                session.handle_timer(time.monotonic())
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            session.receive_data(b"", time.monotonic())
        finally:
            cancel.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader, nursery.cancel_scope)
            nursery.start_soon(writer, nursery.cancel_scope)
    finally:
        session.set_output_waker(None)
        # Bounded even for TLS, whose close_notify could wait on a stuck peer.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 5):
            await stream.aclose()
