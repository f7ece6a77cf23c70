"""The auth log line: one stable, fail2ban-friendly line per attempt.

Format (text)::

    auth result=failure method=publickey user="alice" src=203.0.113.9 port=50122 \
fingerprint=SHA256:... reason=unknown-key

``result`` is ``success``, ``failure`` (counts toward bans; what fail2ban
matches) or ``probe`` (a ``none`` request: clients send it to learn the methods,
so it is not an attack and is never matched).  ``user`` is quoted with
non-printable characters escaped so that a hostile user name cannot forge a
second line or fake a field.  The fields are also attached to the log record
(``record.auth``) for ``--log-format json``.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("wraith.auth")


class _Result(Protocol):
    @property
    def accepted(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...


def quote(value: str, limit: int = 64) -> str:
    """Quote an untrusted string for a log line: printable ASCII only, bounded."""
    out = []
    for ch in value[:limit]:
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 < ord(ch) < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch) & 0xFF:02x}" if ord(ch) < 256 else "?")
    if len(value) > limit:
        out.append("...")
    return '"' + "".join(out) + '"'


def log_auth(*, method: str, username: str, source: tuple[str, int], result: _Result) -> str:
    """Log one attempt; return its ``result`` field (``failure`` feeds the rate limiter)."""
    if result.accepted:
        outcome = "success"
    elif method == "none":
        outcome = "probe"
    else:
        outcome = "failure"
    fields = {
        "result": outcome,
        "method": method,
        "user": username,
        "src": source[0],
        "port": source[1],
        "fingerprint": result.fingerprint or "-",
        "reason": result.reason,
    }
    log.log(
        logging.INFO if outcome != "failure" else logging.WARNING,
        "auth result=%s method=%s user=%s src=%s port=%d fingerprint=%s reason=%s",
        outcome,
        method,
        quote(username),
        source[0],
        source[1],
        fields["fingerprint"],
        result.reason,
        extra={"auth": fields},
    )
    return outcome


def clean_text(value: str, limit: int = 200) -> str:
    """Peer-supplied free text (a disconnect reason) for a log line: printable ASCII,
    spaces kept, everything else escaped, so it can never start a forged line."""
    out = []
    for ch in value[:limit]:
        out.append(ch if 0x20 <= ord(ch) < 0x7F else f"\\x{ord(ch) & 0xFF:02x}")
    if len(value) > limit:
        out.append("...")
    return "".join(out)


def log_token(text: str, limit: int = 40) -> str:
    """A short peer-supplied token (a channel type, say), safe for a log line."""
    clean = "".join(c if 0x20 < ord(c) < 0x7F else "?" for c in text[:limit])
    return clean or "?"
