"""The stealth handshake inside TLS: a secret-path HTTP/1.1 Upgrade, or the decoy.

Theory of operation
-------------------
In stealth mode (ADR-017) a ``tls://`` listener serves two kinds of visitor
on one port.  A Wraith client opens TLS and sends what looks like an ordinary
websocket upgrade, ``GET <secret path> HTTP/1.1`` with ``Connection: Upgrade``
and ``Upgrade: websocket``; it gets ``101 Switching Protocols`` and then SSH.
Everyone else must see nothing but the decoy website, byte for byte.

The server feeds the decrypted bytes from the client to :class:`StealthGate`.
``receive_data()`` only buffers (``b""`` is EOF); ``result()`` parses as far
as the buffer allows and answers ``NEED_DATA``, :class:`Tunnel` or
:class:`Decoy`.  The answer is final and ``result()`` repeats it; after it
was handed out, ``receive_data()`` raises ``LocalProtocolError``, because the
stream belongs to the driver now and bytes fed here would be lost.  Bytes fed
*before* that call count even if the decision could have been made earlier:
``Decoy.replay`` is every byte fed, ``Tunnel.leftover`` every byte after the
request head.  So the answer depends only on the bytes, never on how they were
split or when ``result()`` was called; the driver calls it after each read.

- :class:`Tunnel`: the driver sends :meth:`StealthGate.response`, then runs
  SSH over the stream, starting with ``leftover``.
- :class:`Decoy`: the driver writes ``replay`` to the decoy web server and
  splices the two connections; the decoy answers as it would itself.
- ``NEED_DATA``: a silent client stays here forever.  Silence is the driver's
  job: it opens the decoy connection at accept time and closes the client
  when the decoy closes that idle connection, so a silent probe is timed out
  by the decoy's own rules.  EOF before a decision is :class:`Decoy`.

What a prober can learn
~~~~~~~~~~~~~~~~~~~~~~~
The gate adds one observable: while it holds bytes the decoy sees nothing,
so a prober who drips a request and stalls can tell *when* the gate let go
(the decoy's header timeout or error starts at that moment, not earlier).
The rule here is therefore: whether the gate holds or has let go depends on
public things only (the bytes, the path alphabet, the public limits), and on
the secret at exactly one point, when the whole request-target is known.

A byte-by-byte match against ``GET <secret> HTTP/1.1`` would break that rule:
it would let go at the first wrong byte of the path, and a prober dripping
``GET /a``, ``GET /b``, ... and watching which one is still held would read
the secret a character at a time (64 tries per character, a few thousand
probes in all).  So the gate matches only the public ``GET /``, then holds
while the bytes are path characters (``A-Z a-z 0-9 _ - /``, the alphabet of
every secret path) up to :data:`MAX_SECRET_PATH` (public, the longest secret
path allowed).  The space that ends the request-target decides, with
``hmac.compare_digest`` over the whole target.  Any other byte, or a longer
target, lets go at once: ``GET /index.html`` at the ``.``, a query at the
``?``, an SSH banner or any non-HTTP bytes at byte 0.  None of that depends on
the secret.  After a matching target, the rest (``HTTP/1.1``, CRLF, then the
headers, checked by h11) is decided as early as it can be; only someone who
already sent the secret can observe that.

``compare_digest`` returns early when the lengths differ, so its running time
could show the secret's length, never its characters; the length is public
anyway (:func:`new_secret_path` of the usual 18 bytes gives 25 characters),
and nanoseconds are lost in TLS and network jitter.  The constant-time
compare is there so that the characters are never what is being timed.

The accepted request: ``GET``, the secret path (origin form, no query),
``HTTP/1.1``, a Host header, a ``Connection`` list holding ``upgrade`` and an
``Upgrade`` list holding ``websocket`` (both case-insensitive), no body, and
at most one ``Sec-WebSocket-Key`` (16 bytes in base64); the whole head within
``max_head`` bytes.  The 101 answer is made by h11 and carries
``Sec-WebSocket-Accept`` when the request had a key (RFC 6455 section 4.2.2),
so it reads like any websocket upgrade.

The client side, :class:`StealthClient`, makes that request with h11 (the
caller passes the 16 random key bytes: nothing here may read ``os.urandom``)
and parses the answer the same way: ``NEED_DATA``, :class:`Accepted` on a 101
with the right ``Sec-WebSocket-Accept``, or :class:`Refused` with a one-line
reason.  An answer that does not start like ``HTTP/`` is refused at once (an
SSH banner by name: a server not in stealth mode), since h11 would wait for a
blank line that such a server never sends.  Nothing in this module raises on
peer input.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

import h11

from .errors import LocalProtocolError

__all__ = [
    "MAX_SECRET_PATH",
    "MIN_SECRET_PATH",
    "NEED_DATA",
    "Accepted",
    "Decoy",
    "NeedData",
    "Refused",
    "StealthClient",
    "StealthGate",
    "Tunnel",
    "new_secret_path",
]

#: Shortest secret path: ``/`` and 22 base64 characters (132 bits).
MIN_SECRET_PATH = 23
#: Longest secret path; also how long the gate holds a request-target (public).
MAX_SECRET_PATH = 256
#: Smallest ``max_head`` a gate or client accepts.
_MIN_HEAD = 1024

_PATH_RUN = re.compile(rb"[A-Za-z0-9_/-]*")
_METHOD = b"GET /"
_VERSION = b"HTTP/1.1\r\n"
_HTTP = b"HTTP/"
_SSH = b"SSH-"
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
_REFUSED_HINT = "wrong --stealth-path, or not a Wraith server in stealth mode"


class NeedData(enum.Enum):
    """Type of the :data:`NEED_DATA` sentinel (an enum so mypy can narrow on it)."""

    #: ``result()`` needs more bytes before it can decide.
    NEED_DATA = enum.auto()


NEED_DATA = NeedData.NEED_DATA


def _check_bytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"{name} must be bytes, not {type(value).__name__}")


@dataclass(frozen=True, kw_only=True)
class Tunnel:
    """Server side: the secret-path upgrade; send :meth:`StealthGate.response`, then SSH."""

    #: Bytes after the request head: the start of the client's SSH stream (usually empty).
    leftover: bytes

    def __post_init__(self) -> None:
        _check_bytes("leftover", self.leftover)


@dataclass(frozen=True, kw_only=True)
class Decoy:
    """Server side: not a Wraith client; replay the bytes to the decoy, then splice."""

    #: Every byte received so far, unchanged.
    replay: bytes
    #: Why, in a few words, for the log; never holds the secret or the peer's bytes.
    reason: str = ""

    def __post_init__(self) -> None:
        _check_bytes("replay", self.replay)


@dataclass(frozen=True, kw_only=True)
class Accepted:
    """Client side: the server switched protocols; SSH starts now."""

    #: Bytes after the 101 head: the start of the server's SSH stream.
    leftover: bytes

    def __post_init__(self) -> None:
        _check_bytes("leftover", self.leftover)


@dataclass(frozen=True, kw_only=True)
class Refused:
    """Client side: anything but a proper 101; the reason is one printable line."""

    reason: str

    def __post_init__(self) -> None:
        if not self.reason or not self.reason.isprintable():
            raise LocalProtocolError("Refused.reason must be one non-empty printable line")


def _check_secret_path(path: str) -> bytes:
    """The path as bytes, or ``LocalProtocolError``; messages never quote the path."""
    raw = path.encode("utf-8", "replace") if isinstance(path, str) else b""
    if not raw.startswith(b"/") or _PATH_RUN.fullmatch(raw) is None:
        raise LocalProtocolError("secret path must start with '/' and hold only A-Z a-z 0-9 _ - /")
    if not MIN_SECRET_PATH <= len(raw) <= MAX_SECRET_PATH:
        raise LocalProtocolError(
            f"secret path must be {MIN_SECRET_PATH}..{MAX_SECRET_PATH} characters, got {len(raw)}"
        )
    return raw


def _check_max_head(max_head: int) -> int:
    if max_head < _MIN_HEAD:
        raise LocalProtocolError(f"max_head must be at least {_MIN_HEAD}, got {max_head}")
    return max_head


def new_secret_path(random_bytes: bytes) -> str:
    """``/`` and ``random_bytes`` in URL-safe base64 without padding.

    The caller supplies at least 16 random bytes (``secrets.token_bytes(18)``
    gives a 25-character path); this module may not read a random source.
    """
    if len(random_bytes) < 16:
        raise LocalProtocolError(
            f"a secret path needs at least 16 random bytes, got {len(random_bytes)}"
        )
    path = "/" + base64.urlsafe_b64encode(random_bytes).rstrip(b"=").decode("ascii")
    _check_secret_path(path)
    return path


def _accept(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` value (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _WS_GUID, usedforsecurity=False).digest())


def _tokens(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    """The comma-separated values of every ``name`` header, lower case (h11 names are)."""
    return {
        token.strip().lower()
        for key, value in headers
        if key == name
        for token in value.split(b",")
    }


def _printable(text: str | bytes, limit: int = 80) -> str:
    """Peer text made safe for a one-line reason: printable ASCII, bounded, maybe empty."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit]).strip()


class _Bad(Exception):
    """Internal: the request head is not the upgrade; the message is the Decoy reason."""


class _Phase(enum.Enum):
    """Where :class:`StealthGate` is in the request head; phases only move forward."""

    #: Matching the public ``GET /`` byte by byte.
    METHOD = enum.auto()
    #: Holding path characters until the space that ends the request-target.
    TARGET = enum.auto()
    #: The target was the secret; matching ``HTTP/1.1`` CRLF byte by byte.
    VERSION = enum.auto()
    #: Waiting for the blank line that ends the head; h11 then checks the headers.
    HEADERS = enum.auto()


class StealthGate:
    """Server side: tell the secret-path upgrade from everything else.

    ``secret_path`` is ``/`` and at least 22 URL-safe base64 characters (see
    :func:`new_secret_path`).  ``max_head`` (default 8 KiB, at least 1 KiB)
    bounds the request head; a decision comes by then at the latest, so the
    buffer never holds more than ``max_head`` plus one read.  See the module
    docstring for what is accepted and why the gate waits where it does.
    """

    def __init__(self, secret_path: str, *, max_head: int = 8 * 1024) -> None:
        self._secret = _check_secret_path(secret_path)
        self._max_head = _check_max_head(max_head)
        self._buf = bytearray()
        self._eof = False
        self._phase = _Phase.METHOD
        #: Start of the field being matched, and the first byte not examined yet.
        self._mark = 0
        self._pos = 0
        self._answer: Tunnel | Decoy | None = None
        self._response: bytes | None = None

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the client; ``b""`` means the client closed."""
        if self._answer is not None:
            raise LocalProtocolError("the stealth gate has decided; the stream is the driver's")
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() called with data after EOF")
            return
        if not data:
            self._eof = True
        self._buf += data

    def result(self) -> Tunnel | Decoy | NeedData:
        """``NEED_DATA`` until the gate can decide; then the same final answer each call."""
        if self._answer is None:
            self._answer = self._advance()
            if self._answer is None:
                if not self._eof:
                    return NEED_DATA
                self._answer = self._decoy("closed before a complete request head")
        return self._answer

    def response(self) -> bytes:
        """The ``101 Switching Protocols`` head to send once ``result()`` is a Tunnel."""
        if self._response is None:
            raise LocalProtocolError("response() is only for a gate whose result() was Tunnel")
        return self._response

    def _decoy(self, reason: str) -> Decoy:
        return Decoy(replay=bytes(self._buf), reason=reason)

    def _match(self, literal: bytes) -> bool | None:
        """Match ``literal`` at ``_mark``: True when whole, None for more, False if wrong."""
        done = self._pos - self._mark
        got = self._buf[self._pos : self._mark + len(literal)]
        if got != literal[done : done + len(got)]:
            return False
        self._pos += len(got)
        return True if self._pos - self._mark == len(literal) else None

    def _advance(self) -> Tunnel | Decoy | None:
        buf = self._buf
        if self._phase is _Phase.METHOD:
            matched = self._match(_METHOD)
            if matched is None:
                return None
            if not matched:
                return self._decoy("not a GET of a path")
            self._phase = _Phase.TARGET
            self._mark = self._pos - 1  # the target starts at the "/"
        if self._phase is _Phase.TARGET:
            limit = self._mark + MAX_SECRET_PATH + 1
            run = _PATH_RUN.match(buf, self._pos, min(len(buf), limit))
            end = run.end() if run is not None else self._pos  # the pattern always matches
            if end >= limit:
                return self._decoy("request-target longer than any secret path")
            self._pos = end
            if end == len(buf):
                return None
            if buf[end] != ord(" "):
                return self._decoy("request-target is not a bare path")
            # The one place the secret decides; see "What a prober can learn".
            if not hmac.compare_digest(bytes(buf[self._mark : end]), self._secret):
                return self._decoy("wrong path")
            self._phase = _Phase.VERSION
            self._pos = self._mark = end + 1
        if self._phase is _Phase.VERSION:
            matched = self._match(_VERSION)
            if matched is None:
                return None
            if not matched:
                return self._decoy("not HTTP/1.1")
            self._phase = _Phase.HEADERS
            self._pos -= 1  # the blank-line search starts at the request line's LF
        return self._headers()

    def _headers(self) -> Tunnel | Decoy | None:
        buf, scan, limit = self._buf, self._pos, self._max_head
        # h11's end of head is the first LF CR? LF; only a head within max_head counts.
        ends = [
            (i, i + len(sep))
            for sep in (b"\n\r\n", b"\n\n")
            if (i := buf.find(sep, scan, limit)) >= 0
        ]
        if not ends:
            if len(buf) >= limit:
                return self._decoy(f"request head larger than {limit} bytes")
            self._pos = max(scan, len(buf) - 2)
            return None
        end = min(ends)[1]
        try:
            self._response = self._upgrade(bytes(buf[:end]))
        except _Bad as exc:
            return self._decoy(str(exc))
        return Tunnel(leftover=bytes(buf[end:]))

    def _upgrade(self, head: bytes) -> bytes:
        """Check the whole head with h11 and make the 101 answer, or raise ``_Bad``."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head)
        try:
            conn.receive_data(head)
            request = conn.next_event()
            end = conn.next_event()
        except h11.ProtocolError:
            raise _Bad("malformed request head") from None
        if not isinstance(request, h11.Request):
            raise _Bad("malformed request head")
        if not isinstance(end, h11.EndOfMessage):
            raise _Bad("request with a body")
        if b"upgrade" not in _tokens(request.headers, b"connection"):
            raise _Bad("no Connection: Upgrade")
        if b"websocket" not in _tokens(request.headers, b"upgrade"):
            raise _Bad("no Upgrade: websocket")
        headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
        keys = [value for name, value in request.headers if name == b"sec-websocket-key"]
        if len(keys) > 1:
            raise _Bad("more than one Sec-WebSocket-Key")
        if keys:
            try:
                nonce = base64.b64decode(keys[0], validate=True)
            except ValueError:
                nonce = b""
            if len(nonce) != 16:
                raise _Bad("bad Sec-WebSocket-Key")
            headers.append(("Sec-WebSocket-Accept", _accept(keys[0]).decode("ascii")))
        try:
            out = conn.send(
                h11.InformationalResponse(
                    status_code=101, headers=headers, reason=b"Switching Protocols"
                )
            )
        except h11.ProtocolError:
            raise _Bad("h11 refused to switch protocols") from None
        if out is None:  # only ConnectionClosed sends nothing
            raise _Bad("h11 made no response")
        return out


class StealthClient:
    """Client side: the upgrade request to ``secret_path``, and the server's answer.

    ``host`` is the Host header (the TLS server name, with ``:port`` if not
    443).  ``key`` is 16 random bytes from the caller; it becomes the
    ``Sec-WebSocket-Key``.  ``max_head`` (default 8 KiB, at least 1 KiB)
    bounds the answer's head.  ``receive_data()`` only buffers (``b""`` is
    EOF); ``result()`` is ``NEED_DATA``, then a final :class:`Accepted` or
    :class:`Refused`, after which ``receive_data()`` raises.
    """

    def __init__(
        self, host: str, secret_path: str, key: bytes, *, max_head: int = 8 * 1024
    ) -> None:
        path = _check_secret_path(secret_path)
        if not isinstance(key, bytes) or len(key) != 16:
            raise LocalProtocolError("key must be 16 random bytes")
        if not host or not all("!" <= c <= "~" for c in host):
            raise LocalProtocolError("host must be non-empty printable ASCII without spaces")
        self._key = base64.b64encode(key)
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_check_max_head(max_head))
        try:
            head = self._conn.send(
                h11.Request(
                    method="GET",
                    target=path,
                    headers=[
                        ("Host", host),
                        ("Connection", "Upgrade"),
                        ("Upgrade", "websocket"),
                        ("Sec-WebSocket-Version", "13"),
                        ("Sec-WebSocket-Key", self._key.decode("ascii")),
                    ],
                )
            )
            body = self._conn.send(h11.EndOfMessage())  # b"": a GET has no body
        except h11.ProtocolError as exc:
            raise LocalProtocolError(f"cannot make the stealth request: {exc}") from None
        self._request = (head or b"") + (body or b"")
        self._received = 0
        self._start = bytearray()  # the first bytes, to refuse a non-HTTP answer early
        self._eof = False
        self._answer: Accepted | Refused | None = None

    def request(self) -> bytes:
        """The upgrade request head, to send right after the TLS handshake."""
        return self._request

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the server; ``b""`` means the server closed."""
        if self._answer is not None:
            raise LocalProtocolError("the stealth handshake is over; the stream is the driver's")
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() called with data after EOF")
            return
        if not data:
            self._eof = True
        if len(self._start) < len(_HTTP):
            self._start += data[: len(_HTTP) - len(self._start)]
        self._received += len(data)
        self._conn.receive_data(bytes(data))

    def result(self) -> Accepted | Refused | NeedData:
        """``NEED_DATA`` until the answer is complete; then the same final answer each call."""
        if self._answer is None:
            self._answer = self._advance()
            if self._answer is None:
                return NEED_DATA
        return self._answer

    def _advance(self) -> Accepted | Refused | None:
        # h11 would wait for a blank line that a non-HTTP server never sends.
        start = bytes(self._start)
        if start.startswith(_SSH):
            return Refused(
                reason="server sent an SSH banner: a Wraith server not in stealth mode? "
                "(drop --stealth-path)"
            )
        if not _HTTP.startswith(start):
            if _SSH.startswith(start) and not self._eof:
                return None  # maybe an SSH banner; wait to say so
            return Refused(reason=f"server did not answer in HTTP: {_REFUSED_HINT}")
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            if self._eof:
                where = "in the middle of its answer" if self._received else "without answering"
                return Refused(reason=f"server closed the connection {where}: {_REFUSED_HINT}")
            return Refused(
                reason=f"server sent a malformed HTTP answer ({_printable(str(exc))}): "
                f"{_REFUSED_HINT}"
            )
        if event is h11.NEED_DATA:
            return None
        if not isinstance(event, h11.Response | h11.InformationalResponse):
            return Refused(
                reason=f"server closed the connection without answering: {_REFUSED_HINT}"
            )
        if event.status_code != 101:
            status = f"{event.status_code} {_printable(event.reason)}".strip()
            return Refused(reason=f"server answered {status}: {_REFUSED_HINT}")
        accepts = [value for name, value in event.headers if name == b"sec-websocket-accept"]
        if (
            b"websocket" not in _tokens(event.headers, b"upgrade")
            or b"upgrade" not in _tokens(event.headers, b"connection")
            or len(accepts) != 1
            or not hmac.compare_digest(accepts[0], _accept(self._key))
        ):
            return Refused(
                reason="server switched protocols, but not as a Wraith server would "
                "(wrong Upgrade or Sec-WebSocket-Accept): a proxy in the way?"
            )
        leftover, _closed = self._conn.trailing_data
        return Accepted(leftover=bytes(leftover))
