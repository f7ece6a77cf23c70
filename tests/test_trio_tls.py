"""wraith.io_trio.tls.TLSStream over real loopback sockets: both ends sending at
once into full socket buffers must not deadlock, data arrives intact, and
close_notify ends the stream cleanly."""

from __future__ import annotations

import hashlib
import socket
import ssl
from pathlib import Path

import trio
from pki import make_pki

from wraith.io_trio.tls import TLSStream

SIZE = 24 * 1024 * 1024


def _contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    pki = make_pki(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.cert, pki.key)
    client = ssl.create_default_context(cafile=str(pki.ca))
    return server, client


def _small_buffers(sock: trio.socket.SocketType) -> None:
    # Small kernel buffers: the sends block often, as on a slow link.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)


def test_both_ends_sending_at_once_do_not_deadlock(tmp_path: Path) -> None:
    server_ctx, client_ctx = _contexts(tmp_path)
    payload = bytes(range(256)) * (SIZE // 256)
    digest = hashlib.sha256(payload).hexdigest()

    async def exchange(stream: TLSStream, got: list[str]) -> None:
        received = hashlib.sha256()
        total = 0

        async def send() -> None:
            view = memoryview(payload)
            for i in range(0, len(view), 256 * 1024):
                await stream.send_all(view[i : i + 256 * 1024])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while total < SIZE:
                data = await stream.receive_some()
                assert data, "early EOF"
                received.update(data)
                total += len(data)
        got.append(received.hexdigest())

    async def main() -> list[str]:
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client_sock = trio.socket.socket()
        _small_buffers(client_sock)
        got: list[str] = []
        with trio.fail_after(120):
            await client_sock.connect(listener.getsockname())
            server_sock, _ = await listener.accept()
            _small_buffers(server_sock)
            server = TLSStream(trio.SocketStream(server_sock), server_ctx, server_side=True)
            client = TLSStream(
                trio.SocketStream(client_sock), client_ctx, server_hostname="localhost"
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.do_handshake)
                nursery.start_soon(client.do_handshake)
            assert client.version() in ("TLSv1.3", "TLSv1.2")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(exchange, server, got)
                nursery.start_soon(exchange, client, got)
            # close_notify: the other end reads a clean end of stream.
            await client.aclose()
            assert await server.receive_some() == b""
            await server.aclose()
        listener.close()
        return got

    got = trio.run(main)
    assert got == [digest, digest]
