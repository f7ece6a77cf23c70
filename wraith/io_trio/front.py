"""The ``tls://`` listener's front on trio: ClientHello peek, TLS, stealth gate, decoy.

The decisions are :mod:`wraith.front`'s and ``proto/``'s; this module moves bytes.
"""

from __future__ import annotations

import contextlib
import logging
import socket

import trio

from ..decoy import DecoyFiles, DecoyUpstream
from ..front import CountingParser, Front, Stealth, gate_limit, peek_until, run_site
from ..proto import decoy as site
from ..proto.proxyproto import NEED_DATA as PROXY_NEED_DATA
from ..proto.proxyproto import BadProxyHeader, ProxyHeader, ProxyHeaderParser
from ..proto.sniff import NEED_DATA, ClientHello, ClientHelloSniffer, NotTLS
from ..proto.stealth import NEED_DATA as GATE_NEED_DATA
from ..proto.stealth import Decoy, StealthGate, Tunnel
from .tls import TLSStream

log = logging.getLogger("wraith.server")

PEEK_SIZE = 64 * 1024 + 5  # the sniffer's limit, plus a record header
PROXY_PEEK = 16 + 65535
READ_SIZE = 64 * 1024


async def peek_hello(sock: trio.socket.SocketType) -> ClientHello | NotTLS | None:
    """Sniff the ClientHello without consuming it (None: the peer closed first)."""

    async def peek() -> bytes:
        return await sock.recv(PEEK_SIZE, socket.MSG_PEEK)

    result = await peek_until(peek, trio.sleep, ClientHelloSniffer(), NEED_DATA)
    assert result is None or isinstance(result, ClientHello | NotTLS)
    return result


async def read_proxy_header(sock: trio.socket.SocketType) -> ProxyHeader | BadProxyHeader | None:
    """Read (and consume) exactly the PROXY header; None if the peer closed first."""

    async def peek() -> bytes:
        return await sock.recv(PROXY_PEEK, socket.MSG_PEEK)

    parser = CountingParser(ProxyHeaderParser())
    result = await peek_until(peek, trio.sleep, parser, PROXY_NEED_DATA)
    if isinstance(result, ProxyHeader):
        size = parser.fed - len(result.leftover)
        while size:
            got = await sock.recv(size)
            if not got:
                return None
            size -= len(got)
    assert result is None or isinstance(result, ProxyHeader | BadProxyHeader)
    return result


async def open_upstream(decoy: DecoyUpstream, stealth: Stealth, sni: str | None) -> trio.abc.Stream:
    stream: trio.abc.Stream = await trio.open_tcp_stream(decoy.host, decoy.port)
    if stealth.upstream_tls is not None:
        tls = TLSStream(stream, stealth.upstream_tls, server_hostname=sni or decoy.server_name)
        await tls.do_handshake()
        stream = tls
    return stream


async def stealth_gate(
    client: trio.abc.Stream, stealth: Stealth, sni: str | None, peer: tuple[str, int]
) -> bytes | None:
    """Read the first request: the bytes after it for a Wraith client, None once
    the decoy has served the connection (the caller then just closes it)."""
    gate = StealthGate(stealth.path)
    upstream: trio.abc.Stream | None = None
    decoy = stealth.decoy
    if isinstance(decoy, DecoyUpstream):
        try:
            upstream = await open_upstream(decoy, stealth, sni)
        except (OSError, trio.BrokenResourceError) as exc:
            log.warning("decoy %s unreachable: %s", decoy.url(), type(exc).__name__)
            upstream = None
    client_eof = False
    #: What the decoy sent before the gate decided (b"": it closed), if anything.
    early: bytes | None = None
    with trio.move_on_after(gate_limit(upstream is not None)) as limit:
        async with trio.open_nursery() as nursery:

            async def watch_upstream() -> None:
                # The decoy closing an idle connection (or answering first) ends ours too.
                # (receive_some, not socket readability: TLS session tickets are no answer.)
                nonlocal early
                assert upstream is not None
                try:
                    early = bytes(await upstream.receive_some(READ_SIZE))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    early = b""
                nursery.cancel_scope.cancel()

            if upstream is not None:
                nursery.start_soon(watch_upstream)
            try:
                while gate.result() is GATE_NEED_DATA:
                    data = await client.receive_some(READ_SIZE)
                    gate.receive_data(data)
                    client_eof = not data
            except trio.BrokenResourceError:
                client_eof = True
            nursery.cancel_scope.cancel()
    if limit.cancelled_caught or early == b"":
        # Silent for too long, or the decoy hung up first: close, as the decoy would.
        if upstream is not None:
            await trio.aclose_forcefully(upstream)
        return None
    if gate.result() is GATE_NEED_DATA:
        gate.receive_data(b"")  # decided for the decoy: the client closed or the decoy spoke
    decision = gate.result()
    if isinstance(decision, Tunnel):
        if upstream is not None:
            await trio.aclose_forcefully(upstream)
        try:
            await client.send_all(gate.response())
        except trio.BrokenResourceError:
            return None
        log.debug("stealth upgrade src=%s port=%d", *peer)
        return decision.leftover
    assert isinstance(decision, Decoy)
    if upstream is not None:
        if early:
            try:
                await client.send_all(early)
            except trio.BrokenResourceError:
                await trio.aclose_forcefully(upstream)
                return None
        await _splice_decoy(client, upstream, decision.replay, eof=client_eof)
    elif isinstance(decoy, DecoyFiles):
        await serve_site(client, decoy, decision.replay, eof=client_eof)
    return None


async def _splice_decoy(
    client: trio.abc.Stream, upstream: trio.abc.Stream, replay: bytes, eof: bool
) -> None:
    """Client <-> decoy until the decoy closes (then the client is closed, as the
    decoy itself would have); the client's EOF is passed on."""
    async with trio.open_nursery() as nursery:

        async def up() -> None:
            try:
                if replay:
                    await upstream.send_all(replay)
                if not eof:
                    while data := await client.receive_some(READ_SIZE):
                        await upstream.send_all(data)
                if isinstance(upstream, trio.SocketStream):
                    await upstream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                nursery.cancel_scope.cancel()

        async def down() -> None:
            try:
                while data := await upstream.receive_some(READ_SIZE):
                    await client.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(up)
        nursery.start_soon(down)
    await trio.aclose_forcefully(upstream)


async def serve_site(
    client: trio.abc.Stream, lookup: site.Lookup, replay: bytes, eof: bool
) -> None:
    async def receive(timeout: float) -> bytes | None:
        with trio.move_on_after(timeout):
            return bytes(await client.receive_some(READ_SIZE))
        return None

    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await run_site(lookup, replay, eof, client.send_all, receive)


async def tls_front(
    conn: trio.socket.SocketType,
    peer: tuple[str, int],
    front: Front,
    timeout: float,
) -> tuple[trio.abc.Stream, bytes] | None:
    """Peek, handshake and (in stealth mode) gate one ``tls://`` connection.

    Returns the stream SSH runs on and the bytes already read from it, or None
    when the connection was refused or served the decoy (it is then closed).
    """
    stream = trio.SocketStream(conn)
    hello: ClientHello | NotTLS | None = None
    timed_out = True
    deadline = trio.current_time() + timeout  # the peek and the handshake, together
    with trio.move_on_at(deadline):
        hello = await peek_hello(conn)
        timed_out = False
    if timed_out:
        log.info("TLS handshake failed src=%s port=%d: timed out", *peer)
        await trio.aclose_forcefully(stream)
        return None
    stealth = front.stealth
    raw_decoy = front.raw_decoy(hello)
    if raw_decoy is not None:
        # Not TLS at all: what the decoy's own TLS port answers to that.
        try:
            raw = await trio.open_tcp_stream(raw_decoy.host, raw_decoy.port)
        except OSError:
            await trio.aclose_forcefully(stream)
            return None
        await _splice_decoy(stream, raw, b"", eof=False)
        await trio.aclose_forcefully(stream)
        return None
    ctx = front.context_or_log(hello, peer)
    if ctx is None:
        await trio.aclose_forcefully(stream)
        return None
    tls_stream = TLSStream(stream, ctx, server_side=True)
    try:
        with trio.fail_at(deadline):
            await tls_stream.do_handshake()
    except (trio.TooSlowError, trio.BrokenResourceError) as exc:
        why = "timed out" if isinstance(exc, trio.TooSlowError) else _tls_why(exc)
        log.info("TLS handshake failed src=%s port=%d: %s", *peer, why)
        await trio.aclose_forcefully(stream)
        return None
    if tls_stream.selected_alpn_protocol() == "acme-tls/1":
        await trio.aclose_forcefully(tls_stream)  # a validation handshake is all it needs
        return None
    if stealth is None:
        return tls_stream, b""
    sni = hello.server_name if isinstance(hello, ClientHello) else None
    leftover = await stealth_gate(tls_stream, stealth, sni, peer)
    if leftover is None:
        with trio.move_on_after(2) as cleanup:  # close_notify, as a web server sends
            await tls_stream.aclose()
        if cleanup.cancelled_caught:
            await trio.aclose_forcefully(stream)
        return None
    return tls_stream, leftover


def _tls_why(exc: BaseException) -> str:
    """Why a server-side TLS handshake failed, in a few words (peer input: no details)."""
    import ssl

    cause = exc.__cause__
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return str(cause.reason).lower().replace("_", " ")
    return "connection closed"
