"""wraith connect <-> wraith serve, as real processes on loopback, on both backends."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess

from conftest import HttpServer, Keys
from helpers import (
    EchoServer,
    WraithServer,
    echo_roundtrip,
    pattern_bytes,
    recv_exact,
    socks_connect,
    start_client,
)

MB = 1024 * 1024


def test_curl_socks5_hostname_fetches_file(
    backend: str, wraith_server: WraithServer, keys: Keys, http_server: HttpServer
) -> None:
    payload = os.urandom(3 * MB)
    (http_server.root / "blob.bin").write_bytes(payload)
    client = start_client(backend, wraith_server, keys.client, args=["-D", "127.0.0.1:0"])
    try:
        # socks5h: "localhost" is resolved by the server, not by curl.
        out = subprocess.run(
            [
                "curl",
                "--silent",
                "--show-error",
                "--fail",
                "--max-time",
                "60",
                "--socks5-hostname",
                f"127.0.0.1:{client.socks_port}",
                f"http://localhost:{http_server.port}/blob.bin",
            ],
            capture_output=True,
            timeout=90,
        )
        assert out.returncode == 0, out.stderr.decode()
        assert hashlib.sha256(out.stdout).hexdigest() == hashlib.sha256(payload).hexdigest()
    finally:
        client.proc.stop()


def test_local_forward_carries_50mb_both_ways(
    backend: str, wraith_server: WraithServer, keys: Keys, echo: EchoServer
) -> None:
    client = start_client(
        backend, wraith_server, keys.client, args=["-L", f"127.0.0.1:0:127.0.0.1:{echo.port}"]
    )
    try:
        payload = pattern_bytes(50 * MB, seed=7)
        got = echo_roundtrip(client.local_ports[0], payload)
        assert len(got) == len(payload)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    finally:
        client.proc.stop()


def test_remote_forward_carries_50mb_both_ways(
    backend: str, wraith_server: WraithServer, keys: Keys, echo: EchoServer
) -> None:
    client = start_client(
        backend, wraith_server, keys.client, args=["-R", f"0:127.0.0.1:{echo.port}"]
    )
    try:
        port = client.remote_ports[0]
        payload = pattern_bytes(50 * MB, seed=11)
        got = echo_roundtrip(port, payload)
        assert len(got) == len(payload)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    finally:
        client.proc.stop()


def test_200_concurrent_socks_connections(
    backend: str, wraith_server: WraithServer, keys: Keys, echo: EchoServer
) -> None:
    client = start_client(backend, wraith_server, keys.client, args=["-D", "127.0.0.1:0"])
    assert client.socks_port is not None
    socks_port = client.socks_port

    def one(i: int) -> bool:
        payload = pattern_bytes(32 * 1024, seed=i)
        with socks_connect(socks_port, "localhost", echo.port, timeout=60) as sock:
            sock.sendall(payload)
            return recv_exact(sock, len(payload)) == payload

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
            results = list(pool.map(one, range(200)))
        assert results == [True] * 200
        assert echo.accepted == 200
    finally:
        client.proc.stop()
