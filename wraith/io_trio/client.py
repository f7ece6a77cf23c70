"""``connect()`` on trio: one SSH session, ``open_stream()``, SOCKS5, ``-L`` and ``-R``.

The library's :class:`Client` gives streams and opens no local port unless the
options ask for one; ``wraith connect`` is the CLI that fills those options.
SOCKS requests are parsed by :class:`wraith.proto.socks5.SocksServer`; each one
opens its channel in its own task, so a slow destination delays only itself.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

from ..config import ClientConfig
from ..errors import ConnectError
from ..options import ConnectOptions
from ..proto import forwards as fw
from ..proto import socks5, tunnel
from ..ssh import engine as e
from ..ssh import sansio_engine
from ..ssh.forwarding import forwarded_destination, register_remote
from ..ssh.paramiko_engine import ParamikoClientSession
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
                session = sansio_engine.connect_client(
                    host=target.host,
                    port=target.port,
                    username=cfg.username,
                    identity=cfg.identity,
                    certificate=cfg.certificate,
                    host_keys=cfg.host_keys,
                    settings=cfg.ssh,
                )
                nursery.start_soon(pump, stream, session)
                try:
                    return await wait_pending(session.ready)
                except BaseException:
                    session.close()
                    raise
            raw = socket.socket(fileno=stream.socket.detach())
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
        self.session = session
        self.forwards: fw.ForwardRegistry = cfg.registry
        self.socks_addresses: list[tuple[str, int]] = []
        self.local_addresses: list[tuple[str, int]] = []
        self.closed_reason: str | None = None
        self._closed = trio.Event()

    @property
    def server_fingerprint(self) -> str:
        return self.session.server_fingerprint

    async def open_stream(self, host: str, port: int) -> ChannelStream:
        """A ``trio.abc.HalfCloseableStream`` to ``host:port``, dialled by the server.

        Raises :class:`wraith.ssh.engine.ChannelOpenFailed` if the server refuses
        or cannot reach it, :class:`wraith.ssh.engine.SessionClosed` if the
        session is gone.
        """
        channel = await self._open(host, port, ("127.0.0.1", 0))
        return ChannelStream(channel)

    async def wait_closed(self) -> str:
        """Wait until the SSH session ends; return why."""
        await self._closed.wait()
        return self.closed_reason or "closed"

    async def _open(self, host: str, port: int, origin: tuple[str, int]) -> e.Channel:
        if not self.session.active:
            raise e.SessionClosed(self.closed_reason or "session closed")
        pending = self.session.open_direct_tcpip(host, port, origin[0], origin[1])
        return await wait_pending(pending)

    # -- session events ---------------------------------------------------------

    async def _events(self, nursery: trio.Nursery) -> None:
        notifier = Notifier()
        self.session.set_waker(notifier.wake)
        try:
            while True:
                ev = await notifier.poll(self.session.next_event)
                if isinstance(ev, e.Closed):
                    self.closed_reason = ev.reason
                    log.warning("SSH session closed: %s", ev.reason)
                    break
                if isinstance(ev, e.ForwardedConnection):
                    nursery.start_soon(guarded, "forwarded connection", self._forwarded, ev)
        finally:
            self.session.set_waker(None)
            self._closed.set()

    async def _forwarded(self, ev: e.ForwardedConnection) -> None:
        dest = forwarded_destination(self.forwards, ev)
        if dest is None:
            return
        try:
            stream = await trio.open_tcp_stream(dest.dest_host, dest.dest_port)
        except OSError:
            log.info("remote forward on port %d: local destination unreachable", ev.bind_port)
            ev.channel.close()
            return
        await splice(stream, ChannelStream(ev.channel))

    async def _register_remote(self) -> None:
        await register_remote(self.session, self.forwards, wait_pending)

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
        async def accept_loop(listener: trio.SocketListener) -> None:
            async with listener:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        log.warning("local accept failed: %s", exc)
                        await trio.sleep(0.1)
                        continue
                    nursery.start_soon(guarded, "local connection", handler, stream)

        for listener in listeners:
            nursery.start_soon(accept_loop, listener)

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
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client._events, nursery)
                    await client._listen_all(nursery)
                    await client._register_remote()
                    try:
                        yield client
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                session.close()
                outer.cancel_scope.deadline = trio.current_time() + 2


def _sockname(listener: trio.SocketListener) -> tuple[str, int]:
    addr = listener.socket.getsockname()
    return str(addr[0]), int(addr[1])
