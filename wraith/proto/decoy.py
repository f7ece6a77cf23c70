"""The built-in decoy web site of stealth mode: a small static HTTP/1.1 server, on h11.

Theory of operation
-------------------
In stealth mode every connection that is not a Wraith client is served a
decoy web site.  With ``--decoy URL`` the driver splices the connection to a
real web server; with ``--decoy DIR`` (or no ``--decoy``) it runs this server,
which answers ``GET`` and ``HEAD`` from a lookup function the caller supplies
(the files of ``DIR``, or the default page) and nothing else.

:class:`StaticSite` is Sans-IO: the driver feeds it the bytes the client sent
(starting with the bytes the stealth gate already read) with
:meth:`~StaticSite.receive_data`, writes out :meth:`~StaticSite.data_to_send`,
and closes the connection once :attr:`~StaticSite.closed` is true.  The clock
comes in as ``now`` (seconds since the epoch) for the ``Date`` header.
:attr:`IDLE_TIMEOUT` is how long the driver lets a connection sit silent
before it closes it, as any web server does.

It behaves as a plain web server would: keep-alive per HTTP/1.1, ``404`` for
unknown paths, ``405`` for other methods (and then it closes: it does not read
request bodies), ``400`` and a close for anything that is not HTTP (an SSH
banner, random bytes).  Nothing here raises on peer input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import unquote, urlsplit

import h11

__all__ = ["IDLE_TIMEOUT", "Page", "Redirect", "StaticSite", "error_page"]

#: Seconds a connection may stay silent (before or between requests).
IDLE_TIMEOUT = 60.0
#: The largest request head accepted, in bytes.
MAX_HEAD = 16 * 1024


@dataclass(frozen=True)
class Page:
    body: bytes
    content_type: str
    #: ``Last-Modified``, as seconds since the epoch (None: not sent).
    modified: float | None = None


@dataclass(frozen=True)
class Redirect:
    """A ``301`` to the same path on ``https://`` and the request's own host."""


#: Looks a decoded URL path ("/", "/css/site.css") up; None means 404.
Lookup = Callable[[str], Page | Redirect | None]


def error_page(status: int, reason: str) -> bytes:
    title = f"{status} {reason}"
    return (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n"
        f"<body><h1>{title}</h1></body></html>\n"
    ).encode()


_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
}


class StaticSite:
    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._out = bytearray()
        self._closed = False
        #: The start of the request line being received, to refuse non-HTTP at once.
        self._line = bytearray()

    @property
    def closed(self) -> bool:
        """True once the driver should close the connection (after sending the output)."""
        return self._closed

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Feed bytes from the client (``b""`` for end of stream)."""
        data = bytes(data)
        if not data:
            self._receive(data, now)
            return
        # h11 holds an incomplete head to MAX_HEAD only in what it has buffered: never
        # give it more than one byte past that, so that a head is refused alike
        # whether it comes whole or a byte at a time.
        pos = 0
        while pos < len(data) and not self._closed:
            room = max(1, MAX_HEAD + 1 - len(self._conn.trailing_data[0]))
            self._receive(data[pos : pos + room], now)
            pos += room

    def _receive(self, data: bytes, now: float) -> None:
        if self._closed:
            return
        if self._conn.their_state is h11.IDLE and b"\n" not in self._line:
            self._line += bytes(data[: 8192 - len(self._line)])
            if not _line_may_be_http(bytes(self._line)):
                # As a web server does: a request line that cannot be HTTP is a 400 at once.
                self._error(400, now)
                return
        self._conn.receive_data(data)
        while not self._closed:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                self._error(status if status in _REASONS else 400, now)
                return
            if event is h11.NEED_DATA:
                if self._conn.their_state is h11.DONE and self._conn.our_state is h11.DONE:
                    self._next_cycle(now)
                    continue
                return
            if isinstance(event, h11.ConnectionClosed):
                self._closed = True
                return
            if isinstance(event, h11.Request):
                self._answer(event, now)
            elif isinstance(event, h11.EndOfMessage):
                self._next_cycle(now)

    def _next_cycle(self, now: float) -> None:
        if self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is h11.MUST_CLOSE:
            self._closed = True
            return
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
            # Bytes of a pipelined request are already buffered: the loop goes on.
            self._line = bytearray(self._conn.trailing_data[0][:8192])
            if not _line_may_be_http(bytes(self._line)):
                # h11 would wait for the whole head: refuse it at once, as above.
                self._error(400, now)
        elif self._conn.our_state is h11.CLOSED or self._conn.their_state is h11.CLOSED:
            self._closed = True

    def _answer(self, request: h11.Request, now: float) -> None:
        method = request.method.upper()
        if method not in (b"GET", b"HEAD"):
            body = error_page(405, _REASONS[405])
            self._respond(
                405,
                now,
                [(b"Allow", b"GET, HEAD"), (b"Connection", b"close")],
                body,
                head_only=False,
            )
            self._closed = True
            return
        path = _path(request.target)
        page = self._lookup(path) if path is not None else None
        if isinstance(page, Redirect):
            host = _host(request.headers)
            if host is not None and path is not None:
                location = f"https://{host}{request.target.decode('ascii')}".encode()
                body = error_page(301, _REASONS[301])
                self._respond(301, now, [(b"Location", location)], body, method == b"HEAD")
                return
            page = None
        if page is None:
            self._respond(404, now, [], error_page(404, _REASONS[404]), method == b"HEAD")
            return
        extra = []
        if page.modified is not None:
            extra.append((b"Last-Modified", formatdate(page.modified, usegmt=True).encode()))
        self._respond(
            200,
            now,
            [(b"Content-Type", page.content_type.encode()), *extra],
            page.body,
            method == b"HEAD",
        )

    def _respond(
        self,
        status: int,
        now: float,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        head_only: bool,
    ) -> None:
        all_headers = [(b"Date", formatdate(now, usegmt=True).encode())]
        if not any(name.lower() == b"content-type" for name, _ in headers):
            all_headers.append((b"Content-Type", b"text/html; charset=utf-8"))
        all_headers += headers
        all_headers.append((b"Content-Length", str(len(body)).encode()))
        try:
            self._out += (
                self._conn.send(
                    h11.Response(status_code=status, headers=all_headers, reason=_REASONS[status])
                )
                or b""
            )
            if not head_only:
                self._out += self._conn.send(h11.Data(data=body)) or b""
            self._out += self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self._closed = True
            return
        self._next_cycle_if_done()

    def _next_cycle_if_done(self) -> None:
        if self._conn.our_state is h11.MUST_CLOSE:
            self._closed = True

    def _error(self, status: int, now: float) -> None:
        body = error_page(status, _REASONS[status])
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            headers = [
                (b"Date", formatdate(now, usegmt=True).encode()),
                (b"Content-Type", b"text/html; charset=utf-8"),
                (b"Content-Length", str(len(body)).encode()),
                (b"Connection", b"close"),
            ]
            try:
                self._out += (
                    self._conn.send(
                        h11.Response(status_code=status, headers=headers, reason=_REASONS[status])
                    )
                    or b""
                )
                self._out += self._conn.send(h11.Data(data=body)) or b""
                self._out += self._conn.send(h11.EndOfMessage()) or b""
            except h11.LocalProtocolError:
                pass
        self._closed = True


_METHOD_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TARGET_CHARS = frozenset(range(0x21, 0x7F))


def _line_may_be_http(line: bytes) -> bool:
    """False once the start of a request line cannot be ``METHOD target HTTP/x.y``.

    Leading empty lines are allowed (RFC 9112 section 2.2), as servers allow them.
    """
    line = line.lstrip(b"\r\n")
    end = line.find(b"\n")
    if end >= 0:
        line = line[: end + 1]
    method, sp, rest = line.partition(b" ")
    if not set(method) <= _METHOD_CHARS or len(method) > 20:
        return False
    if not sp:
        return True
    target, sp, version = rest.partition(b" ")
    if not set(target) <= _TARGET_CHARS or (sp and not target):
        return False
    if not sp:
        return end < 0
    want = b"HTTP/1.1\r\n"
    if version.startswith(b"HTTP/1.0"):
        want = b"HTTP/1.0\r\n"
    head = version[: len(want)]
    if head.endswith(b"\n") and head[:-1].endswith(b"\r") is False:
        head = head[:-1] + b"\r\n"  # a bare LF ends the line too
    return want.startswith(head) or want == head


_HOST_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")


def _host(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The Host header's host name, without the port, if it is a plain name or address."""
    for name, value in headers:
        if name == b"host":
            if not value or len(value) > 255 or not set(value) <= _HOST_CHARS:
                return None
            host = value.decode("ascii")
            if host.startswith("["):
                end = host.find("]")
                return host[: end + 1] if end > 1 else None
            bare, _, port = host.partition(":")
            return bare if bare and ":" not in port else None
    return None


def _path(target: bytes) -> str | None:
    """The decoded path of a request target, or None if it is not an origin-form path."""
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not text.startswith("/") or text.startswith("//"):
        return None
    try:
        path = unquote(urlsplit(text).path, errors="strict")
    except (ValueError, UnicodeDecodeError):
        return None
    return path or "/"
