"""Graceful shutdown on asyncio: the twin of :mod:`wraith.io_trio.drain`."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from ..lifecycle import STOP_SIGNALS, DrainBase, arm_second_signal


class Drain(DrainBase):
    def __init__(self) -> None:
        super().__init__()
        self._event = asyncio.Event()
        self._event.set()

    def _busy(self) -> None:
        self._event.clear()

    def _idle(self) -> None:
        self._event.set()

    async def wait_idle(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()
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
