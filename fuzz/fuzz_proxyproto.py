"""Fuzz the PROXY protocol header parser: NEED_DATA, a ProxyHeader or BadProxyHeader.

The input is fed whole and in two pieces (split at the first byte's value);
both ways must give the same answer.  A header keeps every byte after it as
``leftover``, and end of stream always settles the answer.
Run: ``python fuzz/fuzz_proxyproto.py -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from wraith.proto.proxyproto import NEED_DATA, BadProxyHeader, ProxyHeader, ProxyHeaderParser


def parse(*chunks: bytes, eof: bool = False) -> object:
    p = ProxyHeaderParser()
    for chunk in chunks:
        if chunk:  # b"" would mean end of stream
            p.receive_data(chunk)
    if eof:
        p.receive_data(b"")
    return p.result()


def check(data: bytes) -> object:
    whole = parse(data)
    assert whole is NEED_DATA or isinstance(whole, ProxyHeader | BadProxyHeader), whole
    cut = data[0] % (len(data) + 1) if data else 0
    assert parse(data[:cut], data[cut:]) == whole
    if isinstance(whole, ProxyHeader):
        assert data.endswith(whole.leftover)
    ended = parse(data, eof=True)
    assert ended == whole if whole is not NEED_DATA else isinstance(ended, BadProxyHeader)
    return whole


def TestOneInput(data: bytes) -> None:
    check(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
