"""Wake-ups from engine threads into the trio loop.

An engine calls :meth:`Notifier.wake` from any thread whenever something may
have changed; tasks take :meth:`Notifier.event` *before* polling the engine and
wait on it only if polling made no progress, so no wake-up is ever lost.

Taking the event also arms the notifier: a wake-up reaches the loop only if a
task has looked since the last one.  A busy reader therefore costs no wake-ups
at all (it finds the data when it polls), which matters at one wake-up per SSH
packet.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio

from ..ssh.engine import Pending

T = TypeVar("T")
log = logging.getLogger("wraith")


class Notifier:
    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        self._event = trio.Event()
        self._armed = True

    def wake(self) -> None:
        """Thread-safe and cheap; repeated calls before the loop runs coalesce."""
        if not self._armed:
            return
        self._armed = False
        if threading.get_ident() == self._thread:
            # From the loop's own thread (the Sans-IO engine always is): set the
            # event now, with no trip through the loop's wake-up socket.
            self._fire()
            return
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._fire, idempotent=True)

    def _fire(self) -> None:
        event, self._event = self._event, trio.Event()
        event.set()

    def event(self) -> trio.Event:
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


async def guarded(what: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run one connection's task so that its failure stays its own.

    Only the exception's type is logged: messages from the network stack can
    name the destination, and destinations never reach the logs.
    """
    try:
        await fn(*args)
    except Exception as exc:
        log.warning("%s failed: %s", what, type(exc).__name__)


@contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise a nursery's lone exception as itself, not as an ExceptionGroup.

    ``connect()`` and ``serve()`` run nurseries around the caller's block; the
    caller (and the CLI's exit codes) expect ``ConnectError`` or
    ``AuthenticationFailed``, not a group holding one.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is group:
            raise
        raise inner from None
