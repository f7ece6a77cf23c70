"""The reserved wraith- namespace, destination validation and the policy predicates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wraith.proto.errors import RemoteProtocolError
from wraith.proto.names import (
    CONTROL_CHANNEL,
    RESERVED_PREFIX,
    Destination,
    classify,
    is_link_local_or_metadata,
    is_loopback,
    is_unspecified,
    validate_destination,
)


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("wraith-control", Destination.CONTROL),
        ("WRAITH-Control", Destination.CONTROL),
        ("wraith-control.", Destination.CONTROL),
        ("wraith-", Destination.RESERVED),
        ("wraith-status", Destination.RESERVED),
        ("Wraith-Anything.example", Destination.RESERVED),
        ("wraith-control2", Destination.RESERVED),
        ("wraith", Destination.ALLOWED),
        ("wraithcontrol", Destination.ALLOWED),
        ("my-wraith-control", Destination.ALLOWED),
        ("example.com", Destination.ALLOWED),
        ("127.0.0.1", Destination.ALLOWED),
        ("", Destination.ALLOWED),
    ],
)
def test_classify(host: str, want: Destination) -> None:
    assert classify(host) is want


def test_constants() -> None:
    assert CONTROL_CHANNEL.startswith(RESERVED_PREFIX)


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com."),
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("localhost", "localhost"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
        (".".join(["a" * 49] * 5) + "." + "b" * 3, ".".join(["a" * 49] * 5) + "." + "b" * 3),
        ("192.0.2.1", "192.0.2.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("1host.example", "1host.example"),
        ("wraith-control", "wraith-control"),  # validation is not policy
    ],
)
def test_validate_good(host: str, want: str) -> None:
    assert validate_destination(host, 443) == want


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "..",
        "a..b",
        ".example.com",
        "example..com.",
        "a" * 64 + ".com",
        ".".join(["a" * 50] * 5) + ".com",  # 259 characters
        "exa mple.com",
        "example.com\x00",
        "example.com\n",
        " example.com",
        "bücher.de",
        "ex*ample.com",
        "ex/ample",
        "-example.com",
        "example-.com",
        "[example.com]",
        "[192.0.2.1]",
        "[::1",
        "fe80::1%eth0",
        "[fe80::1%1]",
        "127.1",  # inet_aton() reads these as 127.0.0.1 ...
        "0177.0.0.1",
        "0x7f.0.0.1",
        "2130706433",
        "169.254.169.254.",  # ... and this one as a name ending in a number
        "example.0x10",
        "1.2.3.4.5",
    ],
)
def test_validate_bad_host(host: str) -> None:
    with pytest.raises(RemoteProtocolError):
        validate_destination(host, 443)


@pytest.mark.parametrize("port", [0, -1, 65536, True])
def test_validate_bad_port(port: int) -> None:
    with pytest.raises(RemoteProtocolError):
        validate_destination("example.com", port)


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("foo.localhost", True),
        ("0.0.0.0", False),  # a bind address of 0.0.0.0 is every interface
        ("::", False),
        ("128.0.0.1", False),
        ("10.0.0.1", False),
        ("localhost.example.com", False),
        ("mylocalhost", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, want: bool) -> None:
    assert is_loopback(host) is want


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("0.0.0.0", True),
        ("::", True),
        ("[::]", True),
        ("::ffff:0.0.0.0", True),
        ("0.0.0.1", False),
        ("127.0.0.1", False),
        ("localhost", False),
        ("", False),
    ],
)
def test_is_unspecified(host: str, want: bool) -> None:
    assert is_unspecified(host) is want


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("169.254.169.254", True),
        ("169.254.0.1", True),
        ("::ffff:169.254.169.254", True),
        ("fe80::1", True),
        ("[fe80::1]", True),
        ("fe80::1%eth0", True),
        ("febf::1", True),
        ("fd00:ec2::254", True),
        ("100.100.100.200", True),
        ("metadata.google.internal", True),
        ("Metadata.Google.Internal.", True),
        ("169.253.255.255", False),
        ("fec0::1", False),
        ("fd00:ec2::253", False),
        ("100.100.100.201", False),
        ("example.com", False),
        ("127.0.0.1", False),
    ],
)
def test_is_link_local_or_metadata(host: str, want: bool) -> None:
    assert is_link_local_or_metadata(host) is want


@settings(max_examples=200)
@given(
    host=st.one_of(
        st.text(max_size=80),
        st.text(st.sampled_from(list("abcx0179.-_:[]%")), max_size=40),
        st.ip_addresses().map(str),
    ),
    port=st.integers(-2, 70000),
)
def test_validate_arbitrary(host: str, port: int) -> None:
    classify(host)
    is_loopback(host)
    is_unspecified(host)
    is_link_local_or_metadata(host)
    try:
        got = validate_destination(host, port)
    except RemoteProtocolError:
        return
    assert validate_destination(got, port) == got
    # The canonical spelling must not change what the policy predicates say.
    assert is_loopback(got) is is_loopback(host)
    assert is_unspecified(got) is is_unspecified(host)
    assert is_link_local_or_metadata(got) is is_link_local_or_metadata(host)
    assert classify(got) is classify(host)
