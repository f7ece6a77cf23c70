"""The SSH connection protocol (RFC 4254) as in-memory client/server pairs.

Two :class:`Connection` objects pass payloads to each other; hand-built payloads
reach what a well-behaved peer never sends.  Each point of SSH-NOTES'
"Connection protocol" section has a test named after it, every (channel state,
message) pair is checked against ``_CHANNEL_TRANSITIONS``, and a hypothesis
state machine drives random legal traffic through a pair and checks that every
byte arrives, in order, within the windows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from wraith.proto.errors import LocalProtocolError, RemoteProtocolError
from wraith.proto.ssh.connection import (
    _CHANNEL_TRANSITIONS,
    CONNECTION_MESSAGES,
    MIN_PEER_MAX_PACKET,
    ChannelState,
    Connection,
    ConnectionState,
    Role,
    _Ch,
)
from wraith.proto.ssh.connection_events import (
    DIRECT_TCPIP,
    FORWARDED_TCPIP,
    NEED_DATA,
    CancelForwardRequest,
    ChannelClosed,
    ChannelData,
    ChannelEOF,
    ChannelOpenConfirmed,
    ChannelOpenFailed,
    ChannelOpenRefused,
    ChannelOpenRequest,
    ForwardRequest,
    GlobalReply,
    OpenFailure,
    WindowAdjusted,
)
from wraith.proto.ssh.constants import Msg
from wraith.proto.ssh.wire import Reader, boolean, message, string, uint32

# --- helpers -----------------------------------------------------------------------


def events(conn: Connection) -> list[object]:
    out: list[object] = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
    return out


@dataclass
class Pair:
    """A client and a server Connection wired back to back (aioquic's ``transfer``)."""

    client: Connection
    server: Connection
    log: list[tuple[str, bytes]] = field(default_factory=list)

    def transfer(self) -> None:
        while True:
            to_server, to_client = self.client.payloads_to_send(), self.server.payloads_to_send()
            if not to_server and not to_client:
                return
            for p in to_server:
                self.log.append(("c>s", p))
                self.server.receive_payload(p)
            for p in to_client:
                self.log.append(("s>c", p))
                self.client.receive_payload(p)

    def open(self, **kwargs: object) -> tuple[int, int]:
        """Open and confirm a direct-tcpip channel: (client id, server id)."""
        cid = self.client.open_channel(DIRECT_TCPIP, "example.com", 80, "127.0.0.1", 40000)
        self.transfer()
        [request] = events(self.server)
        assert isinstance(request, ChannelOpenRequest)
        self.server.accept_open(request.channel_id)
        self.transfer()
        assert events(self.client) == [ChannelOpenConfirmed(channel_id=cid)]
        return cid, request.channel_id


def pair(**server_kwargs: object) -> Pair:
    return Pair(Connection(Role.CLIENT), Connection(Role.SERVER, **server_kwargs))  # type: ignore[arg-type]


def open_payload(
    kind: str = DIRECT_TCPIP,
    sender: int = 7,
    window: int = 1 << 20,
    max_packet: int = 1 << 15,
    host: str = "example.com",
    port: int = 80,
) -> bytes:
    return message(
        Msg.CHANNEL_OPEN,
        string(kind),
        uint32(sender),
        uint32(window),
        uint32(max_packet),
        string(host),
        uint32(port),
        string("127.0.0.1"),
        uint32(5555),
    )


def data_payload(channel: int, data: bytes) -> bytes:
    return message(Msg.CHANNEL_DATA, uint32(channel), string(data))


def server_with_channel(sender: int = 7, **kwargs: object) -> tuple[Connection, int]:
    """A server with one confirmed channel opened by a (fake) peer with id ``sender``."""
    conn = Connection(Role.SERVER, **kwargs)  # type: ignore[arg-type]
    conn.receive_payload(open_payload(sender=sender))
    [request] = events(conn)
    assert isinstance(request, ChannelOpenRequest)
    conn.accept_open(request.channel_id)
    conn.payloads_to_send()
    return conn, request.channel_id


def parse_open_failure(payload: bytes) -> tuple[int, int, str]:
    r = Reader(payload)
    assert r.byte() == Msg.CHANNEL_OPEN_FAILURE
    recipient, code, description = r.uint32(), r.uint32(), r.text()
    r.string()
    r.end()
    return recipient, code, description


# --- opening -------------------------------------------------------------------------


def test_direct_tcpip_open_carries_the_destination_and_origin() -> None:
    p = pair()
    cid = p.client.open_channel(DIRECT_TCPIP, "db.internal", 5432, "10.0.0.9", 51000)
    p.transfer()
    assert events(p.server) == [
        ChannelOpenRequest(
            channel_id=0,
            kind=DIRECT_TCPIP,
            host="db.internal",
            port=5432,
            origin_host="10.0.0.9",
            origin_port=51000,
            peer_window=2 * 1024 * 1024,
            peer_max_packet=256 * 1024,
        )
    ]
    assert p.client.channel_state(cid) is ChannelState.OPENING
    assert p.server.channel_state(0) is ChannelState.PENDING


def test_open_may_be_confirmed_later_and_out_of_order() -> None:
    p = pair()
    first = p.client.open_channel(DIRECT_TCPIP, "slow.example", 80, "127.0.0.1", 1)
    second = p.client.open_channel(DIRECT_TCPIP, "fast.example", 80, "127.0.0.1", 2)
    p.transfer()
    slow, fast = events(p.server)
    assert isinstance(slow, ChannelOpenRequest) and isinstance(fast, ChannelOpenRequest)
    p.server.accept_open(fast.channel_id)
    p.transfer()
    assert events(p.client) == [ChannelOpenConfirmed(channel_id=second)]
    assert p.client.send_data(second, b"ping") == 4  # the fast one works meanwhile
    p.transfer()
    assert events(p.server) == [ChannelData(channel_id=fast.channel_id, data=b"ping")]
    p.server.reject_open(slow.channel_id, OpenFailure.CONNECT_FAILED, "connect timed out")
    p.transfer()
    assert events(p.client) == [
        ChannelOpenFailed(channel_id=first, code=2, description="connect timed out")
    ]
    assert p.client.channel_state(first) is None and p.server.channel_state(slow.channel_id) is None
    assert p.client.channel_count == p.server.channel_count == 1


def test_forwarded_tcpip_is_a_channel_open_request_on_the_client() -> None:
    p = pair()
    sid = p.server.open_channel(FORWARDED_TCPIP, "0.0.0.0", 8080, "203.0.113.5", 61000)
    p.transfer()
    [request] = events(p.client)
    assert request == ChannelOpenRequest(
        channel_id=0,
        kind=FORWARDED_TCPIP,
        host="0.0.0.0",
        port=8080,
        origin_host="203.0.113.5",
        origin_port=61000,
        peer_window=2 * 1024 * 1024,
        peer_max_packet=256 * 1024,
    )
    p.client.accept_open(request.channel_id)
    p.transfer()
    assert events(p.server) == [ChannelOpenConfirmed(channel_id=sid)]


@pytest.mark.parametrize(
    ("role", "kind", "code"),
    [
        (Role.SERVER, "session", OpenFailure.ADMINISTRATIVELY_PROHIBITED),
        (Role.SERVER, "x11", OpenFailure.ADMINISTRATIVELY_PROHIBITED),
        (Role.SERVER, "auth-agent@openssh.com", OpenFailure.ADMINISTRATIVELY_PROHIBITED),
        (Role.SERVER, "direct-streamlocal@openssh.com", OpenFailure.ADMINISTRATIVELY_PROHIBITED),
        (Role.SERVER, "tun@openssh.com", OpenFailure.ADMINISTRATIVELY_PROHIBITED),
        (Role.SERVER, FORWARDED_TCPIP, OpenFailure.ADMINISTRATIVELY_PROHIBITED),
        (Role.CLIENT, DIRECT_TCPIP, OpenFailure.ADMINISTRATIVELY_PROHIBITED),
        (Role.CLIENT, "session", OpenFailure.ADMINISTRATIVELY_PROHIBITED),
        (Role.SERVER, "made-up@example.com", OpenFailure.UNKNOWN_CHANNEL_TYPE),
        (Role.CLIENT, "", OpenFailure.UNKNOWN_CHANNEL_TYPE),
    ],
)
def test_other_channel_types_are_refused(role: Role, kind: str, code: OpenFailure) -> None:
    conn = Connection(role)
    conn.receive_payload(
        message(Msg.CHANNEL_OPEN, string(kind), uint32(9), uint32(1 << 20), uint32(1 << 15), b"?")
    )
    [payload] = conn.payloads_to_send()
    recipient, got_code, description = parse_open_failure(payload)
    assert (recipient, got_code) == (9, code)
    assert description
    assert events(conn) == [ChannelOpenRefused(kind=kind, code=code, description=description)]
    assert conn.channel_count == 0


def test_session_channels_are_refused_with_a_clear_description() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_payload(
        message(Msg.CHANNEL_OPEN, string("session"), uint32(0), uint32(1 << 20), uint32(1 << 15))
    )
    _, _, description = parse_open_failure(conn.payloads_to_send()[0])
    assert "session" in description and "TCP tunnels only" in description


def test_pending_opens_are_bounded() -> None:
    conn = Connection(Role.SERVER, max_pending_opens=2)
    for sender in range(3):
        conn.receive_payload(open_payload(sender=sender))
    got = events(conn)
    assert [type(e) for e in got] == [ChannelOpenRequest, ChannelOpenRequest, ChannelOpenRefused]
    [payload] = conn.payloads_to_send()
    assert parse_open_failure(payload)[:2] == (2, OpenFailure.RESOURCE_SHORTAGE)
    first = got[0]
    assert isinstance(first, ChannelOpenRequest)
    conn.accept_open(first.channel_id)  # no longer pending: room for one more
    conn.receive_payload(open_payload(sender=3))
    assert isinstance(events(conn)[0], ChannelOpenRequest)


def test_channels_per_connection_are_bounded() -> None:
    conn = Connection(Role.SERVER, max_channels=2)
    for sender in range(3):
        conn.receive_payload(open_payload(sender=sender))
    assert [type(e) for e in events(conn)][-1] is ChannelOpenRefused
    assert parse_open_failure(conn.payloads_to_send()[-1])[1] == OpenFailure.RESOURCE_SHORTAGE
    assert conn.channel_count == 2


def test_our_own_opens_are_bounded() -> None:
    client = Connection(Role.CLIENT, max_pending_opens=2, max_channels=3)
    for _ in range(2):
        client.open_channel(DIRECT_TCPIP, "h", 1, "o", 2)
    with pytest.raises(LocalProtocolError, match="max_pending_opens"):
        client.open_channel(DIRECT_TCPIP, "h", 1, "o", 2)
    client.receive_payload(
        message(
            Msg.CHANNEL_OPEN_CONFIRMATION, uint32(0), uint32(50), uint32(1 << 20), uint32(1 << 15)
        )
    )
    client.open_channel(DIRECT_TCPIP, "h", 1, "o", 2)
    with pytest.raises(LocalProtocolError, match="max_channels"):
        client.open_channel(DIRECT_TCPIP, "h", 1, "o", 2)
    assert client.state is ConnectionState.OPEN


def test_open_role_and_argument_checks() -> None:
    with pytest.raises(LocalProtocolError):
        Connection(Role.CLIENT).open_channel(FORWARDED_TCPIP, "h", 1, "o", 2)
    with pytest.raises(LocalProtocolError):
        Connection(Role.SERVER).open_channel(DIRECT_TCPIP, "h", 1, "o", 2)
    with pytest.raises(LocalProtocolError):
        Connection(Role.CLIENT).open_channel(DIRECT_TCPIP, "h", 65536, "o", 2)
    for bad in (
        {"window": 0},
        {"max_packet": MIN_PEER_MAX_PACKET - 1},
        {"max_channels": 0},
        {"max_pending_global": 0},
    ):
        with pytest.raises(LocalProtocolError):
            Connection(Role.CLIENT, **bad)  # type: ignore[arg-type]


def test_peer_max_packet_below_the_floor_is_a_protocol_error() -> None:
    conn = Connection(Role.SERVER)
    with pytest.raises(RemoteProtocolError, match="maximum packet"):
        conn.receive_payload(open_payload(max_packet=MIN_PEER_MAX_PACKET - 1))


def test_open_with_port_out_of_range_is_refused() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_payload(open_payload(port=70000))
    assert isinstance(events(conn)[0], ChannelOpenRefused)
    assert conn.state is ConnectionState.OPEN


def test_peer_may_not_reuse_a_live_channel_id() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_payload(open_payload(sender=5))
    with pytest.raises(RemoteProtocolError, match="reuses"):
        conn.receive_payload(open_payload(sender=5))
    assert conn.state is ConnectionState.ERROR


# --- windows and data -----------------------------------------------------------------


def small_channel() -> tuple[Connection, int]:
    """A server with one confirmed channel whose peer gave a 2500-byte window
    and a 1000-byte maximum packet."""
    conn = Connection(Role.SERVER)
    conn.receive_payload(open_payload(sender=3, window=2500, max_packet=1000))
    [request] = events(conn)
    assert isinstance(request, ChannelOpenRequest)
    conn.accept_open(request.channel_id)
    conn.payloads_to_send()
    return conn, request.channel_id


def test_send_never_exceeds_the_peers_window_or_max_packet() -> None:
    conn, cid = small_channel()
    assert conn.send_window(cid) == 2500
    assert conn.send_data(cid, bytes(3000)) == 2500
    sizes = [len(Reader(p, 5).string()) for p in conn.payloads_to_send()]
    assert sizes == [1000, 1000, 500]
    assert conn.send_data(cid, b"more") == 0
    assert conn.payloads_to_send() == []
    conn.receive_payload(message(Msg.CHANNEL_WINDOW_ADJUST, uint32(cid), uint32(10)))
    assert events(conn) == [WindowAdjusted(channel_id=cid)]
    assert conn.send_data(cid, memoryview(b"0123456789abc")) == 10
    [payload] = conn.payloads_to_send()
    assert payload == message(Msg.CHANNEL_DATA, uint32(3), string(b"0123456789"))


def test_window_adjusted_only_after_a_short_send() -> None:
    conn, cid = server_with_channel()
    conn.receive_payload(message(Msg.CHANNEL_WINDOW_ADJUST, uint32(cid), uint32(10)))
    assert events(conn) == []  # nobody was waiting


def test_max_send_packet_caps_our_chunks() -> None:
    conn, cid = server_with_channel(max_send_packet=4096)
    conn.send_data(cid, bytes(10000))
    assert [len(p) - 9 for p in conn.payloads_to_send()] == [4096, 4096, 1808]


def test_slow_reader_slows_the_sender() -> None:
    """Backpressure: the window re-opens only for consumed bytes, at half a window."""
    p = pair(window=1000)
    cid, sid = p.open()
    assert p.client.send_data(cid, bytes(1500)) == 1000
    p.transfer()
    [data] = events(p.server)
    assert isinstance(data, ChannelData) and len(data.data) == 1000
    p.server.consume(sid, 499)
    p.transfer()
    assert p.client.send_window(cid) == 0  # 499 < half: no WINDOW_ADJUST yet
    p.server.consume(sid, 1)
    p.transfer()
    assert events(p.client) == [WindowAdjusted(channel_id=cid)]
    assert p.client.send_window(cid) == 500
    with pytest.raises(LocalProtocolError):
        p.server.consume(sid, 501)  # only 500 are undelivered


def _adjusts(conn: Connection) -> list[int]:
    """The byte counts of the WINDOW_ADJUSTs ``conn`` queued."""
    out = []
    for payload in conn.payloads_to_send():
        assert payload[0] == Msg.CHANNEL_WINDOW_ADJUST
        out.append(int.from_bytes(payload[5:9], "big"))
    return out


def test_window_autotunes_while_the_reader_keeps_up() -> None:
    """A reader that delivers everything at once doubles the window at each
    re-opening, up to max_window, and no further."""
    conn, cid = server_with_channel(window=1000, max_window=8000)
    grants = []
    for _ in range(12):
        conn.receive_payload(data_payload(cid, bytes(500)))
        events(conn)
        conn.consume(cid, 500)
        grants += _adjusts(conn)
    # 1000 -> 2000 -> 4000 -> 8000: each doubling grants the consumed bytes
    # plus the growth; once at 8000, re-openings come at half of it (4000).
    assert grants == [500 + 1000, 1000 + 2000, 2000 + 4000]
    # 2500 consumed since the last re-opening; 1500 more make half of 8000.
    conn.receive_payload(data_payload(cid, bytes(1500)))
    events(conn)
    conn.consume(cid, 1500)
    assert _adjusts(conn) == [4000]  # 8000 is the cap: no growth
    # The peer may now have 8000 bytes in flight and not one more.
    conn.receive_payload(data_payload(cid, bytes(8000)))
    with pytest.raises(RemoteProtocolError, match="overrun"):
        conn.receive_payload(data_payload(cid, b"x"))


def test_window_does_not_grow_while_the_reader_lags() -> None:
    """Re-opening with more than a quarter of the window undelivered keeps its size."""
    conn, cid = server_with_channel(window=1000, max_window=8000)
    conn.receive_payload(data_payload(cid, bytes(1000)))
    events(conn)
    conn.consume(cid, 500)  # 500 undelivered > 1000 / 4
    assert _adjusts(conn) == [500]
    conn.receive_payload(data_payload(cid, bytes(500)))
    with pytest.raises(RemoteProtocolError, match="overrun"):
        conn.receive_payload(data_payload(cid, b"x"))


def test_window_growth_shares_one_budget_and_returns_it_on_close() -> None:
    conn = Connection(Role.SERVER, window=1000, max_window=8000, growth_budget=1500)
    cids = []
    for sender in (7, 8):
        conn.receive_payload(open_payload(sender=sender))
        [request] = events(conn)
        assert isinstance(request, ChannelOpenRequest)
        conn.accept_open(request.channel_id)
        cids.append(request.channel_id)
    conn.payloads_to_send()

    def read(cid: int, n: int) -> list[int]:
        conn.receive_payload(data_payload(cid, bytes(n)))
        events(conn)
        conn.consume(cid, n)
        return _adjusts(conn)

    assert read(cids[0], 500) == [500 + 1000]  # first channel: 1000 of the 1500
    assert read(cids[1], 500) == [500 + 500]  # second: the 500 left
    assert read(cids[1], 750) == [750]  # budget spent: re-opened, not grown
    conn.close(cids[0])
    conn.receive_payload(message(Msg.CHANNEL_CLOSE, uint32(cids[0])))
    events(conn)
    conn.payloads_to_send()
    assert read(cids[1], 750) == [750 + 1000]  # the closed channel's growth came back


def test_max_window_below_window_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="max_window"):
        Connection(Role.SERVER, window=1000, max_window=999)
    with pytest.raises(LocalProtocolError, match="growth_budget"):
        Connection(Role.SERVER, growth_budget=-1)


def test_window_overrun_is_a_protocol_error() -> None:
    conn, cid = server_with_channel(window=1000)
    conn.receive_payload(data_payload(cid, bytes(600)))
    with pytest.raises(RemoteProtocolError, match="overrun"):
        conn.receive_payload(data_payload(cid, bytes(401)))
    assert conn.state is ConnectionState.ERROR
    with pytest.raises(RemoteProtocolError):
        conn.receive_payload(data_payload(cid, b"x"))
    with pytest.raises(LocalProtocolError):
        conn.send_data(cid, b"x")


def test_buffered_bytes_per_channel_are_bounded_by_the_window() -> None:
    conn, cid = server_with_channel(window=4096)
    for _ in range(4):
        conn.receive_payload(data_payload(cid, bytes(1024)))
    assert sum(len(e.data) for e in events(conn) if isinstance(e, ChannelData)) == 4096
    assert conn.payloads_to_send() == []  # nothing consumed: the window stays shut
    with pytest.raises(RemoteProtocolError, match="overrun"):
        conn.receive_payload(data_payload(cid, b"x"))


def test_data_larger_than_our_max_packet_is_a_protocol_error() -> None:
    conn, cid = server_with_channel(max_packet=1024)
    conn.receive_payload(data_payload(cid, bytes(1024)))
    with pytest.raises(RemoteProtocolError, match="maximum packet"):
        conn.receive_payload(data_payload(cid, bytes(1025)))


def test_only_data_bytes_count_against_the_window() -> None:
    p = pair()
    cid, sid = p.open()
    before = p.client.send_window(cid)
    p.server.send_eof(sid)
    p.transfer()
    assert events(p.client) == [ChannelEOF(channel_id=cid)]
    assert p.client.send_window(cid) == before
    p.client.send_data(cid, b"abc")
    assert p.client.send_window(cid) == before - 3


def test_extended_data_counts_against_the_window_and_is_dropped() -> None:
    conn, cid = server_with_channel(window=1000)
    ext = message(Msg.CHANNEL_EXTENDED_DATA, uint32(cid), uint32(1), string(bytes(600)))
    conn.receive_payload(ext)
    assert events(conn) == []
    # Counted as delivered at once, so the window re-opened past half.
    assert conn.payloads_to_send() == [message(Msg.CHANNEL_WINDOW_ADJUST, uint32(7), uint32(600))]
    conn.receive_payload(data_payload(cid, bytes(1000)))
    with pytest.raises(RemoteProtocolError, match="overrun"):
        conn.receive_payload(
            message(Msg.CHANNEL_EXTENDED_DATA, uint32(cid), uint32(1), string(b"x"))
        )


def test_empty_data_is_accepted_and_not_an_event() -> None:
    conn, cid = server_with_channel()
    conn.receive_payload(data_payload(cid, b""))
    assert events(conn) == []


def test_window_adjust_beyond_2_32_is_a_protocol_error() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_payload(open_payload(window=0xFFFFFFF0))
    [request] = events(conn)
    assert isinstance(request, ChannelOpenRequest)
    conn.accept_open(request.channel_id)
    conn.receive_payload(message(Msg.CHANNEL_WINDOW_ADJUST, uint32(0), uint32(15)))
    with pytest.raises(RemoteProtocolError, match="overflows"):
        conn.receive_payload(message(Msg.CHANNEL_WINDOW_ADJUST, uint32(0), uint32(1)))


# --- EOF and CLOSE ---------------------------------------------------------------------


def test_eof_is_a_half_close() -> None:
    p = pair()
    cid, sid = p.open()
    p.client.send_eof(cid)
    p.transfer()
    assert events(p.server) == [ChannelEOF(channel_id=sid)]
    assert p.server.send_data(sid, b"reply") == 5  # the other way still flows
    p.transfer()
    assert events(p.client) == [ChannelData(channel_id=cid, data=b"reply")]
    with pytest.raises(LocalProtocolError):
        p.client.send_data(cid, b"after eof")
    with pytest.raises(LocalProtocolError):
        p.client.send_eof(cid)
    # Data from the peer after its EOF is a protocol error.
    with pytest.raises(RemoteProtocolError):
        p.server.receive_payload(data_payload(sid, b"late"))


def test_close_is_answered_with_close_and_ids_are_freed_after_both() -> None:
    p = pair()
    cid, sid = p.open()
    p.client.close(cid)
    assert p.client.channel_state(cid) is ChannelState.CLOSE_SENT
    [close] = p.client.payloads_to_send()
    assert close == message(Msg.CHANNEL_CLOSE, uint32(sid))
    p.server.receive_payload(close)
    # The server answered at once, and has now seen and sent CLOSE: its id is free.
    assert p.server.payloads_to_send() == [message(Msg.CHANNEL_CLOSE, uint32(cid))]
    assert p.server.channel_state(sid) is None
    assert events(p.server) == [ChannelClosed(channel_id=sid)]
    assert p.client.channel_state(cid) is ChannelState.CLOSE_SENT  # still waiting
    p.client.receive_payload(message(Msg.CHANNEL_CLOSE, uint32(cid)))
    assert p.client.channel_state(cid) is None
    assert events(p.client) == [ChannelClosed(channel_id=cid)]
    p.transfer()
    assert p.client.channel_count == p.server.channel_count == 0


def test_close_is_idempotent_until_freed_and_then_unknown() -> None:
    p = pair()
    cid, _ = p.open()
    p.client.close(cid)
    p.client.close(cid)
    assert len(p.client.payloads_to_send()) == 1
    p.client.receive_payload(message(Msg.CHANNEL_CLOSE, uint32(cid)))
    with pytest.raises(LocalProtocolError, match="does not exist"):
        p.client.close(cid)
    p.client.consume(cid, 0)  # a late consume of a gone channel is harmless


def test_data_after_our_close_is_dropped_but_counted() -> None:
    conn, cid = server_with_channel(window=1000)
    conn.close(cid)
    conn.payloads_to_send()
    conn.receive_payload(data_payload(cid, bytes(700)))
    conn.receive_payload(message(Msg.CHANNEL_EOF, uint32(cid)))
    assert events(conn) == []
    with pytest.raises(RemoteProtocolError, match="overrun"):
        conn.receive_payload(data_payload(cid, bytes(301)))


def test_requests_after_our_close_get_no_reply() -> None:
    conn, cid = server_with_channel()
    conn.close(cid)
    conn.payloads_to_send()
    conn.receive_payload(message(Msg.CHANNEL_REQUEST, uint32(cid), string("x"), boolean(True)))
    assert conn.payloads_to_send() == []


def test_close_while_opening_sends_close_on_confirmation() -> None:
    p = pair()
    cid = p.client.open_channel(DIRECT_TCPIP, "h", 1, "o", 2)
    p.transfer()
    [request] = events(p.server)
    assert isinstance(request, ChannelOpenRequest)
    p.client.close(cid)
    assert p.client.payloads_to_send() == []
    assert p.client.channel_state(cid) is ChannelState.OPENING_CANCELLED
    p.server.accept_open(request.channel_id)
    p.transfer()
    assert events(p.client) == [ChannelClosed(channel_id=cid)]
    assert events(p.server) == [ChannelClosed(channel_id=request.channel_id)]
    assert p.client.channel_count == p.server.channel_count == 0


def test_close_while_opening_then_refused() -> None:
    p = pair()
    cid = p.client.open_channel(DIRECT_TCPIP, "h", 1, "o", 2)
    p.transfer()
    [request] = events(p.server)
    assert isinstance(request, ChannelOpenRequest)
    p.client.close(cid)
    p.server.reject_open(request.channel_id, OpenFailure.CONNECT_FAILED, "refused")
    p.transfer()
    assert events(p.client) == [ChannelOpenFailed(channel_id=cid, code=2, description="refused")]
    assert p.client.channel_count == 0


def test_pending_open_cannot_be_closed_only_rejected() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_payload(open_payload())
    with pytest.raises(LocalProtocolError):
        conn.close(0)
    assert conn.channel_state(0) is ChannelState.PENDING


def test_ids_are_not_reused_at_once() -> None:
    p = pair()
    cid, _ = p.open()
    p.client.close(cid)
    p.transfer()
    events(p.client), events(p.server)
    again, _ = p.open()
    assert again != cid


# --- channel requests ------------------------------------------------------------------


def test_channel_requests_are_refused_if_want_reply() -> None:
    conn, cid = server_with_channel()
    conn.receive_payload(
        message(Msg.CHANNEL_REQUEST, uint32(cid), string("pty-req"), boolean(True), b"junk")
    )
    assert conn.payloads_to_send() == [message(Msg.CHANNEL_FAILURE, uint32(7))]
    conn.receive_payload(
        message(Msg.CHANNEL_REQUEST, uint32(cid), string("eow@openssh.com"), boolean(False))
    )
    assert conn.payloads_to_send() == []
    assert events(conn) == []


@pytest.mark.parametrize("number", [Msg.CHANNEL_SUCCESS, Msg.CHANNEL_FAILURE])
def test_channel_replies_are_errors_since_we_send_no_requests(number: int) -> None:
    conn, cid = server_with_channel()
    with pytest.raises(RemoteProtocolError, match="never send channel requests"):
        conn.receive_payload(message(number, uint32(cid)))


@pytest.mark.parametrize(
    "payload",
    [
        data_payload(99, b"x"),
        message(Msg.CHANNEL_EXTENDED_DATA, uint32(99), uint32(1), string(b"x")),
        message(Msg.CHANNEL_WINDOW_ADJUST, uint32(99), uint32(1)),
        message(Msg.CHANNEL_EOF, uint32(99)),
        message(Msg.CHANNEL_CLOSE, uint32(99)),
        message(Msg.CHANNEL_REQUEST, uint32(99), string("x"), boolean(False)),
        message(Msg.CHANNEL_OPEN_CONFIRMATION, uint32(99), uint32(1), uint32(1), uint32(1 << 15)),
        message(Msg.CHANNEL_OPEN_FAILURE, uint32(99), uint32(1), string(""), string("")),
    ],
    ids=lambda p: Msg(p[0]).name,
)
def test_unknown_channel_ids_are_protocol_errors(payload: bytes) -> None:
    conn, _ = server_with_channel()
    with pytest.raises(RemoteProtocolError, match="unknown channel 99"):
        conn.receive_payload(payload)
    assert conn.state is ConnectionState.ERROR


# --- global requests -------------------------------------------------------------------


def forward_payload(
    address: str, port: int, want_reply: bool = True, cancel: bool = False
) -> bytes:
    name = "cancel-tcpip-forward" if cancel else "tcpip-forward"
    return message(
        Msg.GLOBAL_REQUEST, string(name), boolean(want_reply), string(address), uint32(port)
    )


def keepalive_payload(want_reply: bool = True) -> bytes:
    return message(Msg.GLOBAL_REQUEST, string("keepalive@openssh.com"), boolean(want_reply))


SUCCESS = message(Msg.REQUEST_SUCCESS)
FAILURE = message(Msg.REQUEST_FAILURE)


def test_tcpip_forward_port_0_replies_with_the_bound_port() -> None:
    p = pair()
    rid = p.client.request_forward("localhost", 0)
    p.transfer()
    [request] = events(p.server)
    assert request == ForwardRequest(request_id=0, address="localhost", port=0, want_reply=True)
    with pytest.raises(LocalProtocolError, match="bound_port"):
        p.server.reply_global(request.request_id, True)
    p.server.reply_global(request.request_id, True, 43210)
    assert p.server.payloads_to_send() == [message(Msg.REQUEST_SUCCESS, uint32(43210))]
    p.server.receive_payload(forward_payload("localhost", 8080))
    [again] = events(p.server)
    assert isinstance(again, ForwardRequest)
    p.server.reply_global(again.request_id, True)
    assert p.server.payloads_to_send() == [SUCCESS]  # a named port is not repeated
    assert p.server.live_forwards() == {("localhost", 43210), ("localhost", 8080)}
    p.client.receive_payload(message(Msg.REQUEST_SUCCESS, uint32(43210)))
    assert events(p.client) == [GlobalReply(request_id=rid, success=True, bound_port=43210)]


def test_global_replies_go_out_in_the_order_requests_came() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_payload(forward_payload("a", 1))
    conn.receive_payload(keepalive_payload())
    conn.receive_payload(forward_payload("b", 2))
    conn.receive_payload(message(Msg.GLOBAL_REQUEST, string("no-reply@example"), boolean(False)))
    conn.receive_payload(message(Msg.GLOBAL_REQUEST, string("unknown@example"), boolean(True)))
    first, second = events(conn)
    assert isinstance(first, ForwardRequest) and isinstance(second, ForwardRequest)
    assert conn.payloads_to_send() == []  # the keepalive's answer waits behind "a"
    conn.reply_global(second.request_id, False)
    assert conn.payloads_to_send() == []  # "b" waits behind "a" too
    conn.reply_global(first.request_id, True)
    assert conn.payloads_to_send() == [SUCCESS, FAILURE, FAILURE, FAILURE]


def test_keepalive_is_answered_with_failure_and_proves_liveness() -> None:
    p = pair()
    for side, other in ((p.client, p.server), (p.server, p.client)):
        rid = side.send_keepalive()
        p.transfer()
        assert events(other) == []
        assert events(side) == [GlobalReply(request_id=rid, success=False, bound_port=None)]


def test_keepalive_without_want_reply_gets_no_answer() -> None:
    conn = Connection(Role.CLIENT)
    conn.receive_payload(keepalive_payload(want_reply=False))
    assert conn.payloads_to_send() == [] and events(conn) == []


def test_cancel_must_match_a_live_forward() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_payload(forward_payload("localhost", 8080, cancel=True))
    assert conn.payloads_to_send() == [FAILURE] and events(conn) == []
    conn.receive_payload(forward_payload("localhost", 8080))
    [fwd] = events(conn)
    assert isinstance(fwd, ForwardRequest)
    conn.reply_global(fwd.request_id, True)
    conn.receive_payload(forward_payload("localhost", 8080, cancel=True))
    [cancel] = events(conn)
    assert cancel == CancelForwardRequest(
        request_id=cancel.request_id, address="localhost", port=8080, want_reply=True
    )
    conn.reply_global(cancel.request_id, True)
    assert conn.payloads_to_send() == [SUCCESS, SUCCESS]
    assert conn.live_forwards() == frozenset()
    conn.receive_payload(forward_payload("localhost", 8080, cancel=True))
    assert conn.payloads_to_send() == [FAILURE]


def test_forward_without_want_reply_is_still_answered_locally() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_payload(forward_payload("", 9000, want_reply=False))
    [fwd] = events(conn)
    assert isinstance(fwd, ForwardRequest) and not fwd.want_reply
    conn.reply_global(fwd.request_id, True)
    assert conn.payloads_to_send() == []
    assert conn.live_forwards() == {("", 9000)}
    with pytest.raises(LocalProtocolError):
        conn.reply_global(fwd.request_id, True)


def test_client_refuses_tcpip_forward_from_a_server() -> None:
    conn = Connection(Role.CLIENT)
    conn.receive_payload(forward_payload("0.0.0.0", 22))
    assert conn.payloads_to_send() == [FAILURE] and events(conn) == []


def test_forward_port_out_of_range_is_refused() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_payload(forward_payload("", 65536))
    assert conn.payloads_to_send() == [FAILURE] and events(conn) == []


def test_incoming_global_requests_are_bounded() -> None:
    conn = Connection(Role.SERVER, max_pending_global=2)
    conn.receive_payload(forward_payload("a", 1))
    conn.receive_payload(forward_payload("b", 2))
    with pytest.raises(RemoteProtocolError, match="await replies"):
        conn.receive_payload(keepalive_payload())


def test_our_global_requests_are_bounded_and_matched_fifo() -> None:
    client = Connection(Role.CLIENT, max_pending_global=3)
    a = client.request_forward("", 0)
    b = client.send_keepalive()
    c = client.cancel_forward("", 8080)
    with pytest.raises(LocalProtocolError, match="max_pending_global"):
        client.send_keepalive()
    client.receive_payload(message(Msg.REQUEST_SUCCESS, uint32(5000)))
    client.receive_payload(FAILURE)
    client.receive_payload(SUCCESS)
    assert events(client) == [
        GlobalReply(request_id=a, success=True, bound_port=5000),
        GlobalReply(request_id=b, success=False, bound_port=None),
        GlobalReply(request_id=c, success=True, bound_port=None),
    ]
    with pytest.raises(RemoteProtocolError, match="no request is outstanding"):
        client.receive_payload(SUCCESS)


def test_bad_bound_port_from_server_is_a_protocol_error() -> None:
    client = Connection(Role.CLIENT)
    client.request_forward("", 0)
    with pytest.raises(RemoteProtocolError):
        client.receive_payload(message(Msg.REQUEST_SUCCESS, uint32(0)))


def test_global_request_role_checks() -> None:
    server = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError):
        server.request_forward("", 1)
    with pytest.raises(LocalProtocolError):
        server.cancel_forward("", 1)
    with pytest.raises(LocalProtocolError):
        server.reply_global(12345, True)


# --- every message: truncated, with trailing bytes, unknown numbers ---------------------


def _valid_messages() -> list[tuple[Callable[[], tuple[Connection, int]], bytes]]:
    def fresh() -> tuple[Connection, int]:
        return server_with_channel()

    def opening() -> tuple[Connection, int]:
        client = Connection(Role.CLIENT)
        return client, client.open_channel(DIRECT_TCPIP, "h", 1, "o", 2)

    def forwarding() -> tuple[Connection, int]:
        client = Connection(Role.CLIENT)
        client.send_keepalive()
        return client, 0

    return [
        (fresh, data_payload(0, b"abc")),
        (fresh, message(Msg.CHANNEL_EXTENDED_DATA, uint32(0), uint32(1), string(b"e"))),
        (fresh, message(Msg.CHANNEL_WINDOW_ADJUST, uint32(0), uint32(1))),
        (fresh, message(Msg.CHANNEL_EOF, uint32(0))),
        (fresh, message(Msg.CHANNEL_CLOSE, uint32(0))),
        (fresh, message(Msg.CHANNEL_REQUEST, uint32(0), string("x"), boolean(True))),
        (fresh, open_payload(sender=8)),
        (fresh, forward_payload("a", 1)),
        (
            opening,
            message(Msg.CHANNEL_OPEN_CONFIRMATION, uint32(0), uint32(3), uint32(9), uint32(4096)),
        ),
        (
            opening,
            message(Msg.CHANNEL_OPEN_FAILURE, uint32(0), uint32(2), string("no"), string("")),
        ),
        (forwarding, FAILURE),
    ]


@pytest.mark.parametrize("index", range(len(_valid_messages())))
def test_every_message_whole_truncated_and_with_trailing_bytes(index: int) -> None:
    make, payload = _valid_messages()[index]
    conn, _ = make()
    conn.receive_payload(payload)  # whole: fine
    assert conn.state is ConnectionState.OPEN
    tolerant = payload[0] in (Msg.CHANNEL_REQUEST, Msg.CHANNEL_OPEN_FAILURE)
    for n in range(1, len(payload)):
        conn, _ = make()
        if tolerant and n == len(payload) - 4 and payload[0] == Msg.CHANNEL_OPEN_FAILURE:
            conn.receive_payload(payload[:n])  # the language tag may be left out
            continue
        with pytest.raises(RemoteProtocolError):
            conn.receive_payload(payload[:n])
        assert conn.state is ConnectionState.ERROR
    conn, _ = make()
    if payload[0] == Msg.CHANNEL_REQUEST:
        conn.receive_payload(payload + b"x")  # request-specific data follows
    else:
        with pytest.raises(RemoteProtocolError):
            conn.receive_payload(payload + b"x")


@pytest.mark.parametrize("number", [0, 1, 50, 79, 101, 127, 200, 255])
def test_messages_outside_the_connection_protocol_are_refused(number: int) -> None:
    assert number not in CONNECTION_MESSAGES
    conn = Connection(Role.SERVER)
    with pytest.raises(RemoteProtocolError):
        conn.receive_payload(bytes([number]))
    with pytest.raises(RemoteProtocolError):
        Connection(Role.SERVER).receive_payload(b"")


# --- every (channel state, message) pair ------------------------------------------------

CHANNEL_STATES = [s for s in ChannelState if s is not ChannelState.CLOSED]
RECEIVED = {
    _Ch.RECV_CONFIRM: lambda ch: message(
        Msg.CHANNEL_OPEN_CONFIRMATION, uint32(ch), uint32(77), uint32(1000), uint32(4096)
    ),
    _Ch.RECV_OPEN_FAILURE: lambda ch: message(
        Msg.CHANNEL_OPEN_FAILURE, uint32(ch), uint32(2), string("x"), string("")
    ),
    _Ch.RECV_DATA: lambda ch: data_payload(ch, b"d"),
    _Ch.RECV_WINDOW_ADJUST: lambda ch: message(Msg.CHANNEL_WINDOW_ADJUST, uint32(ch), uint32(5)),
    _Ch.RECV_EOF: lambda ch: message(Msg.CHANNEL_EOF, uint32(ch)),
    _Ch.RECV_CLOSE: lambda ch: message(Msg.CHANNEL_CLOSE, uint32(ch)),
    _Ch.RECV_REQUEST: lambda ch: message(
        Msg.CHANNEL_REQUEST, uint32(ch), string("x"), boolean(True)
    ),
}
EXTENDED = lambda ch: message(  # noqa: E731 - same input as RECV_DATA
    Msg.CHANNEL_EXTENDED_DATA, uint32(ch), uint32(1), string(b"e")
)
LOCAL: dict[_Ch, Callable[[Connection, int], object]] = {
    _Ch.SEND_CONFIRM: lambda c, ch: c.accept_open(ch),
    _Ch.SEND_OPEN_FAILURE: lambda c, ch: c.reject_open(ch, 1, "no"),
    _Ch.SEND_DATA: lambda c, ch: c.send_data(ch, b"x"),
    _Ch.SEND_EOF: lambda c, ch: c.send_eof(ch),
    _Ch.SEND_CLOSE: lambda c, ch: c.close(ch),
}


def channel_in(state: ChannelState) -> tuple[Connection, int]:
    """A client-side Connection with channel 0 in ``state`` (peer id 77)."""
    conn = Connection(Role.CLIENT)
    confirm = RECEIVED[_Ch.RECV_CONFIRM](0)
    if state is ChannelState.PENDING:
        conn.receive_payload(open_payload(kind=FORWARDED_TCPIP, sender=77))
    else:
        conn.open_channel(DIRECT_TCPIP, "h", 1, "o", 2)
    if state is ChannelState.OPENING_CANCELLED:
        conn.close(0)
    elif state not in (ChannelState.OPENING, ChannelState.PENDING):
        conn.receive_payload(confirm)
    if state in (ChannelState.EOF_SENT, ChannelState.EOF_BOTH):
        conn.send_eof(0)
    if state in (ChannelState.EOF_RECEIVED, ChannelState.EOF_BOTH):
        conn.receive_payload(message(Msg.CHANNEL_EOF, uint32(0)))
    if state is ChannelState.CLOSE_SENT:
        conn.close(0)
    assert conn.channel_state(0) is state
    conn.payloads_to_send()
    events(conn)
    return conn, 0


@pytest.mark.parametrize("state", CHANNEL_STATES, ids=lambda s: s.name)
@pytest.mark.parametrize("name", [*RECEIVED, "EXTENDED"], ids=str)
def test_channel_state_received_message_table(state: ChannelState, name: _Ch | str) -> None:
    conn, ch = channel_in(state)
    payload = EXTENDED(ch) if name == "EXTENDED" else RECEIVED[name](ch)  # type: ignore[index]
    event = _Ch.RECV_DATA if name == "EXTENDED" else name
    expected = _CHANNEL_TRANSITIONS.get((state, event))  # type: ignore[arg-type]
    if expected is None:
        with pytest.raises(RemoteProtocolError):
            conn.receive_payload(payload)
        assert conn.state is ConnectionState.ERROR
    else:
        conn.receive_payload(payload)
        got = conn.channel_state(ch)
        assert (got or ChannelState.CLOSED) is expected
        assert conn.state is ConnectionState.OPEN


@pytest.mark.parametrize("state", CHANNEL_STATES, ids=lambda s: s.name)
@pytest.mark.parametrize("event", list(LOCAL), ids=lambda e: e.name)
def test_channel_state_local_call_table(state: ChannelState, event: _Ch) -> None:
    conn, ch = channel_in(state)
    expected = _CHANNEL_TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(LocalProtocolError):
            LOCAL[event](conn, ch)
        assert conn.channel_state(ch) is state  # a refused call changes nothing
    else:
        LOCAL[event](conn, ch)
        assert (conn.channel_state(ch) or ChannelState.CLOSED) is expected
    assert conn.state is ConnectionState.OPEN


# --- hypothesis: random legal traffic through a pair ------------------------------------


class PairMachine(RuleBasedStateMachine):
    """Random opens, data, consumes, EOFs, closes and global requests between two peers.

    Legal calls never raise; every byte sent arrives in order; nothing is
    received beyond a window; ids are freed exactly when both CLOSEs happened.
    """

    def __init__(self) -> None:
        super().__init__()
        self.p = Pair(
            # The client's windows autotune (3000 up to 12000, 15000 of growth
            # shared); the server's stay fixed.
            Connection(
                Role.CLIENT,
                window=3000,
                max_window=12000,
                growth_budget=15000,
                max_packet=1024,
                max_pending_global=4,
            ),
            Connection(Role.SERVER, window=2000, max_packet=512, max_pending_global=4),
        )
        self.sides = {"c": self.p.client, "s": self.p.server}
        self.sent: dict[tuple[str, int], bytearray] = {}
        self.received: dict[tuple[str, int], bytearray] = {}
        self.pending_opens: list[tuple[str, int]] = []
        self.awaiting_global: list[tuple[str, int]] = []
        self.our_globals = {"c": 0, "s": 0}
        self.counter = 0
        self.link: dict[tuple[str, int], tuple[str, int]] = {}
        self.closed: set[tuple[str, int]] = set()

    def drain(self) -> None:
        self.p.transfer()
        for name, conn in self.sides.items():
            for event in events(conn):
                self.handle(name, event)
        self.p.transfer()

    def handle(self, name: str, event: object) -> None:
        if isinstance(event, ChannelOpenRequest):
            self.pending_opens.append((name, event.channel_id))
        elif isinstance(event, ChannelData):
            self.received.setdefault((name, event.channel_id), bytearray()).extend(event.data)
        elif isinstance(event, (ForwardRequest, CancelForwardRequest)):
            self.awaiting_global.append((name, event.request_id))
        elif isinstance(event, GlobalReply):
            self.our_globals[name] -= 1

    def open_channels(self, name: str) -> list[int]:
        conn = self.sides[name]
        return [
            cid for (side, cid) in self.sent if side == name and conn.channel_state(cid) is not None
        ]

    @rule(server_side=st.booleans())
    def open(self, server_side: bool) -> None:
        name = "s" if server_side else "c"
        conn = self.sides[name]
        kind = FORWARDED_TCPIP if server_side else DIRECT_TCPIP
        try:
            cid = conn.open_channel(kind, "h", 1, "o", 2)
        except LocalProtocolError:
            return
        self.sent[(name, cid)] = bytearray()

    @precondition(lambda self: self.pending_opens)
    @rule(accept=st.booleans(), index=st.integers(0, 100))
    def answer_open(self, accept: bool, index: int) -> None:
        name, cid = self.pending_opens.pop(index % len(self.pending_opens))
        conn = self.sides[name]
        if accept:
            conn.accept_open(cid)
            self.sent[(name, cid)] = bytearray()
        else:
            conn.reject_open(cid, OpenFailure.CONNECT_FAILED, "no")
            assert conn.channel_state(cid) is None

    @rule(side=st.sampled_from(["c", "s"]), index=st.integers(0, 100), size=st.integers(0, 5000))
    def send(self, side: str, index: int, size: int) -> None:
        conn = self.sides[side]
        live = [
            cid
            for cid in self.open_channels(side)
            if conn.channel_state(cid) in (ChannelState.OPEN, ChannelState.EOF_RECEIVED)
        ]
        if not live:
            return
        cid = live[index % len(live)]
        data = bytes((self.counter + i) % 251 for i in range(size))
        self.counter += size
        window = conn.send_window(cid)
        taken = conn.send_data(cid, data)
        assert taken == min(size, window)
        self.sent[(side, cid)].extend(data[:taken])
        other = "s" if side == "c" else "c"
        self.link[(side, cid)] = (other, conn._channels[cid].peer_id)

    @rule(side=st.sampled_from(["c", "s"]), fraction=st.floats(0, 1))
    def consume(self, side: str, fraction: float) -> None:
        conn = self.sides[side]
        for cid in list(conn._channels):
            ch = conn._channels[cid]
            conn.consume(cid, int(ch.unconsumed * fraction))

    @rule(side=st.sampled_from(["c", "s"]), index=st.integers(0, 100), eof=st.booleans())
    def finish(self, side: str, index: int, eof: bool) -> None:
        conn = self.sides[side]
        live = self.open_channels(side)
        if not live:
            return
        cid = live[index % len(live)]
        state = conn.channel_state(cid)
        if eof and state in (ChannelState.OPEN, ChannelState.EOF_RECEIVED):
            conn.send_eof(cid)
        elif not eof and state is not ChannelState.PENDING:
            conn.close(cid)
            self.closed.add((side, cid))

    @rule(kind=st.sampled_from(["forward", "cancel", "keepalive", "server-keepalive"]))
    def global_request(self, kind: str) -> None:
        side = "s" if kind == "server-keepalive" else "c"
        conn = self.sides[side]
        try:
            if kind == "forward":
                conn.request_forward("localhost", 0)
            elif kind == "cancel":
                conn.cancel_forward("localhost", 8080)
            else:
                conn.send_keepalive()
        except LocalProtocolError:
            return
        self.our_globals[side] += 1

    @precondition(lambda self: self.awaiting_global)
    @rule(index=st.integers(0, 100), success=st.booleans())
    def answer_global(self, index: int, success: bool) -> None:
        name, rid = self.awaiting_global.pop(index % len(self.awaiting_global))
        request = self.sides[name]._awaiting[rid]
        port = 40000 + rid if success and request.port == 0 else None
        self.sides[name].reply_global(rid, success, port)

    @rule()
    def exchange(self) -> None:
        self.drain()

    @invariant()
    def healthy(self) -> None:
        for conn in self.sides.values():
            assert conn.state is ConnectionState.OPEN
            grown = 0
            for ch in conn._channels.values():
                assert conn._window <= ch.window <= conn._max_window
                assert 0 <= ch.recv_window <= ch.window
                assert ch.peer_window >= 0
                assert ch.unconsumed <= ch.window
                grown += ch.window - conn._window
            # Growth is only lent out: what channels hold plus what is left
            # is the budget, and a channel's growth comes back when it closes.
            if conn is self.p.client:
                assert grown + conn._growth_left == 15000
            else:
                assert grown == 0  # max_window defaults to window: no autotuning

    def teardown(self) -> None:
        self.drain()
        for (side, cid), data in self.sent.items():
            if not data:
                continue
            receiver = self.link[(side, cid)]
            got = bytes(self.received.get(receiver, b""))
            if receiver in self.closed:
                # It closed first: what arrived after its CLOSE was dropped.
                assert bytes(data).startswith(got)
            else:
                assert got == bytes(data)  # every byte, in order, once
        assert self.our_globals == {"c": 0, "s": 0} or self.awaiting_global


PairMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_pair_state_machine = PairMachine.TestCase


def test_arbitrary_payloads_raise_only_remote_protocol_errors() -> None:
    @settings(max_examples=200, deadline=None)
    @given(
        payloads=st.lists(
            st.one_of(
                st.binary(max_size=64),
                st.sampled_from([p for _, p in _valid_messages()]),
                st.builds(
                    lambda n, rest: bytes([n]) + rest,
                    st.sampled_from(sorted(CONNECTION_MESSAGES)),
                    st.binary(max_size=40),
                ),
            ),
            max_size=10,
        ),
        role=st.sampled_from(list(Role)),
    )
    def check(payloads: list[bytes], role: Role) -> None:
        conn = Connection(role, max_pending_global=3, max_pending_opens=2)
        for payload in payloads:
            try:
                conn.receive_payload(payload)
            except RemoteProtocolError:
                assert conn.state is ConnectionState.ERROR
                with pytest.raises(RemoteProtocolError):
                    conn.receive_payload(payload)
                return
            for event in events(conn):
                if isinstance(event, ChannelOpenRequest):
                    conn.accept_open(event.channel_id)
                elif isinstance(event, ForwardRequest):
                    conn.reply_global(event.request_id, True, 1 if event.port == 0 else None)
                elif isinstance(event, CancelForwardRequest):
                    conn.reply_global(event.request_id, False)
                elif isinstance(event, ChannelData):
                    conn.consume(event.channel_id, len(event.data))

    check()


def test_a_late_window_adjust_for_a_freed_channel_is_ignored() -> None:
    """paramiko's Channel.recv() can send WINDOW_ADJUST after its CLOSE (a race between
    its reader and its transport thread); OpenSSH ignores it, and so do we.  Any other
    message for the freed id, and any message for an id never used, stays an error."""
    conn, cid = server_with_channel(sender=7)
    conn.close(cid)
    conn.payloads_to_send()
    conn.receive_payload(message(Msg.CHANNEL_CLOSE, uint32(cid)))  # both closed: freed
    events(conn)
    conn.receive_payload(message(Msg.CHANNEL_WINDOW_ADJUST, uint32(cid), uint32(65536)))
    assert conn.state is ConnectionState.OPEN
    assert events(conn) == []
    assert conn.payloads_to_send() == []
    with pytest.raises(RemoteProtocolError, match=f"unknown channel {cid}"):
        conn.receive_payload(data_payload(cid, b"late data"))
    conn2, _ = server_with_channel()
    with pytest.raises(RemoteProtocolError, match="unknown channel 99"):
        conn2.receive_payload(message(Msg.CHANNEL_WINDOW_ADJUST, uint32(99), uint32(1)))


def test_send_data_into_fills_one_message_within_window_and_packet() -> None:
    """Without a filler the bytes go through a buffer of their own; the
    message is exactly what send_data would send for the same bytes."""
    conn, cid = small_channel()
    rooms: list[int] = []

    def fill(view: memoryview) -> int:
        rooms.append(len(view))
        n = min(len(view), 700)
        view[:n] = b"x" * n
        return n

    assert conn.send_data_into(cid, fill) == 700
    assert conn.payloads_to_send() == [message(Msg.CHANNEL_DATA, uint32(3), string(b"x" * 700))]
    assert rooms == [1000]  # the peer's max packet
    assert conn.send_data_into(cid, fill) == 700
    assert conn.send_data_into(cid, fill) == 700
    assert conn.send_window(cid) == 400
    assert conn.send_data_into(cid, lambda v: (rooms.append(len(v)), 0)[1]) == 0
    assert rooms[-1] == 400  # offered the rest of the window; 0 sends nothing
    assert len(conn.payloads_to_send()) == 2
    assert conn.send_data_into(cid, fill) == 400
    conn.payloads_to_send()
    calls = len(rooms)
    assert conn.send_data_into(cid, fill) == -1  # window closed: fill never called
    assert len(rooms) == calls
    with pytest.raises(LocalProtocolError):
        conn.send_data_into(cid + 1, fill)  # no such channel
