"""Wraith's Sans-IO engine against asyncssh and upstream paramiko, both roles, rekeying often.

The peers run as subprocesses (``tests/peers/``), so pytest is not blocked and
the GIL is not shared; each prints ``kex N`` after every completed key exchange,
which is how the tests assert that re-exchanges really happened mid-stream:

1. asyncssh client -> ``wraith serve``: direct-tcpip (``forward_local_port``) and
   tcpip-forward (``forward_remote_port``), 20 MB echoed byte-exact each.
2. ``wraith connect`` -> asyncssh server: -L, -R and -D; 20 MB through -L and -R.
3. upstream paramiko (not Wraith's paramiko engine) as client and as server, the
   same forwards; paramiko has no chacha20, so the two AES-GCM ciphers only.

The peers allow one cipher and start a re-exchange after every megabyte
(asyncssh ``rekey_bytes``, paramiko ``Packetizer.REKEY_BYTES``), so each 20 MB
echo crosses a dozen or more rekeys that the peer starts in the middle of the
stream.  ``-m slow`` adds a 200 MB asyncssh-client run per cipher.  Everything
listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Keys
from helpers import (
    BACKENDS,
    EchoServer,
    Proc,
    WraithServer,
    clean_env,
    echo_roundtrip,
    fingerprint_of,
    pattern_bytes,
    recv_exact,
    socks_connect,
    ssh_keygen,
    start_client,
    start_server,
)

MB = 1024 * 1024
PEERS = Path(__file__).parent / "peers"
GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
ASYNCSSH_CIPHERS = (*GCM, "chacha20-poly1305@openssh.com")
PARAMIKO_CIPHERS = GCM  # paramiko has no chacha20-poly1305
REKEY_BYTES = 1 << 20
SIZE = 20 * MB
TRANSFER_TIMEOUT = 300  # seconds without progress before a socket read gives up

pytestmark = pytest.mark.integration


# --- helpers -----------------------------------------------------------------------


def sansio_env() -> dict[str, str]:
    return clean_env(WRAITH_ENGINE="sansio")


def start_peer(script: str, *args: str) -> Proc:
    """A peer script under tests/peers, with warnings as errors as in pytest itself."""
    return Proc([sys.executable, "-W", "error", str(PEERS / script), *args], env=clean_env())


def output_of(proc: Proc) -> str:
    """``proc``'s output without the peers' ``kex N`` lines (there are hundreds)."""
    lines = proc.output().splitlines()
    return "\n".join(line for line in lines if not re.fullmatch(r"kex \d+", line))


@contextlib.contextmanager
def outputs_on_failure(*procs: Proc) -> Iterator[None]:
    """Re-raise any failure with what every process involved said."""
    try:
        yield
    except Exception as exc:
        time.sleep(1)  # let the processes log what happened (a lost session, say)
        said = "".join(f"\n=== {' '.join(p.args[1:4])}\n{output_of(p)}" for p in procs)
        raise AssertionError(f"{type(exc).__name__}: {exc}{said}") from exc


def peer_value(peer: Proc, name: str, *, timeout: float = 30) -> int:
    """The number on the peer's ``name N`` line."""
    return int(peer.wait_for(rf"^{name} (\d+)$", timeout=timeout).group(1))


def kex_count(peer: Proc) -> int:
    """Key exchanges the peer has completed so far (the initial one included)."""
    return max((int(line.split()[1]) for line in peer.stdout if line.startswith("kex ")), default=0)


def assert_cipher(peer: Proc, cipher: str) -> None:
    c = re.escape(cipher)
    peer.wait_for(rf"^cipher {c} {c}$", timeout=30)


def assert_echo_rekeyed(port: int, size: int, seed: int, peer: Proc) -> None:
    """Echo ``size`` bytes through ``port`` byte-exact; the peer must have rekeyed meanwhile."""
    before = kex_count(peer)
    payload = pattern_bytes(size, seed=seed)
    got = echo_roundtrip(port, payload, timeout=TRANSFER_TIMEOUT)
    assert len(got) == len(payload), f"echoed {len(got)} of {len(payload)} bytes"
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    # The peer starts a re-exchange every REKEY_BYTES it sends (and paramiko also
    # every REKEY_BYTES it receives); it sends the whole payload once, so half of
    # size / REKEY_BYTES is a floor with a wide margin.
    wanted = before + size // REKEY_BYTES // 2
    peer.wait_for(rf"^kex {wanted}$", timeout=10)


def assert_session_survived(peer: Proc) -> None:
    """The peer's SSH connection is still up: no transfer or channel close ended it."""
    assert peer.popen.poll() is None
    assert "closed" not in peer.stdout


def wraith_server(backend: str, tmp_path: Path, keys: Keys) -> tuple[WraithServer, Path]:
    """``wraith serve`` on the Sans-IO engine, and the .pub of its host key."""
    server = start_server(backend, tmp_path, authorized_keys=keys.authorized_keys, env=sansio_env())
    pub = tmp_path / "server-state" / "host_ed25519_key.pub"
    assert fingerprint_of(pub) == server.fingerprint
    return server, pub


def peer_host_key(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh Ed25519 host key for a peer server: (private key, .pub)."""
    key = tmp_path / "peer_host_ed25519_key"
    ssh_keygen("-t", "ed25519", "-N", "", "-C", "peer-host", "-f", str(key))
    key.chmod(0o600)
    return key, Path(f"{key}.pub")


def wraith_client_round_trips(
    backend: str, peer: Proc, host_pub: Path, cipher: str, keys: Keys, echo: EchoServer
) -> None:
    """``wraith connect`` with -L, -R and -D to the peer server; 20 MB through -L and -R."""
    port = peer_value(peer, "port")
    # The peer's host key pinned by fingerprint, as the sshd tests do.
    target = WraithServer(peer, port, fingerprint_of(host_pub))
    client = start_client(
        backend,
        target,
        keys.client,
        args=[
            "-L",
            f"127.0.0.1:0:127.0.0.1:{echo.port}",
            "-R",
            f"0:127.0.0.1:{echo.port}",
            "-D",
            "127.0.0.1:0",
        ],
        env=sansio_env(),
    )
    try:
        with outputs_on_failure(peer, client.proc):
            assert_cipher(peer, cipher)
            assert_echo_rekeyed(client.local_ports[0], SIZE, 21, peer)
            assert_echo_rekeyed(client.remote_ports[0], SIZE, 22, peer)
            assert client.socks_port is not None
            with socks_connect(client.socks_port, "127.0.0.1", echo.port) as sock:
                sock.sendall(b"peer-socks")
                assert recv_exact(sock, 10) == b"peer-socks"
            assert_session_survived(peer)
            assert client.proc.popen.poll() is None
    finally:
        client.proc.stop()


# --- 1. asyncssh client -> wraith serve --------------------------------------------


ASYNCSSH_CLIENT_CASES = [
    pytest.param("direct-tcpip", SIZE, id="direct-tcpip-20MB"),
    pytest.param("tcpip-forward", SIZE, id="tcpip-forward-20MB"),
    pytest.param("direct-tcpip", 200 * MB, id="direct-tcpip-200MB", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("forward", "size"), ASYNCSSH_CLIENT_CASES)
@pytest.mark.parametrize("cipher", ASYNCSSH_CIPHERS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_asyncssh_client_against_wraith_server(
    backend: str,
    cipher: str,
    forward: str,
    size: int,
    tmp_path: Path,
    keys: Keys,
    echo: EchoServer,
) -> None:
    server, pub = wraith_server(backend, tmp_path, keys)
    try:
        ktype, blob = pub.read_text(encoding="ascii").split()[:2]
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{server.port} {ktype} {blob}\n", encoding="ascii")
        which = "--local" if forward == "direct-tcpip" else "--remote"
        peer = start_peer(
            "asyncssh_peer.py",
            "--cipher",
            cipher,
            "--rekey-bytes",
            str(REKEY_BYTES),
            "client",
            "--port",
            str(server.port),
            "--key",
            str(keys.client),
            "--known-hosts",
            str(known_hosts),
            which,
            str(echo.port),
        )
        try:
            with outputs_on_failure(peer, server.proc):
                assert_cipher(peer, cipher)
                name = "local-port" if forward == "direct-tcpip" else "remote-port"
                assert_echo_rekeyed(peer_value(peer, name), size, 11, peer)
                assert_session_survived(peer)
        finally:
            peer.stop()
    finally:
        server.proc.stop()


# --- 2. wraith connect -> asyncssh server ------------------------------------------


@pytest.mark.parametrize("cipher", ASYNCSSH_CIPHERS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_wraith_client_against_asyncssh_server(
    backend: str, cipher: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    host_key, host_pub = peer_host_key(tmp_path)
    peer = start_peer(
        "asyncssh_peer.py",
        "--cipher",
        cipher,
        "--rekey-bytes",
        str(REKEY_BYTES),
        "server",
        "--host-key",
        str(host_key),
        "--authorized-keys",
        str(keys.authorized_keys),
    )
    try:
        wraith_client_round_trips(backend, peer, host_pub, cipher, keys, echo)
    finally:
        peer.stop()


# --- 3. upstream paramiko, both roles ----------------------------------------------


@pytest.mark.parametrize("cipher", PARAMIKO_CIPHERS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_paramiko_client_against_wraith_server(
    backend: str, cipher: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    server, pub = wraith_server(backend, tmp_path, keys)
    try:
        peer = start_peer(
            "paramiko_peer.py",
            "--cipher",
            cipher,
            "--rekey-bytes",
            str(REKEY_BYTES),
            "client",
            "--port",
            str(server.port),
            "--key",
            str(keys.client),
            "--host-key-pub",
            pub.read_text(encoding="ascii").strip(),
            "--local",
            str(echo.port),
            "--remote",
            str(echo.port),
        )
        try:
            with outputs_on_failure(peer, server.proc):
                assert_cipher(peer, cipher)
                assert_echo_rekeyed(peer_value(peer, "local-port"), SIZE, 31, peer)
                assert_echo_rekeyed(peer_value(peer, "remote-port"), SIZE, 32, peer)
                assert_session_survived(peer)
        finally:
            peer.stop()
    finally:
        server.proc.stop()


@pytest.mark.parametrize("cipher", PARAMIKO_CIPHERS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_wraith_client_against_paramiko_server(
    backend: str, cipher: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    host_key, host_pub = peer_host_key(tmp_path)
    peer = start_peer(
        "paramiko_peer.py",
        "--cipher",
        cipher,
        "--rekey-bytes",
        str(REKEY_BYTES),
        "server",
        "--host-key",
        str(host_key),
        "--authorized-key",
        Path(f"{keys.client}.pub").read_text(encoding="ascii").strip(),
    )
    try:
        wraith_client_round_trips(backend, peer, host_pub, cipher, keys, echo)
    finally:
        peer.stop()
