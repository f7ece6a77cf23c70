"""The server's destination policy (--allow-dest / --deny-dest): patterns and decisions."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from wraith.config import ConfigError, ServerConfig
from wraith.options import ServeOptions
from wraith.proto import tunnel
from wraith.proto.destpolicy import ALLOW_ALL, DestinationPolicy
from wraith.proto.socks5 import Reply
from wraith.proto.tunnel import OpenFailure, socks_reply_for_open_failure
from wraith.ssh.auth import Permissions
from wraith.ssh.engine import DirectTcpipRequested
from wraith.ssh.tunnels import check_destination

# --- patterns ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "10.0.0.0/8",
        "10.1.2.3/8",  # host bits allowed
        "192.0.2.7",
        "192.0.2.7:443",
        "192.0.2.0/24:8000-9000",
        "::1",
        "2001:db8::/32",
        "[2001:db8::/32]:443",
        "[::1]",
        "[::1]:1-65535",
        "*.internal",
        "db.example.org",
        "DB.Example.ORG.",
        "*",
        "*:22",
        "db?.example.org:*",
        "under_score.example",
        "  padded.example  ",
    ],
)
def test_good_patterns(pattern: str) -> None:
    DestinationPolicy(allow=[pattern], deny=[pattern])


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("10.0.*", "looks like an IP address"),
        ("127.1", "looks like an IP address"),
        ("0x7f.0.0.1", "looks like an IP address"),
        ("example.123", "looks like an IP address"),
        ("a b", "not allowed in a host name"),
        ("é.example", "not allowed in a host name"),
        ("[abc]", "not an IPv6"),
        ("[10.0.0.1]:3", "only IPv6 goes in brackets"),
        ("[::1", "without ']'"),
        ("[::1]443", "expected ':PORT'"),
        ("x:0", "within 1..65535"),
        ("x:70000", "within 1..65535"),
        ("x:9-3", "within 1..65535"),
        ("x:", "not a number"),
        ("x:http", "not a number"),
        ("x:1-", "not a number"),
        ("x:١٢", "not a number"),  # non-ASCII digits
        ("x:1:2", "not an IPv6"),
        ("10.0.0.0/33", "not an address or CIDR"),
        ("fe80::1%eth0", "scope"),
        (".", "no host"),
        (":443", "no host"),
        ("a" * 254, "longer than 253"),
        ("a\nb", "not allowed"),
    ],
)
def test_bad_patterns_name_the_pattern_on_one_line(pattern: str, why: str) -> None:
    for kwargs in ({"allow": [pattern]}, {"deny": [pattern]}):
        with pytest.raises(ValueError) as info:
            DestinationPolicy(**kwargs)  # type: ignore[arg-type]
        msg = str(info.value)
        assert why in msg
        assert repr(pattern) in msg
        assert "\n" not in msg


def test_a_string_is_not_a_list_of_patterns() -> None:
    with pytest.raises(ValueError, match="not one string"):
        DestinationPolicy(allow="10.0.0.0/8")
    with pytest.raises(ValueError, match="not one string"):
        DestinationPolicy(deny="10.0.0.0/8")


# --- decisions ---------------------------------------------------------------------


def test_no_patterns_allows_everything() -> None:
    for policy in (DestinationPolicy(), ALLOW_ALL):
        assert policy.allows_everything
        for host in ("example.com", "127.0.0.1", "::1", "10.0.0.1", "localhost"):
            assert policy.allows_name(host, 80)
        assert policy.allows_address("127.0.0.1", 80, name="localhost")
        assert policy.allows_address("::1", 1)
    assert not DestinationPolicy(deny=["x"]).allows_everything


def test_deny_cidr_with_port() -> None:
    p = DestinationPolicy(deny=["127.0.0.1/32:8080"])
    assert not p.allows_name("127.0.0.1", 8080)
    assert p.allows_name("127.0.0.1", 8081)
    assert p.allows_name("127.0.0.2", 8080)
    # The IPv4-mapped spelling is the same address.
    assert not p.allows_name("::ffff:127.0.0.1", 8080)
    assert not p.allows_name("[::ffff:127.0.0.1]", 8080)
    # A name is not an address: it passes here, and its address is checked after dialling.
    assert p.allows_name("localhost", 8080)
    assert not p.allows_address("127.0.0.1", 8080, name="localhost")
    assert not p.allows_address("::ffff:127.0.0.1", 8080, name="localhost")
    assert p.allows_address("127.0.0.1", 8081, name="localhost")


def test_deny_port_range_and_ipv6() -> None:
    p = DestinationPolicy(deny=["[2001:db8::/32]:1-1023", "::1"])
    assert not p.allows_name("2001:db8::5", 22)
    assert not p.allows_name("[2001:DB8::5]", 1023)
    assert p.allows_name("2001:db8::5", 1024)
    assert p.allows_name("2001:db9::5", 22)
    assert not p.allows_name("::1", 5000)
    assert not p.allows_address("::1", 5000, name="localhost")


def test_deny_name_glob_is_case_insensitive_and_ignores_trailing_dot() -> None:
    p = DestinationPolicy(deny=["*.Internal.", "db.example.org:5432"])
    for host in ("a.internal", "A.B.INTERNAL", "x.internal."):
        assert not p.allows_name(host, 1)
    assert p.allows_name("internal", 1)  # *. needs a label before the dot
    assert p.allows_name("notinternal", 1)
    assert not p.allows_name("DB.example.org.", 5432)
    assert p.allows_name("db.example.org", 5433)
    # Name patterns never match IP literals, nor resolved addresses.
    assert DestinationPolicy(deny=["*"]).allows_name("10.0.0.1", 1)
    assert not DestinationPolicy(deny=["*"]).allows_name("anything", 1)


def test_allow_list_requires_a_match() -> None:
    p = DestinationPolicy(allow=["10.0.0.0/8", "*.corp:443"])
    assert p.allows_name("10.1.2.3", 22)
    assert not p.allows_name("192.168.1.1", 22)
    assert p.allows_name("git.corp", 443)
    # A name matching no allow name pattern is let through to the address check...
    assert p.allows_name("git.corp", 22)
    assert p.allows_name("elsewhere.example", 22)
    # ...where only an allow network lets it in.
    assert p.allows_address("10.9.9.9", 22, name="elsewhere.example")
    assert not p.allows_address("192.0.2.1", 22, name="elsewhere.example")
    # A name allowed by name may resolve anywhere not denied.
    assert p.allows_address("192.0.2.1", 443, name="git.corp")
    assert not p.allows_address("192.0.2.1", 22, name="git.corp")
    # Without the name, only networks count.
    assert not p.allows_address("192.0.2.1", 443)


def test_allow_names_only_refuses_ip_literals_and_other_names() -> None:
    p = DestinationPolicy(allow=["*.corp", "localhost"])
    assert p.allows_name("a.corp", 1)
    assert p.allows_name("LOCALHOST.", 1)
    assert not p.allows_name("example.com", 1)
    assert not p.allows_name("127.0.0.1", 1)
    assert not p.allows_name("::1", 1)
    assert p.allows_address("127.0.0.1", 1, name="localhost")
    assert not p.allows_address("127.0.0.1", 1, name="127.0.0.1")
    assert not p.allows_address("127.0.0.1", 1)


def test_deny_wins_over_allow() -> None:
    p = DestinationPolicy(allow=["*.corp", "10.0.0.0/8"], deny=["secret.corp", "10.9.0.0/16"])
    assert not p.allows_name("secret.corp", 1)
    assert p.allows_name("open.corp", 1)
    assert not p.allows_name("10.9.1.1", 1)
    assert p.allows_name("10.8.1.1", 1)
    # An allowed name that resolves into a denied network is refused.
    assert not p.allows_address("10.9.1.1", 1, name="open.corp")
    assert p.allows_address("10.8.1.1", 1, name="open.corp")


def test_unreadable_addresses_are_refused() -> None:
    for policy in (ALLOW_ALL, DestinationPolicy(deny=["10.0.0.0/8"])):
        assert not policy.allows_address("", 1)
        assert not policy.allows_address("not-an-ip", 1)


def test_scope_id_and_brackets_do_not_dodge_a_deny() -> None:
    p = DestinationPolicy(deny=["fe80::/10", "::1"])
    assert not p.allows_name("fe80::1%eth0", 1)
    assert not p.allows_address("fe80::1%2", 1)
    assert not p.allows_name("[::1]", 1)
    assert not p.allows_name(" ::1 ", 1)


# --- properties --------------------------------------------------------------------

_labels = st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True)
_names = st.lists(_labels, min_size=1, max_size=3).map(".".join)
_v4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_v6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
_hosts = st.one_of(_names, _v4, _v6, st.sampled_from(["localhost", "127.0.0.1", "::1"]))
_ports = st.integers(1, 65535)


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["v4", "v6", "name", "glob"]))
    if kind == "v4":
        host = f"{draw(_v4)}/{draw(st.integers(0, 32))}"
    elif kind == "v6":
        host = f"[{draw(_v6)}/{draw(st.integers(0, 128))}]"
    elif kind == "name":
        host = draw(_names)
    else:
        host = "*." + draw(_names) if draw(st.booleans()) else "*"
    lo = draw(st.integers(1, 65535))
    suffix = draw(
        st.sampled_from(["", f":{lo}", f":{lo}-{min(65535, lo + 1000)}", ":*"]),
    )
    if kind == "v6" and not suffix:
        host = host[1:-1]
    return host + suffix


@settings(max_examples=300)
@given(st.lists(_patterns(), max_size=4), st.lists(_patterns(), max_size=4), _hosts, _ports)
def test_deny_always_wins(allow: list[str], deny: list[str], host: str, port: int) -> None:
    policy = DestinationPolicy(allow=allow, deny=deny)
    deny_only = DestinationPolicy(deny=deny)
    both = DestinationPolicy(allow=[*allow, *deny], deny=deny)
    for p in (policy, both):
        if p.allows_name(host, port):
            assert deny_only.allows_name(host, port)
        for name in (None, host):
            if p.allows_address(host, port, name=name):
                assert deny_only.allows_address(host, port, name=name)
    # A destination matching a deny pattern is refused whatever the allow list says.
    for pattern in deny:
        alone = DestinationPolicy(deny=[pattern])
        if not alone.allows_name(host, port):
            assert not policy.allows_name(host, port)
        if not alone.allows_address(host, port):
            assert not policy.allows_address(host, port, name=host)


@settings(max_examples=200)
@given(_hosts, _ports, _hosts)
def test_no_patterns_allows_everything_property(host: str, port: int, name: str) -> None:
    assert ALLOW_ALL.allows_name(host, port)
    assert ALLOW_ALL.allows_address(host, port, name=name) is _is_ip(host)


@settings(max_examples=200)
@given(st.lists(_patterns(), min_size=1, max_size=4), _v4, _ports)
def test_mapped_ipv4_is_the_same_address(allow: list[str], ip: str, port: int) -> None:
    for policy in (DestinationPolicy(allow=allow), DestinationPolicy(deny=allow)):
        mapped = f"::ffff:{ip}"
        assert policy.allows_name(ip, port) is policy.allows_name(mapped, port)
        assert policy.allows_address(ip, port) is policy.allows_address(mapped, port)


@settings(max_examples=200)
@given(st.lists(_patterns(), max_size=4), st.lists(_patterns(), max_size=4), _names, _ports)
def test_names_compare_case_insensitively(
    allow: list[str], deny: list[str], name: str, port: int
) -> None:
    policy = DestinationPolicy(allow=allow, deny=deny)
    want = policy.allows_name(name, port)
    assert policy.allows_name(name.upper(), port) is want
    assert policy.allows_name(name + ".", port) is want


@settings(max_examples=200)
@given(st.text(max_size=40), st.integers(-5, 70000))
def test_arbitrary_patterns_parse_or_raise_one_line_valueerror(text: str, port: int) -> None:
    try:
        policy = DestinationPolicy(allow=[text], deny=[text])
    except ValueError as e:
        assert "\n" not in str(e)
        return
    # The pattern's own text, allowed and denied at once: deny wins (or it is no address).
    assert not policy.allows_address(text, port, name=text)
    policy.allows_name(text, port)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --- where the policy is applied ---------------------------------------------------


def test_check_destination_applies_the_policy_to_the_name() -> None:
    perms = Permissions()
    deny = DestinationPolicy(deny=["*.secret", "10.0.0.0/8"])
    assert check_destination(perms, "db.secret", 5432) is None  # no policy: allowed
    refusal = (OpenFailure.ADMINISTRATIVELY_PROHIBITED, tunnel.NOT_PERMITTED)
    assert check_destination(perms, "db.secret", 5432, dest_policy=deny) == refusal
    assert check_destination(perms, "DB.Secret.", 5432, dest_policy=deny) == refusal
    assert check_destination(perms, "10.1.1.1", 22, dest_policy=deny) == refusal
    assert check_destination(perms, "db.open", 5432, dest_policy=deny) is None
    # Link-local stays denied with its own message, whatever the policy.
    allow_all_v4 = DestinationPolicy(allow=["0.0.0.0/0"])
    assert check_destination(perms, "169.254.169.254", 80, dest_policy=allow_all_v4) == (
        OpenFailure.ADMINISTRATIVELY_PROHIBITED,
        tunnel.LINK_LOCAL_DENIED,
    )
    # SOCKS clients get "connection not allowed by ruleset".
    assert socks_reply_for_open_failure(*refusal) is Reply.NOT_ALLOWED


def test_direct_tcpip_event_checks_the_resolved_address() -> None:
    def make(policy: DestinationPolicy | None, host: str, port: int) -> DirectTcpipRequested:
        def accept() -> object:
            raise AssertionError

        return DirectTcpipRequested(
            host=host,
            port=port,
            origin_host="127.0.0.1",
            origin_port=1,
            accept=accept,  # type: ignore[arg-type]
            reject=lambda code, text: None,
            dest_policy=policy,
        )

    assert make(None, "localhost", 80).allows_address("127.0.0.1")
    policy = DestinationPolicy(allow=["localhost"], deny=["127.0.0.2"])
    assert make(policy, "localhost", 80).allows_address("127.0.0.1")
    assert not make(policy, "localhost", 80).allows_address("127.0.0.2")
    assert not make(policy, "other", 80).allows_address("127.0.0.1")


def test_server_config_validates_patterns(tmp_path: Path) -> None:
    for flag, field in (("--allow-dest", "allow_dest"), ("--deny-dest", "deny_dest")):
        opts = ServeOptions(state_dir=tmp_path, **{field: ["ok.example", "10.0.*"]})  # type: ignore[arg-type]
        with pytest.raises(ConfigError) as info:
            ServerConfig.from_options(opts)
        msg = str(info.value)
        assert msg.startswith(f"{flag}: bad destination pattern '10.0.*'")
        assert "\n" not in msg
    key = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
        + " test\n"
    )
    opts = ServeOptions(
        state_dir=tmp_path,
        authorized_keys=key,
        allow_dest=["*.corp"],
        deny_dest=["10.0.0.0/8"],
    )
    cfg = ServerConfig.from_options(opts)
    assert cfg.dest_policy.allow == ("*.corp",)
    assert cfg.dest_policy.deny == ("10.0.0.0/8",)
    default = ServerConfig.from_options(ServeOptions(state_dir=tmp_path, authorized_keys=key))
    assert default.dest_policy.allows_everything
