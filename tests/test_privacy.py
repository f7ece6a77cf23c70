"""The logging privacy rule, end to end: ``wraith serve`` and ``wraith connect`` at debug level.

The design says: no log line at any level may contain a tunnel destination, a
DNS name a client asked for, or a byte count.  This test drives real traffic
and every failure path we can reach from outside (SOCKS, ``-L``, ``-R``) with
destinations and sizes that cannot occur in a log by accident, stops both
processes with SIGINT so that end-of-session logging runs too, and then scans
every stdout and stderr line of both processes.

Choices that keep it free of false positives and false negatives:

* **Names.**  Every destination name carries one random token (``secrets``,
  so pytest-randomly's seeding cannot repeat it across runs) and the scan
  looks for the token alone, case-insensitively, so a lower-cased, truncated
  or ``repr()``-ed name is still caught.  Nothing here resolves ``*.localhost``
  (``hosts: files dns``, no nss-myhostname) and /etc/hosts is off limits, so
  the resolvable name is made resolvable by a ``sitecustomize`` shim given to
  both wraith processes through PYTHONPATH: it maps exactly that one name to
  127.0.0.1 inside ``socket.getaddrinfo`` (which trio and asyncio both call)
  and leaves every other name alone.  The unresolvable name ends in
  ``.invalid`` and fails in the real resolver.  Names never start with
  ``wraith-`` (a reserved namespace) except in the request that tests it.
* **Ports.**  The destination ports are picked outside the kernel's ephemeral
  range (/proc/sys/net/ipv4/ip_local_port_range).  Every port wraith itself
  logs legitimately (its listeners bind port 0, peers' source ports) is
  ephemeral, so the destination port cannot appear by coincidence; the echo
  server holds its port for the whole test, and the "refused" port is outside
  the range the kernel hands out, so no one else takes it.  The scan matches
  the number with digit lookarounds (stricter than ``\\b``: it also catches
  ``port61234x``).  PIDs are the one other number a log line carries (text
  ``wraith[PID]``, JSON ``"pid":PID``); those two fields are blanked before
  the scan, since pid_max can exceed 65535 and reach 7 digits.
* **Byte counts.**  Each stream carries 1,234,567 bytes each way; the scan
  looks for that, two, three and six times it, and the grouped spelling.
* **Not vacuous.**  The scan insists on lines that only appear with debug
  logging on (``session authenticated`` on the server, ``bad SOCKS request``
  for an unsupported command on the client), on the connection, auth and
  end-of-session lines, and on the requested log format having been used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import Keys
from helpers import (
    EchoServer,
    Proc,
    SocksFailed,
    clean_env,
    pattern_bytes,
    recv_exact,
    socks_connect,
    start_client,
    start_server,
)

PAYLOAD = 1_234_567
TIMEOUT = 60.0


# --- distinctive destinations ------------------------------------------------------


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _distinctive_ports(n: int) -> list[int]:
    """Random free 5-digit ports outside the ephemeral range (see the module docstring)."""
    lo, hi = _ephemeral_range()
    candidates = [p for p in range(10000, 65536) if not lo <= p <= hi]
    assert candidates, f"ephemeral range {lo}-{hi} leaves no distinctive port"
    chosen: set[int] = set()
    for _ in range(500):
        if len(chosen) == n:
            break
        port = candidates[secrets.randbelow(len(candidates))]
        if port in chosen:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.add(port)
    assert len(chosen) == n, "no free distinctive ports"
    return sorted(chosen)


class _EchoOn(EchoServer):
    """helpers.EchoServer, on a port of our choosing."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port), backlog=64)
        self.port = port
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()


_SHIM = '''\
"""Test shim (tests/test_privacy.py): resolve one made-up name to 127.0.0.1."""
import socket

_ALIAS = {alias!r}
_real_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    name = host.decode("ascii", "replace") if isinstance(host, (bytes, bytearray)) else host
    if isinstance(name, str) and name.lower().rstrip(".") == _ALIAS:
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = getaddrinfo
'''


def _shim_env(tmp_path: Path, alias: str) -> dict[str, str]:
    shim = tmp_path / "resolver-shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(_SHIM.format(alias=alias), encoding="ascii")
    path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    return clean_env(PYTHONPATH=path)


# --- traffic -----------------------------------------------------------------------


def _roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` on a connected socket, half-close, read everything back."""
    received = bytearray()
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    while data := sock.recv(262144):
        received += data
    t.join(TIMEOUT)
    if errors:
        raise errors[0]
    return bytes(received)


def _expect_echo(sock: socket.socket, seed: int, what: str) -> None:
    payload = pattern_bytes(PAYLOAD, seed=seed)
    with sock:
        got = _roundtrip(sock, payload)
    assert len(got) == len(payload), f"{what}: echoed {len(got)} of {len(payload)} bytes"
    assert got == payload, f"{what}: echo differs"


def _expect_dead_end(port: int, what: str) -> None:
    """A forward whose destination cannot be reached: no data comes back, the stream ends."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        try:
            sock.sendall(b"hello?")
            data = sock.recv(4096)
        except ConnectionError:
            return
    assert data == b"", f"{what}: got {data!r} from an unreachable destination"


def _expect_socks_refusal(socks_port: int, host: str, port: int) -> None:
    with pytest.raises((SocksFailed, ConnectionError)):
        socks_connect(socks_port, host, port, timeout=TIMEOUT).close()


def _socks_bind_request(socks_port: int) -> None:
    """A SOCKS5 BIND (unsupported): the client logs "bad SOCKS request" at debug."""
    with socket.create_connection(("127.0.0.1", socks_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"\x05\x01\x00")
        assert recv_exact(sock, 2) == b"\x05\x00"
        sock.sendall(b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50")
        assert recv_exact(sock, 2)[1] == 0x07  # command not supported


# --- shutting down and reading the logs --------------------------------------------


def _interrupt(proc: Proc) -> None:
    """SIGINT (the graceful path: KeyboardInterrupt unwinds every task), then collect."""
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(20)
    proc.stop()


_PID_FIELDS = re.compile(r'wraith\[\d+\]|"pid":\s*\d+')


def _lines(proc: Proc) -> list[tuple[str, str]]:
    return [("stdout", x) for x in proc.stdout] + [("stderr", x) for x in proc.stderr]


def _leaks(who: str, proc: Proc, needles: dict[str, re.Pattern[str]]) -> list[str]:
    found = []
    for stream, line in _lines(proc):
        scrubbed = _PID_FIELDS.sub("<pid>", line)
        for what, regex in needles.items():
            if regex.search(scrubbed):
                found.append(f"{who} {stream}: [{what}] {line}")
    return found


def _number(n: int) -> re.Pattern[str]:
    return re.compile(rf"(?<!\d){n}(?!\d)")


def _require(who: str, proc: Proc, patterns: list[str]) -> None:
    text = [line for _, line in _lines(proc)]
    missing = [p for p in patterns if not any(re.search(p, line) for line in text)]
    assert not missing, f"{who} never logged {missing}: is logging on?\n" + proc.output()


def _require_format(who: str, proc: Proc, fmt: str) -> None:
    records = []
    for line in proc.stderr:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and {"level", "message"} <= doc.keys():
            records.append(doc)
    if fmt == "json":
        assert any(r["level"] == "debug" for r in records), (
            f"{who}: no JSON debug record\n" + proc.output()
        )
    else:
        assert not records, f"{who}: JSON records in text mode\n" + proc.output()
        assert any(re.search(r" wraith\[\d+\]: DEBUG ", x) for x in proc.stderr), (
            f"{who}: no text-format DEBUG line\n" + proc.output()
        )


# --- the test ------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.parametrize("json_side", ["server", "client"], ids=lambda s: f"json-{s}")
def test_logs_never_name_destinations_or_byte_counts(
    backend: str, tmp_path: Path, keys: Keys, json_side: str
) -> None:
    token = f"q{secrets.token_hex(6)}"
    good = f"ok{token}.test"  # resolves to 127.0.0.1, through the shim only
    bad = f"nx{token}.invalid"  # resolves nowhere
    dest_port, refused_port = _distinctive_ports(2)
    env = _shim_env(tmp_path, good)
    server_format = "json" if json_side == "server" else "text"
    client_format = "json" if json_side == "client" else "text"

    echo = _EchoOn(dest_port)
    server = client = None
    try:
        server = start_server(
            backend,
            tmp_path,
            authorized_keys=keys.authorized_keys,
            extra=["--log-format", server_format],
            env=env,
        )
        client = start_client(
            backend,
            server,
            keys.client,
            env=env,
            args=[
                "--log-format",
                client_format,
                "-D",
                "127.0.0.1:0",
                "-L",
                f"127.0.0.1:0:{good}:{dest_port}",
                "-L",
                f"127.0.0.1:0:{bad}:{dest_port}",
                "-R",
                f"0:{good}:{dest_port}",
                "-R",
                f"0:{bad}:{dest_port}",
            ],
        )
        assert client.socks_port is not None
        # The listener lines follow the order of -L / -R (they name no destination).
        assert len(client.local_ports) == 2, client.proc.output()
        assert len(client.remote_ports) == 2, client.proc.output()
        ours = {server.port, client.socks_port, *client.local_ports, *client.remote_ports}
        assert not ours & {dest_port, refused_port}  # cannot happen: see the docstring

        # Successful traffic through each kind of tunnel, to the unique name and port.
        _expect_echo(socks_connect(client.socks_port, good, dest_port, timeout=TIMEOUT), 1, "-D")
        _expect_echo(
            socket.create_connection(("127.0.0.1", client.local_ports[0]), timeout=TIMEOUT),
            2,
            "-L",
        )
        _expect_echo(
            socket.create_connection(("127.0.0.1", client.remote_ports[0]), timeout=TIMEOUT),
            3,
            "-R",
        )
        assert echo.accepted == 3

        # Failure paths, each with a destination that must not be logged either.
        _expect_socks_refusal(client.socks_port, bad, dest_port)  # does not resolve
        _expect_socks_refusal(client.socks_port, good, refused_port)  # connection refused
        _expect_socks_refusal(client.socks_port, f"Wraith-{token}", dest_port)  # reserved
        _expect_socks_refusal(client.socks_port, f"{token}..test", dest_port)  # invalid name
        _expect_socks_refusal(client.socks_port, f"{token}\x01.test", dest_port)  # unprintable
        _expect_dead_end(client.local_ports[1], "-L to an unresolvable name")
        _expect_dead_end(client.remote_ports[1], "-R to an unresolvable name")
        _socks_bind_request(client.socks_port)
        assert echo.accepted == 3

        # End of session: the client goes first, so the server logs the session's end.
        _interrupt(client.proc)
        server.proc.wait_for(r"session closed src=", stream="stderr", timeout=TIMEOUT)
        _interrupt(server.proc)
    finally:
        if client is not None:
            client.proc.stop()
        if server is not None:
            server.proc.stop()
        echo.close()
    assert server is not None and client is not None

    # Logging really happened, at debug level, in the requested format.
    _require(
        "server",
        server.proc,
        [
            r"connection from src=127\.0\.0\.1 port=\d+",
            r"auth result=success method=publickey",
            r"session authenticated src=",
            r"session closed src=",
        ],
    )
    _require(
        "client",
        client.proc,
        [
            r"^connected to ",
            r"SOCKS5 proxy listening on ",
            r"remote forward listening on server port \d+",
            r"bad SOCKS request: SOCKS5 command BIND is not supported",
        ],
    )
    _require_format("server", server.proc, server_format)
    _require_format("client", client.proc, client_format)

    needles = {
        "destination name": re.compile(re.escape(token), re.IGNORECASE),
        "destination port": _number(dest_port),
        "refused destination port": _number(refused_port),
        "byte count": re.compile(
            "|".join(
                [f"(?<!\\d){k * PAYLOAD}(?!\\d)" for k in (1, 2, 3, 6)]
                + [re.escape(f"{PAYLOAD:,}")]
            )
        ),
    }
    leaks = _leaks("server", server.proc, needles) + _leaks("client", client.proc, needles)
    assert not leaks, (
        f"log lines name a destination ({good}, {bad}, token {token}, ports {dest_port} "
        f"and {refused_port}) or a byte count ({PAYLOAD}):\n" + "\n".join(leaks)
    )
