"""TLS over a trio stream, for the ``tls://`` transport: ``ssl.SSLObject`` on memory BIOs.

``trio.SSLStream`` returns at most one TLS record (16 KiB) per ``receive_some``
and passes through trio's scheduler for each, which halves SSH-inside-TLS
throughput on trio next to asyncio (measured in ``docs/performance.md``).
:class:`TLSStream` does the same job for our use: each ``receive_some`` reads
up to 256 KiB from the socket and decrypts every whole record it holds in
one go, and each ``send_all`` encrypts all it is given and sends the records
with one ``send_all``.

What it supports is what the tunnel needs: one task receiving and one (or
more) sending at the same time, the handshake, TLS 1.3 post-handshake
messages (session tickets are read; anything a read makes OpenSSL send, such
as a key update's answer, goes out with the next send, in order: the receiver
never waits for the sender, so two ends blocked on full sockets cannot
deadlock), ``close_notify`` on close.
An EOF without ``close_notify`` counts as the end of the stream, as
``trio.SSLStream(https_compatible=True)`` does.  Errors are
``trio.BrokenResourceError`` with the ``ssl`` error as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import ssl

import trio

RECEIVE_SIZE = 256 * 1024


class TLSStream(trio.abc.Stream):
    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        self.transport_stream = transport_stream
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._send_lock = trio.Lock()
        self._receiving = False
        self._eof = False
        self._closed = False

    def selected_alpn_protocol(self) -> str | None:
        return self._obj.selected_alpn_protocol()

    def version(self) -> str | None:
        return self._obj.version()

    async def _flush(self) -> None:
        """Send what OpenSSL wrote to the outgoing BIO (ciphertext stays in order)."""
        if not self._outgoing.pending:
            return
        async with self._send_lock:
            while self._outgoing.pending:
                data = self._outgoing.read()
                try:
                    await self.transport_stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise trio.BrokenResourceError("TLS transport broken") from exc

    async def _fill(self) -> bool:
        """Read from the socket into the incoming BIO; False at the socket's EOF."""
        try:
            data = await self.transport_stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, OSError) as exc:
            raise trio.BrokenResourceError("TLS transport broken") from exc
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    async def do_handshake(self) -> None:
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                # An alert for the peer may be waiting in the BIO: best effort.
                with contextlib.suppress(trio.BrokenResourceError):
                    await self._flush()
                raise trio.BrokenResourceError("TLS handshake failed") from exc
            await self._flush()
            if not await self._fill():
                raise trio.BrokenResourceError("connection closed during the TLS handshake")
        await self._flush()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving")
        limit = max_bytes or RECEIVE_SIZE
        self._receiving = True
        try:
            while True:
                chunks: list[bytes] = []
                total = 0
                try:
                    while total < limit:
                        chunk = self._obj.read(limit - total)
                        if not chunk:
                            self._eof = True
                            break
                        chunks.append(chunk)
                        total += len(chunk)
                except ssl.SSLWantReadError:
                    pass
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    self._eof = True
                except ssl.SSLError as exc:
                    raise trio.BrokenResourceError("TLS error") from exc
                # Anything a read made OpenSSL write (a key update's answer) is left
                # in the BIO for the next send: a receiver that waited for the
                # send lock while the sender is blocked on a full socket would
                # deadlock both ends.  SSH sends often (window adjusts, keepalives).
                if chunks:
                    return b"".join(chunks)
                if self._eof:
                    await trio.lowlevel.checkpoint()
                    return b""
                if not await self._fill():
                    # EOF on the socket: what is left in the BIO is read above.
                    continue
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if data:
            try:
                self._obj.write(data)
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError("TLS error") from exc
        await self._flush()
        if not data:
            await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Send ``close_notify`` (best effort), then close the socket."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            with contextlib.suppress(ssl.SSLError):  # the peer's close_notify: not awaited
                self._obj.unwrap()
            with trio.move_on_after(1):
                await self._flush()
        except trio.BrokenResourceError:
            pass
        finally:
            await self.transport_stream.aclose()
