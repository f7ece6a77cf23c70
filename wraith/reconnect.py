"""The client's reconnect decisions, shared by both drivers.

The drivers only sleep and dial; this says how long to sleep, what to log, and
which failures end the client for good:

- a host key that no longer matches ends it (exit 5 from the CLI): that is
  either a reinstalled server or someone in the middle, and retrying would
  only hide it;
- everything else (refused or unreachable server, a handshake cut short, an
  authentication failure after a session had existed) is logged with its
  reason and retried with :class:`wraith.proto.backoff.Backoff`.

Log lines name the attempt number and the reason, never a tunnel destination.
"""

from __future__ import annotations

import logging

from .config import ClientConfig
from .proto.backoff import Backoff
from .ssh.known_hosts import HostKeyError

log = logging.getLogger("wraith.client")


class Reconnector:
    def __init__(self, cfg: ClientConfig) -> None:
        self.enabled = cfg.reconnect
        self.backoff = Backoff(initial=cfg.reconnect_delay, cap=cfg.reconnect_max_delay)
        #: Attempts since the session was lost.
        self.attempt = 0

    def connected(self, fingerprint: str, now: float) -> None:
        if self.attempt:
            log.info(
                "reconnected after %d attempt%s (%s)",
                self.attempt,
                "" if self.attempt == 1 else "s",
                fingerprint,
            )
        self.attempt = 0
        self.backoff.connected(now)

    def lost(self, reason: str, now: float) -> bool:
        """The session ended; True if the client should reconnect."""
        if not self.enabled:
            log.warning("SSH session lost: %s", reason)
            return False
        self.backoff.lost(now)
        log.warning("SSH session lost: %s; reconnecting", reason)
        return True

    def next_delay(self) -> float:
        delay = self.backoff.next_delay()
        self.attempt += 1
        log.info("reconnect attempt %d in %.1fs", self.attempt, delay)
        return delay

    def failed(self, exc: BaseException) -> bool:
        """An attempt failed; True if that ends the client."""
        if isinstance(exc, HostKeyError):
            log.error("reconnect attempt %d: %s; giving up", self.attempt, exc)
            return True
        text = str(exc) or type(exc).__name__
        log.warning("reconnect attempt %d failed: %s", self.attempt, text)
        return False
