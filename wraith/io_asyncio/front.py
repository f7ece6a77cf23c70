"""The ``tls://`` listener's front on asyncio: ClientHello peek, TLS, stealth gate, decoy.

The twin of :mod:`wraith.io_trio.front`; the decisions are :mod:`wraith.front`'s
and ``proto/``'s, this module moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl

from ..decoy import DecoyFiles, DecoyUpstream
from ..front import (
    ACME_TLS_ALPN,
    CountingParser,
    Front,
    Stealth,
    gate_limit,
    peek_until,
    run_site,
)
from ..proto import decoy as site
from ..proto.proxyproto import NEED_DATA as PROXY_NEED_DATA
from ..proto.proxyproto import BadProxyHeader, ProxyHeader, ProxyHeaderParser
from ..proto.sniff import NEED_DATA, ClientHello, ClientHelloSniffer, NotTLS
from ..proto.stealth import NEED_DATA as GATE_NEED_DATA
from ..proto.stealth import Decoy, StealthGate, Tunnel

log = logging.getLogger("wraith.server")

PEEK_SIZE = 64 * 1024 + 5  # the sniffer's limit, plus a record header
PROXY_PEEK = 16 + 65535
READ_SIZE = 64 * 1024
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def fire() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), fire)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def peek_hello(sock: socket.socket) -> ClientHello | NotTLS | None:
    """Sniff the ClientHello without consuming it (None: the peer closed first)."""

    async def peek() -> bytes:
        return await _peek(sock, PEEK_SIZE)

    result = await peek_until(peek, asyncio.sleep, ClientHelloSniffer(), NEED_DATA)
    assert result is None or isinstance(result, ClientHello | NotTLS)
    return result


async def _peek(sock: socket.socket, size: int) -> bytes:
    while True:
        await _readable(sock)
        try:
            return sock.recv(size, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        except OSError:
            return b""


async def read_proxy_header(sock: socket.socket) -> ProxyHeader | BadProxyHeader | None:
    """Read (and consume) exactly the PROXY header; None if the peer closed first."""

    async def peek() -> bytes:
        return await _peek(sock, PROXY_PEEK)

    parser = CountingParser(ProxyHeaderParser())
    result = await peek_until(peek, asyncio.sleep, parser, PROXY_NEED_DATA)
    if isinstance(result, ProxyHeader):
        size = parser.fed - len(result.leftover)
        loop = asyncio.get_running_loop()
        while size:
            try:
                got = await loop.sock_recv(sock, size)
            except OSError:
                return None
            if not got:
                return None
            size -= len(got)
    assert result is None or isinstance(result, ProxyHeader | BadProxyHeader)
    return result


async def _wrap(sock: socket.socket, ctx: ssl.SSLContext | None, timeout: float) -> Streams:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1024 * 1024, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.connect_accepted_socket(
        lambda: protocol,
        sock=sock,
        ssl=ctx,
        ssl_handshake_timeout=timeout if ctx is not None else None,
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def _open_upstream(
    decoy: DecoyUpstream, stealth: Stealth, sni: str | None, tls: bool
) -> Streams:
    if tls and stealth.upstream_tls is not None:
        return await asyncio.open_connection(
            decoy.host,
            decoy.port,
            ssl=stealth.upstream_tls,
            server_hostname=sni or decoy.server_name,
            limit=1024 * 1024,
        )
    return await asyncio.open_connection(decoy.host, decoy.port, limit=1024 * 1024)


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()


async def stealth_gate(
    client: Streams, stealth: Stealth, sni: str | None, peer: tuple[str, int]
) -> bytes | None:
    """Read the first request: the bytes after it for a Wraith client, None once
    the decoy has served the connection (the caller then just closes it)."""
    reader, writer = client
    gate = StealthGate(stealth.path)
    decoy = stealth.decoy
    upstream: Streams | None = None
    if isinstance(decoy, DecoyUpstream):
        try:
            upstream = await _open_upstream(decoy, stealth, sni, tls=True)
        except (OSError, ssl.SSLError) as exc:
            log.warning("decoy %s unreachable: %s", decoy.url(), type(exc).__name__)
    watch: asyncio.Task[bytes] | None = None
    if upstream is not None:
        # The decoy closing an idle connection (or speaking first) ends the wait.
        watch = asyncio.ensure_future(upstream[0].read(READ_SIZE))
    early: bytes | None = None
    client_eof = False
    timed_out = False
    read: asyncio.Future[bytes] | None = None
    try:
        async with asyncio.timeout(gate_limit(upstream is not None)):
            while gate.result() is GATE_NEED_DATA:
                read = asyncio.ensure_future(reader.read(READ_SIZE))
                waiting: set[asyncio.Future[bytes]] = {read} if watch is None else {read, watch}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if read.done() and not read.cancelled():
                    data = read.result()
                    gate.receive_data(data)
                    client_eof = not data
                if watch is not None and watch.done():
                    early = b"" if watch.exception() is not None else watch.result()
                    break
    except TimeoutError:
        timed_out = True
    except (OSError, asyncio.IncompleteReadError):
        client_eof = True
    finally:
        for task in (read, watch):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
    if timed_out or early == b"":
        # Silent for too long, or the decoy hung up first: close, as the decoy would.
        if upstream is not None:
            _close(upstream[1])
        return None
    if gate.result() is GATE_NEED_DATA:
        gate.receive_data(b"")  # decided for the decoy: the client closed or the decoy spoke
    decision = gate.result()
    if isinstance(decision, Tunnel):
        if upstream is not None:
            _close(upstream[1])
        try:
            writer.write(gate.response())
            await writer.drain()
        except OSError:
            return None
        log.debug("stealth upgrade src=%s port=%d", *peer)
        return decision.leftover
    assert isinstance(decision, Decoy)
    replay = decision.replay
    if upstream is not None:
        if early:
            writer.write(early)
        await _splice_decoy(client, upstream, replay, eof=client_eof)
    elif isinstance(decoy, DecoyFiles):
        await serve_site(client, decoy, replay, eof=client_eof)
    return None


async def _splice_decoy(client: Streams, upstream: Streams, replay: bytes, eof: bool) -> None:
    """Client <-> decoy until the decoy closes (then the client is closed, as the
    decoy itself would have); the client's EOF is passed on."""
    (creader, cwriter), (ureader, uwriter) = client, upstream

    async def up() -> None:
        if replay:
            uwriter.write(replay)
            await uwriter.drain()
        if not eof:
            while data := await creader.read(READ_SIZE):
                uwriter.write(data)
                await uwriter.drain()
        if uwriter.can_write_eof():
            uwriter.write_eof()

    async def down() -> None:
        while data := await ureader.read(READ_SIZE):
            cwriter.write(data)
            await cwriter.drain()

    up_task = asyncio.ensure_future(up())
    down_task = asyncio.ensure_future(down())
    try:
        done, _ = await asyncio.wait({up_task, down_task}, return_when=asyncio.FIRST_COMPLETED)
        if down_task not in done and up_task.exception() is None:
            # The client finished sending; the decoy's answer still decides the end.
            await asyncio.wait({down_task})
    finally:
        for task in (up_task, down_task):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        _close(uwriter)


async def serve_site(client: Streams, lookup: site.Lookup, replay: bytes, eof: bool) -> None:
    reader, writer = client

    async def send(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    async def receive(timeout: float) -> bytes | None:
        try:
            async with asyncio.timeout(timeout):
                return await reader.read(READ_SIZE)
        except TimeoutError:
            return None

    with contextlib.suppress(OSError):
        await run_site(lookup, replay, eof, send, receive)


async def tls_front(
    raw: socket.socket, peer: tuple[str, int], front: Front, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes] | None:
    """Peek, handshake and (in stealth mode) gate one ``tls://`` connection.

    Returns the streams SSH runs on and the bytes already read from them, or
    None when the connection was refused or served the decoy (it is then closed).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout  # the peek and the handshake, together
    try:
        async with asyncio.timeout_at(deadline):
            hello = await peek_hello(raw)
    except TimeoutError:
        log.info("TLS handshake failed src=%s port=%d: timed out", *peer)
        raw.close()
        return None
    stealth = front.stealth
    raw_decoy = front.raw_decoy(hello)
    if raw_decoy is not None and stealth is not None:
        # Not TLS at all: what the decoy's own TLS port answers to that.
        try:
            client = await _wrap(raw, None, timeout)
            upstream = await _open_upstream(raw_decoy, stealth, None, tls=False)
        except OSError:
            raw.close()
            return None
        await _splice_decoy(client, upstream, b"", eof=False)
        _close(client[1])
        return None
    ctx = front.context_or_log(hello, peer)
    if ctx is None:
        raw.close()
        return None
    try:
        reader, writer = await _wrap(raw, ctx, max(0.1, deadline - loop.time()))
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else _tls_why(exc)
        log.info("TLS handshake failed src=%s port=%d: %s", *peer, why)
        raw.close()
        return None
    sslobj = writer.get_extra_info("ssl_object")
    if sslobj is not None and sslobj.selected_alpn_protocol() == ACME_TLS_ALPN:
        _close(writer)  # a validation handshake is all it needs
        return None
    if stealth is None:
        return reader, writer, b""
    sni = hello.server_name if isinstance(hello, ClientHello) else None
    leftover = await stealth_gate((reader, writer), stealth, sni, peer)
    if leftover is None:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await writer.wait_closed()
        _close(writer)
        return None
    return reader, writer, leftover


def _tls_why(exc: BaseException) -> str:
    """Why a server-side TLS handshake failed, in a few words (peer input: no details)."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return "connection closed"
