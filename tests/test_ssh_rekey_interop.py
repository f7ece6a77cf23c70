"""Wraith's Sans-IO engine against OpenSSH, for each cipher, with a rekey every megabyte.

``RekeyLimit 1M`` makes OpenSSH start a key re-exchange after every megabyte,
so a 20 MB echo (40 MB through the tunnel) crosses dozens of rekeys initiated
mid-stream, in both roles, and must arrive byte-exact.  (``-m slow`` runs the
200 MB version.)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Keys
from helpers import (
    BACKENDS,
    EchoServer,
    Proc,
    WraithServer,
    clean_env,
    echo_roundtrip,
    free_port,
    pattern_bytes,
    ssh_keygen,
    start_client,
    start_server,
)

MB = 1024 * 1024
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com")
SIZES = [
    pytest.param(20 * MB, id="20MB"),
    pytest.param(200 * MB, id="200MB", marks=pytest.mark.slow),
]


def _wait_port(port: int, proc: Proc, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert proc.popen.poll() is None, proc.output()
            time.sleep(0.05)
    raise AssertionError("port never opened\n" + proc.output())


@pytest.mark.integration
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_openssh_client_rekeys_against_wraith_server(
    backend: str, cipher: str, size: int, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    server = start_server(
        backend,
        tmp_path,
        authorized_keys=keys.authorized_keys,
        env=clean_env(WRAITH_ENGINE="sansio"),
    )
    pub = (tmp_path / "server-state" / "host_ed25519_key.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {pub[0]} {pub[1]}\n")
    local = free_port()
    ssh = Proc(
        [
            "ssh", "-F", "/dev/null", "-N", "-v",
            "-i", str(keys.client),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "RekeyLimit=1M", "-c", cipher,
            "-L", f"127.0.0.1:{local}:127.0.0.1:{echo.port}",
            "-p", str(server.port), "tester@127.0.0.1",
        ]
    )  # fmt: skip
    try:
        _wait_port(local, ssh)
        payload = pattern_bytes(size, seed=5)
        got = echo_roundtrip(local, payload, timeout=300)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        rekeys = sum("SSH2_MSG_KEXINIT sent" in line for line in ssh.stderr)
        assert rekeys >= 10, "\n".join(ssh.stderr[-20:])
        assert any(f"cipher: {cipher}" in line for line in ssh.stderr)
    finally:
        ssh.stop()
        server.proc.stop()


@pytest.fixture
def rekeying_sshd(tmp_path: Path, keys: Keys, request: pytest.FixtureRequest) -> Iterator[int]:
    """A stock sshd that allows one cipher and rekeys every megabyte."""
    cipher = request.param
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    host_key = tmp_path / "sshd_host_key"
    ssh_keygen("-t", "ed25519", "-N", "", "-f", str(host_key))
    os.makedirs("/run/sshd", exist_ok=True)
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {keys.authorized_keys}\nUsePAM no\nStrictModes no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nAllowTcpForwarding yes\n"
        f"Ciphers {cipher}\nRekeyLimit 1M\nPidFile {tmp_path}/sshd.pid\n"
    )
    proc = Proc([binary, "-D", "-e", "-f", str(config)])
    try:
        _wait_port(port, proc)
        (tmp_path / "sshd_fp").write_text(
            subprocess.run(
                ["ssh-keygen", "-lf", f"{host_key}.pub"], capture_output=True, text=True, check=True
            ).stdout.split()[1]
        )
        yield port
    finally:
        proc.stop()


@pytest.mark.integration
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("rekeying_sshd", CIPHERS, indirect=True)
@pytest.mark.parametrize("backend", BACKENDS)
def test_wraith_client_rekeys_against_openssh_server(
    backend: str, rekeying_sshd: int, size: int, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    server = WraithServer(
        proc=None, port=rekeying_sshd, fingerprint=(tmp_path / "sshd_fp").read_text()
    )  # type: ignore[arg-type]
    client = start_client(
        backend,
        server,
        keys.client,
        args=["-L", f"127.0.0.1:0:127.0.0.1:{echo.port}"],
        env=clean_env(WRAITH_ENGINE="sansio"),
    )
    try:
        payload = pattern_bytes(size, seed=6)
        got = echo_roundtrip(client.local_ports[0], payload, timeout=300)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    finally:
        client.proc.stop()
