"""A burst of SOCKS connections through one session: more than the engine's 256
unanswered channel opens at once.  The opens beyond that limit wait for answers
and then go out; none is refused (they used to get SOCKS reply 1)."""

from __future__ import annotations

import asyncio
import resource
from pathlib import Path

import pytest
from conftest import Keys
from helpers import EchoServer, start_client, start_server

BURST = 400


async def _one(socks_port: int, echo_port: int, i: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", socks_port)
    try:
        writer.write(b"\x05\x01\x00")
        await writer.drain()
        assert await reader.readexactly(2) == b"\x05\x00"
        writer.write(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + echo_port.to_bytes(2, "big"))
        await writer.drain()
        reply = await reader.readexactly(10)
        if reply[1] != 0:
            return False
        payload = f"connection {i}".encode()
        writer.write(payload)
        await writer.drain()
        return await reader.readexactly(len(payload)) == payload
    finally:
        writer.close()


async def _burst(socks_port: int, echo_port: int) -> list[bool]:
    async with asyncio.timeout(120):
        return await asyncio.gather(*(_one(socks_port, echo_port, i) for i in range(BURST)))


@pytest.mark.integration
def test_a_burst_beyond_the_pending_open_limit_all_succeed(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * BURST:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * BURST), hard))
    server = start_server(backend, tmp_path, authorized_keys=keys.authorized_keys)
    try:
        client = start_client(backend, server, keys.client, args=["-D", "127.0.0.1:0"])
        try:
            assert client.socks_port is not None
            results = asyncio.run(_burst(client.socks_port, echo.port))
            assert sum(results) == BURST, f"{BURST - sum(results)} of {BURST} failed"
        finally:
            client.proc.stop()
    finally:
        server.proc.stop()
