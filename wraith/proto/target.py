"""Parse ``wraith connect`` targets and ``--listen`` URLs.

A target is ``[user@]host[:port]`` or ``SCHEME://[user@]host[:port]``; IPv6
literals go in brackets (``[::1]:2222``).  Schemes: ``tcp`` (the default;
port 2222) and ``tls`` (SSH inside TLS; port 443).  Later transports (quic,
iroh) add theirs here, so the CLI and the library agree on one grammar.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .errors import RemoteProtocolError

DEFAULT_PORT = 2222
SCHEMES = ("tcp", "tls")
#: Listeners may also be ``http://``: ACME HTTP-01 challenges and redirects only.
LISTEN_SCHEMES = (*SCHEMES, "http")
#: The port a scheme implies when the target names none.
SCHEME_PORTS = {"tcp": DEFAULT_PORT, "tls": 443, "http": 80}


class TargetError(RemoteProtocolError):
    """A target or listen URL is malformed; the message says how."""


@dataclass(frozen=True, kw_only=True)
class Target:
    scheme: str
    host: str
    port: int
    user: str | None = None

    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{self.scheme}://{user}{self.hostport()}"


def parse_target(
    text: str, *, default_port: int | None = None, allow_user: bool = True, listen: bool = False
) -> Target:
    """Parse ``[scheme://][user@]host[:port]``; ``listen`` allows port 0 (pick a free port)."""
    original = text
    if not text or text != text.strip():
        raise TargetError(f"invalid target {original!r}: empty or surrounded by spaces")
    scheme = "tcp"
    if "://" in text:
        scheme, text = text.split("://", 1)
        scheme = scheme.lower()
        schemes = LISTEN_SCHEMES if listen else SCHEMES
        if scheme not in schemes:
            raise TargetError(
                f"invalid target {original!r}: unknown scheme {scheme!r} "
                f"(supported: {', '.join(schemes)})"
            )
    user: str | None = None
    if "@" in text:
        if not allow_user:
            raise TargetError(f"invalid address {original!r}: a user name is not allowed here")
        user, text = text.rsplit("@", 1)
        if not user:
            raise TargetError(f"invalid target {original!r}: empty user name")
    if text.endswith("/"):
        text = text[:-1]
    port = default_port if default_port is not None else SCHEME_PORTS[scheme]
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise TargetError(f"invalid target {original!r}: unclosed '['")
        host = text[1:end]
        rest = text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise TargetError(f"invalid target {original!r}: junk after ']'")
            port = _port(rest[1:], original, listen)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise TargetError(
                f"invalid target {original!r}: {host!r} is not an IPv6 address"
            ) from None
    elif text.count(":") > 1:
        # A bare IPv6 literal without a port, as ssh accepts it.
        host = text
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise TargetError(
                f"invalid target {original!r}: put IPv6 addresses in brackets, e.g. [::1]:2222"
            ) from None
    else:
        host, sep, port_text = text.partition(":")
        if sep:
            port = _port(port_text, original, listen)
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise TargetError(f"invalid target {original!r}: bad host name")
    return Target(scheme=scheme, host=host, port=port, user=user)


def _port(text: str, original: str, listen: bool = False) -> int:
    low = 0 if listen else 1
    if not text.isdigit() or not low <= int(text) < 65536:
        raise TargetError(f"invalid target {original!r}: port must be {low}-65535")
    return int(text)
