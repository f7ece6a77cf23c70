"""Events of SSH user authentication (RFC 4252), both roles.

Everything :mod:`wraith.proto.ssh.userauth` hands to its caller is here: frozen,
keyword-only dataclasses that validate in their constructor (raising
``LocalProtocolError``), so a caller never holds an event that could not have
come off the wire.  ``NEED_DATA`` is shared by every layer and lives in
:mod:`wraith.proto.ssh.events_common`; it is re-exported here.

Server side, in the order a typical login produces them: ``NoneRequest`` (the
client asks which methods exist), ``PublicKeyQuery`` (would this key do?),
``PublicKeySigned`` (a signature that verified), then ``Authenticated``.
``AuthFailed`` and ``MethodRefused`` report attempts the layer refused by
itself, for the log.  ``AuthTimeout`` ends an unauthenticated connection.

Client side: ``Banner``, then ``AuthSucceeded`` or ``AuthRejected``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import LocalProtocolError
from .certs import ED25519, ED25519_CERT
from .events_common import NEED_DATA, NeedData

__all__ = [
    "NEED_DATA",
    "PUBLICKEY_ALGORITHMS",
    "AuthFailed",
    "AuthRejected",
    "AuthSucceeded",
    "AuthTimeout",
    "Authenticated",
    "Banner",
    "ClientAuthEvent",
    "MethodRefused",
    "NeedData",
    "NoneRequest",
    "PublicKeyQuery",
    "PublicKeySigned",
    "ServerAuthEvent",
]

#: The publickey algorithms this engine verifies.
PUBLICKEY_ALGORITHMS = (ED25519, ED25519_CERT)


def _check_reason(reason: str) -> None:
    if not reason or not all(
        c.isascii() and (c.islower() or c.isdigit() or c == "-") for c in reason
    ):
        raise LocalProtocolError(f"reason must be short lowercase words joined by '-': {reason!r}")


def _check_algorithm(algorithm: str, key_blob: bytes) -> None:
    if algorithm not in PUBLICKEY_ALGORITHMS:
        raise LocalProtocolError(f"publickey algorithm {algorithm!r} is not supported")
    if not key_blob:
        raise LocalProtocolError("key_blob is empty")


# --- server side --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NoneRequest:
    """The client tried method ``none``; the layer answered FAILURE with our method list.

    Informational: it is not a failed attempt and needs no answer.
    """

    username: str


@dataclass(frozen=True, kw_only=True)
class PublicKeyQuery:
    """The client asks whether ``key_blob`` would be accepted (no signature yet).

    Answer with ``ServerAuth.accept_query()`` (PK_OK) or ``ServerAuth.reject()``
    (FAILURE, counted as a failed attempt).  ``key_blob`` has already been checked
    to be of type ``algorithm``.
    """

    username: str
    algorithm: str
    key_blob: bytes

    def __post_init__(self) -> None:
        _check_algorithm(self.algorithm, self.key_blob)


@dataclass(frozen=True, kw_only=True)
class PublicKeySigned:
    """The client proved it holds the private key of ``key_blob`` for this session.

    The signature has been verified; whether the key (or its certificate's CA) is
    trusted is the caller's decision: ``ServerAuth.accept()`` or ``ServerAuth.reject()``.
    """

    username: str
    algorithm: str
    key_blob: bytes

    def __post_init__(self) -> None:
        _check_algorithm(self.algorithm, self.key_blob)


@dataclass(frozen=True, kw_only=True)
class AuthFailed:
    """A publickey attempt the layer refused by itself; FAILURE was sent.

    ``reason`` is short and stable for the log: ``bad-signature``,
    ``unsupported-algorithm``, ``key-type-mismatch`` or ``malformed-key``.
    ``key_blob`` is the key the client offered (for its fingerprint in the log).
    """

    username: str
    method: str
    reason: str
    key_blob: bytes = field(default=b"", compare=False)

    def __post_init__(self) -> None:
        _check_reason(self.reason)


@dataclass(frozen=True, kw_only=True)
class MethodRefused:
    """The client tried a method we do not offer (password, keyboard-interactive...).

    FAILURE was sent and the attempt counted.
    """

    username: str
    method: str


@dataclass(frozen=True, kw_only=True)
class Authenticated:
    """USERAUTH_SUCCESS was sent: ``username`` is logged in; the connection layer starts."""

    username: str


@dataclass(frozen=True, kw_only=True)
class AuthTimeout:
    """The authentication deadline passed; disconnect the client."""


ServerAuthEvent = (
    NoneRequest
    | PublicKeyQuery
    | PublicKeySigned
    | AuthFailed
    | MethodRefused
    | Authenticated
    | AuthTimeout
)


# --- client side --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AuthSucceeded:
    """The server accepted our key; the connection layer may start."""


@dataclass(frozen=True, kw_only=True)
class AuthRejected:
    """The server refused our key.  We have no other, so authentication is over.

    ``partial`` is RFC 4252's partial success: our key was fine but the server
    wants more methods (``methods_that_can_continue``), which we cannot give.
    """

    methods_that_can_continue: tuple[str, ...]
    partial: bool

    def __post_init__(self) -> None:
        for name in self.methods_that_can_continue:
            if not name or "," in name or not name.isascii():
                raise LocalProtocolError(f"bad method name {name!r}")


@dataclass(frozen=True, kw_only=True)
class Banner:
    """USERAUTH_BANNER text to show the user (as sent, possibly truncated).

    The text is the peer's: escape control characters before printing it.
    """

    text: str
    #: True when the banner was longer than ``max_banner`` and was cut.
    truncated: bool = False


ClientAuthEvent = AuthSucceeded | AuthRejected | Banner
