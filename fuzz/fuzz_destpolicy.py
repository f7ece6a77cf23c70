"""Fuzz the destination policy: patterns parse or raise ValueError; checks never raise.

Invariants: a bad pattern raises a one-line ValueError; with no allow pattern
the policy answers as its deny list alone; deny always wins (adding every deny
pattern to the allow list too never allows more); IPv4 and IPv4-mapped IPv6
are the same address; ASCII names compare case-insensitively.  Input layout:
the first two bytes are the port, the rest (UTF-8 with replacement) is split on
NUL: the host, then patterns, alternately allow and deny.
Run: ``python fuzz/fuzz_destpolicy.py -max_total_time=60``.
"""

from __future__ import annotations

import ipaddress
import sys

import atheris

with atheris.instrument_imports():
    from wraith.proto.destpolicy import DestinationPolicy


def _answers(policy: DestinationPolicy, host: str, port: int) -> tuple[bool, bool, bool]:
    return (
        policy.allows_name(host, port),
        policy.allows_address(host, port),
        policy.allows_address(host, port, name=host),
    )


def check(host: str, port: int, allow: list[str], deny: list[str]) -> tuple[bool, bool] | None:
    """Build the policy and check ``host:port``; None if a pattern is refused."""
    try:
        policy = DestinationPolicy(allow=allow, deny=deny)
    except ValueError as e:
        assert "\n" not in str(e), str(e)
        return None
    name_ok, addr_ok, addr_named_ok = _answers(policy, host, port)
    deny_only = DestinationPolicy(deny=deny)
    d_name, d_addr, d_named = _answers(deny_only, host, port)
    # An allow list only ever narrows what the deny list leaves.
    assert not name_ok or d_name, (host, allow, deny)
    assert not addr_ok or d_addr, (host, allow, deny)
    assert not addr_named_ok or d_named, (host, allow, deny)
    if not allow:
        assert (name_ok, addr_ok, addr_named_ok) == (d_name, d_addr, d_named)
    # Deny wins: allowing the denied patterns as well changes nothing they refuse.
    both = DestinationPolicy(allow=[*allow, *deny], deny=deny)
    b_name, b_addr, b_named = _answers(both, host, port)
    assert not b_name or d_name, (host, allow, deny)
    assert not b_addr or d_addr, (host, allow, deny)
    assert not b_named or d_named, (host, allow, deny)
    # With no patterns, every name is allowed and every readable address.
    empty = DestinationPolicy()
    assert empty.allows_name(host, port)
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if isinstance(addr, ipaddress.IPv4Address):
        mapped = f"::ffff:{addr}"
        assert policy.allows_address(mapped, port) is addr_ok, (host, allow, deny)
        assert policy.allows_name(mapped, port) is name_ok, (host, allow, deny)
    if host.isascii():
        assert policy.allows_name(host.upper(), port) is name_ok, (host, allow, deny)
    return name_ok, addr_named_ok


def TestOneInput(data: bytes) -> None:
    port = int.from_bytes(data[:2], "big")
    parts = data[2:].decode("utf-8", "replace").split("\x00")
    patterns = parts[1:9]
    check(parts[0], port, patterns[0::2], patterns[1::2])


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
