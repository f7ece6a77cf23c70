"""Buffer helpers for the drivers' hot paths (no I/O here).

:class:`BufferPool` is a small free list of large receive buffers, shared by a
process's connections.
Reading a bulk transfer into a fresh 256 KiB object per call costs an
allocation and fresh pages each time; reading into a buffer taken from here,
and given back once its bytes were handed on, reuses warm memory.  The pool
keeps at most ``keep`` idle buffers, so a thousand idle connections hold none
(a buffer is only out while one read's bytes are being handed on).
"""

from __future__ import annotations

from collections.abc import Sequence

#: At most this many buffers per ``writev`` (Linux's IOV_MAX is 1024).
MAX_BUFFERS = 512


def drop_sent(pending: list[bytes | memoryview], sent: int) -> None:
    """Remove the first ``sent`` bytes from a list of buffers (after a partial ``writev``)."""
    done = 0
    for buf in pending:
        size = len(buf)
        if sent >= size:
            sent -= size
            done += 1
            continue
        if sent:
            pending[done] = memoryview(buf)[sent:]
        break
    del pending[:done]


def batch(pending: Sequence[bytes | memoryview]) -> Sequence[bytes | memoryview]:
    """The buffers for one ``writev`` call."""
    return pending if len(pending) <= MAX_BUFFERS else pending[:MAX_BUFFERS]


class BufferPool:
    def __init__(self, size: int, keep: int = 8) -> None:
        self.size = size
        self.keep = keep
        self._free: list[bytearray] = []
        #: Buffers taken and not given back yet.
        self.out = 0

    def take(self) -> bytearray:
        """A buffer of ``size`` bytes (contents undefined)."""
        self.out += 1
        return self._free.pop() if self._free else bytearray(self.size)

    def give(self, buf: bytearray) -> None:
        """Return a buffer that nothing refers to any more."""
        self.out -= 1
        if len(self._free) < self.keep and len(buf) == self.size:
            self._free.append(buf)


#: Shared by the splices of one process (one event loop thread uses it).
READ_BUFFERS = BufferPool(256 * 1024)
