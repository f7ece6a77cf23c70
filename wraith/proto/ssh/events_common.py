"""What every layer of the SSH engine shares: ``NEED_DATA`` and the disconnect error.

Each layer (transport, userauth, connection) has its own events module, but the
sentinel that ``next_event()`` returns when it has nothing to say is one object
for all of them, so a composer can loop over layers with one check.

:class:`DisconnectError` is a :class:`RemoteProtocolError` that names the RFC
4250 disconnect reason the composer should send.  Layers raise it where the
reason is not ``PROTOCOL_ERROR`` (an unknown service, too many authentication
failures); everywhere else a plain ``RemoteProtocolError`` means
``PROTOCOL_ERROR``.  :func:`disconnect_reason` maps any error to its code.
"""

from __future__ import annotations

import enum

from ..errors import RemoteProtocolError
from .constants import DisconnectReason

__all__ = ["NEED_DATA", "DisconnectError", "NeedData", "disconnect_reason"]


class NeedData(enum.Enum):
    """Type of the :data:`NEED_DATA` sentinel (an enum so mypy can narrow on it)."""

    #: ``next_event()`` has nothing to report until more payloads arrive or the caller acts.
    NEED_DATA = enum.auto()


NEED_DATA = NeedData.NEED_DATA


class DisconnectError(RemoteProtocolError):
    """The peer broke the protocol; send DISCONNECT with ``reason`` and end the connection."""

    def __init__(self, msg: str, reason: DisconnectReason = DisconnectReason.PROTOCOL_ERROR):
        super().__init__(msg)
        self.reason = reason


def disconnect_reason(exc: RemoteProtocolError) -> DisconnectReason:
    """The DISCONNECT reason code that fits ``exc``."""
    if isinstance(exc, DisconnectError):
        return exc.reason
    return DisconnectReason.PROTOCOL_ERROR
