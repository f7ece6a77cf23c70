"""Single-stream SOCKS5 throughput: Wraith (each backend) vs OpenSSH, in one run.

    python bench/throughput.py                 # 512 MB up and down, 3 rounds
    python bench/throughput.py --size 64 --rounds 1   # the CI smoke run

Every tunnel carries the same transfer through its SOCKS5 port to a sink/source
process on loopback: Wraith's client and server (``wraith connect -D`` and
``wraith serve``) on trio and on asyncio, and OpenSSH's ``ssh -N -D`` against a
private ``sshd``, for each cipher asked for (``--ciphers``; aes128-gcm and
chacha20-poly1305 by default; paramiko has no chacha20-poly1305, so its rows
are aes-gcm only).  Rounds alternate between the tunnels so that drift on a
shared machine hits them alike; the table shows the median MB/s and the ratio
to OpenSSH with the same cipher.  Absolute numbers drift on shared machines; ratios
hold.  Timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
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

MB = 1_000_000
AES = "aes128-gcm@openssh.com"
CHACHA = "chacha20-poly1305@openssh.com"
ALL_CIPHERS = (AES, "aes256-gcm@openssh.com", CHACHA)
SHORT = {AES: "", "aes256-gcm@openssh.com": "/aes256", CHACHA: "/chacha20"}
#: Ciphers each Wraith engine offers.
ENGINE_CIPHERS = {"sansio": ALL_CIPHERS, "paramiko": ALL_CIPHERS[:2]}


def tunnel_name(base: str, cipher: str) -> str:
    """``openssh``, ``wraith-trio-sansio``; other ciphers than aes128-gcm get a suffix."""
    return base + SHORT[cipher]


CHUNK = 1 << 20
LOOPBACK = "127.0.0.1"


# --- the sink/source endpoint (runs as its own process) ------------------------


def _serve_endpoint(port_file: str) -> None:
    srv = socket.create_server((LOOPBACK, 0), backlog=64)
    Path(port_file).write_text(str(srv.getsockname()[1]))
    block = memoryview(os.urandom(CHUNK))
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_endpoint_conn, args=(conn, block), daemon=True).start()


def _endpoint_conn(conn: socket.socket, block: memoryview) -> None:
    with conn:
        header = b""
        while not header.endswith(b"\n"):
            data = conn.recv(1)
            if not data:
                return
            header += data
        mode, n_text = header.decode().split()
        n = int(n_text)
        if mode == "UP":
            buf = bytearray(CHUNK)
            left = n
            while left:
                got = conn.recv_into(buf, min(left, CHUNK))
                if not got:
                    return
                left -= got
            conn.sendall(b"K")
        else:
            left = n
            while left:
                sent = conn.send(block[: min(left, CHUNK)])
                left -= sent


# --- measuring ----------------------------------------------------------------


def _socks_open(socks_port: int, host: str, port: int) -> socket.socket:
    s = socket.create_connection((LOOPBACK, socks_port), timeout=120)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    name = host.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
    head = _recv_exact(s, 4)
    if head[1] != 0:
        raise RuntimeError(f"SOCKS reply {head[1]}")
    _recv_exact(s, {1: 4, 4: 16}.get(head[3], 0) + 2)
    return s


def _recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = s.recv(n - len(out))
        if not data:
            raise ConnectionError("EOF")
        out += data
    return out


def measure(socks_port: int, endpoint_port: int, direction: str, nbytes: int) -> float:
    """MB/s of one transfer of ``nbytes`` through the SOCKS port."""
    s = _socks_open(socks_port, "localhost", endpoint_port)
    with s:
        s.sendall(f"{'UP' if direction == 'up' else 'DOWN'} {nbytes}\n".encode())
        start = time.perf_counter()
        if direction == "up":
            block = memoryview(os.urandom(CHUNK))
            left = nbytes
            while left:
                left -= s.send(block[: min(left, CHUNK)])
            if s.recv(1) != b"K":
                raise RuntimeError("upload not acknowledged")
        else:
            buf = bytearray(CHUNK)
            left = nbytes
            while left:
                got = s.recv_into(buf, min(left, CHUNK))
                if not got:
                    raise ConnectionError("EOF during download")
                left -= got
        elapsed = time.perf_counter() - start
    return nbytes / MB / elapsed


# --- tunnels --------------------------------------------------------------------


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tunnels: dict[str, int] = {}  # name -> SOCKS port
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "id")], check=True
        )
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "hostkey")],
            check=True,
        )
        (work / "authorized_keys").write_text((work / "id.pub").read_text())
        (work / "authorized_keys").chmod(0o600)
        (work / "id").chmod(0o600)

    def spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.procs.append(p)
        return p

    def add_openssh(self, ciphers: list[str]) -> None:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        port = _free_port()
        cfg = self.work / "sshd_config"
        cfg.write_text(
            f"Port {port}\nListenAddress {LOOPBACK}\nHostKey {self.work / 'hostkey'}\n"
            f"AuthorizedKeysFile {self.work / 'authorized_keys'}\nUsePAM no\nStrictModes no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            f"Ciphers {','.join(ALL_CIPHERS)}\n"
            f"PidFile {self.work / 'sshd.pid'}\n"
        )
        os.makedirs("/run/sshd", exist_ok=True)
        p = self.spawn([sshd, "-D", "-e", "-f", str(cfg)])
        _wait_port(port, p)
        known = self.work / "known_hosts"
        known.write_text(f"[{LOOPBACK}]:{port} {(self.work / 'hostkey.pub').read_text()}")
        for cipher in ciphers:
            self._add_ssh(port, known, cipher)

    def _add_ssh(self, port: int, known: Path, cipher: str) -> None:
        socks = _free_port()
        p = self.spawn(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-N",
                "-D",
                f"{LOOPBACK}:{socks}",
                "-c",
                cipher,
                "-i",
                str(self.work / "id"),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                f"UserKnownHostsFile={known}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-p",
                str(port),
                f"{getpass.getuser()}@{LOOPBACK}",
            ]
        )
        _wait_port(socks, p)
        self.tunnels[tunnel_name("openssh", cipher)] = socks

    def add_wraith(self, backend: str, engine: str, cipher: str) -> None:
        port = _free_port()
        wraith = [sys.executable, "-m", "wraith"]
        p = self.spawn(
            [
                *wraith,
                "serve",
                "--backend",
                backend,
                "--engine",
                engine,
                "--listen",
                f"tcp://{LOOPBACK}:{port}",
                "--host-key",
                str(self.work / "hostkey"),
                "--authorized-keys",
                str(self.work / "authorized_keys"),
                "--state-dir",
                str(self.work / f"state-{backend}"),
            ]
        )
        _wait_port(port, p)
        fp = subprocess.run(
            ["ssh-keygen", "-lf", str(self.work / "hostkey.pub")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[1]
        socks = _free_port()
        p = self.spawn(
            [
                *wraith,
                "connect",
                "--backend",
                backend,
                "--engine",
                engine,
                "-i",
                str(self.work / "id"),
                "--host-key-fingerprint",
                fp,
                "--ciphers",
                cipher,
                "-D",
                f"{LOOPBACK}:{socks}",
                f"{LOOPBACK}:{port}",
            ]
        )
        _wait_port(socks, p)
        self.tunnels[tunnel_name(f"wraith-{backend}-{engine}", cipher)] = socks

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def run(
    size_mb: int,
    rounds: int,
    backends: list[str],
    say: Callable[[str], None],
    engines: tuple[str, ...] = ("sansio", "paramiko"),
    ciphers: tuple[str, ...] = (AES, CHACHA),
) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="wraith-bench-"))
    port_file = work / "endpoint.port"
    endpoint = subprocess.Popen(
        [sys.executable, __file__, "--endpoint", str(port_file)], stdin=subprocess.DEVNULL
    )
    bench = Bench(work)
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("endpoint did not start")
            time.sleep(0.05)
        endpoint_port = int(port_file.read_text())
        bench.add_openssh(list(ciphers))
        baseline = {}
        for cipher in ciphers:
            baseline[tunnel_name("openssh", cipher)] = tunnel_name("openssh", cipher)
            for engine in engines:
                if cipher not in ENGINE_CIPHERS[engine]:
                    continue
                for backend in backends:
                    bench.add_wraith(backend, engine, cipher)
                    name = tunnel_name(f"wraith-{backend}-{engine}", cipher)
                    baseline[name] = tunnel_name("openssh", cipher)
        nbytes = size_mb * MB
        results: dict[str, dict[str, list[float]]] = {
            name: {"up": [], "down": []} for name in bench.tunnels
        }
        # Warm-up: one small transfer per tunnel (connection set-up, caches).
        for socks in bench.tunnels.values():
            measure(socks, endpoint_port, "up", 4 * MB)
        for r in range(rounds):
            names = list(bench.tunnels)
            if r % 2:
                names.reverse()  # alternate the order between rounds
            for direction in ("up", "down"):
                for name in names:
                    mbps = measure(bench.tunnels[name], endpoint_port, direction, nbytes)
                    results[name][direction].append(mbps)
                    say(f"round {r + 1}/{rounds} {direction:4} {name:34} {mbps:8.1f} MB/s")
        table: dict[str, object] = {
            "size_mb": size_mb,
            "rounds": rounds,
            "ciphers": list(ciphers),
            "machine": f"{os.cpu_count()} cores, {sys.version.split()[0]}",
            "results": {},
        }
        for name, per in results.items():
            row: dict[str, object] = {"baseline": baseline[name]}
            for d in ("up", "down"):
                med = statistics.median(per[d])
                base = statistics.median(results[baseline[name]][d])
                row[d] = {"median_mbps": round(med, 1), "ratio": round(med / base, 3)}
            table["results"][name] = row  # type: ignore[index]
        return table
    finally:
        bench.close()
        endpoint.terminate()
        endpoint.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def render(table: dict[str, object]) -> str:
    lines = [
        f"single-stream SOCKS5 throughput, {table['size_mb']} MB per transfer, "
        f"median of {table['rounds']}, {table['machine']}; "
        "ratios are to OpenSSH with the same cipher (no suffix: aes128-gcm)",
        f"{'tunnel':34} {'up MB/s':>9} {'x OpenSSH':>10} {'down MB/s':>10} {'x OpenSSH':>10}",
    ]
    results = table["results"]
    assert isinstance(results, dict)
    for name, row in results.items():
        lines.append(
            f"{name:34} {row['up']['median_mbps']:9.1f} {row['up']['ratio']:10.2f} "
            f"{row['down']['median_mbps']:10.1f} {row['down']['ratio']:10.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=int, default=512, help="MB per transfer (default 512)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--backends", default="trio,asyncio", help="comma-separated Wraith backends")
    p.add_argument("--engines", default="sansio,paramiko", help="comma-separated Wraith engines")
    p.add_argument(
        "--ciphers",
        default=f"{AES},{CHACHA}",
        help=f"comma-separated ciphers, each measured (default {AES},{CHACHA})",
    )
    p.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    p.add_argument("--endpoint", metavar="PORTFILE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.endpoint:
        _serve_endpoint(args.endpoint)
        return 0
    table = run(
        args.size,
        args.rounds,
        args.backends.split(","),
        lambda m: print(m, file=sys.stderr, flush=True),
        tuple(args.engines.split(",")),
        tuple(args.ciphers.split(",")),
    )
    print(render(table), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
