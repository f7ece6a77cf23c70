"""The server's door: bans after repeated auth failures, and caps on unauthenticated connections.

Both drivers ask the same :class:`Gate` (decisions in :mod:`wraith.proto.ratelimit`,
log lines here):

- :meth:`Gate.admit` at accept time: a banned source, or one over its share of
  unauthenticated connections, is closed before the SSH banner, so it costs
  one ``accept()`` and nothing more;
- :meth:`Gate.auth_failed` for every ``result=failure`` auth line; the failure
  that trips the ban ends that session at once;
- :meth:`Gate.release` once a connection authenticated or closed, exactly once.

The ban line is ``ban src=IP failures=N window=S ban=S`` and the refusal line
``refused src=IP port=P: reason``; neither matches the fail2ban filter, which
counts the auth lines themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .proto import ratelimit

log = logging.getLogger("wraith.server")


@dataclass(frozen=True, kw_only=True)
class GateSettings:
    #: Failed authentications within ``failure_window`` that ban a source; 0 disables bans.
    ban_after: int = ratelimit.DEFAULT_MAX_FAILURES
    failure_window: float = ratelimit.DEFAULT_FAILURE_WINDOW
    ban_time: float = ratelimit.DEFAULT_BAN_TIME
    #: Unauthenticated connections allowed per source (IPv4 address or IPv6 /64).
    max_unauth_per_source: int = ratelimit.DEFAULT_PREAUTH_PER_SOURCE
    #: Unauthenticated connections allowed in total.
    max_unauth: int = ratelimit.DEFAULT_PREAUTH_TOTAL


class Gate:
    def __init__(self, settings: GateSettings | None = None) -> None:
        s = settings or GateSettings()
        self.settings = s
        self._bans = (
            ratelimit.AuthRateLimiter(
                max_failures=s.ban_after, window=s.failure_window, ban_time=s.ban_time
            )
            if s.ban_after
            else None
        )
        self._preauth = ratelimit.PreAuthLimiter(
            per_source=s.max_unauth_per_source, total=s.max_unauth
        )

    @property
    def unauthenticated(self) -> int:
        return self._preauth.unauthenticated

    def admit(self, peer: tuple[str, int], now: float) -> bool:
        """May this new connection proceed?  If True, :meth:`release` it later."""
        ip, port = peer
        if self._bans is not None:
            left = self._bans.banned_for(ip, now)
            if left > 0:
                log.info("refused src=%s port=%d: banned for %.0fs more", ip, port, left)
                return False
        why = self._preauth.admit(ip)
        if why is not None:
            log.info("refused src=%s port=%d: %s", ip, port, why)
            return False
        return True

    def release(self, peer: tuple[str, int]) -> None:
        """The admitted connection authenticated or ended."""
        self._preauth.release(peer[0])

    def auth_failed(self, peer: tuple[str, int], now: float) -> bool:
        """Count a failed attempt; True if the source is banned now (end the session)."""
        if self._bans is None:
            return False
        ip = peer[0]
        if self._bans.record_failure(ip, now):
            s = self.settings
            log.warning(
                "ban src=%s failures=%d window=%.0fs ban=%.0fs",
                ip,
                s.ban_after,
                s.failure_window,
                s.ban_time,
            )
            return True
        return self._bans.is_banned(ip, now)
