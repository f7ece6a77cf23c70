"""The server's ``publickey`` decision, engine-neutral.

:meth:`AuthPolicy.check` takes the key blob exactly as the client sent it in
USERAUTH_REQUEST, the requested user name, the client's address and the time, and
returns an :class:`AuthResult`: accepted or not, a short stable ``reason`` for the log
line fail2ban reads, and the :class:`Permissions` the matching authorized_keys entry
grants.  It has no side effects and never raises, whatever the bytes, so an engine may
call it for the signature-less query and again for the signed request.  It does not
check the user's signature over the session; the engine does.

A plain Ed25519 key is the identity: it must be listed (not as ``cert-authority``),
and any user name is accepted.  A certificate is trusted only through its CA key: a
``cert-authority`` line or a ``--cert-authority`` file.  It is then checked as sshd
checks it, with these stricter points: the ``permit-port-forwarding`` extension is
required, ``verify-required`` and unknown critical options are refused, and an empty
principal list is refused unless the CA line has ``principals=``.  Since Wraith's
authorized_keys serves every user name, a CA line's ``principals=`` also limits which
user names its certificates may log in as (sshd ties the file to one account instead).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import SSHCertificate, SSHCertificateType

from wraith.ssh.keys import (
    ED25519,
    ED25519_CERT,
    KeyLoadError,
    KeySource,
    blob_key_type,
    fingerprint,
    fingerprint_blob,
    is_ed25519_blob,
    public_key_blob,
    read_source,
)

if TYPE_CHECKING:
    from wraith.ssh.authorized_keys import AuthorizedKey, KeyOptions

# wraith.ssh.authorized_keys is imported where it is used: the client imports this
# module too (through the Sans-IO engine) and never parses an authorized_keys file.

__all__ = [
    "AuthPolicy",
    "AuthResult",
    "Permissions",
    "load_cert_authorities",
    "refused_method",
]

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Seconds between looks at the authorized_keys file's mtime, size and inode.
RELOAD_CHECK_INTERVAL = 2.0

log = logging.getLogger("wraith.ssh")

_FileStamp = tuple[int, int, int, int] | None


def _norm_host(host: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.lower()


def _port_matches(spec: str, port: int) -> bool:
    return spec == "*" or int(spec) == port


@dataclass(frozen=True, kw_only=True)
class Permissions:
    """What an accepted key may do: its entry's forwarding options."""

    #: False after ``restrict`` / ``no-port-forwarding``: no -L, -D, -W or -R at all.
    port_forwarding: bool = True
    #: ``permitopen=``: the only ``(host, port)`` a direct-tcpip open may name.
    permitopen: tuple[tuple[str, str], ...] | None = None
    #: ``permitlisten=``: the only ``(host, port)`` a tcpip-forward may bind.
    permitlisten: tuple[tuple[str | None, str], ...] | None = None

    @classmethod
    def from_options(cls, options: KeyOptions) -> Permissions:
        return cls(
            port_forwarding=options.port_forwarding,
            permitopen=options.permitopen,
            permitlisten=options.permitlisten,
        )

    def allows_open(self, host: str, port: int) -> bool:
        """May the client open a channel to ``host:port`` (compared as written, not resolved)?"""
        if not self.port_forwarding:
            return False
        if self.permitopen is None:
            return True
        want = _norm_host(host)
        return any(
            (h == "*" or _norm_host(h) == want) and _port_matches(p, port)
            for h, p in self.permitopen
        )

    def allows_listen(self, host: str, port: int) -> bool:
        """May the client ask the server to listen on ``host:port``?

        A ``permitlisten`` entry without a host allows loopback binds only
        (``localhost``, ``127.0.0.1``, ``::1``), as sshd maps it to ``localhost``.
        """
        if not self.port_forwarding:
            return False
        if self.permitlisten is None:
            return True
        want = _norm_host(host)
        for h, p in self.permitlisten:
            if not _port_matches(p, port):
                continue
            if h == "*" or (h is None and want in _LOOPBACK_NAMES):
                return True
            if h is not None and _norm_host(h) == want:
                return True
        return False


@dataclass(frozen=True, kw_only=True)
class AuthResult:
    """The outcome of one authentication attempt, ready for a one-line log."""

    accepted: bool
    #: Short, stable, lowercase, no spaces: ``ok``, ``unknown-key``, ``cert-expired`` ...
    reason: str
    #: ``SHA256:...`` of the key (a certificate's own key), or ``-`` when there is none.
    fingerprint: str
    #: For a certificate: ``cert ID <key id> serial N CA SHA256:...``; otherwise more
    #: about a refusal, or empty.  Printable, with no spaces inside any value.
    detail: str = ""
    #: The authorized_keys entry that decided it (``path:lineno``), if any.
    matched: str = ""
    #: Set when accepted.
    permissions: Permissions | None = None


def _printable(value: str | bytes, limit: int = 128) -> str:
    """Escape a peer-chosen string so it cannot forge or split a log line."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    out = []
    for c in value[:limit]:
        if c.isprintable() and not c.isspace() and c not in "\"'\\":
            out.append(c)
        else:
            out.append(f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
    return "".join(out) + ("..." if len(value) > limit else "")


def refused_method(method: str) -> AuthResult:
    """The result for any method other than publickey (password, keyboard-interactive...)."""
    return AuthResult(
        accepted=False,
        reason="method-not-allowed",
        fingerprint="-",
        detail=f"method {_printable(method, 64)}",
    )


def _any_key_blob(key: object) -> bytes:
    pub = key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert isinstance(pub, bytes)
    return base64.b64decode(pub.split(b" ")[1])


def load_cert_authorities(src: KeySource) -> list[AuthorizedKey]:
    """Load a ``--cert-authority`` file: one or more Ed25519 CA public keys.

    Lines are read as authorized_keys lines and marked ``cert-authority``; options on
    them (``principals=``, ``from=`` ...) are honoured.  A CA key of another type fails
    the load: the operator named this file, so ignoring a line would be a surprise.
    """
    from wraith.ssh.authorized_keys import looks_like_authorized_keys_text, parse_authorized_keys

    what = "cert authority"
    try:
        data, label = read_source(src, what=what, looks_like_text=looks_like_authorized_keys_text)
    except FileNotFoundError as e:
        raise KeyLoadError(str(e)) from None
    entries = parse_authorized_keys(data.decode("utf-8", "replace"), source=f"{what} {label}")
    if not entries:
        raise KeyLoadError(f"{what} {label}: no CA key found")
    out: list[AuthorizedKey] = []
    for entry in entries:
        if entry.key_type != ED25519:
            raise KeyLoadError(
                f"{entry.source}: only Ed25519 CA keys are supported (got {entry.key_type})"
            )
        out.append(
            dataclasses.replace(
                entry, options=dataclasses.replace(entry.options, cert_authority=True)
            )
        )
    return out


class AuthPolicy:
    """Which public keys and certificates the server accepts, and what they may do."""

    def __init__(
        self,
        authorized_keys: Sequence[AuthorizedKey],
        *,
        cert_authorities: Sequence[Ed25519PublicKey | AuthorizedKey] = (),
    ) -> None:
        #: One line per entry that can never match (unsupported key type ...), to log.
        self.warnings: list[str] = []
        self._keys: dict[bytes, list[AuthorizedKey]] = {}
        self._cas: dict[bytes, list[AuthorizedKey]] = {}
        # Set by watch_file(): the authorized_keys file that reload() reads again.
        self._file: tuple[KeySource | None, str] | None = None
        self._stamp: _FileStamp = None
        self._next_check = 0.0
        self._reload_lock = threading.Lock()
        cas: list[AuthorizedKey] = []
        for ca in cert_authorities:
            if isinstance(ca, Ed25519PublicKey):
                from wraith.ssh.authorized_keys import AuthorizedKey, KeyOptions

                cas.append(
                    AuthorizedKey(
                        key_type=ED25519,
                        blob=public_key_blob(ca),
                        comment="",
                        options=KeyOptions(cert_authority=True),
                        source="--cert-authority",
                    )
                )
            else:
                opts = dataclasses.replace(ca.options, cert_authority=True)
                cas.append(dataclasses.replace(ca, options=opts))
        self._extra_cas = cas
        self._keys, self._cas, self.warnings = _tables([*authorized_keys, *cas])

    @classmethod
    def from_sources(
        cls, authorized_keys: KeySource | None, cert_authority_files: Sequence[KeySource]
    ) -> AuthPolicy:
        """Load authorized_keys (``None``: ``~/.ssh/authorized_keys``, missing is empty)
        and each ``--cert-authority`` file.  Raises ValueError subclasses on bad input."""
        from wraith.ssh.authorized_keys import load_authorized_keys

        path = _authorized_keys_path(authorized_keys)
        stamp = _file_stamp(path) if path is not None else None
        keys = load_authorized_keys(authorized_keys)
        cas: list[AuthorizedKey] = []
        for src in cert_authority_files:
            cas.extend(load_cert_authorities(src))
        policy = cls(keys, cert_authorities=cas)
        if path is not None:
            policy.watch_file(authorized_keys, path, stamp)
        return policy

    def watch_file(self, src: KeySource | None, path: str, stamp: _FileStamp = None) -> None:
        """Reload authorized_keys from ``src`` (read at ``path``) on :meth:`reload`
        and when :meth:`maybe_reload` sees the file change.  ``stamp`` is the file's
        state when the current keys were read.  The ``--cert-authority`` keys stay."""
        self._file = (src, path)
        self._stamp = stamp
        self._next_check = time.monotonic() + RELOAD_CHECK_INTERVAL

    def maybe_reload(self, now: float | None = None) -> bool:
        """Reload authorized_keys if its mtime, size or inode changed since it was read.

        Looks at most every :data:`RELOAD_CHECK_INTERVAL` seconds (``now`` is
        ``time.monotonic()``), so it is cheap to call before every auth decision.
        True if new keys were loaded.  Never raises.
        """
        if self._file is None:
            return False
        now = time.monotonic() if now is None else now
        if now < self._next_check:
            return False
        with self._reload_lock:
            if now < self._next_check:
                return False
            self._next_check = now + RELOAD_CHECK_INTERVAL
            stamp = _file_stamp(self._file[1])
            if stamp == self._stamp:
                return False
            return self._reload(stamp)

    def reload(self) -> bool:
        """Read authorized_keys again now (SIGHUP).  True if new keys were loaded.

        A file that fails to load keeps the old keys and logs one warning.
        Sessions already authenticated are not affected.  Never raises.
        """
        if self._file is None:
            log.info("authorized_keys is not a file: nothing to reload")
            return False
        with self._reload_lock:
            self._next_check = time.monotonic() + RELOAD_CHECK_INTERVAL
            return self._reload(_file_stamp(self._file[1]))

    def _reload(self, stamp: _FileStamp) -> bool:
        assert self._file is not None
        # Remember the stamp (taken before the read) even on failure: warn once per change.
        self._stamp = stamp
        from wraith.ssh.authorized_keys import load_authorized_keys

        try:
            entries = load_authorized_keys(self._file[0])
            keys, cas, warnings = _tables([*entries, *self._extra_cas])
        except Exception as e:  # any failure keeps the old keys
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.warning("authorized_keys reload failed, keeping the old keys: %s", text)
            return False
        self._keys, self._cas, self.warnings = keys, cas, warnings
        for warning in warnings:
            log.warning("%s", warning)
        usable = sum(1 for entry in entries if entry.key_type == ED25519)
        log.info("authorized_keys reloaded: %d keys", usable)
        return True

    refused_method = staticmethod(refused_method)

    @property
    def key_count(self) -> int:
        """Usable plain-key entries plus CA entries (0: nobody can log in)."""
        return sum(map(len, self._keys.values())) + sum(map(len, self._cas.values()))

    def check(self, *, username: str, key_blob: bytes, source_ip: str, now: float) -> AuthResult:
        """Decide one publickey attempt.  Never raises."""
        blob = bytes(key_blob)
        ktype = blob_key_type(blob)
        if ktype == ED25519_CERT:
            return self._check_cert(blob, username, source_ip, now)
        fp = fingerprint_blob(blob)
        if ktype is None:
            return AuthResult(accepted=False, reason="malformed-key", fingerprint=fp)
        if ktype != ED25519:
            return AuthResult(
                accepted=False,
                reason="unsupported-key-type",
                fingerprint=fp,
                detail=f"type {_printable(ktype, 64)}",
            )
        if not is_ed25519_blob(blob):
            return AuthResult(accepted=False, reason="malformed-key", fingerprint=fp)
        entries = self._keys.get(blob)
        if not entries:
            return AuthResult(accepted=False, reason="unknown-key", fingerprint=fp)
        refusal: tuple[str, AuthorizedKey] | None = None
        for entry in entries:
            reason = _entry_refusal(entry.options, source_ip, now, "key")
            if reason is None:
                return AuthResult(
                    accepted=True,
                    reason="ok",
                    fingerprint=fp,
                    matched=entry.source,
                    permissions=Permissions.from_options(entry.options),
                )
            refusal = refusal or (reason, entry)
        assert refusal is not None
        return AuthResult(
            accepted=False, reason=refusal[0], fingerprint=fp, matched=refusal[1].source
        )

    def _check_cert(self, blob: bytes, username: str, source_ip: str, now: float) -> AuthResult:
        line = ED25519_CERT.encode() + b" " + base64.b64encode(blob)
        try:
            cert = serialization.load_ssh_public_identity(line)
            if not isinstance(cert, SSHCertificate):  # pragma: no cover - type checked
                raise ValueError("not a certificate")
            key = cert.public_key()
            ca = cert.signature_key()
            if not isinstance(key, Ed25519PublicKey):  # pragma: no cover - type checked
                raise ValueError("not an Ed25519 certificate")
            ca_blob = _any_key_blob(ca)
        except Exception:  # hostile bytes: cryptography may raise several types
            return AuthResult(
                accepted=False, reason="malformed-key", fingerprint=fingerprint_blob(blob)
            )
        fp = fingerprint(key)
        detail = (
            f"cert ID {_printable(cert.key_id)} serial {cert.serial} CA {fingerprint_blob(ca_blob)}"
        )

        def refuse(reason: str, extra: str = "", matched: str = "") -> AuthResult:
            text = f"{detail} {extra}" if extra else detail
            return AuthResult(
                accepted=False, reason=reason, fingerprint=fp, detail=text, matched=matched
            )

        entries = self._cas.get(ca_blob) if isinstance(ca, Ed25519PublicKey) else None
        if not entries:
            return refuse("cert-untrusted-ca")
        try:
            cert.verify_cert_signature()
        except (InvalidSignature, ValueError, UnsupportedAlgorithm):
            return refuse("cert-bad-signature")
        if cert.type is not SSHCertificateType.USER:
            return refuse("cert-not-user")
        if now < cert.valid_after:
            return refuse("cert-not-yet-valid")
        if now >= cert.valid_before:
            return refuse("cert-expired")
        for name, value in sorted(cert.critical_options.items()):
            if name == b"force-command":
                continue  # moot: there are no sessions
            if name == b"source-address":
                from wraith.ssh.authorized_keys import match_cidr_list

                try:
                    ok = match_cidr_list(source_ip, value.decode("ascii"))
                except ValueError:
                    ok = False
                if not ok:
                    return refuse("cert-source-address")
            elif name == b"verify-required":
                return refuse("cert-verify-required")
            else:
                return refuse("cert-unknown-critical-option", f"option {_printable(name, 64)}")
        if b"permit-port-forwarding" not in cert.extensions:
            return refuse("cert-no-port-forwarding")
        principals = {p.decode("utf-8", "replace") for p in cert.valid_principals}
        refusal: tuple[str, AuthorizedKey] | None = None
        for entry in entries:
            reason = _entry_refusal(entry.options, source_ip, now, "cert")
            if reason is None:
                reason = _principal_refusal(principals, entry.options.principals, username)
            if reason is None:
                return AuthResult(
                    accepted=True,
                    reason="ok",
                    fingerprint=fp,
                    detail=detail,
                    matched=entry.source,
                    permissions=Permissions.from_options(entry.options),
                )
            refusal = refusal or (reason, entry)
        assert refusal is not None
        return refuse(refusal[0], matched=refusal[1].source)


def _tables(
    entries: Sequence[AuthorizedKey],
) -> tuple[dict[bytes, list[AuthorizedKey]], dict[bytes, list[AuthorizedKey]], list[str]]:
    """Plain keys and CA keys by blob, and a warning per entry that can never match."""
    keys: dict[bytes, list[AuthorizedKey]] = {}
    cas: dict[bytes, list[AuthorizedKey]] = {}
    warnings: list[str] = []
    for entry in entries:
        if entry.key_type != ED25519:
            warnings.append(f"{entry.source}: {entry.unusable_reason}; never matches")
            continue
        if entry.options.verify_required:
            warnings.append(f"{entry.source}: {entry.unusable_reason}; never matches")
        table = cas if entry.options.cert_authority else keys
        table.setdefault(entry.blob, []).append(entry)
    return keys, cas, warnings


def _authorized_keys_path(src: KeySource | None) -> str | None:
    """The file an authorized_keys source reads (``None``: the default), or None for text."""
    from wraith.ssh.authorized_keys import DEFAULT_AUTHORIZED_KEYS, looks_like_authorized_keys_text

    if src is None:
        return os.path.expanduser(DEFAULT_AUTHORIZED_KEYS)
    if isinstance(src, bytes | str):
        text = src.decode("utf-8", "replace") if isinstance(src, bytes) else src
        if looks_like_authorized_keys_text(text):
            return None
        return os.path.expanduser(os.fsdecode(src))
    return os.path.expanduser(os.fspath(src))


def _file_stamp(path: str) -> _FileStamp:
    """What changes when the file is edited or replaced; None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _entry_refusal(options: KeyOptions, source_ip: str, now: float, kind: str) -> str | None:
    """Why this authorized_keys entry's own options refuse the attempt, or None."""
    if options.verify_required:
        return f"{kind}-verify-required"
    if options.from_patterns is not None:
        from wraith.ssh.authorized_keys import match_host_patterns

        if not match_host_patterns(options.from_patterns, source_ip):
            return "from-mismatch"
    if options.expiry_time is not None and now > options.expiry_time:
        return "key-expired"
    return None


def _principal_refusal(
    cert_principals: set[str], line_principals: tuple[str, ...] | None, username: str
) -> str | None:
    if not cert_principals:
        if line_principals is None:
            return "cert-empty-principals"
        return None if username in line_principals else "cert-wrong-principal"
    if username not in cert_principals:
        return "cert-wrong-principal"
    if line_principals is not None and username not in line_principals:
        return "cert-wrong-principal"
    return None
