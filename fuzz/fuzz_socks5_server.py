"""Fuzz the SOCKS5 server: any bytes in any chunking give ConnectRequest, NEED_DATA or SocksError.

Input layout (atheris.FuzzedDataProvider): the first bytes choose the options
(credentials or not, EOF at the end or not); the stream to the server comes
from the front of the rest, and each chunk's size (1..64) from its end.
``check()`` holds the invariant so tests/test_fuzz_smoke.py can call it with
hand-made chunkings too.  Run: ``python fuzz/fuzz_socks5_server.py -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from wraith.proto.errors import RemoteProtocolError
    from wraith.proto.socks5 import (
        NEED_DATA,
        ConnectRequest,
        Reply,
        ServerState,
        SocksError,
        SocksServer,
    )

CREDENTIALS = {"user": "secret"}


def check(
    chunks: list[bytes], *, credentials: bool, eof: bool, max_buffer: int = 4096, code: int = 0
) -> ConnectRequest | None:
    """Feed ``chunks`` like a driver; return the request, or None. Anything unexpected raises."""
    server = SocksServer(credentials=CREDENTIALS if credentials else None, max_buffer=max_buffer)
    for chunk in [*chunks, b""] if eof else chunks:
        server.receive_data(chunk)
        try:
            event = server.next_event()
        except RemoteProtocolError as exc:
            assert isinstance(exc, SocksError), exc
            assert server.state is ServerState.ERROR
            assert len(server.data_to_send()) <= 4 + 10  # at most a method/auth answer + a reply
            try:
                server.next_event()
            except RemoteProtocolError:
                return None
            raise AssertionError("ERROR is not terminal") from None
        out = server.data_to_send()
        assert len(out) <= 4, out
        if isinstance(event, ConnectRequest):
            assert server.state is ServerState.CONNECTING
            server.reply(Reply(code))
            out = server.data_to_send()
            assert out[:2] == bytes([5, code]) and len(out) in (10, 22), out
            return event
        assert event is NEED_DATA, event
    return None


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    credentials = fdp.ConsumeBool()
    eof = fdp.ConsumeBool()
    max_buffer = fdp.ConsumeIntInRange(1, 600)
    chunks = []
    while fdp.remaining_bytes():
        chunks.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64)))
    check([c for c in chunks if c], credentials=credentials, eof=eof, max_buffer=max_buffer)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
