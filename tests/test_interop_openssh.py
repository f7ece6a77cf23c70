"""Interop with stock OpenSSH (DESIGN.md section 9), as real processes on loopback.

A. OpenSSH's ``ssh`` client (-N -D, -L, -R, -W) against ``wraith serve``; sessions
   (exec, shell) are refused and the server carries on.
B. ``wraith connect`` against a stock OpenSSH ``sshd``: SOCKS (curl), -L and -R.
C. ``wraith connect`` refuses an unknown or wrong sshd host key with exit code 5 and one
   stderr line naming the real fingerprint and the flag to add; a known_hosts file works.

Every test runs on both backends (trio and asyncio).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import HttpServer, Keys, Sshd
from helpers import (
    WRAITH,
    EchoServer,
    Proc,
    WraithClient,
    WraithServer,
    clean_env,
    echo_roundtrip,
    fingerprint_of,
    free_port,
    pattern_bytes,
    start_client,
)

MB = 1024 * 1024
EXIT_HOST_KEY = 5


# --- helpers -----------------------------------------------------------------------


def known_hosts_line(port: int, pub: Path) -> str:
    """A known_hosts line for ``[127.0.0.1]:port`` from an OpenSSH ``.pub`` file."""
    ktype, blob = pub.read_text(encoding="ascii").split()[:2]
    return f"[127.0.0.1]:{port} {ktype} {blob}\n"


def ssh_cmd(server: WraithServer, known_hosts: Path, keys: Keys, *args: str) -> list[str]:
    """Stock ``ssh`` pinned to the Wraith server's host key; no user config, no agent."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "ConnectTimeout=15",
        "-o",
        "ExitOnForwardFailure=yes",
        "-i",
        str(keys.client),
        "-p",
        str(server.port),
        *args,
        "127.0.0.1",
    ]


def wait_listening(port: int, proc: Proc, *, timeout: float = 30) -> None:
    """Poll until 127.0.0.1:port accepts a connection; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            pass
        if proc.popen.poll() is not None:
            time.sleep(0.2)
            raise AssertionError(
                f"{proc.args[0]} exited ({proc.popen.returncode}) before port {port} listened\n"
                + proc.output()
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} never listened\n" + proc.output())
        time.sleep(0.1)


def curl_socks(socks_port: int, url: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "60",
            "--socks5-hostname",
            f"127.0.0.1:{socks_port}",
            url,
        ],
        capture_output=True,
        timeout=90,
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_echo(port: int, size: int, seed: int) -> None:
    payload = pattern_bytes(size, seed=seed)
    got = echo_roundtrip(port, payload)
    assert len(got) == len(payload)
    assert sha(got) == sha(payload)


@pytest.fixture
def wraith_known_hosts(wraith_server: WraithServer, tmp_path: Path) -> Path:
    """known_hosts for the ``wraith_server`` fixture, from the .pub in its state dir."""
    pub = tmp_path / "server-state" / "host_ed25519_key.pub"
    assert pub.is_file(), "wraith serve did not write host_ed25519_key.pub to its state dir"
    assert fingerprint_of(pub) == wraith_server.fingerprint
    path = tmp_path / "known_hosts"
    path.write_text(known_hosts_line(wraith_server.port, pub), encoding="ascii")
    return path


def as_server(sshd: Sshd) -> WraithServer:
    """The sshd fixture as a ``helpers.start_client`` target."""
    return WraithServer(sshd.proc, sshd.port, sshd.fingerprint)


def connect_sshd(backend: str, sshd: Sshd, keys: Keys, *args: str) -> WraithClient:
    return start_client(backend, as_server(sshd), keys.client, args=args, user=sshd.user)


# --- A. OpenSSH ssh -> wraith serve ----------------------------------------------------


def test_ssh_dynamic_forward_curl(
    backend: str,
    wraith_server: WraithServer,
    wraith_known_hosts: Path,
    keys: Keys,
    http_server: HttpServer,
) -> None:
    payload = os.urandom(2 * MB)
    (http_server.root / "blob.bin").write_bytes(payload)
    socks_port = free_port()
    ssh = Proc(
        ssh_cmd(wraith_server, wraith_known_hosts, keys, "-N", "-D", f"127.0.0.1:{socks_port}")
    )
    try:
        wait_listening(socks_port, ssh)
        out = curl_socks(socks_port, f"http://localhost:{http_server.port}/blob.bin")
        assert out.returncode == 0, out.stderr.decode() + "\n" + ssh.output()
        assert sha(out.stdout) == sha(payload)
    finally:
        ssh.stop()


def test_ssh_local_forward_8mb(
    backend: str,
    wraith_server: WraithServer,
    wraith_known_hosts: Path,
    keys: Keys,
    echo: EchoServer,
) -> None:
    port = free_port()
    spec = f"127.0.0.1:{port}:127.0.0.1:{echo.port}"
    ssh = Proc(ssh_cmd(wraith_server, wraith_known_hosts, keys, "-N", "-L", spec))
    try:
        wait_listening(port, ssh)
        assert_echo(port, 8 * MB, seed=21)
    finally:
        ssh.stop()


def test_ssh_remote_forward_fixed_port(
    backend: str,
    wraith_server: WraithServer,
    wraith_known_hosts: Path,
    keys: Keys,
    echo: EchoServer,
) -> None:
    port = free_port()
    spec = f"127.0.0.1:{port}:127.0.0.1:{echo.port}"
    ssh = Proc(ssh_cmd(wraith_server, wraith_known_hosts, keys, "-N", "-R", spec))
    try:
        # Only the Wraith server can be listening on this port.
        wait_listening(port, ssh)
        assert_echo(port, 8 * MB, seed=22)
    finally:
        ssh.stop()


def test_ssh_remote_forward_port_zero(
    backend: str,
    wraith_server: WraithServer,
    wraith_known_hosts: Path,
    keys: Keys,
    echo: EchoServer,
) -> None:
    spec = f"0:127.0.0.1:{echo.port}"
    ssh = Proc(ssh_cmd(wraith_server, wraith_known_hosts, keys, "-N", "-R", spec))
    try:
        m = ssh.wait_for(r"Allocated port (\d+) for remote forward", stream="stderr")
        port = int(m.group(1))
        assert 0 < port < 65536
        wait_listening(port, ssh)
        assert_echo(port, 8 * MB, seed=23)
    finally:
        ssh.stop()


def test_ssh_stdio_forward(
    backend: str,
    wraith_server: WraithServer,
    wraith_known_hosts: Path,
    keys: Keys,
    echo: EchoServer,
) -> None:
    payload = pattern_bytes(1 * MB, seed=24)
    out = subprocess.run(
        ssh_cmd(wraith_server, wraith_known_hosts, keys, "-W", f"127.0.0.1:{echo.port}"),
        input=payload,
        capture_output=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert len(out.stdout) == len(payload)
    assert sha(out.stdout) == sha(payload)


@pytest.mark.parametrize("kind", ["exec", "shell"])
def test_ssh_session_refused(
    backend: str,
    kind: str,
    wraith_server: WraithServer,
    wraith_known_hosts: Path,
    keys: Keys,
    echo: EchoServer,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "must-not-exist"
    if kind == "exec":
        cmd = ssh_cmd(wraith_server, wraith_known_hosts, keys)
        cmd.append(f"touch {marker}")
        stdin = b""
    else:
        cmd = ssh_cmd(wraith_server, wraith_known_hosts, keys, "-tt")
        stdin = f"touch {marker}\nexit\n".encode()
    out = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60)
    err = out.stderr.decode(errors="replace")
    assert out.returncode != 0, err
    assert "administratively prohibited" in err or "open failed" in err, err
    assert not marker.exists()
    # The server is still up and serving tunnels.
    assert wraith_server.proc.popen.poll() is None, wraith_server.proc.output()
    payload = b"still here\n" * 1000
    again = subprocess.run(
        ssh_cmd(wraith_server, wraith_known_hosts, keys, "-W", f"127.0.0.1:{echo.port}"),
        input=payload,
        capture_output=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout == payload


# --- B. wraith connect -> OpenSSH sshd --------------------------------------------------


def test_connect_sshd_socks_curl(
    backend: str, sshd: Sshd, keys: Keys, http_server: HttpServer
) -> None:
    payload = os.urandom(2 * MB)
    (http_server.root / "blob.bin").write_bytes(payload)
    client = connect_sshd(backend, sshd, keys, "-D", "127.0.0.1:0")
    try:
        assert client.socks_port is not None
        out = curl_socks(client.socks_port, f"http://localhost:{http_server.port}/blob.bin")
        assert out.returncode == 0, out.stderr.decode() + "\n" + client.proc.output()
        assert sha(out.stdout) == sha(payload)
    finally:
        client.proc.stop()


def test_connect_sshd_local_forward_8mb(
    backend: str, sshd: Sshd, keys: Keys, echo: EchoServer
) -> None:
    client = connect_sshd(backend, sshd, keys, "-L", f"127.0.0.1:0:127.0.0.1:{echo.port}")
    try:
        assert_echo(client.local_ports[0], 8 * MB, seed=31)
    finally:
        client.proc.stop()


def test_connect_sshd_remote_forward_fixed_port(
    backend: str, sshd: Sshd, keys: Keys, echo: EchoServer
) -> None:
    port = free_port()
    client = connect_sshd(backend, sshd, keys, "-R", f"127.0.0.1:{port}:127.0.0.1:{echo.port}")
    try:
        assert client.remote_ports == [port]
        wait_listening(port, client.proc)
        assert_echo(port, 8 * MB, seed=32)
    finally:
        client.proc.stop()


def test_connect_sshd_remote_forward_port_zero(
    backend: str, sshd: Sshd, keys: Keys, echo: EchoServer
) -> None:
    client = connect_sshd(backend, sshd, keys, "-R", f"0:127.0.0.1:{echo.port}")
    try:
        assert len(client.remote_ports) == 1
        port = client.remote_ports[0]
        assert 0 < port < 65536
        assert_echo(port, 8 * MB, seed=33)
    finally:
        client.proc.stop()


# --- C. host key pinning against sshd ---------------------------------------------------


@pytest.mark.parametrize("pin", ["none", "wrong-fingerprint", "wrong-known-hosts"])
def test_connect_sshd_unknown_host_key_exits_5(
    backend: str, pin: str, sshd: Sshd, keys: Keys, tmp_path: Path
) -> None:
    extra: list[str] = []
    if pin == "wrong-fingerprint":
        wrong = fingerprint_of(Path(f"{keys.other}.pub"))
        assert wrong != sshd.fingerprint
        extra = ["--host-key-fingerprint", wrong]
    elif pin == "wrong-known-hosts":
        kh = tmp_path / "known_hosts"
        kh.write_text(known_hosts_line(sshd.port, Path(f"{keys.other}.pub")), encoding="ascii")
        extra = ["--known-hosts", str(kh)]
    out = subprocess.run(
        [
            *WRAITH,
            "connect",
            "--backend",
            backend,
            "-i",
            str(keys.client),
            "-L",
            f"127.0.0.1:{free_port()}:127.0.0.1:9",
            *extra,
            f"{sshd.user}@127.0.0.1:{sshd.port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert out.returncode == EXIT_HOST_KEY, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert sshd.fingerprint in lines[0]
    assert "--host-key-fingerprint" in lines[0]
    assert "connected to" not in out.stdout


def test_connect_sshd_known_hosts(
    backend: str, sshd: Sshd, keys: Keys, echo: EchoServer, tmp_path: Path
) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(known_hosts_line(sshd.port, sshd.host_pub), encoding="ascii")
    cmd = [
        *WRAITH,
        "connect",
        "--backend",
        backend,
        "-i",
        str(keys.client),
        "--known-hosts",
        str(kh),
        "-v",
        "-L",
        f"127.0.0.1:0:127.0.0.1:{echo.port}",
        f"{sshd.user}@127.0.0.1:{sshd.port}",
    ]
    proc = Proc(cmd)
    try:
        m = proc.wait_for(r"^connected to \S+ \((SHA256:\S+)\)")
        assert m.group(1) == sshd.fingerprint
        port = int(proc.wait_for(r"local forward listening on \S+:(\d+)").group(1))
        assert_echo(port, 256 * 1024, seed=34)
    finally:
        proc.stop()
