"""The two SSH engines against each other: Wraith's Sans-IO engine and paramiko, both roles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import Keys
from helpers import (
    BACKENDS,
    EchoServer,
    clean_env,
    echo_roundtrip,
    pattern_bytes,
    recv_exact,
    socks_connect,
    start_client,
    start_server,
)

MB = 1024 * 1024
PAIRS = [("sansio", "paramiko"), ("paramiko", "sansio")]


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("server_engine", "client_engine"), PAIRS)
def test_engines_interoperate(
    backend: str,
    server_engine: str,
    client_engine: str,
    tmp_path: Path,
    keys: Keys,
    echo: EchoServer,
) -> None:
    server = start_server(
        backend,
        tmp_path,
        authorized_keys=keys.authorized_keys,
        env=clean_env(WRAITH_ENGINE=server_engine),
    )
    try:
        client = start_client(
            backend,
            server,
            keys.client,
            args=[
                "-D",
                "127.0.0.1:0",
                "-L",
                f"127.0.0.1:0:127.0.0.1:{echo.port}",
                "-R",
                f"0:127.0.0.1:{echo.port}",
            ],
            env=clean_env(WRAITH_ENGINE=client_engine),
        )
        try:
            payload = pattern_bytes(8 * MB, seed=3)
            for port in (client.local_ports[0], client.remote_ports[0]):
                got = echo_roundtrip(port, payload)
                assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
            assert client.socks_port is not None
            with socks_connect(client.socks_port, "localhost", echo.port) as sock:
                sock.sendall(b"matrix")
                assert recv_exact(sock, 6) == b"matrix"
        finally:
            client.proc.stop()
    finally:
        server.proc.stop()
