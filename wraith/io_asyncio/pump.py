"""Carry a :class:`ByteSession`'s bytes between an asyncio socket and the engine.

The twin of :mod:`wraith.io_trio.pump`: one task reads, one writes what the
engine queued (waiting on ``drain()``, so writes are bounded by the socket) and
fires the engine's timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from ..ssh.engine import ByteSession
from .wake import Notifier

READ_SIZE = 256 * 1024


async def pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: ByteSession
) -> None:
    notifier = Notifier()
    session.set_output_waker(notifier.wake)

    async def read_loop() -> None:
        while True:
            try:
                data = await reader.read(READ_SIZE)
            except OSError:
                data = b""
            session.receive_data(data, time.monotonic())
            notifier.wake()
            if not data:
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
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
