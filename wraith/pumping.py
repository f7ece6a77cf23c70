"""What both drivers' pumps do around each read of the SSH connection (no I/O here).

:class:`Reads` sizes the reads (they start small and grow to ``READ_SIZE``
while they come back full, so an idle session does not hold a large buffer),
feeds what a read brought to the session, frees the session's big receive
buffer once the link has been quiet for ``TRIM_AFTER`` seconds, wakes the
writer when the session's timer moved (the engine itself wakes it when there
is output), and says when the reader should yield: direct reads return
without yielding whenever data is there, so after ``YIELD_EVERY`` bytes read
back to back the reader lets the tasks it woke run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .ssh.engine import ByteSession

READ_SIZE = 256 * 1024
#: Reads start at this size; a read smaller than this shrinks them again.
SMALL_READ = 16 * 1024
#: Seconds of small reads after which the link counts as quiet.
TRIM_AFTER = 2.0
#: Bytes read back to back (never waiting) before the reader yields anyway.
YIELD_EVERY = 1024 * 1024


class Reads:
    def __init__(self, session: ByteSession, wake: Callable[[], None]) -> None:
        self.session = session
        self._wake = wake
        #: How much the next read asks for.
        self.want = SMALL_READ
        self._last_big = -math.inf
        self._timer: float | None = None
        self._unyielded = 0

    def buffer(self) -> memoryview | None:
        """Where the next read should land (``None``: read bytes and use :meth:`got`)."""
        return self.session.get_buffer(self.want)

    def filled(self, n: int, now: float) -> bool:
        """``n`` bytes were read into :meth:`buffer`; ``n == 0`` is EOF.  False once done."""
        if not n:
            return self.got(b"", now)
        session = self.session
        session.buffer_filled(n, now)
        if n >= SMALL_READ:
            self._last_big = now
            if n >= self.want // 2:
                self.want = min(READ_SIZE, self.want * 4)  # bulk: read more per call
        else:
            self.want = SMALL_READ
            if now - self._last_big > TRIM_AFTER:
                session.trim()  # no bulk transfer lately: give back the big buffer
        self._unyielded += n
        self._after()
        return True

    def got(self, data: bytes | bytearray, now: float) -> bool:
        """Bytes read some other way (TLS); ``b""`` is EOF.  False once done."""
        self.session.receive_data(data, now)
        if not data:
            self._wake()  # the writer flushes, sees the end and closes
            return False
        self._after()
        return True

    def _after(self) -> None:
        timer = self.session.get_timer()
        if timer != self._timer:
            self._timer = timer
            self._wake()

    @property
    def should_yield(self) -> bool:
        """True (once) after ``YIELD_EVERY`` bytes read without a pause."""
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            return True
        return False
