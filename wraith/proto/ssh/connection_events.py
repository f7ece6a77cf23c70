"""Events of the SSH connection protocol (RFC 4254), as Wraith uses it: TCP tunnels.

Everything :mod:`wraith.proto.ssh.connection` hands to its caller is here:
frozen, keyword-only dataclasses that validate in their constructor (raising
``LocalProtocolError``).  ``NEED_DATA`` (shared by every layer) and the channel
open failure codes (:class:`OpenFailure`, shared with the paramiko engine) are
re-exported.

Channel events carry our own ``channel_id``; the peer's ids never leave the
layer.  Global request events carry a ``request_id`` that the layer made up,
because the protocol has none: replies are matched by order.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LocalProtocolError
from ..tunnel import OpenFailure
from .events_common import NEED_DATA, NeedData

__all__ = [
    "DIRECT_TCPIP",
    "FORWARDED_TCPIP",
    "NEED_DATA",
    "CancelForwardRequest",
    "ChannelClosed",
    "ChannelData",
    "ChannelEOF",
    "ChannelOpenConfirmed",
    "ChannelOpenFailed",
    "ChannelOpenRefused",
    "ChannelOpenRequest",
    "ConnectionEvent",
    "ForwardRequest",
    "GlobalReply",
    "NeedData",
    "OpenFailure",
    "WindowAdjusted",
]

#: A client asks the server to connect to a host and port (``-L``, ``-D``, ``-W``).
DIRECT_TCPIP = "direct-tcpip"
#: The server hands the client a connection accepted on a ``-R`` listener.
FORWARDED_TCPIP = "forwarded-tcpip"

_U32_MAX = 0xFFFFFFFF


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value <= _U32_MAX:
        raise LocalProtocolError(f"{name} must be a uint32, got {value}")


def _check_port(name: str, value: int) -> None:
    if not 0 <= value <= 65535:
        raise LocalProtocolError(f"{name} must be 0..65535, got {value}")


# --- channels -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChannelOpenRequest:
    """The peer wants a TCP channel; answer with ``accept_open`` or ``reject_open``.

    For ``direct-tcpip`` (server side) ``host``:``port`` is where to connect; for
    ``forwarded-tcpip`` (client side) it is the address and port the server
    listened on.  ``origin_*`` is where the connection came from, as the peer
    says.  Names are passed as sent, unresolved and unvalidated: checking them
    is the engine's job.  The open stays unconfirmed until the answer, so a
    slow dial delays only its own channel.
    """

    channel_id: int
    kind: str
    host: str
    port: int
    origin_host: str
    origin_port: int
    peer_window: int
    peer_max_packet: int

    def __post_init__(self) -> None:
        _check_u32("channel_id", self.channel_id)
        if self.kind not in (DIRECT_TCPIP, FORWARDED_TCPIP):
            raise LocalProtocolError(f"not a TCP channel type: {self.kind!r}")
        _check_port("port", self.port)
        _check_port("origin_port", self.origin_port)
        _check_u32("peer_window", self.peer_window)
        _check_u32("peer_max_packet", self.peer_max_packet)


@dataclass(frozen=True, kw_only=True)
class ChannelOpenRefused:
    """The layer refused a peer's open by itself (for the log); OPEN_FAILURE was sent."""

    kind: str
    code: OpenFailure
    description: str


@dataclass(frozen=True, kw_only=True)
class ChannelOpenConfirmed:
    """The peer confirmed our ``open_channel``; data may flow."""

    channel_id: int

    def __post_init__(self) -> None:
        _check_u32("channel_id", self.channel_id)


@dataclass(frozen=True, kw_only=True)
class ChannelOpenFailed:
    """The peer refused our ``open_channel``; the id is already free.

    ``code`` is the RFC 4254 reason (an :class:`OpenFailure` value when it is
    one of the four standard codes), ``description`` the peer's text.
    """

    channel_id: int
    code: int
    description: str

    def __post_init__(self) -> None:
        _check_u32("channel_id", self.channel_id)
        _check_u32("code", self.code)


@dataclass(frozen=True, kw_only=True)
class ChannelData:
    """Bytes from the peer.  Call ``consume(channel_id, n)`` once they are delivered.

    ``data`` is ``bytes``, or a read-only ``memoryview`` of the decrypted
    packet when the transport handed the payload over without a copy.
    """

    channel_id: int
    data: bytes | memoryview

    def __post_init__(self) -> None:
        _check_u32("channel_id", self.channel_id)
        if not self.data:
            raise LocalProtocolError("ChannelData carries at least one byte (b'' is EOF)")


@dataclass(frozen=True, kw_only=True)
class WindowAdjusted:
    """The peer opened its window after a ``send_data`` that could not take everything."""

    channel_id: int

    def __post_init__(self) -> None:
        _check_u32("channel_id", self.channel_id)


@dataclass(frozen=True, kw_only=True)
class ChannelEOF:
    """The peer will send no more data (half-close); we may still send."""

    channel_id: int

    def __post_init__(self) -> None:
        _check_u32("channel_id", self.channel_id)


@dataclass(frozen=True, kw_only=True)
class ChannelClosed:
    """Both sides sent CLOSE: the channel is gone and its id is free."""

    channel_id: int

    def __post_init__(self) -> None:
        _check_u32("channel_id", self.channel_id)


# --- global requests ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ForwardRequest:
    """Server side: ``tcpip-forward``: listen on ``address``:``port`` (0: any port).

    Answer with ``reply_global(request_id, success, bound_port)``, also when
    ``want_reply`` is false (then nothing is sent, but the layer records the
    forward).  Replies go out in the order the requests came in.
    """

    request_id: int
    address: str
    port: int
    want_reply: bool

    def __post_init__(self) -> None:
        _check_port("port", self.port)


@dataclass(frozen=True, kw_only=True)
class CancelForwardRequest:
    """Server side: ``cancel-tcpip-forward`` for a forward granted earlier.

    Only cancels that match a live forward reach the caller; the others are
    refused by the layer.  Answer with ``reply_global(request_id, success)``.
    """

    request_id: int
    address: str
    port: int
    want_reply: bool

    def __post_init__(self) -> None:
        _check_port("port", self.port)


@dataclass(frozen=True, kw_only=True)
class GlobalReply:
    """The peer answered our global request ``request_id``.

    ``bound_port`` is set for a granted ``tcpip-forward``: the port the server
    chose when we asked for 0, else the port we asked for.
    """

    request_id: int
    success: bool
    bound_port: int | None

    def __post_init__(self) -> None:
        if self.bound_port is not None:
            _check_port("bound_port", self.bound_port)


ConnectionEvent = (
    ChannelOpenRequest
    | ChannelOpenRefused
    | ChannelOpenConfirmed
    | ChannelOpenFailed
    | ChannelData
    | WindowAdjusted
    | ChannelEOF
    | ChannelClosed
    | ForwardRequest
    | CancelForwardRequest
    | GlobalReply
)
