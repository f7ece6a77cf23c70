"""The Sans-IO engine: :mod:`wraith.proto.ssh` behind :mod:`wraith.ssh.engine`.

Theory of operation
-------------------
Everything runs in the driver's event loop: no threads.  The driver's pump
(:mod:`wraith.io_trio.pump`, :mod:`wraith.io_asyncio.pump`) feeds socket bytes
into :meth:`receive_data`, which runs the pure state machine and then
*dispatches* every event it produced at once: channel data goes into the
channel's buffer and wakes its reader, open confirmations resolve their
``Pending``, auth requests are decided with :class:`AuthPolicy`, and
session-level happenings go to the driver's event queue exactly as the
paramiko engine reports them.  Whatever a task does to a channel (write, read
and so replenish the window, close) queues bytes in the state machine and
wakes the pump's writer through the output waker.

Backpressure: a channel never holds more than the window we granted, because
the window is only replenished (``consume``) when the driver reads.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..proto import tunnel
from ..proto.errors import LocalProtocolError
from ..proto.ssh import connection_events as ce
from ..proto.ssh import transport_events as te
from ..proto.ssh import userauth_events as ue
from ..proto.ssh.connection import Connection
from ..proto.ssh.constants import DisconnectReason
from ..proto.ssh.events_common import NEED_DATA
from ..proto.ssh.session import SessionEnded, SSHSession
from ..proto.ssh.transport import DEFAULT_CIPHERS, Role
from . import keys
from .engine import (
    Authenticated,
    AuthenticationFailed,
    AuthFailure,
    ByteSession,
    Channel,
    ChannelClosed,
    ChannelOpenFailed,
    ClientEvent,
    ClientSession,
    Closed,
    DirectTcpipRequested,
    EventQueue,
    ForwardCancelled,
    ForwardedConnection,
    ForwardListening,
    HandshakeFailed,
    OpenFailure,
    Pending,
    ServerEvent,
    ServerSession,
    SessionClosed,
    SSHSettings,
    Waker,
)
from .known_hosts import HostKeyError, HostKeyPolicy

if TYPE_CHECKING:  # the server's side: a client never imports these
    from ..proto.destpolicy import DestinationPolicy
    from .auth import AuthPolicy, AuthResult, Permissions

log = logging.getLogger("wraith.ssh")

VERSION = "SSH-2.0-Wraith_0.1"
#: Receive window per channel at first, and how far it grows while the
#: channel's reader keeps up (see ``Connection``): a bulk stream is not held
#: back waiting for window space, while a channel whose reader lags never
#: holds more than its window undelivered.
WINDOW = 2 * 1024 * 1024
MAX_WINDOW = 16 * 1024 * 1024
#: Window growth all of a session's channels may hold at once (see ``Connection``).
WINDOW_GROWTH_BUDGET = 64 * 1024 * 1024
#: Largest CHANNEL_DATA we accept or send, per channel.
#: (OpenSSH refuses packets over 256 KiB, so data stays well below that.)
MAX_PACKET = 128 * 1024
_CONNECTION_ARGS = {
    "window": WINDOW,
    "max_window": MAX_WINDOW,
    "growth_budget": WINDOW_GROWTH_BUDGET,
    "max_packet": MAX_PACKET,
    "max_send_packet": MAX_PACKET,
}


def _transport_args(settings: SSHSettings) -> dict[str, Any]:
    return {
        "version": VERSION,
        "max_packet": MAX_PACKET + 1024,
        "ciphers": settings.ciphers or DEFAULT_CIPHERS,
    }


class SansioChannel(Channel):
    """One channel of a :class:`_Engine`; buffers at most one receive window."""

    def __init__(self, engine: _Engine, channel_id: int) -> None:
        self._engine = engine
        self.id = channel_id
        self._chunks: deque[bytes | memoryview] = deque()
        self._buffered = 0
        self._waker: Waker | None = None
        self.eof_received = False
        self.remote_closed = False
        self.local_closed = False
        self._lost = False

    def set_waker(self, waker: Waker | None) -> None:
        self._waker = waker
        if waker is not None:
            waker()

    def wake(self) -> None:
        waker = self._waker
        if waker is not None:
            waker()

    def feed(self, data: bytes | memoryview) -> None:
        if data and not self.local_closed:
            self._chunks.append(data)
            self._buffered += len(data)
        self.wake()

    def read_chunks(self, max_bytes: int) -> list[bytes | memoryview] | None:
        if self._buffered:
            parts: list[bytes | memoryview] = []
            taken = 0
            chunks = self._chunks
            while chunks and taken < max_bytes:
                chunk = chunks[0]
                want = max_bytes - taken
                if len(chunk) <= want:
                    parts.append(chunks.popleft())
                    taken += len(chunk)
                else:
                    view = memoryview(chunk)
                    parts.append(view[:want])
                    chunks[0] = view[want:]
                    taken += want
            self._buffered -= taken
            self._engine.consumed(self.id, taken)
            return parts
        if self.eof_received or self.remote_closed or self._lost or self.local_closed:
            return []
        return None

    def read(self, max_bytes: int) -> bytes | None:
        parts = self.read_chunks(max_bytes)
        if parts is None:
            return None
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)

    def write(self, data: bytes | memoryview) -> int:
        if self._lost or self.remote_closed or self.local_closed:
            raise ChannelClosed("channel is closed")
        return self._engine.send_data(self.id, data)

    supports_write_into = True

    def write_into(self, fill: Callable[[memoryview], int]) -> int:
        if self._lost or self.remote_closed or self.local_closed:
            raise ChannelClosed("channel is closed")
        return self._engine.send_data_into(self.id, fill)

    def write_eof(self) -> None:
        if not (self._lost or self.remote_closed or self.local_closed):
            self._engine.channel_call("send_eof", self.id)

    def close(self) -> None:
        if not self.local_closed:
            self.local_closed = True
            self._chunks.clear()
            self._buffered = 0
            if not self._lost:
                self._engine.channel_call("close", self.id)

    def session_lost(self) -> None:
        if not self.remote_closed:
            self._lost = True
        self.wake()

    @property
    def lost(self) -> bool:
        # CLOSE without EOF: the peer's side of this tunnel broke, so must ours.
        return self._lost or (self.remote_closed and not self.eof_received)

    @property
    def closed(self) -> bool:
        return self._lost or self.remote_closed or self.local_closed


class _Engine(ByteSession):
    """What the client and server sides share: pumping, channels, opens."""

    def __init__(self, ssh: SSHSession, settings: SSHSettings, now: float) -> None:
        self.ssh = ssh
        self.settings = settings
        self._last_heard = now
        self._unanswered = 0
        self._out_waker: Waker | None = None
        self._channels: dict[int, SansioChannel] = {}
        self._opens: dict[int, Pending[Channel]] = {}
        #: Opens asked for while ``max_pending_opens`` were unanswered: they go
        #: out, in order, as answers come (a burst of SOCKS requests waits, it
        #: is not refused).
        self._queued_opens: deque[tuple[tuple[str, str, int, str, int], Pending[Channel]]] = deque()
        self._globals: dict[int, tuple[Pending[Any], int]] = {}
        self._closed_reason: str | None = None
        self._next_keepalive: float | None = None
        ssh.set_data_receiver(self._channel_data)

    def _channel_data(self, channel_id: int, data: bytes | memoryview) -> None:
        ch = self._channels.get(channel_id)
        if ch is not None:
            ch.feed(data)

    # ByteSession ------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray, now: float) -> None:
        if data:
            self._last_heard = now
            self._unanswered = 0
        self.ssh.receive_data(data, now)
        self._process()

    def get_buffer(self, size: int) -> memoryview | None:
        return self.ssh.get_buffer(size)

    def buffer_filled(self, n: int, now: float) -> None:
        self._last_heard = now
        self._unanswered = 0
        self.ssh.buffer_filled(n, now)
        self._process()

    def trim(self) -> None:
        self.ssh.trim()

    def data_to_send(self) -> bytes:
        return self.ssh.data_to_send()

    def data_to_send_views(self) -> list[memoryview]:
        return self.ssh.data_to_send_views()

    def set_output_waker(self, waker: Waker | None) -> None:
        self._out_waker = waker
        if waker is not None:
            waker()

    def get_timer(self) -> float | None:
        timers = [t for t in (self.ssh.get_timer(), self._next_keepalive) if t is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        self.ssh.handle_timer(now)
        due = self._next_keepalive
        conn = self.ssh.connection
        if due is not None and now >= due and conn is not None and not self.ssh.ended:
            self._keepalive(now)
        self._process()

    def _keepalive(self, now: float) -> None:
        """Probe a silent peer; end the session once it stayed silent too long.

        Any bytes from the peer count as a sign of life, so a busy session
        sends no keepalives at all.  A request with want-reply makes a live
        peer answer (even REQUEST_FAILURE does), which also keeps NAT state.
        """
        interval = self.settings.keepalive_interval
        silent = now - self._last_heard
        if silent < interval:
            self._next_keepalive = self._last_heard + interval
            return
        self._next_keepalive = now + interval
        if self._unanswered >= self.settings.keepalive_count:
            self.ssh.disconnect(
                f"peer not responding: no reply to {self._unanswered} keepalives in {silent:.0f}s",
                DisconnectReason.CONNECTION_LOST,
            )
            return
        conn = self.ssh.connection
        assert conn is not None
        with contextlib.suppress(LocalProtocolError):  # too many unanswered already
            conn.send_keepalive()
            self._unanswered += 1

    def _start_keepalives(self) -> None:
        self._next_keepalive = time.monotonic() + self.settings.keepalive_interval

    @property
    def finished(self) -> bool:
        return self.ssh.ended

    # channel plumbing ---------------------------------------------------------------

    def output_changed(self) -> None:
        waker = self._out_waker
        if waker is not None:
            waker()

    def output_maybe_changed(self) -> None:
        """Wake the writer only if there is something for it: bytes to send,
        or the session's end to act on (a wake-up per read costs)."""
        if self.ssh.flush() or self.ssh.ended:
            self.output_changed()

    def consumed(self, channel_id: int, n: int) -> None:
        conn = self.ssh.connection
        if conn is not None and not self.ssh.ended:
            try:
                conn.consume(channel_id, n)
            except LocalProtocolError:
                return
            self.output_maybe_changed()

    def send_data(self, channel_id: int, data: bytes | memoryview) -> int:
        return self._send(lambda conn: conn.send_data(channel_id, data))

    def send_data_into(self, channel_id: int, fill: Callable[[memoryview], int]) -> int:
        return self._send(lambda conn: conn.send_data_into(channel_id, fill))

    def _send(self, op: Callable[[Connection], int]) -> int:
        """Run a channel write; ``ChannelClosed`` if the session or channel is over."""
        conn = self.ssh.connection
        if conn is None or self.ssh.ended:
            raise ChannelClosed("session closed")
        try:
            n = op(conn)
        except LocalProtocolError as e:
            raise ChannelClosed(e.msg) from None
        if n > 0:
            self.output_changed()
        return n

    def channel_call(self, method: str, channel_id: int) -> None:
        conn = self.ssh.connection
        if conn is None or self.ssh.ended:
            return
        try:
            getattr(conn, method)(channel_id)
        except LocalProtocolError:
            return
        self.output_changed()

    def _new_channel(self, channel_id: int) -> SansioChannel:
        ch = SansioChannel(self, channel_id)
        self._channels[channel_id] = ch
        return ch

    def _open(self, kind: str, host: str, port: int, oh: str, op: int) -> Pending[Channel]:
        pending: Pending[Channel] = Pending()
        conn = self.ssh.connection
        if conn is None or self.ssh.ended:
            pending.set_error(SessionClosed(self._closed_reason or "session closed"))
            return pending
        if self._queued_opens or conn.opens_in_flight_full:
            self._queued_opens.append(((kind, host, port, oh, op), pending))
            return pending
        self._send_open((kind, host, port, oh, op), pending)
        self.output_changed()
        return pending

    def _send_open(self, args: tuple[str, str, int, str, int], pending: Pending[Channel]) -> None:
        conn = self.ssh.connection
        assert conn is not None
        try:
            cid = conn.open_channel(*args)
        except LocalProtocolError as e:
            pending.set_error(ChannelOpenFailed(OpenFailure.RESOURCE_SHORTAGE, e.msg))
            return
        self._opens[cid] = pending

    def _send_queued_opens(self) -> None:
        conn = self.ssh.connection
        if conn is None or self.ssh.ended:
            return
        while self._queued_opens and not conn.opens_in_flight_full:
            args, pending = self._queued_opens.popleft()
            if not pending.abandoned:  # nobody waits for it any more: not sent
                self._send_open(args, pending)

    def _process(self) -> None:
        ssh = self.ssh
        while True:
            ev = ssh.next_event()
            if ev is NEED_DATA:
                break
            self._dispatch(ev)
        self.output_maybe_changed()

    def _dispatch(self, ev: Any) -> None:
        if isinstance(ev, ce.ChannelData):
            ch = self._channels.get(ev.channel_id)
            if ch is not None:
                ch.feed(ev.data)
        elif isinstance(ev, ce.WindowAdjusted):
            ch = self._channels.get(ev.channel_id)
            if ch is not None:
                ch.wake()
        elif isinstance(ev, ce.ChannelEOF):
            ch = self._channels.get(ev.channel_id)
            if ch is not None:
                ch.eof_received = True
                ch.wake()
        elif isinstance(ev, ce.ChannelClosed):
            ch = self._channels.pop(ev.channel_id, None)
            if ch is not None:
                ch.remote_closed = True
                ch.wake()
        elif isinstance(ev, ce.ChannelOpenConfirmed):
            pending = self._opens.pop(ev.channel_id, None)
            if pending is not None:
                pending.set_result(self._new_channel(ev.channel_id))
            self._send_queued_opens()
        elif isinstance(ev, ce.ChannelOpenFailed):
            pending = self._opens.pop(ev.channel_id, None)
            if pending is not None:
                pending.set_error(ChannelOpenFailed(ev.code, ev.description))
            self._send_queued_opens()
        elif isinstance(ev, ce.GlobalReply):
            entry = self._globals.pop(ev.request_id, None)
            if entry is not None:
                global_pending, requested_port = entry
                if ev.success:
                    global_pending.set_result(ev.bound_port or requested_port)
                else:
                    global_pending.set_error(
                        ChannelOpenFailed(
                            OpenFailure.ADMINISTRATIVELY_PROHIBITED, "remote forward refused"
                        )
                    )
        elif isinstance(ev, SessionEnded):
            self._closed_reason = ev.reason
            self._next_keepalive = None
            for ch in list(self._channels.values()):
                ch.session_lost()
            self._channels.clear()
            error = SessionClosed(ev.reason)
            for pending in self._opens.values():
                pending.set_error(error)
            self._opens.clear()
            for _, pending in self._queued_opens:
                if not pending.done:
                    pending.set_error(error)
            self._queued_opens.clear()
            for global_pending, _ in self._globals.values():
                global_pending.set_error(error)
            self._globals.clear()
            self.ended(ev)
        else:
            self.dispatch_role(ev)

    def ended(self, ev: SessionEnded) -> None:
        raise NotImplementedError

    def dispatch_role(self, ev: Any) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- server


class SansioServerSession(_Engine, ServerSession):
    def __init__(
        self,
        peer: tuple[str, int],
        *,
        host_key: Ed25519PrivateKey,
        policy: AuthPolicy,
        allow_remote_bind: bool,
        now: float,
        settings: SSHSettings | None = None,
        dest_policy: DestinationPolicy | None = None,
    ) -> None:
        settings = settings or SSHSettings()
        super().__init__(
            SSHSession(
                Role.SERVER,
                now=now,
                host_key=host_key,
                transport=_transport_args(settings),
                connection=_CONNECTION_ARGS,
            ),
            settings,
            now,
        )
        self.peer = peer
        self.policy = policy
        self.allow_remote_bind = allow_remote_bind
        self.dest_policy = dest_policy
        self.permissions: Permissions | None = None
        self._candidate: AuthResult | None = None
        self._events: EventQueue[ServerEvent] = EventQueue()

    def set_waker(self, waker: Waker | None) -> None:
        self._events.set_waker(waker)

    def next_event(self) -> ServerEvent | None:
        return self._events.get()

    @property
    def authenticated(self) -> bool:
        return self.permissions is not None

    def close(self, reason: str = "server shutting down") -> None:
        self.ssh.disconnect(reason)
        self._process()

    def open_forwarded(
        self, bind_host: str, bind_port: int, origin_host: str, origin_port: int
    ) -> Pending[Channel]:
        return self._open("forwarded-tcpip", bind_host, bind_port, origin_host, origin_port)

    def ended(self, ev: SessionEnded) -> None:
        self._events.put(Closed(reason=ev.reason))

    def _log(self, method: str, username: str, result: AuthResult | _Refusal) -> None:
        from .authlog import log_auth

        if log_auth(method=method, username=username, source=self.peer, result=result) == "failure":
            self._events.put(AuthFailure(method=method))

    def _check(self, username: str, key_blob: bytes) -> AuthResult:
        self.policy.maybe_reload()  # authorized_keys edited since? (stats at most every 2 s)
        return self.policy.check(
            username=username, key_blob=key_blob, source_ip=self.peer[0], now=time.time()
        )

    def dispatch_role(self, ev: Any) -> None:
        auth = self.ssh.server_auth
        conn = self.ssh.connection
        if isinstance(ev, ue.NoneRequest):
            self._log("none", ev.username, self.policy.refused_method("none"))
        elif isinstance(ev, ue.PublicKeyQuery):
            assert auth is not None
            result = self._check(ev.username, ev.key_blob)
            if result.accepted:
                auth.accept_query()
            else:
                self._log("publickey", ev.username, result)
                auth.reject()
        elif isinstance(ev, ue.PublicKeySigned):
            assert auth is not None
            result = self._check(ev.username, ev.key_blob)
            if result.accepted:
                self._candidate = result
                auth.accept()
            else:
                self._log("publickey", ev.username, result)
                auth.reject()
        elif isinstance(ev, ue.AuthFailed):
            fp = keys.fingerprint_blob(ev.key_blob) if ev.key_blob else "-"
            refusal: AuthResult | _Refusal = _Refusal(ev.reason, fp)
            if ev.reason == "unsupported-algorithm" and ev.key_blob:
                # An RSA or ECDSA key: the policy words it as both engines log it.
                verdict = self._check(ev.username, ev.key_blob)
                if not verdict.accepted:
                    refusal = verdict
            self._log(ev.method, ev.username, refusal)
        elif isinstance(ev, ue.MethodRefused):
            self._log(ev.method, ev.username, self.policy.refused_method(ev.method))
        elif isinstance(ev, ue.Authenticated):
            accepted = self._candidate
            assert accepted is not None
            from .auth import Permissions

            self.permissions = accepted.permissions or Permissions()
            self._start_keepalives()
            self._log("publickey", ev.username, accepted)
            self._events.put(Authenticated(username=ev.username, fingerprint=accepted.fingerprint))
        elif isinstance(ev, ue.AuthTimeout):
            log.info("auth timeout src=%s port=%d: closing unauthenticated connection", *self.peer)
        elif isinstance(ev, ce.ChannelOpenRefused):
            from .authlog import log_token

            log.info("refused channel type=%s src=%s port=%d", log_token(ev.kind), *self.peer)
        elif isinstance(ev, ce.ChannelOpenRequest):
            assert conn is not None
            self._direct(ev)
        elif isinstance(ev, ce.ForwardRequest):
            assert conn is not None
            bound = self._forward(ev.address, ev.port)
            conn.reply_global(
                ev.request_id, bound is not None, bound if bound and ev.port == 0 else None
            )
        elif isinstance(ev, ce.CancelForwardRequest):
            assert conn is not None
            self._events.put(ForwardCancelled(bind_host=ev.address, bind_port=ev.port))
            conn.reply_global(ev.request_id, True)

    def _direct(self, ev: ce.ChannelOpenRequest) -> None:
        conn = self.ssh.connection
        assert conn is not None
        if ev.kind != "direct-tcpip":
            conn.reject_open(
                ev.channel_id, OpenFailure.ADMINISTRATIVELY_PROHIBITED, "channel type not served"
            )
            return
        from .tunnels import check_destination

        verdict = check_destination(
            self.permissions, ev.host, ev.port, dest_policy=self.dest_policy
        )
        if verdict is not None:
            if verdict[1] == tunnel.RESERVED_NAME:
                log.info("refused reserved name src=%s port=%d", *self.peer)
            conn.reject_open(ev.channel_id, verdict[0], verdict[1])
            return
        cid = ev.channel_id
        answered = False

        def accept() -> Channel:
            nonlocal answered
            if answered or self.ssh.ended or self.ssh.connection is None:
                raise ChannelClosed("session closed")
            answered = True
            self.ssh.connection.accept_open(cid)
            self.output_changed()
            return self._new_channel(cid)

        def reject(code: OpenFailure, text: str) -> None:
            nonlocal answered
            if answered or self.ssh.ended or self.ssh.connection is None:
                return
            answered = True
            self.ssh.connection.reject_open(cid, code, text)
            self.output_changed()

        self._events.put(
            DirectTcpipRequested(
                host=ev.host.strip("[]"),
                port=ev.port,
                origin_host=ev.origin_host,
                origin_port=ev.origin_port,
                accept=accept,
                reject=reject,
                dest_policy=self.dest_policy,
            )
        )

    def _forward(self, address: str, port: int) -> int | None:
        from .tunnels import grant_forward

        sock = grant_forward(
            self.permissions,
            address,
            port,
            allow_remote_bind=self.allow_remote_bind,
            peer=self.peer,
        )
        if sock is None:
            return None
        bound = int(sock.getsockname()[1])
        self._events.put(ForwardListening(bind_host=address, bind_port=bound, sock=sock))
        return bound


class _Refusal:
    def __init__(self, reason: str, fingerprint: str) -> None:
        self.accepted = False
        self.reason = reason
        self.fingerprint = fingerprint


class SansioServerEngine:
    """Makes a :class:`SansioServerSession` per accepted socket; the driver pumps it."""

    pumped = True

    def __init__(
        self,
        host_key: Ed25519PrivateKey,
        policy: AuthPolicy,
        *,
        allow_remote_bind: bool,
        settings: SSHSettings | None = None,
        dest_policy: DestinationPolicy | None = None,
    ) -> None:
        self._host_key = host_key
        self._policy = policy
        self._allow_remote_bind = allow_remote_bind
        self._settings = settings or SSHSettings()
        self._dest_policy = dest_policy

    def accept(self, sock: socket.socket | None, peer: tuple[str, int]) -> ServerSession:
        del sock  # the driver pumps the socket itself
        return SansioServerSession(
            peer,
            host_key=self._host_key,
            policy=self._policy,
            allow_remote_bind=self._allow_remote_bind,
            now=time.monotonic(),
            settings=self._settings,
            dest_policy=self._dest_policy,
        )


# --------------------------------------------------------------------------- client


class SansioClientSession(_Engine, ClientSession):
    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        identity: Ed25519PrivateKey,
        certificate_blob: bytes | None,
        host_keys: HostKeyPolicy,
        now: float,
        settings: SSHSettings | None = None,
    ) -> None:
        settings = settings or SSHSettings()
        super().__init__(
            SSHSession(
                Role.CLIENT,
                now=now,
                username=username,
                key=identity,
                certificate_blob=certificate_blob,
                transport=_transport_args(settings),
                connection=_CONNECTION_ARGS,
            ),
            settings,
            now,
        )
        self._host = host
        self._port = port
        self._username = username
        self._identity = identity
        self._certificate = certificate_blob is not None
        self._host_keys = host_keys
        self._fingerprint = ""
        self._events: EventQueue[ClientEvent] = EventQueue()
        self.ready: Pending[ClientSession] = Pending()

    def set_waker(self, waker: Waker | None) -> None:
        self._events.set_waker(waker)

    def next_event(self) -> ClientEvent | None:
        return self._events.get()

    @property
    def active(self) -> bool:
        return self.ssh.authenticated and not self.ssh.ended

    @property
    def server_fingerprint(self) -> str:
        return self._fingerprint

    def close(self, reason: str = "client shutting down") -> None:
        self.ssh.disconnect(reason)
        self._process()

    def open_direct_tcpip(
        self, host: str, port: int, origin_host: str, origin_port: int
    ) -> Pending[Channel]:
        return self._open("direct-tcpip", host, port, origin_host, origin_port)

    def _global(self, method: str, bind_host: str, bind_port: int) -> Pending[Any]:
        pending: Pending[Any] = Pending()
        conn = self.ssh.connection
        if conn is None or self.ssh.ended:
            pending.set_error(SessionClosed(self._closed_reason or "session closed"))
            return pending
        try:
            rid = getattr(conn, method)(bind_host, bind_port)
        except LocalProtocolError as e:
            pending.set_error(ChannelOpenFailed(OpenFailure.RESOURCE_SHORTAGE, e.msg))
            return pending
        self._globals[rid] = (pending, bind_port)
        self.output_changed()
        return pending

    def request_forward(self, bind_host: str, bind_port: int) -> Pending[int]:
        return self._global("request_forward", bind_host, bind_port)

    def cancel_forward(self, bind_host: str, bind_port: int) -> Pending[None]:
        return self._global("cancel_forward", bind_host, bind_port)

    def ended(self, ev: SessionEnded) -> None:
        if not self.ready.done:
            self.ready.set_error(HandshakeFailed(f"SSH connection failed: {ev.reason}"))
        self._events.put(Closed(reason=ev.reason))

    def dispatch_role(self, ev: Any) -> None:
        if isinstance(ev, te.HostKeyReceived):
            try:
                self._fingerprint = self._host_keys.check(self._host, self._port, ev.key_blob)
            except HostKeyError as e:
                self.ready.set_error(e)
                self.ssh.disconnect(
                    "host key not trusted", DisconnectReason.HOST_KEY_NOT_VERIFIABLE
                )
        elif isinstance(ev, ue.AuthSucceeded):
            self._start_keepalives()
            self.ready.set_result(self)
        elif isinstance(ev, ue.AuthRejected | ue.AuthFailed):
            fp = keys.fingerprint(self._identity.public_key())
            what = "certificate for key" if self._certificate else "key"
            self.ready.set_error(
                AuthenticationFailed(
                    f"authentication failed: the server refused our {what} {fp} "
                    f"as user {self._username!r}"
                )
            )
            self.ssh.disconnect(
                "authentication failed", DisconnectReason.NO_MORE_AUTH_METHODS_AVAILABLE
            )
        elif isinstance(ev, ce.ChannelOpenRequest):
            conn = self.ssh.connection
            assert conn is not None
            if ev.kind != "forwarded-tcpip":
                conn.reject_open(
                    ev.channel_id, OpenFailure.ADMINISTRATIVELY_PROHIBITED, "not accepted"
                )
                return
            conn.accept_open(ev.channel_id)
            ch = self._new_channel(ev.channel_id)
            self._events.put(
                ForwardedConnection(
                    bind_host=ev.host,
                    bind_port=ev.port,
                    origin_host=ev.origin_host,
                    origin_port=ev.origin_port,
                    channel=ch,
                )
            )


def connect_client(
    *,
    host: str,
    port: int,
    username: str,
    identity: Ed25519PrivateKey,
    certificate: str | None,
    host_keys: HostKeyPolicy,
    settings: SSHSettings | None = None,
) -> SansioClientSession:
    """A client session to pump; its ``ready`` Pending resolves once authenticated."""
    blob = base64.b64decode(certificate.split()[1]) if certificate is not None else None
    return SansioClientSession(
        host=host,
        port=port,
        username=username,
        identity=identity,
        certificate_blob=blob,
        host_keys=host_keys,
        now=time.monotonic(),
        settings=settings,
    )
