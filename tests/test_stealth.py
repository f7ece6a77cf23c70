"""Stealth mode with real processes: probers get the decoy's own bytes, Wraith clients a tunnel.

The decoy is a real nginx (Debian's ``nginx-light``) on loopback, with short
header and keep-alive timeouts so that silent and slow probes end quickly.  Each
probe is sent twice, at once: inside TLS to ``wraith serve --stealth --decoy
http://nginx`` and in clear straight to nginx.  The two answers must be the same
(status line, headers, body; only ``Date`` may differ), both must end the same
way (closed by the server, or still open), and no answer may contain ``SSH-``.
The right secret path gives a working tunnel; a wrong one is a clear error.
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
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
from pki import Pki
from test_tls import connect_once, pki  # noqa: F401  (pki is a fixture)

#: nginx's timeouts in these tests: a silent or stalled client is dropped after this.
DECOY_TIMEOUT = 2
#: How long a probe waits for more bytes before it calls the connection "open".
QUIET = DECOY_TIMEOUT + 3

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_header_timeout {timeout}s;
    keepalive_timeout {timeout}s;
    types {{ text/html html; text/css css; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {dir}/www;
    }}
}}
"""


@dataclass
class Nginx:
    port: int
    #: The same site over TLS (TLS 1.3: session tickets right after the handshake).
    tls_port: int
    root: Path


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Nginx]:  # noqa: F811
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    d = tmp_path_factory.mktemp("nginx")
    (d / "www").mkdir()
    (d / "www" / "index.html").write_text("<html><body><h1>Acme Widgets</h1></body></html>\n")
    (d / "www" / "site.css").write_text("body { color: #123; }\n")
    port, tls_port = free_port(), free_port()
    conf = d / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            dir=d,
            port=port,
            tls_port=tls_port,
            cert=pki.cert,
            key=pki.key,
            timeout=DECOY_TIMEOUT,
        )
    )
    log = (d / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [exe, "-c", str(conf), "-p", str(d)], stdout=subprocess.DEVNULL, stderr=log
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (d / "stderr.log").read_text()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        for p in (port, tls_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", p), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "nginx did not start"
                    time.sleep(0.05)
        yield Nginx(port=port, tls_port=tls_port, root=d / "www")
    finally:
        stop_process(proc)
        log.close()


@dataclass
class Stealthy:
    server: WraithServer
    port: int
    path: str


def stealth_server(backend: str, tmp_path: Path, keys: Keys, certs: Pki, decoy: str) -> Stealthy:
    proc = Proc(
        [
            *WRAITH,
            "serve",
            "--backend",
            backend,
            "--listen",
            "tls://127.0.0.1:0",
            "--tls-cert",
            str(certs.cert),
            "--tls-key",
            str(certs.key),
            "--stealth",
            "--decoy",
            decoy,
            "--state-dir",
            str(tmp_path / "server-state"),
            "--authorized-keys",
            str(keys.authorized_keys),
            # The probes run at once: more than the default 10 pre-auth connections.
            "--max-unauth-per-source",
            "50",
            "-v",
        ],
        env=clean_env(),
    )
    m = proc.wait_for(
        r"connect with: wraith connect --host-key-fingerprint (\S+) "
        r"--stealth-path (\S+) tls://127\.0\.0\.1:(\d+)$"
    )
    port = int(m.group(3))
    return Stealthy(WraithServer(proc, port, m.group(1)), port, m.group(2))


@dataclass
class Answer:
    data: bytes
    #: True if the server closed the connection; False if it was still open after QUIET s.
    closed: bool


def _exchange(sock: socket.socket, chunks: list[bytes], gap: float) -> Answer:
    got = bytearray()
    for i, chunk in enumerate(chunks):
        if i and gap:
            time.sleep(gap)
        try:
            sock.sendall(chunk)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
            return Answer(bytes(got), True)
    sock.settimeout(QUIET)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return Answer(bytes(got), True)
            got += data
    except TimeoutError:
        return Answer(bytes(got), False)
    except (ConnectionResetError, ssl.SSLEOFError):
        return Answer(bytes(got), True)


def probe_direct(port: int, chunks: list[bytes], gap: float = 0) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        return _exchange(sock, chunks, gap)


def probe_tls(port: int, ca: Path, chunks: list[bytes], gap: float = 0, delay: float = 0) -> Answer:
    """As :func:`probe_stealth`; ``delay`` s of silence after the handshake first."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        time.sleep(delay)
        return _exchange(sock, chunks, gap)


def probe_stealth(port: int, ca: Path, chunks: list[bytes], gap: float = 0) -> Answer:
    ctx = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        return _exchange(sock, chunks, gap)


def normalize(data: bytes) -> bytes:
    """The answer without its Date header (the only thing that may differ)."""
    return re.sub(rb"\r\nDate: [^\r\n]*", b"", data)


def probes(secret: str) -> dict[str, tuple[list[bytes], float]]:
    rng = random.Random(7)
    wrong = "/" + "A" * (len(secret) - 1)
    near = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    return {
        "index": ([b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"], 0),
        "keep-alive": ([b"GET /site.css HTTP/1.1\r\nHost: localhost\r\n\r\n"], 0),
        "wrong path": ([f"GET {wrong} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()], 0),
        "near miss": ([f"GET {near} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()], 0),
        "secret without upgrade": (
            [f"GET {secret} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()],
            0,
        ),
        "http/1.0": ([b"GET / HTTP/1.0\r\n\r\n"], 0),
        "post": ([b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc"], 0),
        "ssh banner": ([b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"], 0),
        "random bytes": ([bytes(rng.randrange(256) for _ in range(300))], 0),
        "silent": ([], 0),
        "slow drip": ([bytes([b]) for b in b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"], 0.05),
        "stalled request": ([b"GET / HTTP/1.1\r\nHost: loc"], 0),
    }


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_probes_get_exactly_the_decoy(
    backend: str,
    tmp_path: Path,
    keys: Keys,
    pki: Pki,  # noqa: F811
    nginx: Nginx,
    echo: EchoServer,
) -> None:
    st = stealth_server(backend, tmp_path, keys, pki, f"http://127.0.0.1:{nginx.port}")
    try:
        results: dict[str, tuple[Answer, Answer]] = {}
        errors: list[BaseException] = []

        def run(name: str, chunks: list[bytes], gap: float) -> None:
            try:
                pair: list[Answer] = []
                both = [
                    threading.Thread(
                        target=lambda: pair.append(probe_direct(nginx.port, chunks, gap))
                    ),
                ]
                both[0].start()
                mine = probe_stealth(st.port, pki.ca, chunks, gap)
                both[0].join(60)
                results[name] = (pair[0], mine)
            except BaseException as exc:
                errors.append(AssertionError(f"probe {name!r}: {exc!r}"))

        threads = [
            threading.Thread(target=run, args=(name, chunks, gap))
            for name, (chunks, gap) in probes(st.path).items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not errors, errors
        assert len(results) == len(probes(st.path))
        for name, (direct, stealthy) in results.items():
            assert b"SSH-" not in stealthy.data, name
            assert normalize(stealthy.data) == normalize(direct.data), (
                name,
                direct.data[:300],
                stealthy.data[:300],
            )
            assert stealthy.closed == direct.closed, (name, direct, stealthy)
        # The probes did reach nginx and got real pages, errors and timeouts.
        assert results["index"][0].data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Acme Widgets" in results["index"][0].data
        assert results["wrong path"][0].data.startswith(b"HTTP/1.1 404 ")
        assert results["ssh banner"][0].data.startswith(b"HTTP/1.1 400 ")
        assert results["silent"][0] == Answer(b"", True)  # nginx's header timeout
        assert results["keep-alive"][0].closed  # nginx's keep-alive timeout

        # The right secret path: a working tunnel.
        client = start_client(
            backend,
            st.server,
            keys.client,
            args=[
                "-L",
                f"127.0.0.1:0:127.0.0.1:{echo.port}",
                "--tls-ca",
                str(pki.ca),
                "--stealth-path",
                st.path,
            ],
            env=clean_env(WRAITH_TARGET=""),
            target=f"tls://localhost:{st.port}",
        )
        try:
            payload = pattern_bytes(2 * 1024 * 1024, seed=5)
            assert echo_roundtrip(client.local_ports[0], payload) == payload
        finally:
            client.proc.stop()
        # No log line names the secret path.
        assert st.path not in "\n".join(st.server.proc.stderr)
    finally:
        st.server.proc.stop()


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wrong_stealth_path_is_a_clear_error(
    backend: str,
    tmp_path: Path,
    keys: Keys,
    pki: Pki,  # noqa: F811
    nginx: Nginx,
) -> None:
    st = stealth_server(backend, tmp_path, keys, pki, f"http://127.0.0.1:{nginx.port}")
    try:
        wrong = "/" + "x" * 24

        def connect(*extra: str) -> subprocess.CompletedProcess[str]:
            return connect_once(
                *("--backend", backend, "-i", str(keys.client)),
                *("--host-key-fingerprint", st.server.fingerprint, "--tls-ca", str(pki.ca)),
                *extra,
                "--no-reconnect",
                f"tls://localhost:{st.port}",
            )

        out = connect("--stealth-path", wrong)
        assert out.returncode == 3, out.stderr
        assert "stealth upgrade refused" in out.stderr
        assert "404" in out.stderr and "--stealth-path" in out.stderr
        # Without --stealth-path the client hears HTTP, not SSH: also a clear error.
        out = connect()
        assert out.returncode == 3, out.stderr
    finally:
        st.server.proc.stop()


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_decoy_directory_and_built_in_page(
    backend: str,
    tmp_path: Path,
    keys: Keys,
    pki: Pki,  # noqa: F811
) -> None:
    site = tmp_path / "site"
    (site / "docs").mkdir(parents=True)
    (site / "index.html").write_text("<h1>My Blog</h1>\n")
    (site / "docs" / "a.txt").write_text("hello\n")
    (tmp_path / "secret.txt").write_text("outside the site\n")
    st = stealth_server(backend, tmp_path, keys, pki, str(site))
    try:
        ca = pki.ca
        index = probe_stealth(
            st.port, ca, [b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
        )
        assert index.data.startswith(b"HTTP/1.1 200 OK\r\n") and index.closed
        assert index.data.endswith(b"<h1>My Blog</h1>\n")
        doc = probe_stealth(
            st.port, ca, [b"GET /docs/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
        )
        assert b"Content-Type: text/plain" in doc.data and doc.data.endswith(b"hello\n")
        escape = probe_stealth(
            st.port, ca, [b"GET /../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
        )
        assert escape.data.startswith(b"HTTP/1.1 404 ") and b"outside" not in escape.data
        banner = probe_stealth(st.port, ca, [b"SSH-2.0-OpenSSH_9.2p1\r\n"])
        assert banner.data.startswith(b"HTTP/1.1 400 ") and banner.closed
        assert b"SSH-" not in banner.data
        wrong = probe_stealth(st.port, ca, [f"GET {st.path}x HTTP/1.1\r\nHost: x\r\n\r\n".encode()])
        assert wrong.data.startswith(b"HTTP/1.1 404 ")
    finally:
        st.server.proc.stop()
    # The built-in page, when no --decoy is given; the secret path is kept across restarts.
    proc = Proc(
        [
            *WRAITH,
            "serve",
            "--backend",
            backend,
            "--listen",
            "tls://127.0.0.1:0",
            "--tls-cert",
            str(pki.cert),
            "--tls-key",
            str(pki.key),
            "--stealth",
            "--state-dir",
            str(tmp_path / "server-state"),
            "--authorized-keys",
            str(keys.authorized_keys),
        ],
        env=clean_env(),
    )
    try:
        m = proc.wait_for(r"--stealth-path (\S+) tls://127\.0\.0\.1:(\d+)$")
        assert m.group(1) == st.path
        assert (tmp_path / "server-state" / "stealth-path").stat().st_mode & 0o077 == 0
        page = probe_stealth(
            int(m.group(2)), ca, [b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
        )
        assert page.data.startswith(b"HTTP/1.1 200 OK\r\n") and b"<h1>Welcome</h1>" in page.data
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "tcp://127.0.0.1:0", "--stealth"], "--stealth needs a tls:// listener"),
        (["--listen", "tcp://127.0.0.1:0", "--decoy", "/tmp"], "--decoy needs a tls:// listener"),
    ],
)
def test_stealth_needs_tls(tmp_path: Path, args: list[str], message: str) -> None:
    out = subprocess.run(
        [*WRAITH, "serve", "--state-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert out.returncode == 2
    assert message in out.stderr


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_https_decoy(
    backend: str,
    tmp_path: Path,
    keys: Keys,
    pki: Pki,  # noqa: F811
    nginx: Nginx,
) -> None:
    """An https:// decoy (nginx over TLS 1.3): probes match it, bytes that are not TLS
    reach its own TLS port, and a Wraith client that is slow to send its request
    (while the decoy connection sits open) still gets the tunnel."""
    st = stealth_server(backend, tmp_path, keys, pki, f"https://127.0.0.1:{nginx.tls_port}")
    try:
        index = [b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"]
        direct = probe_tls(nginx.tls_port, pki.ca, index)
        mine = probe_tls(st.port, pki.ca, index)
        assert direct.data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert normalize(mine.data) == normalize(direct.data) and mine.closed
        # Plain HTTP to the TLS port: nginx's own answer to that.
        plain = [b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"]
        direct = probe_direct(nginx.tls_port, plain)
        mine = probe_direct(st.port, plain)
        assert direct.data.startswith(b"HTTP/1.1 400 ")
        assert normalize(mine.data) == normalize(direct.data)
        assert mine.closed == direct.closed
        # The right request, a second after the handshake: still the tunnel.
        upgrade = (
            f"GET {st.path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
            "Upgrade: websocket\r\n\r\n"
        ).encode()
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        with (
            socket.create_connection(("127.0.0.1", st.port), timeout=30) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as sock,
        ):
            time.sleep(1.0)
            sock.sendall(upgrade)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                assert chunk, head
                head += chunk
            assert head.startswith(b"HTTP/1.1 101 "), head
            rest = head.split(b"\r\n\r\n", 1)[1]
            while b"\r\n" not in rest:  # then the server's SSH identification line
                chunk = sock.recv(4096)
                assert chunk, rest
                rest += chunk
            assert rest.startswith(b"SSH-2.0-"), rest
    finally:
        st.server.proc.stop()
