"""Graceful shutdown on asyncio: the twin of :mod:`wraith.io_trio.drain`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from ..lifecycle import STOP_SIGNALS, arm_second_signal


class Drain:
    """How many tunnels are open; a shutdown waits until none are (or its timeout)."""

    def __init__(self) -> None:
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        """Count one tunnel now (before its task even starts); :meth:`leave` it later."""
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if not self.active:
            self._idle.set()

    @contextmanager
    def track(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    async def wait_idle(self, timeout: float) -> bool:
        """True once no tunnel is open; False if ``timeout`` seconds passed first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
                return True
        return False


async def wait_for_stop() -> str:
    """Return the name of the first SIGINT/SIGTERM; a second one exits at once."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[str] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not first.done():
            first.set_result(sig.name)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        name = await first
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    arm_second_signal()
    return name
