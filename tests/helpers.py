"""Shared helpers for integration tests: real ``wraith`` processes on loopback.

Everything here talks to 127.0.0.1 only.  Processes are started with
``python -m wraith`` so the tests exercise the CLI exactly as a user runs it.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WRAITH = [sys.executable, "-m", "wraith"]
BACKENDS = ("trio", "asyncio")
ENGINES = ("sansio", "paramiko")


class _Current:
    #: The SSH engine of the running test (set by the ``backend`` fixture); every
    #: wraith process a test starts gets it through WRAITH_ENGINE.
    engine = "sansio"


CURRENT = _Current()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRAITH_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["WRAITH_ENGINE"] = CURRENT.engine
    env.update(extra)
    return env


class Proc:
    """A child process whose stdout and stderr are collected line by line."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.popen = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or clean_env(),
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        self._threads = []
        for stream, sink in ((self.popen.stdout, self.stdout), (self.popen.stderr, self.stderr)):
            t = threading.Thread(target=self._collect, args=(stream, sink), daemon=True)
            t.start()
            self._threads.append(t)

    def _collect(self, stream: object, sink: list[str]) -> None:
        assert hasattr(stream, "readline")
        for line in iter(stream.readline, ""):
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(
        self, pattern: str, *, timeout: float = 30, stream: str = "stdout"
    ) -> re.Match[str]:
        """Wait until a line of ``stream`` matches; fail with the output if the process exits."""
        regex = re.compile(pattern)
        sink = self.stdout if stream == "stdout" else self.stderr
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in sink[seen:]:
                    m = regex.search(line)
                    if m:
                        return m
                seen = len(sink)
                if self.popen.poll() is not None and seen == len(sink):
                    # Give the reader threads a moment to drain.
                    self._cond.wait(0.2)
                    if seen == len(sink):
                        raise AssertionError(
                            f"process exited ({self.popen.returncode}) before {pattern!r}\n"
                            + self.output()
                        )
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {pattern!r}\n" + self.output())
                self._cond.wait(min(left, 0.5))

    def output(self) -> str:
        with self._cond:
            return (
                "--- stdout ---\n"
                + "\n".join(self.stdout)
                + "\n--- stderr ---\n"
                + "\n".join(self.stderr)
            )

    def wait(self, timeout: float = 30) -> int:
        code = self.popen.wait(timeout)
        self._drain()
        return code

    def _drain(self) -> None:
        for t in self._threads:
            t.join(5)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None and not stream.closed:
                stream.close()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._drain()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        self._drain()


def ssh_keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


def fingerprint_of(pub: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(pub)], check=True, capture_output=True, text=True
    )
    return out.stdout.split()[1]


class WraithServer:
    def __init__(self, proc: Proc, port: int, fingerprint: str) -> None:
        self.proc = proc
        self.port = port
        self.fingerprint = fingerprint

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_server(
    backend: str,
    workdir: Path,
    *,
    authorized_keys: Path | None = None,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> WraithServer:
    args = [
        *WRAITH,
        "serve",
        "--backend",
        backend,
        "--listen",
        "tcp://127.0.0.1:0",
        "--state-dir",
        str(workdir / "server-state"),
        "-v",
    ]
    if authorized_keys is not None:
        args += ["--authorized-keys", str(authorized_keys)]
    proc = Proc([*args, *extra], env=env)
    m = proc.wait_for(r"connect with: wraith connect --host-key-fingerprint (\S+) \S+:(\d+)")
    return WraithServer(proc, int(m.group(2)), m.group(1))


class WraithClient:
    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.socks_port: int | None = None
        self.local_ports: list[int] = []
        self.remote_ports: list[int] = []


def start_client(
    backend: str,
    server: WraithServer,
    identity: Path,
    *,
    args: Sequence[str] = (),
    user: str | None = None,
    ready: bool = True,
    env: dict[str, str] | None = None,
    target: str | None = None,
) -> WraithClient:
    """``wraith connect`` to ``server`` (or to ``target``, e.g. a ``tls://`` URL)."""
    target = target or (server.target if user is None else f"{user}@{server.target}")
    cmd = [
        *WRAITH,
        "connect",
        "--backend",
        backend,
        "-i",
        str(identity),
        "--host-key-fingerprint",
        server.fingerprint,
        "-v",
        *args,
        target,
    ]
    client = WraithClient(Proc(cmd, env=env))
    if ready:
        client.proc.wait_for(r"^connected to ")
        # Listener lines are printed right after "connected"; collect them.
        deadline = time.monotonic() + 10
        wanted_socks = any(a in ("-D", "--socks") for a in args) or not any(
            a in ("-L", "-R", "--local", "--remote") for a in args
        )
        n_local = sum(1 for a in args if a in ("-L", "--local"))
        n_remote = sum(1 for a in args if a in ("-R", "--remote"))
        while time.monotonic() < deadline:
            out = list(client.proc.stdout)
            socks = [re.search(r"SOCKS5 proxy listening on \S+:(\d+)", x) for x in out]
            local = [re.search(r"local forward listening on \S+:(\d+)", x) for x in out]
            remote = [re.search(r"remote forward listening on server port (\d+)", x) for x in out]
            s_ports = [int(m.group(1)) for m in socks if m]
            l_ports = [int(m.group(1)) for m in local if m]
            r_ports = [int(m.group(1)) for m in remote if m]
            if (
                (not wanted_socks or s_ports)
                and len(l_ports) >= n_local
                and len(r_ports) >= n_remote
            ):
                client.socks_port = s_ports[0] if s_ports else None
                client.local_ports = l_ports
                client.remote_ports = r_ports
                break
            time.sleep(0.05)
        else:
            raise AssertionError("client listeners not reported\n" + client.proc.output())
    return client


# --- loopback test servers -------------------------------------------------------


def stop_process(proc: subprocess.Popen[Any], grace: float = 10) -> None:
    """SIGTERM, then SIGKILL if ``grace`` seconds pass: a peer (nginx, say) that
    is slow to stop must neither fail the test nor outlive it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class EchoServer:
    """Threaded TCP echo server on 127.0.0.1 (half-close aware)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    data = conn.recv(262144)
                    if not data:
                        conn.shutdown(socket.SHUT_WR)
                        return
                    conn.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def pattern_bytes(n: int, seed: int = 1) -> bytes:
    """Deterministic, incompressible-looking test data."""
    out = bytearray()
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


def echo_roundtrip(port: int, payload: bytes, *, timeout: float = 120) -> bytes:
    """Send ``payload`` to an echo service at ``port`` while reading it back; both ways at once."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        error: list[BaseException] = []

        def sender() -> None:
            try:
                view = memoryview(payload)
                while view:
                    n = sock.send(view[:262144])
                    view = view[n:]
                sock.shutdown(socket.SHUT_WR)
            except BaseException as e:
                error.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        while True:
            data = sock.recv(262144)
            if not data:
                break
            received += data
        t.join(timeout)
        if error:
            raise error[0]
    return bytes(received)


def socks_connect(socks_port: int, host: str, port: int, *, timeout: float = 30) -> socket.socket:
    """Open a SOCKS5 CONNECT by hand (no library); raise ``SocksFailed`` with the reply code."""
    sock = socket.create_connection(("127.0.0.1", socks_port), timeout=timeout)
    try:
        sock.sendall(b"\x05\x01\x00")
        if recv_exact(sock, 2) != b"\x05\x00":
            raise AssertionError("SOCKS method selection failed")
        name = host.encode()
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
        head = recv_exact(sock, 4)
        if head[1] != 0:
            raise SocksFailed(head[1])
        atyp = head[3]
        rest = {1: 4, 4: 16}.get(atyp)
        if rest is None:
            rest = recv_exact(sock, 1)[0]
        recv_exact(sock, rest + 2)
    except BaseException:
        sock.close()
        raise
    return sock


class SocksFailed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"SOCKS reply {code}")
        self.code = code


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
