"""Server protection with real processes: brute-force bans and pre-auth connection caps.

Every connection here comes from loopback, but from two different source
addresses: the attacker from 127.0.0.1 and the legitimate user from 127.0.0.2
(stock OpenSSH ``ssh -b 127.0.0.2``), so a ban or a cap on one source can be
seen not to touch the other.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Keys
from helpers import (
    WRAITH,
    EchoServer,
    Proc,
    WraithServer,
    clean_env,
    echo_roundtrip,
    free_port,
    pattern_bytes,
    start_server,
)
from test_interop_openssh import known_hosts_line, ssh_cmd, wait_listening


def wraith_connect(server: WraithServer, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *WRAITH,
            "connect",
            "-i",
            str(key),
            "--host-key-fingerprint",
            server.fingerprint,
            "-L",
            "127.0.0.1:0:127.0.0.1:9",
            "--connect-timeout",
            "10",
            server.target,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )


def ssh_from_other_source(
    server: WraithServer, tmp_path: Path, keys: Keys, echo: EchoServer
) -> tuple[Proc, int]:
    """Stock ssh from 127.0.0.2 with a good key and a -L forward to the echo server."""
    known = tmp_path / "known_hosts"
    known.write_text(
        known_hosts_line(server.port, tmp_path / "server-state" / "host_ed25519_key.pub")
    )
    port = free_port()
    proc = Proc(
        ssh_cmd(
            server,
            known,
            keys,
            "-b",
            "127.0.0.2",
            "-N",
            "-L",
            f"127.0.0.1:{port}:127.0.0.1:{echo.port}",
        )
    )
    return proc, port


def first_bytes(port: int, timeout: float = 10) -> bytes:
    """What a fresh TCP connection from 127.0.0.1 receives before the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        try:
            return s.recv(100)
        except ConnectionResetError:
            return b""


@pytest.mark.integration
def test_brute_force_is_banned_and_a_good_key_from_elsewhere_still_works(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    server = start_server(
        backend,
        tmp_path,
        authorized_keys=keys.authorized_keys,
        extra=["--ban-after", "3", "--ban-window", "600", "--ban-time", "600"],
    )
    ssh: Proc | None = None
    try:
        assert first_bytes(server.port).startswith(b"SSH-2.0-")  # not banned yet
        for _ in range(3):
            out = wraith_connect(server, keys.other)  # an unknown key: one failed attempt
            assert out.returncode == 4, out.stderr
        server.proc.wait_for(r"ban src=127\.0\.0\.1 failures=3", stream="stderr")
        failures = [line for line in server.proc.stderr if "auth result=failure" in line]
        assert len(failures) == 3, server.proc.output()
        # Banned: closed before the SSH banner, whatever key it brings.
        assert first_bytes(server.port) == b""
        out = wraith_connect(server, keys.client)
        assert out.returncode == 3, out.stderr
        assert any("banned for" in line for line in server.proc.stderr)
        # The same good key from another source gets in and tunnels.
        ssh, port = ssh_from_other_source(server, tmp_path, keys, echo)
        wait_listening(port, ssh)
        payload = pattern_bytes(1024 * 1024, seed=4)
        assert echo_roundtrip(port, payload) == payload
    finally:
        if ssh is not None:
            ssh.stop()
        server.proc.stop()


@pytest.mark.integration
def test_500_idle_unauthenticated_connections_do_not_lock_out_another_source(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    server = start_server(
        backend,
        tmp_path,
        authorized_keys=keys.authorized_keys,
        extra=["--auth-timeout", "120", "--max-unauth-per-source", "10"],
    )
    idle: list[socket.socket] = []
    ssh: Proc | None = None
    try:
        for _ in range(500):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        # The server closes all but its per-source share at once (no banner for them).
        deadline = time.monotonic() + 30
        closed = 0
        while time.monotonic() < deadline:
            closed = 0
            for s in idle:
                s.setblocking(False)
                try:
                    data = s.recv(4096, socket.MSG_PEEK)
                    if data == b"":
                        closed += 1
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    closed += 1
            if closed >= 490:
                break
            time.sleep(0.2)
        assert closed == 490, closed
        # Someone else is not kept out: connects and tunnels at once.
        started = time.monotonic()
        ssh, port = ssh_from_other_source(server, tmp_path, keys, echo)
        wait_listening(port, ssh, timeout=20)
        assert echo_roundtrip(port, b"still served") == b"still served"
        assert time.monotonic() - started < 20
        assert any(
            "too many unauthenticated connections from this source" in line
            for line in server.proc.stderr
        )
        assert server.proc.popen.poll() is None
    finally:
        for s in idle:
            s.close()
        if ssh is not None:
            ssh.stop()
        server.proc.stop()
