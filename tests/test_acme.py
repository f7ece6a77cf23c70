"""ACME for real: wraith.acme against Pebble, with real HTTP-01 and TLS-ALPN-01 validation.

Pebble (``tests/pebble.py``) validates by connecting to 127.0.0.1 on its
``tls_port`` / ``http_port``; the responders below listen there.  The TLS
responder does what the real server does: it peeks at the ClientHello with
:class:`~wraith.proto.sniff.ClientHelloSniffer`, lets
:func:`wraith.acme.choose_context` pick the validation or the serving context,
then runs the handshake and echoes bytes back (so a client can tell an open
connection still works after a renewal).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import http.server
import json
import logging
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pebble import Pebble, available, run_pebble

from wraith.acme import (
    DNS,
    IP,
    AcmeManager,
    AcmeSettings,
    CertificateStore,
    choose_context,
    normalize_identifier,
    profile_for,
)
from wraith.acme_challenges import (
    ACME_IDENTIFIER_OID,
    ACME_TLS_ALPN,
    ChallengeResponder,
    sni_name,
    validation_certificate,
)
from wraith.config import ConfigError
from wraith.proto.sniff import NEED_DATA, ClientHello, ClientHelloSniffer

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0  # the longest any single wait may take


# --------------------------------------------------------------------------
# Responders


class TlsResponder:
    """A threaded TLS server on 127.0.0.1:port choosing its context from the sniffed hello."""

    def __init__(self, port: int, choose: Callable[[ClientHello], ssl.SSLContext | None]) -> None:
        self.choose = choose
        self.validations = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._sock = socket.create_server(("127.0.0.1", port))
        self._sock.settimeout(0.1)
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            with self._lock:
                self._conns.append(conn)
                self._threads.append(t)
            t.start()

    def _hello(self, conn: socket.socket) -> ClientHello | None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data = conn.recv(65536, socket.MSG_PEEK)  # leave the bytes for the handshake
            if not data:
                return None
            sniffer = ClientHelloSniffer()
            sniffer.receive_data(data)
            result = sniffer.result()
            if result is not NEED_DATA:
                return result if isinstance(result, ClientHello) else None
            time.sleep(0.01)
        return None

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            hello = self._hello(conn)
            ctx = self.choose(hello) if hello is not None else None
            if ctx is None:
                return
            with ctx.wrap_socket(conn, server_side=True) as tls:
                if tls.selected_alpn_protocol() == ACME_TLS_ALPN:
                    self.validations += 1
                    return
                tls.settimeout(WAIT)
                while data := tls.recv(4096):
                    tls.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._accepter.join(5)
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(5)


class HttpResponder:
    """Port 80 of the real server, reduced to the HTTP-01 answers."""

    def __init__(self, port: int, responder: ChallengeResponder) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                body = responder.http01_response(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# --------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    # scripts/test.sh installs Debian's pebble: its absence is a failure, not a skip.
    assert available(), "pebble is missing: run scripts/test.sh, which installs it"
    with run_pebble(tmp_path_factory.mktemp("pebble"), validity=300) as p:
        yield p


def make_settings(
    pebble: Pebble, state: Path, identifiers: list[str], **kw: object
) -> AcmeSettings:
    args: dict[str, object] = {
        "identifiers": identifiers,
        "state_dir": state,
        "directory": pebble.directory,
        "ca_file": pebble.ca_file,
        "email": "ops@wraith.test",
        "retry_initial": 0.05,
        "retry_cap": 0.2,
        "order_timeout": 20.0,
        "network_timeout": 10.0,
    }
    args.update(kw)
    return AcmeSettings(**args)  # type: ignore[arg-type]


class Running:
    """A manager and the TLS responder that serves for it, stopped together."""

    def __init__(self, pebble: Pebble, mgr: AcmeManager, *, listen: bool = True) -> None:
        self.pebble = pebble
        self.mgr = mgr
        self.tls: TlsResponder | None = None
        if listen:
            self.listen()

    def listen(self) -> None:
        self.tls = TlsResponder(self.pebble.tls_port, self.mgr.choose_context)

    def close(self) -> None:
        self.mgr.stop()
        if self.tls is not None:
            self.tls.close()


@pytest.fixture
def running(pebble: Pebble) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in reversed(started):
        r.close()


def start(
    running: list[Running], pebble: Pebble, settings: AcmeSettings, *, listen: bool = True
) -> Running:
    r = Running(pebble, AcmeManager(settings), listen=listen)
    running.append(r)
    r.mgr.start()
    return r


def client(pebble: Pebble, server_name: str) -> ssl.SSLSocket:
    """Connect to the responder, trusting only Pebble's root: the chain must be served."""
    ctx = ssl.create_default_context(cadata=pebble.root_pem().decode())
    ctx.set_alpn_protocols(["http/1.1"])
    sock = socket.create_connection(("127.0.0.1", pebble.tls_port), timeout=10)
    try:
        # An IP as server_hostname: no SNI is sent, the IP SAN is verified.
        return ctx.wrap_socket(sock, server_hostname=server_name)
    except BaseException:
        sock.close()
        raise


def echo(tls: ssl.SSLSocket, data: bytes = b"ping") -> None:
    tls.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = tls.recv(4096)
        assert chunk, "connection closed"
        got += chunk
    assert got == data


def peer(tls: ssl.SSLSocket) -> x509.Certificate:
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    }


def wait_for(pred: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --------------------------------------------------------------------------
# Without Pebble: settings, the validation certificate, the responder, choosing


def test_identifiers_are_validated_and_normalized(tmp_path: Path) -> None:
    assert normalize_identifier("Wraith.Example.") == "wraith.example"
    assert normalize_identifier("2001:DB8::0:1") == "2001:db8::1"
    assert normalize_identifier("[::1]") == "::1"
    for bad, why in [
        ("*.example.com", "wildcard"),
        ("localhost", "not a valid DNS name"),
        ("-a.example", "not a valid DNS name"),
        ("a..b", "not a valid DNS name"),
        ("1.2.3", "not a valid DNS name"),
        ("0.0.0.0", "cannot have a certificate"),
        ("bücher.example", "xn--"),
        ("fe80::1%eth0", "zone"),
    ]:
        with pytest.raises(ConfigError, match=why):
            normalize_identifier(bad)
    s = AcmeSettings(["b.example", "127.0.0.1", "B.example.", "::1"], tmp_path)
    assert s.identifiers == ("b.example", "127.0.0.1", "::1")
    assert s.groups() == {DNS: ("b.example",), IP: ("127.0.0.1", "::1")}
    assert s.storage_dir() == tmp_path / "acme" / "acme-v02.api.letsencrypt.org_directory"
    for kw, why in [
        ({"renew_at": 1.0}, "--acme-renew-at"),
        ({"renew_at": 0}, "--acme-renew-at"),
        ({"directory": "http://ca.example/dir"}, "--acme-directory"),
        ({"ca_file": tmp_path / "missing.pem"}, "--acme-ca"),
        ({"email": "not an address"}, "--acme-email"),
    ]:
        with pytest.raises(ConfigError, match=why):
            AcmeSettings(["b.example"], tmp_path, **kw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least one"):
        AcmeSettings([], tmp_path)


def test_shortlived_profile_only_for_ips_and_only_if_offered() -> None:
    offered = {"classic": "90 days", "shortlived": "6 days"}
    assert profile_for(IP, offered) == "shortlived"
    assert profile_for(DNS, offered) is None
    assert profile_for(IP, {"classic": "90 days"}) is None
    assert profile_for(IP, None) is None


def test_validation_certificate_follows_rfc8737() -> None:
    ka = "token123.thumbprint456"
    for ident, want in [("wraith.example", x509.DNSName), ("192.0.2.7", x509.IPAddress)]:
        pem, _ = validation_certificate(ident, ka)
        cert = x509.load_pem_x509_certificate(pem)
        ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
        assert ext.critical
        assert isinstance(ext.value, x509.UnrecognizedExtension)
        assert ext.value.value == b"\x04\x20" + hashlib.sha256(ka.encode()).digest()
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert len(list(names)) == 1
        assert [str(v) for v in names.get_values_for_type(want)] == [ident]  # type: ignore[arg-type]
        cert.verify_directly_issued_by(cert)
    assert sni_name("127.0.0.1") == "1.0.0.127.in-addr.arpa"
    assert sni_name("::1").endswith(".ip6.arpa")
    assert sni_name("Wraith.Example.") == "wraith.example"


def test_responder_and_choose_context() -> None:
    r = ChallengeResponder()
    store = CertificateStore()
    r.add_http01("tok_en-123456789012", "tok_en-123456789012.thumb")
    assert r.http01_response("/.well-known/acme-challenge/tok_en-123456789012") == (
        b"tok_en-123456789012.thumb"
    )
    assert r.http01_response("/.well-known/acme-challenge/other") is None
    assert r.http01_response("/tok_en-123456789012") is None
    name = r.add_tls_alpn01("127.0.0.1", "a.b")
    assert name == "1.0.0.127.in-addr.arpa"
    validator = ClientHello("1.0.0.127.in-addr.arpa", (ACME_TLS_ALPN,))
    ctx = choose_context(validator, r, store)
    assert ctx is not None
    assert choose_context(ClientHello("2.0.0.127.in-addr.arpa", (ACME_TLS_ALPN,)), r, store) is None
    assert choose_context(ClientHello(None, (ACME_TLS_ALPN,)), r, store) is None
    # Not a validator, and no certificate yet: nothing to serve.
    assert choose_context(ClientHello("1.0.0.127.in-addr.arpa", ("http/1.1",)), r, store) is None
    assert r.pending == 2
    r.remove_tls_alpn01("127.0.0.1")
    r.remove_http01("tok_en-123456789012")
    assert r.pending == 0


def test_missing_extra_is_one_clear_line(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "for m in ('acme', 'acme.client', 'acme.messages', 'acme.challenges'):\n"
        "    sys.modules[m] = None\n"
        "import wraith.acme as a\n"
        "from wraith.config import ConfigError\n"
        f"s = a.AcmeSettings(['wraith.example'], {str(tmp_path)!r})\n"
        "try:\n"
        "    a.AcmeManager(s)\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert out.stdout.strip() == "ACME needs the acme extra: pip install 'wraith[acme]'"


def test_unreachable_ca_is_one_line_and_stop_is_prompt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wraith")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    directory = f"https://127.0.0.1:{port}/directory"
    mgr = AcmeManager(
        AcmeSettings(["wraith.example"], tmp_path, directory=directory, retry_initial=30.0)
    )
    mgr.start()
    try:
        assert wait_for(lambda: bool(caplog.records), 10), "no failure line"
    finally:
        started = time.monotonic()
        mgr.stop()
        assert time.monotonic() - started < 2  # stop() wakes the backoff sleep
    assert [r.getMessage().rsplit("; retrying in", 1)[0] for r in caplog.records] == [
        f"ACME: getting a certificate for wraith.example failed: "
        f"cannot reach the CA at {directory}: connection refused"
    ]
    assert mgr.context_for("wraith.example") is None and mgr.orders == 0


# --------------------------------------------------------------------------
# Against Pebble


@pytest.mark.integration
def test_tls_alpn01_dns_name(pebble: Pebble, tmp_path: Path, running: list[Running]) -> None:
    r = start(running, pebble, make_settings(pebble, tmp_path, ["wraith.test"]))
    assert r.mgr.context_for("wraith.test") is None  # nothing to serve yet
    assert r.mgr.wait_ready(WAIT), pebble.log_text()[-3000:]
    assert r.tls is not None and r.tls.validations >= 1
    assert r.mgr.orders == 1
    with client(pebble, "wraith.test") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        echo(tls)
        assert sans(peer(tls)) == {"wraith.test"}
        serial = peer(tls).serial_number
    generation = r.mgr.generation
    r.mgr.renew_now()  # out of schedule
    assert r.mgr.wait_changed(generation, WAIT)
    with client(pebble, "wraith.test") as tls:
        assert peer(tls).serial_number != serial
    assert r.mgr.orders == 2


@pytest.mark.integration
def test_ip_identifier_and_two_certificates(
    pebble: Pebble, tmp_path: Path, running: list[Running]
) -> None:
    r = start(running, pebble, make_settings(pebble, tmp_path, ["wraith.test", "127.0.0.1"]))
    assert r.mgr.wait_ready(WAIT), pebble.log_text()[-3000:]
    assert r.mgr.orders == 2  # one per group
    with client(pebble, "127.0.0.1") as no_sni, client(pebble, "wraith.test") as by_name:
        echo(no_sni)
        echo(by_name)
        ip_cert, dns_cert = peer(no_sni), peer(by_name)
    assert sans(ip_cert) == {"127.0.0.1"}
    assert sans(dns_cert) == {"wraith.test"}
    assert ip_cert.serial_number != dns_cert.serial_number


@pytest.mark.integration
def test_http01(pebble: Pebble, tmp_path: Path, running: list[Running]) -> None:
    settings = make_settings(pebble, tmp_path, ["wraith.test"], http01=True)
    r = start(running, pebble, settings, listen=False)  # no TLS listener: HTTP-01 only
    http = HttpResponder(pebble.http_port, r.mgr.responder)
    try:
        assert r.mgr.wait_ready(WAIT), pebble.log_text()[-3000:]
    finally:
        http.close()
    assert any(p.startswith("/.well-known/acme-challenge/") for p in http.requests)
    r.listen()
    with client(pebble, "wraith.test") as tls:
        echo(tls)


@pytest.mark.integration
def test_renewal_swaps_the_certificate_and_open_connections_keep_working(
    pebble: Pebble, tmp_path: Path, running: list[Running]
) -> None:
    # Valid 300 s; renew when 99% is left: about 3 s after notBefore.
    changes: list[float] = []
    settings = make_settings(pebble, tmp_path, ["wraith.test"], renew_at=0.99)
    r = Running(pebble, AcmeManager(settings, on_change=lambda: changes.append(time.time())))
    running.append(r)
    r.mgr.start()
    assert r.mgr.wait_ready(WAIT), pebble.log_text()[-3000:]
    first = r.mgr.store.get(DNS)
    assert first is not None
    old = client(pebble, "wraith.test")
    with old:
        echo(old)
        assert peer(old).serial_number == first.serial
        generation = r.mgr.generation
        assert r.mgr.wait_changed(generation, WAIT), pebble.log_text()[-3000:]
        second = r.mgr.store.get(DNS)
        assert second is not None and second.serial != first.serial
        assert second.not_before >= first.not_before
        with client(pebble, "wraith.test") as new:
            echo(new)
            assert peer(new).serial_number != first.serial
        echo(old, b"still here")  # the open connection is untouched
    assert len(changes) >= 2
    assert r.mgr.orders >= 2


@pytest.mark.integration
def test_restart_loads_the_stored_certificate(
    pebble: Pebble, tmp_path: Path, running: list[Running]
) -> None:
    settings = make_settings(pebble, tmp_path, ["wraith.test"])
    first = start(running, pebble, settings)
    assert first.mgr.wait_ready(WAIT), pebble.log_text()[-3000:]
    issued = first.mgr.store.get(DNS)
    assert issued is not None
    first.close()
    running.remove(first)

    storage = settings.storage_dir()
    for d in (tmp_path / "acme", storage):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    for f in ("account.json", "dns.pem"):
        assert stat.S_IMODE(os.stat(storage / f).st_mode) == 0o600, f
    assert not [p for p in storage.iterdir() if p.name.endswith(".tmp")]
    account = json.loads((storage / "account.json").read_text())
    assert account["uri"].startswith("https://127.0.0.1:")
    assert account["key"]["kty"] == "EC" and "d" in account["key"]

    again = start(running, pebble, settings)
    assert again.mgr.ready()  # served as soon as start() returns
    time.sleep(0.5)  # give the thread a chance to (wrongly) order
    assert again.mgr.orders == 0
    loaded = again.mgr.store.get(DNS)
    assert loaded is not None and loaded.serial == issued.serial
    with client(pebble, "wraith.test") as tls:
        echo(tls)
        assert peer(tls).serial_number == issued.serial
    again.close()
    running.remove(again)

    # Changed identifiers: the stored certificate no longer fits, a new order is placed.
    changed = start(running, pebble, make_settings(pebble, tmp_path, ["wraith.test", "b.test"]))
    assert changed.mgr.wait_ready(WAIT), pebble.log_text()[-3000:]
    assert changed.mgr.orders == 1
    cert = changed.mgr.store.get(DNS)
    assert cert is not None and cert.identifiers == {"wraith.test", "b.test"}


@pytest.mark.integration
def test_failed_issuance_is_logged_and_retried(
    pebble: Pebble, tmp_path: Path, running: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wraith")
    settings = make_settings(pebble, tmp_path, ["wraith.test"])
    r = start(running, pebble, settings, listen=False)  # Pebble's validator finds no listener

    def failures() -> list[str]:
        return [
            rec.getMessage()
            for rec in caplog.records
            if rec.levelno == logging.WARNING and "getting a certificate" in rec.getMessage()
        ]

    assert wait_for(lambda: len(failures()) >= 2), caplog.text
    line = failures()[0]
    assert line.startswith("ACME: getting a certificate for wraith.test failed: ")
    assert "validation of wraith.test (tls-alpn-01) failed" in line
    assert "retrying in " in line
    assert not r.mgr.ready()
    r.listen()
    assert r.mgr.wait_ready(WAIT), pebble.log_text()[-3000:]
    assert r.mgr.orders >= 3
    # Key authorizations never reach the log: they all end in the account thumbprint.
    from josepy.b64 import b64encode
    from josepy.jwk import JWK

    key = JWK.from_json(json.loads((settings.storage_dir() / "account.json").read_text())["key"])
    thumbprint = b64encode(key.thumbprint(hash_function=hashes.SHA256)).decode()
    assert thumbprint not in caplog.text
    assert any("new certificate for wraith.test in service" in m for m in caplog.messages)


@pytest.mark.integration
def test_pebble_chain_is_leaf_then_intermediate(
    pebble: Pebble, tmp_path: Path, running: list[Running]
) -> None:
    r = start(running, pebble, make_settings(pebble, tmp_path, ["127.0.0.1"]))
    assert r.mgr.wait_ready(WAIT), pebble.log_text()[-3000:]
    served = r.mgr.store.get(IP)
    assert served is not None
    chain = x509.load_pem_x509_certificates(served.path.read_bytes())
    intermediate = x509.load_pem_x509_certificate(pebble.intermediate_pem())
    assert len(chain) == 2 and chain[1] == intermediate
    chain[0].verify_directly_issued_by(intermediate)
    now = datetime.datetime.now(datetime.UTC)
    assert served.not_before <= now + datetime.timedelta(minutes=1) < served.not_after
