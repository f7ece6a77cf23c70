"""Fuzz the SSH transport: any bytes give events, NEED_DATA or TransportError, nothing else.

Input layout (atheris.FuzzedDataProvider): the first byte picks where the
fuzzer's bytes start:

0. a server, right after a valid client identification line;
1. a server, after a valid client KEXINIT (the key exchange phase);
2. a server, after a complete client handshake replayed from a fixed
   transcript (seeded randomness on both sides): the fuzzer's bytes meet the
   live AES-GCM keys;
3. a client, right after a valid server identification line.

Then whether EOF follows; the rest is the stream, fed in chunks whose sizes
(1..256) come from its end.  After a TransportError the transport must be in
its terminal ERROR state and stay there.  ``check()`` holds the invariant.
Run: ``python fuzz/fuzz_ssh_transport.py -max_total_time=60``.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from wraith.proto.errors import RemoteProtocolError
    from wraith.proto.ssh.transport import Role, Transport, TransportState
    from wraith.proto.ssh.transport_events import NEED_DATA, ConnectionClosed, TransportError

HOST_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEX = ("curve25519-sha256",)
CIPHERS = ("aes128-gcm@openssh.com",)


def _rng(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def _server() -> Transport:
    return Transport(Role.SERVER, host_key=HOST_KEY, kex_algorithms=KEX, rng=_rng(2))


def _client() -> Transport:
    return Transport(Role.CLIENT, kex_algorithms=KEX, ciphers=CIPHERS, rng=_rng(1))


def _drain(t: Transport) -> None:
    while (event := t.next_event()) is not NEED_DATA:
        if isinstance(event, ConnectionClosed):
            return


def _transcripts() -> tuple[bytes, bytes]:
    """The client's KEXINIT prefix and its whole handshake, replayable to ``_server()``."""
    client, server = _client(), _server()
    first = client.data_to_send()
    server.receive_data(first)
    _drain(server)
    out = bytearray(first)
    for _ in range(2):  # (receive_data(b"") would mean EOF, so exactly two rounds)
        client.receive_data(server.data_to_send())
        _drain(client)
        sent = client.data_to_send()
        out += sent
        server.receive_data(sent)
        _drain(server)
    assert server.state is TransportState.OPEN
    return first, bytes(out)


KEXINIT_PREFIX, HANDSHAKE = _transcripts()
PREFIXES: list[tuple[Callable[[], Transport], bytes]] = [
    (_server, b"SSH-2.0-Fuzz_1.0\r\n"),
    (_server, KEXINIT_PREFIX),
    (_server, HANDSHAKE),
    (_client, b"SSH-2.0-FuzzServer_1.0\r\n"),
]


def check(chunks: list[bytes], *, mode: int, eof: bool) -> bool:
    """Feed ``chunks`` after prefix ``mode``; True if no error. Anything unexpected raises."""
    make, prefix = PREFIXES[mode]
    t = make()
    t.receive_data(prefix)
    _drain(t)
    for chunk in [*chunks, b""] if eof else chunks:
        t.receive_data(chunk)
        try:
            _drain(t)
        except TransportError:
            assert t.state is TransportState.ERROR
            assert t.data_to_send(), "no DISCONNECT was queued"
            try:
                t.next_event()
            except TransportError:
                return False
            raise AssertionError("ERROR is not terminal") from None
        except RemoteProtocolError as exc:
            raise AssertionError(f"not a TransportError: {exc!r}") from exc
        t.data_to_send()
    return True


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, len(PREFIXES) - 1)
    eof = fdp.ConsumeBool()
    chunks = []
    while fdp.remaining_bytes():
        chunks.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 256)))
    check([c for c in chunks if c], mode=mode, eof=eof)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
