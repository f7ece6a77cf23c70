"""The PROXY protocol header parser (v1 and v2), its builders and the trust helpers."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wraith.proto.errors import LocalProtocolError
from wraith.proto.proxyproto import (
    NEED_DATA,
    V2_MAX,
    V2_SIGNATURE,
    BadProxyHeader,
    ProxyHeader,
    ProxyHeaderParser,
    build_v1,
    build_v2,
    parse_networks,
    trusted,
)

TRAILER = b"SSH-2.0-client\r\n"


def parse(*chunks: bytes, eof: bool = False, **kwargs: int) -> object:
    p = ProxyHeaderParser(**kwargs)
    for chunk in chunks:
        if chunk:  # b"" would mean end of stream
            p.receive_data(chunk)
    if eof:
        p.receive_data(b"")
    return p.result()


def three_ways(data: bytes) -> Iterator[tuple[list[bytes], bytes]]:
    """(chunks, expected leftover): whole, one byte at a time, with trailing data."""
    yield [data], b""
    yield [data[i : i + 1] for i in range(len(data))], b""
    yield [data + TRAILER], TRAILER


def bad(data: bytes, **kwargs: int) -> str:
    got = parse(data, **kwargs)
    assert isinstance(got, BadProxyHeader), got
    return got.reason


def v2(ver_cmd: int, family: int, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return V2_SIGNATURE + bytes([ver_cmd, family]) + n.to_bytes(2, "big") + body


INET4_BLOCK = bytes([192, 0, 2, 1, 198, 51, 100, 7]) + (56324).to_bytes(2, "big") + b"\x01\xbb"
INET6_BLOCK = (
    ipaddress.IPv6Address("2001:db8::1").packed
    + ipaddress.IPv6Address("2001:db8::2").packed
    + (1).to_bytes(2, "big")
    + (65535).to_bytes(2, "big")
)

# --- v1 -------------------------------------------------------------------

V1_VALID = [
    (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        ProxyHeader(("192.168.0.1", 56324), ("192.168.0.11", 443), 1, b""),
    ),
    (
        b"PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n",
        ProxyHeader(("255.255.255.255", 65535), ("0.0.0.0", 0), 1, b""),
    ),
    (
        b"PROXY TCP6 2001:DB8::1 ::1 1 22\r\n",  # upper-case hex is allowed; we canonicalise
        ProxyHeader(("2001:db8::1", 1), ("::1", 22), 1, b""),
    ),
    (
        b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1024 22\r\n",  # what inet_ntop writes
        ProxyHeader(("::ffff:c000:201", 1024), ("::ffff:c000:202", 22), 1, b""),
    ),
    (
        b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        b" ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",  # the longest: 104 bytes
        ProxyHeader(
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
            1,
            b"",
        ),
    ),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(None, None, 1, b"")),
    # After UNKNOWN the rest of the line is ignored, whatever it is (107 bytes here).
    (
        b"PROXY UNKNOWN " + b"\xff x" * 22 + b"ab!\r\n",
        ProxyHeader(None, None, 1, b""),
    ),
]


@pytest.mark.parametrize(("data", "expected"), V1_VALID)
def test_v1_headers_three_ways(data: bytes, expected: ProxyHeader) -> None:
    assert len(data) <= 107
    for chunks, leftover in three_ways(data):
        got = parse(*chunks)
        assert got == ProxyHeader(expected.source, expected.dest, 1, leftover), chunks


def test_v1_fed_byte_by_byte_waits_then_answers() -> None:
    data = V1_VALID[0][0]
    p = ProxyHeaderParser()
    for i in range(len(data) - 1):
        p.receive_data(data[i : i + 1])
        assert p.result() is NEED_DATA
    p.receive_data(data[-1:] + b"rest")
    got = p.result()
    assert got == ProxyHeader(("192.168.0.1", 56324), ("192.168.0.11", 443), 1, b"rest")
    assert p.result() is got  # decided once


def test_the_leftover_is_kept_whole_even_when_large() -> None:
    stream = bytes(range(256)) * 400
    got = parse(V1_VALID[0][0] + stream)
    assert isinstance(got, ProxyHeader) and got.leftover == stream
    got = parse(build_v2(("192.0.2.1", 1), ("192.0.2.2", 2)) + stream)
    assert isinstance(got, ProxyHeader) and got.leftover == stream


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),
        (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),  # case matters
        (b"PROXY UNKNOWNX\r\n", "unknown protocol"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "too many fields"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "too few fields"),
        (b"PROXY TCP4\r\n", "too few fields"),
        (b"PROXY \r\n", "unknown protocol"),
        (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "bad TCP4 address"),  # wrong family
        (b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n", "bad TCP6 address"),  # wrong family
        (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "bad TCP4 address"),
        (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "bad TCP4 address"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "bad TCP4 address"),  # no leading zeros
        (b"PROXY TCP4 1.2.3.4 5.6.7.8x 1 2\r\n", "bad TCP4 address"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad TCP6 address"),  # no zone
        (b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "bad TCP6 address"),
        (b"PROXY TCP6 ::1::2 ::1 1 2\r\n", "bad TCP6 address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "out of range"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "out of range"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 022 2\r\n", "leading zero"),  # no octal look-alikes
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", "leading zero"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n", "bad port"),  # non-ASCII digit
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "empty field"),  # two spaces
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "empty field"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "too many fields"),  # trailing space
        (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "bad TCP4 address"),
        (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR"),
        (b"PROXY UNKNOWN\n", "LF without CR"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CR not followed by LF"),
        (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "CR not followed by LF"),
        (b"PROXY UNKNOWN \r \r\n", "CR not followed by LF"),
        (b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", "without CRLF in the first 107"),  # 108
        (b"PROXY UNKNOWN" + b" " * 200, "without CRLF in the first 107"),
        (b"PROXY\r\n", "not a PROXY protocol header"),
        (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY protocol header"),
        (b"GET / HTTP/1.1\r\n\r\n", "not a PROXY protocol header"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "not a PROXY protocol header"),
        (b"\x16\x03\x01\x02\x00\x01", "not a PROXY protocol header"),
    ],
)
def test_malformed_v1_is_bad(data: bytes, reason: str) -> None:
    assert reason in bad(data)
    assert reason in bad(data + TRAILER)


@pytest.mark.parametrize(
    "data",
    [
        b"G",
        b"PROXX",
        b"PROXY X",
        b"PROXY TCP4 1.2.3.4  ",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
        b"PROXY TCP4 1.2.3.4 5.6.7.8:",
        b"PROXY TCP4 1.2.3.4 5.6.7.88 1\r",
        b"PROXY TCP6 ::1 ::g",
        b"PROXY TCP4 1.2.3.4\r",
        b"PROXY TCP4 1.2.3.4.5.6.7.8.9",
    ],
)
def test_v1_is_refused_as_soon_as_it_diverges(data: bytes) -> None:
    assert isinstance(parse(data), BadProxyHeader), data


def test_a_v1_line_complete_but_for_the_lf_waits() -> None:
    assert parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r") is NEED_DATA
    assert "CR not followed by LF" in bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r")


def test_every_proper_prefix_of_a_valid_header_waits() -> None:
    headers = [h for h, _ in V1_VALID] + [
        build_v2(("192.0.2.1", 1), ("192.0.2.2", 2), tlvs=[(1, b"h2"), (4, b"")]),
        build_v2(("::1", 1), ("::2", 2)),
        build_v2(None, None),
        v2(0x21, 0x31, bytes(216) + b"\x04\x00\x01\x00"),
    ]
    for header in headers:
        for cut in range(len(header)):
            assert parse(header[:cut]) is NEED_DATA, header[:cut]


# --- v2 -------------------------------------------------------------------

V2_VALID = [
    (v2(0x21, 0x11, INET4_BLOCK), ProxyHeader(("192.0.2.1", 56324), ("198.51.100.7", 443), 2, b"")),
    (
        v2(0x21, 0x11, INET4_BLOCK + b"\x01\x00\x02h2" + b"\x04\x00\x00" + b"\xe0\x00\x03abc"),
        ProxyHeader(("192.0.2.1", 56324), ("198.51.100.7", 443), 2, b""),
    ),
    (v2(0x21, 0x21, INET6_BLOCK), ProxyHeader(("2001:db8::1", 1), ("2001:db8::2", 65535), 2, b"")),
    (
        v2(0x21, 0x21, INET6_BLOCK + b"\x05\x00\x04uid!"),
        ProxyHeader(("2001:db8::1", 1), ("2001:db8::2", 65535), 2, b""),
    ),
    # LOCAL: a health check; the family and the block are ignored, but skipped.
    (v2(0x20, 0x00, b""), ProxyHeader(None, None, 2, b"")),
    (v2(0x20, 0x11, INET4_BLOCK), ProxyHeader(None, None, 2, b"")),
    (v2(0x20, 0x12, b"whatever"), ProxyHeader(None, None, 2, b"")),
    (v2(0x20, 0xFF, b"\x01"), ProxyHeader(None, None, 2, b"")),
    # PROXY over AF_UNSPEC: no addresses to use, the block is skipped unread.
    (v2(0x21, 0x00, b""), ProxyHeader(None, None, 2, b"")),
    (v2(0x21, 0x00, b"\x01\x02"), ProxyHeader(None, None, 2, b"")),
    # AF_UNIX stream: addresses ignored, TLVs after the 216-byte block skipped.
    (v2(0x21, 0x31, b"/run/a".ljust(108, b"\0") * 2), ProxyHeader(None, None, 2, b"")),
    (v2(0x21, 0x31, bytes(216) + b"\x02\x00\x01x"), ProxyHeader(None, None, 2, b"")),
]


@pytest.mark.parametrize(("data", "expected"), V2_VALID)
def test_v2_headers_three_ways(data: bytes, expected: ProxyHeader) -> None:
    for chunks, leftover in three_ways(data):
        got = parse(*chunks)
        assert got == ProxyHeader(expected.source, expected.dest, 2, leftover), chunks


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (v2(0x11, 0x11, INET4_BLOCK), "unsupported version 1"),
        (v2(0x31, 0x11, INET4_BLOCK), "unsupported version 3"),
        (v2(0x01, 0x11, INET4_BLOCK), "unsupported version 0"),
        (v2(0x22, 0x11, INET4_BLOCK), "unknown command 2"),
        (v2(0x2F, 0x11, INET4_BLOCK), "unknown command 15"),
        (v2(0x21, 0x12, INET4_BLOCK), "datagram"),
        (v2(0x21, 0x22, INET6_BLOCK), "datagram"),
        (v2(0x21, 0x32, bytes(216)), "datagram"),
        (v2(0x21, 0x10, INET4_BLOCK), "invalid family/transport 0x10"),
        (v2(0x21, 0x13, INET4_BLOCK), "invalid family/transport 0x13"),
        (v2(0x21, 0x41, INET4_BLOCK), "invalid family/transport 0x41"),
        (v2(0x21, 0x01, b""), "invalid family/transport 0x01"),
        (v2(0x21, 0x11, INET4_BLOCK[:11]), "shorter than its address block"),
        (v2(0x21, 0x21, INET4_BLOCK), "shorter than its address block"),
        (v2(0x21, 0x31, bytes(215)), "shorter than its address block"),
        (v2(0x21, 0x11, INET4_BLOCK + b"\x01"), "truncated TLV"),
        (v2(0x21, 0x11, INET4_BLOCK + b"\x01\x00"), "truncated TLV"),
        (v2(0x21, 0x11, INET4_BLOCK + b"\x01\x00\x03ab"), "TLV past its length"),
        (v2(0x21, 0x21, INET6_BLOCK + b"\x01\x00\x00\x02\xff\xff"), "TLV past its length"),
        (v2(0x21, 0x31, bytes(216) + b"\x01\x00\x05"), "TLV past its length"),
        (V2_SIGNATURE[:5] + b"\x01", "not a PROXY protocol header"),
        (b"\r\n\r\n\r\n", "not a PROXY protocol header"),
    ],
)
def test_malformed_v2_is_bad(data: bytes, reason: str) -> None:
    assert reason in bad(data)
    assert reason in bad(data + TRAILER)


def test_v2_header_truncated_by_eof_is_bad() -> None:
    header = v2(0x21, 0x11, INET4_BLOCK)
    for cut in range(len(header)):
        got = parse(header[:cut], eof=True)
        assert isinstance(got, BadProxyHeader) and "closed" in got.reason, cut
    assert parse(header, eof=True) == ProxyHeader(
        ("192.0.2.1", 56324), ("198.51.100.7", 443), 2, b""
    )


def test_v2_length_is_checked_against_the_limit_before_buffering() -> None:
    header = v2(0x21, 0x11, INET4_BLOCK, length=1000)  # announces 1016 bytes, has 28
    assert "over the 500-byte limit" in bad(header, max_header_bytes=500)
    assert parse(header) is NEED_DATA
    # The protocol's own maximum is accepted by default, fed in small pieces.
    body = INET4_BLOCK + b"\x04" + (0xFFFF - 15).to_bytes(2, "big") + bytes(0xFFFF - 15)
    header = v2(0x21, 0x11, body)
    assert len(header) == V2_MAX
    p = ProxyHeaderParser()
    for i in range(0, len(header), 97):
        assert p.result() is NEED_DATA
        p.receive_data(header[i : i + 97])
    assert p.result() == ProxyHeader(("192.0.2.1", 56324), ("198.51.100.7", 443), 2, b"")


# --- driver contract ---------------------------------------------------------


def test_eof_before_anything_is_bad_and_feeding_after_a_decision_is_refused() -> None:
    got = parse(eof=True)
    assert isinstance(got, BadProxyHeader) and "closed" in got.reason
    p = ProxyHeaderParser()
    p.receive_data(V1_VALID[0][0])
    assert isinstance(p.result(), ProxyHeader)
    with pytest.raises(LocalProtocolError):
        p.receive_data(b"more")  # it would be missing from the leftover already handed out
    p = ProxyHeaderParser()
    p.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        p.receive_data(b"PROXY")
    p = ProxyHeaderParser(max_header_bytes=232)
    p.receive_data(b"\r" + bytes(300))
    with pytest.raises(LocalProtocolError):
        p.receive_data(b"x")
    for limit in (231, V2_MAX + 1):
        with pytest.raises(LocalProtocolError):
            ProxyHeaderParser(max_header_bytes=limit)


def test_reasons_never_echo_the_peer() -> None:
    secret = b"s3cr3t"
    for data in [
        b"PROXY TCP4 " + secret + b" 1.2.3.4 1 2\r\n",
        b"PROXY " + secret + b"\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 " + secret + b"\r\n",
        secret,
    ]:
        reason = bad(data)
        assert "s3cr3t" not in reason and "\n" not in reason


# --- builders ----------------------------------------------------------------


def test_builders_write_what_the_spec_shows() -> None:
    src, dst = ("192.168.0.1", 56324), ("192.168.0.11", 443)
    assert build_v1(src, dst) == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    assert build_v1(None, None) == b"PROXY UNKNOWN\r\n"
    assert build_v2(None, None) == V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert build_v2(("192.0.2.1", 56324), ("198.51.100.7", 443)) == v2(0x21, 0x11, INET4_BLOCK)
    tlv = build_v2(("::1", 1), ("::2", 2), tlvs=[(0x01, b"h2")])
    assert tlv.endswith(b"\x01\x00\x02h2") and tlv[13] == 0x21


@pytest.mark.parametrize("build", [build_v1, build_v2])
@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (("1.2.3.4", 1), None),
        (None, ("1.2.3.4", 1)),
        (("1.2.3.4", 1), ("::1", 1)),
        (("example.com", 1), ("1.2.3.4", 1)),
        (("01.2.3.4", 1), ("1.2.3.4", 1)),
        (("1.2.3.4", 65536), ("1.2.3.4", 1)),
        (("1.2.3.4", -1), ("1.2.3.4", 1)),
        (("1.2.3.4", True), ("1.2.3.4", 1)),
        (("fe80::1%eth0", 1), ("::1", 1)),
    ],
)
def test_builders_refuse_bad_local_input(
    build: Callable[..., bytes], src: tuple[str, int] | None, dst: tuple[str, int] | None
) -> None:
    with pytest.raises(LocalProtocolError):
        build(src, dst)


def test_build_v2_refuses_bad_tlvs() -> None:
    for tlvs in ([(256, b"")], [(-1, b"")], [(1, bytes(0x10000))], [(1, bytes(0xFFF0))] * 2):
        with pytest.raises(LocalProtocolError):
            build_v2(("1.2.3.4", 1), ("1.2.3.4", 2), tlvs=tlvs)


# --- trust -------------------------------------------------------------------


def test_parse_networks() -> None:
    got = parse_networks(" 127.0.0.1, 10.0.0.0/8,::1,fd00::/8 ,192.168.0.0/255.255.0.0")
    assert got == (
        ipaddress.IPv4Network("127.0.0.1/32"),
        ipaddress.IPv4Network("10.0.0.0/8"),
        ipaddress.IPv6Network("::1/128"),
        ipaddress.IPv6Network("fd00::/8"),
        ipaddress.IPv4Network("192.168.0.0/16"),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty list"),
        ("  ", "empty list"),
        ("10.0.0.1,", "empty entry"),
        ("10.0.0.1,,::1", "empty entry"),
        ("10.0.0.1/8", "host bits set; did you mean 10.0.0.0/8?"),
        ("localhost", "not an IP address or network"),
        ("10.0.0.0/33", "not an IP address or network"),
        ("010.0.0.1", "not an IP address or network"),
        ("10.0.0.1 10.0.0.2", "not an IP address or network"),
        ("[::1]", "without brackets"),
        ("fe80::1%eth0", "without brackets or a %zone"),
    ],
)
def test_parse_networks_refuses_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_networks(text)
    assert message in info.value.msg


def test_trusted() -> None:
    nets = parse_networks("127.0.0.1,10.0.0.0/8,::1,fd00::/8")
    for peer in [
        "127.0.0.1",
        "10.255.0.3",
        "::1",
        "fd12::5",
        "::ffff:10.1.2.3",
        "::ffff:127.0.0.1",
    ]:
        assert trusted(peer, nets), peer
    for peer in ["127.0.0.2", "11.0.0.1", "::2", "fe80::1", "::ffff:11.0.0.1", "", "x", "/tmp/s"]:
        assert not trusted(peer, nets), peer
    assert not trusted("10.0.0.1", ())
    assert trusted("::ffff:1.2.3.4", parse_networks("::ffff:0:0/96"))  # the IPv6 form too
    assert trusted("fe80::1%eth0", parse_networks("fe80::/10"))


# --- properties ----------------------------------------------------------------

ports = st.integers(0, 65535)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)
endpoints = st.one_of(
    st.tuples(st.tuples(v4, ports), st.tuples(v4, ports)),
    st.tuples(st.tuples(v6, ports), st.tuples(v6, ports)),
)
tlv_lists = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=20)), max_size=3)
headers = st.one_of(
    endpoints.map(lambda e: build_v1(*e)),
    st.builds(lambda e, tlvs: build_v2(*e, tlvs=tlvs), endpoints, tlv_lists),
)


def _mutate(header: bytes, at: int, value: int) -> bytes:
    at %= len(header)
    return header[:at] + bytes([value]) + header[at + 1 :]


# Random bytes rarely look like a header: bias towards the two openings, real headers
# (whole or cut short, with a tail) and real headers with one byte changed.
inputs = st.one_of(
    st.builds(_mutate, headers, st.integers(0, 200), st.integers(0, 255)),
    st.binary(max_size=150),
    st.binary(max_size=120).map(lambda b: b"PROXY " + b),
    st.binary(max_size=80).map(lambda b: V2_SIGNATURE + b),
    st.builds(
        lambda e, tail, cut: (build_v1(*e) + tail)[:cut], endpoints, st.binary(max_size=8), ports
    ),
    st.builds(
        lambda e, tlvs, tail, cut: (build_v2(*e, tlvs=tlvs) + tail)[:cut],
        endpoints,
        tlv_lists,
        st.binary(max_size=8),
        ports,
    ),
)


def same_answer(a: object, b: object) -> bool:
    """``a`` (from a prefix) agrees with ``b``: waiting, the same verdict, or the same header."""
    if a is NEED_DATA:
        return True
    if isinstance(a, ProxyHeader):
        return isinstance(b, ProxyHeader) and (a.source, a.dest, a.version) == (
            b.source,
            b.dest,
            b.version,
        )
    return isinstance(a, BadProxyHeader) and isinstance(b, BadProxyHeader)


@settings(max_examples=200, deadline=None)
@given(inputs, st.booleans())
def test_never_raises_on_arbitrary_bytes(data: bytes, eof: bool) -> None:
    got = parse(data, eof=eof)
    assert got is NEED_DATA or isinstance(got, ProxyHeader | BadProxyHeader)
    if eof:
        assert got is not NEED_DATA
    if isinstance(got, ProxyHeader):
        assert data.endswith(got.leftover)


@settings(max_examples=200, deadline=None)
@given(inputs, st.data())
def test_any_split_gives_the_same_answer(data: bytes, draw: st.DataObject) -> None:
    whole = parse(data)
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=4)))
    bounds = [0, *cuts, len(data)]
    assert parse(*(data[a:b] for a, b in pairwise(bounds))) == whole
    # Early answers are never wrong: every prefix waits or already agrees with the whole.
    for cut in range(len(data)):
        assert same_answer(parse(data[:cut]), whole), (data[:cut], whole)


@settings(max_examples=200, deadline=None)
@given(endpoints, tlv_lists, st.binary(max_size=64))
def test_builders_round_trip(
    ends: tuple[tuple[str, int], tuple[str, int]],
    tlvs: list[tuple[int, bytes]],
    leftover: bytes,
) -> None:
    src, dst = ends
    assert parse(build_v1(src, dst) + leftover) == ProxyHeader(src, dst, 1, leftover)
    assert parse(build_v2(src, dst, tlvs=tlvs) + leftover) == ProxyHeader(src, dst, 2, leftover)
