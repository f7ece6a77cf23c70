"""Rate limits on who may try to log in: a fail2ban-style ban and a pre-auth connection cap.

Theory of operation
-------------------
Every address is first folded into the *bucket* it counts in (``source_key``):
an IPv4 host is its own bucket, but an IPv6 host owns a whole /64, so an
attacker cannot dodge a ban by walking through the addresses of its prefix.

``AuthRateLimiter`` is fail2ban inside the server.  Each bucket keeps the
times of its recent failed authentications (at most ``max_failures`` of them);
a failure stops counting once it is ``window`` seconds old.  The failure that
brings the count in the window to ``max_failures`` bans the bucket for
``ban_time`` seconds and clears its history.  Failures while banned are not
counted and do not extend the ban, and a successful login does not forgive
earlier failures, both as in fail2ban.

Memory is bounded by ``max_tracked`` buckets, because the addresses come from
the network.  Two ordered maps make every eviction O(1): failure histories in
order of their latest failure, bans in order of their end (with a monotonic
clock and one ``ban_time``, the order they were made).  Making room first
drops expired bans, then the history whose latest failure is oldest (the
first to expire, so an expired history always goes before a live one); a
live ban is only dropped (the one ending soonest) when every bucket held is
a ban.

``PreAuthLimiter`` caps the connections that have not authenticated yet, per
bucket and in total, so one source cannot hold every pre-auth slot.  The driver
calls ``admit()`` on accept and ``release()`` once the connection has
authenticated or closed; buckets at zero are deleted, so it holds at most
``total`` buckets.

Time is passed in: every method takes ``now``, in monotonic seconds, and the
driver reads the clock.  ``AuthRateLimiter`` never lets its clock step back (an
earlier ``now`` is taken as the latest one seen), so its ordered maps stay
ordered whatever the caller passes.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict, deque

from wraith.proto.errors import LocalProtocolError

__all__ = [
    "DEFAULT_BAN_TIME",
    "DEFAULT_FAILURE_WINDOW",
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_MAX_TRACKED",
    "DEFAULT_PREAUTH_PER_SOURCE",
    "DEFAULT_PREAUTH_TOTAL",
    "REFUSED_PER_SOURCE",
    "REFUSED_TOTAL",
    "AuthRateLimiter",
    "PreAuthLimiter",
    "source_key",
]

#: Failed authentications in one window that earn a ban (fail2ban's ``maxretry``).
DEFAULT_MAX_FAILURES = 5
#: Seconds a failure keeps counting (fail2ban's ``findtime``, 10 minutes).
DEFAULT_FAILURE_WINDOW = 600.0
#: Seconds a ban lasts (fail2ban's ``bantime``, 15 minutes).
DEFAULT_BAN_TIME = 900.0
#: Buckets (failure histories plus bans) the ban list holds at most.
DEFAULT_MAX_TRACKED = 65536
#: Unauthenticated connections one bucket may hold at once.
DEFAULT_PREAUTH_PER_SOURCE = 10
#: Unauthenticated connections the server holds at once.
DEFAULT_PREAUTH_TOTAL = 256

#: ``PreAuthLimiter.admit()``'s answer when the source's bucket is full.
REFUSED_PER_SOURCE = "too many unauthenticated connections from this source"
#: ``PreAuthLimiter.admit()``'s answer when the server is full.
REFUSED_TOTAL = "too many unauthenticated connections"

_IPV6_HOST_BITS = 64


def source_key(ip: str) -> str:
    """The bucket ``ip`` counts in: an IPv4 address, an IPv6 /64, or ``ip`` itself.

    An IPv4-mapped IPv6 address (``::ffff:1.2.3.4``, as a dual-stack socket
    reports IPv4 peers) counts as its IPv4 address.  Text that is not an
    address is its own bucket, so the limits still apply to it.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        # Built from the integer, so a scope id (fe80::1%eth0) does not split the bucket.
        prefix = ipaddress.IPv6Address(int(addr) >> _IPV6_HOST_BITS << _IPV6_HOST_BITS)
        return f"{prefix}/{128 - _IPV6_HOST_BITS}"
    return str(addr)


def _count(value: int, what: str) -> int:
    """Constructor-side check of a count: a bad value here is the caller's bug."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LocalProtocolError(f"{what} must be an integer >= 1, got {value!r}")
    return value


def _seconds(value: float, what: str) -> float:
    """Constructor-side check of a duration; infinity is allowed (for ever)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise LocalProtocolError(f"{what} must be a number of seconds > 0, got {value!r}")
    return float(value)


class AuthRateLimiter:
    """Bans a source for ``ban_time`` seconds after ``max_failures`` failures within ``window``."""

    def __init__(
        self,
        *,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window: float = DEFAULT_FAILURE_WINDOW,
        ban_time: float = DEFAULT_BAN_TIME,
        max_tracked: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        self._max_failures = _count(max_failures, "max_failures")
        self._window = _seconds(window, "window")
        self._ban_time = _seconds(ban_time, "ban_time")
        self._max_tracked = _count(max_tracked, "max_tracked")
        #: bucket -> its failure times, oldest first; least recently failed bucket first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        #: bucket -> when its ban ends; the ban ending soonest first.
        self._bans: OrderedDict[str, float] = OrderedDict()
        self._now = -math.inf

    @property
    def tracked(self) -> int:
        """Buckets held: failure histories plus bans; never more than ``max_tracked``."""
        return len(self._failures) + len(self._bans)

    def record_failure(self, ip: str, now: float) -> bool:
        """Count one failed authentication from ``ip``; True if this failure bans its bucket."""
        now = self._clock(now)
        key = source_key(ip)
        if self._ban_left(key, now) > 0.0:
            return False
        history = self._failures.pop(key, None)
        if history is None:
            self._make_room(now)
            history = deque(maxlen=self._max_failures)
        stale = now - self._window
        while history and history[0] <= stale:
            history.popleft()
        history.append(now)
        if len(history) >= self._max_failures:
            # The history is not put back: the ban takes its place in the count.
            self._bans[key] = now + self._ban_time
            return True
        self._failures[key] = history  # at the end: the most recently failed
        return False

    def banned_for(self, ip: str, now: float) -> float:
        """Seconds left on the ban of ``ip``'s bucket, 0.0 if it is not banned."""
        return self._ban_left(source_key(ip), self._clock(now))

    def is_banned(self, ip: str, now: float) -> bool:
        """Whether ``ip``'s bucket is banned at ``now``."""
        return self.banned_for(ip, now) > 0.0

    def _clock(self, now: float) -> float:
        # A clock that steps back would break the order of both maps.
        self._now = max(self._now, now)
        return self._now

    def _ban_left(self, key: str, now: float) -> float:
        until = self._bans.get(key)
        if until is None:
            return 0.0
        if until <= now:
            del self._bans[key]  # expired: forget it
            return 0.0
        return until - now

    def _make_room(self, now: float) -> None:
        """Make room for one more bucket: expired entries go first, bans go last."""
        if self.tracked < self._max_tracked:
            return
        while self._bans and next(iter(self._bans.values())) <= now:
            self._bans.popitem(last=False)
        if self.tracked < self._max_tracked:
            return
        # The history failed longest ago is also the first to expire, so dropping
        # it drops an expired history whenever there is one.
        if self._failures:
            self._failures.popitem(last=False)
        else:
            self._bans.popitem(last=False)


class PreAuthLimiter:
    """Caps connections that have not authenticated yet, per source bucket and in total."""

    def __init__(
        self,
        *,
        per_source: int = DEFAULT_PREAUTH_PER_SOURCE,
        total: int = DEFAULT_PREAUTH_TOTAL,
    ) -> None:
        self._per_source = _count(per_source, "per_source")
        self._total = _count(total, "total")
        #: bucket -> its unauthenticated connections; a bucket at zero is deleted.
        self._counts: dict[str, int] = {}
        self._unauthenticated = 0

    @property
    def unauthenticated(self) -> int:
        """Unauthenticated connections admitted and not yet released, over every bucket."""
        return self._unauthenticated

    def count(self, ip: str) -> int:
        """Unauthenticated connections held by ``ip``'s bucket."""
        return self._counts.get(source_key(ip), 0)

    def admit(self, ip: str) -> str | None:
        """Count a new connection from ``ip``, or return why it is refused (and count nothing)."""
        key = source_key(ip)
        held = self._counts.get(key, 0)
        if held >= self._per_source:
            return REFUSED_PER_SOURCE
        if self._unauthenticated >= self._total:
            return REFUSED_TOTAL
        self._counts[key] = held + 1
        self._unauthenticated += 1
        return None

    def release(self, ip: str) -> None:
        """A connection from ``ip`` authenticated or closed; a release too many is ignored."""
        key = source_key(ip)
        held = self._counts.get(key, 0)
        if held == 0:
            return
        if held == 1:
            del self._counts[key]
        else:
            self._counts[key] = held - 1
        self._unauthenticated -= 1
