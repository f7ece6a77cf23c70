"""SSH user authentication (RFC 4252), both roles, on message payloads.

Theory of operation
-------------------
This layer sits above the transport: it is handed decrypted payloads (bytes
starting with the message number) through ``receive_payload()`` and leaves its
own in ``payloads_to_send()``.  Events come out of ``next_event()``, which
returns ``NEED_DATA`` when there is nothing to report.  Every move of either
role is one entry in its transition table (``_SERVER_TRANSITIONS``,
``_CLIENT_TRANSITIONS``); anything not in the table is a protocol error and
leaves the object in its terminal ``ERROR`` state.

The server does only what needs no policy: it answers SERVICE_REQUEST, answers
``none`` with the method list, refuses methods it does not offer, and checks
the user's Ed25519 signature over RFC 4252 section 7's data.  Which keys (or
certificate authorities) are trusted is the caller's decision: it sees
``PublicKeyQuery`` / ``PublicKeySigned`` and answers ``accept_query()``,
``accept()`` or ``reject()``.  Until it answers, later requests wait in a short
queue; RFC 4252 section 5 lets a client send several requests without waiting,
and the server must answer each completely, in order.

Which errors raise where: malformed payloads, messages the state does not allow,
a change of user name or service, and unknown services raise from
``receive_payload()``.  A request that arrives after ``max_attempts`` failed
attempts raises from whichever of ``receive_payload()`` / ``next_event()``
processes it.  Both are the receive path: they raise only
``RemoteProtocolError`` (a :class:`DisconnectError` says which DISCONNECT
reason to send).  The caller's own calls raise ``LocalProtocolError``.

Counted as failed attempts: a refused query, a refused signed request, a bad
signature, an unsupported algorithm or malformed key, and any method other than
``publickey`` and ``none``.  ``none`` is free (clients send it first to learn
the method list), but still bounded by the deadline.

The deadline: ``get_timer()`` gives the time by which authentication must
succeed; the driver calls ``handle_timer(now)`` when it passes.  Time is only
ever passed in.

Routing, for the composer: before authentication, give this layer every
payload the transport does not consume itself (the service messages and
everything from 50 up); any non-userauth message is then a protocol error, as
RFC 4252 section 6 requires.  After ``Authenticated`` the server ignores further
userauth messages (section 5.1) and connection messages go to the connection
layer.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import LocalProtocolError, RemoteProtocolError
from .certs import (
    ED25519,
    ED25519_CERT,
    CertType,
    ed25519_key_from_blob,
    parse_ed25519_certificate,
)
from .constants import USERAUTH_RANGE, DisconnectReason, Msg
from .events_common import NEED_DATA, DisconnectError, NeedData
from .userauth_events import (
    PUBLICKEY_ALGORITHMS,
    Authenticated,
    AuthFailed,
    AuthRejected,
    AuthSucceeded,
    AuthTimeout,
    Banner,
    ClientAuthEvent,
    MethodRefused,
    NoneRequest,
    PublicKeyQuery,
    PublicKeySigned,
    ServerAuthEvent,
)
from .wire import Reader, boolean, message, name_list, string

__all__ = [
    "CLIENT_MESSAGES",
    "CONNECTION_SERVICE",
    "SERVER_MESSAGES",
    "USERAUTH_SERVICE",
    "ClientAuth",
    "ClientAuthState",
    "ServerAuth",
    "ServerAuthState",
    "publickey_signed_data",
]

USERAUTH_SERVICE = "ssh-userauth"
CONNECTION_SERVICE = "ssh-connection"
#: Message numbers the server layer takes (everything else is the transport's or not ours).
SERVER_MESSAGES = frozenset({Msg.SERVICE_REQUEST, *USERAUTH_RANGE})
#: Message numbers the client layer takes.
CLIENT_MESSAGES = frozenset({Msg.SERVICE_ACCEPT, *USERAUTH_RANGE})

#: Longest user name accepted (bytes); longer is DISCONNECT ILLEGAL_USER_NAME.
MAX_USERNAME = 256
#: Requests a client may have pipelined behind one awaiting the caller's decision.
MAX_QUEUED_REQUESTS = 16
_MAX_NAME = 256  # service, method and algorithm names
#: Largest signature blob read: an RSA-8192 one is about 1 KiB, and refusing an
#: algorithm we do not verify must be a failure, not a disconnect.
_MAX_SIGNATURE = 16 * 1024


def publickey_signed_data(
    session_id: bytes, username: bytes, algorithm: str, key_blob: bytes
) -> bytes:
    """What a publickey signature covers (RFC 4252 section 7)."""
    return b"".join(
        (
            string(session_id),
            bytes((Msg.USERAUTH_REQUEST,)),
            string(username),
            string(CONNECTION_SERVICE),
            string("publickey"),
            boolean(True),
            string(algorithm),
            string(key_blob),
        )
    )


def _signature_blob(signature: bytes) -> bytes:
    return string(ED25519) + string(signature)


# --- server -------------------------------------------------------------------


class ServerAuthState(enum.Enum):
    """Where a :class:`ServerAuth` is."""

    #: Waiting for SERVICE_REQUEST("ssh-userauth").
    SERVICE = enum.auto()
    #: Waiting for a USERAUTH_REQUEST (queued ones are processed first).
    WAITING = enum.auto()
    #: ``PublicKeyQuery`` handed out: waiting for ``accept_query()`` or ``reject()``.
    QUERY = enum.auto()
    #: ``PublicKeySigned`` handed out: waiting for ``accept()`` or ``reject()``.
    SIGNED = enum.auto()
    #: USERAUTH_SUCCESS sent; later userauth messages are ignored.
    AUTHENTICATED = enum.auto()
    #: Terminal: the deadline passed before authentication succeeded.
    TIMED_OUT = enum.auto()
    #: Terminal: a protocol error.
    ERROR = enum.auto()


class _ServerInput(enum.Enum):
    GOT_SERVICE_REQUEST = enum.auto()
    QUEUED_REQUEST = enum.auto()
    GOT_NONE = enum.auto()
    GOT_QUERY = enum.auto()
    GOT_SIGNED = enum.auto()
    REFUSED = enum.auto()
    ACCEPT_QUERY = enum.auto()
    ACCEPT = enum.auto()
    REJECT = enum.auto()
    USERAUTH_AFTER_SUCCESS = enum.auto()
    TIMEOUT = enum.auto()


_S = ServerAuthState
_SI = _ServerInput
_SERVER_TRANSITIONS: dict[tuple[ServerAuthState, _ServerInput], ServerAuthState] = {
    (_S.SERVICE, _SI.GOT_SERVICE_REQUEST): _S.WAITING,
    # paramiko asks for the service again before every attempt; sshd answers each.
    (_S.WAITING, _SI.GOT_SERVICE_REQUEST): _S.WAITING,
    # A request is queued in any pre-success state after the service started,
    # and processed only in WAITING.
    (_S.WAITING, _SI.QUEUED_REQUEST): _S.WAITING,
    (_S.QUERY, _SI.QUEUED_REQUEST): _S.QUERY,
    (_S.SIGNED, _SI.QUEUED_REQUEST): _S.SIGNED,
    (_S.WAITING, _SI.GOT_NONE): _S.WAITING,
    (_S.WAITING, _SI.GOT_QUERY): _S.QUERY,
    (_S.WAITING, _SI.GOT_SIGNED): _S.SIGNED,
    (_S.WAITING, _SI.REFUSED): _S.WAITING,
    (_S.QUERY, _SI.ACCEPT_QUERY): _S.WAITING,
    (_S.QUERY, _SI.REJECT): _S.WAITING,
    (_S.SIGNED, _SI.ACCEPT): _S.AUTHENTICATED,
    (_S.SIGNED, _SI.REJECT): _S.WAITING,
    (_S.AUTHENTICATED, _SI.USERAUTH_AFTER_SUCCESS): _S.AUTHENTICATED,
    (_S.SERVICE, _SI.TIMEOUT): _S.TIMED_OUT,
    (_S.WAITING, _SI.TIMEOUT): _S.TIMED_OUT,
    (_S.QUERY, _SI.TIMEOUT): _S.TIMED_OUT,
    (_S.SIGNED, _SI.TIMEOUT): _S.TIMED_OUT,
}


@dataclass(frozen=True)
class _Request:
    """A parsed USERAUTH_REQUEST for ssh-connection, waiting to be processed."""

    username_raw: bytes
    username: str
    method: str
    signed: bool = False
    algorithm: str = ""
    key_blob: bytes = b""
    signature: bytes = b""


class ServerAuth:
    """The server side of RFC 4252: ``publickey`` with Ed25519 keys and certificates.

    ``session_id`` is the exchange hash of the first key exchange.
    ``max_attempts`` (default 10) failed attempts are allowed; the next request
    raises :class:`DisconnectError` with NO_MORE_AUTH_METHODS_AVAILABLE.
    ``auth_timeout`` (default 30 s) after ``now`` the deadline passes.
    ``methods`` is the list sent in every FAILURE; only ``publickey`` is served.
    """

    def __init__(
        self,
        *,
        session_id: bytes,
        max_attempts: int = 10,
        auth_timeout: float = 30.0,
        now: float,
        methods: Sequence[str] = ("publickey",),
    ) -> None:
        if not session_id:
            raise LocalProtocolError("session_id is empty")
        if max_attempts < 1:
            raise LocalProtocolError(f"max_attempts must be at least 1, got {max_attempts}")
        if not auth_timeout > 0:
            raise LocalProtocolError(f"auth_timeout must be positive, got {auth_timeout}")
        try:
            self._failure = message(Msg.USERAUTH_FAILURE, name_list(methods), boolean(False))
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None
        self._session_id = bytes(session_id)
        self._max_attempts = max_attempts
        self._deadline = now + auth_timeout
        self._state = ServerAuthState.SERVICE
        self._failures = 0
        self._queue: deque[_Request] = deque()
        self._events: deque[ServerAuthEvent] = deque()
        self._out: list[bytes] = []
        self._user: bytes | None = None  # the first request's user name; it may not change
        self._pending: _Request | None = None  # the request a decision is awaited for

    @property
    def state(self) -> ServerAuthState:
        return self._state

    @property
    def authenticated(self) -> bool:
        return self._state is ServerAuthState.AUTHENTICATED

    @property
    def failures(self) -> int:
        """Failed attempts so far."""
        return self._failures

    def payloads_to_send(self) -> list[bytes]:
        """Return and clear the payloads queued for the client."""
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """The authentication deadline, or None once authenticated (or terminal)."""
        if self._state in (_S.SERVICE, _S.WAITING, _S.QUERY, _S.SIGNED):
            return self._deadline
        return None

    def handle_timer(self, now: float) -> None:
        """Call when the timer fires; past the deadline this ends authentication."""
        if self.get_timer() is None or now < self._deadline:
            return
        self._move(_SI.TIMEOUT)
        self._queue.clear()
        self._events.append(AuthTimeout())

    def receive_payload(self, payload: bytes | bytearray | memoryview) -> None:
        """Take one payload from the transport; raises RemoteProtocolError if it is illegal."""
        if self._state is _S.ERROR:
            raise RemoteProtocolError("userauth is in the ERROR state")
        if self._state is _S.TIMED_OUT:
            raise DisconnectError("authentication deadline passed")
        try:
            self._receive(bytes(payload))
            self._pump()
        except RemoteProtocolError:
            self._state = _S.ERROR
            self._queue.clear()
            raise

    def next_event(self) -> ServerAuthEvent | NeedData:
        """The next event, or ``NEED_DATA``."""
        if self._events:
            return self._events.popleft()
        if self._state is _S.ERROR:
            raise RemoteProtocolError("userauth is in the ERROR state")
        try:
            self._pump()
        except RemoteProtocolError:
            self._state = _S.ERROR
            self._queue.clear()
            raise
        return self._events.popleft() if self._events else NEED_DATA

    # -- the caller's decisions ---------------------------------------------

    def accept_query(self) -> None:
        """Answer the ``PublicKeyQuery``: the key would do (USERAUTH_PK_OK)."""
        self._move(_SI.ACCEPT_QUERY)
        request = self._take_pending()
        self._out.append(
            message(Msg.USERAUTH_PK_OK, string(request.algorithm), string(request.key_blob))
        )

    def accept(self) -> None:
        """Answer the ``PublicKeySigned``: USERAUTH_SUCCESS; ``Authenticated`` follows."""
        self._move(_SI.ACCEPT)
        request = self._take_pending()
        self._queue.clear()  # RFC 4252 5.1: requests after success are ignored
        self._out.append(message(Msg.USERAUTH_SUCCESS))
        self._events.append(Authenticated(username=request.username))

    def reject(self) -> None:
        """Refuse the pending query or signed request: FAILURE, a failed attempt."""
        self._move(_SI.REJECT)
        self._take_pending()
        self._failures += 1
        self._out.append(self._failure)

    def send_banner(self, text: str) -> None:
        """Queue a USERAUTH_BANNER (legal after the service started, before success)."""
        if self._state not in (_S.WAITING, _S.QUERY, _S.SIGNED):
            raise LocalProtocolError(f"a banner cannot be sent in {self._state.name}")
        self._out.append(message(Msg.USERAUTH_BANNER, string(text), string("")))

    # -- internals -----------------------------------------------------------

    def _move(self, event: _ServerInput) -> None:
        new = _SERVER_TRANSITIONS.get((self._state, event))
        if new is None:
            old = self._state
            if old is not _S.TIMED_OUT:  # terminal states stay as they are
                self._state = _S.ERROR
            local = event in (_SI.ACCEPT_QUERY, _SI.ACCEPT, _SI.REJECT, _SI.TIMEOUT)
            error = LocalProtocolError if local else RemoteProtocolError
            raise error(f"userauth server: {event.name} is illegal in {old.name}")
        self._state = new

    def _take_pending(self) -> _Request:
        request, self._pending = self._pending, None
        assert request is not None  # QUERY and SIGNED always have one
        return request

    def _receive(self, payload: bytes) -> None:
        if not payload:
            raise RemoteProtocolError("empty payload")
        number = payload[0]
        if self._state is _S.AUTHENTICATED:
            if number in USERAUTH_RANGE:
                self._move(_SI.USERAUTH_AFTER_SUCCESS)
                return
            raise RemoteProtocolError(
                f"message {number} reached userauth after authentication (composer routing)"
            )
        if number == Msg.SERVICE_REQUEST:
            r = Reader(payload, 1)
            service = r.string(_MAX_NAME)
            r.end()
            if service != USERAUTH_SERVICE.encode():
                raise DisconnectError(
                    f"service {service!r} is not available", DisconnectReason.SERVICE_NOT_AVAILABLE
                )
            self._move(_SI.GOT_SERVICE_REQUEST)
            self._out.append(message(Msg.SERVICE_ACCEPT, string(USERAUTH_SERVICE)))
        elif number == Msg.USERAUTH_REQUEST:
            self._move(_SI.QUEUED_REQUEST)
            request = self._parse_request(payload)
            if len(self._queue) >= MAX_QUEUED_REQUESTS:
                raise RemoteProtocolError(
                    f"more than {MAX_QUEUED_REQUESTS} authentication requests pipelined"
                )
            self._queue.append(request)
        else:
            name = Msg(number).name if number in Msg._value2member_map_ else str(number)
            raise RemoteProtocolError(f"message {name} is not allowed before authentication")

    def _parse_request(self, payload: bytes) -> _Request:
        r = Reader(payload, 1)
        user_raw = r.string(1 << 16)
        service = r.string(_MAX_NAME)
        method = r.text(_MAX_NAME)
        if service != CONNECTION_SERVICE.encode():
            raise DisconnectError(
                f"userauth for service {service!r} is not available",
                DisconnectReason.SERVICE_NOT_AVAILABLE,
            )
        if len(user_raw) > MAX_USERNAME:
            raise DisconnectError(
                f"user name of {len(user_raw)} bytes is too long",
                DisconnectReason.ILLEGAL_USER_NAME,
            )
        try:
            username = user_raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DisconnectError(
                "user name is not valid UTF-8", DisconnectReason.ILLEGAL_USER_NAME
            ) from None
        if self._user is None:
            self._user = user_raw
        elif user_raw != self._user:
            # As sshd: one login, one user.  Changing it mid-way smells of probing.
            raise RemoteProtocolError("the user name changed between authentication requests")
        if method == "none":
            r.end()
            return _Request(user_raw, username, method)
        if method == "publickey":
            signed = r.boolean()
            algorithm = r.text(_MAX_NAME)
            key_blob = r.string()
            signature = r.string(_MAX_SIGNATURE) if signed else b""
            r.end()
            return _Request(user_raw, username, method, signed, algorithm, key_blob, signature)
        r.rest()  # other methods' fields are not ours to parse
        return _Request(user_raw, username, method)

    def _pump(self) -> None:
        while self._state is _S.WAITING and self._queue:
            if self._failures >= self._max_attempts:
                raise DisconnectError(
                    "too many authentication failures",
                    DisconnectReason.NO_MORE_AUTH_METHODS_AVAILABLE,
                )
            self._process(self._queue.popleft())

    def _process(self, request: _Request) -> None:
        if request.method == "none":
            self._move(_SI.GOT_NONE)
            self._out.append(self._failure)
            self._events.append(NoneRequest(username=request.username))
            return
        if request.method != "publickey":
            self._move(_SI.REFUSED)
            self._failures += 1
            self._out.append(self._failure)
            self._events.append(MethodRefused(username=request.username, method=request.method))
            return
        raw_key, refusal = _signing_key(request.algorithm, request.key_blob)
        if raw_key is None:
            self._refuse(request, refusal)
            return
        if not request.signed:
            self._move(_SI.GOT_QUERY)
            self._pending = request
            self._events.append(
                PublicKeyQuery(
                    username=request.username,
                    algorithm=request.algorithm,
                    key_blob=request.key_blob,
                )
            )
            return
        data = publickey_signed_data(
            self._session_id, request.username_raw, request.algorithm, request.key_blob
        )
        if not _verify(raw_key, request.signature, data):
            self._refuse(request, "bad-signature")
            return
        self._move(_SI.GOT_SIGNED)
        self._pending = request
        self._events.append(
            PublicKeySigned(
                username=request.username, algorithm=request.algorithm, key_blob=request.key_blob
            )
        )

    def _refuse(self, request: _Request, reason: str) -> None:
        self._move(_SI.REFUSED)
        self._failures += 1
        self._out.append(self._failure)
        self._events.append(
            AuthFailed(
                username=request.username,
                method="publickey",
                reason=reason,
                key_blob=request.key_blob,
            )
        )


def _signing_key(algorithm: str, key_blob: bytes) -> tuple[bytes | None, str]:
    """The raw Ed25519 key a signature must verify with, or None and a refusal reason."""
    if algorithm not in PUBLICKEY_ALGORITHMS:
        return None, "unsupported-algorithm"
    try:
        blob_type = Reader(key_blob).string(_MAX_NAME)
    except RemoteProtocolError:
        return None, "malformed-key"
    if blob_type != algorithm.encode():
        return None, "key-type-mismatch"
    try:
        if algorithm == ED25519:
            return ed25519_key_from_blob(key_blob), ""
        cert = parse_ed25519_certificate(key_blob)
    except RemoteProtocolError:
        return None, "malformed-key"
    return cert.public_key, ""


def _verify(raw_key: bytes, signature_blob: bytes, data: bytes) -> bool:
    try:
        r = Reader(signature_blob)
        algorithm = r.string(_MAX_NAME)
        signature = r.string(64)
        r.end()
    except RemoteProtocolError:
        return False
    if algorithm != ED25519.encode() or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(signature, data)
    except InvalidSignature:
        return False
    return True


# --- client -------------------------------------------------------------------


class ClientAuthState(enum.Enum):
    """Where a :class:`ClientAuth` is."""

    #: ``start()`` not called yet.
    IDLE = enum.auto()
    #: SERVICE_REQUEST sent; waiting for SERVICE_ACCEPT.
    SERVICE = enum.auto()
    #: Our signed publickey request sent; waiting for SUCCESS or FAILURE.
    USERAUTH = enum.auto()
    #: The server accepted us; the connection layer takes over.
    SUCCEEDED = enum.auto()
    #: Terminal: the server refused our key (``AuthRejected``).
    FAILED = enum.auto()
    #: Terminal: a protocol error.
    ERROR = enum.auto()


class _ClientInput(enum.Enum):
    START = enum.auto()
    GOT_SERVICE_ACCEPT = enum.auto()
    GOT_BANNER = enum.auto()
    GOT_SUCCESS = enum.auto()
    GOT_FAILURE = enum.auto()


_C = ClientAuthState
_CI = _ClientInput
_CLIENT_TRANSITIONS: dict[tuple[ClientAuthState, _ClientInput], ClientAuthState] = {
    (_C.IDLE, _CI.START): _C.SERVICE,
    (_C.SERVICE, _CI.GOT_SERVICE_ACCEPT): _C.USERAUTH,
    (_C.USERAUTH, _CI.GOT_BANNER): _C.USERAUTH,
    (_C.USERAUTH, _CI.GOT_SUCCESS): _C.SUCCEEDED,
    (_C.USERAUTH, _CI.GOT_FAILURE): _C.FAILED,
}

_CLIENT_INPUTS = {
    Msg.SERVICE_ACCEPT: _CI.GOT_SERVICE_ACCEPT,
    Msg.USERAUTH_BANNER: _CI.GOT_BANNER,
    Msg.USERAUTH_SUCCESS: _CI.GOT_SUCCESS,
    Msg.USERAUTH_FAILURE: _CI.GOT_FAILURE,
}


class ClientAuth:
    """The client side of RFC 4252: one Ed25519 key, optionally with its certificate.

    ``start()`` queues SERVICE_REQUEST; on SERVICE_ACCEPT the signed publickey
    request goes out at once (no query round trip: we have one key, and the
    server's answer is the same).  ``max_banner`` (default 8192) caps the
    characters of a banner kept; a longer one is cut and marked ``truncated``.
    """

    def __init__(
        self,
        *,
        session_id: bytes,
        username: str,
        key: Ed25519PrivateKey,
        certificate_blob: bytes | None = None,
        max_banner: int = 8192,
    ) -> None:
        if not session_id:
            raise LocalProtocolError("session_id is empty")
        user_raw = username.encode("utf-8")
        if not 0 < len(user_raw) <= MAX_USERNAME:
            raise LocalProtocolError(f"user name must be 1..{MAX_USERNAME} bytes")
        if max_banner < 0:
            raise LocalProtocolError(f"max_banner must not be negative, got {max_banner}")
        raw_public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        if certificate_blob is None:
            self._algorithm = ED25519
            self._key_blob = string(ED25519) + string(raw_public)
        else:
            try:
                cert = parse_ed25519_certificate(bytes(certificate_blob))
            except RemoteProtocolError as exc:
                raise LocalProtocolError(f"unusable certificate: {exc.msg}") from None
            if cert.public_key != raw_public:
                raise LocalProtocolError("the certificate is for another key")
            if cert.cert_type is not CertType.USER:
                raise LocalProtocolError("the certificate is not a user certificate")
            self._algorithm = ED25519_CERT
            self._key_blob = bytes(certificate_blob)
        self._session_id = bytes(session_id)
        self._username = user_raw
        self._key = key
        self._max_banner = max_banner
        self._state = ClientAuthState.IDLE
        self._events: deque[ClientAuthEvent] = deque()
        self._out: list[bytes] = []

    @property
    def state(self) -> ClientAuthState:
        return self._state

    @property
    def algorithm(self) -> str:
        """The publickey algorithm we authenticate with."""
        return self._algorithm

    def start(self) -> None:
        """Queue SERVICE_REQUEST("ssh-userauth"); call once the transport is ready."""
        self._move(_CI.START)
        self._out.append(message(Msg.SERVICE_REQUEST, string(USERAUTH_SERVICE)))

    def payloads_to_send(self) -> list[bytes]:
        """Return and clear the payloads queued for the server."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> ClientAuthEvent | NeedData:
        """The next event, or ``NEED_DATA``."""
        if self._events:
            return self._events.popleft()
        if self._state is _C.ERROR:
            raise RemoteProtocolError("userauth is in the ERROR state")
        return NEED_DATA

    def receive_payload(self, payload: bytes | bytearray | memoryview) -> None:
        """Take one payload from the transport; raises RemoteProtocolError if it is illegal."""
        if self._state is _C.ERROR:
            raise RemoteProtocolError("userauth is in the ERROR state")
        try:
            self._receive(bytes(payload))
        except RemoteProtocolError:
            self._state = _C.ERROR
            raise

    # -- internals -----------------------------------------------------------

    def _move(self, event: _ClientInput) -> None:
        new = _CLIENT_TRANSITIONS.get((self._state, event))
        if new is None:
            old, self._state = self._state, _C.ERROR
            error = LocalProtocolError if event is _CI.START else RemoteProtocolError
            raise error(f"userauth client: {event.name} is illegal in {old.name}")
        self._state = new

    def _receive(self, payload: bytes) -> None:
        if not payload:
            raise RemoteProtocolError("empty payload")
        number = payload[0]
        event = _CLIENT_INPUTS.get(Msg(number)) if number in Msg._value2member_map_ else None
        if event is None:
            raise RemoteProtocolError(
                f"message {number} is not allowed in userauth state {self._state.name}"
            )
        r = Reader(payload, 1)
        if event is _CI.GOT_SERVICE_ACCEPT:
            service = r.string(_MAX_NAME)
            r.end()
            if service != USERAUTH_SERVICE.encode():
                raise RemoteProtocolError(f"server accepted service {service!r}, not ours")
            self._move(event)
            self._out.append(self._signed_request())
        elif event is _CI.GOT_BANNER:
            raw = r.string()
            if r.remaining:
                r.string(_MAX_NAME)  # language tag; some servers leave it out
            r.end()
            self._move(event)
            # A banner is decoration: a sloppy encoding is no reason to hang up.
            text = raw.decode("utf-8", "replace")
            cut = len(text) > self._max_banner
            self._events.append(Banner(text=text[: self._max_banner], truncated=cut))
        elif event is _CI.GOT_SUCCESS:
            r.end()
            self._move(event)
            self._events.append(AuthSucceeded())
        else:
            methods = r.name_list()
            partial = r.boolean()
            r.end()
            self._move(event)
            self._events.append(
                AuthRejected(methods_that_can_continue=tuple(methods), partial=partial)
            )

    def _signed_request(self) -> bytes:
        data = publickey_signed_data(
            self._session_id, self._username, self._algorithm, self._key_blob
        )
        return message(
            Msg.USERAUTH_REQUEST,
            string(self._username),
            string(CONNECTION_SERVICE),
            string("publickey"),
            boolean(True),
            string(self._algorithm),
            string(self._key_blob),
            string(_signature_blob(self._key.sign(data))),
        )
