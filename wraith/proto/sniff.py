"""Peek at a TLS ClientHello before the handshake: SNI and the offered ALPN protocols.

Theory of operation
-------------------
The server must pick a certificate (and, later, tell Wraith clients from
probers) from what the client offers, before Python's ``ssl`` runs the
handshake; ``ssl`` shows the SNI in a callback but never the offered ALPN
list, and the ACME TLS-ALPN-01 challenge (``acme-tls/1``) is decided by ALPN.
So the driver peeks: it feeds the first bytes of a connection to
:class:`ClientHelloSniffer` (without consuming them from the socket) until
:meth:`~ClientHelloSniffer.result` is no longer ``NEED_DATA``.

The result is :class:`ClientHello` (``server_name`` may be ``None``: no SNI,
e.g. an IP-only client) or :class:`NotTLS` with a one-line reason, for
anything that is not a TLS handshake record carrying a ClientHello.  A
ClientHello split over several handshake records is reassembled; the total
is bounded by ``max_bytes``.  Nothing here raises on peer input.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LocalProtocolError

__all__ = ["NEED_DATA", "ClientHello", "ClientHelloSniffer", "NotTLS"]

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_MAX_RECORD = 16384 + 2048


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True)
class ClientHello:
    #: The SNI host name (lower case, no trailing dot), or None if none was sent.
    server_name: str | None
    #: The ALPN protocols offered, in the client's order.
    alpn: tuple[str, ...]


@dataclass(frozen=True)
class NotTLS:
    reason: str


class _Bad(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Bad("truncated ClientHello")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def vec(self, length_bytes: int) -> bytes:
        n = int.from_bytes(self.take(length_bytes), "big")
        return self.take(n)


class ClientHelloSniffer:
    """Accumulates the first bytes of a connection; see the module docstring."""

    def __init__(self, max_bytes: int = 64 * 1024) -> None:
        if max_bytes < 64:
            raise LocalProtocolError("max_bytes must be at least 64")
        self._max = max_bytes
        self._buf = bytearray()

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if len(self._buf) <= self._max:  # past the bound, result() says so; keep no more
            self._buf += data

    def result(self) -> ClientHello | NotTLS | _NeedData:
        try:
            return self._parse()
        except _Bad as exc:
            return NotTLS(str(exc))

    def _parse(self) -> ClientHello | _NeedData:
        buf = bytes(self._buf)
        handshake = bytearray()
        pos = 0
        while True:
            if len(buf) - pos < 5:
                if buf and buf[0] != _HANDSHAKE:
                    raise _Bad("not a TLS handshake record")
                return NEED_DATA
            ctype, major = buf[pos], buf[pos + 1]
            length = int.from_bytes(buf[pos + 3 : pos + 5], "big")
            if ctype != _HANDSHAKE or major != 3:
                raise _Bad("not a TLS handshake record")
            if length == 0 or length > _MAX_RECORD:
                raise _Bad(f"TLS record length {length} out of range")
            if len(buf) - pos - 5 < length:
                if len(buf) >= self._max:
                    raise _Bad(f"ClientHello larger than {self._max} bytes")
                return NEED_DATA
            handshake += buf[pos + 5 : pos + 5 + length]
            pos += 5 + length
            if len(handshake) >= 4:
                if handshake[0] != _CLIENT_HELLO:
                    raise _Bad("first handshake message is not a ClientHello")
                body_len = int.from_bytes(handshake[1:4], "big")
                if body_len + 4 > self._max:
                    raise _Bad(f"ClientHello larger than {self._max} bytes")
                if len(handshake) >= 4 + body_len:
                    return _client_hello(bytes(handshake[4 : 4 + body_len]))


def _client_hello(body: bytes) -> ClientHello:
    r = _Reader(body)
    r.take(2)  # legacy_version
    r.take(32)  # random
    r.vec(1)  # legacy_session_id
    suites = r.vec(2)
    if not suites or len(suites) % 2:
        raise _Bad("bad cipher suite list")
    r.vec(1)  # legacy_compression_methods
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    if r.pos == len(body):
        return ClientHello(None, ())  # no extensions at all
    ext = _Reader(r.vec(2))
    if r.pos != len(body):
        raise _Bad("junk after the ClientHello extensions")
    seen: set[int] = set()
    while ext.pos < len(ext.data):
        etype = ext.u16()
        data = ext.vec(2)
        if etype in seen:
            raise _Bad(f"duplicate extension {etype}")
        seen.add(etype)
        if etype == _EXT_SERVER_NAME:
            server_name = _sni(data)
        elif etype == _EXT_ALPN:
            alpn = _alpn(data)
    return ClientHello(server_name, alpn)


def _sni(data: bytes) -> str | None:
    r = _Reader(_Reader(data).vec(2))
    name: str | None = None
    while r.pos < len(r.data):
        kind = r.u8()
        value = r.vec(2)
        if kind != 0:
            continue
        if name is not None:
            raise _Bad("more than one SNI host name")
        if not value or len(value) > 255 or not all(0x21 <= b < 0x7F for b in value):
            raise _Bad("bad SNI host name")
        name = value.decode("ascii").lower().rstrip(".")
        if not name:
            raise _Bad("bad SNI host name")
    return name


def _alpn(data: bytes) -> tuple[str, ...]:
    r = _Reader(_Reader(data).vec(2))
    out = []
    while r.pos < len(r.data):
        proto = r.vec(1)
        if not proto:
            raise _Bad("empty ALPN protocol name")
        out.append(proto.decode("latin-1"))
    if not out:
        raise _Bad("empty ALPN list")
    return tuple(out)
