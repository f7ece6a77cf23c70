"""Binary packets (SSH-NOTES): framing, padding, AES-GCM and chacha20-poly1305.

The chacha20-poly1305 checks compare against a reference written here from
OpenSSH's PROTOCOL.chacha20poly1305 with nothing shared with the code under
test but the ``cryptography`` primitives.  Interop with OpenSSH
(tests/test_ssh_transport_interop.py) is the final word on all three ciphers.
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.poly1305 import Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from wraith.proto.errors import LocalProtocolError
from wraith.proto.ssh.cipher import (
    CIPHERS,
    AesGcm,
    ChaCha20Poly1305,
    NoneCipher,
    PacketCipher,
    PacketReader,
    PacketWriter,
    make_cipher,
)
from wraith.proto.ssh.constants import DisconnectReason
from wraith.proto.ssh.transport_events import TransportError

ALL = ["none", *CIPHERS]
GCM = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
CHACHA = "chacha20-poly1305@openssh.com"


def seeded(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return rng.randbytes


def keys(name: str, seed: int = 1) -> tuple[bytes, bytes]:
    rng = random.Random(seed)
    spec = CIPHERS[name]
    return rng.randbytes(spec.key_len), rng.randbytes(spec.iv_len)


def build(name: str, seed: int = 1) -> PacketCipher:
    if name == "none":
        return NoneCipher()
    return make_cipher(name, *keys(name, seed))


def pair(name: str, max_packet: int = 256 * 1024 + 64) -> tuple[PacketWriter, PacketReader]:
    writer = PacketWriter(seeded(7))
    reader = PacketReader(max_packet)
    writer.cipher = build(name)
    reader.cipher = build(name)
    return writer, reader


def read_all(reader: PacketReader) -> list[bytes]:
    out = []
    while (got := reader.next_packet()) is not None:
        out.append(bytes(got[0]))
    return out


def clear_packet(payload: bytes, padding: int) -> bytes:
    """A none-cipher packet with exactly ``padding`` bytes of padding, however wrong."""
    length = 1 + len(payload) + padding
    return struct.pack(">IB", length, padding) + payload + bytes(padding)


# -- framing ------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_packet_length_counts_neither_itself_nor_the_tag(name: str) -> None:
    writer, _ = pair(name)
    cipher = build(name)
    for size in (1, 2, 15, 16, 17, 100, 32768):
        wire = writer.write(b"\x5e" * size)
        if name == CHACHA:
            length = cipher.open_length(writer.seq - 1, memoryview(bytes(wire[:4])))
        else:
            length = struct.unpack(">I", wire[:4])[0]
        assert len(wire) == 4 + length + cipher.tag_len


@pytest.mark.parametrize("name", ALL)
def test_padding_is_at_least_four_and_aligns_to_the_block(name: str) -> None:
    writer, reader = pair(name)
    cipher = build(name)
    for size in range(1, 70):
        wire = writer.write(bytes([0x5E]) * size)
        reader.feed(wire)
        # Look inside through a second reader-side cipher: padding_length is encrypted.
        length = len(wire) - 4 - cipher.tag_len
        body = bytes(cipher.open(writer.seq - 1, memoryview(bytes(wire))))
        assert body[0] >= 4
        aligned = length + (4 if cipher.length_in_alignment else 0)
        assert aligned % cipher.block_size == 0
        assert 4 + length >= 16  # the minimum packet size
        assert read_all(reader) == [bytes([0x5E]) * size]


def test_gcm_block_is_16_and_the_tag_is_16() -> None:
    for name in GCM:
        cipher = build(name)
        assert (cipher.block_size, cipher.tag_len, cipher.length_in_alignment) == (16, 16, False)


def test_padding_comes_from_the_injected_rng() -> None:
    writer = PacketWriter(lambda n: b"\xab" * n)
    wire = writer.write(b"\x5e")
    padding = wire[4]
    assert wire[-padding:] == b"\xab" * padding


@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_padding_below_four_is_refused(padding: int) -> None:
    payload = b"\x5e" * (8 - 5 - padding + 8)  # keeps 4 + length a multiple of 8
    reader = PacketReader()
    reader.feed(clear_packet(payload, padding))
    with pytest.raises(TransportError, match="padding"):
        reader.next_packet()


def test_padding_that_leaves_no_payload_is_refused() -> None:
    reader = PacketReader()
    reader.feed(struct.pack(">IB", 12, 11) + bytes(11))
    with pytest.raises(TransportError, match="no payload"):
        reader.next_packet()


@pytest.mark.parametrize("name", ALL)
def test_misaligned_packet_length_is_refused(name: str) -> None:
    cipher = build(name)
    aligned = 64 - (4 if cipher.length_in_alignment else 0)
    reader = PacketReader()
    reader.cipher = cipher
    reader.feed(encrypted_length(name, aligned + 1))
    with pytest.raises(TransportError, match="aligned"):
        reader.next_packet()


@pytest.mark.parametrize("length", [0, 1, 4, 5])
def test_tiny_packet_length_is_refused(length: int) -> None:
    reader = PacketReader()
    reader.cipher = build("aes128-gcm@openssh.com")
    reader.feed(struct.pack(">I", length))
    with pytest.raises(TransportError):
        reader.next_packet()


def encrypted_length(name: str, length: int, seq: int = 0) -> bytes:
    """The first four wire bytes of a packet claiming ``length``, as ``build(name)`` reads them."""
    if name != CHACHA:
        return struct.pack(">I", length)
    key, _ = keys(CHACHA)
    nonce = bytes(8) + seq.to_bytes(8, "big")
    enc = Cipher(algorithms.ChaCha20(key[32:], nonce), None).encryptor()
    return enc.update(struct.pack(">I", length))


# -- size limits ----------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_oversize_packet_is_refused_from_its_length_alone(name: str) -> None:
    reader = PacketReader(35000)
    reader.cipher = build(name)
    # Only the length has arrived: the refusal must not wait for (or buffer) the rest.
    reader.feed(encrypted_length(name, 1 << 30))
    with pytest.raises(TransportError, match="exceeds the limit"):
        reader.next_packet()
    assert reader.buffered == 4


@pytest.mark.parametrize("name", ALL)
def test_35000_byte_packets_and_32768_byte_payloads_are_accepted(name: str) -> None:
    writer, reader = pair(name, max_packet=35000)
    payload = b"\x5e" + bytes(32767)
    reader.feed(writer.write(payload))
    assert read_all(reader) == [payload]
    # The largest payload whose packet still fits in 35000 bytes in total.
    big = b"\x5e" + bytes(35000 - 4 - 1 - 4 - 16 - 16 - 1)
    wire = writer.write(big)
    assert len(wire) <= 35000
    reader.feed(wire)
    assert read_all(reader) == [big]


def test_max_packet_is_exact() -> None:
    writer, reader = pair("aes128-gcm@openssh.com", max_packet=40000)
    payload = b"\x5e" * (40000 - 4 - 16 - 5 - 16)
    wire = writer.write(payload)
    assert len(wire) <= 40000
    reader.feed(wire)
    assert read_all(reader) == [payload]
    wire = writer.write(payload + bytes(16))
    assert len(wire) > 40000
    reader.feed(wire)
    with pytest.raises(TransportError, match="exceeds"):
        reader.next_packet()


def test_max_packet_below_35000_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        PacketReader(34999)


# -- AES-GCM (RFC 5647) ------------------------------------------------------------


@pytest.mark.parametrize("name", GCM)
def test_gcm_length_is_associated_data_in_clear(name: str) -> None:
    writer, reader = pair(name)
    wire = bytearray(writer.write(b"\x5e" * 20))
    assert struct.unpack(">I", wire[:4])[0] == len(wire) - 4 - 16
    # Still aligned and small, so only the tag can notice the change.
    wire[3] ^= 0x10
    reader.feed(bytes(wire) + bytes(32))
    with pytest.raises(TransportError) as info:
        reader.next_packet()
    assert info.value.reason is DisconnectReason.MAC_ERROR


@pytest.mark.parametrize("name", GCM)
def test_gcm_nonce_is_fixed_field_plus_64_bit_counter(name: str) -> None:
    key, _ = keys(name)
    fixed = b"\x01\x02\x03\x04"
    iv = fixed + b"\xff" * 8  # the counter is about to wrap
    cipher = AesGcm(name, key, iv)
    writer = PacketWriter(seeded(1))
    writer.cipher = cipher
    writer.seq = 12345  # the sequence number plays no part in the GCM nonce
    aead = AESGCM(key)
    for counter in (b"\xff" * 8, bytes(8), bytes(7) + b"\x01"):
        wire = bytes(writer.write(b"\x5e" * 10))
        plain = aead.decrypt(fixed + counter, wire[4:], wire[:4])
        assert plain[1 : 1 + 10] == b"\x5e" * 10


# -- chacha20-poly1305@openssh.com -------------------------------------------------


def reference_chacha_seal(key: bytes, seq: int, plain: bytes) -> bytes:
    """PROTOCOL.chacha20poly1305, written out step by step."""
    k_2, k_1 = key[:32], key[32:]  # main key first, header key second

    def stream(k: bytes, counter: int) -> Cipher[None]:
        return Cipher(
            algorithms.ChaCha20(k, counter.to_bytes(8, "little") + seq.to_bytes(8, "big")), None
        )

    enc_len = stream(k_1, 0).encryptor().update(plain[:4])
    poly_key = stream(k_2, 0).encryptor().update(bytes(32))
    enc_body = stream(k_2, 1).encryptor().update(plain[4:])
    tag = Poly1305.generate_tag(poly_key, enc_len + enc_body)
    return enc_len + enc_body + tag


@pytest.mark.parametrize("seq", [0, 1, 0xFFFFFFFF])
@pytest.mark.parametrize("size", [1, 50, 1000])
def test_chacha_matches_the_specification(seq: int, size: int) -> None:
    key = bytes(range(64))
    cipher = ChaCha20Poly1305(key)
    writer = PacketWriter(seeded(3))
    writer.cipher = cipher
    writer.seq = seq
    wire = bytes(writer.write(b"\x5e" * size))
    plain_writer = PacketWriter(seeded(3))  # same padding bytes, no encryption
    plain_writer.cipher = _ClearChaChaFraming()
    plain = bytes(plain_writer.write(b"\x5e" * size))
    assert wire == reference_chacha_seal(key, seq, plain)


class _ClearChaChaFraming(NoneCipher):
    """chacha20-poly1305's framing (aligned without the length field) left in clear."""

    length_in_alignment = False


def test_chacha_header_key_is_the_second_half() -> None:
    key = bytes(range(64))
    writer = PacketWriter(seeded(1))
    writer.cipher = ChaCha20Poly1305(key)
    writer.seq = 7
    wire = bytes(writer.write(b"\x5e" * 30))
    nonce = bytes(8) + (7).to_bytes(8, "big")
    length = Cipher(algorithms.ChaCha20(key[32:], nonce), None).decryptor().update(wire[:4])
    assert struct.unpack(">I", length)[0] == len(wire) - 4 - 16


@pytest.mark.parametrize("where", ["length", "body", "tag"])
def test_chacha_bad_tag_is_a_mac_error(where: str) -> None:
    writer, reader = pair(CHACHA)
    wire = bytearray(writer.write(b"\x5e" * 40))
    index = {"length": 0, "body": 10, "tag": len(wire) - 1}[where]
    if where == "length":
        # Flip a bit that keeps the decrypted length aligned and in range.
        wire[3] ^= 0x08
        wire += bytes(8)
    else:
        wire[index] ^= 0x01
    reader.feed(bytes(wire))
    with pytest.raises(TransportError) as info:
        reader.next_packet()
    assert info.value.reason is DisconnectReason.MAC_ERROR


@pytest.mark.parametrize("name", list(CIPHERS))
def test_tampered_ciphertext_is_a_mac_error(name: str) -> None:
    writer, reader = pair(name)
    wire = bytearray(writer.write(b"\x5e" * 100))
    wire[20] ^= 0x80
    reader.feed(bytes(wire))
    with pytest.raises(TransportError) as info:
        reader.next_packet()
    assert info.value.reason is DisconnectReason.MAC_ERROR


def test_key_sizes() -> None:
    assert (
        CIPHERS["aes128-gcm@openssh.com"].key_len,
        CIPHERS["aes128-gcm@openssh.com"].iv_len,
    ) == (
        16,
        12,
    )
    assert CIPHERS["aes256-gcm@openssh.com"].key_len == 32
    assert (CIPHERS[CHACHA].key_len, CIPHERS[CHACHA].iv_len) == (64, 0)
    with pytest.raises(LocalProtocolError):
        make_cipher("aes128-ctr", bytes(16), bytes(16))
    with pytest.raises(LocalProtocolError):
        ChaCha20Poly1305(bytes(32))


# -- sequence numbers ----------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_sequence_numbers_wrap_at_2_32(name: str) -> None:
    writer, reader = pair(name)
    writer.seq = reader.seq = 0xFFFFFFFE
    for i in range(4):
        reader.feed(writer.write(bytes([0x5E, i])))
    got = []
    while (packet := reader.next_packet()) is not None:
        got.append(packet)
    assert [seq for _, seq in got] == [0xFFFFFFFE, 0xFFFFFFFF, 0, 1]
    assert writer.seq == reader.seq == 2


# -- incremental reading ------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_reader_whole_byte_by_byte_and_with_trailing_data(name: str) -> None:
    payloads = [b"\x5e" * n for n in (1, 7, 300, 5000)]
    writer, _ = pair(name)
    stream = b"".join(bytes(writer.write(p)) for p in payloads)
    trailer = bytes(writer.write(b"\x5fmore"))[:3]  # the start of a packet not yet complete
    for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))], [stream + trailer]):
        _, reader = pair(name)
        got = []
        for chunk in chunks:
            reader.feed(chunk)
            got += read_all(reader)
        assert got == payloads
        assert reader.buffered == (3 if chunks[-1].endswith(trailer) and len(chunks) == 1 else 0)


def test_reader_compacts_its_buffer() -> None:
    # Fed in 16 KiB pieces, 10 times over: consumed bytes are reused, so the
    # buffer stays near one piece plus one packet, not the 3 MB that passed.
    writer2, reader = pair("aes128-gcm@openssh.com")
    total = 0
    for _ in range(10):
        stream = b"".join(bytes(writer2.write(b"\x5e" * 1000)) for _ in range(300))
        for i in range(0, len(stream), 16384):
            reader.feed(stream[i : i + 16384])
            total += len(read_all(reader))
    assert total == 3000
    assert reader.buffered == 0
    assert len(reader._buf) <= 2 * (16384 + 1100)
    reader.feed(b"\x00\x00")
    reader.trim()  # something is buffered: kept
    assert reader.buffered == 2


def test_reader_trim_frees_a_big_idle_buffer() -> None:
    writer, reader = pair("aes128-gcm@openssh.com")
    reader.feed(b"".join(bytes(writer.write(b"\x5e" * 1000)) for _ in range(300)))
    assert len(read_all(reader)) == 300
    assert len(reader._buf) > 65536
    reader.trim()
    assert len(reader._buf) == 0
    reader.feed(bytes(writer.write(b"\x5eagain")))  # and it still works afterwards
    assert read_all(reader) == [b"\x5eagain"]


def test_reader_get_buffer_is_feed_without_a_copy() -> None:
    writer, reader = pair("aes128-gcm@openssh.com")
    payloads = [b"\x5e" + bytes([i]) * (i * 97 % 5000 + 1) for i in range(200)]
    stream = b"".join(bytes(writer.write(p)) for p in payloads)
    got: list[bytes] = []
    pos = 0
    for size in [1, 7, 4096, 65536, 300000] * 10:
        if pos >= len(stream):
            break
        with reader.get_buffer(size) as view:
            n = min(size, len(stream) - pos)
            view[:n] = stream[pos : pos + n]
        reader.buffer_filled(n)
        pos += n
        got += read_all(reader)
    assert got == payloads
    with pytest.raises(LocalProtocolError):
        reader.get_buffer(0)
    with reader.get_buffer(10):
        pass
    with pytest.raises(LocalProtocolError):
        reader.buffer_filled(11)


def test_channel_data_payload_is_a_view_of_its_own_buffer() -> None:
    """Under an AEAD a CHANNEL_DATA payload is handed on without a copy, as a
    read-only view that later packets cannot overwrite; others are bytes."""
    for name in ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"):
        writer, reader = pair(name)
        reader.feed(bytes(writer.write(b"\x5e" + b"A" * 100)))
        reader.feed(bytes(writer.write(b"\x5f" + b"B" * 100)))
        first = reader.next_packet()
        assert first is not None and isinstance(first[0], memoryview) and first[0].readonly
        reader.feed(bytes(writer.write(b"\x5e" + b"C" * 100)))
        second = reader.next_packet()
        third = reader.next_packet()
        assert second is not None and isinstance(second[0], bytes)
        assert third is not None and bytes(third[0]) == b"\x5e" + b"C" * 100
        assert bytes(first[0]) == b"\x5e" + b"A" * 100


def test_cipher_cannot_change_mid_packet() -> None:
    reader = PacketReader()
    reader.feed(bytes(writer_packet()[:6]))
    assert reader.next_packet() is None
    with pytest.raises(LocalProtocolError):
        reader.set_cipher(build("aes128-gcm@openssh.com"))


def writer_packet() -> bytes:
    return bytes(PacketWriter(seeded(1)).write(b"\x5e" * 20))


# -- property: round trip ---------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(ALL),
    payloads=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=10),
)
def test_round_trip_any_payloads_any_chunking(
    name: str, payloads: list[bytes], cuts: list[int]
) -> None:
    writer, reader = pair(name)
    stream = b"".join(bytes(writer.write(p)) for p in payloads)
    got = []
    pos = 0
    for cut in [*cuts, len(stream)]:
        reader.feed(stream[pos : pos + cut])
        pos += cut
        got += read_all(reader)
    reader.feed(stream[pos:])
    got += read_all(reader)
    assert got == payloads


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(ALL),
    payloads=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=8),
    steps=st.lists(st.tuples(st.booleans(), st.integers(min_value=1, max_value=5000)), max_size=12),
)
def test_round_trip_through_get_buffer_and_feed_mixed(
    name: str, payloads: list[bytes], steps: list[tuple[bool, int]]
) -> None:
    """Bytes written into get_buffer() views (as recv_into does; the room offered
    may be larger than what arrives) and bytes fed, in any mix, give the same
    payloads; a CHANNEL_DATA payload handed out earlier never changes."""
    writer, reader = pair(name)
    stream = b"".join(bytes(writer.write(p)) for p in payloads)
    got: list[bytes | memoryview] = []
    pos = 0
    for direct, room in [*steps, (True, len(stream) + 1)]:
        n = min(room, len(stream) - pos)
        if direct:
            with reader.get_buffer(room) as view:
                view[:n] = stream[pos : pos + n]
            reader.buffer_filled(n)
        else:
            reader.feed(stream[pos : pos + n])
        pos += n
        while (item := reader.next_packet()) is not None:
            got.append(item[0])
    assert [bytes(g) for g in got] == payloads


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(ALL), data=st.binary(max_size=600))
def test_random_bytes_give_payloads_or_transport_errors(name: str, data: bytes) -> None:
    reader = PacketReader(35000)
    reader.cipher = build(name)
    reader.feed(data)
    with contextlib.suppress(TransportError):
        read_all(reader)
