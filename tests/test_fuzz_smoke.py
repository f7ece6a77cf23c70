"""Run every fuzz harness on a bounded corpus, in-process and as a real atheris process.

In-process runs catch a broken invariant quickly with a readable traceback; the
subprocess run proves each harness still starts under atheris and survives a
short coverage-guided session.  Neither skips: if atheris is missing or cannot
run under this interpreter, these tests fail.
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import atheris  # noqa: F401  (imported so a missing atheris fails collection, not skips)
import pytest

# Import the targets before the harnesses, so the harnesses' instrument_imports() finds
# them loaded and leaves them uninstrumented inside pytest.
import wraith.proto.decoy
import wraith.proto.destpolicy
import wraith.proto.forwards
import wraith.proto.names
import wraith.proto.sniff
import wraith.proto.socks5
import wraith.proto.ssh.cipher
import wraith.proto.ssh.connection
import wraith.proto.ssh.transport
import wraith.proto.ssh.userauth
import wraith.proto.stealth
import wraith.proto.target  # noqa: F401
from wraith.proto.socks5 import AddressType, Connected, ConnectRequest

FUZZ_DIR = Path(__file__).resolve().parent.parent / "fuzz"
HARNESSES = [
    "fuzz_socks5_server",
    "fuzz_socks5_client",
    "fuzz_forwards",
    "fuzz_names",
    "fuzz_destpolicy",
    "fuzz_sniff",
    "fuzz_proxyproto",
    "fuzz_target",
    "fuzz_ssh_userauth",
    "fuzz_ssh_connection",
    "fuzz_ssh_packets",
    "fuzz_ssh_transport",
    "fuzz_stealth",
    "fuzz_decoy",
]
TRAILER = b"payload"

SERVER_INPUTS = [
    (b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50", False),
    (b"\x05\x01\x00" + b"\x05\x01\x00\x04" + bytes(15) + b"\x01\x01\xbb", False),
    (b"\x05\x01\x00" + b"\x05\x01\x00\x03\x0bexample.com\x1f\x90", False),
    (b"\x05\x01\x02\x01\x04user\x06secret" + b"\x05\x01\x00\x03\x01h\x00\x16", True),
]
SERVER_ERRORS = [
    (b"\x05\x01\x00\x05\x02\x00\x01" + bytes(6), False),
    (b"\x05\x01\x00\x05\x01\x00\x07" + bytes(6), False),
    (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", False),
    (b"\x05\x01\x02\x01\x04user\x05wrong", True),
]
CLIENT_INPUTS = [
    (b"\x05\x00" + b"\x05\x00\x00\x01\xc0\x00\x02\x01\x04\x38", False),
    (b"\x05\x02\x01\x00" + b"\x05\x00\x00\x04" + bytes(16) + b"\x00\x00", True),
    (b"\x05\x00" + b"\x05\x00\x00\x03\x05proxy\x00\x50", False),
]
SPECS = ["8080:localhost:80", "[::1]:8080:[2001:db8::1]:443", "*:1080", "0:h:22", "1080"]
TARGETS = ["user@host:2222", "tcp://[::1]:22", "h", "tcp://0.0.0.0:0"]
HOSTS = ["example.com", "[::1]", "127.1", "WRAITH-control", "169.254.169.254", ""]
DEST_POLICIES = [
    "db.internal\x00*.internal\x0010.0.0.0/8",
    "10.1.2.3\x0010.0.0.0/8:8000-9000\x00[::ffff:10.1.0.0/112]\x00*",
    "::ffff:127.0.0.1\x00127.0.0.1/32:443",
    "x\x00\x00",
    "LocalHost.\x00localhost:1-1000\x00db?.x",
]
# fuzz_stealth: mode byte, cut byte, then what follows its prefix for that mode.
STEALTH_INPUTS = [
    b"\x01\x10Host: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nSSH-2.0-x\r\n",
    b"\x00\x05GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"\x03\x07Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: Bz3qJYTGdOe8gUSpLosEdiLKDrk=\r\n\r\nSSH-2.0-s\r\n",
    b"\x02\x03HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
]
# fuzz_decoy: cut byte, then the client's bytes.
DECOY_INPUTS = [
    b"\x10GET / HTTP/1.1\r\nHost: example.com\r\n\r\nHEAD /a%20b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\x07GET /old?q=1 HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
    b"\x03POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_fuzz_{name}", FUZZ_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=HARNESSES)
def harness(request: pytest.FixtureRequest) -> ModuleType:
    return load(request.param)


def seeds() -> list[bytes]:
    """Valid messages, as they would sit in a corpus."""
    return (
        [bytes([0, 0, 255]) + m for m, _ in SERVER_INPUTS + SERVER_ERRORS + CLIENT_INPUTS]
        + [bytes([i]) + s.encode() for i, s in enumerate(SPECS)]
        + [b"\x01\xbb" + h.encode() for h in HOSTS]
        + [bytes([i]) + t.encode() for i, t in enumerate(TARGETS)]
        + [b"\x01\xbb" + p.encode() for p in DEST_POLICIES]
        + STEALTH_INPUTS
        + DECOY_INPUTS
    )


def corpus(seed: int) -> Iterator[bytes]:
    """A few hundred deterministic inputs: random bytes, then mutated valid messages."""
    rng = random.Random(seed)
    for _ in range(300):
        yield rng.randbytes(rng.randrange(0, 300))
    for base in seeds():
        yield base
        for _ in range(20):
            data = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                if data and rng.random() < 0.7:
                    data[rng.randrange(len(data))] = rng.randrange(256)
                else:
                    data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
            yield bytes(data)


def test_harness_survives_bounded_corpus(harness: ModuleType) -> None:
    for data in corpus(seed=1234):
        harness.TestOneInput(data)


def three_ways(data: bytes) -> Iterator[list[bytes]]:
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    yield [data + TRAILER]


def test_server_check_on_valid_messages() -> None:
    fuzz = load("fuzz_socks5_server")
    for data, creds in SERVER_INPUTS:
        for chunks in three_ways(data):
            got = fuzz.check(chunks, credentials=creds, eof=False)
            assert isinstance(got, ConnectRequest), (data, chunks)
    assert fuzz.check([SERVER_INPUTS[2][0]], credentials=False, eof=True).address_type is (
        AddressType.DOMAIN
    )
    for data, creds in SERVER_ERRORS:
        for chunks in three_ways(data):
            assert fuzz.check(chunks, credentials=creds, eof=True) is None


def test_client_check_on_valid_answers() -> None:
    fuzz = load("fuzz_socks5_client")
    for data, creds in CLIENT_INPUTS:
        for target in range(len(fuzz.TARGETS)):
            for chunks in three_ways(data):
                got = fuzz.check(chunks, target=target, credentials=creds, eof=False)
                assert isinstance(got, Connected), (data, chunks)


def test_forwards_and_names_check() -> None:
    forwards = load("fuzz_forwards")
    assert [forwards.check(0, s) for s in SPECS] == [True, True, False, True, False]
    assert [forwards.check(1, s) for s in SPECS] == [True, True, False, True, False]
    assert [forwards.check(2, s) for s in SPECS] == [False, False, True, False, True]
    names = load("fuzz_names")
    assert [names.check(h, 443) for h in HOSTS] == [
        "example.com",
        "::1",
        None,
        "wraith-control",
        "169.254.169.254",
        None,
    ]


def test_destpolicy_check() -> None:
    fuzz = load("fuzz_destpolicy")
    got = []
    for text in DEST_POLICIES:
        host, *patterns = text.split("\x00")
        got.append(fuzz.check(host, 443, patterns[0::2], patterns[1::2]))
    assert got == [(True, False), (False, False), (True, True), None, (True, False)]


@pytest.mark.parametrize("name", HARNESSES)
def test_harness_runs_under_atheris(name: str, tmp_path: Path) -> None:
    # cwd=tmp_path: a crash file, if any, lands there and not in the tree.
    result = subprocess.run(
        [sys.executable, str(FUZZ_DIR / f"{name}.py"), "-runs=2000", "-seed=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Done 2000 runs" in output, output[-4000:]


def test_ssh_checks_on_valid_flows() -> None:
    auth = load("fuzz_ssh_userauth")
    service, _, none, query, signed = auth.MESSAGES[:5]
    login = [(service, 0), (none, 0), (query, 1), (signed, 2)]
    assert auth.check(login, server=True) is True
    assert auth.check([(service, 0), (signed, 0)], server=True) is False  # rejected
    assert auth.check([(service, 0), (service, 0)], server=True) is False  # protocol error
    accept, success = auth.MESSAGES[1], auth.MESSAGES[7]
    assert auth.check([(accept, 0), (success, 0)], server=False) is True
    conn = load("fuzz_ssh_connection")
    direct, _, session, confirm, _, data = conn.MESSAGES[:6]
    # open (accepted), a refused session, our open confirmed, data on it.
    steps = [(direct, 1), (session, 0), (confirm, 0), (data, 4)]
    assert conn.check(steps, server=True, own_open=True) == 4


def test_decoy_check_on_valid_requests() -> None:
    fuzz = load("fuzz_decoy")
    out, closed = fuzz.check(DECOY_INPUTS[0])
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 2 and not closed
    out, closed = fuzz.check(DECOY_INPUTS[1])
    assert out.startswith(b"HTTP/1.1 301 ") and b"\r\nLocation: https://[::1]/old?q=1\r\n" in out
    assert closed
    out, closed = fuzz.check(DECOY_INPUTS[2])
    assert out.startswith(b"HTTP/1.1 405 ") and b"hi" not in out and closed
