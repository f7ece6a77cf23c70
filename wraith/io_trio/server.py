"""``serve()`` on trio: listeners, one task per SSH session, dials and ``-R`` listeners.

Each accepted TCP connection is handed (as a plain socket) to the engine, and a
task then loops on the session's events: dial a ``direct-tcpip`` destination
in its own task (so a slow destination delays nobody else), run an accept loop
per granted ``tcpip-forward``, and tear everything down when the session ends.
No log line names a destination.
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from ..config import ServerConfig
from ..front import admit_proxied
from ..gate import Gate
from ..options import ServeOptions
from ..proto import names, tunnel
from ..proto.proxyproto import trusted
from ..ssh import engine as e
from ..ssh.authlog import clean_text
from ..ssh.engine import ByteSession
from ..ssh.engines import server_engine
from .drain import Drain, wait_for_stop
from .front import read_proxy_header, serve_site, tls_front
from .pump import pump
from .streams import ChannelStream, reset, splice
from .wake import Notifier, guarded, single_errors, wait_pending

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
    _accepting: list[trio.CancelScope] = field(default_factory=list)
    _handlers: int = 0
    _handlers_done: trio.Event = field(default_factory=trio.Event)

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, let open tunnels finish for up to ``timeout`` s, then
        disconnect every session (SSH DISCONNECT "server shutting down")."""
        self.draining = True
        for scope in self._accepting:
            scope.cancel()
        for sess in list(self._sessions):
            sess.stop_forwards()
        await self.drain.settle(timeout, log, "tunnel(s)")
        for sess in list(self._sessions):
            sess.session.close("server shutting down")
        if self._handlers:
            with trio.move_on_after(3):  # each session flushes its DISCONNECT
                await self._handlers_done.wait()

    async def run_until_stopped(self, shutdown_timeout: float) -> None:
        """Serve until SIGINT/SIGTERM, then shut down gracefully."""
        name = await wait_for_stop()
        log.info("%s received", name)
        await self.shutdown(shutdown_timeout)


def _dial_error(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return tunnel.describe_dial_error(None, dns=True)
    errno = getattr(exc, "errno", None)
    cause = exc.__cause__
    if errno is None and isinstance(cause, BaseExceptionGroup):
        for sub in cause.exceptions:
            errno = getattr(sub, "errno", None)
            if errno is not None:
                break
    return tunnel.describe_dial_error(errno)


async def _bind(target_host: str, port: int) -> trio.socket.SocketType:
    infos = await trio.socket.getaddrinfo(
        target_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, type_, proto, _, addr = infos[0]
    sock = trio.socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    await sock.bind(addr)
    sock.listen(1024)
    return sock


class _Session:
    def __init__(
        self, session: e.ServerSession, peer: tuple[str, int], server: Server, opts: ServeOptions
    ):
        self.session = session
        self.peer = peer
        self.server = server
        self.opts = opts
        self.forwards: dict[tuple[str, int], trio.CancelScope] = {}
        self._counted = True  # in the gate's unauthenticated count until released

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.server.gate.release(self.peer)

    def stop_forwards(self) -> None:
        """Close this session's -R listeners (a shutdown began)."""
        for scope in self.forwards.values():
            scope.cancel()

    async def run(self) -> None:
        notifier = Notifier()
        self.session.set_waker(notifier.wake)
        reason = "closed"
        deadline = trio.current_time() + self.opts.auth_timeout
        self.server._sessions.add(self)
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    event = notifier.event()
                    ev = self.session.next_event()
                    if ev is None:
                        wait_until = math.inf if self.session.authenticated else deadline
                        with trio.move_on_at(wait_until):
                            await event.wait()
                            continue
                        log.info(
                            "auth timeout src=%s port=%d: closing unauthenticated connection",
                            *self.peer,
                        )
                        self.session.close("authentication timeout")
                        deadline = math.inf
                        continue
                    if isinstance(ev, e.Closed):
                        reason = ev.reason
                        nursery.cancel_scope.cancel()
                        break
                    self._dispatch(ev, nursery)
        finally:
            self.server._sessions.discard(self)
            self._release()
            self.session.set_waker(None)
            self.session.close()
            if self.session.authenticated:
                log.info("session closed src=%s port=%d: %s", *self.peer, clean_text(reason))
            else:
                log.info(
                    "closed before authentication src=%s port=%d: %s",
                    *self.peer,
                    clean_text(reason),
                )

    def _dispatch(self, ev: e.ServerEvent, nursery: trio.Nursery) -> None:
        if isinstance(ev, e.Authenticated):
            log.debug("session authenticated src=%s port=%d", *self.peer)
            self._release()
        elif isinstance(ev, e.AuthFailure):
            if self.server.gate.auth_failed(self.peer, trio.current_time()):
                self.session.close("too many failed authentications")
        elif isinstance(ev, e.DirectTcpipRequested):
            if self.server.draining:
                ev.reject(e.OpenFailure.ADMINISTRATIVELY_PROHIBITED, "server shutting down")
                return
            self.server.drain.enter()  # counted before the task runs: no gap for shutdown()
            nursery.start_soon(guarded, "tunnel", self._tracked_direct, ev)
        elif isinstance(ev, e.ForwardListening):
            scope = trio.CancelScope()
            self.forwards[(ev.bind_host, ev.bind_port)] = scope
            nursery.start_soon(self._forward_listener, ev, scope, nursery)
        elif isinstance(ev, e.ForwardCancelled):
            cancelled = self.forwards.pop((ev.bind_host, ev.bind_port), None)
            if cancelled is not None:
                cancelled.cancel()

    async def _tracked_direct(self, ev: e.DirectTcpipRequested) -> None:
        try:
            await self._direct(ev)
        finally:
            self.server.drain.leave()

    async def _dial_screened(self, ev: e.DirectTcpipRequested) -> trio.SocketStream | None:
        """Resolve, drop the addresses the policy refuses, dial the rest in turn.

        None once ``ev`` is rejected (nothing allowed, or every dial failed)."""
        try:
            infos = await trio.socket.getaddrinfo(ev.host, ev.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            ev.reject(e.OpenFailure.CONNECT_FAILED, _dial_error(exc))
            return None
        usable, why = tunnel.screen_addresses([str(i[4][0]) for i in infos], ev.allows_address)
        first: OSError | None = None
        for address in usable:
            try:
                return await trio.open_tcp_stream(address, ev.port)
            except OSError as exc:
                first = first or exc
        if why is not None:
            ev.reject(e.OpenFailure.ADMINISTRATIVELY_PROHIBITED, why)
        else:
            assert first is not None
            ev.reject(e.OpenFailure.CONNECT_FAILED, _dial_error(first))
        return None

    async def _direct(self, ev: e.DirectTcpipRequested) -> None:
        try:
            with trio.fail_after(self.opts.dial_timeout):
                stream = await self._dial_screened(ev)
        except trio.TooSlowError:
            ev.reject(e.OpenFailure.CONNECT_FAILED, tunnel.TIMED_OUT)
            return
        if stream is None:
            return
        if names.is_link_local_or_metadata(str(stream.socket.getpeername()[0])):
            await reset(stream)  # a name that resolved to a metadata address
            ev.reject(e.OpenFailure.ADMINISTRATIVELY_PROHIBITED, tunnel.LINK_LOCAL_DENIED)
            return
        if not ev.allows_address(str(stream.socket.getpeername()[0])):
            await reset(stream)  # --allow-dest / --deny-dest, on the address reached
            ev.reject(e.OpenFailure.ADMINISTRATIVELY_PROHIBITED, tunnel.NOT_PERMITTED)
            return
        try:
            channel = ev.accept()
        except Exception:
            await reset(stream)
            raise
        await splice(stream, ChannelStream(channel))

    async def _forward_listener(
        self, ev: e.ForwardListening, scope: trio.CancelScope, session: trio.Nursery
    ) -> None:
        """Accept until the forward is cancelled (or a shutdown begins).

        Connections run in the session's nursery, not under ``scope``: closing
        the listener stops new ones, while those in flight carry on (and drain).
        """
        listener = trio.socket.from_stdlib_socket(ev.sock)
        with scope, listener:
            while True:
                conn, addr = await listener.accept()
                self.server.drain.enter()
                session.start_soon(
                    guarded,
                    "forwarded connection",
                    self._tracked_forwarded,
                    ev,
                    trio.SocketStream(conn),
                    addr,
                )

    async def _tracked_forwarded(
        self, ev: e.ForwardListening, stream: trio.SocketStream, addr: tuple[str, int]
    ) -> None:
        try:
            await self._forwarded(ev, stream, addr)
        finally:
            self.server.drain.leave()

    async def _forwarded(
        self, ev: e.ForwardListening, stream: trio.SocketStream, addr: tuple[str, int]
    ) -> None:
        pending = self.session.open_forwarded(ev.bind_host, ev.bind_port, addr[0], addr[1])
        try:
            channel = await wait_pending(pending)
        except e.EngineError:
            await reset(stream)
            return
        await splice(stream, ChannelStream(channel))


async def _reload_on_sighup(
    config: ServerConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Reload authorized_keys on each SIGHUP (main thread only; elsewhere, do nothing)."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        task_status.started()
        return
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            config.policy.reload()


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
    listeners = []
    try:
        for target in config.listen:
            listeners.append(await _bind(target.host, target.port))
    except OSError as exc:
        for sock in listeners:
            sock.close()
        from ..config import ConfigError

        raise ConfigError(f"cannot listen on {target.url()}: {exc.strerror or exc}") from None
    addresses = [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in listeners]
    server = Server(addresses=addresses, config=config, gate=Gate(config.gate))
    proxy_from = config.front.proxy_from if config.front is not None else None
    acme = config.front.acme if config.front is not None else None

    async def accept_loop(
        listener: trio.socket.SocketType, scheme: str, nursery: trio.Nursery
    ) -> None:
        scope = trio.CancelScope()
        server._accepting.append(scope)
        with scope, listener:  # a shutdown cancels the scope: the listener closes
            while True:
                try:
                    conn, addr = await listener.accept()
                except OSError as exc:  # EMFILE and friends: keep serving
                    log.warning("accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                peer = (str(addr[0]), int(addr[1]))
                proxied = proxy_from is not None and trusted(peer[0], proxy_from)
                if not proxied and not server.gate.admit(peer, trio.current_time()):
                    conn.close()  # banned or over the pre-auth caps: before any banner
                    continue
                nursery.start_soon(guarded, "session", counted, conn, peer, scheme, proxied)

    async def counted(
        conn: trio.socket.SocketType, peer: tuple[str, int], scheme: str, proxied: bool
    ) -> None:
        if not server._handlers:
            server._handlers_done = trio.Event()
        server._handlers += 1
        try:
            if proxied:
                # From a trusted front: the PROXY header names the real client,
                # which the gate, the bans and the logs then see.
                header = None
                with trio.move_on_after(opts.auth_timeout):
                    header = await read_proxy_header(conn)
                real = admit_proxied(header, peer, server.gate, trio.current_time())
                if real is None:
                    conn.close()
                    return
                peer = real
            await handle(conn, peer, scheme)
        finally:
            server._handlers -= 1
            if not server._handlers:
                server._handlers_done.set()

    async def handle(conn: trio.socket.SocketType, peer: tuple[str, int], scheme: str) -> None:
        if scheme == "http":
            assert config.front is not None
            plain = trio.SocketStream(conn)
            try:
                await serve_site(plain, config.front.http_lookup, b"", eof=False)
            finally:
                server.gate.release(peer)
                await trio.aclose_forcefully(plain)
            return
        log.info("connection from src=%s port=%d", *peer)
        if engine.pumped:
            stream: trio.abc.Stream = trio.SocketStream(conn)
            leftover = b""
            if scheme == "tls":
                assert config.front is not None
                fronted = await tls_front(conn, peer, config.front, opts.auth_timeout)
                if fronted is None:
                    server.gate.release(peer)
                    return
                stream, leftover = fronted
            session = engine.accept(None, peer)
            assert isinstance(session, ByteSession)
            if leftover:
                session.receive_data(leftover, time.monotonic())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, stream, session)
                await _Session(session, peer, server, opts).run()
                # Let the pump flush the DISCONNECT, but not forever.
                nursery.cancel_scope.deadline = trio.current_time() + 2
            return
        raw = socket.socket(fileno=conn.detach())
        try:
            session = engine.accept(raw, peer)
        except Exception as exc:
            log.warning("session set-up failed src=%s port=%d: %s", *peer, exc)
            raw.close()
            server.gate.release(peer)
            return
        await _Session(session, peer, server, opts).run()

    if acme is not None:
        acme.start()  # stored certificates at once; orders and renewals in its thread
    try:
        with single_errors():
            async with trio.open_nursery() as nursery:
                for listener, target in zip(listeners, config.listen, strict=True):
                    nursery.start_soon(accept_loop, listener, target.scheme, nursery)
                await nursery.start(_reload_on_sighup, config)
                try:
                    yield server
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        if acme is not None:
            await trio.to_thread.run_sync(acme.stop)
