"""What Wraith refuses, and that refusing leaves it serving: real processes on loopback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import paramiko
import pytest
from conftest import Keys
from helpers import (
    WRAITH,
    EchoServer,
    Proc,
    SocksFailed,
    WraithServer,
    clean_env,
    echo_roundtrip,
    fingerprint_of,
    free_port,
    pattern_bytes,
    recv_exact,
    socks_connect,
    start_client,
)

# --- local helpers --------------------------------------------------------------------


def paramiko_transport(server: WraithServer) -> paramiko.Transport:
    """A paramiko client transport, handshake done; any host key is accepted."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    t = paramiko.Transport(sock)
    t.start_client(timeout=30)
    return t


def known_hosts_for(server: WraithServer, workdir: Path) -> Path:
    """A known_hosts file for the server started with ``workdir`` as its work dir."""
    pub = (workdir / "server-state" / "host_ed25519_key.pub").read_text().split()
    path = workdir / "known_hosts"
    path.write_text(f"[127.0.0.1]:{server.port} {pub[0]} {pub[1]}\n", encoding="ascii")
    return path


def assert_socks_works(socks_port: int, echo: EchoServer, seed: int = 1) -> None:
    payload = pattern_bytes(64 * 1024, seed=seed)
    with socks_connect(socks_port, "127.0.0.1", echo.port) as sock:
        sock.sendall(payload)
        assert recv_exact(sock, len(payload)) == payload


def socks_raw(socks_port: int, request: bytes) -> int:
    """Greet with no-auth, send a raw request, return the reply code."""
    with socket.create_connection(("127.0.0.1", socks_port), timeout=30) as sock:
        sock.sendall(b"\x05\x01\x00")
        assert recv_exact(sock, 2) == b"\x05\x00"
        sock.sendall(request)
        head = recv_exact(sock, 2)
        assert head[0] == 5
        return head[1]


def assert_closes(sock: socket.socket, timeout: float = 15) -> bytes:
    """Read until the peer closes; fail if it keeps the connection open."""
    sock.settimeout(timeout)
    got = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return bytes(got)
        except TimeoutError:
            break
        if not data:
            return bytes(got)
        got += data
    raise AssertionError(f"peer kept the connection open; got {bytes(got[:200])!r}")


def assert_local_forward_works(
    backend: str, server: WraithServer, keys: Keys, echo: EchoServer, seed: int
) -> None:
    assert server.proc.popen.poll() is None, server.proc.output()
    port = free_port()
    client = start_client(
        backend, server, keys.client, args=["-L", f"127.0.0.1:{port}:127.0.0.1:{echo.port}"]
    )
    try:
        payload = pattern_bytes(256 * 1024, seed=seed)
        assert echo_roundtrip(port, payload, timeout=60) == payload
    finally:
        client.proc.stop()


def connect_cmd(backend: str, server: WraithServer, keys: Keys, *extra: str) -> list[str]:
    return [
        *WRAITH,
        "connect",
        "--backend",
        backend,
        "-i",
        str(keys.client),
        "-D",
        "127.0.0.1:0",
        *extra,
        server.target,
    ]


# --- 1. password and keyboard-interactive -----------------------------------------------


def test_password_and_keyboard_interactive_refused(
    backend: str, wraith_server: WraithServer
) -> None:
    t = paramiko_transport(wraith_server)
    try:
        with pytest.raises(paramiko.AuthenticationException) as exc:
            t.auth_password("root", "hunter2-secret")
        if isinstance(exc.value, paramiko.BadAuthenticationType):
            assert exc.value.allowed_types == ["publickey"]
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_interactive("root", lambda title, instr, prompts: ["x"] * len(prompts))
        assert not t.is_authenticated()
    finally:
        t.close()
    for method in ("password", "keyboard-interactive"):
        wraith_server.proc.wait_for(
            rf'auth result=failure method={method} user="root" src=127\.0\.0\.1 port=\d+ '
            r"fingerprint=- reason=method-not-allowed$",
            stream="stderr",
            timeout=10,
        )
    # The password itself never reaches a log line.
    assert not any("hunter2" in line for line in wraith_server.proc.stderr)


# --- 2. non-Ed25519 keys ----------------------------------------------------------------


def test_rsa_key_refused_even_if_authorized(
    backend: str,
    engine: str,
    wraith_server: WraithServer,
    keys: Keys,
    tmp_path: Path,
    echo: EchoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "ssh-rsa " in keys.authorized_keys.read_text()
    known_hosts = known_hosts_for(wraith_server, tmp_path)
    out = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(keys.rsa),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "ConnectTimeout=20",
            "-p",
            str(wraith_server.port),
            "-W",
            f"127.0.0.1:{echo.port}",
            "tester@127.0.0.1",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "Permission denied" in out.stderr, out.stderr
    if engine == "sansio":
        # Our server-sig-algs lists ssh-ed25519 only, so OpenSSH does not even
        # offer the RSA key ("no mutual signature algorithm").  paramiko offers
        # it anyway, as ssh-rsa: the server must refuse it and say why.
        # paramiko too would skip the key after reading server-sig-algs; make it
        # offer the key as rsa-sha2-256 regardless (test-only patch).
        monkeypatch.setattr(
            paramiko.auth_handler.AuthHandler,
            "_finalize_pubkey_algorithm",
            lambda self, key_type: "rsa-sha2-256",
        )
        t = paramiko_transport(wraith_server)
        try:
            with pytest.raises(paramiko.AuthenticationException):
                t.auth_publickey("tester", paramiko.RSAKey.from_private_key_file(str(keys.rsa)))
        finally:
            t.close()
    fp = re.escape(fingerprint_of(Path(f"{keys.rsa}.pub")))
    wraith_server.proc.wait_for(
        rf'auth result=failure method=publickey user="tester" src=127\.0\.0\.1 port=\d+ '
        rf"fingerprint={fp} reason=unsupported-key-type$",
        stream="stderr",
        timeout=10,
    )
    assert not any("auth result=success" in x for x in wraith_server.proc.stderr)
    assert echo.accepted == 0


# --- 3. an Ed25519 key that is not authorized -------------------------------------------


def test_unauthorized_ed25519_key_refused(
    backend: str, wraith_server: WraithServer, keys: Keys
) -> None:
    client = start_client(backend, wraith_server, keys.other, user="mallory", ready=False)
    try:
        code = client.proc.wait(60)
    finally:
        client.proc.stop()
    assert code == 4, client.proc.output()
    assert any("authentication failed" in x.lower() for x in client.proc.stderr), (
        client.proc.output()
    )
    assert not any("Traceback" in x for x in client.proc.stderr), client.proc.output()
    fp = re.escape(fingerprint_of(Path(f"{keys.other}.pub")))
    wraith_server.proc.wait_for(
        rf'auth result=failure method=publickey user="mallory" src=127\.0\.0\.1 port=\d+ '
        rf"fingerprint={fp} reason=unknown-key$",
        stream="stderr",
        timeout=10,
    )
    assert not any("auth result=success" in x for x in wraith_server.proc.stderr)


# --- 4. sessions (shell, exec, subsystem) ----------------------------------------------


def test_session_channels_refused(
    backend: str, wraith_server: WraithServer, keys: Keys, echo: EchoServer
) -> None:
    t = paramiko_transport(wraith_server)
    try:
        key = paramiko.Ed25519Key.from_private_key_file(str(keys.client))
        t.auth_publickey("tester", key)
        assert t.is_authenticated()
        for kind in ("session", "x11", "auth-agent@openssh.com"):
            with pytest.raises(paramiko.ChannelException) as exc:
                t.open_channel(kind, src_addr=("127.0.0.1", 6010), timeout=20)
            assert exc.value.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED, kind
        # The session is still good for what it is for.
        chan = t.open_channel(
            "direct-tcpip", ("127.0.0.1", echo.port), ("127.0.0.1", 1), timeout=20
        )
        chan.settimeout(20)
        chan.sendall(b"still here")
        got = b""
        while len(got) < 10:
            got += chan.recv(10 - len(got))
        assert got == b"still here"
        chan.close()
    finally:
        t.close()
    wraith_server.proc.wait_for(r"refused channel type=session", stream="stderr", timeout=10)


# --- 5. reserved names -----------------------------------------------------------------


def test_reserved_names_refused(
    backend: str, wraith_server: WraithServer, keys: Keys, echo: EchoServer
) -> None:
    client = start_client(backend, wraith_server, keys.client, args=["-D", "127.0.0.1:0"])
    try:
        assert client.socks_port is not None
        for name in ("wraith-foo", "WRAITH-Foo", "wraith-x.invalid"):
            with pytest.raises(SocksFailed) as exc:
                socks_connect(client.socks_port, name, 80).close()
            # 2 (not allowed), not 4 (host unreachable): it was never resolved.
            assert exc.value.code == 2, name
        with pytest.raises(SocksFailed) as exc:
            socks_connect(client.socks_port, "wraith-control", 80).close()
        assert exc.value.code != 0
        out = subprocess.run(
            [
                "curl",
                "--silent",
                "--show-error",
                "--max-time",
                "30",
                "--socks5-hostname",
                f"127.0.0.1:{client.socks_port}",
                "http://wraith-foo/",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0
        assert out.stdout == ""
        assert_socks_works(client.socks_port, echo)
    finally:
        client.proc.stop()
    wraith_server.proc.wait_for(r"refused reserved name", stream="stderr", timeout=10)
    # Nothing logs a destination, not even a refused one.
    for line in wraith_server.proc.stderr + client.proc.stderr + client.proc.stdout:
        assert "wraith-foo" not in line.lower(), line
        assert "wraith-x" not in line.lower(), line


# --- 6. SOCKS reply codes --------------------------------------------------------------


def test_socks_reply_codes(
    backend: str, wraith_server: WraithServer, keys: Keys, echo: EchoServer
) -> None:
    client = start_client(backend, wraith_server, keys.client, args=["-D", "127.0.0.1:0"])
    try:
        socks = client.socks_port
        assert socks is not None
        assert_socks_works(socks, echo, seed=1)

        closed = free_port()
        with pytest.raises(SocksFailed) as exc:
            socks_connect(socks, "127.0.0.1", closed).close()
        assert exc.value.code == 5  # connection refused
        assert_socks_works(socks, echo, seed=2)

        with pytest.raises(SocksFailed) as exc:
            socks_connect(socks, "nonexistent.invalid", 80).close()
        assert exc.value.code == 4  # host unreachable
        assert_socks_works(socks, echo, seed=3)

        bind = b"\x05\x02\x00\x01\x7f\x00\x00\x01" + echo.port.to_bytes(2, "big")
        assert socks_raw(socks, bind) == 7  # command not supported
        assert_socks_works(socks, echo, seed=4)

        bad_atyp = b"\x05\x01\x00\x05\x7f\x00\x00\x01" + echo.port.to_bytes(2, "big")
        assert socks_raw(socks, bad_atyp) == 8  # address type not supported
        assert_socks_works(socks, echo, seed=5)
    finally:
        client.proc.stop()
    assert echo.accepted == 5


# --- 7. bad input ----------------------------------------------------------------------


def test_server_survives_bad_input(
    backend: str, wraith_server: WraithServer, keys: Keys, echo: EchoServer
) -> None:
    addr = ("127.0.0.1", wraith_server.port)

    # (a) garbage after a valid banner
    with socket.create_connection(addr, timeout=30) as sock:
        sock.sendall(b"SSH-2.0-x\r\n" + os.urandom(8192))
        assert_closes(sock, timeout=30)
    assert_local_forward_works(backend, wraith_server, keys, echo, seed=1)

    # (b) not SSH at all
    with socket.create_connection(addr, timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_closes(sock, timeout=30)
    assert_local_forward_works(backend, wraith_server, keys, echo, seed=2)

    # (c) 20 half-open connections that say nothing, (d) half a banner, from another
    # loopback source (one source gets --max-unauth-per-source, 10: tests/test_protection.py)
    other = ("127.0.0.2", 0)
    idle = [socket.create_connection(addr, timeout=30, source_address=other) for _ in range(20)]
    half = socket.create_connection(addr, timeout=30, source_address=other)
    try:
        half.sendall(b"SSH-2.0-hal")
        time.sleep(0.5)
        assert_local_forward_works(backend, wraith_server, keys, echo, seed=3)
        assert_local_forward_works(backend, wraith_server, keys, echo, seed=4)
    finally:
        for s in [*idle, half]:
            s.close()
    assert_local_forward_works(backend, wraith_server, keys, echo, seed=5)
    assert wraith_server.proc.popen.poll() is None


def test_bad_input_is_logged_without_tracebacks(backend: str, wraith_server: WraithServer) -> None:
    """Pre-auth junk is an everyday event (scanners): at most a line each, no traceback."""
    addr = ("127.0.0.1", wraith_server.port)
    with socket.create_connection(addr, timeout=30) as sock:
        sock.sendall(b"SSH-2.0-x\r\n" + os.urandom(8192))
        assert_closes(sock, timeout=30)
    with socket.create_connection(addr, timeout=30) as sock:
        sock.sendall(b"SSH-2.0-hal")
        time.sleep(0.5)
    socket.create_connection(addr, timeout=30).close()
    deadline = time.monotonic() + 10
    ended = ("session closed", "closed before authentication")
    while sum(any(e in x for e in ended) for x in wraith_server.proc.stderr) < 3:
        assert time.monotonic() < deadline, wraith_server.proc.output()
        time.sleep(0.1)
    noisy = [x for x in wraith_server.proc.stderr if "Traceback" in x or " ERROR " in x]
    assert not noisy, "\n".join(noisy[:20])


def test_client_socks_survives_bad_input(
    backend: str, wraith_server: WraithServer, keys: Keys, echo: EchoServer
) -> None:
    client = start_client(backend, wraith_server, keys.client, args=["-D", "127.0.0.1:0"])
    try:
        socks = client.socks_port
        assert socks is not None
        addr = ("127.0.0.1", socks)

        with socket.create_connection(addr, timeout=30) as sock:  # garbage
            sock.sendall(os.urandom(1) + b"\xff garbage \x00" * 50)
            assert_closes(sock)
        assert_socks_works(socks, echo, seed=1)

        with socket.create_connection(addr, timeout=30) as sock:  # a SOCKS4 CONNECT
            sock.sendall(b"\x04\x01" + echo.port.to_bytes(2, "big") + b"\x7f\x00\x00\x01u\x00")
            assert_closes(sock)
        assert_socks_works(socks, echo, seed=2)

        for partial in (b"\x05", b"\x05\x01\x00\x05\x01\x00\x03\x0aexam"):  # truncated
            with socket.create_connection(addr, timeout=30) as sock:
                sock.sendall(partial)
                time.sleep(0.2)
        assert_socks_works(socks, echo, seed=3)

        with socket.create_connection(addr, timeout=30) as sock:  # an empty host name
            sock.sendall(b"\x05\x01\x00\x05\x01\x00\x03\x00\x00\x50")
            assert recv_exact(sock, 2) == b"\x05\x00"
            reply = assert_closes(sock)
            assert reply == b"" or (reply[0] == 5 and reply[1] != 0), reply
        assert_socks_works(socks, echo, seed=4)
        assert client.proc.popen.poll() is None
    finally:
        client.proc.stop()
    assert not any("Traceback" in x for x in client.proc.stderr), client.proc.output()
    assert echo.accepted == 4


# --- 8. host key pinning ----------------------------------------------------------------


def test_unknown_host_key_refused(
    backend: str, wraith_server: WraithServer, keys: Keys, tmp_path: Path
) -> None:
    env = clean_env(HOME=str(tmp_path))  # no ~/.ssh/known_hosts to fall back on
    proc = Proc(connect_cmd(backend, wraith_server, keys), env=env)
    try:
        code = proc.wait(60)
    finally:
        proc.stop()
    assert code == 5, proc.output()
    err = "\n".join(proc.stderr)
    assert wraith_server.fingerprint in err, err
    assert f"--host-key-fingerprint {wraith_server.fingerprint}" in err, err
    assert not any("listening" in x for x in proc.stdout), proc.output()
    # The client must not offer its key to a server it does not trust.
    assert not any("method=publickey" in x for x in wraith_server.proc.stderr)


def test_wrong_host_key_pin_refused(
    backend: str, wraith_server: WraithServer, keys: Keys, tmp_path: Path
) -> None:
    wrong = fingerprint_of(Path(f"{keys.other}.pub"))
    assert wrong != wraith_server.fingerprint
    env = clean_env(HOME=str(tmp_path))
    proc = Proc(connect_cmd(backend, wraith_server, keys, "--host-key-fingerprint", wrong), env=env)
    try:
        code = proc.wait(60)
    finally:
        proc.stop()
    assert code == 5, proc.output()
    err = "\n".join(proc.stderr)
    assert "mismatch" in err.lower(), err
    assert wrong in err and wraith_server.fingerprint in err, err
    assert not any("listening" in x for x in proc.stdout), proc.output()
    assert not any("method=publickey" in x for x in wraith_server.proc.stderr)


# --- 9. -R binds -----------------------------------------------------------------------


def test_remote_bind_is_loopback_only(
    backend: str, wraith_server: WraithServer, keys: Keys, echo: EchoServer
) -> None:
    client = start_client(
        backend,
        wraith_server,
        keys.client,
        args=["-R", f"0.0.0.0:0:127.0.0.1:{echo.port}"],
        ready=False,
    )
    try:
        client.proc.wait_for(r"^connected to ")
        client.proc.wait_for(r"remote forward .*refused", stream="stderr", timeout=20)
        time.sleep(0.5)
        lines = client.proc.stdout + client.proc.stderr
        assert not any("remote forward listening" in x for x in lines), client.proc.output()
    finally:
        client.proc.stop()
    wraith_server.proc.wait_for(r"refused remote bind", stream="stderr", timeout=10)

    client = start_client(
        backend, wraith_server, keys.client, args=["-R", f"127.0.0.1:0:127.0.0.1:{echo.port}"]
    )
    try:
        assert len(client.remote_ports) == 1
        payload = pattern_bytes(256 * 1024, seed=9)
        assert echo_roundtrip(client.remote_ports[0], payload, timeout=60) == payload
    finally:
        client.proc.stop()


def test_metadata_and_link_local_destinations_denied(
    backend: str, wraith_server: WraithServer, keys: Keys, echo: EchoServer
) -> None:
    """Cloud metadata and link-local addresses are never dialled (they hand out credentials)."""
    client = start_client(backend, wraith_server, keys.client, args=["-D", "127.0.0.1:0"])
    assert client.socks_port is not None
    try:
        for host in ("169.254.169.254", "fe80::1", "metadata.google.internal"):
            with pytest.raises(SocksFailed) as refused:
                socks_connect(client.socks_port, host, 80)
            assert refused.value.code == 2, host  # connection not allowed by ruleset
        # The session carries on.
        with socks_connect(client.socks_port, "localhost", echo.port) as sock:
            sock.sendall(b"ok")
            assert recv_exact(sock, 2) == b"ok"
    finally:
        client.proc.stop()
