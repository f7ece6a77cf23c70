"""Graceful shutdown on trio: count open tunnels, wait for them, catch the stop signal."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from ..lifecycle import STOP_SIGNALS, arm_second_signal


class Drain:
    """How many tunnels are open; a shutdown waits until none are (or its timeout)."""

    def __init__(self) -> None:
        self.active = 0
        self._idle = trio.Event()
        self._idle.set()

    def enter(self) -> None:
        """Count one tunnel now (before its task even starts); :meth:`leave` it later."""
        if not self.active:
            self._idle = trio.Event()
        self.active += 1

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
        with trio.move_on_after(timeout):
            await self._idle.wait()
            return True
        return False


async def wait_for_stop() -> str:
    """Return the name of the first SIGINT/SIGTERM; a second one exits at once."""
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        signum = await signals.__anext__()
    arm_second_signal()
    return signal.Signals(signum).name
