"""The Sans-IO engine adapter, with two engines wired back to back in memory (no sockets)."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wraith.ssh import keys as wkeys
from wraith.ssh import sansio_engine as se
from wraith.ssh.auth import AuthPolicy
from wraith.ssh.authorized_keys import parse_authorized_keys
from wraith.ssh.engine import (
    Authenticated,
    AuthenticationFailed,
    Channel,
    ChannelOpenFailed,
    Closed,
    DirectTcpipRequested,
    SSHSettings,
)
from wraith.ssh.known_hosts import HostKeyMismatch, HostKeyPolicy


class Pair:
    def __init__(
        self,
        *,
        authorize: bool = True,
        pin: str | None = None,
        settings: SSHSettings | None = None,
    ) -> None:
        self.host_key = Ed25519PrivateKey.generate()
        self.user_key = Ed25519PrivateKey.generate()
        line = wkeys.public_key_line(self.user_key.public_key()) if authorize else ""
        policy = AuthPolicy(parse_authorized_keys(line))
        self.now = time.monotonic()
        self.server = se.SansioServerSession(
            ("127.0.0.1", 40000),
            host_key=self.host_key,
            policy=policy,
            allow_remote_bind=False,
            now=self.now,
            settings=settings,
        )
        fp = pin or wkeys.fingerprint(self.host_key.public_key())
        self.client = se.connect_client(
            host="127.0.0.1",
            port=2222,
            username="alice",
            identity=self.user_key,
            certificate=None,
            host_keys=HostKeyPolicy(fingerprints=[fp]),
            settings=settings,
        )
        self.server_events: list[object] = []
        self.server_channels: list[Channel] = []

    def pump(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            moved = False
            for a, b in ((self.client, self.server), (self.server, self.client)):
                data = a.data_to_send()
                if data:
                    b.receive_data(data, self.now)
                    moved = True
            while (ev := self.server.next_event()) is not None:
                self.server_events.append(ev)
                if isinstance(ev, DirectTcpipRequested):
                    if ev.port == 1:
                        ev.reject(se.OpenFailure.CONNECT_FAILED, "connection refused")
                    else:
                        self.server_channels.append(ev.accept())
                moved = True
            if not moved:
                return


def open_channel(p: Pair, port: int = 80) -> Channel:
    pending = p.client.open_direct_tcpip("db.internal", port, "127.0.0.1", 5555)
    p.pump()
    assert pending.done
    return pending.result()


def test_handshake_auth_and_channel_data_both_ways() -> None:
    p = Pair()
    p.pump()
    assert p.client.ready.done and p.client.ready.result() is p.client
    assert any(isinstance(e, Authenticated) for e in p.server_events)
    ch = open_channel(p)
    (srv,) = p.server_channels
    assert ch.write(b"ping") == 4
    p.pump()
    assert srv.read(100) == b"ping"
    assert srv.write(b"pong") == 4
    p.pump()
    assert ch.read(100) == b"pong"
    ch.write_eof()
    p.pump()
    assert srv.read(100) == b""  # EOF, not lost
    assert not srv.lost


def test_open_failure_reaches_the_client() -> None:
    p = Pair()
    p.pump()
    pending = p.client.open_direct_tcpip("db.internal", 1, "127.0.0.1", 5555)
    p.pump()
    with pytest.raises(ChannelOpenFailed) as failed:
        pending.result()
    assert failed.value.description == "connection refused"


def test_window_bounds_what_a_slow_reader_buffers() -> None:
    p = Pair()
    p.pump()
    ch = open_channel(p)
    (srv,) = p.server_channels
    sent = 0
    block = bytes(256 * 1024)
    for _ in range(100):  # try to push 25 MiB into a reader that never reads
        n = ch.write(block)
        sent += n
        p.pump()
        if n == 0:
            break
    assert sent == se.WINDOW  # the writer stops at exactly one window
    # Reading replenishes the window; the writer may go on.
    assert len(srv.read(se.WINDOW)) == se.WINDOW
    p.pump()
    assert ch.write(block) > 0


def test_window_grows_for_a_reader_that_keeps_up_and_not_past_its_cap() -> None:
    p = Pair()
    p.pump()
    ch = open_channel(p)
    (srv,) = p.server_channels
    block = bytes(256 * 1024)
    windows = []
    for _ in range(400):  # 100 MiB, read as soon as it arrives
        n = ch.write(block)
        p.pump()
        while srv.read(se.WINDOW):
            pass
        p.pump()
        windows.append(p.client.ssh.connection.send_window(ch.id))  # type: ignore[union-attr]
        assert n > 0
    assert max(windows) > se.WINDOW  # it grew (2 MiB at first)
    assert max(windows) <= se.MAX_WINDOW
    # A reader that stops now holds at most the grown window, never more.
    sent = 0
    for _ in range(200):
        n = ch.write(block)
        sent += n
        p.pump()
        if n == 0:
            break
    assert se.WINDOW < sent <= se.MAX_WINDOW


def test_lost_session_marks_channels_lost() -> None:
    p = Pair()
    p.pump()
    ch = open_channel(p)
    p.client.receive_data(b"", p.now)  # the TCP connection died under us
    assert ch.read(10) == b""
    assert ch.lost


def test_keepalive_is_sent_and_answered() -> None:
    p = Pair()
    p.pump()
    timer = p.client.get_timer()
    assert timer is not None
    p.now = timer + 0.1
    p.client.handle_timer(p.now)
    out = p.client.data_to_send()
    assert out  # the keepalive request
    p.server.receive_data(out, p.now)
    p.pump()
    assert p.client.active and not p.client.finished


def test_unknown_host_key_fails_ready() -> None:
    p = Pair(pin="SHA256:" + "A" * 43)
    p.pump()
    with pytest.raises(HostKeyMismatch):
        p.client.ready.result()


def test_refused_key_fails_ready_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    p = Pair(authorize=False)
    with caplog.at_level("INFO", logger="wraith.auth"):
        p.pump()
    with pytest.raises(AuthenticationFailed):
        p.client.ready.result()
    assert any("result=failure" in r.getMessage() for r in caplog.records)
    p.pump()
    assert any(isinstance(e, Closed) for e in p.server_events)


# -- keepalives and dead-peer detection ----------------------------------------------


def _timer(session: se.SansioClientSession) -> float:
    t = session.get_timer()
    assert t is not None
    return t


def test_a_live_peer_answers_keepalives_and_the_session_stays_up() -> None:
    p = Pair(settings=SSHSettings(keepalive_interval=5, keepalive_count=2))
    p.pump()
    assert p.client.ready.done
    for _ in range(10):
        p.now = _timer(p.client)
        p.client.handle_timer(p.now)
        probe = p.client.data_to_send()
        assert probe  # silence for a whole interval: a keepalive went out
        p.server.receive_data(probe, p.now)
        reply = p.server.data_to_send()
        assert reply  # the server answers it
        p.client.receive_data(reply, p.now)
    assert p.client.active
    assert p.client.next_event() is None


def test_a_silent_peer_is_declared_dead_after_the_keepalive_count() -> None:
    p = Pair(settings=SSHSettings(keepalive_interval=5, keepalive_count=3))
    p.pump()
    assert p.client.ready.done
    ch = open_channel(p)
    start = p.now
    sent = 0
    while p.client.active:
        p.now = _timer(p.client)
        assert p.now - start <= 5 * 4 + 1  # never later than interval * (count + 1)
        p.client.handle_timer(p.now)
        if p.client.active and p.client.data_to_send():
            sent += 1  # the peer never hears it: nothing is delivered from here on
    assert sent == 3
    closed = p.client.next_event()
    assert isinstance(closed, Closed)
    assert "not responding" in closed.reason
    assert p.now - start >= 5 * 4 - 1
    assert ch.lost  # channels see a lost session, not a clean end


def test_a_busy_peer_needs_no_keepalives() -> None:
    p = Pair(settings=SSHSettings(keepalive_interval=5, keepalive_count=1))
    p.pump()
    ch = open_channel(p)
    (srv,) = p.server_channels
    for _ in range(20):
        p.now += 2
        srv.write(b"x")
        p.client.receive_data(p.server.data_to_send(), p.now)
        if p.now >= _timer(p.client):
            p.client.handle_timer(p.now)
        assert ch.read(10) == b"x"
        back = p.client.data_to_send()
        assert not back  # no keepalive: the client heard from the server two seconds ago
    assert p.client.active


def test_data_in_the_same_read_as_its_open_confirmation_is_not_lost() -> None:
    """Channel data goes to the channel straight from the parser (no events);
    it must still come after the confirmation that creates the channel, even
    when both arrive in one read."""
    p = Pair()
    p.pump()
    pending = p.client.open_direct_tcpip("db.internal", 80, "127.0.0.1", 5555)
    p.server.receive_data(p.client.data_to_send(), p.now)
    ev = p.server.next_event()
    while not isinstance(ev, DirectTcpipRequested):
        assert ev is not None
        ev = p.server.next_event()
    srv = ev.accept()
    assert srv.write(b"hello at once") == 13
    p.client.receive_data(p.server.data_to_send(), p.now)  # CONFIRMATION + DATA together
    assert pending.done
    assert pending.result().read(100) == b"hello at once"


def test_bad_channel_data_ends_the_session_with_a_protocol_error() -> None:
    p = Pair()
    p.pump()
    ch = open_channel(p)
    # A CHANNEL_DATA for a channel the client never opened.
    bad = bytes([94]) + (999).to_bytes(4, "big") + (3).to_bytes(4, "big") + b"abc"
    p.server.ssh.transport.send_payload(bad)
    p.client.receive_data(p.server.data_to_send(), p.now)
    assert p.client.finished
    assert ch.lost
    assert ch.read(10) == b""


def test_write_into_reads_straight_into_packets_and_stops_at_the_window() -> None:
    """Channel.write_into: the bytes fill() writes travel in one packet each,
    exactly as written; -1 (fill not called) once the window is used up;
    fill's 0 (a socket's EOF) sends nothing."""
    p = Pair()
    p.pump()
    ch = open_channel(p)
    (srv,) = p.server_channels
    assert ch.supports_write_into
    source = bytes(range(256)) * 4096  # 1 MiB
    pos = 0
    calls = 0

    def fill(view: memoryview) -> int:
        nonlocal pos, calls
        calls += 1
        n = min(len(view), len(source) - pos, 100_000)
        view[:n] = source[pos : pos + n]
        pos += n
        return n

    sent = 0
    while sent < se.WINDOW:
        n = ch.write_into(fill)
        if n <= 0:
            break
        assert n <= se.MAX_PACKET
        sent += n
        if pos == len(source):
            pos = 0
    before = calls
    assert ch.write_into(fill) == -1  # window used up: fill is not even called
    assert calls == before
    p.pump()
    got = b""
    while (chunk := srv.read(se.WINDOW)) and len(got) < sent:
        got += chunk
    assert len(got) == sent == se.WINDOW
    assert got == (source * 3)[: len(got)]
    p.pump()  # the reads reopened the window
    assert ch.write_into(lambda view: 0) == 0  # EOF on the socket: nothing sent
    p.pump()
    assert srv.read(10) is None  # no data, and not EOF either
    with pytest.raises(BlockingIOError):  # fill's errors reach the caller, nothing sent
        ch.write_into(lambda view: (_ for _ in ()).throw(BlockingIOError()))
    p.pump()
    assert srv.read(10) is None
