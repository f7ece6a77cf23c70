"""Fuzz SSH packet framing: PacketReader gives payloads or TransportError, and round trips hold.

Input layout (atheris.FuzzedDataProvider): the first byte picks the cipher
(none, aes128-gcm, aes256-gcm, chacha20-poly1305, all with fixed keys), the
next whether the input is *wire bytes* for the reader or *payloads* for a
writer whose output must read back unchanged; then the size limit; the rest
is the data, fed in chunks whose sizes (1..512) come from its end.
``check()`` holds the invariant so tests can call it with hand-made inputs.
Run: ``python fuzz/fuzz_ssh_packets.py -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from wraith.proto.ssh.cipher import (
        CIPHERS,
        NoneCipher,
        PacketCipher,
        PacketReader,
        PacketWriter,
        make_cipher,
    )
    from wraith.proto.ssh.transport_events import TransportError

NAMES = ["none", *CIPHERS]


def build(name: str) -> PacketCipher:
    if name == "none":
        return NoneCipher()
    spec = CIPHERS[name]
    return make_cipher(name, bytes(range(spec.key_len)), bytes(range(spec.iv_len)))


def check_wire(chunks: list[bytes], name: str, max_packet: int) -> list[bytes]:
    """Feed wire bytes; return the payloads read before any TransportError."""
    reader = PacketReader(max_packet)
    reader.cipher = build(name)
    got: list[bytes] = []
    try:
        for i, chunk in enumerate(chunks):
            if i % 2:
                reader.feed(chunk)
            else:  # the recv_into path: bytes written into the reader's own buffer
                with reader.get_buffer(len(chunk) + i) as view:
                    view[: len(chunk)] = chunk
                reader.buffer_filled(len(chunk))
            while (packet := reader.next_packet()) is not None:
                payload, _ = packet
                assert payload, "empty payload"
                got.append(bytes(payload))
    except TransportError:
        pass
    return got


def check_round_trip(payloads: list[bytes], name: str, cut: int) -> None:
    """Payloads written with ``name`` read back unchanged, whatever the chunking."""
    writer = PacketWriter(lambda n: bytes(n))
    writer.cipher = build(name)
    reader = PacketReader()
    reader.cipher = build(name)
    stream = b"".join(bytes(writer.write(p)) for p in payloads)
    got = []
    for i in range(0, len(stream), cut):
        reader.feed(stream[i : i + cut])
        while (packet := reader.next_packet()) is not None:
            got.append(bytes(packet[0]))
    assert got == payloads, (len(got), len(payloads))
    assert reader.buffered == 0


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    name = NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]
    round_trip = fdp.ConsumeBool()
    max_packet = fdp.ConsumeIntInRange(35000, 300000)
    if round_trip:
        payloads = []
        while fdp.remaining_bytes() > 1:
            size = fdp.ConsumeIntInRange(1, 2000)
            payloads.append(fdp.ConsumeBytes(size) or b"\x5e")
        check_round_trip(payloads, name, 1 + (len(data) % 97))
        return
    chunks = []
    while fdp.remaining_bytes():
        chunks.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 512)))
    check_wire([c for c in chunks if c], name, max_packet)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
