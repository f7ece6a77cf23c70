"""SSH wire encodings (RFC 4251 section 5): the one place that reads and writes them.

:class:`Reader` parses a payload and raises :class:`RemoteProtocolError` on
anything truncated or malformed, never ``IndexError`` or ``struct.error``, so a
peer's bytes can only ever produce a protocol error.  The ``encode_*`` helpers
build payloads; :func:`message` joins parts after a message number.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from ..errors import RemoteProtocolError

#: Longest name-list accepted from a peer (bytes): RFC 4251 sets no limit, we do.
MAX_NAME_LIST = 64 * 1024
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def byte(value: int) -> bytes:
    return bytes((value,))


def boolean(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def uint32(value: int) -> bytes:
    return _U32.pack(value)


def uint64(value: int) -> bytes:
    return _U64.pack(value)


def string(value: bytes | bytearray | memoryview | str) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return _U32.pack(len(raw)) + raw


def mpint(value: int) -> bytes:
    """Two's complement, big-endian, minimal length; zero is the empty string."""
    if value == 0:
        return _U32.pack(0)
    length = (value.bit_length() + 8) // 8  # room for the sign bit
    return string(value.to_bytes(length, "big", signed=True))


def mpint_from_unsigned(raw: bytes) -> bytes:
    """Encode an unsigned big-endian byte string (e.g. an X25519 secret) as an mpint."""
    return mpint(int.from_bytes(raw, "big"))


def name_list(names: Iterable[str]) -> bytes:
    items = list(names)
    for name in items:
        if not name or "," in name or not name.isascii():
            raise ValueError(f"bad name in name-list: {name!r}")
    return string(",".join(items))


def message(number: int, *parts: bytes) -> bytes:
    return bytes((number,)) + b"".join(parts)


class Reader:
    """Reads SSH types from a payload; every failure is a RemoteProtocolError."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self._data = bytes(data)
        self._pos = pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int, what: str) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise RemoteProtocolError(f"truncated {what}")
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def byte(self) -> int:
        return self._take(1, "byte")[0]

    def boolean(self) -> bool:
        return self._take(1, "boolean")[0] != 0

    def uint32(self) -> int:
        return int(_U32.unpack(self._take(4, "uint32"))[0])

    def uint64(self) -> int:
        return int(_U64.unpack(self._take(8, "uint64"))[0])

    def string(self, max_len: int = 1 << 20) -> bytes:
        n = self.uint32()
        if n > max_len:
            raise RemoteProtocolError(f"string of {n} bytes exceeds the limit of {max_len}")
        return self._take(n, "string")

    def text(self, max_len: int = 1 << 16) -> str:
        raw = self.string(max_len)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("string is not valid UTF-8") from None

    def mpint(self, max_len: int = 2048) -> int:
        raw = self.string(max_len)
        if len(raw) > 1 and (
            (raw[0] == 0 and raw[1] < 0x80) or (raw[0] == 0xFF and raw[1] >= 0x80)
        ):
            raise RemoteProtocolError("mpint is not minimally encoded")
        return int.from_bytes(raw, "big", signed=True)

    def name_list(self, max_len: int = MAX_NAME_LIST) -> list[str]:
        raw = self.string(max_len)
        if not raw:
            return []
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("name-list is not ASCII") from None
        names = text.split(",")
        if any(not n for n in names):
            raise RemoteProtocolError("name-list has an empty name")
        return names

    def rest(self) -> bytes:
        out = self._data[self._pos :]
        self._pos = len(self._data)
        return out

    def end(self) -> None:
        """Insist that the payload has been read completely."""
        if self._pos != len(self._data):
            raise RemoteProtocolError(f"{self.remaining} unexpected trailing bytes in message")


def first_match(ours: Sequence[str], theirs: Sequence[str]) -> str | None:
    """RFC 4253 7.1 negotiation: the client's first choice the server also supports.

    ``ours`` must be the *client's* list and ``theirs`` the server's.
    """
    server = set(theirs)
    for name in ours:
        if name in server:
            return name
    return None
