"""A bounded soak: mixed SOCKS, -L and -R traffic through three server restarts.

Three workers (one per kind of tunnel) echo random-sized payloads through a
``wraith connect`` for ``WRAITH_SOAK_SECONDS`` (default 50 s per backend, so the
CI run stays near two minutes), while the server is restarted three times with
SIGTERM and a one-second drain.  At the end:

- every transfer that completed is byte-exact;
- every transfer the restarts cut was reported to the application as an error
  (a reset, a refusal, a SOCKS failure), never as a clean but short stream;
- the client's open file descriptors and memory are back near where they were
  after warm-up.

On a failure it names the short transfers (bytes, time, the application's
port) and writes every process's log to ``soak-logs.txt`` (in the test's tmp
directory, or ``$WRAITH_SOAK_DUMP``).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Keys
from helpers import EchoServer, SocksFailed, WraithServer, free_port, socks_connect, start_client
from test_reconnect import serve_on

SOAK_SECONDS = float(os.environ.get("WRAITH_SOAK_SECONDS", "50"))
RESTARTS = 3


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


SHORTS: list[str] = []


def echo_once(connect: Callable[[], socket.socket], payload: bytes) -> str:
    """One echo through a tunnel: 'ok', 'error' (the cut was reported), 'short' or 'corrupt'."""
    try:
        sock = connect()
    except (OSError, SocksFailed):
        return "error"
    got = bytearray()
    lport = sock.getsockname()[1]
    try:
        with sock:
            sock.settimeout(30)
            done = threading.Event()
            send_failed: list[OSError] = []

            def send() -> None:
                # A reset is reported once per socket: if this thread's send gets
                # ECONNRESET/EPIPE, the reader's next recv() sees a plain EOF.  The
                # application was told all the same, so that counts as an error.
                try:
                    sock.sendall(payload)
                    sock.shutdown(socket.SHUT_WR)
                except OSError as exc:
                    send_failed.append(exc)
                done.set()

            threading.Thread(target=send, daemon=True).start()
            while True:
                data = sock.recv(262144)
                if not data:
                    break
                got.extend(data)
            done.wait(30)
    except OSError:
        return "error"  # reset or timeout: the application was told
    if send_failed:
        return "error"
    if len(got) < len(payload):
        SHORTS.append(f"{len(got)} of {len(payload)} bytes at {time.time():.3f} from port {lport}")
        return "short"  # a clean end of stream that lost data: the one real failure
    return "ok" if hashlib.sha256(got).digest() == hashlib.sha256(payload).digest() else "corrupt"


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_soak_with_server_restarts(
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
            "-L",
            f"127.0.0.1:0:127.0.0.1:{echo.port}",
            "-R",
            f"0:127.0.0.1:{echo.port}",
            "--reconnect-delay",
            "0.2",
            "--reconnect-max-delay",
            "1",
            "--session-wait",
            "3",
        ],
    )
    servers: list[WraithServer] = [server]
    results: dict[str, Counter[str]] = {k: Counter() for k in ("socks", "local", "remote")}
    stop = threading.Event()
    assert client.socks_port is not None
    socks_port, l_port, r_port = client.socks_port, client.local_ports[0], client.remote_ports[0]
    connectors: dict[str, Callable[[], socket.socket]] = {
        "socks": lambda: socks_connect(socks_port, "localhost", echo.port, timeout=10),
        "local": lambda: socket.create_connection(("127.0.0.1", l_port), timeout=10),
        "remote": lambda: socket.create_connection(("127.0.0.1", r_port), timeout=10),
    }

    def worker(kind: str, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            payload = rng.randbytes(rng.choice([1, 1000, 64 * 1024, 512 * 1024, 2 * 1024 * 1024]))
            results[kind][echo_once(connectors[kind], payload)] += 1
            if results[kind]["error"] and not results[kind]["ok"] % 50:
                time.sleep(0.05)  # do not spin on refusals while the server is down

    try:
        # Warm-up, then the baseline for descriptors and memory.
        for kind in connectors:
            assert echo_once(connectors[kind], os.urandom(256 * 1024)) == "ok"
        pid = client.proc.popen.pid
        fds0, rss0 = _fds(pid), _rss_kib(pid)

        threads = [
            threading.Thread(target=worker, args=(kind, i), daemon=True)
            for i, kind in enumerate(connectors)
        ]
        for t in threads:
            t.start()
        step = SOAK_SECONDS / (RESTARTS + 1)
        for _ in range(RESTARTS):
            time.sleep(step)
            old = servers[-1]
            old.proc.popen.send_signal(signal.SIGTERM)
            assert old.proc.wait(30) == 0, old.proc.output()
            time.sleep(0.5)  # a real outage, however short
            servers.append(serve_on(backend, tmp_path, keys, port))
        time.sleep(step)
        stop.set()
        for t in threads:
            t.join(60)
            assert not t.is_alive()

        # After the dust settles every kind of tunnel works again.
        deadline = time.monotonic() + 30
        for kind in connectors:
            while echo_once(connectors[kind], os.urandom(64 * 1024)) != "ok":
                assert time.monotonic() < deadline, (kind, client.proc.output())
                time.sleep(0.2)

        if any(c["short"] for c in results.values()):
            dump = Path(os.environ.get("WRAITH_SOAK_DUMP", str(tmp_path))) / "soak-logs.txt"
            dump.write_text(
                "\n".join([client.proc.output(), *(srv.proc.output() for srv in servers)])
            )
        for kind, counts in results.items():
            assert counts["short"] == 0, (kind, counts, SHORTS)
            assert counts["corrupt"] == 0, (kind, counts)
            assert counts["ok"] >= 10, (kind, counts)
        assert client.proc.popen.poll() is None
        reconnects = sum("reconnected after" in line for line in client.proc.stderr)
        assert reconnects == RESTARTS, client.proc.output()

        # Resources back near the baseline (give closing sockets a moment).
        deadline = time.monotonic() + 15
        while _fds(pid) > fds0 + 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _fds(pid) <= fds0 + 5, (fds0, _fds(pid))
        assert _rss_kib(pid) <= rss0 + 40 * 1024, (rss0, _rss_kib(pid))
    finally:
        stop.set()
        client.proc.stop()
        for s in servers:
            s.proc.stop()
