"""``connect()`` on trio: an SSH session kept up, ``open_stream()``, SOCKS5, ``-L`` and ``-R``.

The library's :class:`Client` gives streams and opens no local port unless the
options ask for one; ``wraith connect`` is the CLI that fills those options.
SOCKS requests are parsed by :class:`wraith.proto.socks5.SocksServer`; each one
opens its channel in its own task, so a slow destination delays only itself.

When the session is lost the client reconnects (see :mod:`wraith.reconnect`):
local listeners stay open, new connections wait up to ``session_wait`` for the
session to return, and every ``-R`` is registered again on the new session.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

from ..config import ClientConfig
from ..errors import ConnectError
from ..options import ConnectOptions
from ..proto import forwards as fw
from ..proto import socks5, tunnel
from ..reconnect import Reconnector
from ..ssh import engine as e
from ..ssh import sansio_engine
from ..ssh.forwarding import (
    cancel_remote,
    forwarded_destination,
    register_remote,
    retry_remote,
)
from .drain import Drain, wait_for_stop
from .pump import pump
from .streams import ChannelStream, reset, splice
from .wake import Notifier, guarded, single_errors, wait_pending

log = logging.getLogger("wraith.client")

#: Seconds a local SOCKS client has to send its complete request.
SOCKS_HANDSHAKE_TIMEOUT = 30.0


async def _establish(cfg: ClientConfig, nursery: trio.Nursery) -> e.ClientSession:
    """TCP connect, SSH handshake, host key check and auth; the pump (if any) runs in nursery."""
    target = cfg.target
    try:
        with trio.fail_after(cfg.connect_timeout):
            try:
                stream = await trio.open_tcp_stream(target.host, target.port)
            except OSError as exc:
                raise ConnectError(f"cannot connect to {target.hostport()}: {_why(exc)}") from None
            if cfg.engine == "sansio":
                ssh_stream: trio.abc.Stream = stream
                if cfg.tls is not None:
                    from ..tls import handshake_error  # lazy: only tls:// targets
                    from .tls import TLSStream

                    name = cfg.tls_server_name or target.host
                    tls_stream = TLSStream(stream, cfg.tls, server_hostname=name)
                    try:
                        await tls_stream.do_handshake()
                    except trio.BrokenResourceError as exc:
                        await trio.aclose_forcefully(stream)
                        raise ConnectError(handshake_error(exc, name)) from None
                    ssh_stream = tls_stream
                leftover = b""
                if cfg.stealth_path is not None:
                    leftover = await _stealth_upgrade(
                        ssh_stream, cfg, cfg.tls_server_name or target.host
                    )
                session = sansio_engine.connect_client(
                    host=target.host,
                    port=target.port,
                    username=cfg.username,
                    identity=cfg.identity,
                    certificate=cfg.certificate,
                    host_keys=cfg.host_keys,
                    settings=cfg.ssh,
                )
                if leftover:
                    session.receive_data(leftover, time.monotonic())
                nursery.start_soon(pump, ssh_stream, session)
                try:
                    return await wait_pending(session.ready)
                except BaseException:
                    session.close()
                    raise
            raw = socket.socket(fileno=stream.socket.detach())
            from ..ssh.paramiko_engine import ParamikoClientSession  # lazy: ~70 ms

            pending = ParamikoClientSession.connect(
                raw,
                host=target.host,
                port=target.port,
                username=cfg.username,
                identity=cfg.identity,
                certificate=cfg.certificate,
                host_keys=cfg.host_keys,
                timeout=cfg.connect_timeout,
                settings=cfg.ssh,
            )
            return await wait_pending(pending)
    except trio.TooSlowError:
        raise ConnectError(
            f"cannot connect to {target.hostport()}: timed out after {cfg.connect_timeout:g}s"
        ) from None


async def _stealth_upgrade(stream: trio.abc.Stream, cfg: ClientConfig, host: str) -> bytes:
    """The HTTP Upgrade to the secret path; returns the bytes after the 101."""
    from ..front import stealth_upgrade  # lazy: h11 and the stealth code

    assert cfg.stealth_path is not None

    async def receive() -> bytes:
        return bytes(await stream.receive_some(16384))

    try:
        return await stealth_upgrade(
            stream.send_all, receive, host, cfg.target.port, cfg.stealth_path
        )
    except trio.BrokenResourceError:
        raise ConnectError(f"stealth upgrade with {host} failed: connection closed") from None


def _why(exc: OSError) -> str:
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        sub = cause.exceptions[0]
        if isinstance(sub, OSError):
            exc = sub
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return (exc.strerror or str(exc)).lower()


class Client:
    """A connected Wraith client (trio)."""

    def __init__(self, cfg: ClientConfig, session: e.ClientSession) -> None:
        self.config = cfg
        #: The current session; None while reconnecting.
        self.session: e.ClientSession | None = session
        self.forwards: fw.ForwardRegistry = cfg.registry
        self.socks_addresses: list[tuple[str, int]] = []
        self.local_addresses: list[tuple[str, int]] = []
        self.closed_reason: str | None = None
        self._fingerprint = session.server_fingerprint
        self._up = trio.Event()
        self._up.set()
        self._closed = trio.Event()
        self._fatal: BaseException | None = None
        self._keeper = Reconnector(cfg)
        #: Tunnels through the local listeners and -R, for a graceful shutdown.
        self.drain = Drain()
        self.stopping = False
        self._accepting: list[trio.CancelScope] = []

    @property
    def server_fingerprint(self) -> str:
        return self._fingerprint

    @property
    def connected(self) -> bool:
        """True while an SSH session is up (False while reconnecting)."""
        return self.session is not None and self.session.active

    async def open_stream(self, host: str, port: int) -> ChannelStream:
        """A ``trio.abc.HalfCloseableStream`` to ``host:port``, dialled by the server.

        Raises :class:`wraith.ssh.engine.ChannelOpenFailed` if the server refuses
        or cannot reach it, :class:`wraith.ssh.engine.SessionClosed` if there is
        no session (after waiting up to ``session_wait`` for a reconnect).
        """
        channel = await self._open(host, port, ("127.0.0.1", 0))
        return ChannelStream(channel)

    async def wait_closed(self) -> str:
        """Wait until the client stops for good; return why.

        With reconnection on, that is only a host key that stopped matching
        (raised as :class:`~wraith.ssh.known_hosts.HostKeyError`); without it,
        the first lost session.
        """
        await self._closed.wait()
        if self._fatal is not None:
            raise self._fatal
        return self.closed_reason or "closed"

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, let open tunnels finish for up to ``timeout`` s, then disconnect."""
        self.stopping = True
        self._keeper.enabled = False
        for scope in self._accepting:
            scope.cancel()
        session = self.session
        cancel_remote(session, self.forwards)
        await self.drain.settle(timeout, log, "connection(s)")
        if session is not None:
            session.close("client shutting down")

    async def run_until_stopped(self, shutdown_timeout: float) -> str | None:
        """Serve until SIGINT/SIGTERM (then shut down gracefully and return None)
        or until the client stops for good (return why, or raise a fatal error)."""
        outcome: list[str | None] = []
        async with trio.open_nursery() as nursery:

            async def stop() -> None:
                name = await wait_for_stop()
                log.info("%s: shutting down", name)
                outcome.append(None)
                nursery.cancel_scope.cancel()

            async def closed() -> None:
                outcome.append(await self.wait_closed())
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop)
            nursery.start_soon(closed)
        if outcome and outcome[0] is None:
            await self.shutdown(shutdown_timeout)
            return None
        return outcome[0] if outcome else "closed"

    async def _session(self) -> e.ClientSession:
        """The live session, waiting up to ``session_wait`` while reconnecting."""
        session = self.session
        if session is None or not session.active:
            with trio.move_on_after(self.config.session_wait):
                await self._up.wait()
            session = self.session
            if session is None or not session.active:
                raise e.SessionClosed(self.closed_reason or "SSH session is down (reconnecting)")
        return session

    async def _open(self, host: str, port: int, origin: tuple[str, int]) -> e.Channel:
        session = await self._session()
        pending = session.open_direct_tcpip(host, port, origin[0], origin[1])
        return await wait_pending(pending)

    # -- the session's life -----------------------------------------------------

    async def _keep(self, outer: trio.Nursery, nursery: trio.Nursery) -> None:
        """Run sessions one after another until the client stops."""
        try:
            while True:
                session = self.session
                assert session is not None
                nursery.start_soon(retry_remote, session, self.forwards, wait_pending, trio.sleep)
                reason = await self._events(session, nursery)
                self.session = None
                self._up = trio.Event()
                self.forwards.session_lost()
                if self.stopping:
                    self.closed_reason = reason
                    return
                if not self._keeper.lost(reason, trio.current_time()):
                    self.closed_reason = reason
                    return
                new = await self._reconnect(outer)
                if new is None:
                    return
                self.session = new
                self._up.set()
                await register_remote(new, self.forwards, wait_pending)
        finally:
            self._closed.set()

    async def _reconnect(self, outer: trio.Nursery) -> e.ClientSession | None:
        while True:
            await trio.sleep(self._keeper.next_delay())
            try:
                session = await _establish(self.config, outer)
            except Exception as exc:
                if self._keeper.failed(exc):
                    self._fatal = exc
                    return None
                continue
            self._keeper.connected(session.server_fingerprint, trio.current_time())
            return session

    async def _events(self, session: e.ClientSession, nursery: trio.Nursery) -> str:
        """Serve one session's events; return why it ended."""
        notifier = Notifier()
        session.set_waker(notifier.wake)
        try:
            while True:
                ev = await notifier.poll(session.next_event)
                if isinstance(ev, e.Closed):
                    return ev.reason
                if isinstance(ev, e.ForwardedConnection):
                    nursery.start_soon(guarded, "forwarded connection", self._tracked_forward, ev)
        finally:
            session.set_waker(None)

    async def _tracked_forward(self, ev: e.ForwardedConnection) -> None:
        with self.drain.track():
            await self._forwarded(ev)

    async def _forwarded(self, ev: e.ForwardedConnection) -> None:
        dest = forwarded_destination(self.forwards, ev)
        if dest is None:
            return
        if self.stopping:
            ev.channel.close()
            return
        try:
            stream = await trio.open_tcp_stream(dest.dest_host, dest.dest_port)
        except OSError:
            log.info("remote forward on port %d: local destination unreachable", ev.bind_port)
            ev.channel.close()
            return
        await splice(stream, ChannelStream(ev.channel))

    # -- local listeners --------------------------------------------------------

    async def _listen_all(self, nursery: trio.Nursery) -> None:
        cfg = self.config
        for s in cfg.socks:
            listeners = await _open_listeners(s.bind_host, s.forward.bind_port, "SOCKS")
            self.socks_addresses += [_sockname(li) for li in listeners]
            await self._serve_local(listeners, self._socks, nursery)
        for lf in cfg.local:
            host = fw.effective_bind_host(lf.bind_host)
            listeners = await _open_listeners(host, lf.bind_port, "-L")
            self.local_addresses += [_sockname(li) for li in listeners]

            async def handler(stream: trio.SocketStream, lf: fw.LocalForward = lf) -> None:
                await self._local(lf, stream)

            await self._serve_local(listeners, handler, nursery)

    async def _serve_local(
        self,
        listeners: list[trio.SocketListener],
        handler: Callable[[trio.SocketStream], Awaitable[None]],
        nursery: trio.Nursery,
    ) -> None:
        async def tracked(stream: trio.SocketStream) -> None:
            with self.drain.track():
                await handler(stream)

        async def accept_loop(listener: trio.SocketListener, scope: trio.CancelScope) -> None:
            with scope:  # cancelled by shutdown(): the listener closes, tunnels go on
                async with listener:
                    while True:
                        try:
                            stream = await listener.accept()
                        except OSError as exc:
                            log.warning("local accept failed: %s", exc)
                            await trio.sleep(0.1)
                            continue
                        nursery.start_soon(guarded, "local connection", tracked, stream)

        for listener in listeners:
            scope = trio.CancelScope()
            self._accepting.append(scope)
            nursery.start_soon(accept_loop, listener, scope)

    async def _socks(self, stream: trio.SocketStream) -> None:
        creds = self.config.socks_credentials
        machine = socks5.SocksServer(credentials=dict([creds]) if creds else None)
        request: socks5.ConnectRequest | None = None
        try:
            with trio.fail_after(SOCKS_HANDSHAKE_TIMEOUT):
                while request is None:
                    ev = machine.next_event()
                    out = machine.data_to_send()
                    if out:
                        await stream.send_all(out)
                    if isinstance(ev, socks5.ConnectRequest):
                        request = ev
                    else:
                        machine.receive_data(await stream.receive_some(4096))
        except socks5.SocksError as exc:
            log.debug("bad SOCKS request: %s", exc.msg)
            await _flush_and_close(stream, machine.data_to_send())
            return
        except (trio.TooSlowError, trio.BrokenResourceError, OSError):
            await stream.aclose()
            return
        origin = _peer(stream)
        try:
            channel = await self._open(request.host, request.port, origin)
        except e.ChannelOpenFailed as exc:
            machine.reply(tunnel.socks_reply_for_open_failure(exc.code, exc.description))
            await _flush_and_close(stream, machine.data_to_send())
            return
        except e.SessionClosed:
            machine.reply(socks5.Reply.NETWORK_UNREACHABLE)  # no tunnel right now
            await _flush_and_close(stream, machine.data_to_send())
            return
        except e.EngineError:
            machine.reply(socks5.Reply.GENERAL_FAILURE)
            await _flush_and_close(stream, machine.data_to_send())
            return
        machine.reply(socks5.Reply.SUCCEEDED)
        remote = ChannelStream(channel)
        try:
            await stream.send_all(machine.data_to_send())
            if machine.trailing_data:
                await remote.send_all(machine.trailing_data)
        except (trio.BrokenResourceError, OSError):
            await remote.aclose()
            await reset(stream)
            return
        await splice(stream, remote)

    async def _local(self, forward: fw.LocalForward, stream: trio.SocketStream) -> None:
        try:
            channel = await self._open(forward.dest_host, forward.dest_port, _peer(stream))
        except e.EngineError:
            await reset(stream)
            return
        await splice(stream, ChannelStream(channel))


def _peer(stream: trio.SocketStream) -> tuple[str, int]:
    try:
        addr = stream.socket.getpeername()
        return str(addr[0]), int(addr[1])
    except OSError:
        return "127.0.0.1", 0


async def _flush_and_close(stream: trio.SocketStream, data: bytes) -> None:
    try:
        if data:
            await stream.send_all(data)
    except (trio.BrokenResourceError, OSError):
        pass
    await stream.aclose()


async def _open_listeners(host: str, port: int, what: str) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ConnectError(f"cannot listen for {what} on {host}:{port}: {_why(exc)}") from None


@asynccontextmanager
async def connect(opts: ConnectOptions) -> AsyncIterator[Client]:
    """Connect to a Wraith (or OpenSSH) server; the session lasts for the block."""
    cfg = ClientConfig.from_options(opts)
    with single_errors():
        # The outer nursery holds the engine's pump (Sans-IO engine), which must
        # outlive the listeners long enough to flush our DISCONNECT.
        async with trio.open_nursery() as outer:
            session = await _establish(cfg, outer)
            client = Client(cfg, session)
            client._keeper.connected(session.server_fingerprint, trio.current_time())
            try:
                async with trio.open_nursery() as nursery:
                    await client._listen_all(nursery)
                    await register_remote(session, client.forwards, wait_pending)
                    nursery.start_soon(client._keep, outer, nursery)
                    try:
                        yield client
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                if client.session is not None:
                    client.session.close()
                outer.cancel_scope.deadline = trio.current_time() + 2


def _sockname(listener: trio.SocketListener) -> tuple[str, int]:
    addr = listener.socket.getsockname()
    return str(addr[0]), int(addr[1])
