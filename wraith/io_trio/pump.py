"""Carry a :class:`ByteSession`'s bytes between a trio socket stream and the engine.

Any byte stream will do: a TCP socket, or TLS over one (``tls://``).
One task reads (large reads, fed straight in), one writes what the engine
queued and fires its timer; the engine's clock is ``time.monotonic()``.
Writes are bounded by the socket: the writer awaits ``send_all`` before taking
more, and what the engine can queue is bounded by the SSH channel windows.
"""

from __future__ import annotations

import math
import time

import trio

from ..ssh.engine import ByteSession
from .wake import Notifier

READ_SIZE = 256 * 1024


async def pump(stream: trio.abc.Stream, session: ByteSession) -> None:
    notifier = Notifier()
    session.set_output_waker(notifier.wake)

    async def reader(cancel: trio.CancelScope) -> None:
        while True:
            try:
                data = await stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            session.receive_data(data, time.monotonic())
            notifier.wake()
            if not data:
                return

    async def writer(cancel: trio.CancelScope) -> None:
        try:
            while True:
                event = notifier.event()
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
