"""Our SSH transport against paramiko, OpenSSH and asyncssh, over socketpairs, pipes and loopback.

The userauth layer is not part of the transport, so each test plays it by hand
where it must: answering SERVICE_REQUEST, accepting ``none``, or signing a
``publickey`` request against sshd (whose server refuses to rekey before
authentication).  Our Transport is driven by :func:`run`, a small blocking
loop: events first, then flush, then one read.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import asyncssh
import paramiko
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from wraith.proto.ssh import hostkey
from wraith.proto.ssh.constants import DisconnectReason, Msg
from wraith.proto.ssh.kex import MLKEM_AVAILABLE
from wraith.proto.ssh.transport import Role, Transport
from wraith.proto.ssh.transport_events import (
    NEED_DATA,
    ConnectionClosed,
    DisconnectReceived,
    KexComplete,
    PayloadReceived,
)
from wraith.proto.ssh.wire import Reader, boolean, message, string

pytestmark = pytest.mark.integration

GCM = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
ALL_CIPHERS = [*GCM, "chacha20-poly1305@openssh.com"]
needs_mlkem = pytest.mark.skipif(not MLKEM_AVAILABLE, reason="cryptography lacks ML-KEM-768")
SERVICE_REQUEST = message(Msg.SERVICE_REQUEST, string("ssh-userauth"))
SERVICE_ACCEPT = message(Msg.SERVICE_ACCEPT, string("ssh-userauth"))
USERAUTH_SUCCESS = bytes([Msg.USERAUTH_SUCCESS])
Event = object
Handler = Callable[[Transport, Event], bool]


class Link(Protocol):
    def send(self, data: bytes) -> None: ...
    def recv(self, timeout: float) -> bytes: ...


class SocketLink:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(256 * 1024)


class PipeLink:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.stdin = proc.stdin
        self.stdout = proc.stdout.fileno()

    def send(self, data: bytes) -> None:
        self.stdin.write(data)
        self.stdin.flush()

    def recv(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("sshd said nothing")
        return os.read(self.stdout, 256 * 1024)


def run(t: Transport, link: Link, handler: Handler, timeout: float = 30.0) -> list[Event]:
    """Drive ``t`` over ``link`` until ``handler`` returns True; every event is returned."""
    deadline = time.monotonic() + timeout
    events: list[Event] = []
    while True:
        while (event := t.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ConnectionClosed | DisconnectReceived):
                raise AssertionError(f"peer went away: {events}")
            if handler(t, event):
                if out := t.data_to_send():
                    link.send(out)
                return events
        if out := t.data_to_send():
            link.send(out)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no end after {timeout}s: {events}")
        t.receive_data(link.recv(remaining))


def is_payload(event: Event, number: int) -> bool:
    return isinstance(event, PayloadReceived) and event.payload[0] == number


def rekeyed(t: Transport, event: Event) -> bool:
    return isinstance(event, KexComplete) and not event.first


@pytest.fixture(scope="module")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(7, 39)))
    path = tmp_path_factory.mktemp("hostkey") / "ssh_host_ed25519_key"
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    path.chmod(0o600)
    return key, path


# == paramiko ======================================================================================


class _ParamikoServer(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "publickey"


@pytest.mark.parametrize("kex", ["curve25519-sha256@libssh.org", "mlkem768x25519-sha256"])
@pytest.mark.parametrize("cipher", GCM)
def test_paramiko_server(cipher: str, kex: str, host_key: tuple[Ed25519PrivateKey, Path]) -> None:
    if kex.startswith("mlkem") and not MLKEM_AVAILABLE:
        pytest.skip("cryptography lacks ML-KEM-768")
    ours, theirs = socket.socketpair()
    peer = paramiko.Transport(theirs)
    peer.add_server_key(paramiko.Ed25519Key(filename=str(host_key[1])))
    peer.start_server(event=threading.Event(), server=_ParamikoServer())
    try:
        t = Transport(Role.CLIENT, ciphers=(cipher,), kex_algorithms=(kex,))
        link = SocketLink(ours)

        def on_event(t: Transport, event: Event) -> bool:
            if isinstance(event, KexComplete) and event.first:
                t.send_payload(SERVICE_REQUEST)
            return is_payload(event, Msg.SERVICE_ACCEPT)

        events = run(t, link, on_event)
        done = [e for e in events if isinstance(e, KexComplete)]
        assert (done[0].kex, done[0].cipher_c2s, done[0].cipher_s2c) == (kex, cipher, cipher)
        assert t.server_host_key_blob == hostkey.public_blob(host_key[0])
        assert t.strict_kex
        assert events[-1] == PayloadReceived(payload=SERVICE_ACCEPT, seq=events[-1].seq)  # type: ignore[attr-defined]
        # A rekey we start, in the middle of the session.
        t.start_rekey()
        run(t, link, rekeyed)
        assert peer.is_active()
    finally:
        peer.close()
        ours.close()


@pytest.mark.parametrize("kex", ["curve25519-sha256@libssh.org", "mlkem768x25519-sha256"])
@pytest.mark.parametrize("cipher", GCM)
def test_paramiko_client(cipher: str, kex: str, host_key: tuple[Ed25519PrivateKey, Path]) -> None:
    if kex.startswith("mlkem") and not MLKEM_AVAILABLE:
        pytest.skip("cryptography lacks ML-KEM-768")
    ours, theirs = socket.socketpair()
    peer = paramiko.Transport(theirs)
    options = peer.get_security_options()
    options.ciphers = (cipher,)
    options.kex = (kex,)
    outcome: dict[str, Any] = {}

    def client() -> None:
        try:
            ready = threading.Event()
            peer.start_client(event=ready)
            ready.wait(30)
            outcome["auth"] = peer.auth_none("wraith")  # SERVICE_REQUEST, then "none"
            peer.renegotiate_keys()  # a rekey the peer starts
            outcome["rekeyed"] = True
        except Exception as exc:  # reported by the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        t = Transport(Role.SERVER, host_key=host_key[0])
        link = SocketLink(ours)

        def on_event(t: Transport, event: Event) -> bool:
            if is_payload(event, Msg.SERVICE_REQUEST):
                t.send_payload(SERVICE_ACCEPT)
            if is_payload(event, Msg.USERAUTH_REQUEST):
                t.send_payload(USERAUTH_SUCCESS)
            return rekeyed(t, event)

        events = run(t, link, on_event)
        thread.join(30)
        assert "error" not in outcome, outcome
        assert outcome == {"auth": [], "rekeyed": True}
        done = [e for e in events if isinstance(e, KexComplete)]
        assert [(e.first, e.kex, e.cipher_c2s) for e in done] == [
            (True, kex, cipher),
            (False, kex, cipher),
        ]
        assert t.strict_kex
    finally:
        peer.close()
        ours.close()


# == OpenSSH: sshd -i =============================================================================


@pytest.fixture(scope="module")
def sshd_setup(
    tmp_path_factory: pytest.TempPathFactory, host_key: tuple[Ed25519PrivateKey, Path]
) -> tuple[Path, Ed25519PrivateKey]:
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.fail("/usr/sbin/sshd is missing")
    d = tmp_path_factory.mktemp("sshd_i")
    user_key = Ed25519PrivateKey.from_private_bytes(bytes(range(40, 72)))
    blob = hostkey.public_blob(user_key)
    (d / "authorized_keys").write_text(f"ssh-ed25519 {base64.b64encode(blob).decode()} t\n")
    os.makedirs("/run/sshd", exist_ok=True)
    config = d / "sshd_config"
    config.write_text(
        f"HostKey {host_key[1]}\n"
        "UsePAM no\n"
        "PidFile none\n"
        "LogLevel DEBUG3\n"
        "StrictModes no\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
    )
    return config, user_key


@pytest.fixture
def sshd_i(
    sshd_setup: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> Iterator[Callable[..., tuple[PipeLink, Path]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> tuple[PipeLink, Path]:
        log = tmp_path / f"sshd{len(procs)}.log"
        args = ["/usr/sbin/sshd", "-i", "-e", "-f", str(sshd_setup[0])]
        for option in options:
            args += ["-o", option]
        with log.open("wb") as err:
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        procs.append(proc)
        return PipeLink(proc), log

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()


def publickey_request(t: Transport, key: Ed25519PrivateKey, user: str) -> bytes:
    """A signed ``publickey`` USERAUTH_REQUEST (RFC 4252 7), playing the userauth layer."""
    blob = hostkey.public_blob(key)
    body = (
        string(user)
        + string("ssh-connection")
        + string("publickey")
        + boolean(True)
        + string("ssh-ed25519")
        + string(blob)
    )
    assert t.session_id is not None
    signature = hostkey.sign(key, string(t.session_id) + bytes([Msg.USERAUTH_REQUEST]) + body)
    return bytes([Msg.USERAUTH_REQUEST]) + body + string(signature)


def log_of(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:]


@pytest.mark.parametrize("kex", ["curve25519-sha256", "curve25519-sha256@libssh.org"])
@pytest.mark.parametrize("cipher", ALL_CIPHERS)
def test_openssh_sshd(
    cipher: str,
    kex: str,
    sshd_i: Callable[..., tuple[PipeLink, Path]],
    sshd_setup: tuple[Path, Ed25519PrivateKey],
) -> None:
    link, log = sshd_i()
    t = Transport(Role.CLIENT, ciphers=(cipher,), kex_algorithms=(kex,))
    user = getpass.getuser()

    def on_event(t: Transport, event: Event) -> bool:
        if isinstance(event, KexComplete) and event.first:
            t.send_payload(SERVICE_REQUEST)
        if is_payload(event, Msg.SERVICE_ACCEPT):
            t.send_payload(publickey_request(t, sshd_setup[1], user))
        if is_payload(event, Msg.USERAUTH_SUCCESS):
            t.start_rekey()  # sshd takes a rekey only once the user is authenticated
        return rekeyed(t, event)

    try:
        events = run(t, link, on_event)
    except Exception:
        print(log_of(log))
        raise
    done = [e for e in events if isinstance(e, KexComplete)]
    assert [(e.first, e.kex, e.cipher_c2s, e.cipher_s2c) for e in done] == [
        (True, kex, cipher, cipher),
        (False, kex, cipher, cipher),
    ]
    assert t.strict_kex
    assert t.peer_version is not None and t.peer_version.startswith("SSH-2.0-OpenSSH")
    # A round trip under the new keys: sshd answers a keepalive it cannot know.
    t.send_payload(message(Msg.GLOBAL_REQUEST, string("keepalive@openssh.com"), boolean(True)))
    run(t, link, lambda t, e: is_payload(e, Msg.REQUEST_FAILURE))
    text = log.read_text(errors="replace")
    assert "resetting send seqnr" in text and "resetting read seqnr" in text  # strict kex
    assert text.count("SSH2_MSG_NEWKEYS received") == 2
    t.disconnect(DisconnectReason.BY_APPLICATION, "done")
    link.send(t.data_to_send())


def test_openssh_sshd_starts_the_rekey(
    sshd_i: Callable[..., tuple[PipeLink, Path]], sshd_setup: tuple[Path, Ed25519PrivateKey]
) -> None:
    link, log = sshd_i("RekeyLimit=64K")
    t = Transport(Role.CLIENT, ciphers=("chacha20-poly1305@openssh.com",))
    filler = message(Msg.GLOBAL_REQUEST, string("filler@wraith"), boolean(False), bytes(8000))
    sent: list[int] = []

    def on_event(t: Transport, event: Event) -> bool:
        if isinstance(event, KexComplete) and event.first:
            t.send_payload(SERVICE_REQUEST)
        if is_payload(event, Msg.SERVICE_ACCEPT):
            t.send_payload(publickey_request(t, sshd_setup[1], getpass.getuser()))
        if is_payload(event, Msg.USERAUTH_SUCCESS) or is_payload(event, Msg.GLOBAL_REQUEST):
            # Push bytes at sshd until it decides to rekey, in the middle of the stream.
            for _ in range(20):
                t.send_payload(filler)
            sent.append(20)
        return rekeyed(t, event)

    try:
        run(t, link, on_event)
    except Exception:
        print(log_of(log))
        raise
    assert t.state.name == "OPEN"
    assert "SSH2_MSG_KEXINIT sent" in log.read_text(errors="replace")


# == OpenSSH: the ssh client ======================================================================


@pytest.mark.parametrize("cipher", ALL_CIPHERS)
def test_openssh_ssh_client(
    cipher: str, host_key: tuple[Ed25519PrivateKey, Path], tmp_path: Path
) -> None:
    if shutil.which("ssh") is None:
        pytest.fail("ssh is missing")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stderr = tmp_path / "ssh.log"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [
                "ssh", "-vvv", "-N", "-F", "/dev/null",
                "-p", str(port),
                "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes",
                "-o", "IdentityAgent=none",
                "-o", f"Ciphers={cipher}",
                "-o", "RekeyLimit=default 1",  # the client starts a rekey after 1 s
                "127.0.0.1",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        listener.settimeout(30)
        conn, _ = listener.accept()
        t = Transport(Role.SERVER, host_key=host_key[0])
        link = SocketLink(conn)
        rekeys = []

        def on_event(t: Transport, event: Event) -> bool:
            if is_payload(event, Msg.SERVICE_REQUEST):
                t.send_payload(SERVICE_ACCEPT)
            if is_payload(event, Msg.USERAUTH_REQUEST):
                t.send_payload(USERAUTH_SUCCESS)  # playing userauth: "none" is enough here
            if is_payload(event, Msg.GLOBAL_REQUEST):
                r = Reader(event.payload, 1)  # type: ignore[attr-defined]
                r.string()
                if r.boolean():
                    t.send_payload(bytes([Msg.REQUEST_FAILURE]))
            if rekeyed(t, event):
                rekeys.append(event)
                if len(rekeys) == 1:
                    t.start_rekey()  # and one the server starts
            return len(rekeys) == 2

        events = run(t, link, on_event)
        t.disconnect(DisconnectReason.BY_APPLICATION, "done")
        link.send(t.data_to_send())
        conn.close()
        proc.wait(30)
    finally:
        proc.kill()
        listener.close()
    text = stderr.read_text(errors="replace")
    done = [e for e in events if isinstance(e, KexComplete)]
    assert [(e.first, e.cipher_c2s) for e in done] == [(True, cipher)] * 1 + [(False, cipher)] * 2
    assert t.strict_kex
    assert text.count("SSH2_MSG_NEWKEYS received") == 3, text[-3000:]
    assert "resetting send seqnr" in text  # strict kex on the OpenSSH side too
    assert "SSH2_MSG_SERVICE_ACCEPT received" in text
    assert f"kex: server->client cipher: {cipher}" in text


# == asyncssh =====================================================================================


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    return ours, theirs


def _asyncssh_key(host_key: tuple[Ed25519PrivateKey, Path]) -> asyncssh.SSHKey:
    return asyncssh.import_private_key(host_key[1].read_bytes())


class _NoAuthServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # "none" succeeds


def _in_thread(coro_fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def main() -> None:
        try:
            outcome["result"] = asyncio.run(coro_fn())
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return thread, outcome


@needs_mlkem
@pytest.mark.parametrize("cipher", ALL_CIPHERS)
def test_asyncssh_server_mlkem(cipher: str, host_key: tuple[Ed25519PrivateKey, Path]) -> None:
    ours, theirs = socket.socketpair()
    key = _asyncssh_key(host_key)

    async def serve() -> None:
        conn = await asyncssh.run_server(
            theirs,
            server_factory=_NoAuthServer,
            server_host_keys=[key],
            kex_algs=["mlkem768x25519-sha256"],
            encryption_algs=[cipher],
        )
        await conn.wait_closed()

    thread, _ = _in_thread(serve)
    try:
        t = Transport(Role.CLIENT, ciphers=(cipher,))
        link = SocketLink(ours)

        def on_event(t: Transport, event: Event) -> bool:
            if isinstance(event, KexComplete) and event.first:
                t.send_payload(SERVICE_REQUEST)
            if is_payload(event, Msg.SERVICE_ACCEPT):
                t.send_payload(
                    message(
                        Msg.USERAUTH_REQUEST,
                        string("u"),
                        string("ssh-connection"),
                        string("none"),
                    )
                )
            if is_payload(event, Msg.USERAUTH_SUCCESS):
                t.start_rekey()
            return rekeyed(t, event)

        events = run(t, link, on_event)
        done = [e for e in events if isinstance(e, KexComplete)]
        assert [(e.kex, e.cipher_c2s) for e in done] == [("mlkem768x25519-sha256", cipher)] * 2
        assert t.strict_kex
        t.disconnect(DisconnectReason.BY_APPLICATION, "done")
        link.send(t.data_to_send())
    finally:
        ours.close()
        thread.join(10)


@needs_mlkem
@pytest.mark.parametrize("cipher", ALL_CIPHERS)
def test_asyncssh_client_mlkem(cipher: str, host_key: tuple[Ed25519PrivateKey, Path]) -> None:
    ours, theirs = tcp_pair()  # asyncssh's client wants a peer address

    async def connect() -> str:
        conn = await asyncssh.run_client(
            theirs,
            username="u",
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            kex_algs=["mlkem768x25519-sha256"],
            encryption_algs=[cipher],
        )
        version = conn.get_extra_info("server_version")
        conn.close()
        await conn.wait_closed()
        return str(version)

    thread, outcome = _in_thread(connect)
    try:
        t = Transport(Role.SERVER, host_key=host_key[0], version="SSH-2.0-Wraith_test")
        link = SocketLink(ours)

        def on_event(t: Transport, event: Event) -> bool:
            if is_payload(event, Msg.SERVICE_REQUEST):
                t.send_payload(SERVICE_ACCEPT)
            if is_payload(event, Msg.USERAUTH_REQUEST):
                t.send_payload(USERAUTH_SUCCESS)
                return True
            return False

        events = run(t, link, on_event)
        with pytest.raises((ConnectionError, AssertionError, OSError)):
            run(t, link, lambda t, e: False, timeout=10)  # until asyncssh closes
        thread.join(10)
        assert outcome == {"result": "SSH-2.0-Wraith_test"}, outcome
        done = [e for e in events if isinstance(e, KexComplete)]
        assert [(e.kex, e.cipher_c2s) for e in done] == [("mlkem768x25519-sha256", cipher)]
        assert t.strict_kex
    finally:
        ours.close()
