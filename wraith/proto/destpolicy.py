"""The server's destination policy: ``--allow-dest`` and ``--deny-dest``.

Patterns
--------
Each pattern is an *address pattern* or a *name pattern*, with an optional port
suffix:

- address: an IPv4 or IPv6 address or CIDR network: ``10.0.0.0/8``,
  ``192.0.2.7``, ``2001:db8::/32``, ``::1``.  Host bits may be set
  (``10.1.2.3/8`` is ``10.0.0.0/8``).  Scope ids are refused.
- name: a host name or glob, case-insensitive, one trailing dot ignored:
  letters, digits, ``-``, ``_``, ``.``, and the wildcards ``*`` (any run of
  characters, dots included: ``*.internal`` matches ``a.b.internal`` but not
  ``internal``) and ``?`` (one character).  A name whose last label is numeric
  (``10.0.*``) is refused: write an address pattern.
- port suffix: ``:PORT``, ``:LO-HI`` (inclusive) or ``:*``; none means every
  port.  An IPv6 pattern with a port goes in brackets: ``[2001:db8::/32]:443``.

Address patterns match IP addresses only: an IP literal the client asked for,
and the address a name resolved to.  An IPv4 address and its IPv4-mapped IPv6
form (``::ffff:10.0.0.1``) are the same address here.  Name patterns match the
names a client asks for; they never match an IP literal.

Decision
--------
Deny wins over allow.  With no allow pattern everything not denied is allowed;
with any allow pattern, a destination must match one.  Checked twice:

:meth:`DestinationPolicy.allows_name`, before dialling, on the requested host
(a name or an IP literal, already validated by :mod:`wraith.proto.names`):

1. refused if a deny pattern matches it (a deny name pattern matching the
   name, or a deny address pattern matching the IP literal);
2. allowed if there are no allow patterns, or an allow pattern matches;
3. a *name* that matches no allow pattern is let through only when there are
   allow address patterns: what it resolves to decides (rule 4 below);
4. otherwise refused.

:meth:`DestinationPolicy.allows_address`, after connecting, on the address
actually reached, with the requested host passed as ``name``:

1. refused if a deny address pattern matches the address;
2. allowed if there are no allow patterns;
3. allowed if ``name`` matched an allow name pattern (an allowed name may
   resolve anywhere not denied);
4. otherwise allowed only if an allow address pattern matches the address.

Link-local and cloud metadata addresses are refused whatever the policy
(:func:`wraith.proto.names.is_link_local_or_metadata`); loopback is just an
address here: allowed with no allow list, refusable with ``127.0.0.0/8``
and ``::1``.  Nothing here logs.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ALLOW_ALL", "DestinationPolicy"]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_GLOB_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.*?")
_HEX_DIGITS = frozenset("0123456789abcdef")
_DIGITS_AND_WILDCARDS = frozenset("0123456789*?")
_MAX_NAME = 253
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@dataclass(frozen=True)
class _Rule:
    network: _Network | None
    name: re.Pattern[str] | None
    lo: int
    hi: int

    def ports(self, port: int) -> bool:
        return self.lo <= port <= self.hi

    def matches_name(self, name: str, port: int) -> bool:
        return self.name is not None and self.ports(port) and self.name.match(name) is not None

    def matches_address(self, forms: Sequence[_Address], port: int) -> bool:
        net = self.network
        return net is not None and self.ports(port) and any(a in net for a in forms)


def _fold(host: str) -> str:
    """Lower-case, without brackets, one trailing dot or a scope id: how hosts compare."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") else host


def _address_forms(text: str) -> list[_Address] | None:
    """The address ``text`` spells, in both IPv4 and IPv4-mapped forms; None if a name."""
    try:
        addr = ipaddress.ip_address(_fold(text).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv4Address):
        return [addr, ipaddress.IPv6Address(int(_MAPPED.network_address) | int(addr))]
    mapped = addr.ipv4_mapped
    return [addr] if mapped is None else [addr, mapped]


def _port_range(text: str, pattern: str) -> tuple[int, int]:
    if text == "*":
        return 1, 65535
    lo_text, dash, hi_text = text.partition("-")
    if not dash:
        hi_text = lo_text
    ends = []
    for part in (lo_text, hi_text):
        if not (part.isascii() and part.isdigit() and len(part) <= 5):
            raise _bad(pattern, f"port {text!r} is not a number or LO-HI range")
        ends.append(int(part))
    lo, hi = ends
    if not 1 <= lo <= hi <= 65535:
        raise _bad(pattern, f"port {text!r} is not within 1..65535 (low to high)")
    return lo, hi


def _looks_numeric(name: str) -> bool:
    """``10.0.*``, ``127.1``, ``0x7f.1``: an address written as a name, never a real name."""
    labels = name.split(".")
    last = labels[-1]
    if last.isdigit() or (last.startswith("0x") and set(last[2:]) <= _HEX_DIGITS):
        return True
    return all(set(label) <= _DIGITS_AND_WILDCARDS for label in labels) and any(
        label.isdigit() for label in labels
    )


def _bad(pattern: str, why: str) -> ValueError:
    return ValueError(f"bad destination pattern {pattern!r}: {why}")


def _parse_pattern(pattern: str) -> _Rule:
    """Parse one ``--allow-dest`` / ``--deny-dest`` pattern; ValueError names it."""
    if not isinstance(pattern, str):
        raise ValueError(f"bad destination pattern {pattern!r}: not a string")
    text = pattern.strip()
    if not text:
        raise _bad(pattern, "empty")
    ports = (1, 65535)
    bracketed = text.startswith("[")
    if bracketed:
        end = text.find("]")
        if end < 0:
            raise _bad(pattern, "'[' without ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise _bad(pattern, "expected ':PORT' after ']'")
            ports = _port_range(rest[1:], pattern)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        ports = _port_range(port_text, pattern)
    else:
        host = text  # a bare IPv6 address or network, or a name without a port
    if "%" in host:
        raise _bad(pattern, "IPv6 scope ids are not allowed")
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        network = None
    if network is not None:
        if bracketed and network.version != 6:
            raise _bad(pattern, "only IPv6 goes in brackets")
        return _Rule(network=network, name=None, lo=ports[0], hi=ports[1])
    if bracketed or ":" in host:
        raise _bad(pattern, "not an IPv6 address or network")
    if "/" in host:
        raise _bad(pattern, "not an address or CIDR network")
    name = _fold(host)
    if not name:
        raise _bad(pattern, "no host")
    if len(name) > _MAX_NAME:
        raise _bad(pattern, f"name longer than {_MAX_NAME} characters")
    if not set(name) <= _GLOB_CHARS:
        bad = next(c for c in name if c not in _GLOB_CHARS)
        raise _bad(pattern, f"{bad!r} is not allowed in a host name pattern")
    if _looks_numeric(name):
        raise _bad(pattern, "looks like an IP address: write one, or a CIDR like 10.0.0.0/8")
    regex = re.compile(fnmatch.translate(name))
    return _Rule(network=None, name=regex, lo=ports[0], hi=ports[1])


class DestinationPolicy:
    """Which destinations a server dials; see the module docstring for the rules.

    Immutable once built.  Both methods never raise: a host they cannot read
    as a name or an address is refused wherever a pattern could matter.
    """

    def __init__(self, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> None:
        for what, seq in (("allow", allow), ("deny", deny)):
            if isinstance(seq, str | bytes):
                raise ValueError(f"{what}: expected a list of destination patterns, not one string")
        self.allow: tuple[str, ...] = tuple(allow)
        self.deny: tuple[str, ...] = tuple(deny)
        allow_rules = [_parse_pattern(p) for p in self.allow]
        deny_rules = [_parse_pattern(p) for p in self.deny]
        self._allow_names = tuple(r for r in allow_rules if r.name is not None)
        self._allow_nets = tuple(r for r in allow_rules if r.network is not None)
        self._deny_names = tuple(r for r in deny_rules if r.name is not None)
        self._deny_nets = tuple(r for r in deny_rules if r.network is not None)

    @property
    def allows_everything(self) -> bool:
        """True when no pattern was given (the default)."""
        return not (self.allow or self.deny)

    def __repr__(self) -> str:
        return f"DestinationPolicy(allow={list(self.allow)!r}, deny={list(self.deny)!r})"

    def allows_name(self, host: str, port: int) -> bool:
        """May the server dial the requested ``host:port`` (a name or an IP literal)?

        True for a name can still be refused by :meth:`allows_address` once
        it has resolved.
        """
        forms = _address_forms(host)
        if forms is not None:
            if any(r.matches_address(forms, port) for r in self._deny_nets):
                return False
            if not self.allow:
                return True
            return any(r.matches_address(forms, port) for r in self._allow_nets)
        name = _fold(host)
        if any(r.matches_name(name, port) for r in self._deny_names):
            return False
        if not self.allow or self._allow_nets:
            return True  # with allow networks, the resolved address decides
        return any(r.matches_name(name, port) for r in self._allow_names)

    def allows_address(self, ip: str, port: int, *, name: str | None = None) -> bool:
        """May a connection to ``ip:port`` proceed?  ``name`` is the host as requested.

        Checked on the address a name resolved to.  An unreadable ``ip`` is refused.
        """
        forms = _address_forms(ip)
        if forms is None:
            return False
        if any(r.matches_address(forms, port) for r in self._deny_nets):
            return False
        if not self.allow:
            return True
        if name is not None and _address_forms(name) is None:
            folded = _fold(name)
            if any(r.matches_name(folded, port) for r in self._allow_names):
                return True
        return any(r.matches_address(forms, port) for r in self._allow_nets)


#: The default: no patterns, every destination allowed (link-local is denied elsewhere).
ALLOW_ALL = DestinationPolicy()
