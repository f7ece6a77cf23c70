"""Fuzz destination validation: a canonical host or RemoteProtocolError, nothing else.

The policy predicates must never raise, and must say the same thing about
the canonical spelling as about the original.  Input layout: the first two
bytes are the port, the rest (UTF-8 with replacement) is the host.
Run: ``python fuzz/fuzz_names.py -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from wraith.proto.errors import RemoteProtocolError
    from wraith.proto.names import (
        classify,
        is_link_local_or_metadata,
        is_loopback,
        is_unspecified,
        validate_destination,
    )


def check(host: str, port: int) -> str | None:
    """Validate ``host``; return its canonical form, or None if refused."""
    kind, loop, meta = classify(host), is_loopback(host), is_link_local_or_metadata(host)
    unspecified = is_unspecified(host)
    try:
        canonical = validate_destination(host, port)
    except RemoteProtocolError:
        return None
    assert validate_destination(canonical, port) == canonical, (host, canonical)
    assert classify(canonical) is kind, (host, canonical)
    assert is_loopback(canonical) is loop, (host, canonical)
    assert is_link_local_or_metadata(canonical) is meta, (host, canonical)
    assert is_unspecified(canonical) is unspecified, (host, canonical)
    return canonical


def TestOneInput(data: bytes) -> None:
    port = int.from_bytes(data[:2], "big")
    check(data[2:].decode("utf-8", "replace"), port)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
