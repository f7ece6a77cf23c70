"""Key exchange pieces (RFC 4253 sections 7-8, RFC 8731, the sshm ML-KEM hybrid draft), pure.

The transport drives one exchange at a time with these building blocks:

1. :class:`KexInit` builds and parses the KEXINIT payload.  The payloads
   enter the exchange hash byte for byte as sent and received, so the
   transport keeps the raw bytes next to the parsed form.
2. :func:`negotiate` picks, for each list, the client's first choice that the
   server also offers (RFC 4253 7.1).  The pseudo-algorithms ``ext-info-c``,
   ``ext-info-s`` and the strict-kex markers are not algorithms and never
   match.  :func:`guess_was_wrong` applies the ``first_kex_packet_follows``
   rule.
3. A :class:`KexMethod` turns the client's public value Q_C and the server's
   Q_S into the shared secret K, already encoded the way it enters the hash
   and the key derivation: an mpint for curve25519-sha256 (RFC 8731), a
   string for mlkem768x25519-sha256, where K = SHA-256(ML-KEM secret ||
   X25519 secret).  Q_C is the client's ML-KEM-768 encapsulation key then its
   X25519 key; Q_S is the ciphertext then the server's X25519 key.  Both
   methods send their values in message numbers 30 and 31.
4. :func:`exchange_hash` computes H, whose first value is the session id, and
   :func:`derive_key` expands ``HASH(K || H || letter || session_id)`` to any
   length (RFC 4253 7.2).

Private values come from the injected ``rng``; the one exception is the
server's ML-KEM encapsulation, whose randomness ``cryptography`` draws
itself.  Every failure caused by the peer raises :class:`TransportError` with
``KEY_EXCHANGE_FAILED``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from wraith.proto.errors import LocalProtocolError, RemoteProtocolError
from wraith.proto.ssh.constants import DisconnectReason, Msg
from wraith.proto.ssh.transport_events import TransportError
from wraith.proto.ssh.wire import (
    Reader,
    boolean,
    byte,
    first_match,
    message,
    mpint_from_unsigned,
    name_list,
    string,
    uint32,
)

try:
    from cryptography.hazmat.primitives.asymmetric import mlkem

    mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes(64))
    #: Whether this ``cryptography`` can do ML-KEM-768 (and so mlkem768x25519-sha256).
    MLKEM_AVAILABLE = True
except Exception:  # ImportError, or UnsupportedAlgorithm from a backend without it
    MLKEM_AVAILABLE = False

__all__ = [
    "EXT_INFO_C",
    "EXT_INFO_S",
    "KEX_METHODS",
    "MARKERS",
    "MLKEM_AVAILABLE",
    "STRICT_C",
    "STRICT_S",
    "Algorithms",
    "Curve25519",
    "KexInit",
    "KexMethod",
    "MlKem768X25519",
    "derive_key",
    "ecdh_payload",
    "exchange_hash",
    "ext_info_payload",
    "guess_was_wrong",
    "negotiate",
    "parse_ext_info",
    "parse_strings",
]

EXT_INFO_C = "ext-info-c"
EXT_INFO_S = "ext-info-s"
STRICT_C = "kex-strict-c-v00@openssh.com"
STRICT_S = "kex-strict-s-v00@openssh.com"
#: Names that ride in the kex list as signals, never negotiated as algorithms.
MARKERS = frozenset({EXT_INFO_C, EXT_INFO_S, STRICT_C, STRICT_S})
#: Most extensions accepted in one EXT_INFO.
MAX_EXTENSIONS = 64
_FAIL = DisconnectReason.KEY_EXCHANGE_FAILED
_X25519_LEN = 32
_MLKEM_PUB_LEN = 1184
_MLKEM_CT_LEN = 1088


@dataclass(frozen=True, kw_only=True)
class KexInit:
    """An SSH_MSG_KEXINIT (RFC 4253 7.1): a cookie, ten name-lists and the guess flag."""

    cookie: bytes
    kex_algorithms: tuple[str, ...]
    server_host_key_algorithms: tuple[str, ...]
    ciphers_c2s: tuple[str, ...]
    ciphers_s2c: tuple[str, ...]
    macs_c2s: tuple[str, ...]
    macs_s2c: tuple[str, ...]
    compression_c2s: tuple[str, ...]
    compression_s2c: tuple[str, ...]
    languages_c2s: tuple[str, ...] = ()
    languages_s2c: tuple[str, ...] = ()
    first_kex_packet_follows: bool = False
    reserved: int = 0

    def __post_init__(self) -> None:
        if len(self.cookie) != 16:
            raise LocalProtocolError("the KEXINIT cookie is 16 bytes")

    def _lists(self) -> tuple[tuple[str, ...], ...]:
        return (
            self.kex_algorithms,
            self.server_host_key_algorithms,
            self.ciphers_c2s,
            self.ciphers_s2c,
            self.macs_c2s,
            self.macs_s2c,
            self.compression_c2s,
            self.compression_s2c,
            self.languages_c2s,
            self.languages_s2c,
        )

    def to_payload(self) -> bytes:
        """The message as sent, message number included."""
        lists = [name_list(names) for names in self._lists()]
        return message(
            Msg.KEXINIT,
            self.cookie,
            *lists,
            boolean(self.first_kex_packet_follows),
            uint32(self.reserved),
        )

    @classmethod
    def parse(cls, payload: bytes) -> KexInit:
        """Parse a peer's KEXINIT payload (``RemoteProtocolError`` if malformed)."""
        if len(payload) < 17 or payload[0] != Msg.KEXINIT:
            raise TransportError("truncated KEXINIT", _FAIL)
        cookie = bytes(payload[1:17])
        r = Reader(payload, 17)
        lists = [tuple(r.name_list()) for _ in range(10)]
        follows = r.boolean()
        reserved = r.uint32()
        # RFC 4253 leaves no room for more; refusing it keeps H unambiguous.
        r.end()
        return cls(
            cookie=cookie,
            kex_algorithms=lists[0],
            server_host_key_algorithms=lists[1],
            ciphers_c2s=lists[2],
            ciphers_s2c=lists[3],
            macs_c2s=lists[4],
            macs_s2c=lists[5],
            compression_c2s=lists[6],
            compression_s2c=lists[7],
            languages_c2s=lists[8],
            languages_s2c=lists[9],
            first_kex_packet_follows=follows,
            reserved=reserved,
        )

    @property
    def real_kex_algorithms(self) -> tuple[str, ...]:
        """The kex list without the marker pseudo-algorithms."""
        return tuple(n for n in self.kex_algorithms if n not in MARKERS)


@dataclass(frozen=True, kw_only=True)
class Algorithms:
    """What one key exchange negotiated.  No MAC: every cipher here is an AEAD."""

    kex: str
    host_key: str
    cipher_c2s: str
    cipher_s2c: str
    compression_c2s: str
    compression_s2c: str


def _pick(what: str, client: Sequence[str], server: Sequence[str]) -> str:
    chosen = first_match(client, server)
    if chosen is None:
        raise TransportError(
            f"no common {what}: client offers {','.join(client)}, server {','.join(server)}",
            _FAIL,
        )
    return chosen


def negotiate(client: KexInit, server: KexInit) -> Algorithms:
    """RFC 4253 7.1: for each list, the client's first choice the server supports."""
    return Algorithms(
        kex=_pick("key exchange", client.real_kex_algorithms, server.real_kex_algorithms),
        host_key=_pick(
            "host key algorithm",
            client.server_host_key_algorithms,
            server.server_host_key_algorithms,
        ),
        cipher_c2s=_pick("client-to-server cipher", client.ciphers_c2s, server.ciphers_c2s),
        cipher_s2c=_pick("server-to-client cipher", client.ciphers_s2c, server.ciphers_s2c),
        compression_c2s=_pick(
            "client-to-server compression", client.compression_c2s, server.compression_c2s
        ),
        compression_s2c=_pick(
            "server-to-client compression", client.compression_s2c, server.compression_s2c
        ),
    )


def guess_was_wrong(client: KexInit, server: KexInit) -> bool:
    """RFC 4253 7.1: a guessed first kex packet is wrong if the preferred kex or host key differ.

    Only meaningful when the sender set ``first_kex_packet_follows``.
    """
    ck, sk = client.real_kex_algorithms, server.real_kex_algorithms
    ch, sh = client.server_host_key_algorithms, server.server_host_key_algorithms
    return ck[:1] != sk[:1] or ch[:1] != sh[:1]


class KexMethod(Protocol):
    """One ephemeral key agreement, from either side."""

    #: The negotiated name (``curve25519-sha256`` ...).
    name: str

    def client_public(self) -> bytes:
        """Client: Q_C, the value sent in message 30."""
        ...

    def client_shared(self, server_public: bytes) -> bytes:
        """Client: K, encoded for the hash, from the server's Q_S."""
        ...

    def server_respond(self, client_public: bytes) -> tuple[bytes, bytes]:
        """Server: ``(Q_S, K)`` for the client's Q_C, K encoded for the hash."""
        ...


def _x25519(private: X25519PrivateKey, peer: bytes) -> bytes:
    if len(peer) != _X25519_LEN:
        raise TransportError(f"X25519 public value has {len(peer)} bytes, not 32", _FAIL)
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer))
    except ValueError:
        # cryptography refuses a low-order point whose result is all zeros.
        raise TransportError("X25519 shared secret is all zeros", _FAIL) from None
    if not any(shared):  # RFC 8731 3: must be refused; checked again in case.
        raise TransportError("X25519 shared secret is all zeros", _FAIL)
    return shared


class Curve25519:
    """``curve25519-sha256`` and its older name ``curve25519-sha256@libssh.org`` (RFC 8731)."""

    def __init__(self, name: str, rng: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.name = name
        self._private = X25519PrivateKey.from_private_bytes(rng(32))

    def _public(self) -> bytes:
        return self._private.public_key().public_bytes_raw()

    def client_public(self) -> bytes:
        return self._public()

    def client_shared(self, server_public: bytes) -> bytes:
        return mpint_from_unsigned(_x25519(self._private, server_public))

    def server_respond(self, client_public: bytes) -> tuple[bytes, bytes]:
        return self._public(), mpint_from_unsigned(_x25519(self._private, client_public))


class MlKem768X25519:
    """``mlkem768x25519-sha256``: ML-KEM-768 and X25519, K = SHA-256(K_PQ || K_CL) as a string."""

    name = "mlkem768x25519-sha256"

    def __init__(self, rng: Callable[[int], bytes] = secrets.token_bytes) -> None:
        if not MLKEM_AVAILABLE:
            raise LocalProtocolError("this cryptography has no ML-KEM-768")
        self._rng = rng
        self._x25519 = X25519PrivateKey.from_private_bytes(rng(32))
        self._mlkem: mlkem.MLKEM768PrivateKey | None = None

    @staticmethod
    def _k(pq_secret: bytes, classic_secret: bytes) -> bytes:
        return string(hashlib.sha256(pq_secret + classic_secret).digest())

    def client_public(self) -> bytes:
        self._mlkem = mlkem.MLKEM768PrivateKey.from_seed_bytes(self._rng(64))
        return (
            self._mlkem.public_key().public_bytes_raw()
            + self._x25519.public_key().public_bytes_raw()
        )

    def client_shared(self, server_public: bytes) -> bytes:
        if self._mlkem is None:
            raise LocalProtocolError("client_public() first")
        if len(server_public) != _MLKEM_CT_LEN + _X25519_LEN:
            raise TransportError(
                f"mlkem768x25519 reply has {len(server_public)} bytes, not 1120", _FAIL
            )
        try:
            pq = self._mlkem.decapsulate(server_public[:_MLKEM_CT_LEN])
        except ValueError:
            raise TransportError("invalid ML-KEM-768 ciphertext", _FAIL) from None
        return self._k(pq, _x25519(self._x25519, server_public[_MLKEM_CT_LEN:]))

    def server_respond(self, client_public: bytes) -> tuple[bytes, bytes]:
        if len(client_public) != _MLKEM_PUB_LEN + _X25519_LEN:
            raise TransportError(
                f"mlkem768x25519 init has {len(client_public)} bytes, not 1216", _FAIL
            )
        try:
            peer = mlkem.MLKEM768PublicKey.from_public_bytes(client_public[:_MLKEM_PUB_LEN])
            pq, ciphertext = peer.encapsulate()
        except ValueError:
            raise TransportError("invalid ML-KEM-768 public key", _FAIL) from None
        classic = _x25519(self._x25519, client_public[_MLKEM_PUB_LEN:])
        return ciphertext + self._x25519.public_key().public_bytes_raw(), self._k(pq, classic)


#: Every key exchange this engine speaks, by name, as factories taking the rng.
KEX_METHODS: dict[str, Callable[[Callable[[int], bytes]], KexMethod]] = {
    "curve25519-sha256": lambda rng: Curve25519("curve25519-sha256", rng),
    "curve25519-sha256@libssh.org": lambda rng: Curve25519("curve25519-sha256@libssh.org", rng),
}
if MLKEM_AVAILABLE:
    KEX_METHODS["mlkem768x25519-sha256"] = MlKem768X25519


def exchange_hash(
    *,
    v_c: bytes,
    v_s: bytes,
    i_c: bytes,
    i_s: bytes,
    k_s: bytes,
    q_c: bytes,
    q_s: bytes,
    k: bytes,
) -> bytes:
    """H = SHA-256 over both versions, both KEXINIT payloads, K_S, Q_C, Q_S and encoded K.

    All our methods hash with SHA-256.  ``k`` is already encoded (mpint or string).
    """
    h = hashlib.sha256()
    for part in (v_c, v_s, i_c, i_s, k_s, q_c, q_s):
        h.update(string(part))
    h.update(k)
    return h.digest()


def derive_key(k: bytes, h: bytes, letter: str, session_id: bytes, length: int) -> bytes:
    """RFC 4253 7.2: HASH(K || H || letter || session_id), extended with HASH(K || H || K1 ...)."""
    out = hashlib.sha256(k + h + letter.encode("ascii") + session_id).digest()
    while len(out) < length:
        out += hashlib.sha256(k + h + out).digest()
    return out[:length]


def ext_info_payload(extensions: dict[str, bytes]) -> bytes:
    """An RFC 8308 EXT_INFO message."""
    parts = [uint32(len(extensions))]
    for name, value in extensions.items():
        parts += [string(name), string(value)]
    return message(Msg.EXT_INFO, *parts)


def parse_ext_info(payload: bytes) -> dict[str, bytes]:
    """Parse a peer's EXT_INFO; at most :data:`MAX_EXTENSIONS`, no duplicates."""
    r = Reader(payload)
    r.byte()
    count = r.uint32()
    if count > MAX_EXTENSIONS:
        raise TransportError(f"EXT_INFO with {count} extensions (limit {MAX_EXTENSIONS})")
    out: dict[str, bytes] = {}
    for _ in range(count):
        name = r.text(256)
        if name in out:
            raise TransportError(f"EXT_INFO names {name!r} twice")
        out[name] = r.string()
    r.end()
    return out


def ecdh_payload(number: int, *parts: bytes) -> bytes:
    """Message 30 or 31 built from its strings."""
    return byte(number) + b"".join(string(p) for p in parts)


def parse_strings(payload: bytes, count: int) -> list[bytes]:
    """The ``count`` strings of message 30 or 31, with nothing after them."""
    try:
        r = Reader(payload)
        r.byte()
        out = [r.string(64 * 1024) for _ in range(count)]
        r.end()
    except RemoteProtocolError as exc:
        raise TransportError(f"malformed key exchange message: {exc.msg}", _FAIL) from None
    return out
