"""``-L`` / ``-R`` / ``-D`` forward specs, parsed as OpenSSH's ssh(1) does, and their registry.

Parsing mirrors ``parse_forward()`` / ``parse_fwd_field()`` in OpenSSH's
``readconf.c``: leading whitespace is skipped, then up to four fields are split
on ``:``.  A field that starts with ``[`` runs to the first ``]`` (which must
end the field) and may contain ``:``; in other fields a backslash makes the
next character literal.  A ``:`` at the very end ends the spec, so
``8080:h:80:`` is ``8080:h:80`` (as in OpenSSH).  The field count picks the
form: ``[bind:]port:host:hostport`` for -L/-R, ``[bind:]port`` for -D.

Where we differ from OpenSSH, we refuse rather than guess: ports must be
decimal (no ``/etc/services`` names, which would need file I/O), unix socket
paths (any field with ``/``) and remote dynamic forwards (``-R [bind:]port``)
are not supported, host fields must be printable ASCII, and a field with
``:`` must be an IPv6 address.  One difference goes the other way: a bind
port of 0 is accepted for -L and -D too (ssh refuses it), and means "let
the OS pick"; the driver reports the port it got via ``mark_active()``.

Bind addresses keep ssh's meaning: not given (``None``) binds loopback, as
ssh does without GatewayPorts; ``""`` (an empty field or ``*``) is every
interface; ``localhost`` is loopback.

The registry remembers every forward and its state, so that after a
reconnect the driver re-registers each ``-R`` (``session_lost()`` then
``pending_remote()``), while ``-L`` / ``-D`` listeners stay up untouched.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from dataclasses import dataclass
from typing import ClassVar

from wraith.proto.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DynamicForward",
    "Forward",
    "ForwardEntry",
    "ForwardKind",
    "ForwardRegistry",
    "ForwardSpecError",
    "ForwardState",
    "LocalForward",
    "RemoteForward",
    "effective_bind_host",
    "parse_dynamic",
    "parse_local",
    "parse_remote",
    "remote_bind_address",
]

# OpenSSH's NI_MAXHOST check: a host field of this many characters or more is refused.
_NI_MAXHOST = 1025
_DIGITS = frozenset("0123456789")
_HOST_CHARS_EXCLUDED = frozenset("[]\\/")


class ForwardSpecError(RemoteProtocolError):
    """A forward spec from the user is malformed; the message names the spec."""


class ForwardKind(enum.Enum):
    """Which ssh option a forward came from."""

    #: ``-L``: listen locally, connect from the server.
    LOCAL = "L"
    #: ``-R``: the server listens, we connect locally.
    REMOTE = "R"
    #: ``-D``: listen locally as a SOCKS5 proxy.
    DYNAMIC = "D"


def _host_problem(host: str, what: str) -> str | None:
    """Why ``host`` cannot be a host field, or None if it can."""
    if not host:
        return f"{what} is empty"
    if len(host) >= _NI_MAXHOST:
        return f"{what} is longer than {_NI_MAXHOST - 1} characters"
    for c in host:
        if not "!" <= c <= "~" or c in _HOST_CHARS_EXCLUDED:
            return f"{what} {host!r} contains {c!r}"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{what} {host!r} has ':' but is not an IPv6 address"
    return None


def _check(problem: str | None) -> None:
    """Constructor-side check: a bad value here is the caller's bug."""
    if problem is not None:
        raise LocalProtocolError(problem)


def _bind_host_problem(host: str | None) -> str | None:
    # "" means all interfaces; "*" is only spec syntax for it, normalised away by the parser.
    if host is None or host == "":
        return None
    if host == "*":
        return 'bind address "*" is spelled "" (all interfaces) once parsed'
    return _host_problem(host, "bind address")


def _port_problem(port: int, low: int, what: str) -> str | None:
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 65535:
        return f"{what} must be {low}..65535, got {port!r}"
    return None


def _render_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _render(bind_host: str | None, *rest: str | int) -> str:
    parts = [] if bind_host is None else [_render_host(bind_host)]
    parts += [_render_host(p) if isinstance(p, str) else str(p) for p in rest]
    return ":".join(parts)


@dataclass(frozen=True, kw_only=True)
class LocalForward:
    """``-L [bind_host:]bind_port:dest_host:dest_port``; bind_port 0 lets the OS pick."""

    kind: ClassVar[ForwardKind] = ForwardKind.LOCAL
    #: None: not given (loopback); "": all interfaces.
    bind_host: str | None
    bind_port: int
    dest_host: str
    dest_port: int

    def __post_init__(self) -> None:
        _check(_bind_host_problem(self.bind_host))
        _check(_port_problem(self.bind_port, 0, "bind port"))
        _check(_host_problem(self.dest_host, "destination host"))
        _check(_port_problem(self.dest_port, 1, "destination port"))

    def spec(self) -> str:
        """The OpenSSH spec for this forward; ``parse_local(spec())`` gives it back."""
        return _render(self.bind_host, self.bind_port, self.dest_host, self.dest_port)


@dataclass(frozen=True, kw_only=True)
class RemoteForward:
    """``-R [bind_host:]bind_port:dest_host:dest_port``; bind_port 0 lets the server pick."""

    kind: ClassVar[ForwardKind] = ForwardKind.REMOTE
    #: None: not given (the server's loopback); "": all interfaces (if the server allows).
    bind_host: str | None
    bind_port: int
    dest_host: str
    dest_port: int

    def __post_init__(self) -> None:
        _check(_bind_host_problem(self.bind_host))
        _check(_port_problem(self.bind_port, 0, "bind port"))
        _check(_host_problem(self.dest_host, "destination host"))
        _check(_port_problem(self.dest_port, 1, "destination port"))

    def spec(self) -> str:
        """The OpenSSH spec for this forward; ``parse_remote(spec())`` gives it back."""
        return _render(self.bind_host, self.bind_port, self.dest_host, self.dest_port)


@dataclass(frozen=True, kw_only=True)
class DynamicForward:
    """``-D [bind_host:]bind_port``: a local SOCKS5 proxy; bind_port 0 lets the OS pick."""

    kind: ClassVar[ForwardKind] = ForwardKind.DYNAMIC
    #: None: not given (loopback); "": all interfaces.
    bind_host: str | None
    bind_port: int

    def __post_init__(self) -> None:
        _check(_bind_host_problem(self.bind_host))
        _check(_port_problem(self.bind_port, 0, "bind port"))

    def spec(self) -> str:
        """The OpenSSH spec for this forward; ``parse_dynamic(spec())`` gives it back."""
        return _render(self.bind_host, self.bind_port)


Forward = LocalForward | RemoteForward | DynamicForward


# -- parsing -----------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    text: str
    is_path: bool


def _split(spec: str, fail: _Fail) -> list[_Field]:
    """OpenSSH's parse_fwd_field() loop: at most four fields, nothing left over."""
    rest = spec.lstrip(" \t\n\r\f\v")
    fields: list[_Field] = []
    while rest and len(fields) < 4:
        if rest[0] == "[":
            end = rest.find("]")
            if end < 0:
                raise fail("unclosed '['")
            after = rest[end + 1 :]
            if after and after[0] != ":":
                raise fail("']' must end its field")
            text = rest[1:end]
            fields.append(_Field(text, "/" in text))
            rest = after[1:]
            continue
        chars: list[str] = []
        is_path = False
        i = 0
        while i < len(rest):
            c = rest[i]
            i += 1
            if c == "\\":
                if i == len(rest):
                    raise fail("ends with a backslash")
                chars.append(rest[i])
                i += 1
                continue
            if c == ":":
                break
            is_path = is_path or c == "/"
            chars.append(c)
        fields.append(_Field("".join(chars), is_path))
        rest = rest[i:]
    if rest:
        raise fail("too many ':'-separated fields")
    if any(f.is_path for f in fields):
        raise fail("unix socket forwards are not supported")
    return fields


class _Fail:
    """Builds one-line ForwardSpecErrors that name the option and the spec."""

    def __init__(self, option: str, spec: str) -> None:
        self.prefix = f"bad {option} spec {spec!r}"

    def __call__(self, problem: str) -> ForwardSpecError:
        return ForwardSpecError(f"{self.prefix}: {problem}")


def _port(text: str, low: int, what: str, fail: _Fail) -> int:
    if not text:
        raise fail(f"{what} is empty")
    if not set(text) <= _DIGITS:
        raise fail(f"{what} {text!r} is not a decimal number")
    # Strip zeros before int(): a huge digit string is refused cheaply and
    # never hits int()'s digit limit.
    digits = text.lstrip("0") or "0"
    if len(digits) > 5 or not low <= int(digits) <= 65535:
        raise fail(f"{what} {text} is not in {low}..65535")
    return int(digits)


def _bind_host(text: str, fail: _Fail) -> str:
    if text in ("", "*"):
        return ""
    problem = _host_problem(text, "bind address")
    if problem is not None:
        raise fail(problem)
    return text


def _dest_host(text: str, fail: _Fail) -> str:
    problem = _host_problem(text, "destination host")
    if problem is not None:
        raise fail(problem)
    return text


def _parse_tcp(spec: str, option: str, bind_low: int) -> tuple[str | None, int, str, int]:
    fail = _Fail(option, spec)
    fields = [f.text for f in _split(spec, fail)]
    if len(fields) == 3:
        bind: str | None = None
        port, host, hostport = fields
    elif len(fields) == 4:
        bind_text, port, host, hostport = fields
        bind = _bind_host(bind_text, fail)
    elif not fields:
        raise fail("it is empty")
    else:
        raise fail("expected [bind_address:]port:host:hostport")
    return (
        bind,
        _port(port, bind_low, "port", fail),
        _dest_host(host, fail),
        _port(hostport, 1, "host port", fail),
    )


def parse_local(spec: str) -> LocalForward:
    """Parse an ``-L`` spec; raises :class:`ForwardSpecError`."""
    bind, port, host, hostport = _parse_tcp(spec, "-L", 0)
    return LocalForward(bind_host=bind, bind_port=port, dest_host=host, dest_port=hostport)


def parse_remote(spec: str) -> RemoteForward:
    """Parse an ``-R`` spec (bind port 0: the server picks); raises :class:`ForwardSpecError`."""
    try:
        bind, port, host, hostport = _parse_tcp(spec, "-R", 0)
    except ForwardSpecError:
        # ssh(1) reads a one- or two-field -R as remote dynamic forwarding.
        try:
            parse_dynamic(spec)
        except ForwardSpecError:
            pass
        else:
            raise _Fail("-R", spec)(
                "remote dynamic forwarding (-R [bind_address:]port) is not supported yet"
            ) from None
        raise
    return RemoteForward(bind_host=bind, bind_port=port, dest_host=host, dest_port=hostport)


def parse_dynamic(spec: str) -> DynamicForward:
    """Parse a ``-D [bind_address:]port`` spec; raises :class:`ForwardSpecError`."""
    fail = _Fail("-D", spec)
    fields = [f.text for f in _split(spec, fail)]
    if len(fields) == 1:
        return DynamicForward(bind_host=None, bind_port=_port(fields[0], 0, "port", fail))
    if len(fields) == 2:
        bind = _bind_host(fields[0], fail)
        return DynamicForward(bind_host=bind, bind_port=_port(fields[1], 0, "port", fail))
    if not fields:
        raise fail("it is empty")
    raise fail("expected [bind_address:]port")


def effective_bind_host(bind_host: str | None) -> str:
    """The address a local listener binds for ``bind_host``.

    Not given, or ``localhost``, is ``127.0.0.1``: like ssh without
    GatewayPorts, forwards are reachable from this machine only unless the user
    names an address.  (ssh binds ``::1`` too; we bind the IPv4 loopback only.)
    ``""`` (or ``*``) is every IPv4 interface, ``0.0.0.0``.
    """
    if bind_host is None or bind_host == "localhost":
        return "127.0.0.1"
    if bind_host in ("", "*"):
        return "0.0.0.0"
    return bind_host


def remote_bind_address(bind_host: str | None) -> str:
    """The address field of the ``tcpip-forward`` request for a -R bind host.

    As OpenSSH's ``channel_rfwd_bind_host()``: not given is ``"localhost"``,
    all interfaces is ``""``.  The server echoes this string back in each
    ``forwarded-tcpip`` channel, so :meth:`ForwardRegistry.find_remote` matches on it.
    """
    if bind_host is None:
        return "localhost"
    if bind_host == "*":
        return ""
    return bind_host


# -- registry ----------------------------------------------------------------


class ForwardState(enum.Enum):
    """Where one forward is; see ``_TRANSITIONS`` for the legal moves."""

    #: Wanted, not in place yet: the listener is not bound, or the -R is not acknowledged.
    REQUESTED = "requested"
    #: In place; ``bound_port`` is the port actually listening.
    ACTIVE = "active"
    #: The attempt failed (``reason`` says why); a -R is retried after a reconnect.
    FAILED = "failed"
    #: Removed by the user; terminal.
    CANCELLED = "cancelled"


class _Op(enum.Enum):
    BOUND = enum.auto()
    FAILED = enum.auto()
    CANCEL = enum.auto()
    SESSION_LOST = enum.auto()
    RETRY = enum.auto()


_TRANSITIONS: dict[tuple[ForwardState, _Op], ForwardState] = {
    (ForwardState.REQUESTED, _Op.BOUND): ForwardState.ACTIVE,
    (ForwardState.REQUESTED, _Op.FAILED): ForwardState.FAILED,
    # A listener can die after it was up (e.g. accept() keeps failing).
    (ForwardState.ACTIVE, _Op.FAILED): ForwardState.FAILED,
    (ForwardState.REQUESTED, _Op.CANCEL): ForwardState.CANCELLED,
    (ForwardState.ACTIVE, _Op.CANCEL): ForwardState.CANCELLED,
    (ForwardState.FAILED, _Op.CANCEL): ForwardState.CANCELLED,
    # Only -R forwards see these two: the server's listeners went with the session.
    (ForwardState.ACTIVE, _Op.SESSION_LOST): ForwardState.REQUESTED,
    (ForwardState.FAILED, _Op.SESSION_LOST): ForwardState.REQUESTED,
    # A refused -R is asked for again on the same session (its port may free up).
    (ForwardState.FAILED, _Op.RETRY): ForwardState.REQUESTED,
}


@dataclass(frozen=True, kw_only=True)
class ForwardEntry:
    """A snapshot of one registered forward; the registry replaces it on every change."""

    id: int
    forward: Forward
    state: ForwardState
    bound_port: int | None
    reason: str | None
    #: For a -R of port 0: the port the server gave it on an earlier session,
    #: asked for again after a reconnect so that the port stays the same.
    previous_port: int | None = None

    def port_to_request(self) -> int:
        """The port to ask the server for on (re-)registration."""
        return self.forward.bind_port or self.previous_port or 0


class ForwardRegistry:
    """Every forward of this client and its state.

    Illegal moves raise ``LocalProtocolError`` and leave the entry as it was:
    unlike a connection, the registry is bookkeeping, and one driver bug
    should not take every other forward down with it.
    """

    def __init__(self) -> None:
        self._entries: dict[int, ForwardEntry] = {}
        self._next_id = 1

    def add(self, fwd: Forward) -> ForwardEntry:
        """Register a forward in state REQUESTED; ids start at 1 and are never reused."""
        if not isinstance(fwd, LocalForward | RemoteForward | DynamicForward):
            raise LocalProtocolError(f"not a forward: {fwd!r}")
        entry = ForwardEntry(
            id=self._next_id,
            forward=fwd,
            state=ForwardState.REQUESTED,
            bound_port=None,
            reason=None,
        )
        self._entries[entry.id] = entry
        self._next_id += 1
        return entry

    def get(self, fid: int) -> ForwardEntry:
        try:
            return self._entries[fid]
        except KeyError:
            raise LocalProtocolError(f"no forward with id {fid}") from None

    def entries(self) -> list[ForwardEntry]:
        """All entries, cancelled ones included, in add order."""
        return list(self._entries.values())

    def mark_active(self, fid: int, bound_port: int) -> None:
        """The listener is up on ``bound_port`` (the server's pick if we asked for 0)."""
        entry = self.get(fid)
        _check(_port_problem(bound_port, 1, "bound port"))
        requested = entry.forward.bind_port
        if requested != 0 and bound_port != requested:
            raise LocalProtocolError(
                f"forward {fid} asked for port {requested} but is bound to {bound_port}"
            )
        self._move(entry, _Op.BOUND, bound_port=bound_port, reason=None)

    def mark_failed(self, fid: int, reason: str) -> None:
        self._move(self.get(fid), _Op.FAILED, bound_port=None, reason=reason)

    def cancel(self, fid: int) -> None:
        self._move(self.get(fid), _Op.CANCEL, bound_port=None, reason=None)

    def session_lost(self) -> list[ForwardEntry]:
        """The SSH session is gone: every ACTIVE or FAILED -R goes back to REQUESTED.

        Returns the entries it reset.  Local and dynamic forwards keep their
        listeners, so they are left alone.
        """
        reset = []
        for entry in list(self._entries.values()):
            key = (entry.state, _Op.SESSION_LOST)
            if isinstance(entry.forward, RemoteForward) and key in _TRANSITIONS:
                previous = entry.bound_port or entry.previous_port
                moved = self._move(entry, _Op.SESSION_LOST, bound_port=None, reason=None)
                moved = dataclasses.replace(moved, previous_port=previous)
                self._entries[entry.id] = moved
                reset.append(moved)
        return reset

    def pending_remote(self) -> list[ForwardEntry]:
        """-R forwards to (re-)register on the current session, in add order."""
        return [
            e
            for e in self._entries.values()
            if isinstance(e.forward, RemoteForward) and e.state is ForwardState.REQUESTED
        ]

    def find_remote(self, bind_host: str, bind_port: int) -> ForwardEntry | None:
        """The ACTIVE -R an incoming ``forwarded-tcpip`` channel belongs to.

        ``bind_host`` / ``bind_port`` are the "address/port that was connected"
        from the channel open.  Like OpenSSH's ``open_listen_match_tcpip()`` we
        match exactly on :func:`remote_bind_address` and the bound port (the
        server's pick when we asked for port 0).
        """
        for entry in self._entries.values():
            fwd = entry.forward
            if (
                isinstance(fwd, RemoteForward)
                and entry.state is ForwardState.ACTIVE
                and entry.bound_port == bind_port
                and remote_bind_address(fwd.bind_host) == bind_host
            ):
                return entry
        return None

    def retry(self, fid: int) -> None:
        """Ask for a FAILED -R again (back to REQUESTED)."""
        entry = self.get(fid)
        if not isinstance(entry.forward, RemoteForward):
            raise LocalProtocolError(f"forward {fid} is not a remote forward")
        self._move(entry, _Op.RETRY, bound_port=None, reason=entry.reason)

    def failed_remote(self) -> list[ForwardEntry]:
        """-R forwards the server refused on this session, in add order."""
        return [
            e
            for e in self._entries.values()
            if isinstance(e.forward, RemoteForward) and e.state is ForwardState.FAILED
        ]

    def forget_previous_port(self, fid: int) -> None:
        """Stop asking for the earlier port (someone else holds it): take any port."""
        entry = self.get(fid)
        self._entries[fid] = dataclasses.replace(entry, previous_port=None)

    def _move(
        self, entry: ForwardEntry, op: _Op, *, bound_port: int | None, reason: str | None
    ) -> ForwardEntry:
        new_state = _TRANSITIONS.get((entry.state, op))
        if new_state is None:
            raise LocalProtocolError(
                f"forward {entry.id} ({entry.forward.kind.value} {entry.forward.spec()}): "
                f"{op.name} is illegal in {entry.state.name}"
            )
        new = dataclasses.replace(entry, state=new_state, bound_port=bound_port, reason=reason)
        self._entries[entry.id] = new
        return new
