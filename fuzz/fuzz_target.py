"""Fuzz target/listen URL parsing: a Target or RemoteProtocolError, nothing else.

A parsed target must render back (``url()``) to text that parses to the same
target.  Input: the first byte picks the mode (client target or listen URL),
the rest (UTF-8 with replacement) is the text.
Run: ``python fuzz/fuzz_target.py -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from wraith.proto.errors import RemoteProtocolError
    from wraith.proto.target import parse_target


def check(text: str, listen: bool) -> None:
    try:
        target = parse_target(text, allow_user=not listen, listen=listen)
    except RemoteProtocolError:
        return
    again = parse_target(target.url(), allow_user=not listen, listen=listen)
    assert again == target, (text, target, again)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    check(data[1:].decode("utf-8", "replace"), bool(data[0] & 1))


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
