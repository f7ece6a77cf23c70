"""A real Pebble (Let's Encrypt's test CA) on loopback, for the ACME tests.

Debian's ``pebble`` ships no certificate for its own HTTPS listener, so
:func:`run_pebble` makes a throwaway CA and a ``localhost``/``127.0.0.1``
certificate with ``cryptography``, writes Pebble's JSON config with free
loopback ports, and starts two processes:

* ``pebble-challtestsrv`` as the DNS server only (every A query answers
  ``127.0.0.1``, AAAA queries get nothing; its challenge servers are off);
* ``pebble -dnsserver`` with ``PEBBLE_VA_NOSLEEP=1`` (no artificial validation
  delay), ``PEBBLE_WFE_NONCEREJECT=0`` (no random ``badNonce``) and
  ``PEBBLE_AUTHZREUSE=0`` (every order is validated for real).
  ``PEBBLE_VA_ALWAYS_VALID`` is removed from the environment: validation is real.

Pebble's validator connects to ``127.0.0.1:http_port`` (HTTP-01) and
``127.0.0.1:tls_port`` (TLS-ALPN-01): the test's own responders listen there.
The issuing root is regenerated on every start; :meth:`Pebble.root_pem`
fetches it from the management interface (``/roots/0``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pki import make_pki

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"


def available() -> bool:
    return os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK)


@dataclass
class Pebble:
    #: The ACME directory URL.
    directory: str
    #: The CA that signed Pebble's own HTTPS certificate (trust it for ``directory``).
    ca_file: Path
    #: Where Pebble's validator connects for HTTP-01 and TLS-ALPN-01, on 127.0.0.1.
    http_port: int
    tls_port: int
    management: str
    log: Path

    def _get(self, path: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(self.management + path, context=ctx, timeout=10) as resp:
            return bytes(resp.read())

    def root_pem(self) -> bytes:
        """The root that issued every certificate of this run (Pebble makes a new one per run)."""
        return self._get("/roots/0")

    def intermediate_pem(self) -> bytes:
        return self._get("/intermediates/0")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port that is free for TCP and, for DNS, for UDP as well."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port")


def make_https_cert(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a localhost/127.0.0.1 certificate: (ca.pem, cert.pem, key.pem)."""
    (d / "https").mkdir(parents=True, exist_ok=True)
    made = make_pki(d / "https")
    return made.ca, made.cert, made.key


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], deadline: float, what: str) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def run_pebble(workdir: Path, *, validity: int = 300, timeout: float = 20.0) -> Iterator[Pebble]:
    """Run challtestsrv + Pebble in ``workdir``; certificates are valid ``validity`` seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = make_https_cert(workdir)
    acme_port, mgmt_port, http_port, tls_port = (free_port() for _ in range(4))
    dns_port, dns_mgmt_port = free_port(socket.SOCK_DGRAM), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}",
            "managementListenAddress": f"127.0.0.1:{mgmt_port}",
            "certificate": str(cert_file),
            "privateKey": str(key_file),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "certificateValidityPeriod": validity,
        }
    }
    config_file = workdir / "pebble-config.json"
    config_file.write_text(json.dumps(config, indent=2))
    log = workdir / "pebble.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
    env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as stack:
        logf = stack.enter_context(log.open("ab"))
        dns = subprocess.Popen(
            [
                CHALLTESTSRV,
                "-dns01",
                f"127.0.0.1:{dns_port}",
                "-management",
                f"127.0.0.1:{dns_mgmt_port}",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
        )
        stack.callback(_stop, dns)
        _wait_tcp(dns_mgmt_port, dns, deadline, "pebble-challtestsrv")
        ca = subprocess.Popen(
            [PEBBLE, "-config", str(config_file), "-dnsserver", f"127.0.0.1:{dns_port}"],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
        stack.callback(_stop, ca)
        pebble = Pebble(
            directory=f"https://127.0.0.1:{acme_port}/dir",
            ca_file=ca_file,
            http_port=http_port,
            tls_port=tls_port,
            management=f"https://127.0.0.1:{mgmt_port}",
            log=log,
        )
        ctx = ssl.create_default_context(cafile=str(ca_file))
        while True:
            if ca.poll() is not None:
                raise RuntimeError(f"pebble exited with {ca.returncode}:\n{pebble.log_text()}")
            try:
                with urllib.request.urlopen(pebble.directory, context=ctx, timeout=2) as resp:
                    if json.load(resp).get("newOrder"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"pebble did not answer:\n{pebble.log_text()}")
            time.sleep(0.05)
        _wait_tcp(mgmt_port, ca, deadline, "pebble management")
        yield pebble
