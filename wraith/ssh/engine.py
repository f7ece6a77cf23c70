"""The SSH engine interface: what the I/O drivers see of an SSH connection.

Theory of operation
-------------------
An engine owns one SSH connection over a byte stream the driver gave it.  The
driver never blocks on it: every operation either completes at once or returns
something to poll (a :class:`Pending`, ``None`` from :meth:`Channel.read`, ``0``
from :meth:`Channel.write`).  Whenever something may have changed, the engine
calls the *waker* the driver registered.  A waker must be cheap, idempotent and
callable from any thread: the paramiko engine calls it from its transport
thread, a Sans-IO engine from the event loop itself.  The driver's answer to a
wake-up is always the same: poll again.

This keeps engine types out of the drivers (no paramiko object crosses this
line) and lets trio and asyncio drive any engine with one small primitive each:
"wait until woken".

Events from a session come out of :meth:`ServerSession.next_event` /
:meth:`ClientSession.next_event` one at a time, in order, like the Sans-IO state
machines in :mod:`wraith.proto`.
"""

from __future__ import annotations

import socket
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

from ..options import DEFAULT_KEEPALIVE_COUNT, DEFAULT_KEEPALIVE_INTERVAL
from ..proto.destpolicy import DestinationPolicy
from ..proto.tunnel import OpenFailure as OpenFailure

Waker = Callable[[], None]
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class SSHSettings:
    """Per-connection SSH tuning shared by both engines.

    ``ciphers`` is the offered order (empty: the engine's default order).
    When nothing has arrived from the peer for ``keepalive_interval`` seconds,
    a ``keepalive@openssh.com`` request (want-reply) goes out; after
    ``keepalive_count`` silent intervals the session ends as dead, so a dead
    peer is noticed within ``keepalive_interval * (keepalive_count + 1)``.
    """

    ciphers: tuple[str, ...] = ()
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    keepalive_count: int = DEFAULT_KEEPALIVE_COUNT


class EngineError(Exception):
    """Base class of errors an engine reports to the driver."""


class SessionClosed(EngineError):
    """The SSH session is gone; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChannelOpenFailed(EngineError):
    """The peer refused to open a channel."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"channel open failed: {description or code}")
        self.code = code
        self.description = description


class ChannelClosed(EngineError):
    """A write was attempted on a channel that is closed."""


class AuthenticationFailed(EngineError):
    """The server refused every key we offered."""


class HandshakeFailed(EngineError):
    """The SSH handshake (version exchange, key exchange) did not complete."""


class Pending(Generic[T]):
    """A result that an engine thread (or the event loop) fills in later.

    Thread-safe; the waker fires once the result or the error is set.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._result: T | None = None
        self._error: BaseException | None = None
        self._waker: Waker | None = None
        self._abandoned = False

    @property
    def abandoned(self) -> bool:
        """True once the waiter gave up (see :meth:`abandon`)."""
        return self._abandoned

    def abandon(self) -> None:
        """The waiter gave up (cancelled).  A channel that arrives later, or that
        arrived unseen, is closed at once, so that it does not sit open at the peer."""
        with self._lock:
            self._abandoned = True
            self._waker = None
            done, value = self._done, self._result
        if done and isinstance(value, Channel):
            value.close()

    def set_waker(self, waker: Waker | None) -> None:
        with self._lock:
            self._waker = waker
            done = self._done
        if done and waker is not None:
            waker()

    def set_result(self, value: T) -> None:
        self._finish(value, None)

    def set_error(self, error: BaseException) -> None:
        self._finish(None, error)

    def _finish(self, value: T | None, error: BaseException | None) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            self._result = value
            self._error = error
            waker = self._waker
            abandoned = self._abandoned
        if abandoned:
            if isinstance(value, Channel):
                value.close()
            return
        if waker is not None:
            waker()

    @property
    def done(self) -> bool:
        return self._done

    def result(self) -> T:
        """The value, or raise the error.  Only call once :attr:`done`."""
        if not self._done:
            raise RuntimeError("Pending.result() called before it was done")
        if self._error is not None:
            raise self._error
        return cast(T, self._result)


class Channel(ABC):
    """One SSH channel carrying a TCP stream, seen from the driver.

    ``read`` returns ``None`` when nothing is buffered yet, ``b""`` at end of
    stream (the peer sent EOF or CLOSE, or the session died: check
    :attr:`lost`).  ``write`` returns how many bytes the peer's window and
    maximum packet size let through right now; ``0`` means wait for a wake-up.
    """

    @abstractmethod
    def set_waker(self, waker: Waker | None) -> None: ...

    @abstractmethod
    def read(self, max_bytes: int) -> bytes | None: ...

    def read_chunks(self, max_bytes: int) -> list[bytes | memoryview] | None:
        """Like :meth:`read`, but the buffered pieces unjoined (for ``sendmsg``):
        ``None`` when nothing is buffered yet, ``[]`` at end of stream."""
        data = self.read(max_bytes)
        if data is None:
            return None
        return [data] if data else []

    @abstractmethod
    def write(self, data: bytes | memoryview) -> int: ...

    #: Whether :meth:`write_into` is available (the Sans-IO engine's channels).
    supports_write_into = False

    def write_into(self, fill: Callable[[memoryview], int]) -> int:
        """Send what ``fill(view)`` writes into ``view`` (a socket read, say)
        straight from the outgoing packet; returns ``fill``'s count (0 or less:
        nothing sent), or -1 without calling ``fill`` while the peer's window
        is closed (wait for a wake-up).  Only if :attr:`supports_write_into`."""
        raise NotImplementedError

    @abstractmethod
    def write_eof(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def lost(self) -> bool:
        """True when the channel ended abnormally: the SSH session died under it, or
        the peer closed it without sending EOF first (its end was cut).  Either
        way the local socket gets a reset, never a FIN."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once the channel can carry nothing more in either direction."""


# --- server side events -------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Authenticated:
    """The client proved a key; tunnels may open from now on."""

    username: str
    fingerprint: str


@dataclass(frozen=True, kw_only=True, eq=False)
class DirectTcpipRequested:
    """The client asks for a TCP connection to ``host:port`` (SOCKS, ``-L``, ``-W``).

    The engine has already checked names and permissions; the driver dials and
    then calls exactly one of ``accept()`` or ``reject()``.  The open stays
    unconfirmed until then, so a slow destination delays only its own channel.
    """

    host: str
    port: int
    origin_host: str
    origin_port: int
    accept: Callable[[], Channel]
    reject: Callable[[OpenFailure, str], None]
    #: The server's ``--allow-dest`` / ``--deny-dest`` policy; ``host`` already passed
    #: its name check, the address the dial reached is checked with :meth:`allows_address`.
    dest_policy: DestinationPolicy | None = None

    def allows_address(self, ip: str) -> bool:
        """May the connection the driver made to ``ip`` (``host`` resolved) be used?"""
        policy = self.dest_policy
        return policy is None or policy.allows_address(ip, self.port, name=self.host)


@dataclass(frozen=True, kw_only=True, eq=False)
class ForwardListening:
    """A ``tcpip-forward`` was granted: ``sock`` is bound and listening (non-blocking)."""

    bind_host: str
    bind_port: int
    sock: socket.socket


@dataclass(frozen=True, kw_only=True)
class ForwardCancelled:
    """The client cancelled a ``tcpip-forward``; close its listener."""

    bind_host: str
    bind_port: int


@dataclass(frozen=True, kw_only=True)
class Closed:
    """The session ended.  No more events follow."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class AuthFailure:
    """One failed authentication attempt (logged as ``result=failure``): rate limiter input."""

    method: str


ServerEvent = (
    Authenticated
    | AuthFailure
    | DirectTcpipRequested
    | ForwardListening
    | ForwardCancelled
    | Closed
)


# --- client side events -------------------------------------------------------


@dataclass(frozen=True, kw_only=True, eq=False)
class ForwardedConnection:
    """The server accepted a connection on one of our ``-R`` listeners."""

    bind_host: str
    bind_port: int
    origin_host: str
    origin_port: int
    channel: Channel


ClientEvent = ForwardedConnection | Closed


@dataclass
class EventQueue(Generic[T]):
    """A thread-safe FIFO of session events with a waker."""

    _items: deque[T] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _waker: Waker | None = None

    def set_waker(self, waker: Waker | None) -> None:
        with self._lock:
            self._waker = waker
            pending = bool(self._items)
        if pending and waker is not None:
            waker()

    def put(self, item: T) -> None:
        with self._lock:
            self._items.append(item)
            waker = self._waker
        if waker is not None:
            waker()

    def get(self) -> T | None:
        with self._lock:
            return self._items.popleft() if self._items else None


class ServerSession(ABC):
    """One accepted SSH connection, server side."""

    @abstractmethod
    def set_waker(self, waker: Waker | None) -> None: ...

    @abstractmethod
    def next_event(self) -> ServerEvent | None: ...

    @abstractmethod
    def open_forwarded(
        self, bind_host: str, bind_port: int, origin_host: str, origin_port: int
    ) -> Pending[Channel]:
        """Open a ``forwarded-tcpip`` channel for a connection on a ``-R`` listener."""

    @abstractmethod
    def close(self, reason: str = "server shutting down") -> None: ...

    @property
    @abstractmethod
    def authenticated(self) -> bool: ...


class ClientSession(ABC):
    """One established, authenticated SSH connection, client side."""

    @abstractmethod
    def set_waker(self, waker: Waker | None) -> None: ...

    @abstractmethod
    def next_event(self) -> ClientEvent | None: ...

    @abstractmethod
    def open_direct_tcpip(
        self, host: str, port: int, origin_host: str, origin_port: int
    ) -> Pending[Channel]: ...

    @abstractmethod
    def request_forward(self, bind_host: str, bind_port: int) -> Pending[int]:
        """Ask the server to listen (``-R``); the result is the bound port."""

    @abstractmethod
    def cancel_forward(self, bind_host: str, bind_port: int) -> Pending[None]: ...

    @abstractmethod
    def close(self, reason: str = "client shutting down") -> None: ...

    @property
    @abstractmethod
    def active(self) -> bool: ...

    @property
    @abstractmethod
    def server_fingerprint(self) -> str: ...


class ByteSession(ABC):
    """A session whose bytes the driver carries: how a Sans-IO engine plugs in.

    paramiko sessions move their own bytes in their own thread; a Sans-IO
    session instead lets the driver's pump feed it what the socket read
    (``receive_data``, ``b""`` at EOF), write what it produced
    (``data_to_send``), and fire its timer.  The output waker fires whenever
    new bytes are queued (channel writes happen in other tasks).
    """

    @abstractmethod
    def receive_data(self, data: bytes | bytearray, now: float) -> None: ...

    @abstractmethod
    def data_to_send(self) -> bytes: ...

    def data_to_send_views(self) -> list[memoryview]:
        """What ``data_to_send()`` returns, as pieces (for ``sendmsg``), unjoined."""
        data = self.data_to_send()
        return [memoryview(data)] if data else []

    def get_buffer(self, size: int) -> memoryview | None:
        """Room to ``recv_into`` directly, then report with :meth:`buffer_filled`;
        ``None`` if this session has none (use ``receive_data``)."""
        return None

    def buffer_filled(self, n: int, now: float) -> None:
        """``n`` (> 0) bytes were written into the last :meth:`get_buffer` view."""
        raise NotImplementedError

    def trim(self) -> None:  # noqa: B027 (optional: most sessions keep nothing)
        """The link went quiet: give back buffers kept for bulk transfers."""

    @abstractmethod
    def set_output_waker(self, waker: Waker | None) -> None: ...

    @abstractmethod
    def get_timer(self) -> float | None: ...

    @abstractmethod
    def handle_timer(self, now: float) -> None: ...

    @property
    @abstractmethod
    def finished(self) -> bool:
        """Nothing more will be sent: flush, then close the socket."""
