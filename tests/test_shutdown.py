"""Graceful shutdown with real processes, on both sides: SIGTERM drains, a second signal exits.

On SIGINT/SIGTERM a ``wraith serve`` or ``wraith connect`` stops accepting, lets
open tunnels finish for up to ``--shutdown-timeout``, then sends an SSH
disconnect and exits 0.  A tunnel that never finishes (a stuck peer) cannot
hold the process past the timeout, and a second signal ends it at once.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import Keys
from helpers import (
    EchoServer,
    WraithClient,
    WraithServer,
    pattern_bytes,
    recv_exact,
    start_client,
    start_server,
)
from test_reliability import Source, _read_until_end

MB = 1024 * 1024


def slow_echo(port: int, payload: bytes, result: list[object], *, seconds: float) -> None:
    """Echo ``payload`` through ``port`` spread over about ``seconds``; append the reply."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            got = bytearray()
            step = len(payload) // 20

            def reader() -> None:
                while len(got) < len(payload):
                    data = sock.recv(262144)
                    if not data:
                        break
                    got.extend(data)

            t = threading.Thread(target=reader)
            t.start()
            for i in range(0, len(payload), step):
                sock.sendall(payload[i : i + step])
                time.sleep(seconds / 20)
            sock.shutdown(socket.SHUT_WR)
            t.join(60)
            result.append(bytes(got))
    except Exception as exc:
        result.append(exc)


def _client(backend: str, server: WraithServer, keys: Keys, args: list[str]) -> WraithClient:
    return start_client(backend, server, keys.client, args=args)


def _signal(proc: object, sig: signal.Signals) -> None:
    proc.popen.send_signal(sig)  # type: ignore[attr-defined]


@pytest.mark.integration
@pytest.mark.parametrize("side", ["client", "server"])
def test_sigterm_lets_a_transfer_finish(
    backend: str, side: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    server = start_server(
        backend,
        tmp_path,
        authorized_keys=keys.authorized_keys,
        extra=["--shutdown-timeout", "30"],
    )
    client = _client(
        backend,
        server,
        keys,
        ["-L", f"127.0.0.1:0:127.0.0.1:{echo.port}", "--shutdown-timeout", "30"],
    )
    try:
        port = client.local_ports[0]
        payload = pattern_bytes(8 * MB, seed=5)
        result: list[object] = []
        t = threading.Thread(target=slow_echo, args=(port, payload, result), kwargs={"seconds": 3})
        t.start()
        time.sleep(1.0)  # the transfer is under way
        target = client if side == "client" else server
        _signal(target.proc, signal.SIGTERM)
        t.join(60)
        assert result and result[0] == payload, (result[:1], target.proc.output())
        assert target.proc.wait(30) == 0, target.proc.output()
        assert any("shutting down" in line for line in target.proc.stderr)
        if side == "client":
            # The listener closed at once: no new tunnel during the drain.
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
        else:
            # The client saw a disconnect, not a crash: it logs the server's reason.
            client.proc.wait_for("server shutting down", stream="stderr", timeout=30)
    finally:
        client.proc.stop()
        server.proc.stop()


@pytest.mark.integration
@pytest.mark.parametrize("side", ["client", "server"])
def test_a_stuck_tunnel_cannot_hold_the_process_past_the_timeout(
    backend: str, side: str, tmp_path: Path, keys: Keys
) -> None:
    source = Source()  # sends forever
    server = start_server(
        backend,
        tmp_path,
        authorized_keys=keys.authorized_keys,
        extra=["--shutdown-timeout", "2"],
    )
    client = _client(
        backend,
        server,
        keys,
        ["-L", f"127.0.0.1:0:127.0.0.1:{source.port}", "--shutdown-timeout", "2"],
    )
    try:
        sock = socket.create_connection(("127.0.0.1", client.local_ports[0]), timeout=30)
        with sock:
            recv_exact(sock, 1 * MB)  # flowing; from now on nobody reads: a stuck peer
            target = client if side == "client" else server
            started = time.monotonic()
            _signal(target.proc, signal.SIGTERM)
            assert target.proc.wait(30) == 0, target.proc.output()
            assert time.monotonic() - started < 2 + 6
            assert any("shutdown timeout" in line for line in target.proc.stderr)
            if side == "client":
                assert _read_until_end(sock, 30) == "reset"  # cut, never a clean EOF
    finally:
        client.proc.stop()
        server.proc.stop()
        source.sock.close()


@pytest.mark.integration
@pytest.mark.parametrize("side", ["client", "server"])
def test_a_second_signal_exits_at_once(backend: str, side: str, tmp_path: Path, keys: Keys) -> None:
    source = Source()
    server = start_server(
        backend,
        tmp_path,
        authorized_keys=keys.authorized_keys,
        extra=["--shutdown-timeout", "120"],
    )
    client = _client(
        backend,
        server,
        keys,
        ["-L", f"127.0.0.1:0:127.0.0.1:{source.port}", "--shutdown-timeout", "120"],
    )
    try:
        sock = socket.create_connection(("127.0.0.1", client.local_ports[0]), timeout=30)
        with sock:
            recv_exact(sock, 1 * MB)
            target = client if side == "client" else server
            _signal(target.proc, signal.SIGTERM)
            target.proc.wait_for("shutting down", stream="stderr", timeout=30)
            started = time.monotonic()
            _signal(target.proc, signal.SIGINT)
            assert target.proc.wait(10) == 1
            assert time.monotonic() - started < 5
            assert any("exiting now" in line for line in target.proc.stderr)
    finally:
        client.proc.stop()
        server.proc.stop()
        source.sock.close()
