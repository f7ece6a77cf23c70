"""SOCKS5 server and client state machines, fed whole, byte by byte and with trailing data."""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wraith.proto.errors import LocalProtocolError, RemoteProtocolError
from wraith.proto.socks5 import (
    _CLIENT_TRANSITIONS,
    _SERVER_TRANSITIONS,
    NEED_DATA,
    AddressType,
    ClientState,
    Connected,
    ConnectRequest,
    NeedData,
    Reply,
    ServerState,
    SocksClient,
    SocksError,
    SocksServer,
    _ClientInput,
    _ServerInput,
    reply_for_errno,
)

TRAILER = b"GET / HTTP/1.1\r\n\r\n"

GREETING = b"\x05\x01\x00"
GREETING_USERPASS = b"\x05\x01\x02"
AUTH_GOOD = b"\x01\x04user\x06secret"
REQ_IPV4 = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"
REQ_IPV6 = b"\x05\x01\x00\x04" + ipaddress.IPv6Address("2001:db8::1").packed + b"\x01\xbb"
REQ_DOMAIN = b"\x05\x01\x00\x03\x0bexample.com\x1f\x90"
CREDS = {"user": "secret"}

REQUESTS = [
    (REQ_IPV4, ConnectRequest(host="127.0.0.1", port=80, address_type=AddressType.IPV4)),
    (REQ_IPV6, ConnectRequest(host="2001:db8::1", port=443, address_type=AddressType.IPV6)),
    (REQ_DOMAIN, ConnectRequest(host="example.com", port=8080, address_type=AddressType.DOMAIN)),
]


def error_reply(code: Reply) -> bytes:
    return bytes([5, code, 0, 1]) + bytes(6)


def tr(data: bytes) -> Iterator[tuple[list[bytes], bytes]]:
    """The three ways to feed ``data``: whole, one byte at a time, with trailing data."""
    yield [data], b""
    yield [data[i : i + 1] for i in range(len(data))], b""
    yield [data + TRAILER], TRAILER


@dataclass
class Outcome:
    event: object
    error: RemoteProtocolError | None
    sent: bytes


def drive(machine: SocksServer | SocksClient, chunks: list[bytes], eof: bool = False) -> Outcome:
    """Feed chunks the way a driver does, collecting output, until an event or error."""
    sent = b""
    event: object = NEED_DATA
    if isinstance(machine, SocksClient):
        sent += machine.data_to_send()
    for chunk in [*chunks, b""] if eof else chunks:
        machine.receive_data(chunk)
        try:
            event = machine.next_event()
        except RemoteProtocolError as exc:
            return Outcome(NEED_DATA, exc, sent + machine.data_to_send())
        sent += machine.data_to_send()
        if event is not NEED_DATA:
            break
    return Outcome(event, None, sent)


def server_error(data: bytes, **kw: object) -> Iterator[Outcome]:
    for chunks, _ in tr(data):
        srv = SocksServer(**kw)  # type: ignore[arg-type]
        out = drive(srv, chunks)
        assert isinstance(out.error, SocksError), out
        assert srv.state is ServerState.ERROR
        yield out


# -- server ------------------------------------------------------------------


@pytest.mark.parametrize(("request_bytes", "expected"), REQUESTS)
def test_server_connect(request_bytes: bytes, expected: ConnectRequest) -> None:
    for chunks, trailer in tr(GREETING + request_bytes):
        srv = SocksServer()
        out = drive(srv, chunks)
        assert out.error is None
        assert out.event == expected
        assert out.sent == b"\x05\x00"
        assert srv.state is ServerState.CONNECTING
        assert srv.trailing_data == trailer
        assert srv.username is None


def test_server_picks_no_auth_among_several_methods() -> None:
    srv = SocksServer()
    out = drive(srv, [b"\x05\x03\x02\x01\x00" + REQ_IPV4])
    assert out.sent == b"\x05\x00"
    assert out.event == REQUESTS[0][1]


def test_server_rfc1929_success() -> None:
    for chunks, trailer in tr(b"\x05\x02\x00\x02" + AUTH_GOOD + REQ_DOMAIN):
        srv = SocksServer(credentials=CREDS)
        out = drive(srv, chunks)
        assert out.error is None
        assert out.event == REQUESTS[2][1]
        assert out.sent == b"\x05\x02" + b"\x01\x00"
        assert srv.username == "user"
        assert srv.trailing_data == trailer


@pytest.mark.parametrize(
    "auth",
    [
        b"\x01\x04user\x05wrong",
        b"\x01\x05nobod\x06secret",
        b"\x01\x00\x00",
        b"\x05\x04user\x06secret",  # RFC 1929 version must be 1
    ],
)
def test_server_rfc1929_failure(auth: bytes) -> None:
    for out in server_error(GREETING_USERPASS + auth + REQ_IPV4, credentials=CREDS):
        assert out.sent == b"\x05\x02" + b"\x01\x01"
        assert out.error is not None and out.error.reply is Reply.NOT_ALLOWED


def test_server_empty_credentials_lock_everyone_out() -> None:
    for out in server_error(GREETING_USERPASS + b"\x01\x01u\x00", credentials={}):
        assert out.sent == b"\x05\x02\x01\x01"


@pytest.mark.parametrize(
    ("greeting", "creds"),
    [
        (b"\x05\x01\x00", CREDS),  # we need auth, client offers none
        (b"\x05\x01\x02", None),  # we need none, client only offers auth
        (b"\x05\x02\x01\x80", None),
        (b"\x05\x00", None),  # no methods at all
    ],
)
def test_server_no_acceptable_method(greeting: bytes, creds: dict[str, str] | None) -> None:
    for out in server_error(greeting + REQ_IPV4, credentials=creds):
        assert out.sent == b"\x05\xff"
        assert out.error is not None and out.error.reply is Reply.NOT_ALLOWED


@pytest.mark.parametrize("cmd", [2, 3, 0, 0x7F, 0xFF])
def test_server_command_not_supported(cmd: int) -> None:
    request = bytes([5, cmd]) + REQ_IPV4[2:]
    for out in server_error(GREETING + request):
        assert out.sent == b"\x05\x00" + b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"
        assert out.error is not None and out.error.reply is Reply.COMMAND_NOT_SUPPORTED


@pytest.mark.parametrize("atyp", [0, 2, 5, 0xFF])
def test_server_address_type_not_supported(atyp: int) -> None:
    for out in server_error(GREETING + b"\x05\x01\x00" + bytes([atyp]) + bytes(6)):
        assert out.sent == b"\x05\x00" + error_reply(Reply.ADDRESS_TYPE_NOT_SUPPORTED)
        assert out.error is not None and out.error.reply is Reply.ADDRESS_TYPE_NOT_SUPPORTED


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x05\x01\x00\x03\x00\x00\x50",  # empty name
        b"\x05\x01\x00\x03\x03a\x00b\x00\x50",  # NUL
        b"\x05\x01\x00\x03\x03a b\x00\x50",  # space
        b"\x05\x01\x00\x03\x02\xc3\xa9\x00\x50",  # non-ASCII
        REQ_IPV4[:-2] + b"\x00\x00",  # port 0
    ],
)
def test_server_bad_destination_gets_general_failure(request_bytes: bytes) -> None:
    for out in server_error(GREETING + request_bytes):
        assert out.sent == b"\x05\x00" + error_reply(Reply.GENERAL_FAILURE)


@pytest.mark.parametrize(
    "data",
    [
        b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00",  # a SOCKS4 CONNECT
        b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
        GREETING + b"\x04" + REQ_IPV4[1:],  # version 4 in the request
    ],
)
def test_server_wrong_version_sends_nothing(data: bytes) -> None:
    for out in server_error(data):
        assert out.sent in (b"", b"\x05\x00")
        assert not out.sent.endswith(b"\x05\xff")
    assert "SOCKS4" in str(next(server_error(b"\x04\x01")).error)


def test_server_eof_at_every_point() -> None:
    data = GREETING_USERPASS + AUTH_GOOD + REQ_DOMAIN
    for cut in range(len(data)):
        srv = SocksServer(credentials=CREDS)
        out = drive(srv, [data[:cut]], eof=True)
        assert isinstance(out.error, SocksError), cut
        assert srv.state is ServerState.ERROR


def test_server_oversize_buffer() -> None:
    for chunks, _ in tr(GREETING + REQ_DOMAIN):
        srv = SocksServer(max_buffer=8)
        out = drive(srv, chunks)
        if chunks[-1].endswith(TRAILER) or len(chunks) == 1:
            # The whole request arrived at once: no need to buffer, so no limit hit.
            assert out.event == REQUESTS[2][1]
        else:
            assert isinstance(out.error, SocksError)
            assert "max_buffer" in str(out.error)


def test_server_error_is_terminal() -> None:
    srv = SocksServer()
    srv.receive_data(b"\x04")
    with pytest.raises(SocksError):
        srv.next_event()
    srv.receive_data(GREETING + REQ_IPV4)
    with pytest.raises(SocksError):
        srv.next_event()
    with pytest.raises(LocalProtocolError):
        srv.reply(Reply.SUCCEEDED)
    assert srv.trailing_data == b""


def test_server_reply_encodings() -> None:
    for code in Reply:
        srv = SocksServer()
        drive(srv, [GREETING + REQ_IPV4])
        srv.reply(code, "192.0.2.1", 1080)
        assert srv.data_to_send() == b"\x05" + bytes([code]) + b"\x00\x01\xc0\x00\x02\x01\x04\x38"
        assert srv.state is ServerState.DONE
    srv = SocksServer()
    drive(srv, [GREETING + REQ_IPV4])
    srv.reply(Reply.SUCCEEDED, "::1", 5)
    assert srv.data_to_send() == b"\x05\x00\x00\x04" + bytes(15) + b"\x01\x00\x05"


@pytest.mark.parametrize(
    "misuse",
    [
        lambda s: s.reply(Reply.SUCCEEDED),  # before any request
        lambda s: (drive(s, [GREETING + REQ_IPV4]), s.reply(0), s.reply(0)),  # twice
        lambda s: (drive(s, [GREETING + REQ_IPV4]), s.reply(0, "example.com")),
        lambda s: (drive(s, [GREETING + REQ_IPV4]), s.reply(0, "1.2.3.4", 65536)),
        lambda s: (drive(s, [GREETING + REQ_IPV4]), s.reply(42)),
        lambda s: (drive(s, [GREETING + REQ_IPV4]), s.next_event()),  # handshake is over
        lambda s: (s.receive_data(b""), s.receive_data(b"x")),  # data after EOF
    ],
)
def test_server_local_misuse(misuse: Callable[[SocksServer], object]) -> None:
    srv = SocksServer()
    with pytest.raises(LocalProtocolError):
        misuse(srv)
    assert srv.state is ServerState.ERROR


def test_server_constructor_limits() -> None:
    with pytest.raises(LocalProtocolError):
        SocksServer(max_buffer=0)
    with pytest.raises(LocalProtocolError):
        SocksServer(credentials={"": "x"})
    with pytest.raises(LocalProtocolError):
        SocksServer(credentials={"u": "p" * 256})


@pytest.mark.parametrize("state", list(ServerState))
@pytest.mark.parametrize("event", list(_ServerInput))
def test_server_transition_table(state: ServerState, event: _ServerInput) -> None:
    srv = SocksServer()
    srv._state = state
    if (state, event) in _SERVER_TRANSITIONS:
        srv._move(event)
        assert srv.state is _SERVER_TRANSITIONS[state, event]
    else:
        with pytest.raises(LocalProtocolError):
            srv._move(event)
        assert srv.state is ServerState.ERROR


# -- client ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "request_bytes"),
    [
        ("127.0.0.1", REQ_IPV4[:-2] + b"\x1f\x90"),
        ("2001:db8::1", REQ_IPV6[:-2] + b"\x1f\x90"),
        ("[2001:db8::1]", REQ_IPV6[:-2] + b"\x1f\x90"),
        ("example.com", REQ_DOMAIN),
        ("x" * 255, b"\x05\x01\x00\x03\xff" + b"x" * 255 + b"\x1f\x90"),
    ],
)
def test_client_sends_greeting_then_request(host: str, request_bytes: bytes) -> None:
    cli = SocksClient(host, 8080)
    assert cli.data_to_send() == GREETING
    assert cli.data_to_send() == b""
    cli.receive_data(b"\x05\x00")
    assert cli.next_event() is NEED_DATA
    assert cli.data_to_send() == request_bytes
    assert cli.state is ClientState.REQUEST


def test_client_rfc1929() -> None:
    cli = SocksClient("example.com", 8080, username="user", password="secret")
    assert cli.data_to_send() == b"\x05\x02\x00\x02"
    cli.receive_data(b"\x05\x02")
    assert cli.next_event() is NEED_DATA
    assert cli.data_to_send() == AUTH_GOOD
    cli.receive_data(b"\x01\x00")
    assert cli.next_event() is NEED_DATA
    assert cli.data_to_send() == REQ_DOMAIN


@pytest.mark.parametrize(
    ("bind", "host", "port"),
    [
        (b"\x01\xc0\x00\x02\x01\x04\x38", "192.0.2.1", 1080),
        (b"\x04" + bytes(15) + b"\x01\x00\x00", "::1", 0),
        (b"\x03\x09proxy.lan\x00\x50", "proxy.lan", 80),
    ],
)
def test_client_connected(bind: bytes, host: str, port: int) -> None:
    for chunks, trailer in tr(b"\x05\x00" + b"\x05\x00\x00" + bind):
        cli = SocksClient("example.com", 443)
        out = drive(cli, chunks)
        assert out.error is None
        assert out.event == Connected(bind_host=host, bind_port=port)
        assert out.sent == GREETING + REQ_DOMAIN[:-2] + b"\x01\xbb"
        assert cli.trailing_data == trailer
        assert cli.state is ClientState.CONNECTED


@pytest.mark.parametrize("code", [c for c in Reply if c is not Reply.SUCCEEDED])
def test_client_every_refusal(code: Reply) -> None:
    for chunks, _ in tr(b"\x05\x00" + error_reply(code)):
        cli = SocksClient("example.com", 443)
        out = drive(cli, chunks)
        assert isinstance(out.error, SocksError)
        assert out.error.reply is code
        # The destination stays out of the message (messages reach logs).
        assert "example.com" not in str(out.error) and "443" not in str(out.error)
        assert code.name in str(out.error)
        assert cli.state is ClientState.ERROR


def test_client_unknown_reply_code_is_general_failure() -> None:
    out = drive(SocksClient("h", 1), [b"\x05\x00\x05\x09"])
    assert isinstance(out.error, SocksError) and out.error.reply is Reply.GENERAL_FAILURE


@pytest.mark.parametrize(
    ("data", "creds", "refusal"),
    [
        (b"\x05\xff", False, True),
        (b"\x05\x02\x01\x01", True, True),  # username/password rejected
        (b"\x05\x02", False, False),  # picked a method we did not offer
        (b"\x05\x01", True, False),  # GSSAPI
        (b"\x04\x00", False, False),
        (b"HTTP/1.1 400 Bad Request\r\n", False, False),
        (b"\x05\x02\x05\x00", True, False),  # RFC 1929 status with version 5
        (b"\x05\x00\x05\x00\x00\x02" + bytes(6), False, False),  # unknown ATYP
        (b"\x05\x00\x05\x00\x00\x03\x00\x00\x00", False, False),  # empty bind name
        (b"\x05\x00\x04\x00", False, False),
    ],
)
def test_client_errors(data: bytes, creds: bool, refusal: bool) -> None:
    auth = {"username": "user", "password": "secret"} if creds else {}
    for chunks, _ in tr(data):
        cli = SocksClient("example.com", 443, **auth)
        out = drive(cli, chunks)
        assert isinstance(out.error, RemoteProtocolError)
        assert isinstance(out.error, SocksError) == refusal
        if refusal:
            assert out.error.reply is Reply.NOT_ALLOWED  # type: ignore[attr-defined]
        assert cli.state is ClientState.ERROR
        with pytest.raises(RemoteProtocolError):
            cli.next_event()


def test_client_eof_at_every_point() -> None:
    data = b"\x05\x02\x01\x00\x05\x00\x00\x01" + bytes(6)
    for cut in range(len(data)):
        cli = SocksClient("h", 1, username="u", password="p")
        out = drive(cli, [data[:cut]], eof=True)
        assert isinstance(out.error, RemoteProtocolError), cut
        assert not isinstance(out.error, SocksError)


def test_client_oversize_buffer() -> None:
    reply = b"\x05\x00\x05\x00\x00\x03\xff" + b"a" * 255 + b"\x00\x01"
    out = drive(SocksClient("h", 1, max_buffer=64), [reply[i : i + 1] for i in range(len(reply))])
    assert isinstance(out.error, RemoteProtocolError) and "max_buffer" in str(out.error)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": "x" * 256, "port": 1},
        {"host": "", "port": 1},
        {"host": "h", "port": 0},
        {"host": "h", "port": 65536},
        {"host": "bücher.de", "port": 1},
        {"host": "a b", "port": 1},
        {"host": "fe80::1%eth0", "port": 1},
        {"host": "h", "port": 1, "username": "u"},
        {"host": "h", "port": 1, "password": "p"},
        {"host": "h", "port": 1, "username": "", "password": "p"},
        {"host": "h", "port": 1, "username": "u" * 256, "password": "p"},
        {"host": "h", "port": 1, "max_buffer": 0},
    ],
)
def test_client_constructor_rejects(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        SocksClient(**kwargs)  # type: ignore[arg-type]


def test_client_misuse() -> None:
    cli = SocksClient("h", 1)
    drive(cli, [b"\x05\x00\x05\x00\x00\x01" + bytes(6)])
    with pytest.raises(LocalProtocolError):
        cli.next_event()
    cli = SocksClient("h", 1)
    cli.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        cli.receive_data(b"x")


@pytest.mark.parametrize("state", list(ClientState))
@pytest.mark.parametrize("event", list(_ClientInput))
def test_client_transition_table(state: ClientState, event: _ClientInput) -> None:
    cli = SocksClient("h", 1)
    cli._state = state
    if (state, event) in _CLIENT_TRANSITIONS:
        cli._move(event)
        assert cli.state is _CLIENT_TRANSITIONS[state, event]
    else:
        with pytest.raises(LocalProtocolError):
            cli._move(event)
        assert cli.state is ClientState.ERROR


# -- the two talking to each other ------------------------------------------------


def converse(
    srv: SocksServer, cli: SocksClient, code: Reply = Reply.SUCCEEDED
) -> tuple[ConnectRequest | None, Connected | None]:
    """Shuttle bytes between the two until both stop; return what each saw."""
    request: ConnectRequest | None = None
    connected: Connected | None = None
    for _ in range(10):
        srv.receive_data(cli.data_to_send())
        if srv.state in (ServerState.GREETING, ServerState.AUTH, ServerState.REQUEST):
            event = srv.next_event()
            if isinstance(event, ConnectRequest):
                request = event
                srv.reply(code, "10.0.0.1", 4242)
        cli.receive_data(srv.data_to_send())
        if cli.state is not ClientState.CONNECTED:
            got = cli.next_event()
            if isinstance(got, Connected):
                connected = got
                break
    return request, connected


@pytest.mark.parametrize("auth", [False, True])
@pytest.mark.parametrize(
    ("host", "seen"),
    [
        ("10.1.2.3", "10.1.2.3"),
        ("2001:DB8:0::7", "2001:db8::7"),
        ("[::ffff:1.2.3.4]", str(ipaddress.ip_address("::ffff:1.2.3.4"))),
        ("db.internal", "db.internal"),
    ],
)
def test_pair(auth: bool, host: str, seen: str) -> None:
    creds = {"username": "user", "password": "secret"} if auth else {}
    srv = SocksServer(credentials=CREDS if auth else None)
    cli = SocksClient(host, 5432, **creds)  # type: ignore[arg-type]
    request, connected = converse(srv, cli)
    assert request == cli.request
    assert request is not None and request.host == seen and request.port == 5432
    assert connected == Connected(bind_host="10.0.0.1", bind_port=4242)
    assert srv.state is ServerState.DONE and cli.state is ClientState.CONNECTED
    assert srv.username == ("user" if auth else None)


def test_pair_refusal_and_bad_password() -> None:
    with pytest.raises(SocksError) as info:
        converse(SocksServer(), SocksClient("h", 1), Reply.CONNECTION_REFUSED)
    assert info.value.reply is Reply.CONNECTION_REFUSED
    srv = SocksServer(credentials=CREDS)
    cli = SocksClient("h", 1, username="user", password="guess")
    with pytest.raises(SocksError) as info:
        converse(srv, cli)
    assert srv.state is ServerState.ERROR
    cli.receive_data(srv.data_to_send())
    with pytest.raises(SocksError) as info:
        cli.next_event()
    assert info.value.reply is Reply.NOT_ALLOWED


# -- events and helpers --------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": "h", "port": 0, "address_type": AddressType.DOMAIN},
        {"host": "h", "port": 1, "address_type": AddressType.IPV4},
        {"host": "1.2.3.4", "port": 1, "address_type": AddressType.IPV6},
        {"host": "[::1]", "port": 1, "address_type": AddressType.IPV6},
        {"host": "fe80::1%1", "port": 1, "address_type": AddressType.IPV6},
        {"host": "", "port": 1, "address_type": AddressType.DOMAIN},
        {"host": "h", "port": 1, "address_type": 3},
    ],
)
def test_connect_request_validates(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        ConnectRequest(**kwargs)  # type: ignore[arg-type]


def test_reply_for_errno() -> None:
    assert reply_for_errno(errno.ECONNREFUSED) is Reply.CONNECTION_REFUSED
    assert reply_for_errno(errno.ENETUNREACH) is Reply.NETWORK_UNREACHABLE
    assert reply_for_errno(errno.EHOSTUNREACH) is Reply.HOST_UNREACHABLE
    assert reply_for_errno(errno.ETIMEDOUT) is Reply.HOST_UNREACHABLE
    assert reply_for_errno(errno.EPERM) is Reply.NOT_ALLOWED
    assert reply_for_errno(errno.ENOENT) is Reply.GENERAL_FAILURE
    assert reply_for_errno(None) is Reply.GENERAL_FAILURE


# -- properties -----------------------------------------------------------------

hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=200)
@given(host=hosts, port=st.integers(1, 65535), cuts=st.lists(st.integers(0, 600), max_size=8))
def test_roundtrip_client_request_to_server_event(host: str, port: int, cuts: list[int]) -> None:
    cli = SocksClient(host, port)
    srv = SocksServer()
    greeting = cli.data_to_send()
    cli.receive_data(b"\x05\x00")
    assert cli.next_event() is NEED_DATA
    out = drive(srv, [c for c in split(greeting + cli.data_to_send(), cuts) if c])
    assert out.event == cli.request


server_prefixes = {
    ServerState.GREETING: (b"", None),
    ServerState.AUTH: (GREETING_USERPASS, CREDS),
    ServerState.REQUEST: (GREETING, None),
}


@settings(max_examples=200)
@given(
    state=st.sampled_from(list(server_prefixes)),
    data=st.binary(max_size=600),
    cuts=st.lists(st.integers(0, 600), max_size=8),
    eof=st.booleans(),
)
def test_server_arbitrary_bytes_in_every_state(
    state: ServerState, data: bytes, cuts: list[int], eof: bool
) -> None:
    prefix, creds = server_prefixes[state]
    srv = SocksServer(credentials=creds, max_buffer=300)
    if prefix:  # b"" would be EOF
        srv.receive_data(prefix)
    assert srv.next_event() is NEED_DATA
    assert srv.state is state
    out = drive(srv, [c for c in split(data, cuts) if c], eof=eof)
    assert isinstance(out.event, ConnectRequest | NeedData)
    if out.error is None and isinstance(out.event, ConnectRequest):
        srv.reply(Reply.SUCCEEDED)
        assert len(srv.data_to_send()) in (10, 22)


@settings(max_examples=200)
@given(
    data=st.binary(max_size=600),
    cuts=st.lists(st.integers(0, 600), max_size=8),
    eof=st.booleans(),
    creds=st.booleans(),
)
def test_client_arbitrary_bytes(data: bytes, cuts: list[int], eof: bool, creds: bool) -> None:
    auth = {"username": "u", "password": "p"} if creds else {}
    cli = SocksClient("example.com", 443, max_buffer=300, **auth)  # type: ignore[arg-type]
    out = drive(cli, [c for c in split(data, cuts) if c], eof=eof)
    assert isinstance(out.event, Connected | NeedData)
