"""Fuzz the ClientHello sniffer: NEED_DATA, a ClientHello or NotTLS, nothing else.

The input is fed whole and in two pieces (split at the first byte's value);
both ways must give the same answer, and every proper prefix of an input that
parses must say NEED_DATA or NotTLS, never a different ClientHello.
Run: ``python fuzz/fuzz_sniff.py -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from wraith.proto.sniff import NEED_DATA, ClientHello, ClientHelloSniffer, NotTLS


def sniff(*chunks: bytes) -> object:
    s = ClientHelloSniffer()
    for chunk in chunks:
        s.receive_data(chunk)
    return s.result()


def check(data: bytes) -> object:
    whole = sniff(data)
    assert whole is NEED_DATA or isinstance(whole, ClientHello | NotTLS), whole
    cut = data[0] % (len(data) + 1) if data else 0
    assert sniff(data[:cut], data[cut:]) == whole
    return whole


def TestOneInput(data: bytes) -> None:
    check(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
