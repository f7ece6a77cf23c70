"""Destination names: the reserved ``wraith-`` namespace, validation, and policy predicates.

A peer asks us to connect somewhere by name (SOCKS5 CONNECT, ``direct-tcpip``).
Before anything resolves or connects, the driver:

1. ``classify()`` s the name: ``wraith-control`` is our control channel, any
   other ``wraith-*`` name is reserved for future use and refused
   ("administratively prohibited: reserved name"), everything else is an
   ordinary destination;
2. ``validate_destination()`` s it, which refuses what no resolver should see
   (NUL, whitespace, over-long names) and returns one canonical spelling, so
   that policy checks and logs all see the same string;
3. applies policy with ``is_loopback()``, ``is_unspecified()`` and
   ``is_link_local_or_metadata()``.

Numeric hosts that are not canonical dotted quads (``127.1``, ``0x7f.0.0.1``,
``2130706433``) are refused outright: ``inet_aton()`` would read them as IP
addresses, and a policy check that saw them as names would be bypassed.
The predicates see only the text; a name can still resolve to a loopback or
metadata address, so a driver enforcing a deny policy must check the
resolved address too.
"""

from __future__ import annotations

import enum
import ipaddress

from wraith.proto.errors import RemoteProtocolError

__all__ = [
    "CONTROL_CHANNEL",
    "RESERVED_PREFIX",
    "Destination",
    "classify",
    "is_link_local_or_metadata",
    "is_loopback",
    "is_unspecified",
    "validate_destination",
]

RESERVED_PREFIX = "wraith-"
CONTROL_CHANNEL = "wraith-control"

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_HEX_DIGITS = frozenset("0123456789abcdef")
_MAX_NAME = 253
_MAX_LABEL = 63

_LINK_LOCAL_V4 = ipaddress.IPv4Network("169.254.0.0/16")
_LINK_LOCAL_V6 = ipaddress.IPv6Network("fe80::/10")
_METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud metadata
    }
)
# Cloud metadata names resolve to 169.254.169.254; catching them by name saves a lookup.
_METADATA_NAMES = frozenset({"metadata.google.internal"})


class Destination(enum.Enum):
    """What a requested destination name means to wraith."""

    #: An ordinary host; subject to the allow/deny policy.
    ALLOWED = "allowed"
    #: ``wraith-control``: open the control channel instead of connecting.
    CONTROL = "control"
    #: Any other ``wraith-*`` name: refused as "administratively prohibited: reserved name".
    RESERVED = "reserved"


def _fold(host: str) -> str:
    """Lower-case, without brackets or one trailing dot: how names compare."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") else host


def classify(host: str) -> Destination:
    """Sort a destination into the reserved namespace or not (case-insensitive).

    A trailing dot is ignored, so ``WRAITH-Control.`` cannot dodge the check.
    """
    folded = _fold(host)
    if folded == CONTROL_CHANNEL:
        return Destination.CONTROL
    if folded.startswith(RESERVED_PREFIX):
        return Destination.RESERVED
    return Destination.ALLOWED


def _is_numeric_label(label: str) -> bool:
    """Would ``inet_aton()`` read this label as a number (decimal, octal or hex)?"""
    if label.startswith("0x"):
        return set(label[2:]) <= _HEX_DIGITS
    return label.isascii() and label.isdigit()


def validate_destination(host: str, port: int) -> str:
    """Check a requested destination and return its canonical host spelling.

    IP literals come back in ``ipaddress`` form (IPv6 compressed, lower-case,
    brackets stripped); IPv6 scope ids are refused, since a remote peer has no
    business naming our interfaces.  Names come back lower-cased, a trailing
    dot kept (it makes the name absolute).  Names are 1..253 characters of
    ``[A-Za-z0-9-_.]`` (underscore is common in real DNS), labels 1..63 and
    not starting or ending with ``-``, and the last label must not be numeric.
    ``port`` must be 1..65535.  Raises ``RemoteProtocolError``.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise RemoteProtocolError(f"destination port must be 1..65535, got {port!r}")
    if not host:
        raise RemoteProtocolError("destination host is empty")
    bracketed = host.startswith("[") and host.endswith("]")
    text = host[1:-1] if bracketed else host
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        if bracketed or "%" in text:
            raise RemoteProtocolError(f"destination {host!r} is not an IPv6 address") from None
    else:
        if isinstance(addr, ipaddress.IPv6Address):
            if addr.scope_id is not None:
                raise RemoteProtocolError(f"destination {host!r} has an IPv6 scope id")
        elif bracketed:
            raise RemoteProtocolError(f"destination {host!r}: only IPv6 goes in brackets")
        return str(addr)
    name = text.lower()
    bare = name[:-1] if name.endswith(".") else name
    if not bare:
        raise RemoteProtocolError(f"destination {host!r} is not a host name")
    if len(bare) > _MAX_NAME:
        raise RemoteProtocolError(f"destination name is longer than {_MAX_NAME} characters")
    labels = bare.split(".")
    for label in labels:
        if not label:
            raise RemoteProtocolError(f"destination {host!r} has an empty label")
        if len(label) > _MAX_LABEL:
            raise RemoteProtocolError(f"destination {host!r} has a label over {_MAX_LABEL} chars")
        if not set(label) <= _NAME_CHARS:
            bad = next(c for c in label if c not in _NAME_CHARS)
            raise RemoteProtocolError(f"destination {host!r} contains {bad!r}")
        if label.startswith("-") or label.endswith("-"):
            raise RemoteProtocolError(f"destination {host!r} has a label starting or ending '-'")
    if _is_numeric_label(labels[-1]):
        raise RemoteProtocolError(f"destination {host!r} is a non-canonical numeric address")
    return name


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` spells, looking through IPv4-mapped IPv6."""
    try:
        addr = ipaddress.ip_address(_fold(host))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        # Compare without the scope id: fe80::1%eth0 is still link-local.
        return ipaddress.IPv6Address(addr.packed)
    return addr


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address or name: 127.0.0.0/8, ``::1``, ``localhost``?

    ``*.localhost`` counts too (RFC 6761 reserves it for loopback).  The
    unspecified addresses do not: as a *bind* address ``0.0.0.0`` means every
    interface.  As a *destination*, though, ``connect()`` to ``0.0.0.0`` or
    ``::`` reaches this host on Linux, so a destination policy that denies
    loopback must deny :func:`is_unspecified` too.
    """
    addr = _address(host)
    if addr is None:
        name = _fold(host)
        return name == "localhost" or name.endswith(".localhost")
    return addr.is_loopback


def is_unspecified(host: str) -> bool:
    """Is ``host`` ``0.0.0.0`` or ``::`` (or IPv4-mapped ``::ffff:0.0.0.0``)?"""
    addr = _address(host)
    return addr is not None and addr.is_unspecified


def is_link_local_or_metadata(host: str) -> bool:
    """Is ``host`` link-local or a cloud metadata service (denied by default)?

    169.254.0.0/16 (which holds 169.254.169.254, the usual metadata address),
    fe80::/10, AWS's ``fd00:ec2::254``, Alibaba's ``100.100.100.200``, and the
    name ``metadata.google.internal``.
    """
    addr = _address(host)
    if addr is None:
        return _fold(host) in _METADATA_NAMES
    if isinstance(addr, ipaddress.IPv4Address):
        return addr in _LINK_LOCAL_V4 or addr in _METADATA_ADDRESSES
    return addr in _LINK_LOCAL_V6 or addr in _METADATA_ADDRESSES
