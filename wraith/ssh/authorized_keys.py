"""The OpenSSH ``authorized_keys`` format, and OpenSSH host/address pattern lists.

A line is ``[options] keytype base64 [comment]``.  The options field is present when
the first word is not a key type; it ends at the first unquoted blank, and values are
double-quoted with ``\\"`` as the only escape, as in sshd's ``auth-options.c``.  Options
are applied left to right, so ``restrict,port-forwarding`` re-enables forwarding.

Loading is strict where sshd is lenient: an option Wraith does not understand, a
malformed option value or a malformed Ed25519 key fails the whole load with
:class:`AuthorizedKeysError` naming the file, line and option, because a silently
ignored restriction is a hole.  Keys of other types (RSA, ECDSA, FIDO) are common in
real files, so their lines are kept as entries that never match, with a warning.

Differences from sshd, on purpose:

- ``expiry-time`` is read as UTC (sshd uses local time unless it ends in ``Z``), so a
  file means the same thing on every server.
- ``from=`` is matched against the client's address only (sshd's ``UseDNS no``, its
  default); hostname patterns then never match, and negated ones never refuse.
- Session options (``command=``, ``no-pty``, ``environment=`` ...) are accepted and
  moot: Wraith has no sessions.  ``verify-required`` needs a FIDO key, so an entry that
  carries it never authenticates anyone.
"""

from __future__ import annotations

import binascii
import calendar
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from wraith.ssh.keys import (
    ED25519,
    KeyLoadError,
    KeySource,
    is_ed25519_blob,
    read_source,
)
from wraith.ssh.patterns import glob_match, match_pattern_list, split_negations

__all__ = [
    "DEFAULT_AUTHORIZED_KEYS",
    "AuthorizedKey",
    "AuthorizedKeysError",
    "KeyOptions",
    "default_authorized_keys_path",
    "load_authorized_keys",
    "looks_like_authorized_keys_text",
    "match_cidr_list",
    "match_host_patterns",
    "match_pattern_list",
    "parse_authorized_keys",
]

#: Read when no authorized_keys source is given (``wraith serve`` with no arguments).
DEFAULT_AUTHORIZED_KEYS = "~/.ssh/authorized_keys"


class AuthorizedKeysError(ValueError):
    """An authorized_keys file Wraith refuses to load; names file, line and option."""


@dataclass(frozen=True, kw_only=True)
class KeyOptions:
    """The options of one authorized_keys line that matter to a tunnel server."""

    #: The key is a CA that signs user certificates, not a user key.
    cert_authority: bool = False
    #: ``principals=``: for a CA line, the principals its certificates may use.
    principals: tuple[str, ...] | None = None
    #: ``from=``: OpenSSH pattern list the client's address must match.
    from_patterns: tuple[str, ...] | None = None
    #: ``expiry-time=``, as epoch seconds (read as UTC).
    expiry_time: float | None = None
    #: False after ``restrict`` or ``no-port-forwarding`` (until ``port-forwarding``).
    port_forwarding: bool = True
    #: ``permitopen=`` entries as ``(host, port)``; ``"*"`` is a wildcard for either.
    permitopen: tuple[tuple[str, str], ...] | None = None
    #: ``permitlisten=`` entries as ``(host or None, port)``; ``"*"`` is a wildcard.
    permitlisten: tuple[tuple[str | None, str], ...] | None = None
    #: ``verify-required``: only a FIDO key could satisfy it, so nothing does.
    verify_required: bool = False


@dataclass(frozen=True, kw_only=True)
class AuthorizedKey:
    """One authorized_keys entry."""

    key_type: str
    #: The SSH wire blob (empty if an unsupported key's base64 did not decode).
    blob: bytes
    comment: str
    options: KeyOptions = field(default_factory=KeyOptions)
    #: Where it came from, ``path:lineno``.
    source: str

    @property
    def unusable_reason(self) -> str | None:
        """Why this entry can never authenticate anyone, or None if it can."""
        if self.key_type != ED25519:
            return f"key type {self.key_type} is not supported"
        if self.options.verify_required:
            return "verify-required needs a FIDO key, which Wraith does not support"
        return None


# --- patterns ------------------------------------------------------------------------------


def _parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse an address, dropping an IPv6 zone and unmapping ``::ffff:a.b.c.d``."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _parse_network(spec: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR block or bare address; host bits must be clear (sshd: "inconsistent mask")."""
    return ipaddress.ip_network(spec, strict=True)


def match_host_patterns(patterns: Sequence[str], ip: str, hostname: str | None = None) -> bool:
    """OpenSSH host/address pattern list (``from=``), with CIDR entries.

    Each pattern is a glob matched against the address (and ``hostname``, if known), or a
    CIDR block (``10.0.0.0/8``) matched against the address; ``!`` negates.  A matching
    negated pattern wins and gives False; otherwise any positive match gives True.  An
    IPv4-mapped IPv6 address is matched as IPv4.  A malformed CIDR entry never matches.
    """
    addr = _parse_ip(ip)
    names = [str(addr)] if addr is not None else [ip]
    if hostname:
        names.append(hostname.rstrip("."))
    positive = False
    for negated, pat in split_negations(patterns):
        if "/" in pat:
            try:
                net = ipaddress.ip_network(pat, strict=False)
            except ValueError:
                continue
            hit = addr is not None and addr.version == net.version and addr in net
        else:
            hit = any(glob_match(pat, n) for n in names)
        if hit:
            if negated:
                return False
            positive = True
    return positive


def match_cidr_list(ip: str, cidr_list: str) -> bool:
    """OpenSSH ``addr_match_cidr_list`` (a certificate's ``source-address``).

    ``cidr_list`` is comma-separated addresses or CIDR blocks, with no globs and no
    negation.  Raises ValueError if any entry is malformed, so the caller can refuse.
    """
    addr = _parse_ip(ip)
    hit = False
    for raw in cidr_list.split(","):
        entry = raw.strip()
        if not entry:
            raise ValueError("empty entry in address list")
        net = ipaddress.ip_network(entry, strict=False)
        if addr is not None and addr.version == net.version and addr in net:
            hit = True
    return hit


# --- parsing -----------------------------------------------------------------------------

_KEY_TYPE_RE = re.compile(r"(?:ssh|ecdsa|sk)-[A-Za-z0-9@._+-]+")
_OPTION_NAME_RE = re.compile(r"[A-Za-z0-9-]+")
_EXPIRY_RE = re.compile(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?[Zz]?")

_FLAGS = frozenset(
    {
        "cert-authority",
        "restrict",
        "no-port-forwarding",
        "port-forwarding",
        "verify-required",
        # Moot: Wraith has no sessions, agent, X11 or user rc, and no FIDO keys.
        "no-pty",
        "pty",
        "no-agent-forwarding",
        "agent-forwarding",
        "no-x11-forwarding",
        "x11-forwarding",
        "no-user-rc",
        "user-rc",
        "no-touch-required",
    }
)
_VALUED = frozenset(
    {
        "principals",
        "from",
        "expiry-time",
        "permitopen",
        "permitlisten",
        # Moot: they configure sessions, and a tunnel server has none.
        "command",
        "environment",
        "tunnel",
    }
)


def _split_options(line: str, where: str) -> tuple[list[tuple[str, str | None]], str]:
    """Parse the options field; return ``([(name, value or None)], rest of line)``."""
    opts: list[tuple[str, str | None]] = []
    i, n = 0, len(line)
    while True:
        m = _OPTION_NAME_RE.match(line, i)
        if m is None:
            bad = line[i : i + 20].split(None, 1)[0] if line[i:].strip() else "end of line"
            raise AuthorizedKeysError(f"{where}: cannot parse options near {bad!r}")
        name = m.group(0)
        i = m.end()
        value: str | None = None
        if i < n and line[i] == "=":
            i += 1
            if i >= n or line[i] != '"':
                raise AuthorizedKeysError(f"{where}: option {name}= needs a double-quoted value")
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise AuthorizedKeysError(f"{where}: option {name}=: missing closing quote")
                c = line[i]
                if c == "\\" and i + 1 < n and line[i + 1] == '"':
                    chars.append('"')
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                chars.append(c)
                i += 1
            value = "".join(chars)
        opts.append((name, value))
        if i >= n:
            raise AuthorizedKeysError(f"{where}: options but no key")
        if line[i] == ",":
            i += 1
            continue
        if line[i] in " \t":
            return opts, line[i:].lstrip(" \t")
        raise AuthorizedKeysError(f"{where}: option {name}: unexpected {line[i]!r}")


def _parse_port(port: str, where: str, what: str, *, allow_zero: bool = False) -> str:
    if port == "*":
        return port
    if not port.isdigit() or not (0 if allow_zero else 1) <= int(port) <= 65535:
        raise AuthorizedKeysError(f"{where}: {what}: bad port {port!r}")
    return str(int(port))


def _split_host_port(spec: str, where: str, what: str) -> tuple[str | None, str]:
    """``host:port``, ``[v6]:port`` or ``port`` -> (host or None, port)."""
    if spec.startswith("["):
        close = spec.find("]")
        if close < 0 or spec[close + 1 : close + 2] != ":":
            raise AuthorizedKeysError(f"{where}: {what}: bad address {spec!r}")
        return spec[1:close], spec[close + 2 :]
    if ":" not in spec:
        return None, spec
    host, port = spec.rsplit(":", 1)
    if ":" in host:
        raise AuthorizedKeysError(
            f"{where}: {what}: IPv6 address needs brackets, as in [::1]:22 (got {spec!r})"
        )
    return host, port


def _parse_expiry(value: str, where: str) -> float:
    m = _EXPIRY_RE.fullmatch(value)
    if m is None:
        raise AuthorizedKeysError(
            f"{where}: expiry-time={value!r}: expected YYYYMMDD[HHMM[SS]] (read as UTC)"
        )
    y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    if not (1 <= mo <= 12 and 1 <= d <= calendar.monthrange(y, mo)[1] and h < 24 and mi < 60):
        raise AuthorizedKeysError(f"{where}: expiry-time={value!r}: not a valid date")
    if s > 59:
        raise AuthorizedKeysError(f"{where}: expiry-time={value!r}: not a valid date")
    return float(calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)))


def _name_list(value: str, where: str, name: str) -> tuple[str, ...]:
    items = tuple(p.strip() for p in value.split(","))
    if not all(items):
        raise AuthorizedKeysError(f"{where}: {name}={value!r}: empty entry in list")
    return items


def _build_options(opts: list[tuple[str, str | None]], where: str) -> KeyOptions:
    cert_authority = False
    principals: tuple[str, ...] | None = None
    from_patterns: tuple[str, ...] | None = None
    expiry: float | None = None
    port_forwarding = True
    verify_required = False
    permitopen: list[tuple[str, str]] = []
    permitlisten: list[tuple[str | None, str]] = []
    for raw_name, value in opts:
        name = raw_name.lower()
        if name in _FLAGS:
            if value is not None:
                raise AuthorizedKeysError(f"{where}: option {raw_name} takes no value")
        elif name in _VALUED:
            if value is None:
                raise AuthorizedKeysError(f"{where}: option {raw_name} needs a value")
        else:
            raise AuthorizedKeysError(
                f"{where}: option {raw_name!r} is not understood by Wraith; remove it, "
                "or the key would be accepted without the restriction it asks for"
            )
        if name == "cert-authority":
            cert_authority = True
        elif name == "restrict" or name == "no-port-forwarding":
            port_forwarding = False
        elif name == "port-forwarding":
            port_forwarding = True
        elif name == "verify-required":
            verify_required = True
        elif name == "principals":
            assert value is not None
            if principals is not None:
                raise AuthorizedKeysError(f"{where}: principals= given twice")
            principals = _name_list(value, where, "principals")
        elif name == "from":
            assert value is not None
            if from_patterns is not None:
                raise AuthorizedKeysError(f"{where}: from= given twice")
            from_patterns = _name_list(value, where, "from")
            for pat in from_patterns:
                if "/" in pat:
                    try:
                        _parse_network(pat.removeprefix("!"))
                    except ValueError:
                        raise AuthorizedKeysError(
                            f"{where}: from=: bad CIDR block {pat!r}"
                        ) from None
        elif name == "expiry-time":
            assert value is not None
            t = _parse_expiry(value, where)
            expiry = t if expiry is None else min(expiry, t)  # sshd keeps the earliest
        elif name == "permitopen":
            assert value is not None
            host, port = _split_host_port(value, where, "permitopen")
            if not host:
                raise AuthorizedKeysError(f"{where}: permitopen={value!r}: expected host:port")
            permitopen.append((host, _parse_port(port, where, "permitopen")))
        elif name == "permitlisten":
            assert value is not None
            lhost, port = _split_host_port(value, where, "permitlisten")
            if lhost == "":
                raise AuthorizedKeysError(f"{where}: permitlisten={value!r}: empty host")
            permitlisten.append((lhost, _parse_port(port, where, "permitlisten")))
        # command=, environment=, tunnel= and the session flags are moot.
    return KeyOptions(
        cert_authority=cert_authority,
        principals=principals,
        from_patterns=from_patterns,
        expiry_time=expiry,
        port_forwarding=port_forwarding,
        permitopen=tuple(permitopen) or None,
        permitlisten=tuple(permitlisten) or None,
        verify_required=verify_required,
    )


def _parse_line(line: str, where: str, warnings: list[str]) -> AuthorizedKey:
    first = line.split(None, 1)[0]
    if _KEY_TYPE_RE.fullmatch(first):
        opts: list[tuple[str, str | None]] = []
        rest = line
    else:
        opts, rest = _split_options(line, where)
    options = _build_options(opts, where)
    fields = rest.split(None, 2)
    if not fields or not _KEY_TYPE_RE.fullmatch(fields[0]):
        got = fields[0][:40] if fields else "nothing"
        raise AuthorizedKeysError(f"{where}: expected a key type such as ssh-ed25519, got {got!r}")
    key_type = fields[0]
    if len(fields) < 2:
        raise AuthorizedKeysError(f"{where}: {key_type} with no key")
    comment = fields[2].strip() if len(fields) > 2 else ""
    try:
        blob = binascii.a2b_base64(fields[1].encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        blob = b""
    entry_ok = key_type == ED25519
    if entry_ok and not is_ed25519_blob(blob):
        raise AuthorizedKeysError(f"{where}: malformed ssh-ed25519 key")
    entry = AuthorizedKey(
        key_type=key_type, blob=blob, comment=comment, options=options, source=where
    )
    reason = entry.unusable_reason
    if reason is not None:
        warnings.append(f"{where}: {reason}; this entry never matches")
    return entry


def parse_authorized_keys(
    text: str, *, source: str = "authorized_keys", warnings: list[str] | None = None
) -> list[AuthorizedKey]:
    """Parse authorized_keys text; entries are labelled ``source:lineno``.

    Lines that can never match (unsupported key types, ``verify-required``) are kept and
    described in ``warnings`` if a list is given.  Anything Wraith does not understand
    raises :class:`AuthorizedKeysError`.
    """
    sink: list[str] = [] if warnings is None else warnings
    entries: list[AuthorizedKey] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        entries.append(_parse_line(line, f"{source}:{lineno}", sink))
    return entries


_AUTH_KEYS_TEXT_RE = re.compile(r"(?:\A|\s)(?:ssh|ecdsa|sk)-[A-Za-z0-9@._+-]+[ \t]+AAAA")


def looks_like_authorized_keys_text(text: str) -> bool:
    """Is this authorized_keys text rather than a path (a newline, or a key line)?"""
    return "\n" in text or not text.strip() or bool(_AUTH_KEYS_TEXT_RE.search(text))


def load_authorized_keys(
    src: KeySource | None, *, warnings: list[str] | None = None
) -> list[AuthorizedKey]:
    """Load authorized_keys from a path or from the file's text (``str`` or ``bytes``).

    ``None`` reads :data:`DEFAULT_AUTHORIZED_KEYS`, and a missing default file gives an
    empty list (the caller warns that nobody can log in).  A missing explicit path raises
    :class:`AuthorizedKeysError`.
    """
    what = "authorized_keys"
    try:
        data, label = read_source(
            DEFAULT_AUTHORIZED_KEYS if src is None else src,
            what=what,
            looks_like_text=looks_like_authorized_keys_text,
        )
    except FileNotFoundError as e:
        if src is None:
            return []
        raise AuthorizedKeysError(str(e)) from None
    except KeyLoadError as e:
        raise AuthorizedKeysError(str(e)) from None
    if label == "<inline>":
        label = what
    text = data.decode("utf-8", "replace")
    return parse_authorized_keys(text, source=label, warnings=warnings)


def default_authorized_keys_path() -> str:
    """The expanded default path, for messages."""
    return os.path.expanduser(DEFAULT_AUTHORIZED_KEYS)
