"""``serve()`` on asyncio: listeners, one task per SSH session, dials and ``-R`` listeners.

The twin of :mod:`wraith.io_trio.server`; see there for the theory of operation.
No log line names a destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, ServerConfig
from ..front import admit_proxied
from ..gate import Gate
from ..options import ServeOptions
from ..proto import names, tunnel
from ..proto.proxyproto import trusted
from ..ssh import engine as e
from ..ssh.authlog import clean_text
from ..ssh.engine import ByteSession
from ..ssh.engines import server_engine
from .dial import DialError as DialError
from .dial import dial as dial
from .dial import tcp_connect as tcp_connect  # re-exported: it lived here before .dial
from .drain import Drain, wait_for_stop
from .front import read_proxy_header, serve_site, tls_front
from .pump import prepare, pump
from .streams import reset, splice
from .wake import Notifier, guarded, wait_pending

log = logging.getLogger("wraith.server")


@dataclass
class Server:
    """A running server: its bound ``(host, port)`` addresses and its config."""

    addresses: list[tuple[str, int]]
    config: ServerConfig
    #: Bans and pre-auth caps.
    gate: Gate = field(default_factory=Gate)
    #: Open tunnels, for a graceful shutdown.
    drain: Drain = field(default_factory=Drain)
    #: True once a shutdown began: no new sessions, channels or -R connections.
    draining: bool = False
    _sessions: set[_Session] = field(default_factory=set)
    _acceptors: list[asyncio.Task[None]] = field(default_factory=list)
    _listeners: list[socket.socket] = field(default_factory=list)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, let open tunnels finish for up to ``timeout`` s, then
        disconnect every session (SSH DISCONNECT "server shutting down")."""
        self.draining = True
        for task in self._acceptors:
            task.cancel()
        for sock in self._listeners:
            sock.close()
        for sess in list(self._sessions):
            sess.stop_forwards()
        await self.drain.settle(timeout, log, "tunnel(s)")
        for sess in list(self._sessions):
            sess.session.close("server shutting down")
        if self._handlers:
            # Each session flushes its DISCONNECT.
            await asyncio.wait(set(self._handlers), timeout=3)

    async def run_until_stopped(self, shutdown_timeout: float) -> None:
        """Serve until SIGINT/SIGTERM, then shut down gracefully."""
        name = await wait_for_stop()
        log.info("%s received", name)
        await self.shutdown(shutdown_timeout)


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Session:
    def __init__(
        self, session: e.ServerSession, peer: tuple[str, int], server: Server, opts: ServeOptions
    ):
        self.session = session
        self.peer = peer
        self.server = server
        self.opts = opts
        self.tasks: set[asyncio.Task[Any]] = set()
        self.forwards: dict[tuple[str, int], asyncio.Server] = {}
        self._counted = True  # in the gate's unauthenticated count until released

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.server.gate.release(self.peer)

    def stop_forwards(self) -> None:
        """Close this session's -R listeners (a shutdown began)."""
        for srv in self.forwards.values():
            srv.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(guarded(what, coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def run(self) -> None:
        notifier = Notifier()
        self.session.set_waker(notifier.wake)
        reason = "closed"
        loop = asyncio.get_running_loop()
        deadline: float | None = loop.time() + self.opts.auth_timeout
        self.server._sessions.add(self)
        try:
            while True:
                event = notifier.event()
                ev = self.session.next_event()
                if ev is None:
                    wait_until = None if self.session.authenticated else deadline
                    try:
                        async with asyncio.timeout_at(wait_until):
                            await event.wait()
                    except TimeoutError:
                        log.info(
                            "auth timeout src=%s port=%d: closing unauthenticated connection",
                            *self.peer,
                        )
                        self.session.close("authentication timeout")
                        deadline = None
                    continue
                if isinstance(ev, e.Closed):
                    reason = ev.reason
                    break
                self._dispatch(ev)
        finally:
            self.server._sessions.discard(self)
            self._release()
            self.session.set_waker(None)
            self.session.close()
            for server in self.forwards.values():
                server.close()
            for task in list(self.tasks):
                task.cancel()
            for task in list(self.tasks):
                with contextlib.suppress(BaseException):
                    await task
            if self.session.authenticated:
                log.info("session closed src=%s port=%d: %s", *self.peer, clean_text(reason))
            else:
                log.info(
                    "closed before authentication src=%s port=%d: %s",
                    *self.peer,
                    clean_text(reason),
                )

    def _dispatch(self, ev: e.ServerEvent) -> None:
        if isinstance(ev, e.Authenticated):
            log.debug("session authenticated src=%s port=%d", *self.peer)
            self._release()
        elif isinstance(ev, e.AuthFailure):
            loop = asyncio.get_running_loop()
            if self.server.gate.auth_failed(self.peer, loop.time()):
                self.session.close("too many failed authentications")
        elif isinstance(ev, e.DirectTcpipRequested):
            if self.server.draining:
                ev.reject(e.OpenFailure.ADMINISTRATIVELY_PROHIBITED, "server shutting down")
                return
            # Counted before the task runs (no gap for shutdown()), and left when it is
            # done even if it was cancelled before it ever ran.
            self.server.drain.enter()
            task = self._spawn(self._direct(ev), "tunnel")
            task.add_done_callback(lambda _: self.server.drain.leave())
        elif isinstance(ev, e.ForwardListening):
            self._spawn(self._forward_listener(ev), "forward listener")
        elif isinstance(ev, e.ForwardCancelled):
            server = self.forwards.pop((ev.bind_host, ev.bind_port), None)
            if server is not None:
                server.close()

    async def _direct(self, ev: e.DirectTcpipRequested) -> None:
        try:
            local = await dial(ev.host, ev.port, self.opts.dial_timeout, ev.allows_address)
        except DialError as exc:
            code = e.OpenFailure.ADMINISTRATIVELY_PROHIBITED
            ev.reject(code if exc.prohibited else e.OpenFailure.CONNECT_FAILED, str(exc))
            return
        peer = local[1].get_extra_info("peername") or ("",)
        if names.is_link_local_or_metadata(str(peer[0])):
            reset(local[1])  # a name that resolved to a metadata address
            ev.reject(e.OpenFailure.ADMINISTRATIVELY_PROHIBITED, tunnel.LINK_LOCAL_DENIED)
            return
        if not ev.allows_address(str(peer[0])):
            reset(local[1])  # --allow-dest / --deny-dest, on the address reached
            ev.reject(e.OpenFailure.ADMINISTRATIVELY_PROHIBITED, tunnel.NOT_PERMITTED)
            return
        try:
            channel = ev.accept()
        except Exception:
            reset(local[1])
            raise
        await splice(local, channel)

    async def _forward_listener(self, ev: e.ForwardListening) -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            try:
                if self.server.draining:
                    reset(writer)
                    return
                with self.server.drain.track():
                    await guarded("forwarded connection", self._forwarded(ev, reader, writer))
            finally:
                self.tasks.discard(task)

        server = await asyncio.start_server(handler, sock=ev.sock, limit=1024 * 1024)
        self.forwards[(ev.bind_host, ev.bind_port)] = server

    async def _forwarded(
        self, ev: e.ForwardListening, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        addr = writer.get_extra_info("peername") or ("127.0.0.1", 0)
        pending = self.session.open_forwarded(ev.bind_host, ev.bind_port, addr[0], addr[1])
        try:
            channel = await wait_pending(pending)
        except e.EngineError:
            reset(writer)
            return
        await splice((reader, writer), channel)


def _reload_on_sighup(loop: asyncio.AbstractEventLoop, config: ServerConfig) -> bool:
    """Reload authorized_keys on SIGHUP.  True if the handler is set (main thread only)."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return False
    try:
        loop.add_signal_handler(signal.SIGHUP, config.policy.reload)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


@asynccontextmanager
async def serve(opts: ServeOptions) -> AsyncIterator[Server]:
    """Run a Wraith server until the ``async with`` block exits."""
    config = ServerConfig.from_options(opts)
    for warning in config.warnings:
        log.warning("%s", warning)
    engine = server_engine(
        config.engine,
        config.host_key,
        config.policy,
        allow_remote_bind=opts.allow_remote_bind,
        settings=config.ssh,
        dest_policy=config.dest_policy,
    )
    listeners: list[socket.socket] = []
    for target in config.listen:
        try:
            listeners.append(_bind(target.host, target.port))
        except OSError as exc:
            for sock in listeners:
                sock.close()
            raise ConfigError(f"cannot listen on {target.url()}: {exc.strerror or exc}") from None
    addresses = [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in listeners]
    server = Server(addresses=addresses, config=config, gate=Gate(config.gate))
    server._listeners = listeners
    loop = asyncio.get_running_loop()
    sessions = server._handlers
    proxy_from = config.front.proxy_from if config.front is not None else None

    async def handle(raw: socket.socket, peer: tuple[str, int], scheme: str) -> None:
        if scheme == "http":
            assert config.front is not None
            try:
                streams = await asyncio.open_connection(sock=raw, limit=1024 * 1024)
                await serve_site(streams, config.front.http_lookup, b"", eof=False)
                streams[1].close()
            except OSError:
                raw.close()
            finally:
                server.gate.release(peer)
            return
        log.info("connection from src=%s port=%d", *peer)
        if engine.pumped:
            leftover = b""
            conn: socket.socket | tuple[asyncio.StreamReader, asyncio.StreamWriter]
            if scheme == "tls":
                assert config.front is not None
                fronted = await tls_front(raw, peer, config.front, opts.auth_timeout)
                if fronted is None:
                    server.gate.release(peer)
                    return
                reader, writer, leftover = fronted
                conn = (reader, writer)
            else:
                try:
                    conn = prepare(raw)  # plain TCP: the pump's direct socket path
                except OSError as exc:
                    log.info("connection set-up failed src=%s port=%d: %s", *peer, exc.strerror)
                    raw.close()
                    server.gate.release(peer)
                    return
            session = engine.accept(None, peer)
            assert isinstance(session, ByteSession)
            if leftover:
                session.receive_data(leftover, time.monotonic())
            pumping = asyncio.ensure_future(pump(conn, session))
            try:
                await _Session(session, peer, server, opts).run()
                # Let the pump flush the DISCONNECT, but not forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        await asyncio.shield(pumping)
            finally:
                pumping.cancel()
                with contextlib.suppress(BaseException):
                    await pumping
            return
        try:
            session = engine.accept(raw, peer)
        except Exception as exc:
            log.warning("session set-up failed src=%s port=%d: %s", *peer, exc)
            raw.close()
            server.gate.release(peer)
            return
        await _Session(session, peer, server, opts).run()

    async def fronted(
        raw: socket.socket, peer: tuple[str, int], scheme: str, proxied: bool
    ) -> None:
        if proxied:
            # From a trusted front: the PROXY header names the real client,
            # which the gate, the bans and the logs then see.
            try:
                async with asyncio.timeout(opts.auth_timeout):
                    header = await read_proxy_header(raw)
            except TimeoutError:
                header = None
            real = admit_proxied(header, peer, server.gate, loop.time())
            if real is None:
                raw.close()
                return
            peer = real
        await handle(raw, peer, scheme)

    async def accept_loop(listener: socket.socket, scheme: str) -> None:
        while True:
            try:
                raw, addr = await loop.sock_accept(listener)
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            peer = (str(addr[0]), int(addr[1]))
            proxied = proxy_from is not None and trusted(peer[0], proxy_from)
            if not proxied and not server.gate.admit(peer, loop.time()):
                raw.close()  # banned or over the pre-auth caps: before any banner
                continue
            task = asyncio.ensure_future(guarded("session", fronted(raw, peer, scheme, proxied)))
            sessions.add(task)
            task.add_done_callback(sessions.discard)

    acceptors = [
        asyncio.ensure_future(accept_loop(sock, t.scheme))
        for sock, t in zip(listeners, config.listen, strict=True)
    ]
    server._acceptors = acceptors
    sighup = _reload_on_sighup(loop, config)
    acme = config.front.acme if config.front is not None else None
    if acme is not None:
        acme.start()  # stored certificates at once; orders and renewals in its thread
    try:
        yield server
    finally:
        if acme is not None:
            await asyncio.to_thread(acme.stop)
        if sighup:
            loop.remove_signal_handler(signal.SIGHUP)
        for task in acceptors:
            task.cancel()
        for sock in listeners:
            sock.close()
        for task in list(sessions):
            task.cancel()
        for task in [*acceptors, *sessions]:
            with contextlib.suppress(BaseException):
                await task
