"""Dialling on asyncio: ``tcp_connect()`` and ``dial()``, for the server's tunnels
and the client's ``-R`` destinations and its own connection to the server.

Its own module so that the client does not import the server (time to first
byte); :mod:`wraith.io_asyncio.server` re-exports the names.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from ..proto import tunnel

__all__ = ["DialError", "dial", "tcp_connect"]


async def tcp_connect(
    host: str, port: int, screen: Callable[[str], bool] | None = None
) -> socket.socket:
    """A connected non-blocking socket to ``host:port``, trying each address in turn.

    Raises ``socket.gaierror`` if the name does not resolve, else the first
    address's ``OSError`` (its errno says refused, unreachable, ...).  With
    ``screen`` (a tunnel's destination policy), refused addresses are never
    dialled, and if any was refused while the rest failed, that is the
    :class:`DialError` (``prohibited``).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    why: str | None = None
    if screen is not None:
        usable, why = tunnel.screen_addresses([str(i[4][0]) for i in infos], screen)
        infos = [i for i in infos if str(i[4][0]) in usable]
    first: OSError | None = None
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
            return sock
        except OSError as exc:
            sock.close()
            first = first or exc
        except BaseException:
            sock.close()
            raise
    if why is not None:
        raise DialError(why, prohibited=True)
    raise first or OSError(f"no address for {host}")


async def dial(
    host: str, port: int, timeout: float, screen: Callable[[str], bool] | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``host:port``; raise ``DialError`` with the open-failure text."""
    try:
        async with asyncio.timeout(timeout):
            sock = await tcp_connect(host, port, screen)
            return await asyncio.open_connection(sock=sock, limit=1024 * 1024)
    except TimeoutError:
        raise DialError(tunnel.TIMED_OUT) from None
    except socket.gaierror:
        raise DialError(tunnel.describe_dial_error(None, dns=True)) from None
    except OSError as exc:
        raise DialError(tunnel.describe_dial_error(exc.errno)) from None


class DialError(Exception):
    def __init__(self, text: str, *, prohibited: bool = False) -> None:
        super().__init__(text)
        #: Refused by policy (ADMINISTRATIVELY_PROHIBITED), not a failed dial.
        self.prohibited = prohibited
