"""Graceful shutdown on trio: the drain counter's event, and the stop signal."""

from __future__ import annotations

import signal

import trio

from ..lifecycle import STOP_SIGNALS, DrainBase, arm_second_signal


class Drain(DrainBase):
    def __init__(self) -> None:
        super().__init__()
        self._event = trio.Event()
        self._event.set()

    def _busy(self) -> None:
        self._event = trio.Event()

    def _idle(self) -> None:
        self._event.set()

    async def wait_idle(self, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            await self._event.wait()
            return True
        return False


async def wait_for_stop() -> str:
    """Return the name of the first SIGINT/SIGTERM; a second one exits at once."""
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        signum = await signals.__anext__()
    arm_second_signal()
    return signal.Signals(signum).name
