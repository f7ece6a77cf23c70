"""The paramiko engine's channel adapter when sending fails under it.

paramiko's ``Channel.recv()`` sends a WINDOW_ADJUST and ``send()``/``close()``
send packets; when the peer has just died, paramiko's packetizer raises
``EOFError`` (or a socket error) there, before its transport thread notices.
The adapter must report a lost channel then, never let the error escape: an
escaped error once killed the asyncio pump and left a tunnel hanging instead
of reset.  A stand-in channel raises exactly what paramiko raises (a real
session cannot be made to fail at that instant on purpose).
"""

from __future__ import annotations

import weakref
from typing import Any

import pytest

from wraith.ssh.engine import ChannelClosed
from wraith.ssh.paramiko_engine import ParamikoChannel


class _Transport:
    def __init__(self) -> None:
        self.wraith_adapters: weakref.WeakSet[Any] = weakref.WeakSet()

    def is_active(self) -> bool:
        return True  # paramiko's thread has not noticed the death yet


class _DyingChannel:
    """Buffered data; every packet paramiko would send fails with ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.in_buffer = b"x"  # non-empty: the adapter keeps it
        self.closed = False
        self.eof_received = False
        self.out_window_size = 1 << 20
        self.out_max_packet_size = 32768
        self._error = error

    def settimeout(self, timeout: float) -> None:
        pass

    def recv_ready(self) -> bool:
        return True

    def recv(self, n: int) -> bytes:
        raise self._error  # the WINDOW_ADJUST inside recv() failed

    def send(self, data: bytes) -> int:
        raise self._error

    def shutdown_write(self) -> None:
        raise self._error

    def close(self) -> None:
        raise self._error


@pytest.mark.parametrize("error", [EOFError(), BrokenPipeError(32, "Broken pipe")])
def test_send_failures_are_a_lost_channel(error: BaseException) -> None:
    transport = _Transport()
    chan = ParamikoChannel(_DyingChannel(error), transport)  # type: ignore[arg-type]
    assert not chan.lost
    assert chan.read(1024) == b""  # end of stream...
    assert chan.lost  # ...and an abnormal one: the local socket gets a reset
    assert chan.read(1024) == b""
    with pytest.raises(ChannelClosed):
        chan.write(b"data")
    chan.write_eof()  # no error escapes
    chan.close()
    assert chan.lost
