"""``--proxy-protocol`` behind a real front: nginx's stream module sending PROXY v1 and v2.

nginx (Debian's ``nginx-light`` with ``libnginx-mod-stream``) listens on two
loopback ports and passes each connection to ``wraith serve`` with
``proxy_protocol on`` (v1; a second server uses a v2 front we write ourselves,
since nginx only speaks v1).  The client connects from ``127.0.0.2``, so the
address the front reports differs from the front's own (``127.0.0.1``); the
server's log lines, the fail2ban-format auth line and the bans must all show
``127.0.0.2``.  A trusted front that sends a bad header loses only that
connection; an untrusted peer's PROXY header is not believed.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Keys
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
    stop_process,
)

from wraith.proto.proxyproto import build_v2

NGINX_STREAM = """
daemon off;
master_process off;
worker_processes 1;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
stream {{
    server {{
        listen 127.0.0.1:{front};
        proxy_pass 127.0.0.1:{backend};
        proxy_protocol on;
    }}
}}
"""


@dataclass
class Front:
    port: int


def nginx_front(tmp: Path, backend_port: int) -> tuple[subprocess.Popen[bytes], Front]:
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    front = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_STREAM.format(dir=tmp, front=front, backend=backend_port))
    log = tmp / "nginx.stderr"
    with log.open("wb") as err:
        proc = subprocess.Popen([exe, "-c", str(conf), "-p", str(tmp)], stderr=err)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", front), timeout=1).close()
            return proc, Front(front)
        except OSError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)


def serve_behind_front(backend: str, tmp: Path, keys: Keys, port: int) -> Proc:
    proc = Proc(
        [
            *WRAITH,
            "serve",
            "--backend",
            backend,
            "--listen",
            f"tcp://127.0.0.1:{port}",
            "--proxy-protocol",
            "127.0.0.1",
            "--state-dir",
            str(tmp / "server-state"),
            "--authorized-keys",
            str(keys.authorized_keys),
            "--ban-after",
            "2",
            "-v",
        ],
        env=clean_env(),
    )
    proc.wait_for(r"connect with: ")
    return proc


def from_127_0_0_2(port: int) -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    return s


def hung_up(s: socket.socket) -> bool:
    """True if the server closed (FIN or RST) without sending a byte."""
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True


def ssh_attempt(port: int, identity: Path, fingerprint: str) -> subprocess.CompletedProcess[str]:
    """OpenSSH's client from 127.0.0.2 (BindAddress), through the front."""
    return subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BindAddress=127.0.0.2",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            str(identity),
            "-p",
            str(port),
            "-N",
            "-o",
            "ConnectTimeout=20",
            "-W",
            "127.0.0.1:9",
            "someone@127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_nginx_front_real_client_address(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    port = free_port()
    server = serve_behind_front(backend, tmp_path, keys, port)
    nginx, front = nginx_front(tmp_path, port)
    try:
        fp = re.search(r"(SHA256:\S+)", "\n".join(server.stdout))
        assert fp is not None
        # A tunnel through the front works.
        client = start_client(
            backend,
            WraithServer(server, front.port, fp.group(1)),
            keys.client,
            args=["-L", f"127.0.0.1:0:127.0.0.1:{echo.port}"],
        )
        try:
            payload = pattern_bytes(1024 * 1024, seed=3)
            assert echo_roundtrip(client.local_ports[0], payload) == payload
        finally:
            client.proc.stop()
        server.wait_for(
            r"auth result=success method=publickey .* src=127\.0\.0\.1 ", stream="stderr"
        )

        # Failures from 127.0.0.2 are logged with that address and ban it, not the front.
        for _ in range(2):
            out = ssh_attempt(front.port, keys.other, fp.group(1))
            assert out.returncode != 0
        server.wait_for(
            r"auth result=failure method=publickey .* src=127\.0\.0\.2 port=\d+", stream="stderr"
        )
        server.wait_for(r"ban src=127\.0\.0\.2 failures=2", stream="stderr")
        with from_127_0_0_2(front.port) as s:
            # Banned: closed before any banner.
            assert hung_up(s)
        # The front's own address (127.0.0.1) is not banned: a real client still gets in.
        with socket.create_connection(("127.0.0.1", front.port), timeout=30) as s:
            assert s.recv(100).startswith(b"SSH-2.0-")
        log = "\n".join(server.stderr)
        assert "src=127.0.0.2" in log
    finally:
        stop_process(nginx)
        server.stop()


def _v2_front(
    listen: socket.socket, backend_port: int, source: tuple[str, int], opened: list[socket.socket]
) -> None:
    """A minimal PROXY v2 front (nginx only sends v1): header, then both ways."""
    while True:
        try:
            conn, _ = listen.accept()
        except OSError:
            return
        up = socket.create_connection(("127.0.0.1", backend_port))
        opened += [conn, up]
        up.sendall(build_v2(source, ("::1", backend_port)))

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
        threading.Thread(target=pipe, args=(up, conn), daemon=True).start()


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_v2_header_bad_headers_and_untrusted_peers(
    backend: str, tmp_path: Path, keys: Keys
) -> None:
    port = free_port()
    server = serve_behind_front(backend, tmp_path, keys, port)
    listen = socket.create_server(("127.0.0.1", 0))
    opened: list[socket.socket] = []
    try:
        # PROXY v2 (here from a small front of our own: nginx only speaks v1).
        threading.Thread(
            target=_v2_front,
            args=(listen, port, ("2001:db8::7", 4242), opened),
            daemon=True,
        ).start()
        with socket.create_connection(("127.0.0.1", listen.getsockname()[1]), timeout=30) as s:
            assert s.recv(100).startswith(b"SSH-2.0-")
        server.wait_for(r"connection from src=2001:db8::7 port=4242", stream="stderr")

        # A trusted front with a bad header loses that connection only.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"PROXY TCP4 1.2.3.999 127.0.0.1 1 2\r\n")
            assert hung_up(s)
        server.wait_for(r"bad PROXY header from front src=127\.0\.0\.1 port=\d+: ", stream="stderr")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")  # no header at all from the front
            assert hung_up(s)
        # An untrusted peer (127.0.0.2) is not believed: its "header" is just bad SSH.
        with from_127_0_0_2(port) as s:
            s.sendall(b"PROXY TCP4 198.51.100.1 127.0.0.1 1 2\r\n")
            s.recv(100)
        time.sleep(0.5)
        assert "198.51.100.1" not in "\n".join(server.stderr)
        # Still serving.
        with socket.create_connection(("127.0.0.1", listen.getsockname()[1]), timeout=30) as s:
            assert s.recv(100).startswith(b"SSH-2.0-")
    finally:
        listen.close()
        server.stop()
        for sock in opened:
            sock.close()


def test_proxy_protocol_flag_is_checked(tmp_path: Path) -> None:
    out = subprocess.run(
        [*WRAITH, "serve", "--state-dir", str(tmp_path), "--proxy-protocol", "10.0.0.1/8"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert out.returncode == 2
    assert "--proxy-protocol:" in out.stderr
