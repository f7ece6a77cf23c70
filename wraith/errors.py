"""Typed exceptions of the library, and the CLI's exit code for each.

The CLI prints the message as one line on stderr and exits with the code.
"""

from __future__ import annotations

from .config import ConfigError
from .ssh.engine import (
    AuthenticationFailed,
    ChannelOpenFailed,
    EngineError,
    HandshakeFailed,
    SessionClosed,
)
from .ssh.known_hosts import HostKeyError, HostKeyMismatch, UnknownHostKey


class WraithError(Exception):
    """Base of Wraith's own runtime errors."""


class ConnectError(WraithError):
    """The transport to the server could not be established."""


#: Documented exit codes of the ``wraith`` command.
EXIT_OK = 0
EXIT_ERROR = 1  # runtime failure, e.g. the session was lost
EXIT_USAGE = 2  # bad flags or options (argparse uses 2 as well)
EXIT_CONNECT = 3  # cannot reach the server / handshake failed
EXIT_AUTH = 4  # the server refused our key
EXIT_HOST_KEY = 5  # unknown or mismatching host key

__all__ = [
    "EXIT_AUTH",
    "EXIT_CONNECT",
    "EXIT_ERROR",
    "EXIT_HOST_KEY",
    "EXIT_OK",
    "EXIT_USAGE",
    "AuthenticationFailed",
    "ChannelOpenFailed",
    "ConfigError",
    "ConnectError",
    "EngineError",
    "HandshakeFailed",
    "HostKeyError",
    "HostKeyMismatch",
    "SessionClosed",
    "UnknownHostKey",
    "WraithError",
]
