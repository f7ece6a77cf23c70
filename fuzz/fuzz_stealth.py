"""Fuzz the stealth gate and client: an answer, never an exception; splits never matter.

Input layout: byte 0 picks the mode (mod 4), byte 1 the cut point, the rest is
the peer's bytes.  Modes 0 and 1 feed a :class:`StealthGate` (mode 1 after a
correct request line, to reach the h11 header checks); modes 2 and 3 feed a
:class:`StealthClient` (mode 3 after a ``101`` status line).  The input is fed
whole and in two pieces, asking for the answer after each; both ways must
agree, a ``Decoy`` must replay exactly the bytes fed, and a ``Tunnel`` must
come only after the exact request line.
Run: ``python fuzz/fuzz_stealth.py -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from wraith.proto.stealth import (
        NEED_DATA,
        Accepted,
        Decoy,
        Refused,
        StealthClient,
        StealthGate,
        Tunnel,
        new_secret_path,
    )

SECRET = new_secret_path(bytes(range(18)))
KEY = bytes(range(16))
LINE = b"GET " + SECRET.encode() + b" HTTP/1.1\r\n"
PREFIXES = [b"", LINE, b"", b"HTTP/1.1 101 Switching Protocols\r\n"]


def gate(chunks: list[bytes]) -> tuple[object, bytes]:
    """Feed until the gate answers; the answer and the bytes it was fed."""
    g = StealthGate(SECRET)
    fed = b""
    for chunk in chunks:
        g.receive_data(chunk)
        fed += chunk
        got = g.result()
        if got is not NEED_DATA:
            if isinstance(got, Decoy):
                assert got.replay == fed, (got, fed)
            else:
                assert isinstance(got, Tunnel), got
                assert fed.startswith(LINE) and fed.endswith(got.leftover), (got, fed)
                assert g.response().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
            return got, fed
    return NEED_DATA, fed


def client(chunks: list[bytes]) -> tuple[object, bytes]:
    c = StealthClient("example.com", SECRET, KEY)
    fed = b""
    for chunk in chunks:
        c.receive_data(chunk)
        fed += chunk
        got = c.result()
        if got is not NEED_DATA:
            assert isinstance(got, Accepted | Refused), got
            if isinstance(got, Refused):
                assert got.reason.isprintable(), got
            return got, fed
    return NEED_DATA, fed


def check(data: bytes) -> object:
    mode = data[0] % 4 if data else 0
    body = PREFIXES[mode] + data[2:]
    cut = (data[1] if len(data) > 1 else 0) % (len(body) + 1)
    run = gate if mode < 2 else client
    whole, _ = run([body] if body else [])
    split, fed = run([c for c in (body[:cut], body[cut:]) if c])
    # Whole, the answer is for all of it; split, maybe for the first piece only.
    assert type(split) is type(whole), (whole, split)
    if fed == body:
        assert split == whole, (whole, split)
    return whole


def TestOneInput(data: bytes) -> None:
    check(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
