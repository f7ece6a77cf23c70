"""OpenSSH Ed25519 user and host certificates (PROTOCOL.certkeys), parsed from the wire blob.

Theory of operation: :func:`parse_ed25519_certificate` turns the blob a client
sends as its "public key" in USERAUTH_REQUEST into an
:class:`Ed25519Certificate`, checking only the *structure*: every field present,
the key type right, a 32-byte key, the options well formed and in order, no
trailing bytes.  Userauth needs it for one thing: the key embedded in the
certificate, which is the key the user's signature must verify against.

Parsing says nothing about trust.  Whether the CA is one we were told to trust,
the validity interval, principals, critical options and extensions are the
server policy's decision (:mod:`wraith.ssh.auth`), which sees the same blob.
:meth:`Ed25519Certificate.ca_signature_valid` is here for tests and tools; a
valid CA signature is worthless unless the CA key itself is trusted.

Blob layout (all SSH wire types)::

    string  "ssh-ed25519-cert-v01@openssh.com"
    string  nonce
    string  pk                  (32 bytes)
    uint64  serial
    uint32  type                (1 user, 2 host)
    string  key id
    string  valid principals    (a sequence of strings)
    uint64  valid after
    uint64  valid before
    string  critical options    (a sequence of string name, string data)
    string  extensions          (same shape)
    string  reserved
    string  signature key       (the CA's public key blob)
    string  signature           (over every byte before this field)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import RemoteProtocolError
from .wire import Reader

__all__ = [
    "ED25519",
    "ED25519_CERT",
    "MAX_CERTIFICATE_BLOB",
    "CertType",
    "Ed25519Certificate",
    "ed25519_key_from_blob",
    "parse_ed25519_certificate",
]

ED25519 = "ssh-ed25519"
ED25519_CERT = "ssh-ed25519-cert-v01@openssh.com"
#: Largest certificate blob we parse (bytes).  ssh-keygen's are well under 1 KiB;
#: many principals or options could grow one, but not past a packet anyway.
MAX_CERTIFICATE_BLOB = 16 * 1024


class CertType(enum.IntEnum):
    """The certificate's ``type`` field."""

    #: A user certificate: presented by a client in publickey authentication.
    USER = 1
    #: A host certificate: presented by a server as its host key.
    HOST = 2


@dataclass(frozen=True, kw_only=True)
class Ed25519Certificate:
    """The fields of an ``ssh-ed25519-cert-v01@openssh.com`` blob, structurally valid."""

    nonce: bytes
    #: The embedded Ed25519 public key (32 raw bytes): what the holder signs with.
    public_key: bytes
    serial: int
    cert_type: CertType
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    #: ``(name, data)`` pairs in wire order; ``data`` is the raw option data string.
    critical_options: tuple[tuple[str, bytes], ...]
    extensions: tuple[tuple[str, bytes], ...]
    #: The CA's public key blob (any key type; only Ed25519 CAs can verify here).
    signature_key: bytes
    #: The CA's signature blob: ``string algorithm, string signature``.
    signature: bytes
    #: Every byte the CA signed: the blob up to (not including) the signature field.
    signed_data: bytes

    @property
    def key_blob(self) -> bytes:
        """The embedded key as a plain ``ssh-ed25519`` blob."""
        return _ed25519_blob(self.public_key)

    def ca_signature_valid(self) -> bool:
        """Does the CA's signature verify, for an Ed25519 CA?  Says nothing about trust."""
        try:
            ca_raw = ed25519_key_from_blob(self.signature_key)
            r = Reader(self.signature)
            algorithm = r.text(64)
            sig = r.string(64)
            r.end()
        except RemoteProtocolError:
            return False
        if algorithm != ED25519 or len(sig) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(ca_raw).verify(sig, self.signed_data)
        except InvalidSignature:
            return False
        return True


def _ed25519_blob(raw: bytes) -> bytes:
    return b"\x00\x00\x00\x0b" + ED25519.encode() + b"\x00\x00\x00\x20" + raw


def ed25519_key_from_blob(blob: bytes) -> bytes:
    """The 32 raw key bytes of a plain ``ssh-ed25519`` blob; RemoteProtocolError otherwise."""
    r = Reader(blob)
    key_type = r.string(64)
    if key_type != ED25519.encode():
        raise RemoteProtocolError(f"key blob is of type {key_type!r}, not {ED25519}")
    raw = r.string(64)
    r.end()
    if len(raw) != 32:
        raise RemoteProtocolError(f"Ed25519 key is {len(raw)} bytes, not 32")
    return raw


def _strings(data: bytes) -> list[bytes]:
    r = Reader(data)
    out = []
    while r.remaining:
        out.append(r.string(MAX_CERTIFICATE_BLOB))
    return out


def _options(data: bytes, what: str) -> tuple[tuple[str, bytes], ...]:
    """A sequence of ``string name, string data``, names unique and in lexical order."""
    r = Reader(data)
    out: list[tuple[str, bytes]] = []
    previous: bytes | None = None
    while r.remaining:
        name = r.string(MAX_CERTIFICATE_BLOB)
        value = r.string(MAX_CERTIFICATE_BLOB)
        if not name:
            raise RemoteProtocolError(f"certificate {what} has an empty name")
        if previous is not None and name <= previous:
            raise RemoteProtocolError(f"certificate {what} are not in strict lexical order")
        previous = name
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"certificate {what} name is not ASCII") from None
        out.append((text, value))
    return tuple(out)


def parse_ed25519_certificate(blob: bytes) -> Ed25519Certificate:
    """Parse a certificate blob; RemoteProtocolError if it is malformed in any way."""
    if len(blob) > MAX_CERTIFICATE_BLOB:
        raise RemoteProtocolError(
            f"certificate blob of {len(blob)} bytes exceeds {MAX_CERTIFICATE_BLOB}"
        )
    r = Reader(blob)
    key_type = r.string(64)
    if key_type != ED25519_CERT.encode():
        raise RemoteProtocolError(f"certificate is of type {key_type!r}, not {ED25519_CERT}")
    nonce = r.string(1024)
    public_key = r.string(64)
    if len(public_key) != 32:
        raise RemoteProtocolError(f"certificate key is {len(public_key)} bytes, not 32")
    serial = r.uint64()
    raw_type = r.uint32()
    if raw_type not in (CertType.USER, CertType.HOST):
        raise RemoteProtocolError(f"certificate type {raw_type} is neither user nor host")
    key_id = r.text(MAX_CERTIFICATE_BLOB)
    principal_blob = r.string(MAX_CERTIFICATE_BLOB)
    valid_after = r.uint64()
    valid_before = r.uint64()
    critical = _options(r.string(MAX_CERTIFICATE_BLOB), "critical options")
    extensions = _options(r.string(MAX_CERTIFICATE_BLOB), "extensions")
    r.string(MAX_CERTIFICATE_BLOB)  # reserved: ignored, as PROTOCOL.certkeys says
    signature_key = r.string(MAX_CERTIFICATE_BLOB)
    signed_length = len(blob) - r.remaining
    signature = r.string(MAX_CERTIFICATE_BLOB)
    r.end()
    principals = []
    for raw in _strings(principal_blob):
        try:
            principals.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise RemoteProtocolError("certificate principal is not valid UTF-8") from None
    return Ed25519Certificate(
        nonce=nonce,
        public_key=public_key,
        serial=serial,
        cert_type=CertType(raw_type),
        key_id=key_id,
        principals=tuple(principals),
        valid_after=valid_after,
        valid_before=valid_before,
        critical_options=critical,
        extensions=extensions,
        signature_key=signature_key,
        signature=signature,
        signed_data=bytes(blob[:signed_length]),
    )
