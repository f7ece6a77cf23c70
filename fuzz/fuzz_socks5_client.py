"""Fuzz the SOCKS5 client: any proxy answer gives Connected, NEED_DATA or RemoteProtocolError.

Input layout (atheris.FuzzedDataProvider): the first bytes pick the target
and whether we offer username/password and see EOF; the proxy's bytes come
from the front of the rest, each chunk's size (1..64) from its end.
Run: ``python fuzz/fuzz_socks5_client.py -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from wraith.proto.errors import RemoteProtocolError
    from wraith.proto.socks5 import NEED_DATA, ClientState, Connected, SocksClient

TARGETS = ["example.com", "192.0.2.1", "2001:db8::1"]


def check(
    chunks: list[bytes], *, target: int, credentials: bool, eof: bool, max_buffer: int = 4096
) -> Connected | None:
    """Feed ``chunks`` as the proxy's answers; return Connected, or None."""
    auth = {"username": "user", "password": "secret"} if credentials else {}
    client = SocksClient(TARGETS[target], 443, max_buffer=max_buffer, **auth)
    client.data_to_send()
    for chunk in [*chunks, b""] if eof else chunks:
        client.receive_data(chunk)
        try:
            event = client.next_event()
        except RemoteProtocolError:
            assert client.state is ClientState.ERROR
            try:
                client.next_event()
            except RemoteProtocolError:
                return None
            raise AssertionError("ERROR is not terminal") from None
        out = client.data_to_send()
        assert out[:1] in (b"", b"\x01", b"\x05"), out
        if isinstance(event, Connected):
            assert client.state is ClientState.CONNECTED
            return event
        assert event is NEED_DATA, event
    return None


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    credentials = fdp.ConsumeBool()
    eof = fdp.ConsumeBool()
    target = fdp.ConsumeIntInRange(0, len(TARGETS) - 1)
    max_buffer = fdp.ConsumeIntInRange(1, 600)
    chunks = []
    while fdp.remaining_bytes():
        chunks.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64)))
    check(
        [c for c in chunks if c],
        target=target,
        credentials=credentials,
        eof=eof,
        max_buffer=max_buffer,
    )


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
