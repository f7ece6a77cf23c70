"""Reconnect delays: exponential backoff with full jitter, reset after a stable session.

Theory of operation
-------------------
Attempt *n* (counting from 0 since the last reset) waits a uniformly random
time in ``[0, min(cap, initial * 2**n))`` — "full jitter", so that many clients
cut off by the same server restart do not come back in lockstep.  The ceiling
grows until it reaches ``cap`` and stays there: a server that is down for an
hour costs one attempt per ``cap / 2`` seconds on average, never a busy loop.

A session that stayed up for ``stable_after`` seconds resets the sequence, so
the next outage starts again from short delays; a session that dies right
after it came up (a server that crashes on each login, an auth failure after a
key rotation) keeps climbing instead of hammering the server.

The caller passes the clock (``now``) and may pass the random source; nothing
here sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .errors import LocalProtocolError

__all__ = ["DEFAULT_CAP", "DEFAULT_INITIAL", "DEFAULT_STABLE_AFTER", "Backoff"]

#: Ceiling of the first delay, seconds.
DEFAULT_INITIAL = 1.0
#: Largest ceiling any delay can have, seconds.
DEFAULT_CAP = 30.0
#: A session up at least this long resets the backoff, seconds.
DEFAULT_STABLE_AFTER = 60.0


class Backoff:
    def __init__(
        self,
        *,
        initial: float = DEFAULT_INITIAL,
        cap: float = DEFAULT_CAP,
        stable_after: float = DEFAULT_STABLE_AFTER,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not initial > 0:
            raise LocalProtocolError("the initial reconnect delay must be more than 0")
        if not cap >= initial:
            raise LocalProtocolError("the reconnect delay cap must be at least the initial delay")
        if not stable_after >= 0:
            raise LocalProtocolError("stable_after must not be negative")
        self.initial = initial
        self.cap = cap
        self.stable_after = stable_after
        self._rng = rng
        self._attempt = 0
        self._up_since: float | None = None

    @property
    def attempt(self) -> int:
        """Delays handed out since the last reset."""
        return self._attempt

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        # 2**n overflows floats only past n ~ 1000; the cap is reached long before.
        return min(self.cap, self.initial * 2.0 ** min(self._attempt, 64))

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt."""
        delay = self._rng() * self.ceiling()
        self._attempt += 1
        return max(0.0, min(delay, self.cap))

    def connected(self, now: float) -> None:
        """A session is up (from ``now``)."""
        self._up_since = now

    def lost(self, now: float) -> None:
        """The session went down at ``now``; reset if it had been up long enough."""
        if self._up_since is not None and now - self._up_since >= self.stable_after:
            self._attempt = 0
        self._up_since = None

    def reset(self) -> None:
        self._attempt = 0
