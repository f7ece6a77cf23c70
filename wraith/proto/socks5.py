"""SOCKS5 (RFC 1928) with username/password auth (RFC 1929), both ends, Sans-IO.

Theory of operation: ``receive_data()`` only appends to a buffer (``b""`` is
EOF); ``next_event()`` parses as far as the buffer allows, queues whatever the
protocol answers by itself (method selection, auth status, error replies) for
``data_to_send()``, and returns an event or ``NEED_DATA``.  Each side has one
transition table (``_SERVER_TRANSITIONS``, ``_CLIENT_TRANSITIONS``); anything
not in it, and every error, moves that side to the terminal ``ERROR`` state.

Bytes are checked as soon as they arrive, so a wrong version or command fails
on its first byte rather than after the peer sends (or withholds) the rest.
Every handshake message is at most 513 bytes; ``max_buffer`` bounds how much an
incomplete message may occupy.  Bytes after the last handshake message are not
parsed: they are ``trailing_data`` for the driver to forward (a client may
pipeline its payload right behind the CONNECT).

Domain names are passed on unresolved (socks5h): DNS is the far side's job,
which is the privacy default of this project.  Events, codes, ``NEED_DATA`` and
:class:`SocksError` live in :mod:`wraith.proto.socks5_events` and are
re-exported here.
"""

from __future__ import annotations

import enum
import errno
import hmac
import ipaddress
from collections.abc import Mapping

from wraith.proto.errors import LocalProtocolError, RemoteProtocolError
from wraith.proto.socks5_events import (
    NEED_DATA,
    AddressType,
    Connected,
    ConnectRequest,
    NeedData,
    Reply,
    SocksError,
    _check_host,
)

__all__ = [
    "NEED_DATA",
    "AddressType",
    "ClientState",
    "ConnectRequest",
    "Connected",
    "NeedData",
    "Reply",
    "ServerState",
    "SocksClient",
    "SocksError",
    "SocksServer",
    "reply_for_errno",
]

_VERSION = 0x05
_AUTH_VERSION = 0x01  # RFC 1929 sub-negotiation version
_METHOD_NO_AUTH = 0x00
_METHOD_USERPASS = 0x02
_METHOD_NONE_ACCEPTABLE = 0xFF
_CMD_CONNECT = 0x01
_CMD_NAMES = {0x01: "CONNECT", 0x02: "BIND", 0x03: "UDP ASSOCIATE"}


class ServerState(enum.Enum):
    """Where a :class:`SocksServer` is in the handshake."""

    #: Waiting for the version / method-selection message.
    GREETING = enum.auto()
    #: Username/password chosen; waiting for the RFC 1929 sub-negotiation.
    AUTH = enum.auto()
    #: Waiting for the CONNECT request.
    REQUEST = enum.auto()
    #: ``ConnectRequest`` handed out; the driver connects, then calls ``reply()``.
    CONNECTING = enum.auto()
    #: Reply queued; the handshake is over and the stream belongs to the driver.
    DONE = enum.auto()
    #: Terminal: a protocol error happened on either side.
    ERROR = enum.auto()


class _ServerInput(enum.Enum):
    CHOSE_NO_AUTH = enum.auto()
    CHOSE_USERPASS = enum.auto()
    AUTH_OK = enum.auto()
    GOT_REQUEST = enum.auto()
    SENT_REPLY = enum.auto()


_SERVER_TRANSITIONS: dict[tuple[ServerState, _ServerInput], ServerState] = {
    (ServerState.GREETING, _ServerInput.CHOSE_NO_AUTH): ServerState.REQUEST,
    (ServerState.GREETING, _ServerInput.CHOSE_USERPASS): ServerState.AUTH,
    (ServerState.AUTH, _ServerInput.AUTH_OK): ServerState.REQUEST,
    (ServerState.REQUEST, _ServerInput.GOT_REQUEST): ServerState.CONNECTING,
    (ServerState.CONNECTING, _ServerInput.SENT_REPLY): ServerState.DONE,
}


class ClientState(enum.Enum):
    """Where a :class:`SocksClient` is in the handshake."""

    #: Greeting queued; waiting for the server's method selection.
    GREETING = enum.auto()
    #: Username/password queued; waiting for the RFC 1929 status.
    AUTH = enum.auto()
    #: CONNECT queued; waiting for the reply.
    REQUEST = enum.auto()
    #: The proxy connected us; the stream is tunnelled (see ``trailing_data``).
    CONNECTED = enum.auto()
    #: Terminal: a protocol error or a refusal.
    ERROR = enum.auto()


class _ClientInput(enum.Enum):
    CHOSE_NO_AUTH = enum.auto()
    CHOSE_USERPASS = enum.auto()
    AUTH_OK = enum.auto()
    GOT_SUCCESS = enum.auto()


_CLIENT_TRANSITIONS: dict[tuple[ClientState, _ClientInput], ClientState] = {
    (ClientState.GREETING, _ClientInput.CHOSE_NO_AUTH): ClientState.REQUEST,
    (ClientState.GREETING, _ClientInput.CHOSE_USERPASS): ClientState.AUTH,
    (ClientState.AUTH, _ClientInput.AUTH_OK): ClientState.REQUEST,
    (ClientState.REQUEST, _ClientInput.GOT_SUCCESS): ClientState.CONNECTED,
}


def _reply_bytes(code: Reply, host: str = "0.0.0.0", port: int = 0) -> bytes:
    addr = ipaddress.ip_address(host)
    atyp = AddressType.IPV4 if addr.version == 4 else AddressType.IPV6
    return bytes([_VERSION, code, 0x00, atyp]) + addr.packed + port.to_bytes(2, "big")


def _address_length(buf: bytearray, offset: int) -> int | None:
    """Bytes of ATYP + address + port starting at ``offset``, or None if unknown yet.

    The caller has checked that ``buf[offset]`` exists and is a known ATYP.
    """
    atyp = buf[offset]
    if atyp == AddressType.IPV4:
        return 1 + 4 + 2
    if atyp == AddressType.IPV6:
        return 1 + 16 + 2
    if len(buf) <= offset + 1:
        return None
    return 1 + 1 + buf[offset + 1] + 2


def _decode_address(raw: bytes) -> tuple[AddressType, str, int]:
    """Split a complete ATYP + address + port field (ATYP already known valid)."""
    atyp = AddressType(raw[0])
    port = int.from_bytes(raw[-2:], "big")
    if atyp is AddressType.IPV4:
        return atyp, str(ipaddress.IPv4Address(raw[1:5])), port
    if atyp is AddressType.IPV6:
        return atyp, str(ipaddress.IPv6Address(raw[1:17])), port
    # latin-1 never fails, so a bad byte reaches _check_host and is reported there.
    return atyp, raw[2:-2].decode("latin-1"), port


class SocksServer:
    """The server side: accept a SOCKS5 CONNECT from a local client.

    ``credentials`` maps username to password.  If given (even empty), only
    RFC 1929 username/password (method 0x02) is accepted; otherwise only "no
    authentication" (0x00).  ``max_buffer`` (default 4096) bounds the bytes an
    incomplete handshake message may occupy; it cannot be below 1.

    Which errors queue a reply before raising :class:`SocksError`:

    - wrong version byte, EOF mid-handshake, oversize buffer: nothing (there is
      no reply a non-SOCKS5 peer would understand);
    - no acceptable method: ``05 FF``;
    - bad RFC 1929 version or credentials: status ``01 01``;
    - BIND, UDP ASSOCIATE or unknown command: ``COMMAND_NOT_SUPPORTED``;
    - unknown ATYP: ``ADDRESS_TYPE_NOT_SUPPORTED``;
    - bad domain name or port 0: ``GENERAL_FAILURE``.

    The driver should flush ``data_to_send()`` before closing, and should not
    read from the client while it is connecting upstream: whatever the client
    sends then stays in ``trailing_data``.
    """

    def __init__(
        self, *, credentials: Mapping[str, str] | None = None, max_buffer: int = 4096
    ) -> None:
        if max_buffer < 1:
            raise LocalProtocolError(f"max_buffer must be at least 1, got {max_buffer}")
        self._credentials: dict[bytes, bytes] | None = None
        if credentials is not None:
            self._credentials = {}
            for user, password in credentials.items():
                u, p = user.encode("utf-8"), password.encode("utf-8")
                # RFC 1929 carries each in a length byte; longer ones could never match.
                if not 1 <= len(u) <= 255 or len(p) > 255:
                    raise LocalProtocolError(
                        f"username must be 1..255 bytes and password 0..255 bytes ({user!r})"
                    )
                self._credentials[u] = p
        self._max_buffer = max_buffer
        self._state = ServerState.GREETING
        self._buf = bytearray()
        self._out = bytearray()
        self._eof = False
        self._username: str | None = None
        self._error: SocksError | None = None

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def username(self) -> str | None:
        """The RFC 1929 username, once it was accepted."""
        return self._username

    @property
    def trailing_data(self) -> bytes:
        """Bytes the client sent after its CONNECT request, for the driver to forward."""
        if self._state in (ServerState.CONNECTING, ServerState.DONE):
            return bytes(self._buf)
        return b""

    def data_to_send(self) -> bytes:
        """Return and clear the bytes queued for the client."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; ``b""`` means the client closed."""
        if self._eof:
            if data:
                self._state = ServerState.ERROR
                raise LocalProtocolError("receive_data() called with data after EOF")
            return
        if not data:
            self._eof = True
        elif self._state is not ServerState.ERROR:
            # After an error nothing will ever parse these bytes; dropping them
            # keeps a dead connection from growing the buffer.
            self._buf += data

    def next_event(self) -> ConnectRequest | NeedData:
        """Parse buffered bytes: a ``ConnectRequest``, or ``NEED_DATA``."""
        if self._state is ServerState.ERROR:
            raise SocksError("SOCKS5 server is in the ERROR state", self._error_reply())
        if self._state in (ServerState.CONNECTING, ServerState.DONE):
            self._state = ServerState.ERROR
            raise LocalProtocolError("the SOCKS5 handshake is over; use trailing_data")
        while True:
            if self._state is ServerState.GREETING:
                progressed = self._parse_greeting()
            elif self._state is ServerState.AUTH:
                progressed = self._parse_auth()
            else:
                request = self._parse_request()
                if request is not None:
                    return request
                progressed = False
            if not progressed:
                break
        if self._eof:
            raise self._fail("client closed the connection during the SOCKS5 handshake")
        if len(self._buf) > self._max_buffer:
            raise self._fail(
                f"SOCKS5 handshake message exceeds max_buffer ({self._max_buffer} bytes)"
            )
        return NEED_DATA

    def reply(self, code: Reply, bind_host: str = "0.0.0.0", bind_port: int = 0) -> None:
        """Queue the reply to the ``ConnectRequest``; legal once, after it."""
        try:
            code = Reply(code)
            ipaddress.ip_address(bind_host)
        except ValueError as exc:
            self._state = ServerState.ERROR
            raise LocalProtocolError(f"bad SOCKS5 reply: {exc}") from None
        if not 0 <= bind_port <= 65535:
            self._state = ServerState.ERROR
            raise LocalProtocolError(f"bind_port must be 0..65535, got {bind_port}")
        self._move(_ServerInput.SENT_REPLY)
        self._out += _reply_bytes(code, bind_host, bind_port)

    # -- internals ---------------------------------------------------------

    def _move(self, event: _ServerInput) -> None:
        new = _SERVER_TRANSITIONS.get((self._state, event))
        if new is None:
            old, self._state = self._state, ServerState.ERROR
            raise LocalProtocolError(f"SOCKS5 server: {event.name} is illegal in {old.name}")
        self._state = new

    def _error_reply(self) -> Reply:
        return self._error.reply if self._error is not None else Reply.GENERAL_FAILURE

    def _fail(
        self, msg: str, reply: Reply = Reply.GENERAL_FAILURE, send: bytes = b""
    ) -> SocksError:
        self._out += send
        self._state = ServerState.ERROR
        self._error = SocksError(msg, reply)
        return self._error

    def _check_version(self) -> None:
        if self._buf and self._buf[0] != _VERSION:
            first = self._buf[0]
            what = "SOCKS4 is not supported" if first == 4 else f"first byte {first:#04x}"
            raise self._fail(f"not a SOCKS5 client: {what}")

    def _parse_greeting(self) -> bool:
        buf = self._buf
        self._check_version()
        if len(buf) < 2:
            return False
        refuse = bytes([_VERSION, _METHOD_NONE_ACCEPTABLE])
        if buf[1] == 0:
            raise self._fail("SOCKS5 client offered no methods", Reply.NOT_ALLOWED, refuse)
        end = 2 + buf[1]
        if len(buf) < end:
            return False
        methods = bytes(buf[2:end])
        del buf[:end]
        if self._credentials is not None:
            want, event = _METHOD_USERPASS, _ServerInput.CHOSE_USERPASS
        else:
            want, event = _METHOD_NO_AUTH, _ServerInput.CHOSE_NO_AUTH
        if want not in methods:
            raise self._fail(
                f"SOCKS5 client offered methods {methods.hex()}, we require {want:02x}",
                Reply.NOT_ALLOWED,
                refuse,
            )
        self._out += bytes([_VERSION, want])
        self._move(event)
        return True

    def _parse_auth(self) -> bool:
        buf = self._buf
        failure = bytes([_AUTH_VERSION, 0x01])
        if buf and buf[0] != _AUTH_VERSION:
            raise self._fail(f"bad RFC 1929 version {buf[0]:#04x}", Reply.NOT_ALLOWED, failure)
        if len(buf) < 2:
            return False
        ulen = buf[1]
        if len(buf) < 3 + ulen:
            return False
        plen = buf[2 + ulen]
        end = 3 + ulen + plen
        if len(buf) < end:
            return False
        user, password = bytes(buf[2 : 2 + ulen]), bytes(buf[3 + ulen : end])
        del buf[:end]
        assert self._credentials is not None  # AUTH is only reachable with credentials
        expected = self._credentials.get(user)
        # Compare even for an unknown user so timing does not reveal which users exist.
        ok = hmac.compare_digest(password, expected if expected is not None else b"\0" * 256)
        if expected is None or not ok:
            raise self._fail(
                f"SOCKS5 authentication failed for user {user!r}", Reply.NOT_ALLOWED, failure
            )
        self._username = user.decode("utf-8")
        self._out += bytes([_AUTH_VERSION, 0x00])
        self._move(_ServerInput.AUTH_OK)
        return True

    def _parse_request(self) -> ConnectRequest | None:
        buf = self._buf
        self._check_version()
        if len(buf) >= 2 and buf[1] != _CMD_CONNECT:
            name = _CMD_NAMES.get(buf[1], f"{buf[1]:#04x}")
            raise self._fail(
                f"SOCKS5 command {name} is not supported",
                Reply.COMMAND_NOT_SUPPORTED,
                _reply_bytes(Reply.COMMAND_NOT_SUPPORTED),
            )
        # buf[2] is RSV; like most servers we ignore its value.
        if len(buf) < 4:
            return None
        if buf[3] not in AddressType._value2member_map_:
            raise self._fail(
                f"SOCKS5 address type {buf[3]:#04x} is not supported",
                Reply.ADDRESS_TYPE_NOT_SUPPORTED,
                _reply_bytes(Reply.ADDRESS_TYPE_NOT_SUPPORTED),
            )
        length = _address_length(buf, 3)
        if length is None or len(buf) < 3 + length:
            return None
        atyp, host, port = _decode_address(bytes(buf[3 : 3 + length]))
        del buf[: 3 + length]
        general = _reply_bytes(Reply.GENERAL_FAILURE)
        try:
            _check_host(host, atyp, SocksError)
        except SocksError as exc:
            raise self._fail(exc.msg, Reply.GENERAL_FAILURE, general) from None
        if port == 0:
            raise self._fail("SOCKS5 CONNECT to port 0", Reply.GENERAL_FAILURE, general)
        self._move(_ServerInput.GOT_REQUEST)
        return ConnectRequest(host=host, port=port, address_type=atyp)


class SocksClient:
    """The client side, for ``--proxy socks5://``: ask a proxy to CONNECT.

    ``host`` that is an IPv4 or IPv6 literal (brackets allowed) is sent as
    such; anything else is sent as a DOMAIN, unresolved.  Resolving first
    (curl's ``socks5://`` meaning) is the driver's job.  With ``username`` and
    ``password`` the greeting offers both "no auth" and RFC 1929; the proxy
    picks.  The first ``data_to_send()`` is the greeting; the auth message and
    the request are queued once the proxy's answer allows them.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        max_buffer: int = 4096,
    ) -> None:
        if max_buffer < 1:
            raise LocalProtocolError(f"max_buffer must be at least 1, got {max_buffer}")
        if (username is None) != (password is None):
            raise LocalProtocolError("give both username and password, or neither")
        self._auth: bytes | None = None
        if username is not None and password is not None:
            u, p = username.encode("utf-8"), password.encode("utf-8")
            if not 1 <= len(u) <= 255 or len(p) > 255:
                raise LocalProtocolError("username must be 1..255 bytes and password 0..255 bytes")
            self._auth = bytes([_AUTH_VERSION, len(u)]) + u + bytes([len(p)]) + p
        #: What we ask the proxy for; IP literals in canonical ``ipaddress`` form.
        self.request = _request_for(host, port)
        self._request_bytes = _encode_request(self.request)
        self._max_buffer = max_buffer
        self._state = ClientState.GREETING
        self._buf = bytearray()
        self._eof = False
        methods = [_METHOD_NO_AUTH] if self._auth is None else [_METHOD_NO_AUTH, _METHOD_USERPASS]
        self._out = bytearray([_VERSION, len(methods), *methods])

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def trailing_data(self) -> bytes:
        """Bytes the proxy sent after its success reply (already tunnelled data)."""
        return bytes(self._buf) if self._state is ClientState.CONNECTED else b""

    def data_to_send(self) -> bytes:
        """Return and clear the bytes queued for the proxy."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the proxy; ``b""`` means the proxy closed."""
        if self._eof:
            if data:
                self._state = ClientState.ERROR
                raise LocalProtocolError("receive_data() called with data after EOF")
            return
        if not data:
            self._eof = True
        elif self._state is not ClientState.ERROR:
            self._buf += data

    def next_event(self) -> Connected | NeedData:
        """Parse the proxy's answers: ``Connected``, or ``NEED_DATA``.

        A refusal raises :class:`SocksError` whose ``reply`` is the proxy's
        code (``NOT_ALLOWED`` for refused authentication, ``GENERAL_FAILURE``
        for a code outside RFC 1928); garbage raises ``RemoteProtocolError``.
        """
        if self._state is ClientState.ERROR:
            raise RemoteProtocolError("SOCKS5 client is in the ERROR state")
        if self._state is ClientState.CONNECTED:
            self._state = ClientState.ERROR
            raise LocalProtocolError("the SOCKS5 handshake is over; use trailing_data")
        try:
            while True:
                if self._state is ClientState.GREETING:
                    progressed = self._parse_method()
                elif self._state is ClientState.AUTH:
                    progressed = self._parse_auth_status()
                else:
                    connected = self._parse_reply()
                    if connected is not None:
                        return connected
                    progressed = False
                if not progressed:
                    break
            if self._eof:
                raise RemoteProtocolError("proxy closed the connection during the SOCKS5 handshake")
            if len(self._buf) > self._max_buffer:
                raise RemoteProtocolError(
                    f"SOCKS5 reply exceeds max_buffer ({self._max_buffer} bytes)"
                )
        except RemoteProtocolError:
            self._state = ClientState.ERROR
            raise
        return NEED_DATA

    # -- internals ---------------------------------------------------------

    def _move(self, event: _ClientInput) -> None:
        new = _CLIENT_TRANSITIONS.get((self._state, event))
        if new is None:
            old, self._state = self._state, ClientState.ERROR
            raise LocalProtocolError(f"SOCKS5 client: {event.name} is illegal in {old.name}")
        self._state = new

    def _check_version(self, expected: int = _VERSION) -> None:
        if self._buf and self._buf[0] != expected:
            raise RemoteProtocolError(f"not a SOCKS5 proxy: got byte {self._buf[0]:#04x}")

    def _parse_method(self) -> bool:
        self._check_version()
        if len(self._buf) < 2:
            return False
        method = self._buf[1]
        del self._buf[:2]
        if method == _METHOD_NO_AUTH:
            self._out += self._request_bytes
            self._move(_ClientInput.CHOSE_NO_AUTH)
        elif method == _METHOD_USERPASS and self._auth is not None:
            self._out += self._auth
            self._move(_ClientInput.CHOSE_USERPASS)
        elif method == _METHOD_NONE_ACCEPTABLE:
            raise SocksError("proxy accepted none of our authentication methods", Reply.NOT_ALLOWED)
        else:
            raise RemoteProtocolError(f"proxy chose method {method:#04x}, which we did not offer")
        return True

    def _parse_auth_status(self) -> bool:
        self._check_version(_AUTH_VERSION)
        if len(self._buf) < 2:
            return False
        status = self._buf[1]
        del self._buf[:2]
        if status != 0:
            raise SocksError("proxy rejected our username/password", Reply.NOT_ALLOWED)
        self._out += self._request_bytes
        self._move(_ClientInput.AUTH_OK)
        return True

    def _parse_reply(self) -> Connected | None:
        buf = self._buf
        self._check_version()
        if len(buf) >= 2 and buf[1] != Reply.SUCCEEDED:
            code = buf[1]
            reply = Reply(code) if code in Reply._value2member_map_ else Reply.GENERAL_FAILURE
            raise SocksError(f"proxy refused the CONNECT: {code} ({reply.name})", reply)
        if len(buf) < 4:
            return None
        if buf[3] not in AddressType._value2member_map_:
            raise RemoteProtocolError(f"proxy reply has unknown address type {buf[3]:#04x}")
        length = _address_length(buf, 3)
        if length is None or len(buf) < 3 + length:
            return None
        atyp, host, port = _decode_address(bytes(buf[3 : 3 + length]))
        del buf[: 3 + length]
        _check_host(host, atyp, RemoteProtocolError)
        self._move(_ClientInput.GOT_SUCCESS)
        return Connected(bind_host=host, bind_port=port)


def _request_for(host: str, port: int) -> ConnectRequest:
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return ConnectRequest(host=host, port=port, address_type=AddressType.DOMAIN)
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        raise LocalProtocolError("SOCKS5 cannot carry an IPv6 scope id")
    atyp = AddressType.IPV4 if addr.version == 4 else AddressType.IPV6
    return ConnectRequest(host=str(addr), port=port, address_type=atyp)


def _encode_request(request: ConnectRequest) -> bytes:
    if request.address_type is AddressType.DOMAIN:
        name = request.host.encode("ascii")
        addr = bytes([len(name)]) + name
    else:
        addr = ipaddress.ip_address(request.host).packed
    port = request.port.to_bytes(2, "big")
    return bytes([_VERSION, _CMD_CONNECT, 0x00, request.address_type]) + addr + port


_ERRNO_REPLIES: dict[int, Reply] = {
    errno.ECONNREFUSED: Reply.CONNECTION_REFUSED,
    errno.ENETUNREACH: Reply.NETWORK_UNREACHABLE,
    errno.ENETDOWN: Reply.NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: Reply.HOST_UNREACHABLE,
    errno.EHOSTDOWN: Reply.HOST_UNREACHABLE,
    # A connect timeout says the host did not answer, which clients show as
    # "host unreachable"; TTL_EXPIRED would suggest a routing loop instead.
    errno.ETIMEDOUT: Reply.HOST_UNREACHABLE,
    errno.EACCES: Reply.NOT_ALLOWED,
    errno.EPERM: Reply.NOT_ALLOWED,  # a local firewall rule refused it
    errno.EAFNOSUPPORT: Reply.ADDRESS_TYPE_NOT_SUPPORTED,
}


def reply_for_errno(errno_value: int | None) -> Reply:
    """The SOCKS5 reply for a failed upstream ``connect()`` with this errno.

    ``None`` or an unknown errno gives ``GENERAL_FAILURE``.  DNS failures carry
    ``EAI_*`` codes, not errnos; the driver should send ``HOST_UNREACHABLE``
    for those itself.
    """
    if errno_value is None:
        return Reply.GENERAL_FAILURE
    return _ERRNO_REPLIES.get(errno_value, Reply.GENERAL_FAILURE)
