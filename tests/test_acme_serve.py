"""``wraith serve --acme-domain`` end to end against a real Pebble, on both backends.

Pebble (Debian's ``pebble``, with ``pebble-challtestsrv`` answering DNS) runs on
loopback with a test CA made in :mod:`pebble`; validation is real.  The server
listens on the port Pebble's validator dials, so the TLS-ALPN-01 challenge is
answered by the very ``tls://`` listener that carries SSH, before any
certificate exists.  Then a ``wraith connect`` that trusts only Pebble's root
tunnels through it, by name (SNI) and by IP address (no SNI: the IP
certificate); ``--acme-renew-at`` forces a renewal that swaps the certificate
under an open tunnel; HTTP-01 is answered on an ``http://`` listener that
redirects everything else to https.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Keys
from cryptography import x509
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
)
from pebble import Pebble, run_pebble


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with run_pebble(tmp_path_factory.mktemp("pebble"), validity=300) as p:
        yield p


def acme_server(
    backend: str, tmp: Path, keys: Keys, pebble: Pebble, listen: list[str], *extra: str
) -> Proc:
    args = [
        *WRAITH,
        "serve",
        "--backend",
        backend,
        "--acme-directory",
        pebble.directory,
        "--acme-ca",
        str(pebble.ca_file),
        "--acme-email",
        "ops@wraith.test",
        "--state-dir",
        str(tmp / "server-state"),
        "--authorized-keys",
        str(keys.authorized_keys),
        "-v",
        *extra,
    ]
    for url in listen:
        args += ["--listen", url]
    proc = Proc(args, env=clean_env())
    proc.wait_for(r"connect with: ")
    return proc


def served_cert(port: int, root: Path, server_name: str | None) -> x509.Certificate:
    """Handshake as a client that trusts only Pebble's root (so the chain must be served)."""
    ctx = ssl.create_default_context(cafile=str(root))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name or "127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)


def fingerprint(proc: Proc) -> str:
    m = re.search(r"(SHA256:\S+)", "\n".join(proc.stdout))
    assert m is not None
    return m.group(1)


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_tls_alpn01_issuance_tunnels_and_renewal(
    backend: str, tmp_path: Path, keys: Keys, pebble: Pebble, echo: EchoServer
) -> None:
    port = pebble.tls_port
    server = acme_server(
        backend,
        tmp_path,
        keys,
        pebble,
        [f"tls://127.0.0.1:{port}"],
        "--acme-domain",
        "wraith.test",
        "--acme-domain",
        "127.0.0.1",
        "--acme-renew-at",
        "0.99",  # Pebble's certificates live 300 s here: renew about 3 s after issuance
    )
    try:
        for name in ("wraith.test", "127.0.0.1"):
            server.wait_for(
                rf"ACME: new certificate for {re.escape(name)} in service", stream="stderr"
            )
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(pebble.root_pem())
        by_name = served_cert(port, root, "wraith.test")
        assert by_name.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName) == ["wraith.test"]
        by_ip = served_cert(port, root, None)  # no SNI: the certificate for the IP
        assert [
            str(a)
            for a in by_ip.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.IPAddress)
        ] == ["127.0.0.1"]

        # A client that trusts only Pebble's root tunnels through it, by name and by IP.
        target = WraithServer(server, port, fingerprint(server))
        by_sni = start_client(
            backend,
            target,
            keys.client,
            args=[
                "-L",
                f"127.0.0.1:0:127.0.0.1:{echo.port}",
                "--tls-ca",
                str(root),
                "--tls-server-name",
                "wraith.test",
            ],
            env=clean_env(WRAITH_TARGET=""),
            target=f"tls://127.0.0.1:{port}",
        )
        try:
            before = served_cert(port, root, "wraith.test").serial_number
            with socket.create_connection(
                ("127.0.0.1", by_sni.local_ports[0]), timeout=30
            ) as open_tunnel:
                open_tunnel.sendall(b"before the renewal")
                assert open_tunnel.recv(100) == b"before the renewal"
                # The forced renewal: a new certificate is served...
                server.wait_for(
                    r"ACME: new certificate for wraith\.test in service", stream="stderr"
                )
                deadline = time.monotonic() + 60
                while served_cert(port, root, "wraith.test").serial_number == before:
                    assert time.monotonic() < deadline, "no renewal within 60 s"
                    time.sleep(0.5)
                # ...while the open tunnel (over the old one) keeps working.
                open_tunnel.sendall(b"after the renewal")
                assert open_tunnel.recv(100) == b"after the renewal"
            payload = pattern_bytes(1024 * 1024, seed=8)
            assert echo_roundtrip(by_sni.local_ports[0], payload) == payload
        finally:
            by_sni.proc.stop()
        by_address = start_client(
            backend,
            target,
            keys.client,
            args=["-L", f"127.0.0.1:0:127.0.0.1:{echo.port}", "--tls-ca", str(root)],
            env=clean_env(WRAITH_TARGET=""),
            target=f"tls://127.0.0.1:{port}",
        )
        try:
            assert echo_roundtrip(by_address.local_ports[0], b"by ip") == b"by ip"
        finally:
            by_address.proc.stop()
        # Stored with restrictive permissions in the state directory.
        acme_dir = tmp_path / "server-state" / "acme"
        files = [p for p in acme_dir.rglob("*") if p.is_file()]
        assert files, "nothing stored"
        for f in files:
            assert f.stat().st_mode & 0o077 == 0, f
        # No key authorization or token reaches the log.
        assert "acme-challenge" not in "\n".join(server.stderr)
    finally:
        server.stop()


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_http01_on_an_http_listener(
    backend: str, tmp_path: Path, keys: Keys, pebble: Pebble
) -> None:
    tls_port = free_port()
    server = acme_server(
        backend,
        tmp_path,
        keys,
        pebble,
        [f"tls://127.0.0.1:{tls_port}", f"http://127.0.0.1:{pebble.http_port}"],
        "--acme-domain",
        "http01.wraith.test",
    )
    try:
        server.wait_for(
            r"ACME: new certificate for http01\.wraith\.test in service", stream="stderr"
        )
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(pebble.root_pem())
        cert = served_cert(tls_port, root, "http01.wraith.test")
        assert cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName) == ["http01.wraith.test"]
        # Everything but a challenge is redirected to https.
        raw = subprocess.run(
            [
                "curl",
                "-sS",
                "-i",
                "--max-time",
                "20",
                "-H",
                "Host: http01.wraith.test",
                f"http://127.0.0.1:{pebble.http_port}/some/page?x=1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert raw.stdout.startswith("HTTP/1.1 301 "), raw.stdout + raw.stderr
        assert "Location: https://http01.wraith.test/some/page?x=1" in raw.stdout
        with pytest.raises(urllib.error.HTTPError) as unknown:
            urllib.request.urlopen(
                f"http://127.0.0.1:{pebble.http_port}/.well-known/acme-challenge/nope", timeout=20
            )
        assert unknown.value.code == 404
        unknown.value.close()
    finally:
        server.stop()


def test_acme_options_are_checked(tmp_path: Path) -> None:
    cases = [
        (["--acme-domain", "vpn.example.org"], "--acme-domain needs a tls:// listener"),
        (
            ["--listen", "tls://127.0.0.1:0", "--acme-domain", "*.example.org"],
            "wildcard",
        ),
        (
            ["--listen", "http://127.0.0.1:0"],
            "an http:// listener only answers ACME HTTP-01 challenges",
        ),
        (
            [
                "--listen",
                "tls://127.0.0.1:0",
                "--acme-domain",
                "vpn.example.org",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
            ],
            "alternatives",
        ),
    ]
    for args, message in cases:
        out = subprocess.run(
            [*WRAITH, "serve", "--state-dir", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
        )
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr, (args, out.stderr)
