"""``ssh-ed25519`` public key blobs and signatures (RFC 8709), for host keys and user keys.

A public key blob is ``string "ssh-ed25519" || string key`` (32 bytes); a
signature blob is ``string "ssh-ed25519" || string signature`` (64 bytes).
Parsing a peer's blob raises :class:`TransportError` (a RemoteProtocolError)
with ``KEY_EXCHANGE_FAILED``; a signature that does not verify is reported by
:func:`verify` returning ``False``, so each caller picks its own reaction.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from wraith.proto.errors import RemoteProtocolError
from wraith.proto.ssh.constants import DisconnectReason
from wraith.proto.ssh.transport_events import TransportError
from wraith.proto.ssh.wire import Reader, string

__all__ = ["ED25519", "public_blob", "public_key_from_blob", "sign", "verify"]

ED25519 = "ssh-ed25519"
_NAME = ED25519.encode()


def public_blob(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The SSH wire blob of ``key``'s public half."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return string(_NAME) + string(pub.public_bytes_raw())


def _split(blob: bytes, what: str, size: int) -> bytes:
    try:
        r = Reader(blob)
        name = r.string(64)
        raw = r.string(size)
        r.end()
    except RemoteProtocolError as exc:
        raise TransportError(
            f"malformed {what}: {exc.msg}", DisconnectReason.KEY_EXCHANGE_FAILED
        ) from None
    if name != _NAME:
        raise TransportError(
            f"{what} is {name!r}, not ssh-ed25519", DisconnectReason.KEY_EXCHANGE_FAILED
        )
    if len(raw) != size:
        raise TransportError(
            f"{what} has {len(raw)} bytes, not {size}", DisconnectReason.KEY_EXCHANGE_FAILED
        )
    return raw


def public_key_from_blob(blob: bytes) -> Ed25519PublicKey:
    """Parse a peer's ``ssh-ed25519`` public key blob."""
    raw = _split(blob, "ed25519 public key", 32)
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise TransportError(
            "invalid ed25519 public key", DisconnectReason.KEY_EXCHANGE_FAILED
        ) from None


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The SSH signature blob of ``data`` (Ed25519 is deterministic: no rng needed)."""
    return string(_NAME) + string(key.sign(data))


def verify(key_blob: bytes, signature_blob: bytes, data: bytes) -> bool:
    """Whether ``signature_blob`` is a valid ssh-ed25519 signature of ``data`` by ``key_blob``.

    Malformed blobs raise :class:`TransportError`; a well-formed signature
    that does not match gives ``False``.
    """
    key = public_key_from_blob(key_blob)
    raw = _split(signature_blob, "ed25519 signature", 64)
    try:
        key.verify(raw, data)
    except InvalidSignature:
        return False
    return True
