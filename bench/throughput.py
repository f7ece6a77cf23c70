"""Single-stream SOCKS5 throughput: Wraith (each backend) vs OpenSSH, in one run.

    python bench/throughput.py                 # 512 MB up and down, 3 rounds
    python bench/throughput.py --size 64 --rounds 1   # the CI smoke run

Every tunnel carries the same transfer through its SOCKS5 port to a sink/source
process on loopback: Wraith's client and server (``wraith connect -D`` and
``wraith serve``) on trio and on asyncio, and OpenSSH's ``ssh -N -D`` against a
private ``sshd``, for each cipher asked for (``--ciphers``; aes128-gcm and
chacha20-poly1305 by default; paramiko has no chacha20-poly1305, so its rows
are aes-gcm only).  With ``--tls`` (the default) the same comparison runs with
SSH inside TLS: Wraith's ``tls://`` transport (``serve --listen tls://...``,
``connect tls://... --tls-ca``; Sans-IO engine, aes128-gcm) against OpenSSH
through two stunnel4 processes (``ssh`` -> client-mode stunnel -> TLS ->
server-mode stunnel -> ``sshd``), with a throwaway CA and server certificate
made in the temporary directory.  Rounds alternate between the tunnels so that
drift on a shared machine hits them alike; the table shows the median MB/s and
the ratio to OpenSSH over the same transport with the same cipher (the ``/tls``
rows to ``openssh/tls``).  Absolute numbers drift on shared machines; ratios
hold.  Timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import re
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


def tunnel_name(base: str, cipher: str, tls: bool = False) -> str:
    """``openssh``, ``wraith-trio-sansio``; other ciphers than aes128-gcm get a suffix.

    SSH inside TLS (always aes128-gcm) is ``openssh/tls``, ``wraith-trio-sansio/tls``.
    """
    return base + (TLS_SUFFIX if tls else SHORT[cipher])


TLS_SUFFIX = "/tls"
#: The name on the throwaway server certificate (SNI and the name checked).
TLS_SERVER_NAME = "wraith-bench.test"


CHUNK = 1 << 20
LOOPBACK = "127.0.0.1"
#: How the bench starts Wraith: as a module of this interpreter.
WRAITH = [sys.executable, "-m", "wraith"]


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


# --- TLS: a throwaway CA and server certificate, stunnel ----------------------


def make_pki(work: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server chain, server key), PEM, for ``TLS_SERVER_NAME``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Wraith bench CA"))
        .issuer_name(name("Wraith bench CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(TLS_SERVER_NAME))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_SERVER_NAME)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = work / "tls-ca.pem", work / "tls-cert.pem", work / "tls-key.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))  # leaf, then CA
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths[2].chmod(0o600)
    return paths


def stunnel_binary() -> str:
    found = shutil.which("stunnel4") or shutil.which("stunnel")
    if found is None:
        raise RuntimeError("stunnel4 not found (apt-get install stunnel4), or pass --no-tls")
    return found


def stunnel_version() -> str:
    """``stunnel 5.68`` (with its OpenSSL), from ``stunnel -version`` (it prints on stderr)."""
    out = subprocess.run(
        [stunnel_binary(), "-version"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    text = out.stdout + out.stderr
    version = re.search(r"^stunnel (\S+)", text, re.M)
    openssl = re.search(r"^Running\s+with OpenSSL (\S+)", text, re.M)
    return f"stunnel {version[1] if version else '(version unknown)'}" + (
        f" (OpenSSL {openssl[1]})" if openssl else ""
    )


def stunnel_config(log: Path, service: dict[str, str]) -> str:
    """A foreground stunnel configuration with one service.

    Tuned for an honest comparison: logging at ``warning`` (no per-connection
    lines, no debug), Nagle off on both sockets (as trio and asyncio do for
    Wraith's sockets), an immediate close, OpenSSL's default TLS versions and
    cipher suites (as Wraith's ``ssl`` contexts use).
    """
    lines = ["foreground = yes", "pid =", f"output = {log}", "debug = warning", "", "[ssh]"]
    lines += [f"{k} = {v}" for k, v in service.items()]
    lines += ["socket = l:TCP_NODELAY=1", "socket = r:TCP_NODELAY=1", "TIMEOUTclose = 0", ""]
    return "\n".join(lines)


# --- tunnels --------------------------------------------------------------------


def _wait_port(
    port: int, proc: subprocess.Popen[bytes], timeout: float = 30, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            why = f": {log.read_text(errors='replace')[-2000:]}" if log and log.exists() else ""
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}{why}")
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
        #: Wraith servers by tunnel name: (process, connect target, extra connect args).
        self.servers: dict[str, tuple[subprocess.Popen[bytes], str, list[str]]] = {}
        self.sshd: subprocess.Popen[bytes] | None = None
        self.sshd_port = 0
        self.known = work / "known_hosts"
        self.pki: tuple[Path, Path, Path] | None = None
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
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_pin_tunnel if PIN else None,
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
        self.sshd = p
        self.sshd_port = port
        self._trust_host_key(port)
        for cipher in ciphers:
            self._add_ssh(port, cipher, tunnel_name("openssh", cipher))

    def _trust_host_key(self, port: int) -> None:
        with self.known.open("a") as f:
            f.write(f"[{LOOPBACK}]:{port} {(self.work / 'hostkey.pub').read_text()}")

    def add_openssh_tls(self) -> None:
        """``openssh/tls``: ssh -> stunnel (client) -> TLS -> stunnel (server) -> sshd.

        Needs ``add_openssh`` first (the same ``sshd``).
        """
        assert self.sshd_port, "add_openssh first"
        ca, cert, key = self.tls_pki()
        stunnel = stunnel_binary()
        server_port, client_port = _free_port(), _free_port()
        for role, service, port in (
            (
                "server",
                {
                    "accept": f"{LOOPBACK}:{server_port}",
                    "connect": f"{LOOPBACK}:{self.sshd_port}",
                    "cert": str(cert),
                    "key": str(key),
                },
                server_port,
            ),
            (
                "client",
                {
                    "client": "yes",
                    "accept": f"{LOOPBACK}:{client_port}",
                    "connect": f"{LOOPBACK}:{server_port}",
                    "sni": TLS_SERVER_NAME,
                    "CAfile": str(ca),
                    "verifyChain": "yes",
                    "checkHost": TLS_SERVER_NAME,
                },
                client_port,
            ),
        ):
            log = self.work / f"stunnel-{role}.log"
            conf = self.work / f"stunnel-{role}.conf"
            conf.write_text(stunnel_config(log, service))
            _wait_port(port, self.spawn([stunnel, str(conf)]), log=log)
        self._trust_host_key(client_port)
        self._add_ssh(client_port, AES, tunnel_name("openssh", AES, tls=True))

    def tls_pki(self) -> tuple[Path, Path, Path]:
        if self.pki is None:
            self.pki = make_pki(self.work)
        return self.pki

    def ssh_command(self, port: int, cipher: str, socks: int) -> list[str]:
        """``ssh -N -D`` to the private sshd (or stunnel) on ``port``, SOCKS on ``socks``."""
        return [
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
            f"UserKnownHostsFile={self.known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-p",
            str(port),
            f"{getpass.getuser()}@{LOOPBACK}",
        ]

    def _add_ssh(self, port: int, cipher: str, name: str) -> None:
        socks = _free_port()
        p = self.spawn(self.ssh_command(port, cipher, socks))
        _wait_port(socks, p)
        self.tunnels[name] = socks

    def add_wraith(self, backend: str, engine: str, cipher: str, tls: bool = False) -> None:
        """A Wraith server and client; with ``tls``, SSH inside TLS (``tls://``)."""
        name = tunnel_name(f"wraith-{backend}-{engine}", cipher, tls)
        target, extra = self.start_wraith_server(name, backend, engine, tls)
        socks = _free_port()
        p = self.spawn(self.wraith_connect_command(backend, engine, cipher, target, socks, extra))
        _wait_port(socks, p)
        self.tunnels[name] = socks

    def start_wraith_server(
        self, name: str, backend: str, engine: str, tls: bool = False
    ) -> tuple[str, list[str]]:
        """Start ``wraith serve`` (kept as ``servers[name]``); return (target, connect args).

        The connect args pin the host key (and, with ``tls``, the CA and server name).
        """
        port = _free_port()
        listen, target = f"tcp://{LOOPBACK}:{port}", f"{LOOPBACK}:{port}"
        tls_serve: list[str] = []
        extra: list[str] = []
        if tls:
            ca, cert, key = self.tls_pki()
            listen = target = f"tls://{LOOPBACK}:{port}"
            tls_serve = ["--tls-cert", str(cert), "--tls-key", str(key)]
            extra = ["--tls-ca", str(ca), "--tls-server-name", TLS_SERVER_NAME]
        p = self.spawn(
            [
                *WRAITH,
                "serve",
                "--backend",
                backend,
                "--engine",
                engine,
                "--listen",
                listen,
                *tls_serve,
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
        extra = ["--host-key-fingerprint", fp, *extra]
        self.servers[name] = (p, target, extra)
        return target, extra

    def wraith_connect_command(
        self,
        backend: str,
        engine: str,
        cipher: str,
        target: str,
        socks: int,
        extra: list[str],
        wraith: list[str] | None = None,
    ) -> list[str]:
        """``wraith connect -D`` to ``target`` (from ``start_wraith_server``)."""
        return [
            *(wraith or WRAITH),
            "connect",
            "--backend",
            backend,
            "--engine",
            engine,
            "-i",
            str(self.work / "id"),
            "--ciphers",
            cipher,
            *extra,
            "-D",
            f"{LOOPBACK}:{socks}",
            target,
        ]

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


#: ``--pin``: (the CPU every tunnel process runs on, the CPU of the bench and its
#: endpoint), or None.
PIN: tuple[int, int] | None = None


def set_pin() -> tuple[int, int]:
    """Pin the tunnels to one CPU and this process (and the endpoint) to another."""
    global PIN
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least two CPUs")
    PIN = (cpus[0], cpus[1])
    os.sched_setaffinity(0, {PIN[1]})
    return PIN


def _pin_tunnel() -> None:
    assert PIN is not None
    os.sched_setaffinity(0, {PIN[0]})


def run(
    size_mb: int,
    rounds: int,
    backends: list[str],
    say: Callable[[str], None],
    engines: tuple[str, ...] = ("sansio", "paramiko"),
    ciphers: tuple[str, ...] = (AES, CHACHA),
    tls: bool = True,
    extra: Callable[[Bench], dict[str, str]] | None = None,
) -> dict[str, object]:
    """Measure every tunnel; ``extra(bench)`` may add more tunnels (another SSH
    implementation, say) to the same alternating rounds and returns their
    baselines, ``{tunnel name: baseline tunnel name}``."""
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
        if tls:
            # SSH inside TLS, aes128-gcm, each row against OpenSSH through stunnel.
            tls_base = tunnel_name("openssh", AES, tls=True)
            bench.add_openssh_tls()
            baseline[tls_base] = tls_base
            if "sansio" in engines:  # tls:// is the Sans-IO engine's only
                for backend in backends:
                    bench.add_wraith(backend, "sansio", AES, tls=True)
                    baseline[tunnel_name(f"wraith-{backend}-sansio", AES, tls=True)] = tls_base
        if extra is not None:
            baseline.update(extra(bench))
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
            "tls": stunnel_version() if tls else None,
            "machine": f"{os.cpu_count()} cores, {sys.version.split()[0]}"
            + (", each tunnel's two ends pinned to ONE core (--pin)" if PIN else ""),
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
        *(
            [f"/tls rows: SSH (aes128-gcm) inside TLS; OpenSSH through {table['tls']}"]
            if table.get("tls")
            else []
        ),
        f"{'tunnel':34} {'up MB/s':>9} {'x OpenSSH':>10} {'down MB/s':>10} {'x OpenSSH':>10}",
    ]
    results = table["results"]
    assert isinstance(results, dict)
    for name, row in results.items():
        lines.append(
            f"{name:34} {row['up']['median_mbps']:9.1f} {row['up']['ratio']:10.2f} "
            f"{row['down']['median_mbps']:10.1f} {row['down']['ratio']:10.2f}"
        )
    if any(str(name).endswith(TLS_SUFFIX) for name in results):
        lines.append(
            f"(/tls rows: 'x OpenSSH' is relative to {tunnel_name('openssh', AES, tls=True)}, "
            "OpenSSH through stunnel, not to plain openssh)"
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
    p.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure SSH inside TLS: Wraith's tls:// (Sans-IO, aes128-gcm) against "
        "OpenSSH through stunnel4 (default: on)",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="run every tunnel's client and server on one CPU and the bench and its "
        "sink/source on another: each row then shows how much one core moves, "
        "which depends far less on what else the machine is doing",
    )
    p.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    p.add_argument("--endpoint", metavar="PORTFILE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.endpoint:
        _serve_endpoint(args.endpoint)
        return 0
    if args.pin:
        tunnel_cpu, bench_cpu = set_pin()  # the endpoint inherits the bench's CPU
        print(f"pinned: tunnels on CPU {tunnel_cpu}, bench on CPU {bench_cpu}", file=sys.stderr)
    table = run(
        args.size,
        args.rounds,
        args.backends.split(","),
        lambda m: print(m, file=sys.stderr, flush=True),
        tuple(args.engines.split(",")),
        tuple(args.ciphers.split(",")),
        args.tls,
    )
    print(render(table), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
