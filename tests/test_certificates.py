"""OpenSSH user certificates against a real ``wraith serve``, on both backends.

Certificates are made with ``ssh-keygen -s``; the user key itself is never in
authorized_keys, so only the CA can let it in.  A refusal must make ``wraith connect``
exit 4 and leave one ``auth result=failure`` line naming the precise reason.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from conftest import Keys
from helpers import (
    EchoServer,
    WraithServer,
    echo_roundtrip,
    fingerprint_of,
    free_port,
    pattern_bytes,
    ssh_keygen,
    start_client,
    start_server,
)


@dataclass
class Ca:
    key: Path  # private; .pub beside it
    pub: Path


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ca, Ca]:
    """The trusted CA and a second, untrusted one."""
    d = tmp_path_factory.mktemp("ca")
    out = []
    for name in ("ca", "other_ca"):
        key = d / name
        ssh_keygen("-t", "ed25519", "-N", "", "-C", name, "-f", str(key))
        key.chmod(0o600)
        out.append(Ca(key=key, pub=Path(f"{key}.pub")))
    return out[0], out[1]


def make_cert(
    workdir: Path,
    ca: Ca,
    *,
    principals: str = "alice",
    validity: str = "-5m:+1h",
    options: tuple[str, ...] = (),
    host: bool = False,
    name: str = "user",
) -> tuple[Path, Path]:
    """A fresh Ed25519 key in ``workdir`` and its certificate: ``(key, key-cert.pub)``."""
    key = workdir / name
    ssh_keygen("-t", "ed25519", "-N", "", "-C", name, "-f", str(key))
    key.chmod(0o600)
    args = ["-s", str(ca.key), "-I", f"{name}-id", "-n", principals, "-V", validity]
    for opt in options:
        args += ["-O", opt]
    if host:
        args.append("-h")
    ssh_keygen(*args, f"{key}.pub")
    cert = workdir / f"{name}-cert.pub"
    assert cert.exists()
    return key, cert


def start_ca_server(
    backend: str, workdir: Path, keys: Keys, ca: Ca | None, *, authorized_keys: Path | None = None
) -> WraithServer:
    # keys.authorized_keys lists other keys, never the certificate's own key.
    extra = ["--cert-authority", str(ca.pub)] if ca is not None else []
    return start_server(
        backend, workdir, authorized_keys=authorized_keys or keys.authorized_keys, extra=extra
    )


def cert_args(cert: Path, user: str, local_port: int, echo_port: int) -> list[str]:
    return [
        "--certificate",
        str(cert),
        "-l",
        user,
        "-L",
        f"127.0.0.1:{local_port}:127.0.0.1:{echo_port}",
    ]


def assert_cert_accepted(
    backend: str, server: WraithServer, key: Path, cert: Path, echo: EchoServer, user: str
) -> None:
    port = free_port()
    client = start_client(backend, server, key, args=cert_args(cert, user, port, echo.port))
    try:
        assert client.local_ports == [port]
        payload = pattern_bytes(256 * 1024, seed=3)
        assert echo_roundtrip(port, payload, timeout=60) == payload
        fp = re.escape(fingerprint_of(Path(f"{key}.pub")))
        server.proc.wait_for(
            rf'auth result=success method=publickey user="{user}" src=127\.0\.0\.1 '
            rf"port=\d+ fingerprint={fp} reason=ok",
            stream="stderr",
            timeout=10,
        )
    finally:
        client.proc.stop()


def assert_cert_refused(
    backend: str,
    server: WraithServer,
    key: Path,
    cert: Path,
    echo: EchoServer,
    user: str,
    reason: str,
) -> None:
    port = free_port()
    since = len(server.proc.stderr)
    accepted = echo.accepted
    client = start_client(
        backend, server, key, args=cert_args(cert, user, port, echo.port), ready=False
    )
    try:
        code = client.proc.wait(60)
    finally:
        client.proc.stop()
    assert code == 4, client.proc.output()
    assert any("authentication" in line.lower() for line in client.proc.stderr), (
        client.proc.output()
    )
    assert not any("listening" in line for line in client.proc.stdout), client.proc.output()
    fp = re.escape(fingerprint_of(Path(f"{key}.pub")))
    server.proc.wait_for(
        rf'auth result=failure method=publickey user="{user}" src=127\.0\.0\.1 '
        rf"port=\d+ fingerprint={fp} reason={re.escape(reason)}$",
        stream="stderr",
        timeout=10,
    )
    assert not any("auth result=success" in line for line in server.proc.stderr[since:]), (
        server.proc.output()
    )
    assert echo.accepted == accepted


def test_valid_certificate_is_accepted(
    backend: str, tmp_path: Path, keys: Keys, cas: tuple[Ca, Ca], echo: EchoServer
) -> None:
    ca, _ = cas
    key, cert = make_cert(tmp_path, ca, principals="alice,carol")
    server = start_ca_server(backend, tmp_path, keys, ca)
    try:
        assert_cert_accepted(backend, server, key, cert, echo, "alice")
    finally:
        server.proc.stop()


@pytest.mark.parametrize(
    ("principals", "validity", "options", "user", "reason"),
    [
        pytest.param("alice", "20200101:20200102", (), "alice", "cert-expired", id="expired"),
        pytest.param("alice", "+1d:+2d", (), "alice", "cert-not-yet-valid", id="not-yet-valid"),
        pytest.param("bob", "-5m:+1h", (), "alice", "cert-wrong-principal", id="wrong-principal"),
        pytest.param(
            "alice",
            "-5m:+1h",
            ("source-address=10.0.0.0/8",),
            "alice",
            "cert-source-address",
            id="source-address-outside",
        ),
        pytest.param(
            "alice",
            "-5m:+1h",
            ("no-port-forwarding",),
            "alice",
            "cert-no-port-forwarding",
            id="no-port-forwarding",
        ),
        pytest.param(
            "alice",
            "-5m:+1h",
            ("verify-required",),
            "alice",
            "cert-verify-required",
            id="verify-required",
        ),
        pytest.param(
            "alice",
            "-5m:+1h",
            ("critical:foo@example.com=bar",),
            "alice",
            "cert-unknown-critical-option",
            id="unknown-critical-option",
        ),
    ],
)
def test_certificate_refused(
    backend: str,
    tmp_path: Path,
    keys: Keys,
    cas: tuple[Ca, Ca],
    echo: EchoServer,
    principals: str,
    validity: str,
    options: tuple[str, ...],
    user: str,
    reason: str,
) -> None:
    ca, _ = cas
    key, cert = make_cert(tmp_path, ca, principals=principals, validity=validity, options=options)
    server = start_ca_server(backend, tmp_path, keys, ca)
    try:
        assert_cert_refused(backend, server, key, cert, echo, user, reason)
    finally:
        server.proc.stop()


def test_certificate_from_another_ca_refused(
    backend: str, tmp_path: Path, keys: Keys, cas: tuple[Ca, Ca], echo: EchoServer
) -> None:
    ca, other_ca = cas
    key, cert = make_cert(tmp_path, other_ca)
    server = start_ca_server(backend, tmp_path, keys, ca)
    try:
        assert_cert_refused(backend, server, key, cert, echo, "alice", "cert-untrusted-ca")
    finally:
        server.proc.stop()


def test_source_address_inside_is_accepted(
    backend: str, tmp_path: Path, keys: Keys, cas: tuple[Ca, Ca], echo: EchoServer
) -> None:
    ca, _ = cas
    key, cert = make_cert(tmp_path, ca, options=("source-address=127.0.0.0/8",))
    server = start_ca_server(backend, tmp_path, keys, ca)
    try:
        assert_cert_accepted(backend, server, key, cert, echo, "alice")
    finally:
        server.proc.stop()


def test_host_certificate_refused(
    backend: str, tmp_path: Path, keys: Keys, cas: tuple[Ca, Ca], echo: EchoServer
) -> None:
    ca, _ = cas
    key, cert = make_cert(tmp_path, ca, host=True)
    server = start_ca_server(backend, tmp_path, keys, ca)
    try:
        # wraith connect will not even load it: a clear usage error, nothing sent.
        client = start_client(
            backend,
            server,
            key,
            args=cert_args(cert, "alice", free_port(), echo.port),
            ready=False,
        )
        try:
            code = client.proc.wait(60)
        finally:
            client.proc.stop()
        assert code == 2, client.proc.output()
        assert any("host certificate" in line for line in client.proc.stderr), client.proc.output()
        assert not any("connection from" in line for line in server.proc.stderr)

        # A client that does send it (paramiko does not look at the type) is refused
        # by the server itself.
        pkey = paramiko.Ed25519Key.from_private_key_file(str(key))
        pkey.load_certificate(str(cert))
        with paramiko.Transport(("127.0.0.1", server.port)) as t:
            t.start_client(timeout=30)
            with pytest.raises(paramiko.AuthenticationException):
                t.auth_publickey("alice", pkey)
        fp = re.escape(fingerprint_of(Path(f"{key}.pub")))
        server.proc.wait_for(
            rf'auth result=failure method=publickey user="alice" .* fingerprint={fp} '
            r"reason=cert-not-user$",
            stream="stderr",
            timeout=10,
        )
        assert not any("auth result=success" in line for line in server.proc.stderr)
    finally:
        server.proc.stop()


def test_cert_authority_line_in_authorized_keys(
    backend: str, tmp_path: Path, keys: Keys, cas: tuple[Ca, Ca], echo: EchoServer
) -> None:
    ca, _ = cas
    ak = tmp_path / "authorized_keys"
    ak.write_text(
        keys.authorized_keys.read_text()
        + 'cert-authority,principals="alice" '
        + ca.pub.read_text(),
        encoding="ascii",
    )
    key, cert = make_cert(tmp_path, ca, principals="alice,bob")
    server = start_ca_server(backend, tmp_path, keys, None, authorized_keys=ak)
    try:
        assert_cert_accepted(backend, server, key, cert, echo, "alice")
        # principals="alice" on the CA line limits the user names, as documented.
        assert_cert_refused(backend, server, key, cert, echo, "bob", "cert-wrong-principal")
    finally:
        server.proc.stop()


def test_cert_authority_line_refuses_other_ca(
    backend: str, tmp_path: Path, keys: Keys, cas: tuple[Ca, Ca], echo: EchoServer
) -> None:
    ca, other_ca = cas
    ak = tmp_path / "authorized_keys"
    ak.write_text('cert-authority,principals="alice" ' + ca.pub.read_text(), encoding="ascii")
    key, cert = make_cert(tmp_path, other_ca)
    server = start_ca_server(backend, tmp_path, keys, None, authorized_keys=ak)
    try:
        assert_cert_refused(backend, server, key, cert, echo, "alice", "cert-untrusted-ca")
    finally:
        server.proc.stop()


def test_openssh_client_with_certificate(
    backend: str, tmp_path: Path, keys: Keys, cas: tuple[Ca, Ca], echo: EchoServer
) -> None:
    ca, _ = cas
    key, cert = make_cert(tmp_path, ca)
    server = start_ca_server(backend, tmp_path, keys, ca)
    try:
        host_pub = (tmp_path / "server-state" / "host_ed25519_key.pub").read_text().split()
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(
            f"[127.0.0.1]:{server.port} {host_pub[0]} {host_pub[1]}\n", encoding="ascii"
        )
        payload = pattern_bytes(128 * 1024, seed=5)
        out = subprocess.run(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-i",
                str(key),
                "-o",
                f"CertificateFile={cert}",
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
                str(server.port),
                "-l",
                "alice",
                "-W",
                f"127.0.0.1:{echo.port}",
                "127.0.0.1",
            ],
            input=payload,
            capture_output=True,
            timeout=90,
        )
        assert out.returncode == 0, out.stderr.decode(errors="replace") + server.proc.output()
        assert out.stdout == payload
        fp = re.escape(fingerprint_of(Path(f"{key}.pub")))
        server.proc.wait_for(
            rf'auth result=success method=publickey user="alice" .* fingerprint={fp} reason=ok',
            stream="stderr",
            timeout=10,
        )
    finally:
        server.proc.stop()
