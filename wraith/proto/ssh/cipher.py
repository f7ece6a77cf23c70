"""SSH binary packet protection (RFC 4253 section 6), pure: framing, padding and AEAD ciphers.

A packet on the wire is ``uint32 packet_length || byte padding_length ||
payload || padding || tag``.  ``packet_length`` counts neither itself nor the
tag.  Every cipher here is an AEAD whose tag replaces the MAC, so no MAC
algorithm is ever used:

- :class:`NoneCipher`, before the first NEWKEYS: clear text, block size 8, no tag.
- :class:`AesGcm` (``aes128-gcm@openssh.com``, ``aes256-gcm@openssh.com``,
  RFC 5647): the length travels in clear as associated data.  The 12-byte
  nonce is a 4-byte fixed field and a 64-bit invocation counter; only the
  counter moves, once per packet, and it wraps within its 64 bits.
- :class:`ChaCha20Poly1305` (``chacha20-poly1305@openssh.com``, OpenSSH's
  PROTOCOL.chacha20poly1305), built from raw ChaCha20 and Poly1305: the
  64-byte key is K_2 (main) then K_1 (header).  The nonce is the sequence
  number.  The length is encrypted with K_1 at block counter 0; the Poly1305
  key is the first 32 bytes of the K_2 keystream at counter 0; the body is
  encrypted with K_2 from counter 1; the tag covers the encrypted length and
  the encrypted body.

For the two AEADs the alignment rule applies to ``padding_length || payload
|| padding`` (the length field stands outside it); for the none cipher it
includes the length field, as RFC 4253 says.

:class:`PacketReader` is incremental: ``feed()`` appends to one bytearray and
``next_packet()`` peels whole packets off the front through memoryviews, so
reading costs O(bytes) whatever the chunking.  The length is checked against
``max_packet`` as soon as its four bytes are readable, before any more of the
packet is waited for.  With chacha20-poly1305 the decrypted length is used
only to know how far to read and is bounded by that check; nothing of the
body is decrypted until its tag verified.  :class:`PacketWriter` pads to the
block size with at least four random bytes and at least 16 bytes per packet.

Sequence numbers are 32-bit and wrap; the transport resets them under strict
kex.  All failures raise :class:`TransportError` carrying the DISCONNECT
reason (``MAC_ERROR`` for a bad tag).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.poly1305 import Poly1305

from wraith.proto.errors import LocalProtocolError
from wraith.proto.ssh.constants import DisconnectReason
from wraith.proto.ssh.transport_events import TransportError

__all__ = [
    "CIPHERS",
    "MIN_MAX_PACKET",
    "AesGcm",
    "ChaCha20Poly1305",
    "CipherSpec",
    "NoneCipher",
    "PacketCipher",
    "PacketReader",
    "PacketWriter",
    "make_cipher",
]

#: RFC 4253 6.1: every implementation must take packets of 35000 bytes in total.
MIN_MAX_PACKET = 35000
_U32 = struct.Struct(">I")
_SEQ_MASK = 0xFFFFFFFF
_GCM_COUNTER_MASK = (1 << 64) - 1
_ZERO_BLOCK = bytes(64)
#: SSH_MSG_CHANNEL_DATA, whose payload is handed on without a copy.
_CHANNEL_DATA = 94


class PacketCipher(Protocol):
    """Protection for one direction of a connection, under one set of keys."""

    #: The negotiated name, e.g. ``aes128-gcm@openssh.com``.
    name: str
    #: What ``padding_length || payload || padding`` (plus the length field when
    #: ``length_in_alignment``) must be a multiple of.
    block_size: int
    #: Bytes of authentication tag after the packet.
    tag_len: int
    #: True when the 4-byte length field counts towards the block alignment.
    length_in_alignment: bool
    #: True when ``open()`` returns a view of a new buffer per packet (which its
    #: caller may keep), False when it is a view into the packet it was given.
    fresh_output: bool

    def seal(self, seq: int, plain: memoryview) -> bytes | bytearray:
        """Protect ``plain`` (length, padding_length, payload, padding); return wire bytes."""
        ...

    def open_length(self, seq: int, head: memoryview) -> int:
        """The ``packet_length`` from the first four wire bytes of a packet."""
        ...

    def open(self, seq: int, packet: memoryview) -> memoryview:
        """Check and decrypt a whole wire packet: ``padding_length || payload || padding``.

        With ``fresh_output`` the view is of a new buffer and stays valid;
        otherwise it is valid only as long as ``packet`` is.
        """
        ...


class NoneCipher:
    """The clear-text framing used until the first NEWKEYS (block size 8, no tag)."""

    name = "none"
    block_size = 8
    tag_len = 0
    length_in_alignment = True
    fresh_output = False

    def seal(self, seq: int, plain: memoryview) -> bytes | bytearray:
        return bytes(plain)

    def open_length(self, seq: int, head: memoryview) -> int:
        return int(_U32.unpack(head)[0])

    def open(self, seq: int, packet: memoryview) -> memoryview:
        return packet[4:]


class AesGcm:
    """``aes128-gcm@openssh.com`` / ``aes256-gcm@openssh.com`` (RFC 5647)."""

    block_size = 16
    tag_len = 16
    length_in_alignment = False
    fresh_output = True

    def __init__(self, name: str, key: bytes, iv: bytes) -> None:
        if len(key) not in (16, 32) or len(iv) != 12:
            raise LocalProtocolError("AES-GCM needs a 16- or 32-byte key and a 12-byte IV")
        self.name = name
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:], "big")

    def _next_nonce(self) -> bytes:
        # RFC 5647 7.1: only the 64-bit invocation counter is incremented,
        # and a carry out of it must not reach the fixed field.
        nonce = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & _GCM_COUNTER_MASK
        return nonce

    def seal(self, seq: int, plain: memoryview) -> bytes | bytearray:
        out = bytearray(len(plain) + 16)
        out[:4] = plain[:4]
        with memoryview(out) as view:
            self._aead.encrypt_into(self._next_nonce(), plain[4:], plain[:4], view[4:])
        return out

    def open_length(self, seq: int, head: memoryview) -> int:
        return int(_U32.unpack(head)[0])

    def open(self, seq: int, packet: memoryview) -> memoryview:
        # A new bytes object per packet: the payload is handed on as a view of
        # it (channel data reaches the application without another copy).
        try:
            plain = self._aead.decrypt(self._next_nonce(), packet[4:], packet[:4])
        except InvalidTag:
            raise TransportError(
                f"bad AES-GCM tag on packet {seq}", DisconnectReason.MAC_ERROR
            ) from None
        return memoryview(plain)


class ChaCha20Poly1305:
    """``chacha20-poly1305@openssh.com`` from raw ChaCha20 and Poly1305."""

    name = "chacha20-poly1305@openssh.com"
    block_size = 8
    tag_len = 16
    length_in_alignment = False
    fresh_output = True

    def __init__(self, key: bytes) -> None:
        if len(key) != 64:
            raise LocalProtocolError("chacha20-poly1305@openssh.com needs a 64-byte key")
        self._main_key = key[:32]  # K_2
        self._header_key = key[32:]  # K_1

    @staticmethod
    def _nonce(counter: int, seq: int) -> bytes:
        # cryptography takes the DJB layout as 16 bytes: a 64-bit little-endian
        # block counter, then the 64-bit nonce (here big-endian, as OpenSSH).
        return counter.to_bytes(8, "little") + seq.to_bytes(8, "big")

    def _header(self, seq: int, data: memoryview) -> bytes:
        ctx = Cipher(algorithms.ChaCha20(self._header_key, self._nonce(0, seq)), None).encryptor()
        return ctx.update(data)

    def seal(self, seq: int, plain: memoryview) -> bytes | bytearray:
        n = len(plain)
        out = bytearray(n + 16)
        out[:4] = self._header(seq, plain[:4])
        # One K_2 stream serves both uses: block 0 gives the Poly1305 key, and
        # the body continues at block 1 exactly where that block ends.
        ctx = Cipher(algorithms.ChaCha20(self._main_key, self._nonce(0, seq)), None).encryptor()
        poly_key = ctx.update(_ZERO_BLOCK)[:32]
        with memoryview(out) as view:
            ctx.update_into(plain[4:], view[4:n])
            out[n:] = Poly1305.generate_tag(poly_key, view[:n])
        return out

    def open_length(self, seq: int, head: memoryview) -> int:
        return int(_U32.unpack(self._header(seq, head))[0])

    def open(self, seq: int, packet: memoryview) -> memoryview:
        n = len(packet) - 16
        ctx = Cipher(algorithms.ChaCha20(self._main_key, self._nonce(0, seq)), None).decryptor()
        poly_key = ctx.update(_ZERO_BLOCK)[:32]
        try:
            # verify_tag compares in constant time.
            Poly1305.verify_tag(poly_key, packet[:n], bytes(packet[n:]))
        except InvalidSignature:
            raise TransportError(
                f"bad chacha20-poly1305 tag on packet {seq}", DisconnectReason.MAC_ERROR
            ) from None
        out = bytearray(n - 4)
        ctx.update_into(packet[4:n], out)
        return memoryview(out).toreadonly()


@dataclass(frozen=True)
class CipherSpec:
    """What key derivation needs to know about a cipher, and how to build it."""

    name: str
    key_len: int
    iv_len: int
    build: Callable[[bytes, bytes], PacketCipher]


#: Every cipher this engine speaks, by negotiated name.
CIPHERS: dict[str, CipherSpec] = {
    "aes128-gcm@openssh.com": CipherSpec(
        "aes128-gcm@openssh.com", 16, 12, lambda k, iv: AesGcm("aes128-gcm@openssh.com", k, iv)
    ),
    "aes256-gcm@openssh.com": CipherSpec(
        "aes256-gcm@openssh.com", 32, 12, lambda k, iv: AesGcm("aes256-gcm@openssh.com", k, iv)
    ),
    "chacha20-poly1305@openssh.com": CipherSpec(
        "chacha20-poly1305@openssh.com", 64, 0, lambda k, iv: ChaCha20Poly1305(k)
    ),
}


def make_cipher(name: str, key: bytes, iv: bytes) -> PacketCipher:
    """Build the named cipher from derived key material (``LocalProtocolError`` if unknown)."""
    spec = CIPHERS.get(name)
    if spec is None:
        raise LocalProtocolError(f"unsupported cipher {name!r}")
    return spec.build(key[: spec.key_len], iv[: spec.iv_len])


class PacketReader:
    """Incremental packet parser for one direction: ``feed()`` bytes, take payloads out.

    ``max_packet`` bounds the total wire size of a packet (length field,
    body and tag).  ``cipher`` and ``seq`` are swapped and reset by the
    transport at NEWKEYS; the change applies from the next packet on.

    Bytes arrive either through ``feed()`` or, without a copy, by filling
    ``get_buffer()`` (``socket.recv_into``) and reporting it with
    ``buffer_filled()``.  A ``CHANNEL_DATA`` payload under an AEAD comes back
    as a view of its own decrypted buffer (no copy); every other payload is
    ``bytes``.
    """

    def __init__(self, max_packet: int = 256 * 1024 + 64) -> None:
        if max_packet < MIN_MAX_PACKET:
            raise LocalProtocolError(f"max_packet must be at least {MIN_MAX_PACKET}")
        self.max_packet = max_packet
        self.cipher: PacketCipher = NoneCipher()
        #: Sequence number of the next packet to be read.
        self.seq = 0
        #: Wire bytes of the packets read so far (for rekeying by volume).
        self.bytes_read = 0
        # Unparsed bytes are _buf[_pos:_end]; _buf beyond _end is free room.
        self._buf = bytearray()
        self._pos = 0
        self._end = 0
        self._room = 0  # what the last get_buffer() offered
        # packet_length of the packet at _pos, once decrypted; with
        # chacha20-poly1305 decrypting it twice would cost a cipher setup.
        self._length: int | None = None

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet consumed."""
        return self._end - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._room = 0
        n = len(data)
        self._reserve(n)
        self._buf[self._end : self._end + n] = data
        self._end += n

    def get_buffer(self, size: int) -> memoryview:
        """Room for ``size`` more bytes, to fill and then report with ``buffer_filled()``.

        Release the view (``with`` or ``.release()``) before calling anything
        else here: a buffer with a live view cannot move.
        """
        if size <= 0:
            raise LocalProtocolError("get_buffer() needs a positive size")
        self._reserve(size)
        self._room = size
        return memoryview(self._buf)[self._end : self._end + size]

    def buffer_filled(self, n: int) -> None:
        """``n`` bytes were written at the start of the last ``get_buffer()`` view."""
        if not 0 <= n <= self._room:
            raise LocalProtocolError(f"buffer_filled({n}) is more than the room given")
        self._room = 0
        self._end += n

    def trim(self) -> None:
        """Give back the buffer's memory if nothing is buffered (an idle connection)."""
        if self._pos == self._end and len(self._buf) > 65536:
            self._buf = bytearray()
            self._pos = self._end = 0

    def _reserve(self, n: int) -> None:
        buf = self._buf
        if len(buf) - self._end >= n:
            return
        if self._pos:
            # Move the unparsed tail to the front (at most one packet's worth).
            live = self._end - self._pos
            with memoryview(buf) as view:
                buf[:live] = view[self._pos : self._end]  # a memmove, no temporary
            self._pos, self._end = 0, live
            if len(buf) - live >= n:
                return
        grow = max(self._end + n, 2 * len(buf)) - len(buf)
        buf += bytes(grow)

    def set_cipher(self, cipher: PacketCipher) -> None:
        if self._length is not None:
            raise LocalProtocolError("cannot change the cipher in the middle of a packet")
        self.cipher = cipher

    def _consume(self, n: int) -> None:
        self._pos += n
        if self._pos == self._end:
            self._pos = self._end = 0

    def take_line(self, limit: int) -> bytes | None:
        """The next LF-terminated line, LF included, for the version exchange.

        ``None`` if no LF yet; ``TransportError`` if ``limit`` bytes pass
        without one, so an endless line is never buffered.
        """
        end = self._buf.find(b"\n", self._pos, min(self._pos + limit, self._end))
        if end < 0:
            if self._end - self._pos >= limit:
                raise TransportError(f"identification line longer than {limit} bytes")
            return None
        line = bytes(self._buf[self._pos : end + 1])
        self._consume(end + 1 - self._pos)
        return line

    def next_packet(self) -> tuple[bytes | memoryview, int] | None:
        """``(payload, seq)`` of the next whole packet, or ``None`` until more bytes arrive."""
        cipher = self.cipher
        pos = self._pos
        avail = self._end - pos
        length = self._length
        if length is None:
            if avail < 4:
                return None
            with memoryview(self._buf) as view:
                length = cipher.open_length(self.seq, view[pos : pos + 4])
            self._check_length(length, cipher)
            self._length = length
        total = 4 + length + cipher.tag_len
        if avail < total:
            return None
        seq = self.seq
        payload: bytes | memoryview | None
        with memoryview(self._buf) as view:
            body = cipher.open(seq, view[pos : pos + total])
            padding = body[0]
            end = length - padding
            if padding < 4 or end < 2:
                payload = None
            elif body[1] == _CHANNEL_DATA and cipher.fresh_output:
                payload = body[1:end]  # a view of the decrypted buffer, which is ours
            else:
                payload = bytes(body[1:end])
            del body  # no view of our buffer may outlive this block
        if payload is None:
            if padding < 4:
                raise TransportError(
                    f"packet {seq} has {padding} bytes of padding; the minimum is 4"
                )
            raise TransportError(f"packet {seq} has no payload")
        self._length = None
        self._consume(total)
        self.seq = (seq + 1) & _SEQ_MASK
        self.bytes_read += total
        return payload, seq

    def _check_length(self, length: int, cipher: PacketCipher) -> None:
        total = 4 + length + cipher.tag_len
        if total > self.max_packet:
            raise TransportError(f"packet of {total} bytes exceeds the limit of {self.max_packet}")
        aligned = length + 4 if cipher.length_in_alignment else length
        if aligned % cipher.block_size:
            raise TransportError(
                f"packet_length {length} is not aligned to the block size {cipher.block_size}"
            )
        # padding_length byte + at least one payload byte + four bytes of padding.
        if length < 6:
            raise TransportError(f"packet_length {length} is too small")


class PacketWriter:
    """Frames, pads and protects payloads for one direction."""

    def __init__(self, rng: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.cipher: PacketCipher = NoneCipher()
        #: Sequence number of the next packet to be written.
        self.seq = 0
        #: Wire bytes of the packets written so far (for rekeying by volume).
        self.bytes_written = 0
        self._rng = rng
        # Random padding is drawn from a pool so a stream of packets costs one
        # rng call per 4 KiB of padding rather than one per packet.
        self._pool = b""
        self._pool_pos = 0
        self._scratch = bytearray()

    def _padding(self, n: int) -> bytes:
        if self._pool_pos + n > len(self._pool):
            self._pool = self._rng(4096)
            self._pool_pos = 0
        out = self._pool[self._pool_pos : self._pool_pos + n]
        self._pool_pos += n
        return out

    def write_into(
        self, head: bytes, room: int, fill: Callable[[memoryview], int]
    ) -> tuple[bytes | bytearray | None, int]:
        """One packet whose payload is ``head`` then what ``fill(view)`` writes
        into ``view`` (at most ``room`` bytes, straight into the packet being
        framed: no copy); ``fill`` returns how many.  Returns the wire bytes
        and that count; nothing is framed when it is 0 or less (and nothing
        if ``fill`` raises).
        """
        k = len(head)
        start = 5 + k
        scratch = self._scratch
        worst = start + room + 2 * self.cipher.block_size + 16
        if len(scratch) < worst:
            scratch.extend(bytes(worst - len(scratch)))
        with memoryview(scratch) as view:
            got = fill(view[start : start + room])
        if not 0 < got <= room:
            if got > room:
                raise LocalProtocolError(f"fill() wrote {got} bytes into room for {room}")
            return None, got
        scratch[5:start] = head
        return self._seal(k + got), got

    def write(
        self, payload: bytes | bytearray | memoryview, tail: bytes | bytearray | memoryview = b""
    ) -> bytes | bytearray:
        """The wire bytes of one packet carrying ``payload`` followed by ``tail``.

        Passing a message's head and its data separately spares joining them
        first: both are copied once, into the packet being framed.
        """
        k = len(payload)
        n = k + len(tail)
        scratch = self._scratch
        worst = 5 + n + 2 * self.cipher.block_size + 16
        if len(scratch) < worst:
            scratch.extend(bytes(worst - len(scratch)))
        scratch[5 : 5 + k] = payload
        if tail:
            scratch[5 + k : 5 + n] = tail
        return self._seal(n)

    def _seal(self, n: int) -> bytes | bytearray:
        """Frame, pad and protect the ``n`` payload bytes at ``scratch[5:]``."""
        cipher = self.cipher
        bs = cipher.block_size
        unpadded = 1 + n + (4 if cipher.length_in_alignment else 0)
        padding = bs - unpadded % bs
        if padding < 4:
            padding += bs
        if 4 + 1 + n + padding < 16:
            padding += bs
        length = 1 + n + padding
        size = 4 + length
        scratch = self._scratch
        _U32.pack_into(scratch, 0, length)
        scratch[4] = padding
        scratch[5 + n : size] = self._padding(padding)
        seq = self.seq
        with memoryview(scratch) as view:
            wire = cipher.seal(seq, view[:size])
        self.seq = (seq + 1) & _SEQ_MASK
        self.bytes_written += len(wire)
        return wire
