"""The built-in decoy web site: a static HTTP/1.1 server that answers like any other."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from wraith.proto.decoy import MAX_HEAD, Page, Redirect, StaticSite

NOW = 1_700_000_000.0
DATE = formatdate(NOW, usegmt=True)
MODIFIED = 1_600_000_000.0
HOME = Page(b"<!DOCTYPE html>\n<p>home</p>\n", "text/html; charset=utf-8")
CSS = Page(b"body { color: black }\n", "text/css", modified=MODIFIED)
PAGES: dict[str, Page | Redirect] = {"/": HOME, "/css/site.css": CSS, "/old": Redirect()}


def lookup(path: str) -> Page | Redirect | None:
    return PAGES.get(path)


class Recorder:
    """A lookup that serves one page for every path and records what it was asked."""

    def __init__(self, answer: Page | Redirect | None = HOME) -> None:
        self.answer = answer
        self.paths: list[str] = []

    def __call__(self, path: str) -> Page | Redirect | None:
        self.paths.append(path)
        return self.answer


def serve(
    *chunks: bytes,
    look: Callable[[str], Page | Redirect | None] = lookup,
    now: float = NOW,
    eof: bool = False,
) -> tuple[bytes, bool]:
    """Everything the site sends for ``chunks`` (b"" chunks skipped), and whether it closed."""
    site = StaticSite(look)
    out = bytearray()
    for chunk in chunks:
        if chunk:
            site.receive_data(chunk, now)
            out += site.data_to_send()
    if eof:
        site.receive_data(b"", now)
        out += site.data_to_send()
    return bytes(out), site.closed


def drip(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    raw_head: bytes


def responses(out: bytes, head_only: Sequence[bool] = ()) -> list[Response]:
    """Split the output into responses (``head_only[i]``: the i-th answers a HEAD)."""
    got: list[Response] = []
    while out:
        head, sep, rest = out.partition(b"\r\n\r\n")
        assert sep, out
        status_line, *lines = head.decode("ascii").split("\r\n")
        version, status, reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(": ")
            assert colon and name.lower() not in headers, line
            headers[name.lower()] = value
        length = 0 if len(got) < len(head_only) and head_only[len(got)] else None
        if length is None:
            length = int(headers["content-length"])
        assert len(rest) >= length, (rest, length)
        got.append(Response(int(status), reason, headers, rest[:length], head + sep))
        out = rest[length:]
    return got


def one(out: bytes, head_only: bool = False) -> Response:
    (response,) = responses(out, [head_only])
    return response


def get(target: str = "/", host: str | None = "example.com", *extra: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", *([f"Host: {host}"] if host is not None else []), *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- GET and HEAD ----------------------------------------------------------------------------


def test_get_serves_the_page_with_its_headers() -> None:
    out, closed = serve(get("/"))
    r = one(out)
    assert (r.status, r.reason) == (200, "OK")
    assert r.body == HOME.body
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-length"] == str(len(HOME.body))
    assert r.headers["date"] == DATE
    assert "last-modified" not in r.headers  # HOME has no modified time
    assert not closed  # HTTP/1.1: keep-alive


def test_the_date_comes_from_now() -> None:
    later = NOW + 86400 * 365
    assert one(serve(get("/"), now=later)[0]).headers["date"] == formatdate(later, usegmt=True)
    assert one(serve(get("/"), now=0.0)[0]).headers["date"] == "Thu, 01 Jan 1970 00:00:00 GMT"


def test_last_modified_when_the_page_has_a_time() -> None:
    r = one(serve(get("/css/site.css"))[0])
    assert r.status == 200 and r.body == CSS.body
    assert r.headers["content-type"] == "text/css"
    assert r.headers["last-modified"] == formatdate(MODIFIED, usegmt=True)
    assert r.headers["last-modified"] == "Sun, 13 Sep 2020 12:26:40 GMT"


@pytest.mark.parametrize("target", ["/", "/css/site.css", "/missing"])
def test_head_has_the_headers_of_get_and_no_body(target: str) -> None:
    got, _ = serve(get(target))
    out, closed = serve(get(target).replace(b"GET ", b"HEAD ", 1))
    head = one(out, head_only=True)
    assert out == head.raw_head  # nothing after the head
    assert head.raw_head == one(got).raw_head
    assert int(head.headers["content-length"]) == len(one(got).body) > 0
    assert not closed


def test_head_keeps_the_connection_for_the_next_request() -> None:
    data = get("/").replace(b"GET ", b"HEAD ", 1) + get("/css/site.css")
    first, second = responses(serve(data)[0], [True, False])
    assert first.status == second.status == 200
    assert first.body == b"" and second.body == CSS.body


# --- 404 and 405 -----------------------------------------------------------------------------


def test_404_when_the_lookup_says_none() -> None:
    seen = Recorder(answer=None)
    out, closed = serve(get("/nothing/here"), look=seen)
    r = one(out)
    assert (r.status, r.reason) == (404, "Not Found")
    assert b"404 Not Found" in r.body
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["date"] == DATE
    assert seen.paths == ["/nothing/here"]
    assert not closed  # an unknown path does not end the connection


@pytest.mark.parametrize("target", ["http://x/", "http://example.com/", "*", "//x", "//x/y"])
def test_404_for_a_target_that_is_not_an_origin_path(target: str) -> None:
    seen = Recorder()  # would serve anything it were asked
    out, closed = serve(get(target), look=seen)
    assert one(out).status == 404
    assert seen.paths == []
    assert not closed


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_get_405_with_allow_and_close(method: str) -> None:
    seen = Recorder()
    data = f"{method} / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".encode()
    out, closed = serve(data + get("/"), look=seen)
    r = one(out)  # the pipelined GET is not answered: the body was never read
    assert (r.status, r.reason) == (405, "Method Not Allowed")
    assert r.headers["allow"] == "GET, HEAD"
    assert r.headers["connection"] == "close"
    assert b"405 Method Not Allowed" in r.body
    assert closed
    assert seen.paths == []


def test_nothing_more_once_closed() -> None:
    site = StaticSite(lookup)
    site.receive_data(b"PUT / HTTP/1.1\r\nHost: a\r\n\r\n", NOW)
    assert site.closed and one(site.data_to_send()).status == 405
    site.receive_data(get("/"), NOW)
    site.receive_data(b"", NOW)
    assert site.data_to_send() == b"" and site.closed


# --- keep-alive and close --------------------------------------------------------------------


def test_two_pipelined_requests_in_one_feed_are_both_answered_in_order() -> None:
    out, closed = serve(get("/css/site.css") + get("/"))
    first, second = responses(out)
    assert (first.status, first.body) == (200, CSS.body)
    assert (second.status, second.body) == (200, HOME.body)
    assert not closed


def test_requests_one_after_the_other_on_one_connection() -> None:
    site = StaticSite(lookup)
    for target, body in [("/", HOME.body), ("/css/site.css", CSS.body), ("/x", None)] * 2:
        site.receive_data(get(target), NOW)
        r = one(site.data_to_send())
        assert r.status == (200 if body else 404)
        assert body is None or r.body == body
        assert not site.closed


def test_connection_close_is_honoured() -> None:
    out, closed = serve(get("/", "a", "Connection: close") + get("/css/site.css"))
    r = one(out)  # the second request is not answered
    assert r.status == 200 and r.body == HOME.body
    assert r.headers["connection"] == "close"
    assert closed


def test_http_1_0_without_keep_alive_closes() -> None:
    out, closed = serve(b"GET / HTTP/1.0\r\n\r\n")
    r = one(out)
    assert r.status == 200 and r.body == HOME.body
    assert r.headers["connection"] == "close"
    assert closed


# --- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "target", "location"),
    [
        ("example.com", "/old", "https://example.com/old"),
        ("example.com:8080", "/old", "https://example.com/old"),
        ("Example.COM:80", "/old?a=1&b=%20", "https://Example.COM/old?a=1&b=%20"),
        ("192.0.2.7:8443", "/old", "https://192.0.2.7/old"),
        ("[::1]:8080", "/old", "https://[::1]/old"),
        ("[::1]", "/old", "https://[::1]/old"),
        ("[2001:db8::1]:443", "/old", "https://[2001:db8::1]/old"),
    ],
)
def test_redirect_is_a_301_to_https_on_the_request_host(
    host: str, target: str, location: str
) -> None:
    seen = Recorder(answer=Redirect())
    out, closed = serve(get(target, host), look=seen)
    r = one(out)
    assert (r.status, r.reason) == (301, "Moved Permanently")
    assert r.headers["location"] == location
    assert r.headers["content-length"] == str(len(r.body))
    assert seen.paths == ["/old"]
    assert not closed


def test_redirect_for_head_has_no_body() -> None:
    out, _ = serve(get("/old").replace(b"GET ", b"HEAD ", 1))
    r = one(out, head_only=True)
    assert r.status == 301 and r.headers["location"] == "https://example.com/old"
    assert out == r.raw_head


def test_redirect_without_a_host_is_404() -> None:
    out, closed = serve(b"GET /old HTTP/1.0\r\n\r\n")  # HTTP/1.0 may omit Host
    r = one(out)
    assert r.status == 404 and "location" not in r.headers
    assert closed


@pytest.mark.parametrize(
    "host", ["", "bad_host", "a b", "x/y", ":8080", "::1", "a:1:2", "[::1", "[]", "a" * 256]
)
def test_redirect_with_an_invalid_host_is_404(host: str) -> None:
    r = one(serve(get("/old", host))[0])
    assert r.status == 404 and "location" not in r.headers


# --- not HTTP at all -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "decided_at"),
    [
        (b"SSH-2.0-OpenSSH_9.2p1\r\n", 4),  # "SSH-": "-" cannot be in a method
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 1),  # a TLS ClientHello
        (b"get / HTTP/1.1\r\n", 1),  # methods are upper case
        (b"GET / SSH-2.0\r\n", 7),
        (b"GET /\x00 HTTP/1.1\r\n", 6),
        (b"GET / HTTP/2.0\r\n", 12),
        (b"\x00\x00\x00\x00", 1),
    ],
)
def test_a_request_line_that_cannot_be_http_is_a_400_at_once(data: bytes, decided_at: int) -> None:
    assert b"\r\n\r\n" not in data
    for chunks in ([data], drip(data)):
        out, closed = serve(*chunks)
        r = one(out)
        assert (r.status, r.reason) == (400, "Bad Request")
        assert r.headers["connection"] == "close"
        assert r.headers["date"] == DATE
        assert closed
    site = StaticSite(lookup)
    for i, byte in enumerate(drip(data), 1):
        site.receive_data(byte, NOW)
        assert site.closed == (i >= decided_at), i


def test_non_http_after_a_good_request_is_a_400_at_once_however_it_comes() -> None:
    data = get("/") + b"SSH-2.0-OpenSSH_9.2p1\r\n"
    want = serve(*drip(data))
    assert serve(data) == want
    assert serve(get("/"), b"SSH-2.0-OpenSSH_9.2p1\r\n") == want
    first, second = responses(want[0])
    assert (first.status, second.status) == (200, 400)
    assert second.headers["connection"] == "close"
    assert want[1]


# --- slow clients, big heads, end of stream --------------------------------------------------

SAMPLES = [
    get("/"),
    get("/css/site.css") + get("/") + get("/missing"),
    get("/").replace(b"GET ", b"HEAD ", 1) + get("/old", "[::1]:8080"),
    get("/", "a", "Connection: close"),
    b"GET / HTTP/1.0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" + get("/css/site.css"),
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    + get("/"),
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"GET / HTTP/1.1\r\n\r\n",  # no Host: h11 says 400
    b"SSH-2.0-OpenSSH_9.2p1\r\n",
]


@pytest.mark.parametrize("data", SAMPLES)
def test_a_byte_at_a_time_gives_the_same_bytes_as_all_at_once(data: bytes) -> None:
    want = serve(data)
    assert want[0].startswith(b"HTTP/1.1 ")
    assert serve(*drip(data)) == want
    for cut in range(0, len(data), 7):
        assert serve(data[:cut], data[cut:]) == want


def big_head(size: int) -> bytes:
    start = b"GET / HTTP/1.1\r\nHost: a\r\nX-Filler: "
    return start + b"x" * (size - len(start) - 4) + b"\r\n\r\n"


@pytest.mark.parametrize("size", [MAX_HEAD + 2, MAX_HEAD + 100, 4 * MAX_HEAD])
def test_an_oversize_head_is_refused_and_closed_however_it_comes(size: int) -> None:
    data = big_head(size)
    assert len(data) == size
    want = serve(data)
    r = one(want[0])
    assert r.status in (400, 431)
    assert r.headers["connection"] == "close"
    assert want[1]
    assert serve(*drip(data)) == want
    assert serve(data[:100], data[100:]) == want
    assert serve(data + get("/")) == want  # pipelined after it: not answered


def test_a_long_request_line_is_refused() -> None:
    out, closed = serve(b"GET /" + b"a" * (2 * MAX_HEAD) + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert one(out).status in (400, 431) and closed


def test_a_head_of_max_head_bytes_is_served() -> None:
    data = big_head(MAX_HEAD)
    for chunks in ([data], drip(data)):
        out, closed = serve(*chunks, get("/css/site.css"))
        assert [r.status for r in responses(out)] == [200, 200] and not closed


def test_eof_closes() -> None:
    assert serve(eof=True) == (b"", True)  # nothing sent at all
    out, closed = serve(get("/"), eof=True)
    assert one(out).status == 200 and closed
    out, closed = serve(b"GET / HTTP/1.1\r\nHo", eof=True)  # in the middle of a head
    assert closed and b"200 OK" not in out
    out, closed = serve(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc", eof=True)
    assert closed and one(out).status == 200  # answered before the body was read


# --- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/a%20b", "/a b"),
        ("/caf%C3%A9.html", "/caf\u00e9.html"),
        ("/x?y=%ff", "/x"),  # the query is not the path
        ("/css/site.css", "/css/site.css"),
        ("/%2Fetc", "//etc"),
    ],
)
def test_the_path_is_percent_decoded_for_the_lookup(target: str, path: str) -> None:
    seen = Recorder()
    assert one(serve(get(target), look=seen)[0]).status == 200
    assert seen.paths == [path]


@pytest.mark.parametrize("target", ["/%ff", "/a%C3", "/%80%80"])
def test_a_path_that_is_not_utf8_is_404(target: str) -> None:
    seen = Recorder()
    out, closed = serve(get(target), look=seen)
    assert one(out).status == 404
    assert seen.paths == [] and not closed


# --- nothing of the request comes back -------------------------------------------------------

MARK = b"Zq9MARKq9Z"


@pytest.mark.parametrize(
    "data",
    [
        get("/" + MARK.decode()),  # 404
        get("/%ff" + MARK.decode()),
        get("*", MARK.decode()),
        get("/old", MARK.decode() + "_"),  # a redirect with an invalid host
        b"POST /" + MARK + b" HTTP/1.1\r\nHost: " + MARK + b"\r\nContent-Length: 10\r\n\r\n" + MARK,
        b"SSH-2.0-" + MARK + b"\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n" + MARK + b"\r\n\r\n",  # a header line with no colon
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + MARK * 2000 + b"\r\n\r\n",
        b"\x16\x03\x01" + MARK,
    ],
    ids=["404", "not-utf8", "star", "bad-host", "405", "ssh", "no-colon", "431", "tls"],
)
def test_error_pages_never_echo_request_bytes(data: bytes) -> None:
    for chunks in ([data], drip(data)):
        out, _ = serve(*chunks, eof=True)
        assert out.startswith(b"HTTP/1.1 4")
        assert MARK not in out and MARK.lower() not in out.lower()


# --- properties ------------------------------------------------------------------------------

PIECES = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"/",
    b"/old",
    b"/css/site.css",
    b"/a%20b",
    b"/%ff",
    b"*",
    b"http://x/",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b"\r\n",
    b"\n",
    b"Host: a:1\r\n",
    b"Host: [::1]:8080\r\n",
    b"Connection: close\r\n",
    b"Content-Length: 2\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Upgrade: x\r\nConnection: upgrade\r\n",
    b"0\r\n\r\n",
    b"ab",
    b"SSH-2.0-x\r\n",
    b"\x16\x03\x01",
    get("/"),
    get("/old", "h"),
]
#: Random bytes, and bytes that are nearly HTTP (to reach the keep-alive and body paths).
INPUTS = st.binary(max_size=300) | st.lists(st.sampled_from(PIECES), max_size=16).map(b"".join)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted(cuts)
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@settings(max_examples=200, deadline=None)
@given(INPUTS, st.lists(st.integers(0, 300), max_size=6), st.booleans())
def test_property_any_split_gives_the_same_bytes_and_close(
    data: bytes, cuts: list[int], eof: bool
) -> None:
    want = serve(data, eof=eof)
    assert serve(*split(data, [c % (len(data) + 1) for c in cuts]), eof=eof) == want
    assert serve(*drip(data), eof=eof) == want
    if eof:
        assert want[1]  # end of stream always closes


@settings(max_examples=200, deadline=None)
@given(INPUTS, st.lists(st.integers(0, 300), max_size=6))
def test_property_output_is_empty_or_whole_http_responses(data: bytes, cuts: list[int]) -> None:
    site = StaticSite(lookup)
    chunks = [c for c in split(data, [c % (len(data) + 1) for c in cuts]) if c]
    for chunk in [*chunks, b""]:  # b"": end of stream
        site.receive_data(chunk, NOW)
        out = site.data_to_send()
        # Each response goes out whole, in the call that made it.
        assert type(out) is bytes
        assert out == b"" or out.startswith(b"HTTP/1.1 "), out
        assert type(site.closed) is bool
    assert site.closed


REQUEST_LINE = re.compile(rb"[A-Z]+ [\x21-\x7e]+ HTTP/1\.[01]\r?\n")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200), st.sampled_from([b"", get("/old")]))
def test_property_bytes_that_are_not_http_never_come_back(
    before: bytes, after: bytes, good: bytes
) -> None:
    # Bytes that are not a request (alone, or after a good one), with SSH's marker in them;
    # the lookup redirects every path, the one answer that quotes the request.
    junk = before + b"SSH-" + after
    assume(not REQUEST_LINE.match(junk))
    redirect_all = Recorder(answer=Redirect())
    for chunks in ([good + junk], drip(good + junk)):
        out, closed = serve(*chunks, look=redirect_all, eof=True)
        assert out.startswith(b"HTTP/1.1 ") and closed
        assert b"SSH-" not in out, out
