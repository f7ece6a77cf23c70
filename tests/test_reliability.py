"""Failure behaviour with real processes: resets, backpressure, slow destinations."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Keys
from helpers import (
    EchoServer,
    SocksFailed,
    WraithServer,
    free_port,
    pattern_bytes,
    recv_exact,
    socks_connect,
    start_client,
    start_server,
)

MB = 1024 * 1024


class Source:
    """Sends a pattern forever to every connection; records how each one ended."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.endings: list[str] = []
        self.sent = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pump, args=(conn,), daemon=True).start()

    def _pump(self, conn: socket.socket) -> None:
        block = pattern_bytes(256 * 1024)
        with conn:
            try:
                while True:
                    conn.sendall(block)
                    self.sent += len(block)
            except ConnectionResetError:
                self.endings.append("reset")
            except BrokenPipeError:
                self.endings.append("pipe")
            except OSError as e:
                self.endings.append(f"error {e}")


@pytest.fixture
def source() -> Iterator[Source]:
    s = Source()
    yield s
    s.sock.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _read_until_end(sock: socket.socket, timeout: float) -> str:
    """Read until EOF or error; return 'eof' or 'reset'."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(262144):
                return "eof"
    except ConnectionResetError:
        return "reset"


def test_lost_session_resets_local_sockets(
    backend: str, tmp_path: Path, keys: Keys, source: Source
) -> None:
    """Killing the server mid-transfer must reach the local app as RST, never a clean EOF."""
    server = start_server(backend, tmp_path, authorized_keys=keys.authorized_keys)
    client = start_client(
        backend,
        server,
        keys.client,
        args=["-L", f"127.0.0.1:0:127.0.0.1:{source.port}", "--no-reconnect"],
    )
    try:
        sock = socket.create_connection(("127.0.0.1", client.local_ports[0]), timeout=30)
        with sock:
            recv_exact(sock, 4 * MB)  # the tunnel is flowing
            server.proc.kill()
            assert _read_until_end(sock, 30) == "reset"
        assert client.proc.wait(30) == 1  # --no-reconnect: a lost session ends the client
        assert any("session lost" in line for line in client.proc.stderr)
    finally:
        client.proc.stop()
        server.proc.stop()


def test_client_death_resets_server_side_destination(
    backend: str, tmp_path: Path, keys: Keys, source: Source
) -> None:
    server = start_server(backend, tmp_path, authorized_keys=keys.authorized_keys)
    client = start_client(
        backend, server, keys.client, args=["-L", f"127.0.0.1:0:127.0.0.1:{source.port}"]
    )
    try:
        sock = socket.create_connection(("127.0.0.1", client.local_ports[0]), timeout=30)
        with sock:
            recv_exact(sock, 2 * MB)
            client.proc.kill()
            deadline = time.monotonic() + 30
            while not source.endings and time.monotonic() < deadline:
                time.sleep(0.05)
        assert source.endings and source.endings[0] in ("reset", "pipe")
        # The server itself stays up and serves the next client.
        assert server.proc.popen.poll() is None, server.proc.output()
        again = start_client(backend, server, keys.client, args=["-D", "127.0.0.1:0"])
        again.proc.stop()
    finally:
        client.proc.stop()
        server.proc.stop()


def test_slow_reader_backpressure_keeps_memory_flat(
    backend: str, wraith_server: WraithServer, keys: Keys, source: Source
) -> None:
    """A reader that is slower than the source slows the source; nobody buffers it all."""
    client = start_client(
        backend, wraith_server, keys.client, args=["-L", f"127.0.0.1:0:127.0.0.1:{source.port}"]
    )
    pids = [client.proc.popen.pid, wraith_server.proc.popen.pid]
    try:
        with socket.create_connection(("127.0.0.1", client.local_ports[0]), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            recv_exact(sock, 1 * MB)
            time.sleep(1.0)  # let every buffer on the path fill up
            baseline = [_rss_kib(p) for p in pids]
            read = 0
            for _ in range(150):  # ~3 s at ~1.5 MB/s: far slower than the source
                read += len(sock.recv(16 * 1024))
                time.sleep(0.02)
            grown = [_rss_kib(p) - b for p, b in zip(pids, baseline, strict=True)]
        # The source could have pushed gigabytes in this time; what reached the
        # reader plus what is in flight is bounded by windows and socket buffers.
        in_flight = source.sent - read - MB
        assert in_flight < 48 * MB, f"{in_flight} bytes in flight"
        assert max(grown) < 32 * 1024, f"RSS grew by {grown} KiB"
    finally:
        client.proc.stop()


def _hanging_destination() -> tuple[socket.socket, list[socket.socket], int]:
    """A loopback port whose accept queue is full: further connects hang (SYN dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(2):
        s = socket.socket()
        s.settimeout(0.5)
        with contextlib.suppress(OSError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    return listener, fillers, port


def test_slow_destination_does_not_delay_other_channels(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    server = start_server(
        backend, tmp_path, authorized_keys=keys.authorized_keys, extra=["--dial-timeout", "4"]
    )
    client = start_client(backend, server, keys.client, args=["-D", "127.0.0.1:0"])
    assert client.socks_port is not None
    socks_port = client.socks_port
    listener, fillers, hanging_port = _hanging_destination()
    slow_result: list[object] = []

    def slow() -> None:
        try:
            socks_connect(socks_port, "127.0.0.1", hanging_port, timeout=30).close()
            slow_result.append("connected")
        except SocksFailed as e:
            slow_result.append(e.code)

    try:
        threads = [threading.Thread(target=slow) for _ in range(5)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # the slow opens are now pending at the server
        for i in range(5):
            payload = pattern_bytes(64 * 1024, seed=i)
            with socks_connect(socks_port, "localhost", echo.port) as sock:
                sock.sendall(payload)
                assert recv_exact(sock, len(payload)) == payload
        # Every fast channel completed while the slow opens were still pending.
        assert slow_result == []
        for t in threads:
            t.join(30)
        # The slow ones then fail with "TTL expired" (RFC 1928 code 6: timed out).
        assert slow_result == [6] * 5
    finally:
        for s in fillers:
            s.close()
        listener.close()
        client.proc.stop()
        server.proc.stop()


def test_channel_error_closes_only_that_channel(
    backend: str, wraith_server: WraithServer, keys: Keys, echo: EchoServer
) -> None:
    client = start_client(backend, wraith_server, keys.client, args=["-D", "127.0.0.1:0"])
    assert client.socks_port is not None
    try:
        with socks_connect(client.socks_port, "localhost", echo.port) as keep:
            with pytest.raises(SocksFailed) as refused:
                socks_connect(client.socks_port, "127.0.0.1", free_port())
            assert refused.value.code == 5  # connection refused
            keep.sendall(b"still here")
            assert recv_exact(keep, 10) == b"still here"
    finally:
        client.proc.stop()
