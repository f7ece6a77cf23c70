"""Fuzz the SSH connection layer (both roles): payloads give events or RemoteProtocolError.

Input layout (atheris.FuzzedDataProvider): the first bytes pick the role, the
window and the limits, and whether we open a channel of our own first (so
confirmations for id 0 mean something).  Then, until the input runs out, one
step each: a selector byte either names a ready-made message (an open, data
on channel 0, a forward request...) or a message number followed by fuzzed
bytes, and a second byte decides how the caller answers (accept or refuse
opens and forwards, consume, send data, EOF or close).  ``check()`` holds the
invariant, so tests can feed it hand-made steps: only ``RemoteProtocolError``
escapes the receive path, ERROR is terminal, the caller's legal calls never
raise, and windows are never overrun on either side.
Run: ``python fuzz/fuzz_ssh_connection.py -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from wraith.proto.errors import RemoteProtocolError
    from wraith.proto.ssh.connection import ChannelState, Connection, ConnectionState, Role
    from wraith.proto.ssh.connection_events import (
        DIRECT_TCPIP,
        FORWARDED_TCPIP,
        NEED_DATA,
        CancelForwardRequest,
        ChannelData,
        ChannelOpenRequest,
        ForwardRequest,
        OpenFailure,
    )
    from wraith.proto.ssh.constants import Msg
    from wraith.proto.ssh.wire import boolean, message, string, uint32


def _open(kind: str, sender: int) -> bytes:
    return message(
        Msg.CHANNEL_OPEN,
        string(kind),
        uint32(sender),
        uint32(4096),
        uint32(1024),
        string("example.com"),
        uint32(80),
        string("127.0.0.1"),
        uint32(5555),
    )


def _global(name: str, want_reply: bool, *rest: bytes) -> bytes:
    return message(Msg.GLOBAL_REQUEST, string(name), boolean(want_reply), *rest)


#: Whole messages the fuzzer can pick by index, so it reaches the deep states.
MESSAGES = [
    _open(DIRECT_TCPIP, 1),
    _open(FORWARDED_TCPIP, 2),
    _open("session", 3),
    message(Msg.CHANNEL_OPEN_CONFIRMATION, uint32(0), uint32(9), uint32(4096), uint32(1024)),
    message(Msg.CHANNEL_OPEN_FAILURE, uint32(0), uint32(2), string("no"), string("")),
    message(Msg.CHANNEL_DATA, uint32(0), string(b"hello")),
    message(Msg.CHANNEL_DATA, uint32(1), string(bytes(1000))),
    message(Msg.CHANNEL_EXTENDED_DATA, uint32(0), uint32(1), string(b"err")),
    message(Msg.CHANNEL_WINDOW_ADJUST, uint32(0), uint32(1000)),
    message(Msg.CHANNEL_EOF, uint32(0)),
    message(Msg.CHANNEL_CLOSE, uint32(0)),
    message(Msg.CHANNEL_CLOSE, uint32(1)),
    message(Msg.CHANNEL_REQUEST, uint32(0), string("x"), boolean(True)),
    _global("tcpip-forward", True, string("localhost"), uint32(0)),
    _global("cancel-tcpip-forward", True, string("localhost"), uint32(40000)),
    _global("keepalive@openssh.com", True),
    message(Msg.REQUEST_SUCCESS, uint32(40000)),
    message(Msg.REQUEST_FAILURE),
]
#: Message numbers a fuzzed payload may start with (then fuzzed bytes follow).
NUMBERS = list(range(Msg.GLOBAL_REQUEST, Msg.CHANNEL_FAILURE + 1))
WINDOW = 2048


def check(steps: list[tuple[bytes, int]], *, server: bool, own_open: bool) -> int:
    """Feed ``steps`` (payload, answer bits); returns the number of events seen."""
    role = Role.SERVER if server else Role.CLIENT
    conn = Connection(
        role, window=WINDOW, max_packet=1024, max_pending_opens=3, max_pending_global=3
    )
    if own_open:
        conn.open_channel(FORWARDED_TCPIP if server else DIRECT_TCPIP, "h", 1, "o", 2)
        conn.send_keepalive()
    seen = 0
    for payload, answer in steps:
        try:
            conn.receive_payload(payload)
        except RemoteProtocolError:
            assert conn.state is ConnectionState.ERROR
            try:
                conn.receive_payload(payload)
            except RemoteProtocolError:
                return seen
            raise AssertionError("ERROR is not terminal") from None
        while (event := conn.next_event()) is not NEED_DATA:
            seen += 1
            _answer(conn, event, answer)
        _act(conn, answer)
        for ch in conn._channels.values():
            assert 0 <= ch.recv_window <= WINDOW and ch.peer_window >= 0
        for out in conn.payloads_to_send():
            assert out and out[0] in range(Msg.GLOBAL_REQUEST, Msg.CHANNEL_FAILURE + 1), out
    return seen


def _answer(conn: Connection, event: object, answer: int) -> None:
    if isinstance(event, ChannelOpenRequest):
        if answer & 1:
            conn.accept_open(event.channel_id)
        else:
            conn.reject_open(event.channel_id, OpenFailure.CONNECT_FAILED, "refused")
    elif isinstance(event, ForwardRequest):
        bound = 40000 if event.port == 0 else None
        conn.reply_global(event.request_id, bool(answer & 2), bound if answer & 2 else None)
    elif isinstance(event, CancelForwardRequest):
        conn.reply_global(event.request_id, bool(answer & 2))
    elif isinstance(event, ChannelData) and answer & 4:
        conn.consume(event.channel_id, len(event.data))


def _act(conn: Connection, answer: int) -> None:
    """Make one legal call of ours on the first live channel, as ``answer`` says."""
    if not conn._channels:
        return
    cid = next(iter(conn._channels))
    state = conn.channel_state(cid)
    action = (answer >> 3) & 3
    if action == 1 and state in (ChannelState.OPEN, ChannelState.EOF_RECEIVED):
        window = conn.send_window(cid)
        assert conn.send_data(cid, bytes(3000)) == min(3000, window)
    elif action == 2 and state in (ChannelState.OPEN, ChannelState.EOF_RECEIVED):
        conn.send_eof(cid)
    elif action == 3 and state is not ChannelState.PENDING:
        conn.close(cid)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    server = fdp.ConsumeBool()
    own_open = fdp.ConsumeBool()
    steps: list[tuple[bytes, int]] = []
    while fdp.remaining_bytes() and len(steps) < 32:
        selector = fdp.ConsumeIntInRange(0, len(MESSAGES) + len(NUMBERS))
        answer = fdp.ConsumeIntInRange(0, 255)
        if selector < len(MESSAGES):
            payload = MESSAGES[selector]
        elif selector < len(MESSAGES) + len(NUMBERS):
            body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80))
            payload = bytes([NUMBERS[selector - len(MESSAGES)]]) + body
        else:
            payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80))
        steps.append((payload, answer))
    check(steps, server=server, own_open=own_open)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
