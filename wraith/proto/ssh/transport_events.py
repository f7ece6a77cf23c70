"""Events and the error type of the SSH transport layer (RFC 4253).

Everything :class:`wraith.proto.ssh.transport.Transport` hands to its caller
lives here: the events ``next_event()`` returns, the ``NEED_DATA`` sentinel
(re-exported from :mod:`~wraith.proto.ssh.events_common`, one object for every
SSH layer) and :class:`TransportError`, a ``DisconnectError`` that carries the
reason code the transport sent.

Events are frozen keyword-only dataclasses that validate in their constructor,
so a caller never holds one that could not have come off the wire; a bad field
raises ``LocalProtocolError``, because only our own code builds events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wraith.proto.errors import LocalProtocolError
from wraith.proto.ssh.constants import DisconnectReason
from wraith.proto.ssh.events_common import NEED_DATA, DisconnectError, NeedData

__all__ = [
    "NEED_DATA",
    "ConnectionClosed",
    "DisconnectReceived",
    "ExtInfoReceived",
    "HostKeyReceived",
    "KexComplete",
    "NeedData",
    "PayloadReceived",
    "TransportError",
    "TransportEvent",
    "Unimplemented",
    "VersionReceived",
]


class TransportError(DisconnectError):
    """The peer broke the transport protocol; ``reason`` is the DISCONNECT code we sent.

    Raised only from the receive path.  By the time it propagates out of
    ``Transport.next_event()``, the transport has queued a DISCONNECT carrying
    ``reason`` and moved to its terminal ``ERROR`` state, so the composer must
    not send another.
    """


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value < 1 << 32:
        raise LocalProtocolError(f"{name} must fit in 32 bits, got {value}")


@dataclass(frozen=True, kw_only=True)
class VersionReceived:
    """The peer's identification line, without CR LF (``SSH-2.0-OpenSSH_9.2p1 Debian``)."""

    version: str

    def __post_init__(self) -> None:
        if not self.version.startswith(("SSH-2.0-", "SSH-1.99-")):
            raise LocalProtocolError(f"not an SSH-2 version string: {self.version!r}")


@dataclass(frozen=True, kw_only=True)
class HostKeyReceived:
    """Client only: the server proved it holds this host key (the signature over H checked).

    Returned before the client sends its NEWKEYS.  The caller checks the blob
    against its pins or known_hosts and calls ``disconnect()`` if it does not
    trust it; nothing more is sent until ``next_event()`` is called again.
    """

    key_blob: bytes

    def __post_init__(self) -> None:
        if not self.key_blob:
            raise LocalProtocolError("host key blob is empty")


@dataclass(frozen=True, kw_only=True)
class KexComplete:
    """A key exchange finished in both directions; ``first`` for the initial one.

    After the first one, ``send_payload()`` is allowed.  ``session_id`` is
    the H of the first exchange on every later one too.
    """

    first: bool
    session_id: bytes
    kex: str
    cipher_c2s: str
    cipher_s2c: str

    def __post_init__(self) -> None:
        if not self.session_id:
            raise LocalProtocolError("session_id is empty")


@dataclass(frozen=True, kw_only=True)
class ExtInfoReceived:
    """RFC 8308 EXT_INFO: extension name to raw value (``server-sig-algs`` is a name-list)."""

    extensions: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PayloadReceived:
    """A message for the layers above: SERVICE_REQUEST/ACCEPT (5, 6) or number 50..255.

    ``payload`` starts with the message number.  ``seq`` is the packet's
    sequence number, which the upper layer needs if it answers UNIMPLEMENTED
    (``Transport.send_unimplemented(seq)``).  A CHANNEL_DATA payload under an
    AEAD cipher is a read-only ``memoryview`` of its own decrypted buffer
    (no copy); every other payload is ``bytes``.
    """

    payload: bytes | memoryview
    seq: int

    def __post_init__(self) -> None:
        if not self.payload or not (self.payload[0] in (5, 6) or self.payload[0] >= 50):
            raise LocalProtocolError("PayloadReceived carries only message numbers 5, 6 and 50+")
        _check_u32("seq", self.seq)


@dataclass(frozen=True, kw_only=True)
class DisconnectReceived:
    """The peer sent DISCONNECT; ``code`` is usually a :class:`DisconnectReason` value."""

    code: int
    description: str

    def __post_init__(self) -> None:
        _check_u32("code", self.code)

    @property
    def reason_name(self) -> str:
        """The RFC 4250 name of ``code``, or ``"UNKNOWN(n)"``."""
        try:
            return DisconnectReason(self.code).name
        except ValueError:
            return f"UNKNOWN({self.code})"


@dataclass(frozen=True, kw_only=True)
class ConnectionClosed:
    """The peer's byte stream ended (``receive_data(b"")``); ``reason`` says where.

    Terminal: every later ``next_event()`` returns it again, so a loop that
    drains events must stop on it as it stops on ``NEED_DATA``.
    """

    reason: str


@dataclass(frozen=True, kw_only=True)
class Unimplemented:
    """The peer answered our packet number ``seq`` with UNIMPLEMENTED."""

    seq: int

    def __post_init__(self) -> None:
        _check_u32("seq", self.seq)


TransportEvent = (
    VersionReceived
    | HostKeyReceived
    | KexComplete
    | ExtInfoReceived
    | PayloadReceived
    | DisconnectReceived
    | ConnectionClosed
    | Unimplemented
)
