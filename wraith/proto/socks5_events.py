"""Events, codes and the error type of SOCKS5 (RFC 1928, RFC 1929).

Everything :mod:`wraith.proto.socks5` hands to a driver lives here: the reply
and address-type codes, the ``NEED_DATA`` sentinel, :class:`SocksError` and the
two events.  Events are frozen keyword-only dataclasses that validate in their
constructor, so a driver can never hold a ``ConnectRequest`` that could not
have come off the wire.  A constructor raises ``LocalProtocolError``; the
parsers check the same rules first and raise :class:`SocksError` instead,
because there the bad value came from the peer.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from wraith.proto.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "NEED_DATA",
    "AddressType",
    "ConnectRequest",
    "Connected",
    "NeedData",
    "Reply",
    "SocksError",
]


class Reply(enum.IntEnum):
    """The REP field of a SOCKS5 reply (RFC 1928 section 6)."""

    #: The request was granted; the stream is now tunnelled.
    SUCCEEDED = 0
    #: General SOCKS server failure; also used for malformed requests.
    GENERAL_FAILURE = 1
    #: Connection not allowed by ruleset (policy or authentication refused it).
    NOT_ALLOWED = 2
    #: Network unreachable.
    NETWORK_UNREACHABLE = 3
    #: Host unreachable; also sent for DNS failures and connect timeouts.
    HOST_UNREACHABLE = 4
    #: Connection refused by the destination.
    CONNECTION_REFUSED = 5
    #: TTL expired.
    TTL_EXPIRED = 6
    #: The command (BIND, UDP ASSOCIATE, or unknown) is not supported.
    COMMAND_NOT_SUPPORTED = 7
    #: The ATYP field named an address type we do not know.
    ADDRESS_TYPE_NOT_SUPPORTED = 8


class AddressType(enum.IntEnum):
    """The ATYP field of a SOCKS5 request or reply."""

    #: Four bytes of IPv4 address.
    IPV4 = 1
    #: A length byte followed by a domain name, resolved by the server (socks5h).
    DOMAIN = 3
    #: Sixteen bytes of IPv6 address.
    IPV6 = 4


class NeedData(enum.Enum):
    """Type of the :data:`NEED_DATA` sentinel (an enum so mypy can narrow on it)."""

    #: ``next_event()`` needs more bytes before it can say anything.
    NEED_DATA = enum.auto()


NEED_DATA = NeedData.NEED_DATA


class SocksError(RemoteProtocolError):
    """The peer broke SOCKS5, or (client side) the proxy refused the request.

    ``reply`` is the reply code the server sent (client side), or the one that
    fits the failure (server side).  Whether the server already queued a reply
    depends on whether the protocol has one for that failure; the server
    documents which.
    """

    def __init__(self, msg: str, reply: Reply = Reply.GENERAL_FAILURE) -> None:
        super().__init__(msg)
        self.reply = reply


def _check_host(
    host: str, address_type: AddressType, error: type[Exception] = LocalProtocolError
) -> None:
    """Raise ``error`` unless ``host`` is a valid text form for ``address_type``."""
    if address_type is AddressType.DOMAIN:
        if not 1 <= len(host) <= 255:
            raise error(f"SOCKS5 domain name must be 1..255 bytes, got {len(host)}")
        # Printable ASCII without space: anything else cannot be a host name
        # and would let a peer smuggle NULs or newlines into logs and resolvers.
        if not all("!" <= c <= "~" for c in host):
            # The name stays out of the message: messages reach logs, names must not.
            raise error("SOCKS5 domain name has non-printable or non-ASCII characters")
        return
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise error(f"not an {address_type.name} address") from None
    if (address_type is AddressType.IPV4) != (addr.version == 4):
        raise error(f"not an {address_type.name} address")
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        raise error("SOCKS5 cannot carry an IPv6 scope id")


@dataclass(frozen=True, kw_only=True)
class ConnectRequest:
    """Server side: the client asked to CONNECT to ``host``:``port``.

    ``host`` is dotted-quad for IPv4, plain text without brackets for IPv6
    (``"::1"``), and the name exactly as sent for a domain (not resolved).
    The driver answers with :meth:`SocksServer.reply`.
    """

    host: str
    port: int
    address_type: AddressType

    def __post_init__(self) -> None:
        if not isinstance(self.address_type, AddressType):
            raise LocalProtocolError(
                f"address_type must be an AddressType, not {self.address_type!r}"
            )
        _check_host(self.host, self.address_type)
        if not 1 <= self.port <= 65535:
            raise LocalProtocolError(f"SOCKS5 CONNECT port must be 1..65535, got {self.port}")


@dataclass(frozen=True, kw_only=True)
class Connected:
    """Client side: the proxy connected us; it reports its bound address."""

    bind_host: str
    bind_port: int

    def __post_init__(self) -> None:
        if not 0 <= self.bind_port <= 65535:
            raise LocalProtocolError(f"bind_port must be 0..65535, got {self.bind_port}")
