"""The client's host key pin: ``--host-key-fingerprint`` values and/or a known_hosts file.

:meth:`HostKeyPolicy.check` returns the server key's fingerprint when it is trusted and
otherwise raises a :class:`HostKeyError` whose message is one line that names the
server's fingerprint and the exact flag that would trust it.  There is no prompt and no
"trust on first use": with no pin, every key is unknown.

known_hosts is OpenSSH's format.  A line is ``[marker] hostpatterns keytype base64
[comment]``; the host is looked up as ``host`` on port 22 and ``[host]:port`` otherwise,
against comma-separated glob patterns (``*``, ``?``, ``!`` negation) or a hashed
``|1|salt|hmac-sha1`` name.  ``@revoked`` keys are refused for *every* host (OpenSSH
scopes them by host pattern; a revoked key is compromised wherever it shows up).
``@cert-authority`` lines are ignored with a warning: Wraith does not use host
certificates.  Malformed lines are skipped with a warning, as OpenSSH does; that can
only make fewer keys trusted.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

from wraith.ssh.keys import (
    KeyLoadError,
    KeySource,
    blob_key_type,
    fingerprint_blob,
    read_source,
)
from wraith.ssh.patterns import match_pattern_list

__all__ = [
    "HostKeyError",
    "HostKeyMismatch",
    "HostKeyPolicy",
    "KnownHost",
    "RevokedHostKey",
    "UnknownHostKey",
    "host_key_name",
    "parse_known_hosts",
    "validate_fingerprint",
]

_FINGERPRINT_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_KNOWN_HOSTS_TEXT_RE = re.compile(
    r"\A\s*(?:@\S+\s+)?\S+\s+(?:ssh|ecdsa|sk)-[A-Za-z0-9@._+-]+[ \t]+AAAA"
)


class HostKeyError(Exception):
    """The server's host key is not trusted.  The message is one line for the user."""

    def __init__(self, message: str, *, host: str, port: int, fingerprint: str) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        #: The fingerprint of the key the server presented.
        self.fingerprint = fingerprint


class UnknownHostKey(HostKeyError):
    """No pin and no known_hosts entry names this host."""


class HostKeyMismatch(HostKeyError):
    """The host is pinned, and the server presented a different key."""

    def __init__(
        self, message: str, *, host: str, port: int, fingerprint: str, expected: tuple[str, ...]
    ) -> None:
        super().__init__(message, host=host, port=port, fingerprint=fingerprint)
        #: The fingerprints that would have been accepted.
        self.expected = expected


class RevokedHostKey(HostKeyError):
    """The server presented a key marked ``@revoked`` in known_hosts."""


def validate_fingerprint(value: str) -> str:
    """Return ``value`` if it is an OpenSSH SHA256 fingerprint, else raise ValueError."""
    fp = value.strip()
    if not _FINGERPRINT_RE.fullmatch(fp):
        raise ValueError(
            f"host key fingerprint {value!r} is not in SHA256:... form "
            "(43 base64 characters, as `ssh-keygen -lf KEY` prints)"
        )
    return fp


def host_key_name(host: str, port: int) -> str:
    """The name OpenSSH looks up: ``host`` on port 22, else ``[host]:port`` (lowercased)."""
    h = host.strip().lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    return h if port == 22 else f"[{h}]:{port}"


def _display(host: str, port: int) -> str:
    h = host.strip("[]")
    return f"[{h}]:{port}" if ":" in h else f"{h}:{port}"


@dataclass(frozen=True, kw_only=True)
class KnownHost:
    """One known_hosts line."""

    #: ``"@revoked"``, ``"@cert-authority"`` or None.
    marker: str | None
    #: Host patterns, or None for a hashed entry.
    patterns: tuple[str, ...] | None
    #: ``(salt, hmac)`` of a hashed entry.
    hashed: tuple[bytes, bytes] | None
    key_type: str
    blob: bytes
    #: ``path:lineno``.
    source: str

    def matches(self, name: str) -> bool:
        """Does this line name ``name`` (as made by :func:`host_key_name`)?"""
        if self.hashed is not None:
            salt, digest = self.hashed
            mac = hmac.new(salt, name.encode("utf-8"), hashlib.sha1).digest()
            return hmac.compare_digest(mac, digest)
        return self.patterns is not None and match_pattern_list(name, self.patterns)


def _parse_hashed(field: str) -> tuple[bytes, bytes] | None:
    parts = field.split("|")
    if len(parts) != 4 or parts[0] != "" or parts[1] != "1":
        return None
    try:
        salt = binascii.a2b_base64(parts[2], strict_mode=True)
        digest = binascii.a2b_base64(parts[3], strict_mode=True)
    except binascii.Error:
        return None
    if len(salt) != 20 or len(digest) != 20:
        return None
    return salt, digest


def parse_known_hosts(
    text: str, *, source: str = "known_hosts", warnings: list[str] | None = None
) -> list[KnownHost]:
    """Parse known_hosts text.  Lines that cannot be used are described in ``warnings``."""
    sink: list[str] = [] if warnings is None else warnings
    entries: list[KnownHost] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        fields = line.split()
        marker: str | None = None
        if fields[0].startswith("@"):
            marker = fields.pop(0).lower()
            if marker not in ("@revoked", "@cert-authority"):
                sink.append(f"{where}: unknown marker {marker}; line ignored")
                continue
        if len(fields) < 3:
            sink.append(f"{where}: expected host patterns, key type and key; line ignored")
            continue
        hosts, key_type, b64 = fields[:3]
        try:
            blob = binascii.a2b_base64(b64, strict_mode=True)
        except binascii.Error:
            sink.append(f"{where}: key is not valid base64; line ignored")
            continue
        if blob_key_type(blob) != key_type:
            sink.append(f"{where}: key data does not match key type {key_type}; line ignored")
            continue
        if marker == "@cert-authority":
            sink.append(f"{where}: @cert-authority (host certificates) is not supported; ignored")
            continue
        hashed: tuple[bytes, bytes] | None = None
        patterns: tuple[str, ...] | None = None
        if hosts.startswith("|"):
            hashed = _parse_hashed(hosts)
            if hashed is None:
                sink.append(f"{where}: malformed hashed host name; line ignored")
                continue
        else:
            patterns = tuple(p for p in hosts.split(",") if p)
        entries.append(
            KnownHost(
                marker=marker,
                patterns=patterns,
                hashed=hashed,
                key_type=key_type,
                blob=blob,
                source=where,
            )
        )
    return entries


def _looks_like_known_hosts_text(text: str) -> bool:
    return "\n" in text or not text.strip() or bool(_KNOWN_HOSTS_TEXT_RE.match(text))


class HostKeyPolicy:
    """Trust a server key if a ``--host-key-fingerprint`` or a known_hosts entry names it."""

    def __init__(
        self, *, fingerprints: Sequence[str] = (), known_hosts: KeySource | None = None
    ) -> None:
        if isinstance(fingerprints, str):
            fingerprints = (fingerprints,)
        self.fingerprints: tuple[str, ...] = tuple(validate_fingerprint(f) for f in fingerprints)
        #: Lines of the known_hosts file that were skipped, to log.
        self.warnings: list[str] = []
        self._entries: list[KnownHost] = []
        self._revoked: list[KnownHost] = []
        if known_hosts is not None:
            try:
                data, label = read_source(
                    known_hosts, what="known_hosts", looks_like_text=_looks_like_known_hosts_text
                )
            except FileNotFoundError as e:
                raise KeyLoadError(str(e)) from None
            if label == "<inline>":
                label = "known_hosts"
            for entry in parse_known_hosts(
                data.decode("utf-8", "replace"), source=label, warnings=self.warnings
            ):
                (self._revoked if entry.marker == "@revoked" else self._entries).append(entry)

    def check(self, host: str, port: int, key_blob: bytes) -> str:
        """Return the key's fingerprint if trusted for ``host:port``; else raise.

        Raises :class:`RevokedHostKey` for a revoked key, :class:`HostKeyMismatch` when
        the host is pinned (a fingerprint was given, or known_hosts has a key of the same
        type for it) and this key is not among the pins, and :class:`UnknownHostKey`
        otherwise.
        """
        blob = bytes(key_blob)
        fp = fingerprint_blob(blob)
        where = _display(host, port)
        trust = f"--host-key-fingerprint {fp}"
        for entry in self._revoked:
            if entry.blob == blob:
                raise RevokedHostKey(
                    f"host key {fp} for {where} is REVOKED ({entry.source}); refusing to connect",
                    host=host,
                    port=port,
                    fingerprint=fp,
                )
        if fp in self.fingerprints:
            return fp
        name = host_key_name(host, port)
        matching = [e for e in self._entries if e.matches(name)]
        if any(e.blob == blob for e in matching):
            return fp
        ktype = blob_key_type(blob)
        expected = list(self.fingerprints)
        for e in matching:
            efp = fingerprint_blob(e.blob)
            if e.key_type == ktype and efp not in expected:
                expected.append(efp)
        if expected:
            raise HostKeyMismatch(
                f"HOST KEY MISMATCH for {where}: expected {' or '.join(expected)}, server "
                f"presented {fp}; someone may be intercepting the connection, or the server's "
                f"key changed; refusing to connect (to trust the new key, use {trust})",
                host=host,
                port=port,
                fingerprint=fp,
                expected=tuple(expected),
            )
        hint = ""
        if matching:
            types = ", ".join(sorted({e.key_type for e in matching}))
            hint = f" (known_hosts has only {types} keys for this host)"
        raise UnknownHostKey(
            f"host key for {where} is not trusted: server key is {fp}{hint}; "
            f"to trust it, add {trust}",
            host=host,
            port=port,
            fingerprint=fp,
        )
