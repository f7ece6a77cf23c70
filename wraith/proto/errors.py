"""One error hierarchy for every state machine in :mod:`wraith.proto`.

``LocalProtocolError`` is raised when *we* ask a state machine to do something
it cannot (the send path, constructors).  ``RemoteProtocolError`` is raised only
from the receive path, when the peer (or other outside input, such as a forward
spec typed by a user) is malformed.  The fuzzers check that nothing else escapes
a parser.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every protocol error raised by :mod:`wraith.proto`."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer (or outside input) broke the protocol."""
