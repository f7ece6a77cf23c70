"""Pick an SSH engine by name: ``sansio`` (Wraith's own) or ``paramiko``.

A *pumped* engine's sessions are :class:`~wraith.ssh.engine.ByteSession`\\ s:
the driver carries their bytes on its own socket stream.  paramiko instead
takes the socket and moves its bytes in its own thread.
"""

from __future__ import annotations

import socket
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..proto.destpolicy import DestinationPolicy
from .auth import AuthPolicy
from .engine import ServerSession, SSHSettings

ENGINES = ("sansio", "paramiko")
#: The ciphers each engine can offer (``--ciphers`` picks from these).
ENGINE_CIPHERS = {
    "sansio": ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"),
    "paramiko": ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com"),
}


class ServerEngine(Protocol):
    pumped: bool

    def accept(self, sock: socket.socket | None, peer: tuple[str, int]) -> ServerSession: ...


def server_engine(
    name: str,
    host_key: Ed25519PrivateKey,
    policy: AuthPolicy,
    *,
    allow_remote_bind: bool,
    settings: SSHSettings | None = None,
    dest_policy: DestinationPolicy | None = None,
) -> ServerEngine:
    settings = settings or SSHSettings()
    if name == "sansio":
        from .sansio_engine import SansioServerEngine

        return SansioServerEngine(
            host_key,
            policy,
            allow_remote_bind=allow_remote_bind,
            settings=settings,
            dest_policy=dest_policy,
        )
    from .paramiko_engine import ParamikoServerEngine

    return ParamikoServerEngine(
        host_key,
        policy,
        allow_remote_bind=allow_remote_bind,
        settings=settings,
        dest_policy=dest_policy,
    )
