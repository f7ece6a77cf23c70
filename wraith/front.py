"""What a ``tls://`` listener does before SSH starts, shared by both drivers.

For each connection on a ``tls://`` listener the driver:

1. peeks at the ClientHello (:mod:`wraith.proto.sniff`) without consuming it;
2. asks :meth:`Front.context_for` for the TLS context to answer it with: an
   ACME TLS-ALPN-01 validation context when the client offers ``acme-tls/1``,
   else the certificate that covers the SNI (from ACME or ``--tls-cert``);
3. runs the TLS handshake with that context;
4. in stealth mode, reads the HTTP request with
   :class:`~wraith.proto.stealth.StealthGate`: only an Upgrade to the secret
   path becomes an SSH session; everything else is served the decoy.

The decisions live here and in ``proto/``; the drivers only move bytes.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .config import ConfigError
from .decoy import Decoy, DecoyUpstream
from .proto.decoy import IDLE_TIMEOUT, Lookup, Page, Redirect, StaticSite
from .proto.proxyproto import BadProxyHeader, ProxyHeader
from .proto.sniff import ClientHello, NotTLS
from .proto.stealth import Accepted, Refused, StealthClient, new_secret_path

if TYPE_CHECKING:
    from .gate import Gate

log = logging.getLogger("wraith.server")

ACME_TLS_ALPN = "acme-tls/1"
HTTP01_PREFIX = "/.well-known/acme-challenge/"
#: Where the secret path is kept, in the state directory.
STEALTH_PATH_FILE = "stealth-path"


#: The longest the stealth gate waits for a request when a decoy web server is
#: connected (its own timeouts normally end a silent connection well before).
GATE_LIMIT = 300.0


def gate_limit(upstream: bool) -> float:
    """How long the stealth gate may wait for a decision: the built-in site's idle
    timeout, or (with a decoy web server, whose own timeouts decide) a hard cap."""
    return GATE_LIMIT if upstream else IDLE_TIMEOUT


class _Responder(Protocol):
    def http01_response(self, path: str) -> bytes | None: ...


class CertificateSource(Protocol):
    """Serving contexts (by SNI) and ACME validation contexts: the ACME manager."""

    @property
    def responder(self) -> _Responder: ...

    def choose_context(self, hello: ClientHello) -> ssl.SSLContext | None: ...

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...


@dataclass
class Stealth:
    path: str
    decoy: Decoy
    #: For an https:// decoy: the client context (the decoy is our own web server,
    #: often on loopback with a certificate for the public name, so it is not verified).
    upstream_tls: ssl.SSLContext | None = None


@dataclass
class Front:
    #: ``--tls-cert`` / ``--tls-key`` (None with ACME only).
    static: ssl.SSLContext | None = None
    #: The ACME manager (None without ``--acme-domain``).
    acme: CertificateSource | None = None
    stealth: Stealth | None = None
    #: ``--proxy-protocol``: the front proxies' networks (None: off).
    proxy_from: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None

    def context_for(self, hello: ClientHello | NotTLS | None) -> ssl.SSLContext | None:
        """The context to answer this ClientHello with (None: no certificate yet)."""
        if self.acme is not None:
            # A validation handshake (ALPN acme-tls/1), or the certificate for the SNI;
            # bytes that are not TLS meet a handshake attempt, as with --tls-cert.
            if isinstance(hello, ClientHello):
                return self.acme.choose_context(hello)
            return self.acme.context_for(None)
        return self.static

    def raw_decoy(self, hello: ClientHello | NotTLS | None) -> DecoyUpstream | None:
        """Bytes that are not TLS at all, in stealth mode with an https:// decoy: the
        decoy's own TLS port should answer them (the connection is spliced raw)."""
        stealth = self.stealth
        if isinstance(hello, NotTLS) and stealth is not None:
            decoy = stealth.decoy
            if isinstance(decoy, DecoyUpstream) and decoy.tls:
                return decoy
        return None

    def context_or_log(
        self, hello: ClientHello | NotTLS | None, peer: tuple[str, int]
    ) -> ssl.SSLContext | None:
        """:meth:`context_for`, logging why there is none (the caller then closes)."""
        ctx = self.context_for(hello) if hello is not None else None
        if ctx is None:
            if hello is None:
                why = "closed"
            else:
                why = "not TLS" if isinstance(hello, NotTLS) else "no certificate yet"
            log.info("TLS handshake failed src=%s port=%d: %s", *peer, why)
        return ctx

    def http_lookup(self, path: str) -> Page | Redirect | None:
        """An ``http://`` listener: ACME HTTP-01 answers; everything else goes to https."""
        if path.startswith(HTTP01_PREFIX):
            body = self.acme.responder.http01_response(path) if self.acme is not None else None
            return Page(body, "application/octet-stream") if body is not None else None
        return Redirect()


class _Parser(Protocol):
    def receive_data(self, data: bytes) -> None: ...

    def result(self) -> object: ...


async def peek_until(
    peek: Callable[[], Awaitable[bytes]],
    sleep: Callable[[float], Awaitable[object]],
    parser: _Parser,
    need_data: object,
) -> object | None:
    """Feed peeked bytes (``MSG_PEEK``: nothing is consumed) to ``parser`` until it
    answers; None if the peer closed first.  Backend-neutral: the driver passes its
    own ``peek`` and ``sleep``.

    A peek returns at once while bytes wait, so when nothing new came the loop
    sleeps a little (growing to 0.1 s) before it looks again; the caller bounds
    the time.
    """
    seen = 0
    delay = 0.002
    while True:
        data = await peek()
        if not data:
            return None
        if len(data) > seen:
            parser.receive_data(data[seen:])
            seen = len(data)
            result = parser.result()
            if result is not need_data:
                return result
            delay = 0.002
        await sleep(delay)
        delay = min(delay * 2, 0.1)


class CountingParser:
    """Counts the bytes fed to a parser, so that a header's size is known."""

    def __init__(self, parser: _Parser) -> None:
        self.parser = parser
        self.fed = 0

    def receive_data(self, data: bytes) -> None:
        self.fed += len(data)
        self.parser.receive_data(data)

    def result(self) -> object:
        return self.parser.result()


def proxied_peer(header: ProxyHeader, peer: tuple[str, int]) -> tuple[str, int]:
    """The client address a PROXY header names (the front's own for LOCAL/UNKNOWN)."""
    if header.source is None:
        return peer
    host, port = header.source
    mapped = ipaddress.ip_address(host)
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
        host = str(mapped.ipv4_mapped)
    return host, port


async def run_site(
    lookup: Lookup,
    replay: bytes,
    eof: bool,
    send: Callable[[bytes], Awaitable[None]],
    receive: Callable[[float], Awaitable[bytes | None]],
) -> None:
    """Serve a :class:`~wraith.proto.decoy.StaticSite` over one connection until it
    closes.  Backend-neutral: ``receive(timeout)`` returns the next bytes (``b""``
    at end of stream) or None when the connection sat idle for ``timeout`` s."""
    server = StaticSite(lookup)
    if replay:  # (b"" would mean end of stream)
        server.receive_data(replay, time.time())
    if eof:
        server.receive_data(b"", time.time())
    while True:
        out = server.data_to_send()
        if out:
            await send(out)
        if server.closed:
            return
        data = await receive(IDLE_TIMEOUT)
        if data is None:
            return
        server.receive_data(data, time.time())


async def stealth_upgrade(
    send: Callable[[bytes], Awaitable[None]],
    receive: Callable[[], Awaitable[bytes]],
    host: str,
    port: int,
    path: str,
) -> bytes:
    """Client side: the HTTP Upgrade to the secret path; the bytes after the 101.

    ``host`` is the TLS server name; the Host header adds ``:port`` unless 443,
    as a browser does.

    Backend-neutral; a refusal is :class:`~wraith.errors.ConnectError`, and the
    caller turns its backend's broken-stream error into one."""
    from .errors import ConnectError

    authority = f"[{host}]" if ":" in host else host
    if port != 443:
        authority += f":{port}"
    client = StealthClient(authority, path, key=secrets.token_bytes(16))
    await send(client.request())
    while True:
        result = client.result()
        if isinstance(result, Accepted):
            return result.leftover
        if isinstance(result, Refused):
            raise ConnectError(f"stealth upgrade refused by {host}: {result.reason}")
        client.receive_data(await receive())


def admit_proxied(
    header: ProxyHeader | BadProxyHeader | None,
    front_peer: tuple[str, int],
    gate: Gate,
    now: float,
) -> tuple[str, int] | None:
    """After a trusted front's PROXY header: the real client address, if admitted."""
    if not isinstance(header, ProxyHeader):
        why = header.reason if header is not None else "timed out or closed"
        log.info("bad PROXY header from front src=%s port=%d: %s", *front_peer, why)
        return None
    peer = proxied_peer(header, front_peer)
    return peer if gate.admit(peer, now) else None


def upstream_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def make_stealth(state_dir: Path, decoy: Decoy) -> Stealth:
    path = load_or_create_secret_path(state_dir)
    tls = upstream_context() if isinstance(decoy, DecoyUpstream) and decoy.tls else None
    return Stealth(path=path, decoy=decoy, upstream_tls=tls)


def load_or_create_secret_path(state_dir: Path) -> str:
    """The stealth secret path: made on first start (144 random bits), then kept."""
    file = state_dir / STEALTH_PATH_FILE
    try:
        text = file.read_text().strip()
    except FileNotFoundError:
        text = ""
    except OSError as e:
        raise ConfigError(f"cannot read {file}: {e.strerror or e}") from None
    if text:
        try:
            from .proto.stealth import StealthGate

            StealthGate(text)
        except Exception as e:
            raise ConfigError(
                f"{file}: not a valid secret path ({e}); delete it to make a new one"
            ) from None
        return text
    path = new_secret_path(secrets.token_bytes(18))
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(path + "\n")
    except FileExistsError:
        return load_or_create_secret_path(state_dir)
    except OSError as e:
        raise ConfigError(f"cannot write {file}: {e.strerror or e}") from None
    log.info("created the stealth secret path in %s", file)
    return path
