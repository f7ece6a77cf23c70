"""Read the HAProxy PROXY protocol header (v1 text, v2 binary) that a proxy puts first.

Theory of operation
-------------------
Behind sslh, nginx ``stream`` or a load balancer, the TCP peer is the proxy,
not the client.  A proxy configured for the PROXY protocol writes one header
at the very start of the connection naming the real endpoints, then relays the
client's bytes.  The driver feeds what it reads to :class:`ProxyHeaderParser`
until :meth:`~ProxyHeaderParser.result` is no longer ``NEED_DATA``, and then
stops feeding it.  The result is:

* :class:`ProxyHeader`: ``source``/``dest`` are ``(ip, port)`` with the address
  in its canonical text form, or ``None`` when the header carries no usable
  address (v1 ``UNKNOWN``, v2 ``LOCAL``, ``AF_UNSPEC`` or ``AF_UNIX``): the
  connection then keeps its real peer address.  ``leftover`` is every byte fed
  after the header: the start of the real stream, which the driver must not lose.
* :class:`BadProxyHeader` with a short one-line reason that never quotes the
  peer's bytes.  The spec says to drop such a connection at once, and the
  parser says so as early as it can: the first byte that cannot continue any
  valid header decides (``GET /`` is refused after one byte).

The spec forbids guessing whether a header is present, so a listener that
expects one treats everything without it as bad, and only accepts it from
proxies it trusts: :func:`parse_networks` reads that list from the command
line and :func:`trusted` checks a peer against it.

Strictness, following the spec (``doc/proxy-protocol.txt`` in HAProxy):

* v1 is one US-ASCII line of at most 107 bytes including CRLF, single spaces,
  IPv4 and port numbers without leading zeros, addresses of the announced
  family (IPv6 also in the dotted-quad tail form ``inet_ntop`` writes, but no
  ``%zone``), ports 0-65535, and CRLF only: a lone CR or LF is bad.  After
  ``UNKNOWN`` (followed by a space or CRLF) the rest of the line is ignored.
* v2: version 2 only, commands LOCAL and PROXY.  LOCAL ignores the family and
  the address block, as the spec says.  PROXY takes the family bytes the spec
  lists: TCP over IPv4/IPv6, UNIX stream and UNSPEC; datagram families are bad
  (this is a TCP listener), and so is anything else.  After the address block
  the TLVs are skipped, but they must exactly fill the announced length (no
  CRC32C check).  Under UNSPEC the whole block is skipped unread.

``receive_data(b"")`` means the peer closed: a header still incomplete then
is bad.  ``result()`` costs O(header) once and O(1) per call before that, so
feeding a large v2 header a byte at a time stays linear.  Nothing here raises
on peer input; :class:`~wraith.proto.errors.LocalProtocolError` only flags
misuse by our own code (data fed after the answer, bad builder arguments).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import LocalProtocolError

__all__ = [
    "NEED_DATA",
    "V1_MAX",
    "V2_MAX",
    "V2_SIGNATURE",
    "BadProxyHeader",
    "Network",
    "ProxyHeader",
    "ProxyHeaderParser",
    "build_v1",
    "build_v2",
    "parse_networks",
    "trusted",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = tuple[str, int]
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address

V1_MAX = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX = 16 + 0xFFFF
_V1_PREFIX = b"PROXY "
_V1_PROTOCOLS = (b"TCP4", b"TCP6", b"UNKNOWN")
_V4_CHARS = b"0123456789."
_V6_CHARS = b"0123456789abcdefABCDEF:."
_LOCAL, _PROXY = 0x0, 0x1
_UNSPEC, _TCP4, _TCP6, _UNIX_STREAM = 0x00, 0x11, 0x21, 0x31
_DATAGRAM = (0x12, 0x22, 0x32)
#: Size of the address block for each accepted PROXY family byte.
_BLOCK = {_UNSPEC: 0, _TCP4: 12, _TCP6: 36, _UNIX_STREAM: 216}


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True)
class ProxyHeader:
    #: The client's (ip, port), or None: keep the real peer address.
    source: Address | None
    #: The address the client connected to, as the proxy saw it, or None.
    dest: Address | None
    #: 1 (text) or 2 (binary).
    version: int
    #: Bytes fed after the header: the start of the proxied stream.
    leftover: bytes


@dataclass(frozen=True)
class BadProxyHeader:
    reason: str


class _Bad(Exception):
    pass


class ProxyHeaderParser:
    """Accumulates the first bytes of a connection; see the module docstring.

    ``max_header_bytes`` bounds a v2 header (v1 is always at most 107 bytes);
    the default is the largest the protocol can express.
    """

    def __init__(self, max_header_bytes: int = V2_MAX) -> None:
        if not 16 + _BLOCK[_UNIX_STREAM] <= max_header_bytes <= V2_MAX:
            raise LocalProtocolError(f"max_header_bytes must be between 232 and {V2_MAX}")
        self._max = max_header_bytes
        self._buf = bytearray()
        self._eof = False
        self._result: ProxyHeader | BadProxyHeader | None = None

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed."""
        if not data:
            self._eof = True
            return
        # Past max_header_bytes the answer is certain; data fed after it would be
        # missing from the leftover the driver already holds, so refuse loudly.
        if self._eof or self._result is not None or len(self._buf) >= self._max:
            raise LocalProtocolError("receive_data() after the PROXY header was decided or EOF")
        self._buf += data

    def result(self) -> ProxyHeader | BadProxyHeader | _NeedData:
        if self._result is not None:
            return self._result
        got: ProxyHeader | BadProxyHeader | _NeedData
        try:
            got = self._parse()
        except _Bad as exc:
            got = BadProxyHeader(str(exc))
        if isinstance(got, _NeedData):
            if not self._eof:
                return NEED_DATA
            got = BadProxyHeader("connection closed before the end of the PROXY header")
        self._result = got
        return got

    def _parse(self) -> ProxyHeader | _NeedData:
        buf = self._buf
        if not buf:
            return NEED_DATA
        magic = _V1_PREFIX if buf[0] == _V1_PREFIX[0] else V2_SIGNATURE
        n = min(len(buf), len(magic))
        if buf[:n] != magic[:n]:
            raise _Bad("not a PROXY protocol header")
        if magic is V2_SIGNATURE:
            return self._v2()
        return self._v1()

    def _v1(self) -> ProxyHeader | _NeedData:
        buf = self._buf
        lf = buf.find(b"\n", 0, V1_MAX)
        if lf < 0:
            window = bytes(buf[:V1_MAX])
            if len(window) >= V1_MAX:
                raise _Bad(f"v1 header without CRLF in the first {V1_MAX} bytes")
            cr = window.find(b"\r")
            if cr >= 0 and cr != len(window) - 1:
                raise _Bad("v1 header with a CR not followed by LF")
            if len(window) >= len(_V1_PREFIX):
                if cr >= 0:
                    _v1_line(window[len(_V1_PREFIX) : -1])  # complete but for the LF
                else:
                    _v1_check_prefix(window[len(_V1_PREFIX) :])
            return NEED_DATA
        if buf[lf - 1] != 0x0D:
            raise _Bad("v1 header ends in LF without CR")
        body = bytes(buf[len(_V1_PREFIX) : lf - 1])
        if b"\r" in body:
            raise _Bad("v1 header with a CR not followed by LF")
        addresses = _v1_line(body)
        leftover = bytes(buf[lf + 1 :])
        if addresses is None:
            return ProxyHeader(None, None, 1, leftover)
        return ProxyHeader(addresses[0], addresses[1], 1, leftover)

    def _v2(self) -> ProxyHeader | _NeedData:
        buf = self._buf
        if len(buf) < 13:
            return NEED_DATA
        version, command = buf[12] >> 4, buf[12] & 0x0F
        if version != 2:
            raise _Bad(f"v2 header with unsupported version {version}")
        if command not in (_LOCAL, _PROXY):
            raise _Bad(f"v2 header with unknown command {command}")
        if len(buf) < 14:
            return NEED_DATA
        family = buf[13]
        if command == _PROXY:
            if family in _DATAGRAM:
                raise _Bad("v2 header for a datagram transport on a TCP listener")
            if family not in _BLOCK:
                raise _Bad(f"v2 header with invalid family/transport 0x{family:02x}")
        if len(buf) < 16:
            return NEED_DATA
        total = 16 + int.from_bytes(buf[14:16], "big")
        if total > self._max:
            raise _Bad(f"v2 header of {total} bytes, over the {self._max}-byte limit")
        if command == _PROXY and total < 16 + _BLOCK[family]:
            raise _Bad("v2 header length shorter than its address block")
        if len(buf) < total:
            return NEED_DATA
        leftover = bytes(buf[total:])
        if command == _LOCAL or family == _UNSPEC:
            return ProxyHeader(None, None, 2, leftover)
        _skip_tlvs(buf, 16 + _BLOCK[family], total)
        if family == _UNIX_STREAM:
            return ProxyHeader(None, None, 2, leftover)
        size = 4 if family == _TCP4 else 16
        ports = 16 + 2 * size
        src_ip = ipaddress.ip_address(bytes(buf[16 : 16 + size]))
        dst_ip = ipaddress.ip_address(bytes(buf[16 + size : ports]))
        src_port = int.from_bytes(buf[ports : ports + 2], "big")
        dst_port = int.from_bytes(buf[ports + 2 : ports + 4], "big")
        return ProxyHeader((str(src_ip), src_port), (str(dst_ip), dst_port), 2, leftover)


def _v1_check_prefix(body: bytes) -> None:
    """Raise _Bad if no valid line body (after ``PROXY ``) starts with ``body``."""
    fields = body.split(b" ")
    protocol = fields[0]
    if len(fields) == 1:
        if not any(p.startswith(protocol) for p in _V1_PROTOCOLS):
            raise _Bad("v1 header with an unknown protocol")
        return
    if protocol == b"UNKNOWN":
        return
    if protocol not in _V1_PROTOCOLS:
        raise _Bad("v1 header with an unknown protocol")
    for i, field in enumerate(fields[1:5], 1):
        partial = i == len(fields) - 1
        if i <= 2:
            _v1_address(field, protocol, partial)
        else:
            _v1_port(field, partial)
    if len(fields) > 5:
        raise _Bad("v1 header with too many fields")


def _v1_line(body: bytes) -> tuple[Address, Address] | None:
    """The addresses of a whole line body (after ``PROXY ``, before CRLF)."""
    fields = body.split(b" ")
    protocol = fields[0]
    if protocol == b"UNKNOWN":
        return None
    if protocol not in _V1_PROTOCOLS:
        raise _Bad("v1 header with an unknown protocol")
    # Field by field first, so that a doubled space reads as an empty field.
    for i, field in enumerate(fields[1:5], 1):
        if i <= 2:
            _v1_address(field, protocol, False)
        else:
            _v1_port(field, False)
    if len(fields) != 5:
        raise _Bad(f"v1 header with too {'many' if len(fields) > 5 else 'few'} fields")
    src = _v1_address(fields[1], protocol, False)
    dst = _v1_address(fields[2], protocol, False)
    assert src is not None and dst is not None
    return (src, _v1_port(fields[3], False)), (dst, _v1_port(fields[4], False))


def _v1_address(field: bytes, protocol: bytes, partial: bool) -> str | None:
    v4 = protocol == b"TCP4"
    name = "TCP4" if v4 else "TCP6"
    # 45: the longest IPv6 text, with a dotted-quad tail.
    if len(field) > (15 if v4 else 45) or field.translate(None, _V4_CHARS if v4 else _V6_CHARS):
        raise _Bad(f"v1 header with a bad {name} address")
    if partial:
        return None
    if not field:
        raise _Bad("v1 header with an empty field")
    try:
        addr = (ipaddress.IPv4Address if v4 else ipaddress.IPv6Address)(field.decode("ascii"))
    except ValueError:
        raise _Bad(f"v1 header with a bad {name} address") from None
    return str(addr)


def _v1_port(field: bytes, partial: bool) -> int:
    if not field:
        if partial:
            return 0
        raise _Bad("v1 header with an empty field")
    if not field.isdigit():
        raise _Bad("v1 header with a bad port")
    if len(field) > 1 and field[0] == 0x30:
        raise _Bad("v1 header with a leading zero in a port")
    port = int(field)  # at most 107 digits: cheap
    if port > 0xFFFF:
        raise _Bad("v1 header with a port out of range")
    return port


def _skip_tlvs(buf: bytearray, pos: int, end: int) -> None:
    while pos < end:
        if end - pos < 3:
            raise _Bad("v2 header with a truncated TLV")
        pos += 3 + int.from_bytes(buf[pos + 1 : pos + 3], "big")
        if pos > end:
            raise _Bad("v2 header with a TLV past its length")


def _endpoints(src: Address | None, dst: Address | None) -> tuple[_IP, int, _IP, int] | None:
    if src is None and dst is None:
        return None
    if src is None or dst is None:
        raise LocalProtocolError("source and dest must both be given, or both be None")
    out = []
    for host, port in (src, dst):
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise LocalProtocolError(f"{host!r} is not an IP address") from None
        if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
            raise LocalProtocolError(f"{host!r}: a scoped IPv6 address cannot be sent")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise LocalProtocolError(f"port {port!r} is not in 0-65535")
        out.append((addr, port))
    (src_ip, sport), (dst_ip, dport) = out
    if src_ip.version != dst_ip.version:
        raise LocalProtocolError("source and dest must be of the same address family")
    return src_ip, sport, dst_ip, dport


def build_v1(src: Address | None, dst: Address | None) -> bytes:
    """A v1 header line; ``None, None`` gives ``PROXY UNKNOWN``."""
    endpoints = _endpoints(src, dst)
    if endpoints is None:
        return b"PROXY UNKNOWN\r\n"
    src_ip, sport, dst_ip, dport = endpoints
    protocol = "TCP4" if src_ip.version == 4 else "TCP6"
    return f"PROXY {protocol} {src_ip} {dst_ip} {sport} {dport}\r\n".encode("ascii")


def build_v2(
    src: Address | None, dst: Address | None, *, tlvs: Sequence[tuple[int, bytes]] = ()
) -> bytes:
    """A v2 header; ``None, None`` gives a LOCAL command (a health check)."""
    body = bytearray()
    endpoints = _endpoints(src, dst)
    if endpoints is None:
        command, family = _LOCAL, _UNSPEC
    else:
        src_ip, sport, dst_ip, dport = endpoints
        command, family = _PROXY, _TCP4 if src_ip.version == 4 else _TCP6
        body += src_ip.packed + dst_ip.packed + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    for kind, value in tlvs:
        if not 0 <= kind <= 0xFF or len(value) > 0xFFFF:
            raise LocalProtocolError("TLV type must fit a byte and its value 65535 bytes")
        body += bytes([kind]) + len(value).to_bytes(2, "big") + value
    if len(body) > 0xFFFF:
        raise LocalProtocolError("v2 header body longer than 65535 bytes")
    return V2_SIGNATURE + bytes([0x20 | command, family]) + len(body).to_bytes(2, "big") + body


def parse_networks(text: str) -> tuple[Network, ...]:
    """Parse ``"127.0.0.1,10.0.0.0/8,::1"``: addresses or networks, comma-separated."""
    if not text.strip():
        raise LocalProtocolError("empty list of addresses/networks")
    out: list[Network] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise LocalProtocolError(f"empty entry in the address/network list {text!r}")
        if "[" in item or "]" in item or "%" in item:
            raise LocalProtocolError(
                f"{item!r}: write IPv6 networks without brackets or a %zone, like fd00::/8"
            )
        try:
            out.append(ipaddress.ip_network(item))
            continue
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise LocalProtocolError(
                f"{item!r} is not an IP address or network (like 10.0.0.0/8 or ::1)"
            ) from None
        raise LocalProtocolError(f"{item!r} has host bits set; did you mean {loose}?")
    return tuple(out)


def trusted(peer_ip: str, networks: Sequence[Network]) -> bool:
    """Whether ``peer_ip`` (as the socket reports it) lies in one of ``networks``.

    An IPv4-mapped IPv6 peer (``::ffff:1.2.3.4``, as a dual-stack socket reports
    IPv4 clients) also matches IPv4 networks.  Anything unparsable is untrusted.
    """
    try:
        addr = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False
    forms: list[_IP] = [addr]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        forms.append(addr.ipv4_mapped)
    return any(form in net for form in forms for net in networks if form.version == net.version)
