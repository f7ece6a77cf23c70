"""Fuzz the decoy web site: HTTP/1.1 responses or nothing, never an exception; splits never matter.

Input layout: byte 0 picks the cut point, the rest is the client's bytes.  They
are fed to a :class:`StaticSite` whole, in two pieces, and a byte at a time,
then end of stream; every way must send the same bytes and close alike.
Whatever :meth:`~StaticSite.data_to_send` returns after a feed is empty or
starts a response (each response goes out whole), and end of stream always
closes.
Run: ``python fuzz/fuzz_decoy.py -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from wraith.proto.decoy import Page, Redirect, StaticSite

NOW = 1_700_000_000.0
PAGES: dict[str, Page | Redirect] = {
    "/": Page(b"<!DOCTYPE html>\n<p>home</p>\n", "text/html; charset=utf-8"),
    "/a b": Page(b"body {}\n", "text/css", modified=1_600_000_000.0),
    "/old": Redirect(),
}


def lookup(path: str) -> Page | Redirect | None:
    assert isinstance(path, str) and path.startswith("/"), path
    return PAGES.get(path)


def serve(chunks: list[bytes]) -> tuple[bytes, bool]:
    """What the site sends for ``chunks`` then end of stream, and whether it closed before it."""
    site = StaticSite(lookup)
    out = b""
    for chunk in chunks:
        site.receive_data(chunk, NOW)
        sent = site.data_to_send()
        assert type(sent) is bytes, sent
        assert sent == b"" or sent.startswith(b"HTTP/1.1 "), sent
        out += sent
    closed = site.closed
    assert type(closed) is bool
    site.receive_data(b"", NOW)
    sent = site.data_to_send()
    assert sent == b"" or sent.startswith(b"HTTP/1.1 "), sent
    assert site.closed, "end of stream must close"
    return out + sent, closed


def check(data: bytes) -> tuple[bytes, bool]:
    body = data[1:]
    cut = data[0] % (len(body) + 1) if data else 0
    whole = serve([body] if body else [])
    assert serve([c for c in (body[:cut], body[cut:]) if c]) == whole
    assert serve([body[i : i + 1] for i in range(len(body))]) == whole
    return whole


def TestOneInput(data: bytes) -> None:
    check(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
