"""Reconnection with real processes: the server is killed and restarted under a live client.

The client's listeners stay open through the outage; a transfer cut by it reaches
the application as a reset; requests made meanwhile wait a bounded time, then
get a SOCKS failure; once the server is back the client reconnects within its
backoff bound, and SOCKS, ``-L`` and the same ``-R`` port work again without a
client restart.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import Keys
from helpers import (
    WRAITH,
    EchoServer,
    Proc,
    SocksFailed,
    WraithServer,
    echo_roundtrip,
    free_port,
    pattern_bytes,
    recv_exact,
    socks_connect,
    start_client,
)
from test_reliability import Source, _read_until_end

MB = 1024 * 1024
#: The client's backoff ceiling in these tests, seconds.
MAX_DELAY = 1.0


def serve_on(backend: str, workdir: Path, keys: Keys, port: int) -> WraithServer:
    """``wraith serve`` on a fixed port, so a restart comes back at the same address."""
    proc = Proc(
        [
            *WRAITH,
            "serve",
            "--backend",
            backend,
            "--listen",
            f"tcp://127.0.0.1:{port}",
            "--state-dir",
            str(workdir / "server-state"),  # the same host key after a restart
            "--authorized-keys",
            str(keys.authorized_keys),
            "-v",
        ]
    )
    m = proc.wait_for(r"connect with: wraith connect --host-key-fingerprint (\S+) \S+:(\d+)")
    return WraithServer(proc, int(m.group(2)), m.group(1))


def wait_line(proc: Proc, pattern: str, start: int, timeout: float) -> float:
    """Wait for a stderr line matching ``pattern`` after line ``start``; return when seen."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(regex.search(line) for line in proc.stderr[start:]):
            return time.monotonic()
        assert proc.popen.poll() is None, proc.output()
        time.sleep(0.02)
    raise AssertionError(f"no {pattern!r} within {timeout}s\n" + proc.output())


@pytest.mark.integration
def test_client_survives_a_server_restart(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    source = Source()
    port = free_port()
    server = serve_on(backend, tmp_path, keys, port)
    client = start_client(
        backend,
        server,
        keys.client,
        args=[
            "-D",
            "127.0.0.1:0",
            "-L",
            f"127.0.0.1:0:127.0.0.1:{source.port}",
            "-R",
            f"0:127.0.0.1:{echo.port}",
            "--reconnect-delay",
            "0.2",
            "--reconnect-max-delay",
            str(MAX_DELAY),
            "--session-wait",
            "1",
        ],
    )
    try:
        assert client.socks_port is not None
        r_port = client.remote_ports[0]
        # A 100 MB transfer through -L, cut by a server crash part-way through.
        sock = socket.create_connection(("127.0.0.1", client.local_ports[0]), timeout=30)
        with sock:
            recv_exact(sock, 4 * MB)
            lost_at = len(client.proc.stderr)
            server.proc.kill()
            try:
                end = _read_until_end(sock, 30)
            except TimeoutError:
                raise AssertionError(
                    "the cut -L connection neither reset nor ended\n" + client.proc.output()
                ) from None
            assert end == "reset"
        wait_line(client.proc, r"SSH session lost: .*; reconnecting", lost_at, 30)
        assert client.proc.popen.poll() is None  # the client keeps running

        # Meanwhile: the listeners are open, and a request fails cleanly after --session-wait.
        started = time.monotonic()
        with pytest.raises(SocksFailed) as failed:
            socks_connect(client.socks_port, "localhost", echo.port, timeout=30).close()
        assert failed.value.code == 3  # network unreachable: no tunnel right now
        assert 0.8 <= time.monotonic() - started < 10
        with socket.create_connection(("127.0.0.1", client.local_ports[0]), timeout=30) as s:
            assert _read_until_end(s, 30) == "reset"  # -L accepts, then resets
        # Attempts are logged with their reason.
        wait_line(client.proc, r"reconnect attempt \d+ failed: cannot connect", lost_at, 30)

        restart_at = len(client.proc.stderr)
        server = serve_on(backend, tmp_path, keys, port)
        up = time.monotonic()
        back = wait_line(client.proc, r"reconnected after \d+ attempts?", restart_at, 30)
        # Backoff bound: the next attempt comes within one ceiling (plus the handshake).
        assert back - up < MAX_DELAY + 5, back - up

        # Everything works again without restarting the client.
        with socks_connect(client.socks_port, "localhost", echo.port) as s:
            s.sendall(b"after restart")
            assert recv_exact(s, 13) == b"after restart"
        wait_line(client.proc, rf"remote forward listening on server port {r_port}\b", 0, 30)
        payload = pattern_bytes(2 * MB, seed=9)
        assert echo_roundtrip(r_port, payload) == payload  # the same -R port as before
        with socket.create_connection(("127.0.0.1", client.local_ports[0]), timeout=30) as s:
            recv_exact(s, 1 * MB)
    finally:
        client.proc.stop()
        server.proc.stop()
        source.sock.close()


@pytest.mark.integration
def test_a_request_during_the_outage_waits_for_the_session(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    port = free_port()
    server = serve_on(backend, tmp_path, keys, port)
    client = start_client(
        backend,
        server,
        keys.client,
        args=[
            "-D",
            "127.0.0.1:0",
            "--reconnect-delay",
            "0.2",
            "--reconnect-max-delay",
            str(MAX_DELAY),
            "--session-wait",
            "20",
        ],
    )
    try:
        assert client.socks_port is not None
        lost_at = len(client.proc.stderr)
        server.proc.kill()
        wait_line(client.proc, r"SSH session lost", lost_at, 30)
        result: list[object] = []

        def ask() -> None:
            try:
                with socks_connect(client.socks_port or 0, "localhost", echo.port) as s:
                    s.sendall(b"waited")
                    result.append(recv_exact(s, 6))
            except Exception as exc:
                result.append(exc)

        t = threading.Thread(target=ask)
        t.start()
        time.sleep(1.0)  # the request is now waiting for the session
        assert not result
        server = serve_on(backend, tmp_path, keys, port)
        t.join(30)
        assert result == [b"waited"]
    finally:
        client.proc.stop()
        server.proc.stop()


@pytest.mark.integration
def test_a_changed_host_key_ends_the_client(backend: str, tmp_path: Path, keys: Keys) -> None:
    port = free_port()
    server = serve_on(backend, tmp_path, keys, port)
    client = start_client(
        backend,
        server,
        keys.client,
        args=["-D", "127.0.0.1:0", "--reconnect-delay", "0.2", "--reconnect-max-delay", "1"],
    )
    try:
        server.proc.kill()
        # A different server (new state directory, new host key) on the same address.
        server = serve_on(backend, tmp_path / "other", keys, port)
        assert client.proc.wait(30) == 5
        assert any("giving up" in line for line in client.proc.stderr), client.proc.output()
        assert any(server.fingerprint in line for line in client.proc.stderr)
    finally:
        client.proc.stop()
        server.proc.stop()


@pytest.mark.integration
def test_a_silent_server_is_noticed_by_keepalives(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    """A frozen server (SIGSTOP: no FIN, no RST) is given up after the keepalive bound."""
    port = free_port()
    server = serve_on(backend, tmp_path, keys, port)
    client = start_client(
        backend,
        server,
        keys.client,
        args=[
            "-D",
            "127.0.0.1:0",
            "--keepalive-interval",
            "1",
            "--keepalive-count",
            "2",
            "--reconnect-delay",
            "0.2",
            "--reconnect-max-delay",
            str(MAX_DELAY),
        ],
    )
    try:
        assert client.socks_port is not None
        mark = len(client.proc.stderr)
        server.proc.popen.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        seen = wait_line(client.proc, r"SSH session lost: .*not responding", mark, 30)
        # interval * (count + 1) = 3 s, plus scheduling slack on a busy machine.
        assert seen - stopped < 3 + 5, seen - stopped
        server.proc.popen.send_signal(signal.SIGCONT)
        wait_line(client.proc, r"reconnected after", mark, 30)
        with socks_connect(client.socks_port, "localhost", echo.port) as s:
            s.sendall(b"alive")
            assert recv_exact(s, 5) == b"alive"
    finally:
        server.proc.popen.send_signal(signal.SIGCONT)
        client.proc.stop()
        server.proc.stop()


@pytest.mark.integration
def test_the_server_frees_a_dead_clients_forward_and_gets_it_back(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    """A frozen client's -R listener is closed by the server's keepalives; the client,
    once thawed, reconnects and registers the same port again."""
    port = free_port()
    proc = Proc(
        [
            *WRAITH,
            "serve",
            "--backend",
            backend,
            "--listen",
            f"tcp://127.0.0.1:{port}",
            "--state-dir",
            str(tmp_path / "server-state"),
            "--authorized-keys",
            str(keys.authorized_keys),
            "--keepalive-interval",
            "1",
            "--keepalive-count",
            "2",
            "-v",
        ]
    )
    m = proc.wait_for(r"connect with: wraith connect --host-key-fingerprint (\S+) \S+:(\d+)")
    server = WraithServer(proc, int(m.group(2)), m.group(1))
    client = start_client(
        backend,
        server,
        keys.client,
        args=[
            "-R",
            f"0:127.0.0.1:{echo.port}",
            "--reconnect-delay",
            "0.2",
            "--reconnect-max-delay",
            str(MAX_DELAY),
        ],
    )
    try:
        r_port = client.remote_ports[0]
        assert echo_roundtrip(r_port, b"before") == b"before"
        mark = len(server.proc.stderr)
        client.proc.popen.send_signal(signal.SIGSTOP)
        wait_line(server.proc, r"session closed src=127\.0\.0\.1", mark, 30)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", r_port), timeout=5).close()  # freed
        client.proc.popen.send_signal(signal.SIGCONT)
        mark = len(client.proc.stderr)
        wait_line(client.proc, rf"remote forward listening on server port {r_port}\b", mark, 30)
        assert echo_roundtrip(r_port, b"after") == b"after"
    finally:
        client.proc.popen.send_signal(signal.SIGCONT)
        client.proc.stop()
        server.proc.stop()


@pytest.mark.integration
def test_auth_failures_after_a_session_back_off_and_retry(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    """Only the first connect treats a refused key as final; later it is retried, logged."""
    port = free_port()
    server = serve_on(backend, tmp_path, keys, port)
    client = start_client(
        backend,
        server,
        keys.client,
        args=["-D", "127.0.0.1:0", "--reconnect-delay", "0.2", "--reconnect-max-delay", "1"],
    )
    try:
        assert client.socks_port is not None
        server.proc.stop()
        # The key is no longer authorized on the server that comes back (rotation gone wrong).
        keys_backup = keys.authorized_keys.read_text()
        keys.authorized_keys.write_text(
            (keys.other.parent / (keys.other.name + ".pub")).read_text()
        )
        mark = len(client.proc.stderr)
        try:
            server = serve_on(backend, tmp_path, keys, port)
            wait_line(client.proc, r"reconnect attempt \d+ failed: authentication failed", mark, 30)
            wait_line(
                client.proc, r"reconnect attempt \d+ failed: authentication failed", mark + 2, 30
            )
            assert client.proc.popen.poll() is None  # still trying, not exited with 4
        finally:
            keys.authorized_keys.write_text(keys_backup)
        server.proc.stop()
        server = serve_on(backend, tmp_path, keys, port)
        wait_line(client.proc, r"reconnected after", mark, 30)
        with socks_connect(client.socks_port, "localhost", echo.port) as s:
            s.sendall(b"back")
            assert recv_exact(s, 4) == b"back"
    finally:
        client.proc.stop()
        server.proc.stop()
