"""The SSH transport layer (RFC 4253), Sans-IO, for either role.

Theory of operation.  ``receive_data()`` only buffers (``b""`` is EOF);
``next_event()`` parses one identification line or one packet at a time and
returns an event from :mod:`~wraith.proto.ssh.transport_events`, or
``NEED_DATA``.  Because packets are decrypted only when ``next_event()``
reaches them, a NEWKEYS switches the inbound keys exactly at the next packet
boundary.  Whatever the transport answers by itself (KEXINIT, the key
exchange, NEWKEYS, EXT_INFO, UNIMPLEMENTED, DISCONNECT on errors) and what the
layers above hand to ``send_payload()`` comes out of ``data_to_send()``.

Both sides send their identification line and their first KEXINIT at once,
from the constructor.  The connection then moves through :class:`TransportState`
by ``_TRANSITIONS``; inside a key exchange it moves through :class:`KexPhase`
by ``_KEX_TRANSITIONS``, one entry per kex message a role may receive in a
phase.  A message missing from the table is fatal, and every fatal error
queues a DISCONNECT with its reason code and leaves the terminal ``ERROR``
state before :class:`TransportError` propagates.

Which messages the peer may send when (RFC 4253 7.1): from its KEXINIT to its
NEWKEYS only transport messages (1-4, 7, 20-49); while our KEXINIT is out but
the peer's has not arrived, the peer has not seen ours yet, so channel
traffic is still legal.  Our own upper-layer payloads wait in a queue from
our KEXINIT to our NEWKEYS and are flushed behind it; the queue is bounded by
the channel windows of the layer above.

Strict kex (the Terrapin fix) is on when both first KEXINITs carry the
marker: the peer's KEXINIT must then be its first packet, anything but kex
messages and DISCONNECT during the initial exchange is fatal, and each
direction's sequence number restarts at 0 after each NEWKEYS.  Without
strict kex, a sequence number that wraps during the initial exchange is
fatal too, since only an attacker's flood of packets could make it.

The client returns :class:`HostKeyReceived` before it sends its first NEWKEYS,
and sends it on the next ``next_event()`` call, so a caller that distrusts
the key can ``disconnect()`` without having committed to the session.  On a
re-exchange the server must present the same host key.

Rekeying: either side at any time by ``start_rekey()`` or a peer KEXINIT, and
automatically after ``rekey_bytes`` in either direction or ``rekey_interval``
seconds.  Time is passed in: ``now`` at construction and ``handle_timer(now)``.
The deadline counts from the latest ``now`` seen when a kex completes; a
stale clock can only make a rekey early, never late.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wraith.proto.errors import LocalProtocolError, RemoteProtocolError
from wraith.proto.ssh import hostkey
from wraith.proto.ssh.cipher import (
    CIPHERS,
    MIN_MAX_PACKET,
    PacketCipher,
    PacketReader,
    PacketWriter,
    make_cipher,
)
from wraith.proto.ssh.constants import DisconnectReason, Msg
from wraith.proto.ssh.kex import (
    EXT_INFO_C,
    EXT_INFO_S,
    KEX_METHODS,
    MLKEM_AVAILABLE,
    STRICT_C,
    STRICT_S,
    Algorithms,
    KexInit,
    KexMethod,
    derive_key,
    ecdh_payload,
    exchange_hash,
    ext_info_payload,
    guess_was_wrong,
    negotiate,
    parse_ext_info,
    parse_strings,
)
from wraith.proto.ssh.transport_events import (
    NEED_DATA,
    ConnectionClosed,
    DisconnectReceived,
    ExtInfoReceived,
    HostKeyReceived,
    KexComplete,
    NeedData,
    PayloadReceived,
    TransportError,
    TransportEvent,
    Unimplemented,
    VersionReceived,
)
from wraith.proto.ssh.wire import Reader, message, string, uint32

__all__ = [
    "DEFAULT_CIPHERS",
    "DEFAULT_KEX",
    "MAX_SEND_PAYLOAD",
    "KexPhase",
    "Role",
    "Transport",
    "TransportState",
]

DEFAULT_KEX: tuple[str, ...] = (
    *(("mlkem768x25519-sha256",) if MLKEM_AVAILABLE else ()),
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
)
DEFAULT_CIPHERS: tuple[str, ...] = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
)
#: Never used: every cipher we offer is an AEAD, whose tag replaces the MAC and
#: makes the MAC negotiation moot.  Listed because some peers (paramiko) still
#: insist that the MAC lists intersect.
_MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-256")
_HOST_KEY_ALGORITHMS = (hostkey.ED25519,)
#: Largest payload ``send_payload()`` takes: OpenSSH refuses packet_length over 256 KiB.
MAX_SEND_PAYLOAD = 256 * 1024 - 64
_MAX_LINE = 255  # RFC 4253 4.2, CR LF included
_MAX_DESCRIPTION = 1024
_UPPER_LAYER_SERVICE = (Msg.SERVICE_REQUEST, Msg.SERVICE_ACCEPT)


class Role(enum.Enum):
    """Which end of the connection this transport is."""

    #: Connects, verifies the host key, sends message 30.
    CLIENT = enum.auto()
    #: Accepts, signs with its host key, sends message 31.
    SERVER = enum.auto()


class TransportState(enum.Enum):
    """Where the connection is, as a whole."""

    #: Waiting for the peer's identification line.
    VERSION = enum.auto()
    #: The first key exchange; nothing but kex traffic yet.
    KEX_INITIAL = enum.auto()
    #: Keys are in place; payloads flow.
    OPEN = enum.auto()
    #: A key re-exchange is running; payloads still flow, ours are queued.
    REKEY = enum.auto()
    #: Terminal: DISCONNECT sent or received, or the peer closed the stream.
    CLOSED = enum.auto()
    #: Terminal: a protocol error (a DISCONNECT was queued).
    ERROR = enum.auto()


class KexPhase(enum.Enum):
    """Where the current key exchange is."""

    #: No exchange running.
    IDLE = enum.auto()
    #: Our KEXINIT is out; the peer's has not arrived.
    KEXINIT = enum.auto()
    #: Server: both KEXINITs known; waiting for the client's message 30.
    ECDH_INIT = enum.auto()
    #: Client: message 30 sent; waiting for the server's message 31.
    ECDH_REPLY = enum.auto()
    #: Client, first exchange: HostKeyReceived returned; NEWKEYS goes out on the next call.
    HOST_KEY = enum.auto()
    #: Our NEWKEYS is out; waiting for the peer's.
    NEWKEYS = enum.auto()


class _Input(enum.Enum):
    GOT_VERSION = enum.auto()
    KEX_STARTED = enum.auto()
    KEX_DONE = enum.auto()
    CLOSE = enum.auto()
    EOF = enum.auto()


_LIVE = (
    TransportState.VERSION,
    TransportState.KEX_INITIAL,
    TransportState.OPEN,
    TransportState.REKEY,
)
_TRANSITIONS: dict[tuple[TransportState, _Input], TransportState] = {
    (TransportState.VERSION, _Input.GOT_VERSION): TransportState.KEX_INITIAL,
    (TransportState.KEX_INITIAL, _Input.KEX_DONE): TransportState.OPEN,
    (TransportState.OPEN, _Input.KEX_STARTED): TransportState.REKEY,
    (TransportState.REKEY, _Input.KEX_DONE): TransportState.OPEN,
    **{(s, _Input.CLOSE): TransportState.CLOSED for s in _LIVE},
    **{(s, _Input.EOF): TransportState.CLOSED for s in (*_LIVE, TransportState.CLOSED)},
}

#: The kex messages each role may receive in each phase, and the phase they lead to.
#: The client leaves HOST_KEY (to NEWKEYS, sending its own) on the next
#: ``next_event()`` call, or at once in a re-exchange, where no event is returned.
_KEX_TRANSITIONS: dict[tuple[Role, KexPhase, int], KexPhase] = {
    (Role.CLIENT, KexPhase.IDLE, Msg.KEXINIT): KexPhase.ECDH_REPLY,
    (Role.CLIENT, KexPhase.KEXINIT, Msg.KEXINIT): KexPhase.ECDH_REPLY,
    (Role.CLIENT, KexPhase.ECDH_REPLY, Msg.KEX_ECDH_REPLY): KexPhase.HOST_KEY,
    (Role.CLIENT, KexPhase.NEWKEYS, Msg.NEWKEYS): KexPhase.IDLE,
    (Role.SERVER, KexPhase.IDLE, Msg.KEXINIT): KexPhase.ECDH_INIT,
    (Role.SERVER, KexPhase.KEXINIT, Msg.KEXINIT): KexPhase.ECDH_INIT,
    (Role.SERVER, KexPhase.ECDH_INIT, Msg.KEX_ECDH_INIT): KexPhase.NEWKEYS,
    (Role.SERVER, KexPhase.NEWKEYS, Msg.NEWKEYS): KexPhase.IDLE,
}


def _check_version_string(version: str) -> bytes:
    raw = version.encode("ascii", "replace")
    if not version.startswith("SSH-2.0-") or len(version) > _MAX_LINE - 2 or len(version) < 9:
        raise LocalProtocolError(f"version must be 'SSH-2.0-<software>', ≤ 253 chars: {version!r}")
    if not all(0x20 <= b < 0x7F for b in raw):
        raise LocalProtocolError(f"version must be printable ASCII: {version!r}")
    return raw


def _printable(text: str) -> str:
    """Peer text made safe for a log line: controls become '?', bounded length."""
    return "".join(c if c.isprintable() else "?" for c in text[:_MAX_DESCRIPTION])


class Transport:
    """One end of an SSH transport connection.

    ``host_key`` is required for the server and ignored by the client.
    ``max_packet`` bounds the total size of a received packet (length field,
    body and tag; at least 35000).  ``max_version_lines`` bounds the lines a
    server may send before its identification (each at most 255 bytes).
    ``rekey_bytes`` and ``rekey_interval`` trigger a re-exchange by volume
    (either direction) and by time.  ``server_sig_algs`` is what a server
    announces in EXT_INFO.  ``rng`` supplies every random byte we choose.
    """

    def __init__(
        self,
        role: Role,
        *,
        host_key: Ed25519PrivateKey | None = None,
        version: str = "SSH-2.0-Wraith_0.1",
        kex_algorithms: Sequence[str] = DEFAULT_KEX,
        ciphers: Sequence[str] = DEFAULT_CIPHERS,
        max_packet: int = 256 * 1024 + 64,
        max_version_lines: int = 50,
        rekey_bytes: int = 1 << 30,
        rekey_interval: float = 3600.0,
        server_sig_algs: Sequence[str] = (hostkey.ED25519,),
        now: float = 0.0,
        rng: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not isinstance(role, Role):
            raise LocalProtocolError(f"role must be a Role, not {role!r}")
        if role is Role.SERVER and host_key is None:
            raise LocalProtocolError("a server transport needs a host_key")
        if max_packet < MIN_MAX_PACKET:
            raise LocalProtocolError(f"max_packet must be at least {MIN_MAX_PACKET}")
        if max_version_lines < 1:
            raise LocalProtocolError("max_version_lines must be at least 1")
        if rekey_bytes < 1 or not rekey_interval > 0:
            raise LocalProtocolError("rekey_bytes and rekey_interval must be positive")
        for name in kex_algorithms:
            if name not in KEX_METHODS:
                raise LocalProtocolError(f"unsupported key exchange {name!r}")
        for name in ciphers:
            if name not in CIPHERS:
                raise LocalProtocolError(f"unsupported cipher {name!r}")
        if not kex_algorithms or not ciphers:
            raise LocalProtocolError("kex_algorithms and ciphers must not be empty")
        self._role = role
        self._host_key = host_key if role is Role.SERVER else None
        self._version = _check_version_string(version)
        self._kex_algorithms = tuple(kex_algorithms)
        self._ciphers = tuple(ciphers)
        self._max_version_lines = max_version_lines
        self._rekey_bytes = rekey_bytes
        self._rekey_interval = rekey_interval
        self._server_sig_algs = tuple(server_sig_algs)
        self._rng = rng
        self._clock = now

        self._reader = PacketReader(max_packet)
        self._writer = PacketWriter(rng)
        self._out: list[bytes | bytearray] = []
        self._data_handler: Callable[[bytes | memoryview], None] | None = None
        self._out_bytes = 0
        self._queue: list[bytes] = []
        self._queue_bytes = 0
        self._send_blocked = True

        self._state = TransportState.VERSION
        self._phase = KexPhase.IDLE
        self._eof = False
        self._closed: ConnectionClosed | None = None
        self._error: TransportError | None = None
        self._version_lines = 0
        self._peer_version_raw: bytes | None = None
        self._peer_version: str | None = None
        self._strict = False
        self._peer_wants_ext_info = False
        self._session_id: bytes | None = None
        self._server_host_key_blob: bytes | None = None
        self._algorithms: Algorithms | None = None
        self._rekey_deadline: float | None = None
        self._mark_in = 0
        self._mark_out = 0

        # Per-exchange state, replaced at each KEXINIT.
        self._our_kexinit: KexInit | None = None
        self._our_kexinit_raw = b""
        self._peer_kexinit_raw = b""
        self._pending_algs: Algorithms | None = None
        self._kex: KexMethod | None = None
        self._q_c = b""  # client: the public value we sent in message 30
        self._skip_guessed_packet = False
        self._next_in: PacketCipher | None = None
        self._next_out: PacketCipher | None = None

        self._emit_raw(self._version + b"\r\n")
        self._send_kexinit(first=True)

    # -- public properties ---------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def state(self) -> TransportState:
        return self._state

    @property
    def kex_phase(self) -> KexPhase:
        return self._phase

    @property
    def session_id(self) -> bytes | None:
        """H of the first exchange, once computed (before ``HostKeyReceived``/``KexComplete``)."""
        return self._session_id

    @property
    def server_host_key_blob(self) -> bytes | None:
        """Client: the server's ssh-ed25519 key blob, once its signature checked."""
        return self._server_host_key_blob

    @property
    def peer_version(self) -> str | None:
        """The peer's identification line without CR LF."""
        return self._peer_version

    @property
    def algorithms(self) -> Algorithms | None:
        """What the last completed key exchange negotiated."""
        return self._algorithms

    @property
    def strict_kex(self) -> bool:
        """Whether both sides agreed on strict kex (known after the peer's first KEXINIT)."""
        return self._strict

    @property
    def pending_output(self) -> int:
        """Bytes waiting in ``data_to_send()``."""
        return self._out_bytes

    @property
    def queued_payload_bytes(self) -> int:
        """Bytes of upper-layer payloads held back by a running key exchange."""
        return self._queue_bytes

    # -- the driver's side ---------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed its side."""
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() called with data after EOF")
            return
        if not data:
            self._eof = True
        elif self._state in _LIVE:
            # Terminal states drop input: nothing will ever parse it.
            self._reader.feed(data)

    def set_data_handler(self, handler: Callable[[bytes | memoryview], None] | None) -> None:
        """Hand CHANNEL_DATA payloads to ``handler`` as they are parsed, instead of
        returning a ``PayloadReceived`` for each (the bulk of a busy session).

        ``next_event()`` then goes on parsing after each one, so the handler
        must finish with the payload (and anything it causes) before it
        returns; if it ends the connection, parsing stops there.
        """
        self._data_handler = handler

    def get_buffer(self, size: int) -> memoryview:
        """Room for up to ``size`` bytes from the peer, for ``recv_into``; no copy.

        Report what was written with ``buffer_filled()``, and release the view
        first (``with`` or ``.release()``).  EOF still goes to ``receive_data(b"")``.
        """
        if self._eof:
            raise LocalProtocolError("get_buffer() called after EOF")
        return self._reader.get_buffer(size)

    def buffer_filled(self, n: int) -> None:
        """``n`` bytes from the peer were written into the last ``get_buffer()`` view."""
        if self._eof:
            raise LocalProtocolError("buffer_filled() called after EOF")
        if self._state in _LIVE:
            self._reader.buffer_filled(n)

    def trim(self) -> None:
        """Free the receive buffer's memory if it holds nothing (call on an idle link)."""
        self._reader.trim()

    def data_to_send(self) -> bytes:
        """Return and clear the bytes queued for the peer."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 and isinstance(out[0], bytes) else b"".join(out)
        self._out = []
        self._out_bytes = 0
        return data

    def data_to_send_views(self) -> list[memoryview]:
        """Like ``data_to_send()``, as one view per packet without joining them.

        For ``socket.sendmsg()`` or ``writelines()``; the buffers are ours no
        longer, so the driver may hold them as long as it needs.
        """
        views = [memoryview(b) for b in self._out]
        self._out = []
        self._out_bytes = 0
        return views

    def get_timer(self) -> float | None:
        """When ``handle_timer()`` should next be called (rekey by time), or ``None``."""
        if self._state is TransportState.OPEN:
            return self._rekey_deadline
        return None

    def handle_timer(self, now: float) -> None:
        """Advance the clock to ``now``; start a rekey if its deadline passed."""
        self._clock = max(self._clock, now)
        deadline = self._rekey_deadline
        if self._state is TransportState.OPEN and deadline is not None and now >= deadline:
            self._begin_rekey()

    def next_event(self) -> TransportEvent | NeedData:
        """Parse what has been buffered: one event, or ``NEED_DATA``."""
        if self._state is TransportState.ERROR:
            assert self._error is not None
            raise TransportError(f"transport already failed: {self._error.msg}", self._error.reason)
        try:
            return self._next_event()
        except TransportError as exc:
            self._fail(exc)
            raise
        except RemoteProtocolError as exc:
            # A malformed field found by wire.Reader: the generic reason fits.
            err = TransportError(exc.msg, DisconnectReason.PROTOCOL_ERROR)
            self._fail(err)
            raise err from exc

    # -- the upper layers' side ----------------------------------------------

    def send_payload(self, payload: bytes, tail: bytes | bytearray | memoryview = b"") -> None:
        """Send a message of the layers above (5, 6, or number 50 and up).

        The message is ``payload`` followed by ``tail`` (a message's data may
        come separately from its head: it is copied once, into the packet, and
        not held after the call).  Allowed once the first ``KexComplete`` was
        returned.  During a re-exchange the message waits and goes out right
        after our NEWKEYS.
        """
        state = self._state
        if state is not TransportState.OPEN and state is not TransportState.REKEY:
            raise LocalProtocolError(f"cannot send payloads in state {state.name}")
        if not payload or not (payload[0] >= 50 or payload[0] in _UPPER_LAYER_SERVICE):
            raise LocalProtocolError("send_payload() takes message numbers 5, 6 and 50+ only")
        size = len(payload) + len(tail)
        if size > MAX_SEND_PAYLOAD:
            raise LocalProtocolError(f"payload of {size} bytes exceeds {MAX_SEND_PAYLOAD}")
        if self._send_blocked:
            self._queue.append(payload + bytes(tail) if tail else payload)
            self._queue_bytes += size
            return
        self._emit_raw(self._writer.write(payload, tail))
        if self._writer.bytes_written - self._mark_out >= self._rekey_bytes:
            self._maybe_rekey()

    def send_payload_into(self, head: bytes, room: int, fill: Callable[[memoryview], int]) -> int:
        """Send ``head`` plus what ``fill(view)`` writes (at most ``room`` bytes)
        as one message, the bytes written straight into the packet; returns
        ``fill``'s count (nothing is sent when it is 0 or less).  During a
        re-exchange the bytes are collected in a buffer of their own and wait."""
        state = self._state
        if state is not TransportState.OPEN and state is not TransportState.REKEY:
            raise LocalProtocolError(f"cannot send payloads in state {state.name}")
        if not head or head[0] < 50:
            raise LocalProtocolError("send_payload_into() takes message numbers 50+ only")
        if len(head) + room > MAX_SEND_PAYLOAD:
            raise LocalProtocolError(
                f"payload of {len(head) + room} bytes exceeds {MAX_SEND_PAYLOAD}"
            )
        if self._send_blocked:
            buf = bytearray(room)
            with memoryview(buf) as view:
                got = fill(view)
            if got > 0:
                self._queue.append(head + bytes(buf[:got]))
                self._queue_bytes += len(head) + got
            return got
        wire, got = self._writer.write_into(head, room, fill)
        if wire is not None:
            self._emit_raw(wire)
            if self._writer.bytes_written - self._mark_out >= self._rekey_bytes:
                self._maybe_rekey()
        return got

    def send_unimplemented(self, seq: int) -> None:
        """Answer the peer's packet ``seq`` (from ``PayloadReceived.seq``) with UNIMPLEMENTED."""
        if self._state not in _LIVE:
            raise LocalProtocolError(f"cannot send in state {self._state.name}")
        if not 0 <= seq < 1 << 32:
            raise LocalProtocolError(f"sequence number out of range: {seq}")
        self._emit(message(Msg.UNIMPLEMENTED, uint32(seq)))

    def start_rekey(self) -> None:
        """Start a key re-exchange now; a no-op if one is already running."""
        if self._state is TransportState.REKEY:
            return
        if self._state is not TransportState.OPEN:
            raise LocalProtocolError(f"cannot rekey in state {self._state.name}")
        self._begin_rekey()

    def disconnect(self, reason: DisconnectReason, description: str = "") -> None:
        """Queue a DISCONNECT and close; a no-op once closed.  Queued payloads are dropped."""
        if self._state not in _LIVE:
            return
        self._send_disconnect(reason, description)
        self._move(_Input.CLOSE)

    # -- internals: output ---------------------------------------------------

    def _emit_raw(self, data: bytes | bytearray) -> None:
        self._out.append(data)
        self._out_bytes += len(data)

    def _emit(self, payload: bytes) -> None:
        self._emit_raw(self._writer.write(payload))

    def _send_disconnect(self, reason: DisconnectReason, description: str) -> None:
        self._queue.clear()
        self._queue_bytes = 0
        self._emit(
            message(
                Msg.DISCONNECT, uint32(reason), string(description[:_MAX_DESCRIPTION]), string("")
            )
        )

    def _fail(self, exc: TransportError) -> None:
        if self._state in _LIVE:
            self._send_disconnect(exc.reason, exc.msg)
        self._state = TransportState.ERROR
        self._error = exc

    def _move(self, event: _Input) -> None:
        new = _TRANSITIONS.get((self._state, event))
        if new is None:
            old, self._state = self._state, TransportState.ERROR
            raise LocalProtocolError(f"SSH transport: {event.name} is illegal in {old.name}")
        self._state = new

    # -- internals: key exchange, our side -----------------------------------

    def _send_kexinit(self, *, first: bool) -> None:
        kex = list(self._kex_algorithms)
        if first:
            # The markers go only into the first KEXINIT: both extensions are
            # decided there, and a later appearance would mean nothing.
            kex += [EXT_INFO_C, STRICT_C] if self._role is Role.CLIENT else [EXT_INFO_S, STRICT_S]
        init = KexInit(
            cookie=self._rng(16),
            kex_algorithms=tuple(kex),
            server_host_key_algorithms=_HOST_KEY_ALGORITHMS,
            ciphers_c2s=self._ciphers,
            ciphers_s2c=self._ciphers,
            macs_c2s=_MACS,
            macs_s2c=_MACS,
            compression_c2s=("none",),
            compression_s2c=("none",),
        )
        self._our_kexinit = init
        self._our_kexinit_raw = init.to_payload()
        self._send_blocked = True
        self._phase = KexPhase.KEXINIT
        self._emit(self._our_kexinit_raw)

    def _begin_rekey(self) -> None:
        self._move(_Input.KEX_STARTED)
        self._send_kexinit(first=False)

    def _maybe_rekey(self) -> None:
        if self._state is TransportState.OPEN and (
            self._writer.bytes_written - self._mark_out >= self._rekey_bytes
            or self._reader.bytes_read - self._mark_in >= self._rekey_bytes
        ):
            self._begin_rekey()

    def _send_newkeys(self) -> None:
        assert self._next_out is not None
        self._emit(bytes((Msg.NEWKEYS,)))
        self._writer.cipher = self._next_out
        self._next_out = None
        if self._strict:
            self._writer.seq = 0
        self._mark_out = self._writer.bytes_written
        if (
            self._role is Role.SERVER
            and self._state is TransportState.KEX_INITIAL
            and self._peer_wants_ext_info
        ):
            # RFC 8308 2.4: EXT_INFO must be the very next packet after our first NEWKEYS.
            sig_algs = ",".join(self._server_sig_algs).encode()
            self._emit(ext_info_payload({"server-sig-algs": sig_algs}))
        self._send_blocked = False
        queue, self._queue = self._queue, []
        self._queue_bytes = 0
        for payload in queue:
            self._emit(payload)

    def _derive_ciphers(self, k: bytes, h: bytes) -> None:
        if self._session_id is None:
            self._session_id = h
        sid = self._session_id
        algs = self._pending_algs
        assert algs is not None

        def build(name: str, iv_letter: str, key_letter: str) -> PacketCipher:
            spec = CIPHERS[name]
            key = derive_key(k, h, key_letter, sid, spec.key_len)
            iv = derive_key(k, h, iv_letter, sid, spec.iv_len) if spec.iv_len else b""
            return make_cipher(name, key, iv)

        c2s = build(algs.cipher_c2s, "A", "C")
        s2c = build(algs.cipher_s2c, "B", "D")
        if self._role is Role.CLIENT:
            self._next_out, self._next_in = c2s, s2c
        else:
            self._next_out, self._next_in = s2c, c2s

    # -- internals: receiving ------------------------------------------------

    def _next_event(self) -> TransportEvent | NeedData:
        reader = self._reader
        while True:
            state = self._state
            if state is TransportState.CLOSED:
                return self._closed_event()
            if state is TransportState.VERSION:
                return self._read_version()
            if self._phase is KexPhase.HOST_KEY:
                # The caller has seen HostKeyReceived and did not disconnect.
                self._leave_host_key()
            got = reader.next_packet()
            if got is None:
                return self._closed_event() if self._eof else NEED_DATA
            payload, seq = got
            msg = payload[0]
            # Hot path: channel data and the like, with no exchange in the way.
            if msg >= 50 or msg in _UPPER_LAYER_SERVICE:
                if state is TransportState.OPEN or (
                    state is TransportState.REKEY and self._phase is KexPhase.KEXINIT
                ):
                    if reader.bytes_read - self._mark_in >= self._rekey_bytes:
                        self._maybe_rekey()
                    if msg == Msg.CHANNEL_DATA and self._data_handler is not None:
                        self._data_handler(payload)  # no event object per data packet
                        continue
                    return PayloadReceived(payload=payload, seq=seq)
                raise TransportError(f"message {msg} is not allowed during key exchange")
            if state is TransportState.KEX_INITIAL and seq == 0xFFFFFFFF:
                raise TransportError("sequence number wrapped during the initial key exchange")
            event = self._dispatch(msg, bytes(payload), seq)
            self._maybe_rekey()
            if event is not None:
                return event

    def _closed_event(self) -> ConnectionClosed | NeedData:
        if not self._eof:
            return NEED_DATA
        if self._closed is not None:
            return self._closed
        if self._state is TransportState.VERSION:
            reason = "EOF before the peer's identification line"
        elif self._state is TransportState.CLOSED:
            reason = "EOF"
        elif self._reader.buffered:
            reason = "EOF in the middle of a packet"
        elif self._state is TransportState.KEX_INITIAL:
            reason = "EOF during the initial key exchange"
        else:
            reason = "EOF"
        self._move(_Input.EOF)
        self._closed = ConnectionClosed(reason=reason)
        return self._closed

    def _read_version(self) -> VersionReceived | ConnectionClosed | NeedData:
        while True:
            line = self._reader.take_line(_MAX_LINE)
            if line is None:
                return self._closed_event() if self._eof else NEED_DATA
            self._version_lines += 1
            text = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            if text.startswith(b"SSH-"):
                return self._accept_version(text)
            if self._role is Role.SERVER:
                # Only a server may precede its identification with other lines.
                raise TransportError("the client's first line is not an SSH identification")
            if self._version_lines >= self._max_version_lines:
                raise TransportError(f"no identification within {self._max_version_lines} lines")

    def _accept_version(self, raw: bytes) -> VersionReceived:
        if not all(0x20 <= b < 0x7F for b in raw):
            raise TransportError("identification line has non-printable characters")
        parts = raw.split(b"-", 2)
        if len(parts) < 3 or parts[1] not in (b"2.0", b"1.99"):
            raise TransportError(
                f"unsupported protocol version {raw[:64]!r}",
                DisconnectReason.PROTOCOL_VERSION_NOT_SUPPORTED,
            )
        if not parts[2] or parts[2].startswith(b" "):
            raise TransportError("identification line has no software version")
        self._peer_version_raw = raw
        self._peer_version = raw.decode("ascii")
        self._move(_Input.GOT_VERSION)
        return VersionReceived(version=self._peer_version)

    def _dispatch(self, msg: int, payload: bytes, seq: int) -> TransportEvent | None:
        if msg == Msg.DISCONNECT:
            return self._on_disconnect(payload)
        if msg in (Msg.KEXINIT, Msg.NEWKEYS) or 30 <= msg < 50:
            return self._on_kex_message(msg, payload, seq)
        if self._strict and self._state is TransportState.KEX_INITIAL:
            raise TransportError(f"strict kex: message {msg} during the initial key exchange")
        if msg == Msg.IGNORE or msg == Msg.DEBUG:
            return None
        if msg == Msg.UNIMPLEMENTED:
            r = Reader(payload, 1)
            return Unimplemented(seq=r.uint32())
        if msg == Msg.EXT_INFO:
            if self._state is TransportState.KEX_INITIAL:
                raise TransportError("EXT_INFO before the first NEWKEYS")
            return ExtInfoReceived(extensions=parse_ext_info(payload))
        # An unknown transport-layer number (RFC 4253 11.4).
        self._emit(message(Msg.UNIMPLEMENTED, uint32(seq)))
        return None

    def _on_disconnect(self, payload: bytes) -> DisconnectReceived:
        r = Reader(payload, 1)
        code = r.uint32()
        description = _printable(r.string(64 * 1024).decode("utf-8", "replace"))
        self._queue.clear()
        self._queue_bytes = 0
        self._move(_Input.CLOSE)
        return DisconnectReceived(code=code, description=description)

    def _on_kex_message(self, msg: int, payload: bytes, seq: int) -> TransportEvent | None:
        if self._skip_guessed_packet and 30 <= msg < 50:
            # RFC 4253 7.1: the peer's guessed first kex packet was for the wrong method.
            self._skip_guessed_packet = False
            return None
        new = _KEX_TRANSITIONS.get((self._role, self._phase, msg))
        if new is None:
            raise TransportError(
                f"unexpected message {msg} in key exchange phase {self._phase.name}"
            )
        if msg == Msg.KEXINIT:
            self._on_kexinit(payload, seq)
            self._phase = new
            return None
        if msg == Msg.NEWKEYS:
            return self._on_newkeys(payload, new)
        if self._role is Role.SERVER:
            self._on_ecdh_init(payload)
            self._phase = new
            return None
        return self._on_ecdh_reply(payload, new)

    def _on_kexinit(self, payload: bytes, seq: int) -> None:
        peer = KexInit.parse(payload)
        first = self._state is TransportState.KEX_INITIAL
        client = self._role is Role.CLIENT
        if first:
            self._strict = (STRICT_S if client else STRICT_C) in peer.kex_algorithms
            if self._strict and seq != 0:
                raise TransportError("strict kex: KEXINIT was not the peer's first packet")
            self._peer_wants_ext_info = not client and EXT_INFO_C in peer.kex_algorithms
        if self._phase is KexPhase.IDLE:
            self._begin_rekey()  # the peer started a re-exchange
        ours = self._our_kexinit
        assert ours is not None
        self._peer_kexinit_raw = payload
        c_init, s_init = (ours, peer) if client else (peer, ours)
        algs = negotiate(c_init, s_init)
        if algs.compression_c2s != "none" or algs.compression_s2c != "none":
            raise TransportError("no common compression", DisconnectReason.KEY_EXCHANGE_FAILED)
        self._pending_algs = algs
        self._skip_guessed_packet = peer.first_kex_packet_follows and guess_was_wrong(
            c_init, s_init
        )
        self._kex = KEX_METHODS[algs.kex](self._rng)
        if client:
            self._q_c = self._kex.client_public()
            self._emit(ecdh_payload(Msg.KEX_ECDH_INIT, self._q_c))

    def _hash(self, k_s: bytes, q_c: bytes, q_s: bytes, k: bytes) -> bytes:
        peer_version = self._peer_version_raw
        assert peer_version is not None
        if self._role is Role.CLIENT:
            v_c, v_s = self._version, peer_version
            i_c, i_s = self._our_kexinit_raw, self._peer_kexinit_raw
        else:
            v_c, v_s = peer_version, self._version
            i_c, i_s = self._peer_kexinit_raw, self._our_kexinit_raw
        return exchange_hash(v_c=v_c, v_s=v_s, i_c=i_c, i_s=i_s, k_s=k_s, q_c=q_c, q_s=q_s, k=k)

    def _on_ecdh_init(self, payload: bytes) -> None:
        assert self._kex is not None and self._host_key is not None
        (q_c,) = parse_strings(payload, 1)
        q_s, k = self._kex.server_respond(q_c)
        k_s = hostkey.public_blob(self._host_key)
        h = self._hash(k_s, q_c, q_s, k)
        signature = hostkey.sign(self._host_key, h)
        self._emit(ecdh_payload(Msg.KEX_ECDH_REPLY, k_s, q_s, signature))
        self._derive_ciphers(k, h)
        self._send_newkeys()

    def _on_ecdh_reply(self, payload: bytes, new: KexPhase) -> HostKeyReceived | None:
        assert self._kex is not None
        k_s, q_s, signature = parse_strings(payload, 3)
        k = self._kex.client_shared(q_s)
        h = self._hash(k_s, self._q_c, q_s, k)
        if not hostkey.verify(k_s, signature, h):
            raise TransportError(
                "the server's host key signature over H does not verify",
                DisconnectReason.KEY_EXCHANGE_FAILED,
            )
        self._derive_ciphers(k, h)
        self._phase = new
        if self._state is TransportState.KEX_INITIAL:
            self._server_host_key_blob = k_s
            return HostKeyReceived(key_blob=k_s)
        if k_s != self._server_host_key_blob:
            raise TransportError(
                "the server presented a different host key in a re-exchange",
                DisconnectReason.HOST_KEY_NOT_VERIFIABLE,
            )
        self._leave_host_key()
        return None

    def _leave_host_key(self) -> None:
        self._send_newkeys()
        self._phase = KexPhase.NEWKEYS

    def _on_newkeys(self, payload: bytes, new: KexPhase) -> KexComplete:
        if len(payload) != 1:
            raise TransportError("NEWKEYS carries no data")
        assert self._next_in is not None and self._pending_algs is not None
        self._reader.set_cipher(self._next_in)
        self._next_in = None
        if self._strict:
            self._reader.seq = 0
        self._mark_in = self._reader.bytes_read
        first = self._state is TransportState.KEX_INITIAL
        self._algorithms = algs = self._pending_algs
        self._pending_algs = None
        self._kex = None
        self._phase = new
        self._move(_Input.KEX_DONE)
        self._rekey_deadline = self._clock + self._rekey_interval
        assert self._session_id is not None
        return KexComplete(
            first=first,
            session_id=self._session_id,
            kex=algs.kex,
            cipher_c2s=algs.cipher_c2s,
            cipher_s2c=algs.cipher_s2c,
        )
