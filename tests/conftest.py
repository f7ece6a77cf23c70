from __future__ import annotations

import getpass
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from helpers import (
    BACKENDS,
    CURRENT,
    ENGINES,
    EchoServer,
    Proc,
    WraithServer,
    free_port,
    ssh_keygen,
    start_server,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "backend" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(params=[(b, e) for e in ENGINES for b in BACKENDS], ids=lambda p: f"{p[0]}-{p[1]}")
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every integration test runs on each backend, with each SSH engine."""
    backend_name, engine = request.param
    CURRENT.engine = engine
    try:
        yield str(backend_name)
    finally:
        CURRENT.engine = "sansio"


@pytest.fixture
def engine(backend: str) -> str:
    return CURRENT.engine


@dataclass
class Keys:
    dir: Path
    client: Path  # Ed25519 private key; .pub beside it
    authorized_keys: Path
    rsa: Path
    other: Path  # an Ed25519 key that is NOT authorized


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    if shutil.which("ssh-keygen") is None:
        pytest.fail("ssh-keygen is missing: run scripts/test.sh, which installs openssh-client")
    d = tmp_path_factory.mktemp("keys")
    client = d / "id_ed25519"
    ssh_keygen("-t", "ed25519", "-N", "", "-C", "test-client", "-f", str(client))
    rsa = d / "id_rsa"
    ssh_keygen("-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa))
    other = d / "id_other"
    ssh_keygen("-t", "ed25519", "-N", "", "-f", str(other))
    ak = d / "authorized_keys"
    ak.write_text(
        (d / "id_ed25519.pub").read_text() + (d / "id_rsa.pub").read_text(), encoding="ascii"
    )
    for p in d.iterdir():
        if not p.name.endswith(".pub") and p.name != "authorized_keys":
            p.chmod(0o600)
    return Keys(dir=d, client=client, authorized_keys=ak, rsa=rsa, other=other)


@pytest.fixture
def wraith_server(backend: str, tmp_path: Path, keys: Keys) -> Iterator[WraithServer]:
    server = start_server(backend, tmp_path, authorized_keys=keys.authorized_keys)
    try:
        yield server
    finally:
        server.proc.stop()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


@dataclass
class HttpServer:
    port: int
    root: Path


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield HttpServer(port=int(httpd.server_address[1]), root=root)
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass
class Sshd:
    port: int
    fingerprint: str
    host_pub: Path
    user: str
    proc: Proc
    log: Path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[Sshd]:
    """A stock OpenSSH sshd on 127.0.0.1 with our test key authorized."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(binary):
        pytest.fail("sshd is missing: run scripts/test.sh, which installs openssh-server")
    d = tmp_path_factory.mktemp("sshd")
    host_key = d / "ssh_host_ed25519_key"
    ssh_keygen("-t", "ed25519", "-N", "", "-f", str(host_key))
    os.makedirs("/run/sshd", exist_ok=True)
    port = free_port()
    user = getpass.getuser()
    log = d / "sshd.log"
    config = d / "sshd_config"
    config.write_text(
        f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
AuthorizedKeysFile {keys.authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
GatewayPorts no
PidFile {d}/sshd.pid
LogLevel VERBOSE
Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr
""",
        encoding="ascii",
    )
    keys.authorized_keys.chmod(0o600)
    subprocess.run([binary, "-t", "-f", str(config)], check=True)
    proc = Proc([binary, "-D", "-e", "-f", str(config), "-E", str(log)])
    # Wait until it accepts connections.
    import socket
    import time

    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.popen.poll() is not None:
                raise AssertionError("sshd did not start\n" + proc.output()) from None
            time.sleep(0.1)
    fp = subprocess.run(
        ["ssh-keygen", "-lf", f"{host_key}.pub"], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    try:
        yield Sshd(
            port=port,
            fingerprint=fp,
            host_pub=Path(f"{host_key}.pub"),
            user=user,
            proc=proc,
            log=log,
        )
    finally:
        proc.stop()
