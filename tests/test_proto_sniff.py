"""The ClientHello sniffer against real ClientHellos (made by OpenSSL through ``ssl``)."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wraith.proto.errors import LocalProtocolError
from wraith.proto.sniff import NEED_DATA, ClientHello, ClientHelloSniffer, NotTLS


def real_client_hello(
    server_name: str | None, alpn: list[str] | None, version: ssl.TLSVersion | None = None
) -> bytes:
    """The first flight of a real OpenSSL client (no server needed: it stops at read)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def sniff(*chunks: bytes) -> object:
    s = ClientHelloSniffer()
    for chunk in chunks:
        s.receive_data(chunk)
    return s.result()


def refragment(hello: bytes, sizes: list[int]) -> bytes:
    """The same handshake bytes, re-cut into several TLS records."""
    body = hello[5:]
    out = bytearray()
    pos = 0
    for size in [*sizes, len(body)]:
        piece = body[pos : pos + size]
        if piece:
            out += bytes([22, 3, 1]) + len(piece).to_bytes(2, "big") + piece
        pos += len(piece)
    return bytes(out)


@pytest.mark.parametrize("version", [None, ssl.TLSVersion.TLSv1_2])
def test_sni_and_alpn_from_a_real_client_hello(version: ssl.TLSVersion | None) -> None:
    hello = real_client_hello("VPN.Example.org", ["acme-tls/1", "http/1.1"], version)
    assert sniff(hello) == ClientHello("vpn.example.org", ("acme-tls/1", "http/1.1"))


def test_no_sni_and_no_alpn() -> None:
    assert sniff(real_client_hello(None, None)) == ClientHello(None, ())


def test_fed_byte_by_byte_it_waits_then_answers() -> None:
    hello = real_client_hello("a.example", ["h2"])
    s = ClientHelloSniffer()
    for i in range(len(hello) - 1):
        s.receive_data(hello[i : i + 1])
        assert s.result() is NEED_DATA
    s.receive_data(hello[-1:])
    assert s.result() == ClientHello("a.example", ("h2",))


def test_a_hello_split_over_records_is_reassembled() -> None:
    hello = real_client_hello("split.example", ["http/1.1"])
    assert sniff(refragment(hello, [1, 40, 100])) == ClientHello("split.example", ("http/1.1",))


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x16\x03\x01\x00\x00",  # an empty record
        b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",  # a ServerHello, not a ClientHello
        b"\x17\x03\x03\x00\x05hello",  # application data
    ],
)
def test_anything_else_is_not_tls(data: bytes) -> None:
    assert isinstance(sniff(data), NotTLS)


def test_an_oversized_hello_is_refused_not_buffered() -> None:
    s = ClientHelloSniffer(max_bytes=1024)
    record = bytes([22, 3, 1, 0x40, 0x00]) + bytes([1, 0, 0x3F, 0xFC])
    s.receive_data(record + bytes(4000))
    got = s.result()
    assert isinstance(got, NotTLS) and "larger than" in got.reason
    with pytest.raises(LocalProtocolError):
        ClientHelloSniffer(max_bytes=10)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    got = sniff(data)
    assert got is NEED_DATA or isinstance(got, ClientHello | NotTLS)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000))
def test_every_proper_prefix_of_a_real_hello_waits(cut: int) -> None:
    hello = real_client_hello("p.example", ["http/1.1"])
    assert sniff(hello[: cut % len(hello)]) is NEED_DATA
