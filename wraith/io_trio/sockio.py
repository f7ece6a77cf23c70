"""Direct socket I/O for the hot paths: ``readv``/``writev`` on the descriptor.

trio's socket methods yield to the scheduler after every call, even one that
succeeded at once; at one call per 256 KiB that trip is a large share of the
cost of a bulk transfer.  These helpers make the system call directly on the
non-blocking descriptor and only wait (``wait_readable``/``wait_writable``,
which are checkpoints) when it would block; callers add a checkpoint where a
loop could otherwise run without one.  Writing a list of buffers in one call
spares joining them (the engine's sealed packets, a channel's chunks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import trio

from ..buffers import batch, drop_sent


async def recv_into(fd: int, view: memoryview) -> int:
    """Read into ``view``; 0 at EOF.  Waits only if nothing is there yet."""
    while True:
        try:
            return os.readv(fd, [view])
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)


async def send_views(fd: int, views: Sequence[bytes | memoryview]) -> None:
    """Write every byte of ``views``, in order; waits only while the socket is full."""
    pending = list(views)
    while pending:
        try:
            sent = os.writev(fd, batch(pending))
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)
            continue
        drop_sent(pending, sent)
