"""The stealth gate and client: the secret-path upgrade, or every byte to the decoy."""

from __future__ import annotations

import base64
import hashlib
import itertools
import random

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wraith.proto.errors import LocalProtocolError
from wraith.proto.stealth import (
    MAX_SECRET_PATH,
    NEED_DATA,
    Accepted,
    Decoy,
    Refused,
    StealthClient,
    StealthGate,
    Tunnel,
    new_secret_path,
)

SECRET = new_secret_path(bytes(range(18)))
KEY = bytes(range(100, 116))
RFC_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3
RFC_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
LINE = b"GET " + SECRET.encode() + b" HTTP/1.1\r\n"
UPGRADE = [
    b"Host: vpn.example.org",
    b"Connection: Upgrade",
    b"Upgrade: websocket",
    b"Sec-WebSocket-Version: 13",
    b"Sec-WebSocket-Key: " + RFC_KEY,
]
BANNER = b"SSH-2.0-OpenSSH_9.6\r\n"
PATH_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-/"


def head(line: bytes = LINE, headers: list[bytes] = UPGRADE) -> bytes:
    return line + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


VALID = head()


def gate(*chunks: bytes, max_head: int = 8192) -> StealthGate:
    g = StealthGate(SECRET, max_head=max_head)
    for chunk in chunks:
        g.receive_data(chunk)
    return g


def decide(*chunks: bytes) -> object:
    return gate(*chunks).result()


def drip(data: bytes, secret: str = SECRET) -> tuple[object, int]:
    """Feed one byte at a time; the answer and how many bytes it took (len+1: none)."""
    g = StealthGate(secret)
    for i in range(len(data)):
        g.receive_data(data[i : i + 1])
        got = g.result()
        if got is not NEED_DATA:
            return got, i + 1
    return NEED_DATA, len(data) + 1


def three_ways(data: bytes, trailer: bytes = BANNER) -> list[tuple[list[bytes], bytes]]:
    """Whole, byte by byte, and with trailing data: the chunks and the expected leftover."""
    return [
        ([data], b""),
        ([data[i : i + 1] for i in range(len(data))], b""),
        ([data + trailer], trailer),
    ]


# --- the secret-path upgrade ---------------------------------------------------------


@pytest.mark.parametrize("way", range(3))
def test_the_secret_upgrade_tunnels_whole_bytewise_and_with_trailing_data(way: int) -> None:
    chunks, leftover = three_ways(VALID)[way]
    assert decide(*chunks) == Tunnel(leftover=leftover)


def test_every_proper_prefix_of_the_upgrade_waits() -> None:
    got, used = drip(VALID)
    assert got == Tunnel(leftover=b"") and used == len(VALID)


def test_leftover_after_the_head_is_kept_byte_for_byte() -> None:
    tail = BANNER + bytes(range(256)) * 40  # more than max_head: it is not head
    g = gate(VALID + tail)
    assert g.result() == Tunnel(leftover=tail)
    assert g.result() == Tunnel(leftover=tail)  # final, repeated


def test_the_101_parses_as_a_websocket_upgrade_with_the_rfc_6455_accept() -> None:
    g = gate(VALID)
    assert isinstance(g.result(), Tunnel)
    client = h11.Connection(h11.CLIENT)
    client.send(
        h11.Request(
            method="GET",
            target=SECRET,
            headers=[("Host", "x"), ("Connection", "Upgrade"), ("Upgrade", "websocket")],
        )
    )
    client.send(h11.EndOfMessage())
    client.receive_data(g.response() + BANNER)
    event = client.next_event()
    assert isinstance(event, h11.InformationalResponse)
    assert (event.status_code, event.reason) == (101, b"Switching Protocols")
    assert list(event.headers) == [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", RFC_ACCEPT),
    ]
    assert client.trailing_data == (BANNER, False)
    assert g.response().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")


def test_without_a_key_the_101_has_no_accept() -> None:
    g = gate(head(headers=UPGRADE[:3]))
    assert isinstance(g.result(), Tunnel)
    assert b"Sec-WebSocket-Accept" not in g.response()
    assert g.response().endswith(b"Connection: Upgrade\r\n\r\n")


@pytest.mark.parametrize(
    "headers",
    [
        [b"Host: h", b"Connection: keep-alive, Upgrade", b"Upgrade: websocket"],  # Firefox
        [b"host: h", b"CONNECTION: UPGRADE", b"upgrade: WebSocket"],
        [b"Host: h", b"Connection: keep-alive", b"Connection: upgrade", b"Upgrade: websocket"],
        [b"Host: h", b"Connection: Upgrade", b"Upgrade: h2c, websocket"],
        [b"Host: h", b"Connection: Upgrade", b"Upgrade: websocket", b"Content-Length: 0"],
    ],
)
def test_header_variants_a_real_client_may_send_are_accepted(headers: list[bytes]) -> None:
    assert decide(head(headers=headers)) == Tunnel(leftover=b"")


def test_bare_lf_header_lines_end_the_head_as_h11_reads_them() -> None:
    data = LINE + b"Host: h\nConnection: Upgrade\nUpgrade: websocket\n\n" + BANNER
    assert decide(data) == Tunnel(leftover=BANNER)


# --- everything else goes to the decoy ------------------------------------------------


def assert_decoy(data: bytes, decided_at: int | None = None) -> Decoy:
    """Decoy with every byte as replay, however fed; optionally decided after N bytes."""
    for chunks, _ in three_ways(data):
        got = decide(*chunks)
        assert isinstance(got, Decoy), (chunks, got)
        assert got.replay == b"".join(chunks)
    got, used = drip(data)
    assert isinstance(got, Decoy)
    assert got.replay == data[:used]
    if decided_at is not None:
        assert used == decided_at, got
    return got


def test_a_wrong_path_differing_at_the_first_or_last_char_is_decided_at_the_space() -> None:
    n = len(SECRET)
    for i in (1, n - 1):
        wrong = SECRET[:i] + ("A" if SECRET[i] != "A" else "B") + SECRET[i + 1 :]
        got = assert_decoy(head(line=b"GET " + wrong.encode() + b" HTTP/1.1\r\n"), 4 + n + 1)
        assert got.reason == "wrong path"


@settings(max_examples=200, deadline=None)
@given(st.text(PATH_CHARS, max_size=MAX_SECRET_PATH - 1))
def test_a_wrong_path_is_held_exactly_as_long_as_the_right_one_would_be(tail: str) -> None:
    # The design decision: how long the gate holds must not say which prefix is right,
    # so every bare path, right or wrong, is held until the space that ends it.
    target = ("/" + tail).encode()
    got, used = drip(b"GET " + target + b" HTTP/1.1\r\n")
    if target == SECRET.encode():
        assert got is NEED_DATA
    else:
        assert isinstance(got, Decoy) and used == 4 + len(target) + 1


def test_every_prefix_of_the_secret_is_held_the_same() -> None:
    for i in range(1, len(SECRET) + 1):
        for c in "Ab/-":
            probe = b"GET " + (SECRET[:i] + c).encode()
            assert drip(probe)[0] is NEED_DATA


@pytest.mark.parametrize(
    ("data", "decided_at", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n", 6, "wrong path"),
        (b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", 11, "request-target is not a bare path"),
        (LINE.replace(b" HTTP", b"?q=1 HTTP"), 4 + len(SECRET) + 1, "request-target"),
        (b"HEAD " + LINE[4:], 1, "not a GET of a path"),
        (b"POST " + LINE[4:], 1, "not a GET of a path"),
        (b"get " + LINE[4:], 1, "not a GET of a path"),
        (b"GET http://h" + LINE[4:], 5, "not a GET of a path"),
        (BANNER, 1, "not a GET of a path"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 1, "not a GET of a path"),
        (b"\r\n" + VALID, 1, "not a GET of a path"),
        (LINE.replace(b"1.1", b"1.0"), len(LINE) - 2, "not HTTP/1.1"),
        (LINE.replace(b"\r\n", b"\n") + b"Host: h\n\n", len(LINE) - 1, "not HTTP/1.1"),
        (LINE.replace(b" HTTP", b"  HTTP"), 4 + len(SECRET) + 2, "not HTTP/1.1"),
    ],
)
def test_probes_go_to_the_decoy_as_early_as_the_design_allows(
    data: bytes, decided_at: int, reason: str
) -> None:
    assert assert_decoy(data, decided_at).reason.startswith(reason)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (UPGRADE[:1] + UPGRADE[2:], "no Connection: Upgrade"),
        ([*UPGRADE[:1], b"Connection: keep-alive", *UPGRADE[2:]], "no Connection: Upgrade"),
        (UPGRADE[:2] + UPGRADE[3:], "no Upgrade: websocket"),
        ([*UPGRADE[:2], b"Upgrade: h2c", *UPGRADE[3:]], "no Upgrade: websocket"),
        ([*UPGRADE[:2], b"Upgrade: websocketx", *UPGRADE[3:]], "no Upgrade: websocket"),
        (UPGRADE[1:], "malformed request head"),  # no Host
        ([UPGRADE[0], *UPGRADE], "malformed request head"),  # two Hosts
        ([*UPGRADE, b"bad header line"], "malformed request head"),
        ([*UPGRADE, b"Content-Length: 5"], "request with a body"),
        ([*UPGRADE, b"Transfer-Encoding: chunked"], "request with a body"),
        ([*UPGRADE, b"Sec-WebSocket-Key: " + RFC_KEY], "more than one Sec-WebSocket-Key"),
        ([*UPGRADE[:4], b"Sec-WebSocket-Key: not base64!"], "bad Sec-WebSocket-Key"),
        ([*UPGRADE[:4], b"Sec-WebSocket-Key: " + base64.b64encode(bytes(15))], "bad Sec-"),
    ],
)
def test_a_secret_path_request_without_a_proper_upgrade_goes_to_the_decoy(
    headers: list[bytes], reason: str
) -> None:
    data = head(headers=headers)
    got = assert_decoy(data, len(data))  # only at the end of the head
    assert got.reason.startswith(reason)


def test_random_bytes_go_to_the_decoy() -> None:
    rng = random.Random(6455)
    for _ in range(200):
        data = rng.randbytes(rng.randrange(1, 200))
        if data.startswith(b"G"):
            continue
        assert_decoy(data, 1)


def test_an_oversize_head_goes_to_the_decoy_at_max_head() -> None:
    filler = [b"X-Pad-%d: %s" % (i, b"p" * 90) for i in range(200)]
    data = head(headers=UPGRADE + filler)
    got = gate(data, max_head=4096).result()
    assert isinstance(got, Decoy) and got.replay == data
    assert got.reason == "request head larger than 4096 bytes"
    g = StealthGate(SECRET, max_head=4096)
    g.receive_data(data[:4095])
    assert g.result() is NEED_DATA
    g.receive_data(data[4095:4096])
    assert g.result() == Decoy(replay=data[:4096], reason=got.reason)


def test_a_head_ending_exactly_at_max_head_is_still_accepted() -> None:
    pad = b"X-Pad: "
    short = head(headers=[*UPGRADE, pad])
    data = head(headers=[*UPGRADE, pad + b"p" * (2048 - len(short))])
    assert len(data) == 2048
    assert gate(data + BANNER, max_head=2048).result() == Tunnel(leftover=BANNER)
    assert isinstance(gate(data, max_head=2047).result(), Decoy)


def test_a_target_longer_than_any_secret_path_goes_to_the_decoy() -> None:
    data = b"GET /" + b"a" * MAX_SECRET_PATH + b" HTTP/1.1\r\n"
    got = assert_decoy(data, 4 + MAX_SECRET_PATH + 1)
    assert got.reason == "request-target longer than any secret path"


def test_silence_waits_and_eof_before_a_decision_is_the_decoy() -> None:
    g = gate()
    assert g.result() is NEED_DATA
    g.receive_data(b"")
    assert g.result() == Decoy(replay=b"", reason="closed before a complete request head")
    cut = VALID[:-1]
    assert gate(cut, b"").result() == Decoy(
        replay=cut, reason="closed before a complete request head"
    )
    assert gate(VALID, b"").result() == Tunnel(leftover=b"")


def test_after_the_answer_more_input_is_a_caller_bug() -> None:
    for data in (VALID, BANNER):
        g = gate(data)
        assert g.result() is not NEED_DATA
        for more in (b"x", b""):
            with pytest.raises(LocalProtocolError):
                g.receive_data(more)
    g = gate(b"GET", b"")
    with pytest.raises(LocalProtocolError):
        g.receive_data(b"x")
    g.receive_data(b"")  # a second EOF is harmless


def test_response_is_only_for_a_tunnel() -> None:
    for g in (gate(), gate(b"GET /"), gate(BANNER)):
        g.result()
        with pytest.raises(LocalProtocolError):
            g.response()


@pytest.mark.parametrize(
    "path",
    [
        "",
        "no-leading-slash-aaaaaaaaaaaaaa",
        "/short",
        "/" + "a" * 21,
        "/aaaaaaaaaaaaaaaaaaaaaa.",
        "/aaaaaaaaaaaaaaaaaaaaaa?x=1",
        "/aaaaaaaaaaaaaaaaaaaaaa+",
        "/aaaaaaaaaaaaaaaaaaaaaaé",
        "/" + "a" * MAX_SECRET_PATH,
    ],
)
def test_a_bad_secret_path_is_a_local_error(path: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        StealthGate(path)
    assert "aaaa" not in str(info.value)  # the path stays out of messages (and logs)
    with pytest.raises(LocalProtocolError):
        StealthClient("h", path, KEY)


def test_limits_and_events_validate() -> None:
    StealthGate("/" + "a" * 22)
    StealthGate("/" + "a/-_" * 63 + "abc")
    with pytest.raises(LocalProtocolError):
        StealthGate(SECRET, max_head=1023)
    with pytest.raises(LocalProtocolError):
        StealthClient("h", SECRET, KEY, max_head=100)
    with pytest.raises(LocalProtocolError):
        Tunnel(leftover="text")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Decoy(replay=bytearray())  # type: ignore[arg-type]
    for reason in ("", "two\nlines"):
        with pytest.raises(LocalProtocolError):
            Refused(reason=reason)


def test_new_secret_path() -> None:
    assert new_secret_path(bytes(16)) == "/" + "A" * 22
    path = new_secret_path(b"\xfb\xff" * 9)
    assert len(path) == 25 and path[1:].isascii() and "-" in path and "_" in path
    assert base64.urlsafe_b64decode(path[1:] + "=" * (-len(path[1:]) % 4)) == b"\xfb\xff" * 9
    StealthGate(path)
    for size in (0, 15):
        with pytest.raises(LocalProtocolError):
            new_secret_path(bytes(size))
    with pytest.raises(LocalProtocolError):
        new_secret_path(bytes(200))  # longer than MAX_SECRET_PATH


# --- the client -----------------------------------------------------------------------


def client(*chunks: bytes) -> StealthClient:
    c = StealthClient("vpn.example.org", SECRET, KEY)
    for chunk in chunks:
        c.receive_data(chunk)
    return c


def accept_for(key: bytes) -> bytes:
    digest = hashlib.sha1(base64.b64encode(key) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
    return base64.b64encode(digest.digest())


def switching(accept: bytes | None = None, extra: bytes = b"") -> bytes:
    accept = accept_for(KEY) if accept is None else accept
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extra + b"\r\n"
    )


def test_the_client_request_is_an_ordinary_websocket_upgrade() -> None:
    request = client().request()
    server = h11.Connection(h11.SERVER)
    server.receive_data(request)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    assert (event.method, event.target, event.http_version) == (b"GET", SECRET.encode(), b"1.1")
    assert list(event.headers) == [
        (b"host", b"vpn.example.org"),
        (b"connection", b"Upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-key", base64.b64encode(KEY)),
    ]
    assert isinstance(server.next_event(), h11.EndOfMessage)
    assert request.startswith(LINE) and request.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("way", range(3))
def test_the_client_accepts_a_proper_101(way: int) -> None:
    chunks, leftover = three_ways(switching())[way]
    c = client()
    for chunk in chunks[:-1]:
        c.receive_data(chunk)
        assert c.result() is NEED_DATA
    c.receive_data(chunks[-1])
    assert c.result() == Accepted(leftover=leftover)
    with pytest.raises(LocalProtocolError):
        c.receive_data(b"more")


def test_client_and_gate_round_trip_with_pipelined_ssh() -> None:
    c = StealthClient("vpn.example.org:8443", SECRET, KEY)
    g = StealthGate(SECRET)
    g.receive_data(c.request() + b"SSH-2.0-client\r\n")
    assert g.result() == Tunnel(leftover=b"SSH-2.0-client\r\n")
    c.receive_data(g.response() + b"SSH-2.0-server\r\n")
    assert c.result() == Accepted(leftover=b"SSH-2.0-server\r\n")


def test_a_client_with_the_wrong_path_meets_the_decoy_and_is_refused() -> None:
    c = StealthClient("h", new_secret_path(bytes(18)), KEY)
    got = decide(c.request())
    assert isinstance(got, Decoy) and got.replay == c.request()
    c.receive_data(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
    assert c.result() == Refused(
        reason="server answered 404 Not Found: wrong --stealth-path, "
        "or not a Wraith server in stealth mode"
    )


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "server answered 200 OK: wrong"),
        (b"HTTP/1.0 301 \r\nLocation: /\r\n\r\n", "server answered 301: wrong"),
        (b"HTTP/1.1 400 Bad\x80\tRequest\r\n\r\n", "server answered 400 Bad??Request: wrong"),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "server answered 100 Continue: wrong"),
        (switching(accept=accept_for(bytes(16))), "server switched protocols, but not"),
        (switching(extra=b"Sec-WebSocket-Accept: x\r\n"), "server switched protocols, but not"),
        (switching().replace(b"Upgrade: websocket", b"Upgrade: h2c"), "server switched"),
        (switching().replace(b"Connection: Upgrade", b"X: y"), "server switched"),
        (BANNER, "server sent an SSH banner"),
        (b"\x15\x03\x03\x00\x02\x02\x28", "server did not answer in HTTP: wrong"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "server sent a malformed HTTP answer (illegal status"),
        (b"HTTP/1.1 404 Not Found\r\n" + b"X: y\r\n" * 3000, "server sent a malformed"),
        (b"", "server closed the connection without answering: wrong"),
        (b"HTTP/1.1 101 Swi", "server closed the connection in the middle of its answer"),
        (b"SS", "server did not answer in HTTP"),
    ],
)
def test_the_client_refuses_anything_else_with_a_one_line_reason(
    answer: bytes, reason: str
) -> None:
    for chunks in ([answer, b""], [answer[i : i + 1] for i in range(len(answer))] + [b""]):
        c = client()
        got: object = NEED_DATA
        for chunk in chunks:
            c.receive_data(chunk)
            got = c.result()
            if got is not NEED_DATA:
                break
        assert isinstance(got, Refused), (answer, got)
        assert got.reason.startswith(reason), got.reason
        assert got.reason.isprintable() and len(got.reason) < 200


def test_the_client_waits_while_an_answer_may_still_be_an_ssh_banner() -> None:
    c = client(b"SSH")
    assert c.result() is NEED_DATA
    c.receive_data(b"-2.0-x\r\n")
    assert isinstance(c.result(), Refused)


def test_client_input_after_eof_or_after_the_answer_is_a_caller_bug() -> None:
    c = client(b"HTTP/1.1 101", b"")
    with pytest.raises(LocalProtocolError):
        c.receive_data(b" Switching Protocols\r\n\r\n")
    c.receive_data(b"")  # a second EOF is harmless before the answer
    assert isinstance(c.result(), Refused)
    with pytest.raises(LocalProtocolError):
        c.receive_data(b"")


def test_the_client_validates_its_arguments() -> None:
    for key in (b"", bytes(15), bytes(17), "k" * 16):
        with pytest.raises(LocalProtocolError):
            StealthClient("h", SECRET, key)  # type: ignore[arg-type]
    for host in ("", "a b", "h\r\nX: y", "é"):
        with pytest.raises(LocalProtocolError):
            StealthClient(host, SECRET, KEY)


# --- properties -----------------------------------------------------------------------

PREFIXES = [b"", b"GET /", LINE[:-3], LINE, head(headers=UPGRADE[:3])[:-2], VALID]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given points; never an empty chunk, which would mean EOF."""
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


inputs = st.builds(
    lambda prefix, body: prefix + body,
    st.sampled_from(PREFIXES),
    st.binary(max_size=300),
)


def feed_until_decided(chunks: list[bytes]) -> tuple[object, bytes]:
    """Feed chunks, asking after each, stopping at the answer: (answer, bytes fed)."""
    g = StealthGate(SECRET)
    fed = b""
    for chunk in chunks:
        g.receive_data(chunk)
        fed += chunk
        got = g.result()
        if got is not NEED_DATA:
            return got, fed
    return NEED_DATA, fed


@settings(max_examples=200, deadline=None)
@given(inputs, st.lists(st.integers(0, 400), max_size=6), st.booleans())
def test_arbitrary_bytes_never_raise_and_replay_is_everything_fed(
    data: bytes, cuts: list[int], eof: bool
) -> None:
    chunks = chunked(data, cuts) + ([b""] if eof else [])
    got, fed = feed_until_decided(chunks)
    assert got is NEED_DATA or isinstance(got, Tunnel | Decoy)
    if isinstance(got, Decoy):
        assert got.replay == fed
    if isinstance(got, Tunnel):
        assert fed.endswith(got.leftover) and fed.startswith(LINE)
    if got is NEED_DATA:
        assert not eof


@settings(max_examples=200, deadline=None)
@given(inputs, st.lists(st.integers(0, 400), max_size=6))
def test_any_split_gives_the_same_decision(data: bytes, cuts: list[int]) -> None:
    whole = decide(*chunked(data, []))
    assert decide(*chunked(data, cuts)) == whole
    early, fed = feed_until_decided(chunked(data, cuts))
    assert type(early) is type(whole)
    if early is not NEED_DATA:
        assert decide(*chunked(fed, [])) == early  # the early answer is the answer for what was fed
        if isinstance(whole, Decoy):
            assert isinstance(early, Decoy) and early.reason == whole.reason


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300),
    st.integers(0, len(VALID) - 1),
    st.integers(0, 255),
    st.binary(max_size=50),
)
def test_nothing_but_the_exact_request_line_ever_tunnels(
    noise: bytes, at: int, byte: int, tail: bytes
) -> None:
    assert not isinstance(decide(noise), Tunnel) or noise.startswith(LINE)
    mutated = bytearray(VALID)
    mutated[at % len(LINE)] = byte
    got = decide(bytes(mutated) + tail)
    assert isinstance(got, Tunnel) == (bytes(mutated[: len(LINE)]) == LINE)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([switching(), b"HTTP/1.1 404 Not Found\r\n\r\n", b""]),
    st.binary(max_size=200),
    st.lists(st.integers(0, 400), max_size=6),
    st.booleans(),
)
def test_the_client_never_raises_and_any_split_agrees(
    prefix: bytes, body: bytes, cuts: list[int], eof: bool
) -> None:
    data = prefix + body
    end = [b""] if eof else []
    whole = client(*chunked(data, []), *end).result()
    assert whole is NEED_DATA or isinstance(whole, Accepted | Refused)
    assert client(*chunked(data, cuts), *end).result() == whole
    if eof:
        assert whole is not NEED_DATA
