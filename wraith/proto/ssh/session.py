"""One SSH connection: the transport, userauth and connection layers composed.

Theory of operation
-------------------
The transport decrypts packets and hands up every payload that is not its own
(``PayloadReceived``).  This class routes each one by message number: 5/6 and
50-79 to the userauth layer, 80-127 to the connection layer, anything else is
answered with UNIMPLEMENTED.  The connection layer exists only once
authentication succeeded, so a channel message before that is a protocol
error, never a bypass.  Whatever a layer wants to send is moved into the
transport when the caller asks for ``data_to_send()``, userauth first.

Events come out of ``next_event()`` in the order the layers produced them; the
layers' own events pass through unchanged, and :class:`SessionEnded` is the
last one.  A protocol error in any layer becomes a DISCONNECT with the fitting
reason code; the error itself is reported as ``SessionEnded``, never raised,
so the caller's loop has one exit.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import LocalProtocolError, RemoteProtocolError
from . import transport_events as te
from . import userauth_events as ue
from .connection import Connection
from .connection import Role as ConnectionRole
from .constants import DisconnectReason
from .events_common import NEED_DATA, NeedData, disconnect_reason
from .transport import Role, Transport, TransportState
from .userauth import ClientAuth, ServerAuth

_U32 = struct.Struct(">I")


@dataclass(frozen=True, kw_only=True)
class SessionEnded:
    """The connection is over; nothing follows.  ``reason`` is one line."""

    reason: str
    #: True when the peer disconnected or closed; False when we ended it.
    by_peer: bool


Event = Any  # the union of the layers' events and SessionEnded
_SENDING = (TransportState.OPEN, TransportState.REKEY)


class SSHSession:
    """Transport + userauth + connection for one role.

    Server: pass ``host_key``.  Client: pass ``username`` and ``key`` (and
    ``certificate_blob`` to authenticate with an OpenSSH user certificate).
    ``transport`` and ``connection`` hold extra keyword arguments for those
    layers (limits, algorithms).
    """

    def __init__(
        self,
        role: Role,
        *,
        now: float,
        host_key: Ed25519PrivateKey | None = None,
        username: str | None = None,
        key: Ed25519PrivateKey | None = None,
        certificate_blob: bytes | None = None,
        auth_timeout: float = 30.0,
        max_auth_attempts: int = 10,
        transport: dict[str, Any] | None = None,
        connection: dict[str, Any] | None = None,
    ) -> None:
        if role is Role.CLIENT and (username is None or key is None):
            raise LocalProtocolError("a client session needs username and key")
        self.role = role
        self._now = now
        self._username = username
        self._key = key
        self._certificate_blob = certificate_blob
        self._auth_timeout = auth_timeout
        self._max_auth_attempts = max_auth_attempts
        self._connection_kwargs = dict(connection or {})
        self.transport = Transport(role, host_key=host_key, now=now, **(transport or {}))
        self.server_auth: ServerAuth | None = None
        self.client_auth: ClientAuth | None = None
        self.connection: Connection | None = None
        self._events: deque[Event] = deque()
        self._ended: SessionEnded | None = None
        self._data_receiver: Callable[[int, bytes | memoryview], None] | None = None

    # -- the caller's side -------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended is not None

    @property
    def authenticated(self) -> bool:
        return self.connection is not None

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        self._now = max(self._now, now)
        if self._ended is None:
            self.transport.handle_timer(self._now)  # keeps the transport's clock current
            self.transport.receive_data(data)

    def get_buffer(self, size: int) -> memoryview:
        """Room to ``recv_into`` (see ``Transport.get_buffer``); then ``buffer_filled``."""
        return self.transport.get_buffer(size)

    def buffer_filled(self, n: int, now: float) -> None:
        """``n`` bytes from the peer were written into the ``get_buffer()`` view."""
        self._now = max(self._now, now)
        if self._ended is None:
            self.transport.handle_timer(self._now)
            self.transport.buffer_filled(n)

    def trim(self) -> None:
        """Free idle buffers (call when the link went quiet)."""
        self.transport.trim()

    def data_to_send(self) -> bytes:
        self._flush()
        return self.transport.data_to_send()

    def flush(self) -> bool:
        """Frame what the layers queued; True if ``data_to_send()`` has bytes now."""
        self._flush()
        return self.transport.pending_output > 0

    def data_to_send_views(self) -> list[memoryview]:
        """Like ``data_to_send()``, one view per packet, unjoined (for ``sendmsg``)."""
        self._flush()
        return self.transport.data_to_send_views()

    def get_timer(self) -> float | None:
        if self._ended is not None:
            return None
        timers = [self.transport.get_timer()]
        if self.server_auth is not None and self.connection is None:
            timers.append(self.server_auth.get_timer())
        live = [t for t in timers if t is not None]
        return min(live) if live else None

    def handle_timer(self, now: float) -> None:
        self._now = max(self._now, now)
        if self._ended is not None:
            return
        self.transport.handle_timer(now)
        if self.server_auth is not None and self.connection is None:
            self.server_auth.handle_timer(now)

    def disconnect(
        self, description: str, reason: DisconnectReason = DisconnectReason.BY_APPLICATION
    ) -> None:
        """End the session from our side (flush ``data_to_send()`` afterwards)."""
        if self._ended is None:
            self._flush()
            self.transport.disconnect(reason, description)
            self._end(description, by_peer=False)

    def next_event(self) -> Event | NeedData:
        while True:
            if self._events:
                return self._events.popleft()
            if self._ended is not None:
                return NEED_DATA
            ev = self._layer_event()
            if ev is not None:
                return ev
            try:
                tev = self.transport.next_event()
            except RemoteProtocolError as exc:
                # The transport queued its DISCONNECT already.
                self._end(exc.msg, by_peer=False)
                continue
            if tev is NEED_DATA:
                if self._events:  # a data payload ended the session (see _route_data)
                    continue
                return NEED_DATA
            if isinstance(tev, te.PayloadReceived):
                self._route(tev)
                continue
            if isinstance(tev, te.KexComplete) and tev.first:
                self._start_auth(tev.session_id)
            elif isinstance(tev, te.DisconnectReceived):
                self._end(f"peer disconnected: {tev.description or tev.code}", by_peer=True)
            elif isinstance(tev, te.ConnectionClosed):
                self._end(tev.reason or "connection closed", by_peer=True)
            return tev

    # -- internals -----------------------------------------------------------------

    def _start_auth(self, session_id: bytes) -> None:
        if self.role is Role.SERVER:
            self.server_auth = ServerAuth(
                session_id=session_id,
                now=self._now,
                auth_timeout=self._auth_timeout,
                max_attempts=self._max_auth_attempts,
            )
        else:
            assert self._username is not None and self._key is not None
            self.client_auth = ClientAuth(
                session_id=session_id,
                username=self._username,
                key=self._key,
                certificate_blob=self._certificate_blob,
            )
            self.client_auth.start()

    def _layer_event(self) -> Event | None:
        try:
            for layer in (self.server_auth, self.client_auth):
                if layer is None:
                    continue
                ev = layer.next_event()
                if ev is NEED_DATA:
                    continue
                if isinstance(ev, ue.Authenticated | ue.AuthSucceeded):
                    self._open_connection()
                elif isinstance(ev, ue.AuthTimeout):
                    self._flush()
                    self.transport.disconnect(
                        DisconnectReason.BY_APPLICATION, "authentication timeout"
                    )
                    self._events.append(ev)
                    self._end("authentication timeout", by_peer=False)
                    return self._events.popleft()
                return ev
            if self.connection is not None:
                cev = self.connection.next_event()
                if cev is not NEED_DATA:
                    return cev
        except RemoteProtocolError as exc:
            self._fail(exc)
        return None

    def _open_connection(self) -> None:
        if self.connection is None:
            role = ConnectionRole.SERVER if self.role is Role.SERVER else ConnectionRole.CLIENT
            self.connection = Connection(role, **self._connection_kwargs)
            self.connection.set_data_sink(self._send_data_now)
            self.connection.set_data_filler(self._fill_data_now)
            if self._data_receiver is not None:
                self.connection.set_data_receiver(self._data_receiver)
                self.transport.set_data_handler(self._route_data)

    def _fill_data_now(self, head: bytes, room: int, fill: Callable[[memoryview], int]) -> int:
        """CHANNEL_DATA whose bytes are read straight into the outgoing packet.
        What the layers queued before goes first."""
        self._flush()
        if self._ended is not None or self.transport.state not in _SENDING:
            return 0  # the session is over: nothing is read, nothing sent
        length = _U32.size

        # The head and the uint32 length, whose value is known only after
        # fill(): the transport's writer frames head + length + data; here the
        # length travels as part of the filled bytes.
        def fill_with_length(view: memoryview) -> int:
            got = fill(view[length:])
            if got > 0:
                _U32.pack_into(view, 0, got)
                return got + length
            return got

        got = self.transport.send_payload_into(head, room + length, fill_with_length)
        return got - length if got > 0 else got

    def set_data_receiver(self, receiver: Callable[[int, bytes | memoryview], None]) -> None:
        """Deliver channel data as ``receiver(channel_id, data)`` calls, straight
        from the parser, instead of ``ChannelData`` events (the hot path: no
        event objects per packet).  Events keep their order around it: data
        is parsed only after every earlier event was returned."""
        self._data_receiver = receiver
        if self.connection is not None:
            self.connection.set_data_receiver(receiver)
            self.transport.set_data_handler(self._route_data)

    def _route_data(self, payload: bytes | memoryview) -> None:
        connection = self.connection
        assert connection is not None
        try:
            connection.receive_payload(payload)
        except RemoteProtocolError as exc:
            self._fail(exc)

    def _send_data_now(self, head: bytes, data: memoryview) -> None:
        """CHANNEL_DATA straight into the transport: framed from the caller's
        buffer with one copy.  What the layers queued before goes first."""
        self._flush()
        if self._ended is None and self.transport.state in _SENDING:
            self.transport.send_payload(head, data)

    def _route(self, tev: te.PayloadReceived) -> None:
        payload = tev.payload
        number = payload[0]
        try:
            if number in (5, 6) or 50 <= number < 80:
                layer: Any = self.server_auth or self.client_auth
                if layer is None:
                    raise RemoteProtocolError(f"message {number} before key exchange")
                layer.receive_payload(payload)
            elif 80 <= number < 128:
                if self.connection is None:
                    raise RemoteProtocolError(f"connection message {number} before authentication")
                self.connection.receive_payload(payload)
            else:
                self.transport.send_unimplemented(tev.seq)
        except RemoteProtocolError as exc:
            self._fail(exc)

    def _fail(self, exc: RemoteProtocolError) -> None:
        if self._ended is None:
            self.transport.disconnect(disconnect_reason(exc), exc.msg)
            self._end(f"protocol error: {exc.msg}", by_peer=False)

    def _end(self, reason: str, *, by_peer: bool) -> None:
        if self._ended is None:
            self._ended = SessionEnded(reason=reason, by_peer=by_peer)
            self._events.append(self._ended)

    def _flush(self) -> None:
        """Move the layers' queued payloads into the transport, userauth first."""
        for layer in (self.server_auth, self.client_auth, self.connection):
            if layer is None:
                continue
            payloads = layer.payloads_to_send()
            if self._ended is not None or self.transport.state not in _SENDING:
                continue  # the transport is closing: nothing more goes out
            for payload in payloads:
                self.transport.send_payload(payload)
