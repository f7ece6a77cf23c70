"""Decisions about tunnelled connections that both I/O backends share.

The drivers dial destinations and open channels; what a failure *means* on the
wire (which SSH open-failure reason, which SOCKS reply) is decided here, once.
Our server sends the stable descriptions below, and our client maps them (and
OpenSSH's strerror texts) back to the precise RFC 1928 reply code.
"""

from __future__ import annotations

import enum
import errno as _errno
from collections.abc import Callable, Iterable

from .names import is_link_local_or_metadata
from .socks5 import Reply


class OpenFailure(enum.IntEnum):
    """RFC 4254 section 5.1 channel open failure reason codes."""

    #: The server's policy forbids this destination (reserved name, permitopen, ...).
    ADMINISTRATIVELY_PROHIBITED = 1
    #: The destination could not be reached (refused, unreachable, DNS failure, timeout).
    CONNECT_FAILED = 2
    #: The channel type is not served.
    UNKNOWN_CHANNEL_TYPE = 3
    #: Out of channels or other resources.
    RESOURCE_SHORTAGE = 4


#: Descriptions our server sends with CONNECT_FAILED.  Stable: clients map them.
REFUSED = "connection refused"
NET_UNREACHABLE = "network unreachable"
HOST_UNREACHABLE = "host unreachable"
NAME_NOT_FOUND = "name resolution failed"
TIMED_OUT = "connect timed out"
RESERVED_NAME = "administratively prohibited: reserved name"
NOT_PERMITTED = "administratively prohibited: not permitted by policy"
INVALID_DESTINATION = "administratively prohibited: invalid destination"
LINK_LOCAL_DENIED = "administratively prohibited: link-local and metadata addresses are denied"


def screen_addresses(
    addresses: Iterable[str], allowed: Callable[[str], bool]
) -> tuple[list[str], str | None]:
    """Which of a destination's resolved addresses a tunnel may dial, before any dial.

    Returns the usable addresses (in order, without repeats) and, if any address
    was screened out, the open-failure text that explains it: link-local and
    metadata addresses are never dialled, and ``allowed`` (the
    ``--allow-dest``/``--deny-dest`` policy) has the last word on the rest.
    Nothing is dialled that the policy refuses, so a refused destination never
    sees a connection attempt.
    """
    usable: list[str] = []
    why: str | None = None
    for address in addresses:
        if is_link_local_or_metadata(address):
            why = LINK_LOCAL_DENIED
        elif not allowed(address):
            why = why or NOT_PERMITTED
        elif address not in usable:
            usable.append(address)
    return usable, why


def describe_dial_error(err: int | None, *, dns: bool = False, timeout: bool = False) -> str:
    """The open-failure description for a failed dial (errno, DNS error or timeout)."""
    if timeout or err == _errno.ETIMEDOUT:
        return TIMED_OUT
    if dns:
        return NAME_NOT_FOUND
    if err == _errno.ECONNREFUSED:
        return REFUSED
    if err == _errno.ENETUNREACH:
        return NET_UNREACHABLE
    if err in (_errno.EHOSTUNREACH, _errno.EHOSTDOWN, _errno.EADDRNOTAVAIL):
        return HOST_UNREACHABLE
    return HOST_UNREACHABLE


def socks_reply_for_open_failure(code: int, description: str) -> Reply:
    """Map an SSH channel-open failure to the RFC 1928 reply a SOCKS client gets."""
    text = description.lower()
    if code == OpenFailure.ADMINISTRATIVELY_PROHIBITED:
        return Reply.NOT_ALLOWED
    if code != OpenFailure.CONNECT_FAILED:
        return Reply.GENERAL_FAILURE
    if "refused" in text:
        return Reply.CONNECTION_REFUSED
    if "network" in text and "unreachable" in text:
        return Reply.NETWORK_UNREACHABLE
    if "timed out" in text or "timeout" in text:
        return Reply.TTL_EXPIRED
    if "unreachable" in text or "name" in text or "resolv" in text or "not known" in text:
        return Reply.HOST_UNREACHABLE
    return Reply.GENERAL_FAILURE
