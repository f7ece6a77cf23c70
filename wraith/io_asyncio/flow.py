"""What the asyncio driver's buffered protocols share: write flow control and
a future for the end of the connection."""

from __future__ import annotations

import asyncio


class FlowProtocol(asyncio.BufferedProtocol):
    """``can_write`` is clear while the transport holds more than its high-water
    mark; ``lost`` resolves when the connection is gone.  Subclasses call
    :meth:`_mark_lost` from their ``connection_lost``."""

    def __init__(self) -> None:
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.can_write = asyncio.Event()
        self.can_write.set()

    def _mark_lost(self) -> None:
        self.can_write.set()  # nobody waits for a socket that is gone
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()
