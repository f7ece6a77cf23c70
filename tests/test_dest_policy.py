"""--allow-dest / --deny-dest end to end: refused destinations get SOCKS reply 0x02.

Each server serves one client session in which a refused request and an
allowed one sit side by side, so a refusal never costs the session.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Keys
from helpers import (
    WRAITH,
    EchoServer,
    SocksFailed,
    WraithClient,
    WraithServer,
    clean_env,
    socks_connect,
    start_client,
    start_server,
)

NOT_ALLOWED = 0x02


@pytest.fixture
def echo2() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


def _run(
    backend: str, tmp_path: Path, keys: Keys, extra: list[str]
) -> tuple[WraithServer, WraithClient]:
    server = start_server(backend, tmp_path, authorized_keys=keys.authorized_keys, extra=extra)
    try:
        client = start_client(backend, server, keys.client, args=["-D", "127.0.0.1:0"])
    except BaseException:
        server.proc.stop()
        raise
    return server, client


def _refused(socks_port: int, host: str, port: int) -> int:
    with pytest.raises(SocksFailed) as info:
        socks_connect(socks_port, host, port, timeout=20).close()
    return info.value.code


def _echoes(socks_port: int, host: str, port: int) -> None:
    with socks_connect(socks_port, host, port, timeout=20) as sock:
        sock.sendall(b"ping")
        assert sock.recv(16) == b"ping"


def test_deny_cidr_with_port(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer, echo2: EchoServer
) -> None:
    server, client = _run(backend, tmp_path, keys, ["--deny-dest", f"127.0.0.1/32:{echo.port}"])
    try:
        assert client.socks_port is not None
        assert _refused(client.socks_port, "127.0.0.1", echo.port) == NOT_ALLOWED
        _echoes(client.socks_port, "127.0.0.1", echo2.port)
        # A name that resolves into the denied network is refused before any dial.
        assert _refused(client.socks_port, "localhost", echo.port) == NOT_ALLOWED
        _echoes(client.socks_port, "localhost", echo2.port)
        assert echo.accepted == 0  # screened before the dial: no connection at all
        assert client.proc.popen.poll() is None
    finally:
        client.proc.stop()
        server.proc.stop()


def test_allow_list_by_name(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer, echo2: EchoServer
) -> None:
    server, client = _run(backend, tmp_path, keys, ["--allow-dest", f"localhost:{echo.port}"])
    try:
        assert client.socks_port is not None
        _echoes(client.socks_port, "localhost", echo.port)
        _echoes(client.socks_port, "LocalHost", echo.port)
        # Name patterns never match IP literals; other ports are not on the list.
        assert _refused(client.socks_port, "127.0.0.1", echo.port) == NOT_ALLOWED
        assert _refused(client.socks_port, "localhost", echo2.port) == NOT_ALLOWED
        _echoes(client.socks_port, "localhost", echo.port)
        assert echo2.accepted == 0
    finally:
        client.proc.stop()
        server.proc.stop()


def test_deny_name_glob_is_refused_before_resolving_and_not_logged(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    secret = "secret-dest-7f3a.example.invalid"
    server, client = _run(
        backend, tmp_path, keys, ["--deny-dest", "*.example.invalid", "--deny-dest", "localhost"]
    )
    try:
        assert client.socks_port is not None
        # Without the policy this would be a DNS failure (0x04), not 0x02.
        assert _refused(client.socks_port, secret, 80) == NOT_ALLOWED
        assert _refused(client.socks_port, "localhost", echo.port) == NOT_ALLOWED
        _echoes(client.socks_port, "127.0.0.1", echo.port)
        assert echo.accepted == 1
    finally:
        client.proc.stop()
        server.proc.stop()
    logs = server.proc.output() + client.proc.output()
    assert secret not in logs
    assert "example.invalid" not in logs


def test_bad_pattern_is_a_one_line_usage_error(tmp_path: Path) -> None:
    for flag in ("--allow-dest", "--deny-dest"):
        out = subprocess.run(
            [*WRAITH, "serve", "--state-dir", str(tmp_path), flag, "10.0.*"],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
        )
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert flag in lines[0] and "10.0.*" in lines[0]
