"""Fuzz -L/-R/-D spec parsing: parsed (and round-trips via spec()) or ForwardSpecError.

Input layout: the first byte picks the option; the rest, decoded as UTF-8
with replacement, is the spec.  Run: ``python fuzz/fuzz_forwards.py -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from wraith.proto.forwards import (
        ForwardRegistry,
        ForwardSpecError,
        parse_dynamic,
        parse_local,
        parse_remote,
    )

PARSERS = [parse_local, parse_remote, parse_dynamic]


def check(kind: int, spec: str) -> bool:
    """Parse ``spec`` with the kind'th parser; True if it was accepted."""
    parse = PARSERS[kind]
    try:
        fwd = parse(spec)
    except ForwardSpecError as exc:
        assert exc.msg.startswith("bad -"), exc.msg
        return False
    assert parse(fwd.spec()) == fwd, (spec, fwd)
    registry = ForwardRegistry()
    entry = registry.add(fwd)
    assert registry.get(entry.id) == entry
    return True


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    check(data[0] % len(PARSERS), data[1:].decode("utf-8", "replace"))


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
