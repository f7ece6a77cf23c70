"""The trio splice's pooled read buffers: held only while a read is handed on.

The pool is the trio driver's: its splice reads a socket into a pooled buffer
for channels that cannot take a read straight into their packets (the
paramiko engine's; the Sans-IO engine's channels have ``write_into``).  The
asyncio driver reads through ``StreamReader`` and has no pool, so this runs
on trio with the paramiko engine.
"""

from __future__ import annotations

from pathlib import Path

import trio
from conftest import Keys
from helpers import EchoServer

from wraith.buffers import READ_BUFFERS, BufferPool, drop_sent
from wraith.options import ConnectOptions, ServeOptions
from wraith.ssh import keys as wkeys


def test_pool_reuses_and_bounds_what_it_keeps() -> None:
    pool = BufferPool(1024, keep=2)
    bufs = [pool.take() for _ in range(4)]
    assert pool.out == 4
    for b in bufs:
        pool.give(b)
    assert pool.out == 0
    again = [pool.take(), pool.take(), pool.take()]
    assert again[0] is bufs[1] and again[1] is bufs[0]  # the two kept, reused
    assert all(again[2] is not b for b in bufs)  # a third is new


def test_drop_sent_after_partial_writes() -> None:
    pending: list[bytes | memoryview] = [b"abc", b"defg", b"h"]
    drop_sent(pending, 5)
    assert [bytes(p) for p in pending] == [b"fg", b"h"]
    drop_sent(pending, 0)
    assert [bytes(p) for p in pending] == [b"fg", b"h"]
    drop_sent(pending, 3)
    assert pending == []


async def _idle_streams(tmp_path: Path, keys: Keys, echo_port: int) -> tuple[int, bytes]:
    from wraith.io_trio import connect, serve

    opts = ServeOptions(
        engine="paramiko",
        listen=["tcp://127.0.0.1:0"],
        authorized_keys=keys.authorized_keys.read_bytes(),
        state_dir=tmp_path / "state",
    )
    async with serve(opts) as server:
        fp = wkeys.fingerprint(server.config.host_key.public_key())
        copts = ConnectOptions(
            target=f"127.0.0.1:{server.addresses[0][1]}",
            identity=keys.client.read_text(),
            engine="paramiko",
            host_key_fingerprints=[fp],
        )
        async with connect(copts) as client:
            streams = [await client.open_stream("127.0.0.1", echo_port) for _ in range(40)]
            await trio.sleep(0.3)  # every server-side splice is now waiting on an idle socket
            held = READ_BUFFERS.out
            await streams[7].send_all(b"still works")
            got = b""
            with trio.fail_after(10):
                while len(got) < 11:
                    got += await streams[7].receive_some()
            for s in streams:
                await s.aclose()
    return held, got


def test_idle_tunnels_hold_no_pooled_buffer(tmp_path: Path, keys: Keys, echo: EchoServer) -> None:
    held, got = trio.run(_idle_streams, tmp_path, keys, echo.port)
    assert held == 0
    assert got == b"still works"
