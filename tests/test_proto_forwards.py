"""-L / -R / -D spec parsing (OpenSSH's rules) and the forward registry."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wraith.proto.errors import LocalProtocolError, RemoteProtocolError
from wraith.proto.forwards import (
    _TRANSITIONS,
    DynamicForward,
    Forward,
    ForwardEntry,
    ForwardKind,
    ForwardRegistry,
    ForwardSpecError,
    ForwardState,
    LocalForward,
    RemoteForward,
    _Op,
    effective_bind_host,
    parse_dynamic,
    parse_local,
    parse_remote,
    remote_bind_address,
)


def L(bind: str | None, port: int, host: str, hostport: int) -> LocalForward:
    return LocalForward(bind_host=bind, bind_port=port, dest_host=host, dest_port=hostport)


def R(bind: str | None, port: int, host: str, hostport: int) -> RemoteForward:
    return RemoteForward(bind_host=bind, bind_port=port, dest_host=host, dest_port=hostport)


def D(bind: str | None, port: int) -> DynamicForward:
    return DynamicForward(bind_host=bind, bind_port=port)


TCP_GOOD = [
    ("8080:localhost:80", (None, 8080, "localhost", 80)),
    ("127.0.0.1:8080:db:5432", ("127.0.0.1", 8080, "db", 5432)),
    ("[::1]:8080:[2001:db8::1]:443", ("::1", 8080, "2001:db8::1", 443)),
    (":8080:h:80", ("", 8080, "h", 80)),
    ("*:8080:h:80", ("", 8080, "h", 80)),
    ("[]:8080:h:80", ("", 8080, "h", 80)),
    ("localhost:8080:h:80", ("localhost", 8080, "h", 80)),
    ("  8080:h:80", (None, 8080, "h", 80)),  # ssh skips leading space
    ("8080:h:80:", (None, 8080, "h", 80)),  # a final ':' just ends the spec, as in ssh
    ("08080:h:00080", (None, 8080, "h", 80)),
    ("[8080]:[h]:[80]", (None, 8080, "h", 80)),
    ("8080:my\\-host:80", (None, 8080, "my-host", 80)),  # backslash makes a char literal
    ("[fe80::1%eth0]:1:[fe80::2%eth0]:2", ("fe80::1%eth0", 1, "fe80::2%eth0", 2)),
    ("65535:h:65535", (None, 65535, "h", 65535)),
    ("1:_svc.example:1", (None, 1, "_svc.example", 1)),
]

TCP_BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("8080", "expected"),
    ("8080:h", "expected"),
    ("x:y:z", "'x' is not a decimal number"),
    ("http:h:80", "not a decimal number"),  # no /etc/services lookup
    ("70000:h:80", "70000 is not in"),
    ("99999999999999999999999:h:80", "not in"),
    ("8080:h:", "expected"),
    ("8080:h:0", "host port 0 is not in 1..65535"),
    ("8080:h:-1", "not a decimal number"),
    ("8080::80", "destination host is empty"),
    ("[::1:8080:h:80", "unclosed '['"),
    ("[::1]x:8080:h:80", "']' must end its field"),
    ("/tmp/sock:h:80", "unix socket forwards are not supported"),
    ("8080:/tmp/sock", "unix socket forwards are not supported"),
    ("[/tmp/x]:h:80", "unix socket forwards are not supported"),
    ("a:b:c:d:e", "too many"),
    ("1:2:3:4:5", "too many"),
    ("8080:h\\:x:80", "not an IPv6 address"),
    ("8080:h\\", "backslash"),
    ("[a:b]:8080:h:80", "not an IPv6 address"),
    ("8080:h o:80", "contains ' '"),
    ("8080:bücher.de:80", "contains 'ü'"),
    ("8080:h\x00:80", "contains"),
    ("8080:" + "h" * 1025 + ":80", "longer than 1024"),
    ("8080:a]b:80", "contains ']'"),
]


@pytest.mark.parametrize(("spec", "want"), TCP_GOOD)
def test_local_good(spec: str, want: tuple[str | None, int, str, int]) -> None:
    fwd = parse_local(spec)
    assert fwd == L(*want)
    assert fwd.kind is ForwardKind.LOCAL
    assert parse_local(fwd.spec()) == fwd


@pytest.mark.parametrize(("spec", "want"), TCP_GOOD)
def test_remote_good(spec: str, want: tuple[str | None, int, str, int]) -> None:
    fwd = parse_remote(spec)
    assert fwd == R(*want)
    assert fwd.kind is ForwardKind.REMOTE
    assert parse_remote(fwd.spec()) == fwd


def test_port_zero_binds_an_ephemeral_port() -> None:
    # ssh refuses 0 for -L/-D; we take it as "the OS picks" (for scripts and tests).
    assert parse_remote("0:h:80") == R(None, 0, "h", 80)
    assert parse_remote("[::]:0:h:80") == R("::", 0, "h", 80)
    assert parse_local("127.0.0.1:0:h:80") == L("127.0.0.1", 0, "h", 80)
    assert parse_dynamic("0") == D(None, 0)
    reg = ForwardRegistry()
    entry = reg.add(parse_local("0:h:80"))
    reg.mark_active(entry.id, 41234)
    assert reg.get(entry.id).bound_port == 41234


@pytest.mark.parametrize(("spec", "problem"), TCP_BAD)
@pytest.mark.parametrize(("parse", "option"), [(parse_local, "-L"), (parse_remote, "-R")])
def test_tcp_bad(spec: str, problem: str, parse: Callable[[str], Forward], option: str) -> None:
    if option == "-R" and spec in ("8080",):
        problem = "remote dynamic forwarding"
    with pytest.raises(ForwardSpecError) as info:
        parse(spec)
    message = str(info.value)
    assert problem in message
    assert message.startswith(f"bad {option} spec {spec!r}: ")
    assert "\n" not in message


@pytest.mark.parametrize("spec", ["1080", "[::1]:1080", "*:1080", "localhost:1080"])
def test_remote_dynamic_not_supported(spec: str) -> None:
    with pytest.raises(ForwardSpecError, match=r"remote dynamic forwarding .* not supported yet"):
        parse_remote(spec)


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("1080", D(None, 1080)),
        ("[::]:1080", D("::", 1080)),
        ("0.0.0.0:1080", D("0.0.0.0", 1080)),
        ("*:1080", D("", 1080)),
        (":1080", D("", 1080)),
        ("localhost:1080", D("localhost", 1080)),
        ("1080:", D(None, 1080)),
    ],
)
def test_dynamic_good(spec: str, want: DynamicForward) -> None:
    fwd = parse_dynamic(spec)
    assert fwd == want
    assert fwd.kind is ForwardKind.DYNAMIC
    assert parse_dynamic(fwd.spec()) == fwd


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "empty"),
        ("h:1080:x", "expected [bind_address:]port"),
        ("8080:h:80", "expected [bind_address:]port"),
        ("65536", "not in 0..65535"),
        ("socks", "not a decimal number"),
        ("/tmp/socks", "unix socket"),
        ("[::1:1080", "unclosed"),
    ],
)
def test_dynamic_bad(spec: str, problem: str) -> None:
    with pytest.raises(ForwardSpecError) as info:
        parse_dynamic(spec)
    assert str(info.value).startswith(f"bad -D spec {spec!r}: ")
    assert problem in str(info.value)


def test_spec_rendering() -> None:
    assert L(None, 1, "h", 2).spec() == "1:h:2"
    assert L("", 1, "h", 2).spec() == ":1:h:2"
    assert R("::1", 0, "2001:db8::1", 2).spec() == "[::1]:0:[2001:db8::1]:2"
    assert D("", 1080).spec() == ":1080"
    assert D("::", 1080).spec() == "[::]:1080"


@pytest.mark.parametrize(
    "make",
    [
        lambda: L(None, -1, "h", 1),
        lambda: L(None, 1, "h", 0),
        lambda: L(None, 1, "", 1),
        lambda: L("*", 1, "h", 1),
        lambda: L(None, 1, "a b", 1),
        lambda: L(None, 1, "a:b", 1),
        lambda: L(None, True, "h", 1),
        lambda: R(None, 65536, "h", 1),
        lambda: R("x/y", 1, "h", 1),
        lambda: D(None, 65536),
        lambda: D("[::1]", 1),
    ],
)
def test_constructors_validate(make: Callable[[], object]) -> None:
    with pytest.raises(LocalProtocolError):
        make()


def test_bind_helpers() -> None:
    assert effective_bind_host(None) == "127.0.0.1"
    assert effective_bind_host("localhost") == "127.0.0.1"
    assert effective_bind_host("") == "0.0.0.0"
    assert effective_bind_host("::1") == "::1"
    assert effective_bind_host("192.0.2.1") == "192.0.2.1"
    assert remote_bind_address(None) == "localhost"
    assert remote_bind_address("") == ""
    assert remote_bind_address("10.0.0.1") == "10.0.0.1"


# -- properties -----------------------------------------------------------------

name = st.from_regex(r"[A-Za-z0-9_.-]{1,30}", fullmatch=True)
hosts = st.one_of(name, st.ip_addresses().map(str))
binds = st.one_of(st.none(), st.just(""), hosts)
ports = st.integers(1, 65535)

forwards = st.one_of(
    st.builds(L, binds, st.integers(0, 65535), hosts, ports),
    st.builds(R, binds, st.integers(0, 65535), hosts, ports),
    st.builds(D, binds, st.integers(0, 65535)),
)
PARSERS: dict[ForwardKind, Callable[[str], Forward]] = {
    ForwardKind.LOCAL: parse_local,
    ForwardKind.REMOTE: parse_remote,
    ForwardKind.DYNAMIC: parse_dynamic,
}


@settings(max_examples=200)
@given(fwd=forwards)
def test_spec_roundtrip(fwd: Forward) -> None:
    assert PARSERS[fwd.kind](fwd.spec()) == fwd


spec_text = st.one_of(
    st.text(max_size=40),
    st.text(st.sampled_from(list(":[]/\\*0123456789ab. %-")), max_size=40),
)


@settings(max_examples=200)
@given(text=spec_text, kind=st.sampled_from(list(ForwardKind)))
def test_arbitrary_text_parses_or_raises_spec_error(text: str, kind: ForwardKind) -> None:
    try:
        fwd = PARSERS[kind](text)
    except ForwardSpecError as exc:
        assert isinstance(exc, RemoteProtocolError)
        assert "\n" not in exc.msg or "\n" in text
        return
    assert PARSERS[kind](fwd.spec()) == fwd


# -- registry ---------------------------------------------------------------------


def test_registry_lifecycle() -> None:
    reg = ForwardRegistry()
    local = reg.add(L(None, 8080, "db", 5432))
    remote = reg.add(R(None, 0, "localhost", 22))
    dyn = reg.add(D(None, 1080))
    assert [e.id for e in reg.entries()] == [1, 2, 3]
    assert all(e.state is ForwardState.REQUESTED for e in reg.entries())
    assert reg.pending_remote() == [remote]

    reg.mark_active(local.id, 8080)
    reg.mark_active(remote.id, 40001)
    reg.mark_failed(dyn.id, "Address already in use")
    assert reg.get(remote.id).bound_port == 40001
    assert reg.get(dyn.id).reason == "Address already in use"
    assert reg.pending_remote() == []
    assert reg.find_remote("localhost", 40001) == reg.get(remote.id)
    assert reg.find_remote("localhost", 0) is None
    assert reg.find_remote("127.0.0.1", 40001) is None

    reset = reg.session_lost()
    assert [e.id for e in reset] == [remote.id]
    assert reg.get(remote.id).state is ForwardState.REQUESTED
    assert reg.get(remote.id).bound_port is None
    assert reg.get(local.id).state is ForwardState.ACTIVE  # local listeners stay up
    assert reg.get(dyn.id).state is ForwardState.FAILED
    assert reg.pending_remote() == [reg.get(remote.id)]
    assert reg.find_remote("localhost", 40001) is None

    reg.cancel(remote.id)
    assert reg.pending_remote() == []
    assert reg.session_lost() == []
    assert len(reg.entries()) == 3


def test_registry_failed_remote_is_retried_after_reconnect() -> None:
    reg = ForwardRegistry()
    first = reg.add(R("", 80, "h", 80))
    second = reg.add(R("10.0.0.1", 81, "h", 81))
    reg.mark_failed(first.id, "administratively prohibited")
    reg.mark_active(second.id, 81)
    assert reg.find_remote("", 80) is None
    assert reg.find_remote("10.0.0.1", 81) == reg.get(second.id)
    assert [e.id for e in reg.session_lost()] == [first.id, second.id]
    assert [e.id for e in reg.pending_remote()] == [first.id, second.id]
    assert reg.get(first.id).reason is None


def test_registry_misuse() -> None:
    reg = ForwardRegistry()
    entry = reg.add(L(None, 8080, "db", 5432))
    with pytest.raises(LocalProtocolError):
        reg.get(99)
    with pytest.raises(LocalProtocolError):
        reg.mark_active(entry.id, 9090)  # asked for 8080
    with pytest.raises(LocalProtocolError):
        reg.mark_active(entry.id, 0)
    reg.mark_active(entry.id, 8080)
    with pytest.raises(LocalProtocolError):
        reg.mark_active(entry.id, 8080)
    reg.cancel(entry.id)
    for op in (lambda: reg.cancel(entry.id), lambda: reg.mark_failed(entry.id, "x")):
        with pytest.raises(LocalProtocolError):
            op()
    assert reg.get(entry.id).state is ForwardState.CANCELLED
    with pytest.raises(LocalProtocolError):
        reg.add("8080:h:80")  # type: ignore[arg-type]


def _put(reg: ForwardRegistry, state: ForwardState) -> ForwardEntry:
    """A -R entry in ``state``, reached through legal moves only."""
    entry = reg.add(R(None, 0, "h", 1))
    if state is ForwardState.ACTIVE:
        reg.mark_active(entry.id, 5000)
    elif state is ForwardState.FAILED:
        reg.mark_failed(entry.id, "no")
    elif state is ForwardState.CANCELLED:
        reg.cancel(entry.id)
    return reg.get(entry.id)


@pytest.mark.parametrize("state", list(ForwardState))
@pytest.mark.parametrize("op", list(_Op))
def test_registry_every_state_and_op(state: ForwardState, op: _Op) -> None:
    reg = ForwardRegistry()
    entry = _put(reg, state)
    assert entry.state is state
    apply = {
        _Op.BOUND: lambda: reg.mark_active(entry.id, 5001),
        _Op.FAILED: lambda: reg.mark_failed(entry.id, "boom"),
        _Op.CANCEL: lambda: reg.cancel(entry.id),
        _Op.SESSION_LOST: reg.session_lost,
        _Op.RETRY: lambda: reg.retry(entry.id),
    }[op]
    want = _TRANSITIONS.get((state, op))
    if want is None and op is not _Op.SESSION_LOST:
        with pytest.raises(LocalProtocolError):
            apply()
        assert reg.get(entry.id) == entry  # unchanged
    else:
        apply()
        assert reg.get(entry.id).state is (want or state)
