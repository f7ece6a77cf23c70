"""Pick an SSH engine by name: ``sansio`` (Wraith's own) or ``paramiko``.

A *pumped* engine's sessions are :class:`~wraith.ssh.engine.ByteSession`\\ s:
the driver carries their bytes on its own socket stream.  paramiko instead
takes the socket and moves its bytes in its own thread.
"""

from __future__ import annotations

import socket
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .auth import AuthPolicy
from .engine import ServerSession

ENGINES = ("sansio", "paramiko")


class ServerEngine(Protocol):
    pumped: bool

    def accept(self, sock: socket.socket | None, peer: tuple[str, int]) -> ServerSession: ...


def server_engine(
    name: str, host_key: Ed25519PrivateKey, policy: AuthPolicy, *, allow_remote_bind: bool
) -> ServerEngine:
    if name == "sansio":
        from .sansio_engine import SansioServerEngine

        return SansioServerEngine(host_key, policy, allow_remote_bind=allow_remote_bind)
    from .paramiko_engine import ParamikoServerEngine

    return ParamikoServerEngine(host_key, policy, allow_remote_bind=allow_remote_bind)
