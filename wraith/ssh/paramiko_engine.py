"""The paramiko engine: paramiko's threaded Transport behind :mod:`wraith.ssh.engine`.

Theory of operation
-------------------
paramiko runs one thread per SSH connection and calls its server callbacks in
that thread, so nothing here may block it on the network (PARAMIKO.md).  We
subclass ``Transport`` in three places:

* ``_parse_channel_open`` handles ``direct-tcpip`` ourselves so that the open
  confirmation is *deferred* until the driver has dialled the destination.
  paramiko would confirm as soon as a callback returns, which forces a choice
  between serialising every open behind a DNS lookup and lying to the client.
* ``_channel_handler_table`` wraps paramiko's channel message handlers so the
  driver's waker fires on data, window adjust, EOF and CLOSE.  That is all the
  drivers need to run channels from their event loop with no thread per channel.
* ``run`` and ``_auth_trigger`` report the end of the session and successful
  authentication as events.

Calls that block in paramiko (client open, global requests, ``start_client``)
run in short-lived threads and report through :class:`Pending`.

paramiko's own loggers are silenced: at DEBUG they name forwarded addresses
(nothing may log tunnel destinations), and at ERROR they dump tracebacks for
every malformed pre-auth connection.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import logging
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import paramiko
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout
from paramiko.common import (
    cMSG_CHANNEL_OPEN,
    cMSG_CHANNEL_OPEN_FAILURE,
    cMSG_CHANNEL_OPEN_SUCCESS,
)
from paramiko.message import Message

from ..proto import tunnel
from ..proto.destpolicy import DestinationPolicy
from . import keys
from .auth import AuthPolicy, AuthResult, Permissions
from .authlog import log_auth, log_token
from .engine import (
    Authenticated,
    AuthenticationFailed,
    AuthFailure,
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
from .tunnels import check_destination, grant_forward

log = logging.getLogger("wraith.ssh")

# paramiko's result codes, typed (paramiko itself is untyped).
AUTH_SUCCESSFUL: int = int(paramiko.common.AUTH_SUCCESSFUL)
AUTH_FAILED: int = int(paramiko.common.AUTH_FAILED)
OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED: int = int(
    paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
)

# AES-GCM first (DESIGN: cipher order), then the CTR+EtM fallbacks paramiko has.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
KEX = ("curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256")
HOST_KEY_TYPES = ("ssh-ed25519",)
#: Channel window and max packet: paramiko's defaults measured best (PARAMIKO.md).
WINDOW_SIZE = 2 * 1024 * 1024
MAX_PACKET = 131072
#: What an SSH client is told when it asks for a shell, a command or a subsystem.
REFUSED_SESSION = "sessions are not served: this server only carries tunnels"
#: Pending (unconfirmed) direct-tcpip opens allowed per session.
MAX_PENDING_OPENS = 512

# paramiko logs handshake failures with full tracebacks at ERROR: a port scan
# would flood the log that fail2ban reads.  The drivers log one line per
# session end instead, with the reason taken from the transport.
for _name in ("paramiko", "paramiko.transport"):
    logging.getLogger(_name).setLevel(logging.CRITICAL + 1)


def _paramiko_key(key: Ed25519PrivateKey) -> paramiko.Ed25519Key:
    text = keys.private_key_openssh_bytes(key).decode("ascii")
    return paramiko.Ed25519Key(file_obj=io.StringIO(text))


def _waking(handler: Callable[[Any, Any], None], *, close: bool = False) -> Any:
    def wrapped(chan: Any, m: Any) -> None:
        handler(chan, m)
        adapter = getattr(chan, "_wraith_adapter", None)
        if adapter is not None:
            if close:
                adapter.remote_closed = True
            adapter.wake()

    return wrapped


def _configure(t: paramiko.Transport, settings: SSHSettings) -> None:
    opts = t.get_security_options()
    offered = settings.ciphers or CIPHERS
    opts.ciphers = [c for c in offered if c in opts.ciphers]
    opts.kex = [k for k in KEX if k in opts.kex]
    t.default_window_size = WINDOW_SIZE
    t.default_max_packet_size = MAX_PACKET


class _Transport(paramiko.Transport):  # type: ignore[misc]
    """paramiko's Transport with deferred direct-tcpip opens and wakers."""

    _channel_handler_table = {
        ptype: _waking(fn, close=(ptype == paramiko.common.MSG_CHANNEL_CLOSE))
        for ptype, fn in paramiko.Transport._channel_handler_table.items()
    }

    wraith_session: _SessionBase
    #: Our own channel opens in flight, by local channel id.  paramiko's
    #: open_channel() keeps the failure reason in one transport-wide slot, so
    #: concurrent failures overwrite each other; we keep one result per open.
    #: (paramiko's channel map holds channels weakly: we keep them alive here.)
    wraith_opens: dict[int, tuple[Pending[Channel], paramiko.Channel]]

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        #: Every channel handed to the driver.  paramiko unlinks its channels
        #: when the transport dies, before we hear of it; these still need the
        #: wake-up that tells their readers the session is lost.
        self.wraith_adapters: weakref.WeakSet[ParamikoChannel] = weakref.WeakSet()
        #: The description of a DISCONNECT from the peer, for the session-lost reason.
        self.wraith_disconnect: str | None = None

    def _parse_disconnect(self, m: Message) -> None:
        m.get_int()
        self.wraith_disconnect = "peer disconnected: " + (m.get_text() or "no reason")
        m.rewind()
        super()._parse_disconnect(m)

    def run(self) -> None:
        try:
            super().run()
        finally:
            with self.lock:
                opens, self.wraith_opens = self.wraith_opens, {}
            for pending, _ in opens.values():
                pending.set_error(SessionClosed(_transport_error(self, "session closed")))
            self.wraith_session.transport_ended()

    def wraith_open(
        self, kind: str, dest: tuple[str, int], src: tuple[str, int]
    ) -> Pending[Channel]:
        """Send CHANNEL_OPEN and return at once; the reply resolves the Pending."""
        pending: Pending[Channel] = Pending()
        if not self.is_active():
            pending.set_error(SessionClosed(_transport_error(self, "session closed")))
            return pending
        with self.lock:
            chanid = self._next_channel()
            m = Message()
            m.add_byte(cMSG_CHANNEL_OPEN)
            m.add_string(kind)
            m.add_int(chanid)
            m.add_int(WINDOW_SIZE)
            m.add_int(MAX_PACKET)
            m.add_string(dest[0])
            m.add_int(dest[1])
            m.add_string(src[0])
            m.add_int(src[1])
            chan = paramiko.Channel(chanid)
            self._channels.put(chanid, chan)
            self.channels_seen[chanid] = True
            chan._set_transport(self)
            chan._set_window(WINDOW_SIZE, MAX_PACKET)
            self.wraith_opens[chanid] = (pending, chan)
        try:
            self._send_user_message(m)
        except (paramiko.SSHException, OSError) as e:
            with self.lock:
                self.wraith_opens.pop(chanid, None)
            pending.set_error(SessionClosed(str(e) or "session closed"))
        return pending

    def _parse_channel_open_success(self, m: Message) -> None:
        chanid = m.get_int()
        m.rewind()
        super()._parse_channel_open_success(m)
        with self.lock:
            opening = self.wraith_opens.pop(chanid, None)
        if opening is not None:
            pending, chan = opening
            pending.set_result(ParamikoChannel(chan, self))

    def _parse_channel_open_failure(self, m: Message) -> None:
        chanid = m.get_int()
        reason = m.get_int()
        text = m.get_text()
        with self.lock:
            opening = self.wraith_opens.pop(chanid, None)
            if opening is not None:
                self._channels.delete(chanid)
        if opening is None:
            m.rewind()
            super()._parse_channel_open_failure(m)
            return
        opening[0].set_error(ChannelOpenFailed(reason, text))

    def _auth_trigger(self) -> None:
        super()._auth_trigger()
        if self.server_mode:
            self.wraith_session.authenticated_now()

    def _parse_channel_open(self, m: Message) -> None:
        if not self.server_mode:
            super()._parse_channel_open(m)
            return
        kind = m.get_text()
        peer_chanid = m.get_int()
        session = self.wraith_session
        assert isinstance(session, ParamikoServerSession)
        if kind != "direct-tcpip":
            # session (shell, exec, subsystem), x11, agent, ...: a tunnel server has none.
            session.refuse_channel(kind, peer_chanid)
            return
        window = m.get_int()
        max_packet = m.get_int()
        host = m.get_text()
        port = m.get_int()
        origin_host = m.get_text()
        origin_port = m.get_int()
        session.direct_tcpip(peer_chanid, window, max_packet, host, port, origin_host, origin_port)

    # Called from any thread.
    def wraith_new_channel(
        self, peer_chanid: int, window: int, max_packet: int
    ) -> paramiko.Channel:
        with self.lock:
            my_chanid = self._next_channel()
            chan = paramiko.Channel(my_chanid)
            self._channels.put(my_chanid, chan)
            self.channels_seen[my_chanid] = True
            chan._set_transport(self)
            chan._set_window(self.default_window_size, self.default_max_packet_size)
            chan._set_remote_channel(peer_chanid, window, max_packet)
        return chan


class _ChunkPipe(BufferedPipe):  # type: ignore[misc]
    """paramiko's inbound channel buffer, keeping received packets as chunks.

    ``BufferedPipe`` appends every packet to an ``array`` and slices it out
    again: two copies per packet, measured at about 10% of a busy server's
    samples.  A deque of the packets' own ``bytes`` costs no copy to feed and
    none to read a whole packet back.
    """

    def __init__(self) -> None:
        super().__init__()
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def set_event(self, event: threading.Event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def feed(self, data: bytes) -> None:
        chunk = bytes(data)
        with self._lock:
            if chunk:
                self._chunks.append(chunk)
                self._size += len(chunk)
            if self._event is not None:
                self._event.set()
            self._cv.notify_all()

    def read_ready(self) -> bool:
        return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            if not self._size:
                if self._closed:
                    return b""
                if timeout == 0.0:
                    raise PipeTimeout()
                self._cv.wait_for(lambda: self._size or self._closed, timeout)
                if not self._size:
                    if self._closed:
                        return b""
                    raise PipeTimeout()
            parts = []
            taken = 0
            while self._chunks and taken < nbytes:
                chunk = self._chunks[0]
                want = nbytes - taken
                if len(chunk) <= want:
                    parts.append(self._chunks.popleft())
                    taken += len(chunk)
                else:
                    parts.append(chunk[:want])
                    self._chunks[0] = chunk[want:]
                    taken += want
            self._size -= taken
            if not self._size and self._event is not None and not self._closed:
                self._event.clear()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def empty(self) -> bytes:
        return self.read(self._size) if self._size else b""

    def __len__(self) -> int:
        return self._size


class ParamikoChannel(Channel):
    """A paramiko ``Channel`` seen through the engine interface."""

    def __init__(self, chan: paramiko.Channel, transport: _Transport) -> None:
        if not len(chan.in_buffer) and not chan.closed:
            # Swapped before any data can arrive: see the callers.
            chan.in_buffer = _ChunkPipe()
        self._chan = chan
        self._transport = transport
        self._waker: Waker | None = None
        self.remote_closed = False
        #: Sending (a WINDOW_ADJUST from recv(), data from send()) failed: the
        #: session is dying, even if paramiko's thread has not noticed yet.
        self.broken = False
        # Never block in send(): a full window raises socket.timeout instead.
        chan.settimeout(0.0)
        chan._wraith_adapter = self
        transport.wraith_adapters.add(self)

    def wake(self) -> None:
        waker = self._waker
        if waker is not None:
            waker()

    def set_waker(self, waker: Waker | None) -> None:
        self._waker = waker
        if waker is not None:
            waker()

    def read(self, max_bytes: int) -> bytes | None:
        ch = self._chan
        # Snapshot EOF *before* looking at the buffer: data always precedes EOF.
        ended = ch.eof_received or ch.closed or not self._transport.is_active()
        if ch.recv_ready():
            try:
                data: bytes = ch.recv(max_bytes)
            except TimeoutError:
                return None
            except (EOFError, OSError, paramiko.SSHException):
                # recv() sends a WINDOW_ADJUST; paramiko's packetizer raises
                # EOFError (or socket errors) when the peer is gone.
                self.broken = True
                return b""
            return data
        return b"" if ended or self.broken else None

    def write(self, data: bytes | memoryview) -> int:
        ch = self._chan
        if ch.closed or not self._transport.is_active():
            raise ChannelClosed("channel is closed")
        view = memoryview(data)
        total = 0
        chunk = max(1024, ch.out_max_packet_size - 64)
        while total < len(view):
            if ch.out_window_size <= 0:
                break
            try:
                n: int = ch.send(bytes(view[total : total + chunk]))
            except TimeoutError:
                break
            except (EOFError, OSError, paramiko.SSHException) as e:
                # EOFError: paramiko's packetizer saw the peer go away.
                self.broken = True
                if total:
                    break
                raise ChannelClosed(str(e) or "session lost") from None
            if n <= 0:
                break
            total += n
        return total

    def write_eof(self) -> None:
        if not self._chan.closed:
            try:
                self._chan.shutdown_write()
            except (EOFError, OSError, paramiko.SSHException):
                self.broken = True  # the next read or write reports the loss

    def close(self) -> None:
        if threading.current_thread() is self._transport:
            # From paramiko's own thread (an abandoned open that just got its
            # confirmation): sending from here could wait on a key exchange
            # that only this thread can finish.
            threading.Thread(target=self._close_now, daemon=True).start()
            return
        self._close_now()

    def _close_now(self) -> None:
        try:
            self._chan.close()
        except (EOFError, OSError, paramiko.SSHException):
            self.broken = True  # the session is going: nothing left to tell the peer

    @property
    def lost(self) -> bool:
        if self.broken:
            return True
        if self.remote_closed:
            # CLOSE without EOF: the peer's side of this tunnel broke, so must ours.
            return not self._chan.eof_received
        return not self._transport.is_active()

    @property
    def closed(self) -> bool:
        return bool(self._chan.closed)


class _SessionBase:
    _transport: _Transport

    def transport_ended(self) -> None:
        raise NotImplementedError

    def authenticated_now(self) -> None:
        raise NotImplementedError

    def _wake_channels(self) -> None:
        while True:
            try:  # another thread may add one meanwhile: take the snapshot again
                adapters = set(self._transport.wraith_adapters)
                break
            except RuntimeError:
                continue
        for chan in list(self._transport._channels.values()):
            adapter = getattr(chan, "_wraith_adapter", None)
            if adapter is not None:
                adapters.add(adapter)
        for adapter in adapters:
            adapter.wake()


def _watch(t: _Transport, settings: SSHSettings, lock: threading.Lock) -> None:
    """Keepalives with dead-peer detection, in a thread (paramiko has neither).

    Every ``keepalive_interval`` a ``keepalive@openssh.com`` request with
    want-reply goes out from a probe thread; any reply (REQUEST_FAILURE
    included) proves the peer alive.  After ``keepalive_count`` intervals
    without one, the transport is closed and the session ends as dead.
    ``lock`` serializes our global requests: paramiko keeps one reply slot
    per transport, so two requests in flight would take each other's replies.
    """
    interval = settings.keepalive_interval

    def probe(done: threading.Event) -> None:
        with lock, contextlib.suppress(Exception):
            t.global_request("keepalive@openssh.com", wait=True)
        done.set()

    def run() -> None:
        missed = 0
        done = threading.Event()
        done.set()
        while t.is_active():
            if done.is_set():
                missed = 0
                done = threading.Event()
                threading.Thread(target=probe, args=(done,), daemon=True).start()
            if done.wait(interval):
                # Answered: wait out the rest of the interval before the next probe.
                if not t.active:
                    return
                time.sleep(interval)
                continue
            missed += 1
            if missed >= settings.keepalive_count and t.is_active():
                t.wraith_disconnect = (
                    f"peer not responding: no reply to keepalives in {missed * interval:.0f}s"
                )
                t.close()
                return

    threading.Thread(target=run, name="wraith-ssh-keepalive", daemon=True).start()


def _disconnect(t: paramiko.Transport, reason: str) -> None:
    """Send DISCONNECT (by application, with ``reason``), then close; never blocks the caller.

    paramiko's own ``close()`` just drops the connection, which the peer can
    only report as a reset.  The send runs in a thread: a full socket buffer
    must not stall the event loop.
    """

    def run() -> None:
        if t.is_active():
            m = Message()
            m.add_byte(bytes([paramiko.common.MSG_DISCONNECT]))
            m.add_int(11)  # SSH_DISCONNECT_BY_APPLICATION
            m.add_string(reason)
            m.add_string("")
            with contextlib.suppress(Exception):
                t._send_message(m)
        t.close()

    threading.Thread(target=run, name="wraith-ssh-disconnect", daemon=True).start()


def _transport_error(t: paramiko.Transport, default: str) -> str:
    said = getattr(t, "wraith_disconnect", None)
    if said:
        return str(said)
    err = t.get_exception()
    if err is None:
        return default
    text = str(err) or type(err).__name__
    return text.splitlines()[0]


# --------------------------------------------------------------------------- server


class _ServerInterface(paramiko.ServerInterface):  # type: ignore[misc]
    def __init__(self, session: ParamikoServerSession) -> None:
        self.s = session

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_none(self, username: str) -> int:
        self.s.log_auth("none", username, self.s.policy.refused_method("none"))
        return AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        self.s.log_auth("password", username, self.s.policy.refused_method("password"))
        return AUTH_FAILED

    def check_auth_interactive(self, username: str, submethods: str) -> int:
        result = self.s.policy.refused_method("keyboard-interactive")
        self.s.log_auth("keyboard-interactive", username, result)
        return AUTH_FAILED

    def check_auth_interactive_response(self, responses: Any) -> int:
        return AUTH_FAILED

    def check_auth_gssapi_with_mic(self, *args: Any) -> int:
        return AUTH_FAILED

    def check_auth_gssapi_keyex(self, *args: Any) -> int:
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        blob = key.public_blob.key_blob if key.public_blob is not None else key.asbytes()
        self.s.policy.maybe_reload()  # authorized_keys edited since? (stats at most every 2 s)
        result = self.s.policy.check(
            username=username, key_blob=blob, source_ip=self.s.peer[0], now=time.time()
        )
        if not result.accepted:
            self.s.log_auth("publickey", username, result)
            return AUTH_FAILED
        # paramiko verifies the signature after we approve (and this runs twice
        # for OpenSSH's query-then-sign): success is logged in authenticated_now().
        self.s.candidate = (username, result)
        return AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        # Not reached: _Transport._parse_channel_open refuses these itself.
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_global_request(self, kind: str, msg: Message) -> bool:
        # keepalive@openssh.com and friends: a failure reply still proves liveness.
        return False

    def check_port_forward_request(self, address: str, port: int) -> int | bool:
        return self.s.port_forward_request(address, port)

    def cancel_port_forward_request(self, address: str, port: int) -> None:
        self.s.cancel_port_forward(address, port)


class ParamikoServerSession(ServerSession, _SessionBase):
    """One accepted SSH connection, run by a paramiko server Transport."""

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        *,
        host_key: paramiko.PKey,
        policy: AuthPolicy,
        allow_remote_bind: bool,
        settings: SSHSettings,
        dest_policy: DestinationPolicy | None = None,
    ) -> None:
        self.peer = (str(peer[0]), int(peer[1]))
        self.policy = policy
        self.allow_remote_bind = allow_remote_bind
        self.dest_policy = dest_policy
        self.candidate: tuple[str, AuthResult] | None = None
        self.permissions: Permissions | None = None
        self.username: str | None = None
        self._events: EventQueue[ServerEvent] = EventQueue()
        self._pending_opens = 0
        self._lock = threading.Lock()
        self._forwards: dict[tuple[str, int], socket.socket] = {}
        self._ended = False
        sock.setblocking(True)
        t = _Transport(sock)
        t.wraith_session = self
        _configure(t, settings)
        self._settings = settings
        t.add_server_key(host_key)
        t.banner_timeout = 15
        t.handshake_timeout = 15
        t.wraith_opens = {}
        self._transport = t
        t.start_server(event=threading.Event(), server=_ServerInterface(self))

    # engine interface ---------------------------------------------------------

    def set_waker(self, waker: Waker | None) -> None:
        self._events.set_waker(waker)

    def next_event(self) -> ServerEvent | None:
        return self._events.get()

    @property
    def authenticated(self) -> bool:
        return self.permissions is not None

    def close(self, reason: str = "server shutting down") -> None:
        _disconnect(self._transport, reason)

    def open_forwarded(
        self, bind_host: str, bind_port: int, origin_host: str, origin_port: int
    ) -> Pending[Channel]:
        return self._transport.wraith_open(
            "forwarded-tcpip", (bind_host, bind_port), (origin_host, origin_port)
        )

    # called from paramiko's thread ---------------------------------------------

    def log_auth(self, method: str, username: str, result: AuthResult) -> None:
        outcome = log_auth(method=method, username=username, source=self.peer, result=result)
        if outcome == "failure":
            self._events.put(AuthFailure(method=method))

    def authenticated_now(self) -> None:
        if self.candidate is None:
            return
        username, result = self.candidate
        self.username = username
        self.permissions = result.permissions or Permissions()
        self.log_auth("publickey", username, result)
        # Connection-layer requests only after auth.
        _watch(self._transport, self._settings, threading.Lock())
        self._events.put(Authenticated(username=username, fingerprint=result.fingerprint))

    def transport_ended(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self._wake_channels()
        self._events.put(Closed(reason=_transport_error(self._transport, "connection closed")))

    def refuse_channel(self, kind: str, peer_chanid: int) -> None:
        log.info("refused channel type=%s src=%s port=%d", log_token(kind), *self.peer)
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN_FAILURE)
        m.add_int(peer_chanid)
        m.add_int(int(OpenFailure.ADMINISTRATIVELY_PROHIBITED))
        m.add_string(REFUSED_SESSION if kind == "session" else "channel type not served")
        m.add_string("en")
        self._transport._send_message(m)

    def direct_tcpip(
        self,
        peer_chanid: int,
        window: int,
        max_packet: int,
        host: str,
        port: int,
        origin_host: str,
        origin_port: int,
    ) -> None:
        t = self._transport

        def reject(code: OpenFailure, text: str) -> None:
            m = Message()
            m.add_byte(cMSG_CHANNEL_OPEN_FAILURE)
            m.add_int(peer_chanid)
            m.add_int(int(code))
            m.add_string(text)
            m.add_string("en")
            with self._lock:
                self._pending_opens -= 1
            t._send_user_message(m)

        def accept() -> Channel:
            chan = t.wraith_new_channel(peer_chanid, window, max_packet)
            adapter = ParamikoChannel(chan, t)
            m = Message()
            m.add_byte(cMSG_CHANNEL_OPEN_SUCCESS)
            m.add_int(peer_chanid)
            m.add_int(chan.get_id())
            m.add_int(t.default_window_size)
            m.add_int(t.default_max_packet_size)
            with self._lock:
                self._pending_opens -= 1
            t._send_user_message(m)
            return adapter

        with self._lock:
            self._pending_opens += 1
            too_many = self._pending_opens > MAX_PENDING_OPENS
        verdict = check_destination(self.permissions, host, port, dest_policy=self.dest_policy)
        if verdict is not None and verdict[1] == tunnel.RESERVED_NAME:
            log.info("refused reserved name src=%s port=%d", *self.peer)
        if too_many:
            reject(OpenFailure.RESOURCE_SHORTAGE, "too many pending channel opens")
            return
        if verdict is not None:
            code, text = verdict
            reject(code, text)
            return
        self._events.put(
            DirectTcpipRequested(
                host=host.strip("[]"),
                port=port,
                origin_host=origin_host,
                origin_port=origin_port,
                accept=accept,
                reject=reject,
                dest_policy=self.dest_policy,
            )
        )

    def port_forward_request(self, address: str, port: int) -> int | bool:
        sock = grant_forward(
            self.permissions,
            address,
            port,
            allow_remote_bind=self.allow_remote_bind,
            peer=self.peer,
        )
        if sock is None:
            return False
        bound = int(sock.getsockname()[1])
        with self._lock:
            self._forwards[(address, bound)] = sock
        self._events.put(ForwardListening(bind_host=address, bind_port=bound, sock=sock))
        return bound

    def cancel_port_forward(self, address: str, port: int) -> None:
        with self._lock:
            sock = self._forwards.pop((address, port), None)
        if sock is not None:
            self._events.put(ForwardCancelled(bind_host=address, bind_port=port))


class ParamikoServerEngine:
    """Makes a :class:`ParamikoServerSession` for each accepted socket."""

    pumped = False

    def __init__(
        self,
        host_key: Ed25519PrivateKey,
        policy: AuthPolicy,
        *,
        allow_remote_bind: bool,
        settings: SSHSettings | None = None,
        dest_policy: DestinationPolicy | None = None,
    ) -> None:
        self._host_key = _paramiko_key(host_key)
        self._policy = policy
        self._allow_remote_bind = allow_remote_bind
        self._settings = settings or SSHSettings()
        self._dest_policy = dest_policy

    def accept(self, sock: socket.socket | None, peer: tuple[str, int]) -> ServerSession:
        assert sock is not None, "paramiko runs on the socket itself"
        return ParamikoServerSession(
            sock,
            peer,
            host_key=self._host_key,
            policy=self._policy,
            allow_remote_bind=self._allow_remote_bind,
            settings=self._settings,
            dest_policy=self._dest_policy,
        )


# --------------------------------------------------------------------------- client


class ParamikoClientSession(ClientSession, _SessionBase):
    """An authenticated client SSH session run by a paramiko Transport."""

    def __init__(self, transport: _Transport, fingerprint: str) -> None:
        self._transport = transport
        self._fingerprint = fingerprint
        self._events: EventQueue[ClientEvent] = EventQueue()
        self._global_lock = threading.Lock()
        self._ended = False
        transport.wraith_session = self

    @classmethod
    def connect(
        cls,
        sock: socket.socket,
        *,
        host: str,
        port: int,
        username: str | None,
        identity: Ed25519PrivateKey,
        certificate: str | None,
        host_keys: HostKeyPolicy,
        timeout: float,
        settings: SSHSettings | None = None,
    ) -> Pending[ClientSession]:
        """Handshake, check the host key and authenticate, in a worker thread."""
        pending: Pending[ClientSession] = Pending()

        def run() -> None:
            sock.setblocking(True)
            t = _Transport(sock)
            t.wraith_opens = {}
            session = cls(t, "")
            try:
                _configure(t, settings or SSHSettings())
                opts = t.get_security_options()
                opts.key_types = [k for k in HOST_KEY_TYPES if k in opts.key_types]
                t.banner_timeout = timeout
                t.handshake_timeout = timeout
                try:
                    t.start_client(timeout=timeout)
                except (paramiko.SSHException, OSError, EOFError) as e:
                    why = str(e).rstrip(".")
                    if isinstance(e, paramiko.IncompatiblePeer) or why == "Negotiation failed":
                        # The peer hung up on our KEXINIT: say what usually causes it.
                        why += " (no cipher, key exchange or host key type in common)"
                    raise HandshakeFailed(f"SSH handshake failed: {why}") from None
                server_key = t.get_remote_server_key()
                session._fingerprint = host_keys.check(host, port, server_key.asbytes())
                pkey = _paramiko_key(identity)
                if certificate is not None:
                    pkey.load_certificate(certificate)
                try:
                    t.auth_publickey(username or getpass.getuser(), pkey)
                except paramiko.AuthenticationException:
                    fp = keys.fingerprint(identity.public_key())
                    what = "certificate for key" if certificate else "key"
                    raise AuthenticationFailed(
                        f"authentication failed: the server refused our {what} {fp} "
                        f"as user {username or getpass.getuser()!r}"
                    ) from None
                except (paramiko.SSHException, OSError, EOFError) as e:
                    raise HandshakeFailed(f"authentication did not complete: {e}") from None
                if not t.is_authenticated():
                    raise AuthenticationFailed("authentication failed")
                _watch(t, settings or SSHSettings(), session._global_lock)
                pending.set_result(session)
            except (HandshakeFailed, AuthenticationFailed, HostKeyError) as e:
                t.close()
                pending.set_error(e)
            except Exception as e:
                t.close()
                pending.set_error(HandshakeFailed(f"SSH connection failed: {e}"))

        threading.Thread(target=run, name="wraith-ssh-connect", daemon=True).start()
        return pending

    def set_waker(self, waker: Waker | None) -> None:
        self._events.set_waker(waker)

    def next_event(self) -> ClientEvent | None:
        return self._events.get()

    @property
    def active(self) -> bool:
        return bool(self._transport.is_active())

    @property
    def server_fingerprint(self) -> str:
        return self._fingerprint

    def close(self, reason: str = "client shutting down") -> None:
        _disconnect(self._transport, reason)

    def transport_ended(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._wake_channels()
        self._events.put(Closed(reason=_transport_error(self._transport, "connection closed")))

    def authenticated_now(self) -> None:
        pass

    def _run(self, pending: Pending[Any], fn: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                pending.set_result(fn())
            except paramiko.ChannelException as e:
                pending.set_error(ChannelOpenFailed(e.code, e.text))
            except (paramiko.SSHException, OSError, EOFError) as e:
                if self._transport.is_active():
                    pending.set_error(ChannelOpenFailed(OpenFailure.CONNECT_FAILED, str(e)))
                else:
                    pending.set_error(SessionClosed(str(e) or "session closed"))
            except EngineErrorTypes as e:
                pending.set_error(e)

        threading.Thread(target=run, name="wraith-ssh-req", daemon=True).start()

    def open_direct_tcpip(
        self, host: str, port: int, origin_host: str, origin_port: int
    ) -> Pending[Channel]:
        return self._transport.wraith_open("direct-tcpip", (host, port), (origin_host, origin_port))

    def _on_forwarded(
        self, chan: paramiko.Channel, origin: tuple[str, int], server: tuple[str, int]
    ) -> None:
        # Runs in paramiko's thread: only queue it.
        adapter = ParamikoChannel(chan, self._transport)
        self._events.put(
            ForwardedConnection(
                bind_host=str(server[0]),
                bind_port=int(server[1]),
                origin_host=str(origin[0]),
                origin_port=int(origin[1]),
                channel=adapter,
            )
        )

    def request_forward(self, bind_host: str, bind_port: int) -> Pending[int]:
        pending: Pending[int] = Pending()
        t = self._transport

        def op() -> int:
            # paramiko shares one completion event for all global requests.
            with self._global_lock:
                try:
                    return int(t.request_port_forward(bind_host, bind_port, self._on_forwarded))
                except paramiko.SSHException as e:
                    if not t.is_active():
                        raise SessionClosed("session closed") from None
                    raise ChannelOpenFailed(
                        OpenFailure.ADMINISTRATIVELY_PROHIBITED, "remote forward refused"
                    ) from e

        self._run(pending, op)
        return pending

    def cancel_forward(self, bind_host: str, bind_port: int) -> Pending[None]:
        pending: Pending[None] = Pending()
        t = self._transport

        def op() -> None:
            with self._global_lock:
                t.cancel_port_forward(bind_host, bind_port)

        self._run(pending, op)
        return pending


EngineErrorTypes = (SessionClosed, ChannelOpenFailed, AuthenticationFailed, HandshakeFailed)
