"""``connect()`` on asyncio: an SSH session kept up, ``open_stream()``, SOCKS5, ``-L``, ``-R``.

The twin of :mod:`wraith.io_trio.client`; see there for the theory of operation.
``open_stream()`` returns the standard ``(StreamReader, StreamWriter)`` pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

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
from ..tls import handshake_error
from .dial import DialError, dial, tcp_connect
from .drain import Drain, wait_for_stop
from .pump import prepare, pump
from .streams import open_channel_streams, reset, splice
from .wake import Notifier, guarded, wait_pending

log = logging.getLogger("wraith.client")

#: Seconds a local SOCKS client has to send its complete request.
SOCKS_HANDSHAKE_TIMEOUT = 30.0

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _establish(cfg: ClientConfig) -> tuple[e.ClientSession, asyncio.Task[None] | None]:
    """TCP connect, SSH handshake, host key check and auth; and the pump task, if any."""
    target = cfg.target
    try:
        async with asyncio.timeout(cfg.connect_timeout):
            try:
                raw = await tcp_connect(target.host, target.port)
            except OSError as exc:
                why = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
                raise ConnectError(
                    f"cannot connect to {target.hostport()}: {why.lower()}"
                ) from None
            if cfg.engine == "sansio":
                session = sansio_engine.connect_client(
                    host=target.host,
                    port=target.port,
                    username=cfg.username,
                    identity=cfg.identity,
                    certificate=cfg.certificate,
                    host_keys=cfg.host_keys,
                    settings=cfg.ssh,
                )
                conn: socket.socket | tuple[asyncio.StreamReader, asyncio.StreamWriter]
                if cfg.tls is not None:
                    name = cfg.tls_server_name or target.host
                    try:
                        reader, writer = await asyncio.open_connection(
                            sock=raw, limit=1024 * 1024, ssl=cfg.tls, server_hostname=name
                        )
                    except (ssl.SSLError, OSError) as exc:
                        raw.close()
                        raise ConnectError(handshake_error(exc, name)) from None
                    if cfg.stealth_path is not None:
                        leftover = await _stealth_upgrade(
                            reader, writer, cfg, cfg.tls_server_name or target.host
                        )
                        if leftover:
                            session.receive_data(leftover, time.monotonic())
                    conn = (reader, writer)
                else:
                    conn = prepare(raw)  # plain TCP: the pump's direct socket path
                pumping = asyncio.ensure_future(pump(conn, session))
                try:
                    return await wait_pending(session.ready), pumping
                except BaseException:
                    session.close()
                    pumping.cancel()
                    raise
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
            return await wait_pending(pending), None
    except TimeoutError:
        raise ConnectError(
            f"cannot connect to {target.hostport()}: timed out after {cfg.connect_timeout:g}s"
        ) from None


async def _stealth_upgrade(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cfg: ClientConfig, host: str
) -> bytes:
    """The HTTP Upgrade to the secret path; returns the bytes after the 101."""
    from ..front import stealth_upgrade  # lazy: h11 and the stealth code

    assert cfg.stealth_path is not None

    async def send(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    try:
        return await stealth_upgrade(
            send, lambda: reader.read(16384), host, cfg.target.port, cfg.stealth_path
        )
    except OSError:
        raise ConnectError(f"stealth upgrade with {host} failed: connection closed") from None


class Client:
    """A connected Wraith client (asyncio)."""

    def __init__(
        self, cfg: ClientConfig, session: e.ClientSession, pumping: asyncio.Task[None] | None
    ) -> None:
        self.config = cfg
        #: The current session; None while reconnecting.
        self.session: e.ClientSession | None = session
        self.forwards: fw.ForwardRegistry = cfg.registry
        self.socks_addresses: list[tuple[str, int]] = []
        self.local_addresses: list[tuple[str, int]] = []
        self.closed_reason: str | None = None
        self._fingerprint = session.server_fingerprint
        self._up = asyncio.Event()
        self._up.set()
        self._closed = asyncio.Event()
        self._fatal: BaseException | None = None
        self._keeper = Reconnector(cfg)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._servers: list[asyncio.Server] = []
        self._pumps: list[asyncio.Task[None]] = [pumping] if pumping is not None else []
        #: Tunnels through the local listeners and -R, for a graceful shutdown.
        self.drain = Drain()
        self.stopping = False

    @property
    def server_fingerprint(self) -> str:
        return self._fingerprint

    @property
    def connected(self) -> bool:
        """True while an SSH session is up (False while reconnecting)."""
        return self.session is not None and self.session.active

    async def open_stream(self, host: str, port: int) -> Streams:
        """A ``(StreamReader, StreamWriter)`` to ``host:port``, dialled by the server.

        Raises :class:`wraith.ssh.engine.ChannelOpenFailed` if the server refuses
        or cannot reach it, :class:`wraith.ssh.engine.SessionClosed` if there is
        no session (after waiting up to ``session_wait`` for a reconnect).
        """
        channel = await self._open(host, port, ("127.0.0.1", 0))
        return await open_channel_streams(channel)

    async def wait_closed(self) -> str:
        """Wait until the client stops for good; return why (see the trio twin)."""
        await self._closed.wait()
        if self._fatal is not None:
            raise self._fatal
        return self.closed_reason or "closed"

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, let open tunnels finish for up to ``timeout`` s, then disconnect."""
        self.stopping = True
        self._keeper.enabled = False
        for server in self._servers:
            server.close()
        session = self.session
        cancel_remote(session, self.forwards)
        await self.drain.settle(timeout, log, "connection(s)")
        if session is not None:
            session.close("client shutting down")

    async def run_until_stopped(self, shutdown_timeout: float) -> str | None:
        """Serve until SIGINT/SIGTERM (then shut down gracefully and return None)
        or until the client stops for good (return why, or raise a fatal error)."""
        stop = asyncio.ensure_future(wait_for_stop())
        closed = asyncio.ensure_future(self.wait_closed())
        try:
            await asyncio.wait({stop, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stop, closed):
                task.cancel()
        if stop.done() and not stop.cancelled() and stop.exception() is None:
            log.info("%s: shutting down", stop.result())
            await self.shutdown(shutdown_timeout)
            return None
        return closed.result()

    async def _session(self) -> e.ClientSession:
        """The live session, waiting up to ``session_wait`` while reconnecting."""
        session = self.session
        if session is None or not session.active:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.session_wait):
                    await self._up.wait()
            session = self.session
            if session is None or not session.active:
                raise e.SessionClosed(self.closed_reason or "SSH session is down (reconnecting)")
        return session

    async def _open(self, host: str, port: int, origin: tuple[str, int]) -> e.Channel:
        session = await self._session()
        pending = session.open_direct_tcpip(host, port, origin[0], origin[1])
        return await wait_pending(pending)

    def _spawn(self, coro: Awaitable[None], what: str = "task") -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(guarded(what, coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _track(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- the session's life -----------------------------------------------------

    async def _keep(self) -> None:
        """Run sessions one after another until the client stops."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                session = self.session
                assert session is not None
                self._spawn(retry_remote(session, self.forwards, wait_pending, asyncio.sleep))
                reason = await self._events(session)
                self.session = None
                self._up = asyncio.Event()
                self.forwards.session_lost()
                if self.stopping:
                    self.closed_reason = reason
                    return
                if not self._keeper.lost(reason, loop.time()):
                    self.closed_reason = reason
                    return
                new = await self._reconnect()
                if new is None:
                    return
                self.session = new
                self._up.set()
                await register_remote(new, self.forwards, wait_pending)
        finally:
            self._closed.set()

    async def _reconnect(self) -> e.ClientSession | None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._keeper.next_delay())
            try:
                session, pumping = await _establish(self.config)
            except Exception as exc:
                if self._keeper.failed(exc):
                    self._fatal = exc
                    return None
                continue
            self._pumps = [p for p in self._pumps if not p.done()]
            if pumping is not None:
                self._pumps.append(pumping)
            self._keeper.connected(session.server_fingerprint, loop.time())
            return session

    async def _events(self, session: e.ClientSession) -> str:
        """Serve one session's events; return why it ended."""
        notifier = Notifier()
        session.set_waker(notifier.wake)
        try:
            while True:
                ev = await notifier.poll(session.next_event)
                if isinstance(ev, e.Closed):
                    return ev.reason
                if isinstance(ev, e.ForwardedConnection):
                    self._spawn(self._tracked_forward(ev), "forwarded connection")
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
            local = await dial(dest.dest_host, dest.dest_port, 10.0)
        except DialError:
            log.info("remote forward on port %d: local destination unreachable", ev.bind_port)
            ev.channel.close()
            return
        await splice(local, ev.channel)

    # -- local listeners --------------------------------------------------------

    async def _listen(
        self, host: str, port: int, what: str, handler: Callable[[Streams], Awaitable[None]]
    ) -> list[tuple[str, int]]:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._track()
            with self.drain.track():
                await guarded("local connection", handler((reader, writer)))

        try:
            server = await asyncio.start_server(
                on_connect, host, port, limit=1024 * 1024, backlog=1024
            )
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
            raise ConnectError(
                f"cannot listen for {what} on {host}:{port}: {why.lower()}"
            ) from None
        self._servers.append(server)
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in server.sockets]

    async def _socks(self, local: Streams) -> None:
        reader, writer = local
        creds = self.config.socks_credentials
        machine = socks5.SocksServer(credentials=dict([creds]) if creds else None)
        request: socks5.ConnectRequest | None = None
        try:
            async with asyncio.timeout(SOCKS_HANDSHAKE_TIMEOUT):
                while request is None:
                    ev = machine.next_event()
                    out = machine.data_to_send()
                    if out:
                        writer.write(out)
                        await writer.drain()
                    if isinstance(ev, socks5.ConnectRequest):
                        request = ev
                    else:
                        machine.receive_data(await reader.read(4096))
        except socks5.SocksError as exc:
            log.debug("bad SOCKS request: %s", exc.msg)
            await _flush_and_close(writer, machine.data_to_send())
            return
        except (TimeoutError, OSError):
            writer.close()
            return
        origin = writer.get_extra_info("peername") or ("127.0.0.1", 0)
        try:
            channel = await self._open(request.host, request.port, (origin[0], origin[1]))
        except e.ChannelOpenFailed as exc:
            machine.reply(tunnel.socks_reply_for_open_failure(exc.code, exc.description))
            await _flush_and_close(writer, machine.data_to_send())
            return
        except e.SessionClosed:
            machine.reply(socks5.Reply.NETWORK_UNREACHABLE)  # no tunnel right now
            await _flush_and_close(writer, machine.data_to_send())
            return
        except e.EngineError:
            machine.reply(socks5.Reply.GENERAL_FAILURE)
            await _flush_and_close(writer, machine.data_to_send())
            return
        machine.reply(socks5.Reply.SUCCEEDED)
        try:
            writer.write(machine.data_to_send())
            await writer.drain()
        except OSError:
            channel.close()
            reset(writer)
            return
        await splice(local, channel, first=machine.trailing_data)

    async def _local(self, forward: fw.LocalForward, local: Streams) -> None:
        origin = local[1].get_extra_info("peername") or ("127.0.0.1", 0)
        try:
            channel = await self._open(forward.dest_host, forward.dest_port, origin)
        except e.EngineError:
            reset(local[1])
            return
        await splice(local, channel)

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


async def _flush_and_close(writer: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(OSError):
        if data:
            writer.write(data)
            await writer.drain()
    writer.close()


@asynccontextmanager
async def connect(opts: ConnectOptions) -> AsyncIterator[Client]:
    """Connect to a Wraith (or OpenSSH) server; the session lasts for the block."""
    cfg = ClientConfig.from_options(opts)
    session, pumping = await _establish(cfg)
    client = Client(cfg, session, pumping)
    client._keeper.connected(session.server_fingerprint, asyncio.get_running_loop().time())
    keeper: asyncio.Task[None] | None = None
    try:
        for s in cfg.socks:
            client.socks_addresses += await client._listen(
                s.bind_host, s.forward.bind_port, "SOCKS", client._socks
            )
        for lf in cfg.local:

            async def handler(local: Streams, lf: fw.LocalForward = lf) -> None:
                await client._local(lf, local)

            client.local_addresses += await client._listen(
                fw.effective_bind_host(lf.bind_host), lf.bind_port, "-L", handler
            )
        await register_remote(session, client.forwards, wait_pending)
        keeper = asyncio.ensure_future(client._keep())
        yield client
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(BaseException):
                await keeper
        if client.session is not None:
            client.session.close()
        await client._shutdown()
        for pumping in client._pumps:
            # Let the pump flush our DISCONNECT, but not forever.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(2):
                    await pumping
            pumping.cancel()
