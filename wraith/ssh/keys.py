"""Ed25519 keys and OpenSSH certificates: loading, fingerprints, generation.

Every key input is a *key source*: a path, or the key itself in OpenSSH format (an
``openssh-key-v1`` private key, an ``ssh-ed25519 AAAA...`` public key line, or an
``ssh-ed25519-cert-v01@openssh.com`` certificate line), as ``bytes`` or ``str`` (an
environment variable may hold either).  :func:`read_source` tells them apart by looking
at the text, never at the file system, so a key held in memory is never taken for a
path.  Parsing is ``cryptography``'s; this module adds the checks that turn "it did not
parse" into one clear line naming the input (:class:`KeyLoadError`).  Only Ed25519 is
accepted, and encrypted private keys are refused rather than prompted for.

Files are written atomically with exact modes (private 0600, public 0644), and an
existing key is never overwritten unless asked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import pathlib
import re
import struct
import tempfile
from collections.abc import Callable
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import SSHCertificate, SSHCertificateType

__all__ = [
    "ED25519",
    "ED25519_CERT",
    "HOST_KEY_NAME",
    "MAX_SOURCE_BYTES",
    "KeyLoadError",
    "KeySource",
    "blob_key_type",
    "certificate_blob",
    "default_state_dir",
    "fingerprint",
    "fingerprint_blob",
    "generate_keypair",
    "is_ed25519_blob",
    "load_certificate",
    "load_or_create_host_key",
    "load_private_key",
    "load_public_key",
    "private_key_openssh_bytes",
    "public_key_blob",
    "public_key_line",
    "read_source",
]

#: A path, or the key's bytes in OpenSSH format (``bytes`` or ``str``).
KeySource: TypeAlias = str | bytes | os.PathLike[str]

#: The one key type Wraith uses, and its OpenSSH certificate type.
ED25519 = "ssh-ed25519"
ED25519_CERT = "ssh-ed25519-cert-v01@openssh.com"

#: File name of the server's host key inside the state directory.
HOST_KEY_NAME = "host_ed25519_key"

#: Refuse to read more than this from a key source path (a key file is a few hundred
#: bytes; an authorized_keys or known_hosts file rarely exceeds a few hundred KiB).
MAX_SOURCE_BYTES = 16 * 1024 * 1024

_PRIVATE_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_PRIVATE_END = b"-----END OPENSSH PRIVATE KEY-----"
_PRIVATE_MAGIC = b"openssh-key-v1\x00"
# A public key or certificate line: key type, whitespace, then base64.
_KEY_LINE_RE = re.compile(r"\A\s*(?:ssh-|ecdsa-|sk-)[A-Za-z0-9@._+-]*[ \t]+[A-Za-z0-9+/=]")


class KeyLoadError(ValueError):
    """A key, certificate or key file could not be used; the message is one clear line."""


def _looks_like_key_text(text: str) -> bool:
    if "\n" in text:
        return True
    stripped = text.lstrip()
    return stripped.startswith("-----BEGIN ") or bool(_KEY_LINE_RE.match(stripped))


def read_source(
    src: KeySource,
    *,
    what: str,
    looks_like_text: Callable[[str], bool] = _looks_like_key_text,
) -> tuple[bytes, str]:
    """Return ``(data, label)`` for a key source.

    ``src`` is the data itself when ``looks_like_text`` says so (by default: it has a
    newline, a ``-----BEGIN`` armour, or starts like a public key line); otherwise it is
    a path, ``~`` expanded.  ``label`` names the input in messages: the path, or
    ``<inline>``.  Read errors become :class:`KeyLoadError`; a missing file is reported
    as :class:`FileNotFoundError` so callers with a default path can tell it apart.
    """
    if isinstance(src, bytes | str):
        text = src.decode("utf-8", "replace") if isinstance(src, bytes) else src
        if looks_like_text(text):
            data = src if isinstance(src, bytes) else src.encode("utf-8")
            return data, "<inline>"
        path = pathlib.Path(os.fsdecode(src)).expanduser()
    else:
        path = pathlib.Path(os.fspath(src)).expanduser()
    if not str(path):
        raise KeyLoadError(f"{what}: empty path")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise KeyLoadError(f"{what} {path}: is a directory, not a file") from None
    except PermissionError:
        raise KeyLoadError(f"{what} {path}: permission denied") from None
    except OSError as e:
        raise KeyLoadError(f"{what} {path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise KeyLoadError(f"{what} {path}: larger than {MAX_SOURCE_BYTES} bytes")
    return data, str(path)


def _read(src: KeySource, what: str) -> tuple[bytes, str]:
    try:
        return read_source(src, what=what)
    except FileNotFoundError as e:
        raise KeyLoadError(str(e)) from None


# --- wire format helpers ---------------------------------------------------------------


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _get_string(buf: bytes, off: int) -> tuple[bytes, int]:
    if off + 4 > len(buf):
        raise ValueError("truncated")
    (n,) = struct.unpack_from(">I", buf, off)
    off += 4
    if off + n > len(buf):
        raise ValueError("truncated")
    return buf[off : off + n], off + n


def blob_key_type(blob: bytes) -> str | None:
    """The key type named at the start of an SSH public key blob, or None if malformed."""
    try:
        name, _ = _get_string(blob, 0)
        return name.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None


def is_ed25519_blob(blob: bytes) -> bool:
    """Is ``blob`` exactly ``string "ssh-ed25519", string key(32)``?"""
    return (
        len(blob) == 4 + 11 + 4 + 32
        and blob[:15] == b"\x00\x00\x00\x0bssh-ed25519"
        and blob[15:19] == b"\x00\x00\x00\x20"
    )


def public_key_blob(key: Ed25519PublicKey) -> bytes:
    """The SSH wire blob of ``key``: ``string "ssh-ed25519", string key(32)``."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _ssh_string(ED25519.encode()) + _ssh_string(raw)


def certificate_blob(cert: SSHCertificate) -> bytes:
    """The SSH wire blob of a certificate (what a client sends in USERAUTH_REQUEST)."""
    return base64.b64decode(cert.public_bytes().split(b" ")[1])


def fingerprint_blob(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a key blob, as ``ssh-keygen -lf`` prints it."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def fingerprint(key: Ed25519PublicKey) -> str:
    """OpenSSH's SHA256 fingerprint of ``key``."""
    return fingerprint_blob(public_key_blob(key))


def public_key_line(key: Ed25519PublicKey, comment: str = "") -> str:
    """``ssh-ed25519 AAAA... comment`` (no newline), as in a ``.pub`` file."""
    b64 = base64.b64encode(public_key_blob(key)).decode("ascii")
    line = f"{ED25519} {b64}"
    comment = " ".join(comment.split())
    return f"{line} {comment}" if comment else line


def private_key_openssh_bytes(key: Ed25519PrivateKey, comment: str = "") -> bytes:
    """The unencrypted ``openssh-key-v1`` form of ``key``.

    ``cryptography``'s serializer writes an empty comment, so ``comment`` is dropped;
    the ``.pub`` file written next to it carries the comment.
    """
    del comment
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


# --- loading -----------------------------------------------------------------------------


def _private_header(data: bytes) -> tuple[str, str]:
    """Return ``(ciphername, key type)`` from an openssh-key-v1 armour (never decrypts)."""
    start = data.index(_PRIVATE_BEGIN) + len(_PRIVATE_BEGIN)
    end = data.find(_PRIVATE_END, start)
    if end < 0:
        raise ValueError("no END line")
    raw = binascii.a2b_base64(b"".join(data[start:end].split()))
    if not raw.startswith(_PRIVATE_MAGIC):
        raise ValueError("bad magic")
    off = len(_PRIVATE_MAGIC)
    cipher, off = _get_string(raw, off)
    _kdf, off = _get_string(raw, off)
    _kdfopts, off = _get_string(raw, off)
    if off + 4 > len(raw):
        raise ValueError("truncated")
    (nkeys,) = struct.unpack_from(">I", raw, off)
    off += 4
    if nkeys != 1:
        raise ValueError(f"{nkeys} keys in one file")
    pub, off = _get_string(raw, off)
    ktype, _ = _get_string(pub, 0)
    return cipher.decode("ascii", "replace"), ktype.decode("ascii", "replace")


def _public_from_private_armour(data: bytes, where: str) -> Ed25519PublicKey:
    start = data.index(_PRIVATE_BEGIN) + len(_PRIVATE_BEGIN)
    end = data.find(_PRIVATE_END, start)
    try:
        raw = binascii.a2b_base64(b"".join(data[start:end].split()))
        off = len(_PRIVATE_MAGIC)
        for _ in range(3):
            _, off = _get_string(raw, off)
        pub, _ = _get_string(raw, off + 4)
        ktype, off2 = _get_string(pub, 0)
        point, _ = _get_string(pub, off2)
        if ktype != ED25519.encode():
            raise KeyLoadError(
                f"{where}: only Ed25519 keys are supported (got {ktype.decode('ascii', 'replace')})"
            )
        return Ed25519PublicKey.from_public_bytes(point)
    except (ValueError, binascii.Error) as e:
        if isinstance(e, KeyLoadError):
            raise
        raise KeyLoadError(f"{where}: not a valid OpenSSH private key") from None


def load_private_key(src: KeySource, *, what: str = "identity") -> Ed25519PrivateKey:
    """Load an unencrypted Ed25519 ``openssh-key-v1`` private key from a path or buffer."""
    data, label = _read(src, what)
    where = f"{what} {label}"
    if _PRIVATE_BEGIN not in data:
        stripped = data.lstrip()
        if stripped.startswith(b"-----BEGIN "):
            armour = stripped.split(b"\n", 1)[0].strip().decode("ascii", "replace")
            raise KeyLoadError(
                f"{where}: not an OpenSSH private key ({armour}); only Ed25519 keys in "
                "OpenSSH format are supported (ssh-keygen -t ed25519)"
            )
        if _KEY_LINE_RE.match(stripped.decode("utf-8", "replace")):
            raise KeyLoadError(f"{where}: is a public key, not a private key")
        raise KeyLoadError(f"{where}: not an OpenSSH private key")
    try:
        cipher, ktype = _private_header(data)
    except (ValueError, binascii.Error):
        raise KeyLoadError(f"{where}: not a valid OpenSSH private key") from None
    if ktype != ED25519:
        raise KeyLoadError(f"{where}: only Ed25519 keys are supported (got {ktype})")
    if cipher != "none":
        raise KeyLoadError(f"{where}: is encrypted with a passphrase; not supported yet")
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyLoadError(f"{where}: not a valid OpenSSH private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):  # pragma: no cover - header said ssh-ed25519
        raise KeyLoadError(f"{where}: only Ed25519 keys are supported")
    return key


def _first_key_line(data: bytes, where: str) -> tuple[str, bytes]:
    """Return ``(key type, whole line)`` of the first non-comment line."""
    for raw_line in data.splitlines():
        line = raw_line.strip()
        if not line or line.startswith(b"#"):
            continue
        ktype = line.split(None, 1)[0].decode("ascii", "replace")
        return ktype, line
    raise KeyLoadError(f"{where}: no key found")


def load_public_key(src: KeySource, *, what: str = "public key") -> Ed25519PublicKey:
    """Load an ``ssh-ed25519 AAAA...`` public key from a path or buffer.

    The first non-comment line is used.  An unencrypted or encrypted OpenSSH private key
    is accepted too: its public half is stored in clear in the file's header.
    """
    data, label = _read(src, what)
    where = f"{what} {label}"
    if _PRIVATE_BEGIN in data:
        return _public_from_private_armour(data, where)
    ktype, line = _first_key_line(data, where)
    if ktype == ED25519_CERT:
        raise KeyLoadError(f"{where}: is a certificate, not a plain public key")
    if ktype != ED25519:
        raise KeyLoadError(f"{where}: only Ed25519 keys are supported (got {ktype})")
    try:
        key = serialization.load_ssh_public_identity(line)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyLoadError(f"{where}: not a valid public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):  # pragma: no cover - type checked above
        raise KeyLoadError(f"{where}: only Ed25519 keys are supported")
    return key


def load_certificate(src: KeySource, *, what: str = "certificate") -> SSHCertificate:
    """Load an Ed25519 OpenSSH *user* certificate (``id_ed25519-cert.pub``).

    The certificate's own signature is checked, so a corrupt file fails here and not
    at the server; whether the server trusts its CA is the server's business.
    """
    data, label = _read(src, what)
    where = f"{what} {label}"
    ktype, line = _first_key_line(data, where)
    if ktype != ED25519_CERT:
        if ktype == ED25519:
            raise KeyLoadError(f"{where}: is a plain public key, not a certificate")
        raise KeyLoadError(f"{where}: only {ED25519_CERT} certificates are supported (got {ktype})")
    try:
        cert = serialization.load_ssh_public_identity(line)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyLoadError(f"{where}: not a valid certificate ({e})") from None
    if not isinstance(cert, SSHCertificate):  # pragma: no cover - type checked above
        raise KeyLoadError(f"{where}: not a certificate")
    if cert.type is not SSHCertificateType.USER:
        raise KeyLoadError(f"{where}: is a host certificate, not a user certificate")
    try:
        cert.verify_cert_signature()
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        raise KeyLoadError(f"{where}: the CA signature does not verify") from None
    return cert


# --- writing -----------------------------------------------------------------------------


def _write_file(path: pathlib.Path, data: bytes, mode: int, *, exclusive: bool) -> None:
    """Write ``data`` to ``path`` atomically with exactly ``mode`` (umask ignored).

    With ``exclusive`` the final step is a hard link, which fails if ``path`` appeared
    meanwhile, so two processes racing to create a key never overwrite each other.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def generate_keypair(
    path: str | os.PathLike[str], *, comment: str = "", overwrite: bool = False
) -> str:
    """Write a new Ed25519 key to ``path`` (0600) and ``path.pub`` (0644).

    Refuses with :class:`FileExistsError` if either file exists, unless ``overwrite``.
    Returns the new key's fingerprint.
    """
    priv_path = pathlib.Path(os.fspath(path)).expanduser()
    pub_path = priv_path.with_name(priv_path.name + ".pub")
    if not overwrite:
        for p in (priv_path, pub_path):
            if os.path.lexists(p):
                raise FileExistsError(
                    f"{p} already exists; refusing to overwrite a key (remove it first)"
                )
    return fingerprint(_create_keypair(priv_path, comment, exclusive=not overwrite).public_key())


def _create_keypair(priv_path: pathlib.Path, comment: str, *, exclusive: bool) -> Ed25519PrivateKey:
    """Write a new key to ``priv_path`` (exclusively if asked) and replace its ``.pub``."""
    pub_path = priv_path.with_name(priv_path.name + ".pub")
    priv_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    try:
        _write_file(priv_path, private_key_openssh_bytes(key, comment), 0o600, exclusive=exclusive)
    except FileExistsError:
        raise FileExistsError(
            f"{priv_path} already exists; refusing to overwrite a key (remove it first)"
        ) from None
    line = public_key_line(key.public_key(), comment) + "\n"
    _write_file(pub_path, line.encode(), 0o644, exclusive=False)
    return key


def default_state_dir() -> pathlib.Path:
    """``$WRAITH_STATE_DIR``, else ``$XDG_STATE_HOME/wraith``, else ``~/.local/state/wraith``.

    A relative ``$XDG_STATE_HOME`` is ignored, as the XDG spec requires.
    """
    explicit = os.environ.get("WRAITH_STATE_DIR")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return pathlib.Path(xdg) / "wraith"
    return pathlib.Path.home() / ".local" / "state" / "wraith"


def load_or_create_host_key(state_dir: str | os.PathLike[str]) -> tuple[Ed25519PrivateKey, bool]:
    """Load ``state_dir/host_ed25519_key``, creating it (and the 0700 dir) when missing.

    Returns ``(key, created)``.  If another process creates the key at the same moment,
    its key is loaded and ``created`` is False.
    """
    directory = pathlib.Path(os.fspath(state_dir)).expanduser()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / HOST_KEY_NAME
    if not os.path.lexists(path):
        try:
            return _create_keypair(path, "wraith host key", exclusive=True), True
        except FileExistsError:
            pass
    return load_private_key(path, what="host key"), False
