"""What both drivers do on SIGINT/SIGTERM: drain first, and a second signal exits at once.

The first signal starts a graceful shutdown: stop accepting, let open tunnels
finish for up to ``--shutdown-timeout`` seconds, then close every session with
an SSH disconnect and exit 0.  The drivers then install :func:`exit_now` for
both signals, so an impatient second Ctrl-C (or systemd's follow-up) ends the
process on the spot, whatever a peer or a thread is stuck on.
"""

from __future__ import annotations

import logging
import os
import signal
import types
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import EXIT_ERROR

#: The signals that start a graceful shutdown.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DrainBase(ABC):
    """How many tunnels are open; a shutdown waits until none are (or its timeout).

    The counting and the log lines are shared; each backend supplies the event.
    """

    def __init__(self) -> None:
        self.active = 0

    def enter(self) -> None:
        """Count one tunnel now (before its task even starts); :meth:`leave` it later."""
        if not self.active:
            self._busy()
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
        if not self.active:
            self._idle()

    @contextmanager
    def track(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    async def settle(self, timeout: float, log: logging.Logger, what: str) -> None:
        """Wait up to ``timeout`` s for open tunnels to finish, saying so in the log."""
        if not self.active:
            log.info("shutting down")
            return
        log.info("shutting down: waiting up to %gs for %d open %s", timeout, self.active, what)
        if not await self.wait_idle(timeout):
            log.warning("shutdown timeout: cutting %d %s", self.active, what)

    @abstractmethod
    def _busy(self) -> None: ...

    @abstractmethod
    def _idle(self) -> None: ...

    @abstractmethod
    async def wait_idle(self, timeout: float) -> bool:
        """True once no tunnel is open; False if ``timeout`` seconds passed first."""


def exit_now(signum: int, frame: types.FrameType | None) -> None:
    """Signal handler for the second signal: no cleanup, no waiting."""
    del frame
    name = signal.Signals(signum).name
    os.write(2, f"wraith: {name} again: exiting now\n".encode())
    os._exit(EXIT_ERROR)


def arm_second_signal() -> None:
    """From now on SIGINT/SIGTERM end the process at once (main thread only)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, exit_now)
