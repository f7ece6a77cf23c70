"""The SSH connection protocol (RFC 4254) for TCP tunnels, both roles, on message payloads.

Theory of operation
-------------------
The transport hands this layer decrypted payloads (``receive_payload()``); the
layer answers what needs no decision by itself, queues events for
``next_event()`` and leaves payloads in ``payloads_to_send()``.  Everything that
needs a decision (accepting an open, granting a forward) is an event the caller
answers later, in any order, with a method call: confirmation is deferred by
design, so a slow dial delays only its own channel.

**Channels.**  Each channel has our id (the only id the caller sees) and the
peer's.  Its life is one transition table, ``_CHANNEL_TRANSITIONS``: a received
message that the table does not allow for the channel's state is a protocol
error that ends the connection; a call of ours that it does not allow raises
``LocalProtocolError`` and changes nothing (one channel's misuse does not kill
the others).  An id is freed only once both sides have sent CLOSE; a CLOSE from
the peer is answered with CLOSE at once.  EOF is a half-close.  Only
``direct-tcpip`` (served by the server) and ``forwarded-tcpip`` (served by the
client) channels are opened; every other type is refused by the layer, and
``ChannelOpenRefused`` says so for the log.  Channel requests are refused with
CHANNEL_FAILURE; tunnels have none.

**Flow control.**  Sending: ``send_data`` takes only what the peer's window
allows, cut at the peer's maximum packet, and returns how much it took; it
never buffers, so 0 means "wait for ``WindowAdjusted``".  Receiving: we grant
the peer ``window`` bytes.  ``ChannelData`` events hand the bytes out, and the
window is re-opened only for bytes the caller reports delivered with
``consume()``, once half the window is: a slow reader stops the sender, and a
channel never holds more than its window undelivered.  With ``max_window``
above ``window`` the window autotunes: each re-opening that finds at most a
quarter of it undelivered also doubles it, up to ``max_window``.  A peer
that sends more than the window, or more than ``max_packet`` in one message,
ends the connection.  Extended data (stderr) is counted against the window and
dropped: a TCP tunnel has nowhere to put it.  Data that arrives after we sent
CLOSE is dropped too, but still counted.

**Global requests.**  Replies carry no id, so both directions keep a FIFO.
Incoming requests are answered strictly in the order received: a reply the
caller gives early waits until every earlier request has its answer.  The
layer answers ``keepalive@openssh.com`` and unknown requests itself (with
REQUEST_FAILURE, in order), and remembers the forwards the caller granted, so
a cancel that matches no live forward is refused without bothering it.  Our own
requests get ``request_id``s and their replies come back as ``GlobalReply`` in
the same order.

Errors: the receive path raises only ``RemoteProtocolError`` and leaves the
connection in the terminal ``ERROR`` state; the composer then sends DISCONNECT
(``PROTOCOL_ERROR``).  Feed this layer only :data:`CONNECTION_MESSAGES`; others
(80..127 unassigned) deserve UNIMPLEMENTED from the transport.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import LocalProtocolError, RemoteProtocolError
from .connection_events import (
    DIRECT_TCPIP,
    FORWARDED_TCPIP,
    CancelForwardRequest,
    ChannelClosed,
    ChannelData,
    ChannelEOF,
    ChannelOpenConfirmed,
    ChannelOpenFailed,
    ChannelOpenRefused,
    ChannelOpenRequest,
    ConnectionEvent,
    ForwardRequest,
    GlobalReply,
    OpenFailure,
    WindowAdjusted,
)
from .constants import Msg
from .events_common import NEED_DATA, NeedData
from .wire import Reader, boolean, message, string, uint32

__all__ = [
    "CONNECTION_MESSAGES",
    "MIN_PEER_MAX_PACKET",
    "ChannelState",
    "Connection",
    "ConnectionState",
    "Role",
]

#: The message numbers this layer handles.
CONNECTION_MESSAGES = frozenset(range(Msg.GLOBAL_REQUEST, Msg.CHANNEL_FAILURE + 1))
#: Smallest maximum packet we accept from a peer; below it, cutting our data
#: would take thousands of messages per window.  Real peers announce 16-32 KiB.
MIN_PEER_MAX_PACKET = 256
_U32_MAX = 0xFFFFFFFF
_U32 = struct.Struct(">I")
_MAX_NAME = 64
_MAX_HOST = 1024
_MAX_TEXT = 64 * 1024
#: How many freed channel ids we remember, to let a late WINDOW_ADJUST for one pass.
_FREED_MEMORY = 64
KEEPALIVE = "keepalive@openssh.com"
TCPIP_FORWARD = "tcpip-forward"
CANCEL_TCPIP_FORWARD = "cancel-tcpip-forward"
#: Channel types a peer may ask for that we never serve (refused as prohibited,
#: not as unknown, so the peer's log says what happened).
_NOT_SERVED = frozenset(
    {
        "session",
        "x11",
        "auth-agent@openssh.com",
        "direct-streamlocal@openssh.com",
        "forwarded-streamlocal@openssh.com",
        "tun@openssh.com",
    }
)


class Role(enum.Enum):
    """Which end of the SSH connection we are."""

    #: We opened the TCP connection: we open ``direct-tcpip`` and ask for forwards.
    CLIENT = enum.auto()
    #: We accepted it: we serve ``direct-tcpip`` and open ``forwarded-tcpip``.
    SERVER = enum.auto()


class ConnectionState(enum.Enum):
    """The connection as a whole."""

    #: Carrying channels and global requests.
    OPEN = enum.auto()
    #: Terminal: the peer broke the protocol.
    ERROR = enum.auto()


class ChannelState(enum.Enum):
    """Where one channel is.  A freed channel has no state (``channel_state`` gives None)."""

    #: We sent CHANNEL_OPEN; waiting for confirmation or failure.
    OPENING = enum.auto()
    #: We sent CHANNEL_OPEN and the caller closed it since: CLOSE goes out on confirmation.
    OPENING_CANCELLED = enum.auto()
    #: The peer's CHANNEL_OPEN awaits the caller's ``accept_open`` / ``reject_open``.
    PENDING = enum.auto()
    #: Data flows both ways.
    OPEN = enum.auto()
    #: We sent EOF; the peer may still send.
    EOF_SENT = enum.auto()
    #: The peer sent EOF; we may still send.
    EOF_RECEIVED = enum.auto()
    #: Both sent EOF; only CLOSE is left.
    EOF_BOTH = enum.auto()
    #: We sent CLOSE; waiting for the peer's (its data is counted and dropped).
    CLOSE_SENT = enum.auto()
    #: Both CLOSEs done, or the open failed: the id is free (never stored).
    CLOSED = enum.auto()


class _Ch(enum.Enum):
    RECV_CONFIRM = enum.auto()
    RECV_OPEN_FAILURE = enum.auto()
    RECV_DATA = enum.auto()  # CHANNEL_DATA and CHANNEL_EXTENDED_DATA
    RECV_WINDOW_ADJUST = enum.auto()
    RECV_EOF = enum.auto()
    RECV_CLOSE = enum.auto()
    RECV_REQUEST = enum.auto()
    SEND_CONFIRM = enum.auto()
    SEND_OPEN_FAILURE = enum.auto()
    SEND_DATA = enum.auto()
    SEND_EOF = enum.auto()
    SEND_CLOSE = enum.auto()


_CS = ChannelState
_CHANNEL_TRANSITIONS: dict[tuple[ChannelState, _Ch], ChannelState] = {
    (_CS.OPENING, _Ch.RECV_CONFIRM): _CS.OPEN,
    (_CS.OPENING, _Ch.RECV_OPEN_FAILURE): _CS.CLOSED,
    (_CS.OPENING, _Ch.SEND_CLOSE): _CS.OPENING_CANCELLED,
    (_CS.OPENING_CANCELLED, _Ch.RECV_CONFIRM): _CS.CLOSE_SENT,
    (_CS.OPENING_CANCELLED, _Ch.RECV_OPEN_FAILURE): _CS.CLOSED,
    (_CS.OPENING_CANCELLED, _Ch.SEND_CLOSE): _CS.OPENING_CANCELLED,
    (_CS.PENDING, _Ch.SEND_CONFIRM): _CS.OPEN,
    (_CS.PENDING, _Ch.SEND_OPEN_FAILURE): _CS.CLOSED,
    (_CS.OPEN, _Ch.RECV_DATA): _CS.OPEN,
    (_CS.OPEN, _Ch.RECV_WINDOW_ADJUST): _CS.OPEN,
    (_CS.OPEN, _Ch.RECV_EOF): _CS.EOF_RECEIVED,
    (_CS.OPEN, _Ch.RECV_CLOSE): _CS.CLOSED,
    (_CS.OPEN, _Ch.RECV_REQUEST): _CS.OPEN,
    (_CS.OPEN, _Ch.SEND_DATA): _CS.OPEN,
    (_CS.OPEN, _Ch.SEND_EOF): _CS.EOF_SENT,
    (_CS.OPEN, _Ch.SEND_CLOSE): _CS.CLOSE_SENT,
    (_CS.EOF_SENT, _Ch.RECV_DATA): _CS.EOF_SENT,
    (_CS.EOF_SENT, _Ch.RECV_WINDOW_ADJUST): _CS.EOF_SENT,
    (_CS.EOF_SENT, _Ch.RECV_EOF): _CS.EOF_BOTH,
    (_CS.EOF_SENT, _Ch.RECV_CLOSE): _CS.CLOSED,
    (_CS.EOF_SENT, _Ch.RECV_REQUEST): _CS.EOF_SENT,
    (_CS.EOF_SENT, _Ch.SEND_CLOSE): _CS.CLOSE_SENT,
    (_CS.EOF_RECEIVED, _Ch.RECV_WINDOW_ADJUST): _CS.EOF_RECEIVED,
    (_CS.EOF_RECEIVED, _Ch.RECV_CLOSE): _CS.CLOSED,
    (_CS.EOF_RECEIVED, _Ch.RECV_REQUEST): _CS.EOF_RECEIVED,
    (_CS.EOF_RECEIVED, _Ch.SEND_DATA): _CS.EOF_RECEIVED,
    (_CS.EOF_RECEIVED, _Ch.SEND_EOF): _CS.EOF_BOTH,
    (_CS.EOF_RECEIVED, _Ch.SEND_CLOSE): _CS.CLOSE_SENT,
    (_CS.EOF_BOTH, _Ch.RECV_WINDOW_ADJUST): _CS.EOF_BOTH,
    (_CS.EOF_BOTH, _Ch.RECV_CLOSE): _CS.CLOSED,
    (_CS.EOF_BOTH, _Ch.RECV_REQUEST): _CS.EOF_BOTH,
    (_CS.EOF_BOTH, _Ch.SEND_CLOSE): _CS.CLOSE_SENT,
    # The peer has not seen our CLOSE yet: whatever it sent meanwhile is legal.
    (_CS.CLOSE_SENT, _Ch.RECV_DATA): _CS.CLOSE_SENT,
    (_CS.CLOSE_SENT, _Ch.RECV_WINDOW_ADJUST): _CS.CLOSE_SENT,
    (_CS.CLOSE_SENT, _Ch.RECV_EOF): _CS.CLOSE_SENT,
    (_CS.CLOSE_SENT, _Ch.RECV_REQUEST): _CS.CLOSE_SENT,
    (_CS.CLOSE_SENT, _Ch.RECV_CLOSE): _CS.CLOSED,
    (_CS.CLOSE_SENT, _Ch.SEND_CLOSE): _CS.CLOSE_SENT,
}
#: States in which the peer may still send data, so re-opening its window makes sense.
_PEER_MAY_SEND = frozenset({_CS.OPEN, _CS.EOF_SENT})
#: States in which we may send data.
_WE_MAY_SEND = frozenset({_CS.OPEN, _CS.EOF_RECEIVED})


class _Channel:
    """One channel's bookkeeping.  Invariant while the peer may send:
    ``recv_window + unconsumed + consumed == window``, where ``window`` (what
    we have granted in all) only grows, up to the connection's ``max_window``."""

    __slots__ = (
        "blocked",
        "consumed",
        "kind",
        "local_id",
        "peer_id",
        "peer_id_bytes",
        "peer_max_packet",
        "peer_window",
        "recv_window",
        "state",
        "unconsumed",
        "window",
    )

    def __init__(self, local_id: int, kind: str, state: ChannelState, window: int) -> None:
        self.local_id = local_id
        self.kind = kind
        self.state = state
        self.peer_id = -1
        self.peer_id_bytes = b""
        self.peer_window = 0
        self.peer_max_packet = 0
        self.recv_window = window
        self.window = window
        self.unconsumed = 0
        self.consumed = 0
        self.blocked = False

    def set_peer(self, peer_id: int, window: int, max_packet: int) -> None:
        self.peer_id = peer_id
        self.peer_id_bytes = _U32.pack(peer_id)
        self.peer_window = window
        self.peer_max_packet = max_packet


@dataclass
class _Incoming:
    """A global request from the peer, until its reply has gone out."""

    request_id: int
    name: str
    want_reply: bool
    address: str = ""
    port: int = 0
    reply: bytes | None = None


@dataclass(frozen=True)
class _Outgoing:
    """One of our want-reply global requests, until the peer answers."""

    request_id: int
    name: str
    port: int = 0


class Connection:
    """RFC 4254 for one SSH connection: TCP channels, forwards and keepalives.

    Limits (all constructor arguments):

    - ``max_channels`` (1024): channels alive at once, in any state.  A peer's
      open beyond it is refused with RESOURCE_SHORTAGE; ours raises.
    - ``max_pending_opens`` (256): unanswered opens, per direction.
    - ``max_pending_global`` (64): unanswered global requests, per direction;
      a peer that exceeds it ends the connection.
    - ``window`` (2 MiB): the receive window we grant a channel at first, which
      is also the most it holds undelivered.
    - ``max_window`` (``window``): how far a channel's window may grow.  When
      half the window was delivered and at most a quarter is left undelivered
      (the application keeps up), the WINDOW_ADJUST also doubles the window, up to
      this: a fast stream is not held back by round trips for window space,
      while a channel whose reader lags keeps the window it has.
    - ``growth_budget`` (64 MiB): how much window growth all channels together
      may hold at once (a channel's growth returns to it when it closes), so
      the most a connection holds undelivered stays ``window`` per channel
      plus this.
    - ``max_packet`` (256 KiB): the largest CHANNEL_DATA we accept, as announced;
      the transport must accept packets this big plus framing.
    - ``max_send_packet`` (256 KiB): the largest CHANNEL_DATA we send, whatever
      the peer announced.
    """

    def __init__(
        self,
        role: Role,
        *,
        max_channels: int = 1024,
        max_pending_opens: int = 256,
        max_pending_global: int = 64,
        window: int = 2 * 1024 * 1024,
        max_window: int | None = None,
        growth_budget: int = 64 * 1024 * 1024,
        max_packet: int = 256 * 1024,
        max_send_packet: int = 256 * 1024,
    ) -> None:
        if not isinstance(role, Role):
            raise LocalProtocolError(f"role must be a Role, not {role!r}")
        for name, value in (
            ("max_channels", max_channels),
            ("max_pending_opens", max_pending_opens),
            ("max_pending_global", max_pending_global),
        ):
            if value < 1:
                raise LocalProtocolError(f"{name} must be at least 1, got {value}")
        if not 1 <= window <= _U32_MAX:
            raise LocalProtocolError(f"window must be 1..2**32-1, got {window}")
        if max_window is None:
            max_window = window
        if not window <= max_window <= _U32_MAX:
            raise LocalProtocolError(
                f"max_window must be window ({window})..2**32-1, got {max_window}"
            )
        if growth_budget < 0:
            raise LocalProtocolError(f"growth_budget must be 0 or more, got {growth_budget}")
        for name, value in (("max_packet", max_packet), ("max_send_packet", max_send_packet)):
            if not MIN_PEER_MAX_PACKET <= value <= _U32_MAX:
                raise LocalProtocolError(
                    f"{name} must be {MIN_PEER_MAX_PACKET}..2**32-1, got {value}"
                )
        self.role = role
        self._max_channels = max_channels
        self._max_pending_opens = max_pending_opens
        self._max_pending_global = max_pending_global
        self._window = window
        self._max_window = max_window
        self._growth_left = growth_budget
        self._max_packet = max_packet
        self._max_send_packet = max_send_packet
        self._state = ConnectionState.OPEN
        self._channels: dict[int, _Channel] = {}
        self._peer_ids: dict[int, int] = {}  # peer id -> our id, for live channels
        self._freed: deque[int] = deque(maxlen=_FREED_MEMORY)  # our ids, latest last
        self._next_id = 0
        self._pending_in = 0
        self._pending_out = 0
        self._next_request_id = 0
        self._in_fifo: deque[_Incoming] = deque()  # want-reply requests, in arrival order
        self._awaiting: dict[int, _Incoming] = {}  # requests the caller must answer
        self._out_fifo: deque[_Outgoing] = deque()
        self._forwards: set[tuple[str, int]] = set()  # (address, port) granted, server side
        self._events: deque[ConnectionEvent] = deque()
        self._out: list[bytes] = []
        self._data_sink: Callable[[bytes, memoryview], None] | None = None
        self._data_receiver: Callable[[int, bytes | memoryview], None] | None = None
        self._data_filler: Callable[[bytes, int, Callable[[memoryview], int]], int] | None = None
        self._handlers: dict[int, Callable[[bytes], None]] = {
            Msg.GLOBAL_REQUEST: self._on_global_request,
            Msg.REQUEST_SUCCESS: self._on_global_reply,
            Msg.REQUEST_FAILURE: self._on_global_reply,
            Msg.CHANNEL_OPEN: self._on_open,
            Msg.CHANNEL_OPEN_CONFIRMATION: self._on_open_confirmation,
            Msg.CHANNEL_OPEN_FAILURE: self._on_open_failure,
            Msg.CHANNEL_WINDOW_ADJUST: self._on_window_adjust,
            Msg.CHANNEL_DATA: self._on_data,
            Msg.CHANNEL_EXTENDED_DATA: self._on_extended_data,
            Msg.CHANNEL_EOF: self._on_eof,
            Msg.CHANNEL_CLOSE: self._on_close,
            Msg.CHANNEL_REQUEST: self._on_channel_request,
            Msg.CHANNEL_SUCCESS: self._on_channel_reply,
            Msg.CHANNEL_FAILURE: self._on_channel_reply,
        }

    # -- inspection ------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def channel_count(self) -> int:
        """Channels alive (in any state but freed)."""
        return len(self._channels)

    def channel_state(self, channel_id: int) -> ChannelState | None:
        """The channel's state, or None once its id is free (or was never used)."""
        ch = self._channels.get(channel_id)
        return ch.state if ch is not None else None

    def send_window(self, channel_id: int) -> int:
        """How many bytes ``send_data`` would take right now (0 if it cannot send)."""
        ch = self._channels.get(channel_id)
        if ch is None or ch.state not in _WE_MAY_SEND:
            return 0
        return ch.peer_window

    def live_forwards(self) -> frozenset[tuple[str, int]]:
        """Server side: the ``(address, port)`` forwards granted and not cancelled."""
        return frozenset(self._forwards)

    # -- the Sans-IO surface -----------------------------------------------------

    def payloads_to_send(self) -> list[bytes]:
        """Return and clear the payloads queued for the peer."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> ConnectionEvent | NeedData:
        """The next event, or ``NEED_DATA``."""
        if self._events:
            return self._events.popleft()
        if self._state is ConnectionState.ERROR:
            raise RemoteProtocolError("connection layer is in the ERROR state")
        return NEED_DATA

    def receive_payload(self, payload: bytes | bytearray | memoryview) -> None:
        """Take one payload from the transport; RemoteProtocolError ends the connection."""
        if self._state is ConnectionState.ERROR:
            raise RemoteProtocolError("connection layer is in the ERROR state")
        try:
            if payload and payload[0] == Msg.CHANNEL_DATA:
                self._on_data(payload)  # the hot path: a view stays a view
                return
            data = bytes(payload)
            if not data:
                raise RemoteProtocolError("empty payload")
            handler = self._handlers.get(data[0])
            if handler is None:
                raise RemoteProtocolError(f"message {data[0]} is not a connection message")
            handler(data)
        except RemoteProtocolError:
            self._state = ConnectionState.ERROR
            raise

    # -- channels: our calls -------------------------------------------------------

    @property
    def opens_in_flight_full(self) -> bool:
        """True while ``max_pending_opens`` of our opens await the peer's answer:
        another :meth:`open_channel` would raise; wait for an answer first."""
        return self._pending_out >= self._max_pending_opens

    def open_channel(
        self, kind: str, host: str, port: int, origin_host: str, origin_port: int
    ) -> int:
        """Send CHANNEL_OPEN; returns our channel id.  ``ChannelOpenConfirmed``/``Failed`` follows.

        A client opens ``direct-tcpip``; a server opens ``forwarded-tcpip``
        (``host``:``port`` is then the listener the connection arrived on).
        """
        self._check_open()
        expected = DIRECT_TCPIP if self.role is Role.CLIENT else FORWARDED_TCPIP
        if kind != expected:
            raise LocalProtocolError(f"a {self.role.name.lower()} opens {expected}, not {kind!r}")
        for name, value in (("port", port), ("origin_port", origin_port)):
            if not 0 <= value <= 65535:
                raise LocalProtocolError(f"{name} must be 0..65535, got {value}")
        if len(self._channels) >= self._max_channels:
            raise LocalProtocolError(f"too many channels (max_channels={self._max_channels})")
        if self._pending_out >= self._max_pending_opens:
            raise LocalProtocolError(
                f"too many unanswered channel opens (max_pending_opens={self._max_pending_opens})"
            )
        ch = self._new_channel(kind, _CS.OPENING)
        self._pending_out += 1
        self._out.append(
            message(
                Msg.CHANNEL_OPEN,
                string(kind),
                uint32(ch.local_id),
                uint32(self._window),
                uint32(self._max_packet),
                string(host),
                uint32(port),
                string(origin_host),
                uint32(origin_port),
            )
        )
        return ch.local_id

    def accept_open(self, channel_id: int) -> None:
        """Confirm the peer's open (``ChannelOpenRequest``): data may flow."""
        ch = self._local_move(channel_id, _Ch.SEND_CONFIRM)
        self._pending_in -= 1
        self._out.append(
            message(
                Msg.CHANNEL_OPEN_CONFIRMATION,
                ch.peer_id_bytes,
                uint32(ch.local_id),
                uint32(self._window),
                uint32(self._max_packet),
            )
        )

    def reject_open(self, channel_id: int, code: OpenFailure | int, description: str) -> None:
        """Refuse the peer's open with an RFC 4254 reason code; the id is freed."""
        if not 0 <= int(code) <= _U32_MAX:
            raise LocalProtocolError(f"reason code must be a uint32, got {code}")
        ch = self._local_move(channel_id, _Ch.SEND_OPEN_FAILURE)
        self._pending_in -= 1
        self._free(ch)
        self._out.append(_open_failure(ch.peer_id_bytes, int(code), description))

    def send_data(self, channel_id: int, data: bytes | bytearray | memoryview) -> int:
        """Send as much of ``data`` as the peer's window allows; returns the bytes taken.

        The data is cut into CHANNEL_DATA messages of at most the peer's maximum
        packet (and ``max_send_packet``).  Nothing is buffered: a short count
        means the rest must wait for ``WindowAdjusted``.
        """
        ch = self._local_check(channel_id, _Ch.SEND_DATA)
        view = memoryview(data).cast("B")
        total = len(view)
        n = min(total, ch.peer_window)
        if n < total:
            ch.blocked = True
        if n == 0:
            return 0
        chunk = min(ch.peer_max_packet, self._max_send_packet)
        head = bytes((Msg.CHANNEL_DATA,)) + ch.peer_id_bytes
        sink = self._data_sink
        for start in range(0, n, chunk):
            piece = view[start : min(start + chunk, n)]
            if sink is not None:
                sink(head + _U32.pack(len(piece)), piece)
            else:
                self._out.append(b"".join((head, _U32.pack(len(piece)), piece)))
        ch.peer_window -= n
        return n

    def send_data_into(self, channel_id: int, fill: Callable[[memoryview], int]) -> int:
        """Send one CHANNEL_DATA whose bytes ``fill(view)`` writes into ``view``
        (as much as the peer's window and packet size allow right now) and
        returns the count of: a socket read can land in the outgoing packet.

        Returns ``fill``'s count (0 or less: nothing was sent), or -1 without
        calling ``fill`` when the window is closed (wait for
        ``WindowAdjusted``).  Without a filler (``set_data_filler``) the bytes
        are collected in a buffer of their own first.
        """
        ch = self._local_check(channel_id, _Ch.SEND_DATA)
        room = min(ch.peer_window, ch.peer_max_packet, self._max_send_packet)
        if room <= 0:
            ch.blocked = True
            return -1
        head = bytes((Msg.CHANNEL_DATA,)) + ch.peer_id_bytes
        filler = self._data_filler
        if filler is not None:
            got = filler(head, room, fill)
        else:
            buf = bytearray(room)
            with memoryview(buf) as view:
                got = fill(view)
            if got > 0:
                self._out.append(head + _U32.pack(got) + bytes(buf[:got]))
        if got > room:
            raise LocalProtocolError(f"fill() wrote {got} bytes into room for {room}")
        if got > 0:
            ch.peer_window -= got
        return got

    def set_data_filler(
        self, filler: Callable[[bytes, int, Callable[[memoryview], int]], int] | None
    ) -> None:
        """How ``send_data_into`` frames: ``filler(head, room, fill)`` sends one
        message of ``head``, a uint32 length and ``fill``'s bytes, at once, and
        returns ``fill``'s count.  It must first send what
        ``payloads_to_send()`` holds, so that messages keep their order."""
        self._data_filler = filler

    def set_data_receiver(self, receiver: Callable[[int, bytes | memoryview], None] | None) -> None:
        """Deliver the peer's channel data as ``receiver(channel_id, data)`` calls
        instead of ``ChannelData`` events (``consume()`` still applies)."""
        self._data_receiver = receiver

    def set_data_sink(self, sink: Callable[[bytes, memoryview], None] | None) -> None:
        """Send CHANNEL_DATA through ``sink(head, data)`` at once instead of queueing it.

        ``send_data`` then calls the sink once per message with the message's
        head (number, channel, length) and a view of the caller's data, which
        the sink must copy before it returns.  The sink must first send what
        ``payloads_to_send()`` holds, so that messages keep their order.
        """
        self._data_sink = sink

    def consume(self, channel_id: int, n: int) -> None:
        """Report ``n`` bytes of ``ChannelData`` delivered; may re-open the peer's window.

        A no-op for a channel that is already gone: its bytes need no window.
        """
        ch = self._channels.get(channel_id)
        if ch is None:
            return
        if not 0 <= n <= ch.unconsumed:
            raise LocalProtocolError(
                f"channel {channel_id}: consume({n}) but {ch.unconsumed} bytes are undelivered"
            )
        ch.unconsumed -= n
        ch.consumed += n
        self._maybe_adjust(ch)

    def send_eof(self, channel_id: int) -> None:
        """Half-close: we send no more data on this channel."""
        ch = self._local_move(channel_id, _Ch.SEND_EOF)
        self._out.append(message(Msg.CHANNEL_EOF, ch.peer_id_bytes))

    def close(self, channel_id: int) -> None:
        """Send CLOSE (at once, or on confirmation if our open is still unanswered).

        Idempotent until the id is freed; ``ChannelClosed`` (or, for an open
        that the peer refuses meanwhile, ``ChannelOpenFailed``) follows.
        """
        ch = self._channels.get(channel_id)
        old = ch.state if ch is not None else None
        ch = self._local_move(channel_id, _Ch.SEND_CLOSE)
        if old in (_CS.OPEN, _CS.EOF_SENT, _CS.EOF_RECEIVED, _CS.EOF_BOTH):
            self._out.append(message(Msg.CHANNEL_CLOSE, ch.peer_id_bytes))

    # -- global requests: our calls ----------------------------------------------

    def request_forward(self, address: str, port: int) -> int:
        """Client: ask the server to listen (``-R``); ``GlobalReply`` follows."""
        return self._global_request(TCPIP_FORWARD, address, port)

    def cancel_forward(self, address: str, port: int) -> int:
        """Client: cancel a forward (give the bound port, not 0); ``GlobalReply`` follows."""
        return self._global_request(CANCEL_TCPIP_FORWARD, address, port)

    def send_keepalive(self) -> int:
        """Send ``keepalive@openssh.com`` with want-reply; any ``GlobalReply`` proves liveness."""
        self._check_open()
        self._check_out_room()
        request_id = self._new_request_id()
        self._out_fifo.append(_Outgoing(request_id, KEEPALIVE))
        self._out.append(message(Msg.GLOBAL_REQUEST, string(KEEPALIVE), boolean(True)))
        return request_id

    def reply_global(self, request_id: int, success: bool, bound_port: int | None = None) -> None:
        """Answer a ``ForwardRequest`` or ``CancelForwardRequest``.

        For a granted ``tcpip-forward`` of port 0, ``bound_port`` is the port
        actually bound (required); otherwise leave it None (or equal to the
        requested port).  The reply waits until every earlier request is answered.
        """
        self._check_open()
        request = self._awaiting.get(request_id)
        if request is None:
            raise LocalProtocolError(f"no global request {request_id} awaits an answer")
        port = request.port
        if request.name == TCPIP_FORWARD and success:
            if request.port == 0:
                if bound_port is None or not 1 <= bound_port <= 65535:
                    raise LocalProtocolError(
                        "a granted forward of port 0 needs bound_port 1..65535"
                    )
                port = bound_port
            elif bound_port not in (None, request.port):
                raise LocalProtocolError(f"bound_port {bound_port} differs from the requested port")
        elif bound_port is not None:
            raise LocalProtocolError("bound_port only goes with a granted tcpip-forward")
        del self._awaiting[request_id]
        if request.name == TCPIP_FORWARD and success:
            self._forwards.add((request.address, port))
        elif request.name == CANCEL_TCPIP_FORWARD and success:
            self._forwards.discard((request.address, port))
        if not request.want_reply:
            return
        if not success:
            request.reply = message(Msg.REQUEST_FAILURE)
        elif request.name == TCPIP_FORWARD and request.port == 0:
            request.reply = message(Msg.REQUEST_SUCCESS, uint32(port))
        else:
            request.reply = message(Msg.REQUEST_SUCCESS)
        self._flush_replies()

    # -- internals: helpers --------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is ConnectionState.ERROR:
            raise LocalProtocolError("connection layer is in the ERROR state")

    def _check_out_room(self) -> None:
        if len(self._out_fifo) >= self._max_pending_global:
            raise LocalProtocolError(
                f"too many unanswered global requests (max_pending_global="
                f"{self._max_pending_global})"
            )

    def _new_request_id(self) -> int:
        request_id = self._next_request_id
        self._next_request_id += 1
        return request_id

    def _global_request(self, name: str, address: str, port: int) -> int:
        self._check_open()
        if self.role is not Role.CLIENT:
            raise LocalProtocolError(f"only a client sends {name}")
        if not 0 <= port <= 65535:
            raise LocalProtocolError(f"port must be 0..65535, got {port}")
        self._check_out_room()
        request_id = self._new_request_id()
        self._out_fifo.append(_Outgoing(request_id, name, port))
        self._out.append(
            message(Msg.GLOBAL_REQUEST, string(name), boolean(True), string(address), uint32(port))
        )
        return request_id

    def _new_channel(self, kind: str, state: ChannelState) -> _Channel:
        # Ids count up and wrap, skipping live ones, so a freed id is not reused
        # soon: a late message about an old channel cannot hit a new one.
        local_id = self._next_id
        while local_id in self._channels:
            local_id = (local_id + 1) & _U32_MAX
        self._next_id = (local_id + 1) & _U32_MAX
        ch = _Channel(local_id, kind, state, self._window)
        self._channels[local_id] = ch
        return ch

    def _free(self, ch: _Channel) -> None:
        del self._channels[ch.local_id]
        self._growth_left += ch.window - self._window
        self._freed.append(ch.local_id)
        if self._peer_ids.get(ch.peer_id) == ch.local_id:
            del self._peer_ids[ch.peer_id]
        ch.state = _CS.CLOSED

    def _local_check(self, channel_id: int, event: _Ch) -> _Channel:
        self._check_open()
        ch = self._channels.get(channel_id)
        if ch is None:
            raise LocalProtocolError(f"channel {channel_id} does not exist (or is closed)")
        if (ch.state, event) not in _CHANNEL_TRANSITIONS:
            raise LocalProtocolError(
                f"channel {channel_id}: {event.name} is illegal in {ch.state.name}"
            )
        return ch

    def _local_move(self, channel_id: int, event: _Ch) -> _Channel:
        ch = self._local_check(channel_id, event)
        ch.state = _CHANNEL_TRANSITIONS[(ch.state, event)]
        return ch

    def _remote_move(self, ch: _Channel, event: _Ch) -> ChannelState:
        """Move ``ch`` for a received message; returns the state it was in."""
        old = ch.state
        new = _CHANNEL_TRANSITIONS.get((old, event))
        if new is None:
            raise RemoteProtocolError(
                f"channel {ch.local_id}: {event.name} is illegal in {old.name}"
            )
        ch.state = new
        return old

    def _channel(self, r: Reader) -> _Channel:
        local_id = r.uint32()
        ch = self._channels.get(local_id)
        if ch is None:
            raise RemoteProtocolError(f"message for unknown channel {local_id}")
        return ch

    def _maybe_adjust(self, ch: _Channel) -> None:
        if ch.consumed >= max(1, ch.window >> 1) and ch.state in _PEER_MAY_SEND:
            grant = ch.consumed
            if ch.unconsumed <= ch.window >> 2 and ch.window < self._max_window:
                # The reader keeps up: double the window (autotuning).
                grow = min(ch.window, self._max_window - ch.window, self._growth_left)
                self._growth_left -= grow
                ch.window += grow
                grant += grow
            self._out.append(message(Msg.CHANNEL_WINDOW_ADJUST, ch.peer_id_bytes, uint32(grant)))
            ch.recv_window += grant
            ch.consumed = 0

    def _flush_replies(self) -> None:
        fifo = self._in_fifo
        while fifo and fifo[0].reply is not None:
            reply = fifo.popleft().reply
            assert reply is not None
            self._out.append(reply)

    def _check_peer_id(self, peer_id: int) -> None:
        if peer_id in self._peer_ids:
            raise RemoteProtocolError(f"peer reuses its channel id {peer_id} while it is live")

    def _check_peer_max_packet(self, max_packet: int) -> None:
        if max_packet < MIN_PEER_MAX_PACKET:
            raise RemoteProtocolError(
                f"peer's maximum packet {max_packet} is below {MIN_PEER_MAX_PACKET}"
            )

    # -- internals: channel messages ---------------------------------------------------

    def _on_open(self, payload: bytes) -> None:
        r = Reader(payload, 1)
        kind = r.text(_MAX_NAME)
        peer_id = r.uint32()
        peer_window = r.uint32()
        peer_max_packet = r.uint32()
        self._check_peer_id(peer_id)
        ours = DIRECT_TCPIP if self.role is Role.SERVER else FORWARDED_TCPIP
        if kind != ours:
            r.rest()  # type-specific fields of a type we refuse are not parsed
            self._refuse_open(peer_id, kind, *_refusal_for(kind, self.role))
            return
        host = r.text(_MAX_HOST)
        port = r.uint32()
        origin_host = r.text(_MAX_HOST)
        origin_port = r.uint32()
        r.end()
        self._check_peer_max_packet(peer_max_packet)
        if port > 65535 or origin_port > 65535:
            self._refuse_open(
                peer_id, kind, OpenFailure.ADMINISTRATIVELY_PROHIBITED, "port out of range"
            )
        elif len(self._channels) >= self._max_channels:
            self._refuse_open(peer_id, kind, OpenFailure.RESOURCE_SHORTAGE, "too many channels")
        elif self._pending_in >= self._max_pending_opens:
            self._refuse_open(
                peer_id, kind, OpenFailure.RESOURCE_SHORTAGE, "too many pending channel opens"
            )
        else:
            ch = self._new_channel(kind, _CS.PENDING)
            ch.set_peer(peer_id, peer_window, peer_max_packet)
            self._peer_ids[peer_id] = ch.local_id
            self._pending_in += 1
            self._events.append(
                ChannelOpenRequest(
                    channel_id=ch.local_id,
                    kind=kind,
                    host=host,
                    port=port,
                    origin_host=origin_host,
                    origin_port=origin_port,
                    peer_window=peer_window,
                    peer_max_packet=peer_max_packet,
                )
            )

    def _refuse_open(self, peer_id: int, kind: str, code: OpenFailure, description: str) -> None:
        self._out.append(_open_failure(_U32.pack(peer_id), code, description))
        self._events.append(ChannelOpenRefused(kind=kind, code=code, description=description))

    def _on_open_confirmation(self, payload: bytes) -> None:
        r = Reader(payload, 1)
        ch = self._channel(r)
        peer_id = r.uint32()
        peer_window = r.uint32()
        peer_max_packet = r.uint32()
        r.end()
        old = self._remote_move(ch, _Ch.RECV_CONFIRM)
        self._check_peer_id(peer_id)
        self._check_peer_max_packet(peer_max_packet)
        ch.set_peer(peer_id, peer_window, peer_max_packet)
        self._peer_ids[peer_id] = ch.local_id
        self._pending_out -= 1
        if old is _CS.OPENING_CANCELLED:
            self._out.append(message(Msg.CHANNEL_CLOSE, ch.peer_id_bytes))
        else:
            self._events.append(ChannelOpenConfirmed(channel_id=ch.local_id))

    def _on_open_failure(self, payload: bytes) -> None:
        r = Reader(payload, 1)
        ch = self._channel(r)
        code = r.uint32()
        description = r.string(_MAX_TEXT).decode("utf-8", "replace")
        if r.remaining:
            r.string(_MAX_NAME)  # language tag; some peers leave it out
        r.end()
        self._remote_move(ch, _Ch.RECV_OPEN_FAILURE)
        self._pending_out -= 1
        self._free(ch)
        self._events.append(
            ChannelOpenFailed(channel_id=ch.local_id, code=code, description=description)
        )

    def _on_window_adjust(self, payload: bytes) -> None:
        r = Reader(payload, 1)
        local_id = r.uint32()
        n = r.uint32()
        r.end()
        ch = self._channels.get(local_id)
        if ch is None:
            if local_id in self._freed:
                # Both CLOSEs are done, but the peer sent a window adjust after
                # its CLOSE (paramiko's Channel.recv races its transport thread
                # into this).  Harmless: ignored, as OpenSSH does.
                return
            raise RemoteProtocolError(f"message for unknown channel {local_id}")
        self._remote_move(ch, _Ch.RECV_WINDOW_ADJUST)
        if ch.peer_window + n > _U32_MAX:
            raise RemoteProtocolError(f"channel {ch.local_id}: window adjust overflows 2**32-1")
        ch.peer_window += n
        if ch.blocked and n and ch.state in _WE_MAY_SEND:
            ch.blocked = False
            self._events.append(WindowAdjusted(channel_id=ch.local_id))

    def _take_data(self, ch: _Channel, n: int) -> None:
        """Check ``n`` incoming bytes against our limits and charge them to the window."""
        if n > self._max_packet:
            raise RemoteProtocolError(
                f"channel {ch.local_id}: {n} bytes of data exceed our maximum packet "
                f"{self._max_packet}"
            )
        if n > ch.recv_window:
            raise RemoteProtocolError(
                f"channel {ch.local_id}: {n} bytes of data overrun the window "
                f"({ch.recv_window} left)"
            )
        ch.recv_window -= n

    def _on_data(self, payload: bytes | bytearray | memoryview) -> None:
        # The hot path: parsed by hand; a memoryview payload is passed on as a
        # view (no copy), a bytes one is copied once.
        if len(payload) < 9:
            raise RemoteProtocolError("truncated CHANNEL_DATA")
        local_id, n = struct.unpack_from(">II", payload, 1)
        if len(payload) != 9 + n:
            raise RemoteProtocolError("CHANNEL_DATA length does not match its payload")
        ch = self._channels.get(local_id)
        if ch is None:
            raise RemoteProtocolError(f"message for unknown channel {local_id}")
        self._remote_move(ch, _Ch.RECV_DATA)
        self._take_data(ch, n)
        if n == 0 or ch.state is _CS.CLOSE_SENT:
            return  # after our CLOSE nobody will read it; it was counted, that is all
        ch.unconsumed += n
        if isinstance(payload, memoryview) and payload.readonly:
            data: bytes | memoryview = payload[9:]
        else:
            data = bytes(payload[9:])
        receiver = self._data_receiver
        if receiver is not None:
            receiver(local_id, data)
        else:
            self._events.append(ChannelData(channel_id=local_id, data=data))

    def _on_extended_data(self, payload: bytes) -> None:
        r = Reader(payload, 1)
        ch = self._channel(r)
        r.uint32()  # data type code (1 = stderr)
        n = len(r.string(_U32_MAX))
        r.end()
        self._remote_move(ch, _Ch.RECV_DATA)
        self._take_data(ch, n)
        # Dropped: a TCP tunnel has no second stream.  Treat it as delivered so
        # the window re-opens and a chatty peer does not stall the real data.
        ch.consumed += n
        self._maybe_adjust(ch)

    def _on_eof(self, payload: bytes) -> None:
        r = Reader(payload, 1)
        ch = self._channel(r)
        r.end()
        old = self._remote_move(ch, _Ch.RECV_EOF)
        if old is not _CS.CLOSE_SENT:
            self._events.append(ChannelEOF(channel_id=ch.local_id))

    def _on_close(self, payload: bytes) -> None:
        r = Reader(payload, 1)
        ch = self._channel(r)
        r.end()
        old = self._remote_move(ch, _Ch.RECV_CLOSE)
        if old is not _CS.CLOSE_SENT:
            self._out.append(message(Msg.CHANNEL_CLOSE, ch.peer_id_bytes))
        self._free(ch)
        self._events.append(ChannelClosed(channel_id=ch.local_id))

    def _on_channel_request(self, payload: bytes) -> None:
        r = Reader(payload, 1)
        ch = self._channel(r)
        r.string(_MAX_NAME)  # request type: none is served on a tunnel
        want_reply = r.boolean()
        r.rest()
        old = self._remote_move(ch, _Ch.RECV_REQUEST)
        if want_reply and old is not _CS.CLOSE_SENT:
            self._out.append(message(Msg.CHANNEL_FAILURE, ch.peer_id_bytes))

    def _on_channel_reply(self, payload: bytes) -> None:
        raise RemoteProtocolError(
            f"{Msg(payload[0]).name} received, but we never send channel requests"
        )

    # -- internals: global requests ------------------------------------------------

    def _on_global_request(self, payload: bytes) -> None:
        r = Reader(payload, 1)
        name = r.string(_MAX_NAME).decode("ascii", "replace")
        want_reply = r.boolean()
        if len(self._in_fifo) >= self._max_pending_global or (
            len(self._awaiting) >= self._max_pending_global
        ):
            raise RemoteProtocolError(
                f"more than {self._max_pending_global} global requests await replies"
            )
        request = _Incoming(self._new_request_id(), name, want_reply)
        served = self.role is Role.SERVER and name in (TCPIP_FORWARD, CANCEL_TCPIP_FORWARD)
        if served:
            request.address = r.text(_MAX_HOST)
            port = r.uint32()
            r.end()
            if port > 65535:
                served = False
            else:
                request.port = port
                if name == CANCEL_TCPIP_FORWARD and (request.address, port) not in self._forwards:
                    served = False
        else:
            r.rest()
        if want_reply:
            self._in_fifo.append(request)
        if not served:
            request.reply = message(Msg.REQUEST_FAILURE)
            self._flush_replies()
            return
        self._awaiting[request.request_id] = request
        cls = ForwardRequest if name == TCPIP_FORWARD else CancelForwardRequest
        self._events.append(
            cls(
                request_id=request.request_id,
                address=request.address,
                port=request.port,
                want_reply=want_reply,
            )
        )

    def _on_global_reply(self, payload: bytes) -> None:
        if not self._out_fifo:
            raise RemoteProtocolError("global request reply, but no request is outstanding")
        request = self._out_fifo.popleft()
        r = Reader(payload, 1)
        success = payload[0] == Msg.REQUEST_SUCCESS
        bound_port: int | None = None
        if not success:
            r.end()
        elif request.name == TCPIP_FORWARD:
            if request.port == 0:
                bound_port = r.uint32()
                if not 1 <= bound_port <= 65535:
                    raise RemoteProtocolError(f"server bound forward port {bound_port}")
            else:
                bound_port = request.port
            r.rest()  # some servers repeat the port even when we named it
        else:
            r.rest()  # response-specific data of requests that have none for us
        self._events.append(
            GlobalReply(request_id=request.request_id, success=success, bound_port=bound_port)
        )


def _open_failure(peer_id_bytes: bytes, code: int, description: str) -> bytes:
    return message(
        Msg.CHANNEL_OPEN_FAILURE, peer_id_bytes, uint32(code), string(description), string("")
    )


def _refusal_for(kind: str, role: Role) -> tuple[OpenFailure, str]:
    if kind in (DIRECT_TCPIP, FORWARDED_TCPIP):
        who = "a client" if role is Role.CLIENT else "a server"
        return OpenFailure.ADMINISTRATIVELY_PROHIBITED, f"{kind} channels are not opened to {who}"
    if kind in _NOT_SERVED:
        return (
            OpenFailure.ADMINISTRATIVELY_PROHIBITED,
            f"{kind} channels are not served: this server carries TCP tunnels only",
        )
    return OpenFailure.UNKNOWN_CHANNEL_TYPE, "unknown channel type"
