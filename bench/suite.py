"""The performance suite (issue 6): every row of the performance table in one run.

    python bench/suite.py            # the full suite, about 5-10 minutes on 2 cores
    python bench/suite.py --quick    # the CI smoke version, well under 2 minutes

Rows, each Wraith (``wraith serve`` + ``wraith connect -D``, default engine
``sansio``) against a peer measured in the same run, alternating between them:

* single-stream throughput up and down (``bench/throughput.py``'s rounds: SOCKS5
  over TCP, aes128-gcm) against OpenSSH (``ssh -N -D`` + a private ``sshd``);
* the same transfers, in the same rounds, through asyncssh (an asyncssh client's
  ``forward_socks`` against an asyncssh server, aes128-gcm, no compression);
* concurrency: N SOCKS connections at once through one session (half upload,
  half download, M KiB each), total time, against ``ssh -D``;
* time to first byte: from spawning ``wraith connect -D`` (``ssh -N -D``) to the
  first byte through its SOCKS port;
* start-up: wall time of ``wraith --help``;
* memory: ``wraith serve``'s VmRSS growth per open idle tunnelled connection
  (``sshd``'s session processes for information);
* TLS: the ``/tls`` rows of ``bench/throughput.py`` (against OpenSSH through
  stunnel4).

It prints the peer tables and a summary of medians, ratios, targets and whether
each target is met, and writes JSON and (with matplotlib) a PNG bar chart.
Timing is reported, never asserted: a missed target never changes the exit
status; only a broken measurement does (exit 1).  Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import getpass
import importlib.metadata
import json
import math
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput as tp

SUITE = str(Path(__file__).resolve())
AES = tp.AES
LOOPBACK = tp.LOOPBACK
KIB = 1024
MIB = 1 << 20
#: Read buffer of the suite's SOCKS clients (one per process: data is only counted).
READ_SIZE = 256 * KIB
#: Write pieces of the endpoint and the uploading clients (flow-controlled).
WRITE_SIZE = 64 * KIB

#: Full run and --quick run.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "size": 512,
        "rounds": 5,
        "connections": 1000,
        "conn_kib": 1024,
        "conn_rounds": 5,
        "conn_timeout": 180.0,
        "ttfb_rounds": 11,
        "idle": 1000,
        "startup_runs": 20,
    },
    "quick": {
        "size": 16,
        "rounds": 1,
        "connections": 100,
        "conn_kib": 64,
        "conn_rounds": 1,
        "conn_timeout": 60.0,
        "ttfb_rounds": 2,
        "idle": 50,
        "startup_runs": 3,
    },
}
STARTUP_LIMIT_MS = 150.0
MEMORY_LIMIT_KIB = 100.0


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; children inherit it.  Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _preexec_nofile() -> None:
    raise_nofile()


def compile_package() -> str:
    """Write wraith's ``.pyc`` files (what ``pip install`` does); say where."""
    import compileall

    import wraith

    root = Path(wraith.__file__).parent
    ok = compileall.compile_dir(str(root), quiet=1)
    return f"{root} ({'ok' if ok else 'some modules failed'})"


def wraith_command() -> list[str]:
    """``wraith`` as a user runs it: the console script beside this interpreter."""
    script = Path(sys.executable).parent / "wraith"
    return [str(script)] if script.exists() else list(tp.WRAITH)


# --- the endpoint: a sink/source for many connections (its own process) --------


class _EndpointConn(asyncio.BufferedProtocol):
    """``UP n\\n`` then n bytes: answers ``K``; ``DOWN n\\n``: sends n bytes.

    A connection that sends nothing is simply held open (the idle rows).
    """

    def __init__(self, rbuf: memoryview, block: memoryview) -> None:
        self.rbuf = rbuf
        self.block = block
        self.head = b""
        self.mode = b""
        self.left = 0
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.t = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.rbuf

    def buffer_updated(self, nbytes: int) -> None:
        if self.mode == b"UP":
            self._up(nbytes)
            return
        if self.mode:
            return
        self.head += bytes(self.rbuf[:nbytes])
        if b"\n" not in self.head:
            if len(self.head) > 64:
                self.t.close()
            return
        line, _, rest = self.head.partition(b"\n")
        mode, n = line.split()
        self.mode, self.left = mode, int(n)
        if mode == b"DOWN":
            self._send()
        else:
            self._up(len(rest))

    def _up(self, n: int) -> None:
        if self.left > 0:
            self.left -= n
            if self.left <= 0:
                self.t.write(b"K")

    def _send(self) -> None:
        while self.left > 0 and not self.paused:
            n = min(self.left, len(self.block))
            self.t.write(self.block[:n])
            self.left -= n

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._send()


def serve_endpoint(port_file: str) -> None:
    async def main() -> None:
        rbuf = memoryview(bytearray(READ_SIZE))
        block = memoryview(os.urandom(WRITE_SIZE))
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _EndpointConn(rbuf, block), LOOPBACK, 0, backlog=4096
        )
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        await server.serve_forever()

    asyncio.run(main())


# --- SOCKS5 clients on asyncio (the bench process) -------------------------------

_RBUF = memoryview(bytearray(READ_SIZE))
_UPBLOCK = memoryview(os.urandom(WRITE_SIZE))


class SocksClient(asyncio.BufferedProtocol):
    """One SOCKS5 connection to the endpoint: ``UP``/``DOWN`` ``nbytes``, or ``IDLE``.

    ``done`` completes when the transfer is acknowledged (``UP``), fully read
    (``DOWN``) or when the tunnel is open (``IDLE``, which stays open).
    """

    def __init__(
        self,
        dest_port: int,
        mode: str,
        nbytes: int,
        done: asyncio.Future[None],
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.request = (
            b"\x05\x01\x00\x01" + socket.inet_aton(LOOPBACK) + dest_port.to_bytes(2, "big")
        )
        self.mode = mode
        self.left = nbytes
        self.nbytes = nbytes
        self.done = done
        self.state = "greet"
        self.got = bytearray()
        self.paused = False
        self.on_open = on_open  # called once: the SOCKS reply came, or the attempt ended
        self.t: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.t = transport
        transport.write(b"\x05\x01\x00")

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RBUF

    def _opened(self) -> None:
        if self.on_open is not None:
            self.on_open()
            self.on_open = None

    def _finish(self, exc: BaseException | None = None) -> None:
        self._opened()
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)

    def buffer_updated(self, nbytes: int) -> None:
        assert self.t is not None
        if self.state == "data":
            self._data(nbytes)
            return
        self.got += _RBUF[:nbytes]
        if self.state == "greet":
            if len(self.got) < 2:
                return
            if self.got[:2] != b"\x05\x00":
                self._fail(f"SOCKS greeting answered {bytes(self.got[:2])!r}")
                return
            del self.got[:2]
            self.state = "reply"
            self.t.write(self.request)
        if self.state == "reply":
            if len(self.got) < 5:
                return
            if self.got[1] != 0:
                self._fail(f"SOCKS reply {self.got[1]}")
                return
            atyp = self.got[3]
            need = 4 + {1: 4, 4: 16}.get(atyp, 1 + self.got[4]) + 2
            if len(self.got) < need:
                return
            extra = len(self.got) - need
            self.got.clear()
            self.state = "data"
            self._opened()
            if self.mode == "IDLE":
                self._finish()
                return
            self.t.write(f"{self.mode} {self.nbytes}\n".encode())
            if self.mode == "UP":
                self._send()
            elif extra:
                self._data(extra)

    def _data(self, nbytes: int) -> None:
        assert self.t is not None
        if self.mode == "DOWN":
            self.left -= nbytes
            if self.left <= 0:
                self._finish()
                self.t.close()
        elif self.mode == "UP" and self.left <= 0:
            self._finish()  # the endpoint's "K"
            self.t.close()

    def _send(self) -> None:
        assert self.t is not None
        while self.left > 0 and not self.paused:
            n = min(self.left, len(_UPBLOCK))
            self.t.write(_UPBLOCK[:n])
            self.left -= n

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.state == "data" and self.mode == "UP":
            self._send()

    def _fail(self, why: str) -> None:
        self._finish(RuntimeError(why))
        if self.t is not None:
            self.t.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc or ConnectionError(f"closed in state {self.state}"))


async def _open(
    socks: int, dest: int, mode: str, nbytes: int, on_open: Callable[[], None] | None = None
) -> asyncio.Transport:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    transport, _ = await loop.create_connection(
        lambda: SocksClient(dest, mode, nbytes, done, on_open), LOOPBACK, socks
    )
    try:
        await done
    except BaseException:
        transport.close()
        raise
    return transport


async def _many(
    socks: int, dest: int, n: int, nbytes: int, timeout: float, pace: int = 0
) -> dict[str, Any]:
    """``n`` connections at once (odd ones upload, even ones download ``nbytes``).

    With ``pace``, at most that many are between their TCP connect and their
    SOCKS reply at a time (the transfers still overlap); 0: all at once.
    """
    sem = asyncio.Semaphore(pace) if pace > 0 else None

    async def one(i: int) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if sem is not None and not released:
                released = True
                sem.release()

        if sem is not None:
            await sem.acquire()
        try:
            t = await _open(socks, dest, "UP" if i % 2 else "DOWN", nbytes, release)
            t.close()
        finally:
            release()

    start = time.perf_counter()
    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    elapsed = time.perf_counter() - start
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.sleep(0.1)  # the closes run before the loop ends
    errors = [t.exception() for t in done if t.exception() is not None]
    return {
        "seconds": round(elapsed, 3),
        "completed": len(done) - len(errors),
        "failed": len(errors),
        "timed_out": len(pending),
        "first_error": repr(errors[0]) if errors else None,
    }


async def _with_idle(
    socks: int, dest: int, n: int, timeout: float, settle: float, measure: Callable[[], Any]
) -> tuple[int, Any]:
    """Open ``n`` idle tunnelled connections (64 at a time), wait ``settle``
    seconds, call ``measure()`` while they are open, close them all."""
    sem = asyncio.Semaphore(64)
    opened: list[asyncio.Transport] = []

    async def one() -> None:
        async with sem:
            opened.append(await _open(socks, dest, "IDLE", 0))

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    try:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(settle)
        return len(opened), measure()
    finally:
        for t in opened:
            t.close()
        await asyncio.sleep(0.2)


# --- /proc ----------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def rss_map(pids: list[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError, RuntimeError):
            out[pid] = rss_kib(pid)
    return out


def growth(before: dict[int, int], after: dict[int, int]) -> int:
    """KiB grown by the processes present at both readings."""
    return sum(after[p] - before[p] for p in before.keys() & after.keys())


# --- the sections -----------------------------------------------------------------


def start_endpoint(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = work / "endpoint2.port"
    p = subprocess.Popen(
        [sys.executable, SUITE, "--endpoint", str(port_file)],
        stdin=subprocess.DEVNULL,
        preexec_fn=_preexec_nofile,
    )
    deadline = time.monotonic() + 15
    while not port_file.exists() or not port_file.read_text():
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            raise RuntimeError("the endpoint did not start")
        time.sleep(0.05)
    return p, int(port_file.read_text())


def wall_ms(cmd: list[str], timeout: float = 60) -> float:
    """Milliseconds from spawning ``cmd`` to its exit.

    A blocking wait, with a timer to kill a hung child: ``Popen.wait(timeout)``
    polls with sleeps of up to 50 ms, which would round every run up.
    """
    start = time.perf_counter()
    p = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        rc = p.wait()
    finally:
        timer.cancel()
    elapsed = (time.perf_counter() - start) * 1000
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {rc}")
    return elapsed


def measure_startup(runs: int) -> dict[str, Any]:
    """Wall time of ``wraith --help`` (and of ``python -c pass``, the floor)."""

    def times(cmd: list[str]) -> list[float]:
        out = []
        for i in range(runs + 1):  # the first run warms the page cache, not counted
            ms = wall_ms(cmd)
            if i:
                out.append(ms)
        return out

    wraith = [*wraith_command(), "--help"]
    floor = [sys.executable, "-c", "pass"]
    w, f = times(wraith), times(floor)
    say(f"start-up: wraith --help median {statistics.median(w):.1f} ms over {runs} runs")
    return {"command": " ".join(wraith), "runs": runs, "wraith_ms": w, "python_ms": f}


def _ttfb_once(cmd: list[str], socks: int, dest: int, timeout: float) -> float:
    """Seconds from spawning ``cmd`` (a SOCKS client on ``socks``) to the first byte."""
    start = time.perf_counter()
    p = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = start + timeout
        while time.perf_counter() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {p.returncode}")
            try:
                s = tp._socks_open(socks, LOOPBACK, dest)
            except (OSError, RuntimeError, AssertionError):
                time.sleep(0.002)
                continue
            with s:
                s.settimeout(max(0.1, deadline - time.perf_counter()))
                s.sendall(b"DOWN 1\n")
                if s.recv(1):
                    return time.perf_counter() - start
        raise RuntimeError(f"no first byte through {cmd[0]} within {timeout} s")
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def measure_ttfb(
    bench: tp.Bench, backend: str, dest: int, rounds: int, timeout: float = 30
) -> dict[str, Any]:
    name = f"wraith-{backend}-sansio"
    _, target, extra = bench.servers[name]
    out: dict[str, list[float]] = {"wraith": [], "openssh": []}
    for r in range(rounds):
        order = ["wraith", "openssh"] if r % 2 == 0 else ["openssh", "wraith"]
        for who in order:
            socks = tp._free_port()
            if who == "wraith":
                cmd = bench.wraith_connect_command(
                    backend, "sansio", AES, target, socks, extra, wraith=wraith_command()
                )
            else:
                cmd = bench.ssh_command(bench.sshd_port, AES, socks)
            secs = _ttfb_once(cmd, socks, dest, timeout)
            out[who].append(secs * 1000)
            say(f"ttfb round {r + 1}/{rounds} {who:8} {secs * 1000:8.1f} ms")
    return {"wraith_ms": out["wraith"], "openssh_ms": out["openssh"]}


def measure_concurrency(
    bench: tp.Bench,
    backend: str,
    dest: int,
    n: int,
    kib: int,
    rounds: int,
    timeout: float,
    pace: int = 0,
) -> dict[str, Any]:
    names = {"wraith": f"wraith-{backend}-sansio", "openssh": "openssh"}
    runs: dict[str, list[dict[str, Any]]] = {"wraith": [], "openssh": []}
    for r in range(rounds):
        order = ["wraith", "openssh"] if r % 2 == 0 else ["openssh", "wraith"]
        for who in order:
            res = asyncio.run(_many(bench.tunnels[names[who]], dest, n, kib * KIB, timeout, pace))
            runs[who].append(res)
            say(
                f"concurrency round {r + 1}/{rounds} {who:8} {n} x {kib} KiB: "
                f"{res['seconds']:7.2f} s, {res['completed']}/{n} complete"
                + (f", first error {res['first_error']}" if res["first_error"] else "")
            )
            time.sleep(0.5)  # let the closes drain
    return {"connections": n, "kib_each": kib, "timeout_s": timeout, "pace": pace, "runs": runs}


def measure_memory(bench: tp.Bench, backend: str, dest: int, n: int) -> dict[str, Any]:
    """RSS growth of ``wraith serve`` (and of ``sshd``'s session processes) per
    open idle tunnelled connection."""
    server = bench.servers[f"wraith-{backend}-sansio"][0]
    assert bench.sshd is not None
    settle = 1.0 if n >= 200 else 0.5
    out: dict[str, Any] = {"connections": n}
    for who, socks in (
        ("wraith", bench.tunnels[f"wraith-{backend}-sansio"]),
        ("openssh", bench.tunnels["openssh"]),
    ):

        def pids(who: str = who, sshd: int = bench.sshd.pid) -> list[int]:
            return [server.pid] if who == "wraith" else descendants(sshd)

        # Warm-up: a few tunnels opened and closed, so that code paths and caches
        # are in place before the first reading.
        asyncio.run(_with_idle(socks, dest, 20, 60, 0.2, lambda: None))
        time.sleep(0.5)
        before = rss_map(pids())
        opened, after = asyncio.run(
            _with_idle(socks, dest, n, 120, settle, lambda pids=pids: rss_map(pids()))
        )
        if opened != n:
            raise RuntimeError(f"{who}: only {opened} of {n} idle connections opened")
        grown = growth(before, after)
        out[who] = {
            "rss_before_kib": sum(before.values()),
            "rss_after_kib": sum(after.values()),
            "growth_kib": grown,
            "per_connection_kib": round(grown / n, 2),
            "processes": len(before),
        }
        say(f"memory {who:8}: +{grown} KiB for {n} idle connections ({grown / n:.1f} KiB each)")
    return out


# --- asyncssh (hidden modes: its own server and client processes) ----------------


def asyncssh_server(port: int, host_key: str, authorized_keys: str) -> None:
    import asyncssh

    class Server(asyncssh.SSHServer):  # type: ignore[misc]
        def connection_requested(
            self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
        ) -> bool:
            return True

    async def main() -> None:
        server = await asyncssh.listen(
            LOOPBACK,
            port,
            server_factory=Server,
            server_host_keys=[host_key],
            authorized_client_keys=authorized_keys,
            encryption_algs=[AES],
            compression_algs=None,
            allow_pty=False,
            config=None,
        )
        await server.wait_closed()

    asyncio.run(main())


def asyncssh_client(port: int, socks: int, key: str, known_hosts: str) -> None:
    import asyncssh

    async def main() -> None:
        conn = await asyncssh.connect(
            LOOPBACK,
            port,
            username=getpass.getuser(),
            client_keys=[key],
            known_hosts=known_hosts,
            agent_path=None,
            config=None,
            encryption_algs=[AES],
            compression_algs=None,
        )
        async with conn:
            await conn.forward_socks(LOOPBACK, socks)
            await conn.wait_closed()

    asyncio.run(main())


def add_asyncssh(bench: tp.Bench) -> dict[str, str]:
    """The ``asyncssh`` tunnel in ``bench/throughput.py``'s rounds (ratio to openssh)."""
    work = bench.work

    def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as f:
            p = subprocess.Popen(
                [sys.executable, SUITE, *args], stdin=subprocess.DEVNULL, stdout=f, stderr=f
            )
        bench.procs.append(p)
        return p

    port = tp._free_port()
    log = work / "asyncssh-server.log"
    p = spawn(
        ["--asyncssh-server", str(port), str(work / "hostkey"), str(work / "authorized_keys")], log
    )
    tp._wait_port(port, p, log=log)
    bench._trust_host_key(port)
    socks = tp._free_port()
    log = work / "asyncssh-client.log"
    p = spawn(["--asyncssh-client", str(port), str(socks), str(work / "id"), str(bench.known)], log)
    tp._wait_port(socks, p, log=log)
    bench.tunnels["asyncssh"] = socks
    return {"asyncssh": "openssh"}


def have_asyncssh() -> bool:
    try:
        importlib.metadata.version("asyncssh")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# --- rows ---------------------------------------------------------------------------


def make_row(
    row_id: str,
    what: str,
    unit: str,
    wraith: float,
    peer_name: str | None,
    peer: float | None,
    target: str,
    *,
    ratio_at_least: float | None = None,
    ratio_at_most: float | None = None,
    limit: float | None = None,
    ok: bool = True,
    note: str = "",
) -> dict[str, Any]:
    """A summary row.  ``threshold`` is the target in the row's own unit."""
    ratio = wraith / peer if peer else None
    threshold: float | None = None
    meets = ok
    if ratio_at_least is not None:
        assert peer is not None and ratio is not None
        threshold = peer * ratio_at_least
        meets = meets and ratio >= ratio_at_least
    if ratio_at_most is not None:
        assert peer is not None and ratio is not None
        threshold = peer * ratio_at_most
        meets = meets and ratio <= ratio_at_most
    if limit is not None:
        threshold = limit
        meets = meets and wraith <= limit
    return {
        "id": row_id,
        "what": what,
        "unit": unit,
        "wraith": round(wraith, 3),
        "peer_name": peer_name,
        "peer": None if peer is None else round(peer, 3),
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "threshold": None if threshold is None else round(threshold, 3),
        "meets": bool(meets),
        "note": note,
    }


def _rate_rows(
    res: dict[str, Any],
    backends: list[str],
    kind: str,
    label: str,
    suffix: str,
    peer: str,
    target: str,
    ratio: float,
) -> list[dict[str, Any]]:
    """Up and down rows per backend: ``wraith-BACKEND-sansio{suffix}`` against ``peer``."""
    return [
        make_row(
            f"{kind}-{d}/{backend}",
            f"{label} {d} ({backend})",
            "MB/s",
            res[f"wraith-{backend}-sansio{suffix}"][d]["median_mbps"],
            peer,
            res[peer][d]["median_mbps"],
            target,
            ratio_at_least=ratio,
        )
        for backend in backends
        for d in ("up", "down")
    ]


def throughput_rows(table: dict[str, Any], backends: list[str]) -> list[dict[str, Any]]:
    res = table["results"]
    rows = _rate_rows(
        res, backends, "throughput", "single stream", "", "openssh", ">= 0.8x OpenSSH", 0.8
    )
    if "asyncssh" in res:
        rows += _rate_rows(
            res, backends, "asyncssh", "vs asyncssh", "", "asyncssh", ">= 1.2x asyncssh", 1.2
        )
    return rows


def tls_rows(table: dict[str, Any], backends: list[str]) -> list[dict[str, Any]]:
    res = table["results"]
    if "openssh/tls" not in res:
        return []
    return _rate_rows(
        res, backends, "tls", "TLS", "/tls", "openssh/tls", ">= 0.7x OpenSSH+stunnel", 0.7
    )


def concurrency_row(c: dict[str, Any], backend: str) -> dict[str, Any]:
    n = c["connections"]
    w, o = c["runs"]["wraith"], c["runs"]["openssh"]
    all_w = all(r["completed"] == n for r in w)
    worst_w = min(r["completed"] for r in w)
    worst_o = min(r["completed"] for r in o)
    errors = {r["first_error"] for r in w if r["first_error"]}
    paced = f"{c['pace']} opening at a time" if c.get("pace") else "all opened at once"
    row = make_row(
        f"concurrency/{backend}",
        f"{n} conns x {c['kib_each']} KiB ({backend})",
        "s",
        statistics.median(r["seconds"] for r in w),
        "openssh",
        statistics.median(r["seconds"] for r in o),
        "all complete, <= 1.5x OpenSSH",
        ratio_at_most=1.5,
        ok=all_w,
        note=f"{paced}; complete: wraith {worst_w}/{n}, openssh {worst_o}/{n}"
        + (f"; wraith failed with {', '.join(sorted(errors))}" if errors else ""),
    )
    row["completed"] = {"wraith": worst_w, "openssh": worst_o, "of": n}
    return row


def ttfb_row(t: dict[str, Any], backend: str) -> dict[str, Any]:
    return make_row(
        f"ttfb/{backend}",
        f"time to first byte ({backend})",
        "ms",
        statistics.median(t["wraith_ms"]),
        "ssh -N -D",
        statistics.median(t["openssh_ms"]),
        "<= 1.5x ssh",
        ratio_at_most=1.5,
    )


def startup_row(s: dict[str, Any]) -> dict[str, Any]:
    row = make_row(
        "startup",
        "start-up: wraith --help",
        "ms",
        statistics.median(s["wraith_ms"]),
        "python -c pass",
        statistics.median(s["python_ms"]),
        f"<= {STARTUP_LIMIT_MS:.0f} ms",
        limit=STARTUP_LIMIT_MS,
        note="peer: the interpreter's own start-up, for information",
    )
    row["ratio"] = None  # the target is absolute
    return row


def memory_row(m: dict[str, Any], backend: str) -> dict[str, Any]:
    w = m["wraith"]["per_connection_kib"]
    o = m["openssh"]["per_connection_kib"]
    row = make_row(
        f"memory/{backend}",
        f"server RSS per idle conn ({backend})",
        "KiB",
        w,
        "sshd",
        o,
        f"<= {MEMORY_LIMIT_KIB:.0f} KiB/conn",
        limit=MEMORY_LIMIT_KIB,
        note=f"{m['connections']} idle connections; sshd for information",
    )
    if not o or o <= 0:
        row["ratio"] = None
    return row


# --- output -------------------------------------------------------------------------


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    digits = {"MB/s": 1, "s": 2, "ms": 1, "KiB": 1}.get(unit, 2)
    return f"{v:.{digits}f} {unit}"


def render(result: dict[str, Any]) -> str:
    head = f"{'row':36} {'wraith':>12} {'peer':>26} {'ratio':>7}  {'target':32} meets target"
    lines = [
        f"Wraith performance suite ({'quick' if result['quick'] else 'full'}), "
        f"{result['machine']}, {result['date']}",
        head,
        "-" * len(head),
    ]
    for row in result["rows"]:
        peer = f"{row['peer_name']} {_fmt(row['peer'], row['unit'])}" if row["peer_name"] else "-"
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
        lines.append(
            f"{row['what']:36} {_fmt(row['wraith'], row['unit']):>12} {peer:>26} {ratio:>7}  "
            f"{row['target']:32} {'yes' if row['meets'] else 'NO'}"
            + (f"  ({row['note']})" if row["note"] else "")
        )
    missed = [r["id"] for r in result["rows"] if not r["meets"]]
    lines.append(
        f"{len(result['rows']) - len(missed)}/{len(result['rows'])} rows meet their target"
        + (f"; missed: {', '.join(missed)}" if missed else "")
        + " (timings are reported, never asserted)"
    )
    return "\n".join(lines)


def write_png(result: dict[str, Any], path: Path) -> str | None:
    """A bar chart per row (Wraith, peer, dashed target line); None when written,
    else why not."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]'): no PNG written"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    cols = 4
    nrows = max(1, math.ceil(len(rows) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.3 * nrows), squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        labels, values = ["wraith"], [row["wraith"]]
        colors = ["tab:green" if row["meets"] else "tab:red"]
        if row["peer"] is not None:
            labels.append(row["peer_name"])
            values.append(row["peer"])
            colors.append("tab:gray")
        ax.barh(labels, values, color=colors)
        ax.invert_yaxis()
        top = max([*values, row["threshold"] or 0]) or 1
        if row["threshold"] is not None:
            ax.axvline(row["threshold"], color="black", linestyle="--", linewidth=1)
        for i, v in enumerate(values):
            ax.text(v + top * 0.01, i, _fmt(v, row["unit"]), va="center", fontsize=7)
        ax.set_xlim(0, top * 1.35)
        done = row.get("completed")
        incomplete = (
            f" (wraith {done['wraith']}/{done['of']} done)"
            if done and done["wraith"] < done["of"]
            else ""
        )
        ax.set_title(
            f"{row['what']}\n{row['target']}: {'met' if row['meets'] else 'MISSED'}{incomplete}",
            fontsize=8,
        )
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.suptitle(
        f"Wraith performance suite ({'quick' if result['quick'] else 'full'}), "
        f"{result['machine']}, {result['date']} (dashed: target)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    try:
        ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10)
        out["openssh"] = (ssh.stderr or ssh.stdout).strip()
    except OSError:
        pass
    for pkg in ("wraith", "asyncssh", "cryptography", "trio"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    return out


# --- main ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    backends = args.backends.split(",")
    main_backend = backends[0]
    nofile = raise_nofile()
    result: dict[str, Any] = {
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "versions": versions(),
        "params": {k: getattr(args, k) for k in (*PRESETS["full"], "conn_pace", "backends", "tls")}
        | {"nofile": nofile},
        "rows": [],
        "errors": {},
    }
    sections: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = result["errors"]
    started = time.monotonic()

    def section(name: str, fn: Callable[[], Any]) -> Any:
        say(f"== {name}")
        t0 = time.monotonic()
        try:
            value = fn()
        except Exception as e:  # a broken measurement, not a timing: reported, exit 1
            errors[name] = f"{type(e).__name__}: {e}"
            say(f"{name} FAILED: {errors[name]}")
            return None
        say(f"== {name}: {time.monotonic() - t0:.0f} s")
        return value

    # 0. Byte-code, as an installed package has it: pip compiles a wheel's
    # modules at install time, but an editable install under
    # PYTHONDONTWRITEBYTECODE (as on the CI machines) would recompile every
    # module of every spawned `wraith` (some 65-110 ms of start-up here).
    say(f"compiled byte-code: {compile_package()}")

    # 1. start-up, with nothing else running.
    s = section("startup", lambda: measure_startup(args.startup_runs))
    if s:
        sections["startup"] = s

    work = Path(tempfile.mkdtemp(prefix="wraith-suite-"))
    endpoint, dest = start_endpoint(work)
    try:
        # 2. memory: fresh servers that have served nothing before.
        def memory() -> dict[str, Any]:
            (work / "mem").mkdir()
            bench = tp.Bench(work / "mem")
            try:
                bench.add_openssh([AES])
                bench.add_wraith(main_backend, "sansio", AES)
                return measure_memory(bench, main_backend, dest, args.idle)
            finally:
                bench.close()

        m = section("memory", memory)
        if m:
            sections["memory"] = m

        # 3. time to first byte and concurrency, against one sshd and one wraith serve.
        (work / "conc").mkdir()
        bench = tp.Bench(work / "conc")
        try:
            ready = section(
                "setup",
                lambda: (bench.add_openssh([AES]), bench.add_wraith(main_backend, "sansio", AES)),
            )
            if ready is not None:
                t = section(
                    "ttfb", lambda: measure_ttfb(bench, main_backend, dest, args.ttfb_rounds)
                )
                if t:
                    sections["ttfb"] = t
                c = section(
                    "concurrency",
                    lambda: measure_concurrency(
                        bench,
                        main_backend,
                        dest,
                        args.connections,
                        args.conn_kib,
                        args.conn_rounds,
                        args.conn_timeout,
                        args.conn_pace,
                    ),
                )
                if c:
                    sections["concurrency"] = c
        finally:
            bench.close()
    finally:
        endpoint.terminate()
        endpoint.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    # 4. throughput: OpenSSH, Wraith, asyncssh and the /tls rows in alternating rounds.
    extra = add_asyncssh if have_asyncssh() else None
    if extra is None:
        errors["asyncssh"] = "asyncssh not installed (pip install -e '.[bench]')"
    table = section(
        "throughput",
        lambda: tp.run(
            args.size,
            args.rounds,
            backends,
            say,
            engines=("sansio",),
            ciphers=(AES,),
            tls=args.tls,
            extra=extra,
        ),
    )
    if table:
        sections["throughput"] = table

    rows: list[dict[str, Any]] = []
    if table:
        rows += throughput_rows(table, backends)
    if "concurrency" in sections:
        rows.append(concurrency_row(sections["concurrency"], main_backend))
    if "ttfb" in sections:
        rows.append(ttfb_row(sections["ttfb"], main_backend))
    if "startup" in sections:
        rows.append(startup_row(sections["startup"]))
    if "memory" in sections:
        rows.append(memory_row(sections["memory"], main_backend))
    if table:
        rows += tls_rows(table, backends)
    result["rows"] = rows
    result.update(sections)
    result["seconds"] = round(time.monotonic() - started, 1)
    tables = [tp.render(table)] if table else []
    return result, tables


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="the CI smoke version (small sizes)")
    full, quick = PRESETS["full"], PRESETS["quick"]

    def opt(name: str, typ: type, what: str) -> None:
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=typ,
            default=None,
            help=f"{what} (default {full[name]}; --quick {quick[name]})",
        )

    opt("size", int, "MB per single-stream transfer")
    opt("rounds", int, "alternating single-stream rounds")
    opt("connections", int, "concurrent SOCKS connections through one session")
    opt("conn_kib", int, "KiB moved by each concurrent connection")
    opt("conn_rounds", int, "alternating concurrency rounds")
    opt("conn_timeout", float, "seconds allowed for one concurrency run")
    p.add_argument(
        "--conn-pace",
        type=int,
        default=0,
        metavar="N",
        help="at most N concurrency connections between connect and SOCKS reply at a "
        "time (default 0: all opened at once)",
    )
    opt("ttfb_rounds", int, "alternating time-to-first-byte rounds")
    opt("idle", int, "idle tunnelled connections for the memory row")
    opt("startup_runs", int, "runs of wraith --help")
    p.add_argument(
        "--backends",
        default="trio,asyncio",
        help="Wraith backends for the throughput rows; the first also for the "
        "concurrency, time-to-first-byte and memory rows (default trio,asyncio)",
    )
    p.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the /tls rows (needs stunnel4; default: on)",
    )
    results = Path(__file__).resolve().parent / "results"
    p.add_argument(
        "--json",
        metavar="FILE",
        type=Path,
        default=results / "suite.json",
        help="where to write the JSON (default bench/results/suite.json)",
    )
    p.add_argument(
        "--png",
        metavar="FILE",
        type=Path,
        help="where to write the bar chart (default: the JSON path with .png)",
    )
    p.add_argument("--endpoint", metavar="PORTFILE", help=argparse.SUPPRESS)
    p.add_argument("--asyncssh-server", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--asyncssh-client", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.endpoint:
        serve_endpoint(args.endpoint)
        return 0
    if args.asyncssh_server:
        port, host_key, authorized = args.asyncssh_server
        asyncssh_server(int(port), host_key, authorized)
        return 0
    if args.asyncssh_client:
        port, socks, key, known = args.asyncssh_client
        asyncssh_client(int(port), int(socks), key, known)
        return 0
    preset = quick if args.quick else full
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)

    result, tables = run(args)
    for t in tables:
        print(t, flush=True)
        print(flush=True)
    print(render(result), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    png = args.png or args.json.with_suffix(".png")
    why_not = write_png(result, png)
    print(why_not or f"wrote {args.json} and {png}", flush=True)
    if why_not:
        print(f"wrote {args.json}", flush=True)
    for name, why in result["errors"].items():
        print(f"error in {name}: {why}", file=sys.stderr, flush=True)
    # A missed target never fails the run; a broken measurement does.
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
