"""The `wraith` command as a user runs it: help, keygen, defaults, env vars, exit codes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from conftest import HttpServer, Keys
from helpers import WRAITH, Proc, WraithServer, clean_env, fingerprint_of, free_port, start_client


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WRAITH, *args], capture_output=True, text=True, env=env or clean_env(), timeout=timeout
    )


def test_help_lists_commands_and_env() -> None:
    out = run("--help")
    assert out.returncode == 0
    for word in ("serve", "connect", "keygen", "demo", "exit codes"):
        assert word in out.stdout
    out = run("connect", "--help")
    assert out.returncode == 0
    assert "WRAITH_HOST_KEY_FINGERPRINT" in out.stdout
    assert "socks5h" in out.stdout


def test_keygen_writes_openssh_pair(tmp_path: Path) -> None:
    key = tmp_path / "id_test"
    out = run("keygen", "-f", str(key), "-C", "me@test")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == fingerprint_of(tmp_path / "id_test.pub")
    assert (key.stat().st_mode & 0o777) == 0o600
    assert (tmp_path / "id_test.pub").read_text().startswith("ssh-ed25519 ")
    # ssh-keygen can read the private key back.
    pub = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True)
    assert (
        pub.returncode == 0
        and pub.stdout.split()[1] == ((tmp_path / "id_test.pub").read_text().split()[1])
    )
    again = run("keygen", "-f", str(key))
    assert again.returncode == 1
    assert len(again.stderr.strip().splitlines()) == 1


def test_usage_errors_are_one_line_exit_2(keys: Keys) -> None:
    cases = [
        ("connect", "-i", str(keys.client), "-L", "nonsense", "127.0.0.1:1"),
        ("connect", "-i", str(keys.client)),
        ("connect", "-i", str(keys.client), "-D", "0.0.0.0:0", "127.0.0.1:1"),
        ("connect", "-i", str(keys.client), "--engine", "bogus", "127.0.0.1:1"),
        ("serve", "--listen", "udp://127.0.0.1:1"),
        ("connect", "-i", str(keys.rsa), "127.0.0.1:1"),
        ("connect", "-i", str(keys.client), "-c", "aes128-cbc", "127.0.0.1:1"),
        ("serve", "--engine", "paramiko", "--ciphers", "chacha20-poly1305@openssh.com"),
        ("connect", "-i", str(keys.client), "--keepalive-interval", "0", "127.0.0.1:1"),
        ("serve", "--keepalive-count", "0"),
    ]
    for args in cases:
        out = run(*args)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("wraith: "), (args, out.stderr)
    out = run("connect", "-i", str(keys.client), "-c", "aes128-cbc", "127.0.0.1:1")
    assert "chacha20-poly1305@openssh.com" in out.stderr  # the message lists the choices
    # An open proxy needs an explicit opt-in; the message says how.
    out = run("connect", "-i", str(keys.client), "-D", "0.0.0.0:0", "127.0.0.1:1")
    assert "--socks-open" in out.stderr


def test_unreachable_server_exit_3(keys: Keys) -> None:
    out = run(
        "connect",
        "-i",
        str(keys.client),
        "--host-key-fingerprint",
        "SHA256:" + "A" * 43,
        f"127.0.0.1:{free_port()}",
    )
    assert out.returncode == 3
    assert "cannot connect" in out.stderr


def test_default_socks_port_and_l_only(
    backend: str, wraith_server: WraithServer, keys: Keys
) -> None:
    client = start_client(backend, wraith_server, keys.client, args=[])
    try:
        assert client.socks_port == 1080
    finally:
        client.proc.stop()
    client = start_client(
        backend, wraith_server, keys.client, args=["-L", "127.0.0.1:0:127.0.0.1:9"]
    )
    try:
        assert client.socks_port is None
        assert not any("SOCKS5" in line for line in client.proc.stdout)
    finally:
        client.proc.stop()


def test_env_vars_set_flags(
    backend: str, wraith_server: WraithServer, keys: Keys, http_server: HttpServer
) -> None:
    (http_server.root / "x.txt").write_text("env ok")
    env = clean_env(
        WRAITH_HOST_KEY_FINGERPRINT=wraith_server.fingerprint,
        WRAITH_IDENTITY=keys.client.read_text(),  # key text, not a path
        WRAITH_SOCKS="127.0.0.1:0",
        WRAITH_BACKEND=backend,
        WRAITH_TARGET=wraith_server.target,
    )
    proc = Proc([*WRAITH, "connect"], env=env)
    try:
        m = proc.wait_for(r"SOCKS5 proxy listening on \S+:(\d+)")
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "--max-time",
                "30",
                "--socks5-hostname",
                f"127.0.0.1:{m.group(1)}",
                f"http://localhost:{http_server.port}/x.txt",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.stdout == "env ok", out.stderr
    finally:
        proc.stop()


def test_socks_username_password(
    backend: str, wraith_server: WraithServer, keys: Keys, http_server: HttpServer
) -> None:
    (http_server.root / "y.txt").write_text("auth ok")
    client = start_client(
        backend,
        wraith_server,
        keys.client,
        args=["-D", "127.0.0.1:0", "--socks-user", "u1", "--socks-password", "p w"],
    )
    url = f"http://localhost:{http_server.port}/y.txt"
    try:
        good = subprocess.run(
            [
                "curl",
                "-sS",
                "--max-time",
                "30",
                "--socks5-hostname",
                f"127.0.0.1:{client.socks_port}",
                "--proxy-user",
                "u1:p w",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert good.stdout == "auth ok", good.stderr
        bad = subprocess.run(
            [
                "curl",
                "-sS",
                "--max-time",
                "30",
                "--socks5-hostname",
                f"127.0.0.1:{client.socks_port}",
                "--proxy-user",
                "u1:wrong",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode != 0 and bad.stdout == ""
    finally:
        client.proc.stop()


def test_output_is_line_flushed_to_files(backend: str, tmp_path: Path, keys: Keys) -> None:
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        popen = subprocess.Popen(
            [
                *WRAITH,
                "serve",
                "--backend",
                backend,
                "--listen",
                "tcp://127.0.0.1:0",
                "--state-dir",
                str(tmp_path / "st"),
                "--authorized-keys",
                str(keys.authorized_keys),
            ],
            stdout=out,
            stderr=err,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while "connect with: wraith connect" not in out_path.read_text():
                assert popen.poll() is None and time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.05)
            text = out_path.read_text()
            assert "host key fingerprint: SHA256:" in text
            # Logs go to stderr, never to stdout.
            assert "INFO" not in text
        finally:
            popen.terminate()
            popen.wait(10)
    assert os.path.exists(tmp_path / "st" / "host_ed25519_key")


def test_cipher_choice_is_negotiated_or_refused_clearly(
    backend: str, tmp_path: Path, keys: Keys
) -> None:
    """``--ciphers`` on both sides: a common cipher connects, none fails with exit 3."""
    from helpers import start_server

    server = start_server(
        backend,
        tmp_path,
        authorized_keys=keys.authorized_keys,
        extra=["--ciphers", "aes256-gcm@openssh.com"],
    )
    try:
        ok = start_client(
            backend,
            server,
            keys.client,
            args=[
                "-L",
                "127.0.0.1:0:127.0.0.1:9",
                "-c",
                "aes128-gcm@openssh.com,aes256-gcm@openssh.com",
            ],
        )
        ok.proc.stop()
        out = run(
            "connect",
            "--backend",
            backend,
            "-i",
            str(keys.client),
            "--host-key-fingerprint",
            server.fingerprint,
            "-c",
            "aes128-gcm@openssh.com",
            server.target,
        )
        assert out.returncode == 3, out.stderr
        assert "cipher" in out.stderr.lower(), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    finally:
        server.proc.stop()
