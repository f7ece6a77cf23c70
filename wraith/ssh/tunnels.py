"""Server-side tunnel decisions shared by every SSH engine.

Whether a ``direct-tcpip`` open may proceed, where a ``tcpip-forward`` binds,
and the listening socket it gets.  Engines call these; the drivers never
decide.  Nothing here logs a destination.
"""

from __future__ import annotations

import logging
import socket

from ..proto import names, tunnel
from ..proto.destpolicy import DestinationPolicy
from ..proto.errors import RemoteProtocolError
from ..proto.tunnel import OpenFailure
from .auth import Permissions

log = logging.getLogger("wraith.ssh")


def check_destination(
    perms: Permissions | None,
    host: str,
    port: int,
    *,
    dest_policy: DestinationPolicy | None = None,
) -> tuple[OpenFailure, str] | None:
    """None if an open to ``host:port`` may be dialled; else the refusal to send.

    ``dest_policy`` (``--allow-dest`` / ``--deny-dest``; None allows all) sees the
    requested name here; the driver checks the address it resolved to as well.
    """
    if perms is None:
        return OpenFailure.ADMINISTRATIVELY_PROHIBITED, "not authenticated"
    kind = names.classify(host)
    if kind is names.Destination.RESERVED:
        return OpenFailure.ADMINISTRATIVELY_PROHIBITED, tunnel.RESERVED_NAME
    if kind is names.Destination.CONTROL:
        return (
            OpenFailure.ADMINISTRATIVELY_PROHIBITED,
            "administratively prohibited: control channel not available",
        )
    try:
        normal = names.validate_destination(host, port)
    except RemoteProtocolError:
        return OpenFailure.ADMINISTRATIVELY_PROHIBITED, tunnel.INVALID_DESTINATION
    if not perms.port_forwarding or not perms.allows_open(normal, port):
        return OpenFailure.ADMINISTRATIVELY_PROHIBITED, tunnel.NOT_PERMITTED
    if names.is_link_local_or_metadata(normal):
        # Cloud metadata services hand out credentials: never a tunnel target.
        # (The drivers check the address a name resolved to as well.)
        return OpenFailure.ADMINISTRATIVELY_PROHIBITED, tunnel.LINK_LOCAL_DENIED
    if dest_policy is not None and not dest_policy.allows_name(normal, port):
        return OpenFailure.ADMINISTRATIVELY_PROHIBITED, tunnel.NOT_PERMITTED
    return None


def remote_bind_host(address: str, allow_remote_bind: bool) -> str | None:
    """Where a ``tcpip-forward`` for ``address`` binds, or None if refused.

    Like sshd with ``GatewayPorts no``, an empty address or ``localhost`` binds
    loopback; any other address needs ``--allow-remote-bind``.
    """
    addr = address.strip("[]").lower()
    if addr in ("", "localhost"):
        return "0.0.0.0" if allow_remote_bind and addr == "" else "127.0.0.1"
    if names.is_loopback(addr):
        return addr
    if not allow_remote_bind:
        return None
    return "0.0.0.0" if addr == "*" else addr


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking socket for a ``-R`` forward."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def grant_forward(
    perms: Permissions | None,
    address: str,
    port: int,
    *,
    allow_remote_bind: bool,
    peer: tuple[str, int],
) -> socket.socket | None:
    """The listening socket for a client's ``tcpip-forward``, or None if refused.

    Checks the key's permissions and the bind address, then binds.  Logs why
    it refused, naming the client, never a destination.
    """
    if perms is None or not perms.port_forwarding:
        return None
    bind = remote_bind_host(address, allow_remote_bind)
    if bind is None:
        log.info(
            "refused remote bind (non-loopback needs --allow-remote-bind) src=%s port=%d", *peer
        )
        return None
    if not perms.allows_listen(address, port):
        return None
    try:
        return listen_socket(bind, port)
    except OSError as e:
        log.info("remote forward bind failed src=%s port=%d: %s", *peer, e.strerror)
        return None
