"""The ``tls://`` transport with real processes: SSH inside TLS, certificates checked.

A test CA and a server certificate (for ``localhost`` and ``127.0.0.1``) are made
here with ``cryptography``; the client trusts them through ``--tls-ca``.  TLS
needs the Sans-IO engine, so these run on both backends with ``sansio``; the
paramiko engine gets a clear usage error (tested).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from conftest import HttpServer, Keys
from helpers import (
    BACKENDS,
    WRAITH,
    EchoServer,
    Proc,
    WraithServer,
    clean_env,
    echo_roundtrip,
    free_port,
    pattern_bytes,
    start_client,
    start_server,
)
from pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_server(backend: str, tmp_path: Path, keys: Keys, pki: Pki) -> WraithServer:
    return start_server(
        backend,
        tmp_path,
        authorized_keys=keys.authorized_keys,
        extra=[
            "--listen",
            "tls://127.0.0.1:0",
            "--tls-cert",
            str(pki.cert),
            "--tls-key",
            str(pki.key),
        ],
        env=clean_env(WRAITH_ENGINE="sansio"),
    )


def tls_port(server: WraithServer) -> int:
    m = server.proc.wait_for(r"listening on tls://127\.0\.0\.1:(\d+)")
    return int(m.group(1))


def connect_once(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WRAITH, "connect", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(WRAITH_ENGINE="sansio"),
    )


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_tunnels_work_inside_tls(
    backend: str, tmp_path: Path, keys: Keys, pki: Pki, echo: EchoServer, http_server: HttpServer
) -> None:
    server = tls_server(backend, tmp_path, keys, pki)
    try:
        port = tls_port(server)
        tls_target = WraithServer(server.proc, port, server.fingerprint)
        # Connect by name, so the SNI is "localhost".
        client = start_client(
            backend,
            tls_target,
            keys.client,
            args=[
                "-D",
                "127.0.0.1:0",
                "-L",
                f"127.0.0.1:0:127.0.0.1:{echo.port}",
                "--tls-ca",
                str(pki.ca),
            ],
            env=clean_env(WRAITH_ENGINE="sansio", WRAITH_TARGET=""),
            target=f"tls://localhost:{port}",
        )
        try:
            payload = pattern_bytes(4 * 1024 * 1024, seed=11)
            assert echo_roundtrip(client.local_ports[0], payload) == payload
            (http_server.root / "t.txt").write_text("inside tls")
            out = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "--max-time",
                    "30",
                    "--socks5-hostname",
                    f"127.0.0.1:{client.socks_port}",
                    f"http://localhost:{http_server.port}/t.txt",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.stdout == "inside tls", out.stderr
        finally:
            client.proc.stop()
    finally:
        server.proc.stop()


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_certificate_problems_are_clear_errors(
    backend: str, tmp_path: Path, keys: Keys, pki: Pki
) -> None:
    server = tls_server(backend, tmp_path, keys, pki)
    common = ["--backend", backend, "-i", str(keys.client), "--host-key-fingerprint"]
    try:
        port = tls_port(server)
        cases = [
            (["--tls-ca", str(pki.other_ca)], f"tls://localhost:{port}", "not trusted"),
            (
                ["--tls-ca", str(pki.ca), "--tls-server-name", "wrong.example"],
                f"tls://127.0.0.1:{port}",
                "wrong.example",
            ),
            ([], f"tls://localhost:{port}", "not trusted"),  # system roots: our CA is not one
        ]
        for extra, target, words in cases:
            out = connect_once(*common, server.fingerprint, *extra, target)
            assert out.returncode == 3, out.stderr
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and words in lines[0], out.stderr
            assert "TLS certificate" in lines[0]
        # The server saw failed handshakes and kept serving.
        assert server.proc.popen.poll() is None
    finally:
        server.proc.stop()


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_ssh_runs_directly_inside_tls_1_2_and_1_3(
    backend: str, version: str, tmp_path: Path, keys: Keys, pki: Pki
) -> None:
    """A plain TLS client (either version) finds the SSH banner right inside TLS."""
    server = tls_server(backend, tmp_path, keys, pki)
    try:
        port = tls_port(server)
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() == version.replace("_", ".")
            assert tls.recv(64).startswith(b"SSH-2.0-Wraith")
        # Not TLS at all: the handshake fails, is logged, and the server keeps serving.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"SSH-2.0-plain\r\n")
            raw.settimeout(10)
            try:
                data = raw.recv(100)
            except ConnectionResetError:
                data = b""
            assert not data.startswith(b"SSH-")
        server.proc.wait_for("TLS handshake failed src=127.0.0.1", stream="stderr")
        assert server.proc.popen.poll() is None
    finally:
        server.proc.stop()


def test_tls_usage_errors(tmp_path: Path, keys: Keys, pki: Pki) -> None:
    def serve(*args: str, engine: str = "sansio") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*WRAITH, "serve", "--state-dir", str(tmp_path / "s"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(WRAITH_ENGINE=engine),
        )

    cases = [
        (serve("--listen", "tls://127.0.0.1:0"), "--tls-cert"),
        (serve("--tls-cert", str(pki.cert), "--tls-key", str(pki.key)), "tls:// listener"),
        (
            serve(
                "--listen",
                "tls://127.0.0.1:0",
                "--tls-cert",
                str(pki.ca),
                "--tls-key",
                str(pki.key),
            ),
            "cannot load",
        ),
        (
            serve(
                "--listen",
                "tls://127.0.0.1:0",
                "--tls-cert",
                str(pki.cert),
                "--tls-key",
                str(pki.key),
                engine="paramiko",
            ),
            "sansio",
        ),
        (connect_once("-i", str(keys.client), "--tls-ca", str(pki.ca), "127.0.0.1:1"), "tls://"),
    ]
    for out, words in cases:
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], out.stderr


def test_connect_line_names_the_tls_url(tmp_path: Path, pki: Pki) -> None:
    proc = Proc(
        [
            *WRAITH,
            "serve",
            "--listen",
            "tls://127.0.0.1:0",
            "--tls-cert",
            str(pki.cert),
            "--tls-key",
            str(pki.key),
            "--state-dir",
            str(tmp_path / "s"),
        ],
        env=clean_env(WRAITH_ENGINE="sansio"),
    )
    try:
        m = proc.wait_for(r"connect with: wraith connect --host-key-fingerprint \S+ (\S+)")
        port = proc.wait_for(r"listening on tls://127\.0\.0\.1:(\d+)").group(1)
        assert m.group(1) == f"tls://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_client_against_a_tls12_only_server(
    backend: str, tmp_path: Path, keys: Keys, pki: Pki, echo: EchoServer
) -> None:
    """``wraith connect tls://`` to a TLS 1.2-only front (stunnel4 with sslVersionMax)
    that passes the connection on to a plain ``wraith serve``."""
    exe = shutil.which("stunnel4") or shutil.which("stunnel")
    assert exe is not None, "stunnel4 is missing: run scripts/test.sh, which installs it"
    server = start_server(backend, tmp_path, authorized_keys=keys.authorized_keys)
    front = free_port()
    log = tmp_path / "stunnel.log"
    conf = tmp_path / "stunnel.conf"
    conf.write_text(
        "\n".join(
            [
                "foreground = yes",
                "pid =",
                f"output = {log}",
                "[wraith]",
                f"accept = 127.0.0.1:{front}",
                f"connect = 127.0.0.1:{server.port}",
                f"cert = {pki.cert}",
                f"key = {pki.key}",
                "sslVersionMax = TLSv1.2",
                "",
            ]
        )
    )
    stunnel = subprocess.Popen([exe, str(conf)], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                break
            except OSError:
                assert stunnel.poll() is None, log.read_text() if log.exists() else ""
                assert time.monotonic() < deadline, "stunnel did not start"
                time.sleep(0.05)
        # The front really offers TLS 1.2 only.
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        with (
            socket.create_connection(("127.0.0.1", front), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as probe,
        ):
            assert probe.version() == "TLSv1.2"
        client = start_client(
            backend,
            WraithServer(server.proc, front, server.fingerprint),
            keys.client,
            args=["-L", f"127.0.0.1:0:127.0.0.1:{echo.port}", "--tls-ca", str(pki.ca)],
            env=clean_env(WRAITH_ENGINE="sansio", WRAITH_TARGET=""),
            target=f"tls://localhost:{front}",
        )
        try:
            payload = pattern_bytes(2 * 1024 * 1024, seed=12)
            assert echo_roundtrip(client.local_ports[0], payload) == payload
        finally:
            client.proc.stop()
    finally:
        stunnel.terminate()
        stunnel.wait(timeout=10)
        server.proc.stop()
