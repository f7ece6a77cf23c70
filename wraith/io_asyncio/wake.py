"""Wake-ups from engine threads into the asyncio loop.

An engine calls :meth:`Notifier.wake` from any thread whenever something may
have changed; tasks take :meth:`Notifier.event` *before* polling the engine and
wait on it only if polling made no progress, so no wake-up is ever lost.

Taking the event also arms the notifier: a wake-up reaches the loop only if a
task has looked since the last one.  A busy reader therefore costs no wake-ups
at all (it finds the data when it polls), which matters at one wake-up per SSH
packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..ssh.engine import Pending

T = TypeVar("T")
log = logging.getLogger("wraith")


class Notifier:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._event = asyncio.Event()
        self._armed = True

    def wake(self) -> None:
        """Thread-safe and cheap; repeated calls before the loop runs coalesce."""
        if not self._armed:
            return
        self._armed = False
        if threading.get_ident() == self._thread:
            # From the loop's own thread (the Sans-IO engine always is): set the
            # event now, with no trip through the loop's self-pipe.
            self._fire()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def event(self) -> asyncio.Event:
        """The event the next wake-up sets; take it *before* polling the engine."""
        self._armed = True
        return self._event

    async def poll(self, check: Callable[[], T | None]) -> T:
        while True:
            event = self.event()
            value = check()
            if value is not None:
                return value
            await event.wait()


async def wait_pending(pending: Pending[T]) -> T:
    """Wait for an engine operation and return its result (or raise its error)."""
    notifier = Notifier()
    pending.set_waker(notifier.wake)
    try:
        await notifier.poll(lambda: True if pending.done else None)
    except BaseException:
        pending.abandon()  # cancelled: a channel that opens later is closed at once
        raise
    finally:
        pending.set_waker(None)
    return pending.result()


async def guarded(what: str, aw: Awaitable[Any]) -> None:
    """Run one connection's task so that its failure stays its own.

    Only the exception's type is logged: messages from the network stack can
    name the destination, and destinations never reach the logs.
    """
    try:
        await aw
    except Exception as exc:
        log.warning("%s failed: %s", what, type(exc).__name__)
