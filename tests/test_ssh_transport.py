"""The SSH transport state machine, with in-memory peers (SSH-NOTES "Version exchange",
"Binary packets", "Key exchange"; RFC 4253).

Two kinds of peer drive the :class:`Transport` under test:

- another :class:`Transport` (``Pair``), for everything both ends do right;
- :class:`Manual`, a client assembled by hand from the kex and cipher pieces,
  for what our Transport would never send: a wrong guess, IGNORE before
  KEXINIT, a payload in the middle of a key exchange, no strict-kex marker.

A few tests reach into ``_reader``/``_writer``/``_emit`` to make a peer
misbehave after the handshake (a forced sequence number, a payload pushed past
the rekey queue); each says so where it does.
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from wraith.proto.errors import LocalProtocolError, RemoteProtocolError
from wraith.proto.ssh import hostkey
from wraith.proto.ssh.cipher import (
    CIPHERS,
    ChaCha20Poly1305,
    PacketCipher,
    PacketReader,
    PacketWriter,
    make_cipher,
)
from wraith.proto.ssh.constants import DisconnectReason, Msg
from wraith.proto.ssh.kex import (
    EXT_INFO_C,
    KEX_METHODS,
    STRICT_C,
    KexInit,
    KexMethod,
    derive_key,
    ecdh_payload,
    exchange_hash,
    negotiate,
    parse_ext_info,
    parse_strings,
)
from wraith.proto.ssh.transport import (
    DEFAULT_CIPHERS,
    DEFAULT_KEX,
    MAX_SEND_PAYLOAD,
    KexPhase,
    Role,
    Transport,
    TransportState,
)
from wraith.proto.ssh.transport_events import (
    NEED_DATA,
    ConnectionClosed,
    DisconnectReceived,
    ExtInfoReceived,
    HostKeyReceived,
    KexComplete,
    PayloadReceived,
    TransportError,
    Unimplemented,
    VersionReceived,
)
from wraith.proto.ssh.wire import Reader, message, string, uint32

HOST_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
SERVICE_REQUEST = message(Msg.SERVICE_REQUEST, string("ssh-userauth"))
Event = object


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def drain(t: Transport) -> list[Event]:
    """Every event ``t`` has now; ConnectionClosed (which repeats forever) ends the list."""
    events: list[Event] = []
    while (event := t.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return events


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


class Pair:
    """A client and a server Transport wired back to back."""

    def __init__(self, client: Transport | None = None, server: Transport | None = None) -> None:
        self.client = client or Transport(Role.CLIENT, rng=seeded(1))
        self.server = server or Transport(Role.SERVER, host_key=HOST_KEY, rng=seeded(2))
        self.cev: list[Event] = []
        self.sev: list[Event] = []

    def transfer(self, src: Transport, dst: Transport, bytewise: bool = False) -> int:
        """Move ``src``'s output to ``dst`` (whole, or one byte at a time) and drain ``dst``."""
        data = src.data_to_send()
        events = self.cev if dst is self.client else self.sev
        chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
        for chunk in chunks:
            if chunk:
                dst.receive_data(chunk)
            events += drain(dst)
        return len(data)

    def pump(self, bytewise: bool = False) -> None:
        """Until neither side has anything left to say."""
        while (
            self.transfer(self.client, self.server, bytewise)
            + self.transfer(self.server, self.client, bytewise)
        ) > 0:
            pass

    def handshake(self, bytewise: bool = False) -> Pair:
        self.pump(bytewise)
        assert self.client.state is TransportState.OPEN, self.cev
        assert self.server.state is TransportState.OPEN, self.sev
        return self

    def payloads(self, side: str) -> list[bytes]:
        events = self.cev if side == "client" else self.sev
        return [e.payload for e in events if isinstance(e, PayloadReceived)]


def open_pair(**kwargs: object) -> Pair:
    client_kw = {k[2:]: v for k, v in kwargs.items() if k.startswith("c_")}
    server_kw = {k[2:]: v for k, v in kwargs.items() if k.startswith("s_")}
    client = Transport(Role.CLIENT, rng=seeded(1), **client_kw)  # type: ignore[arg-type]
    server = Transport(Role.SERVER, host_key=HOST_KEY, rng=seeded(2), **server_kw)  # type: ignore[arg-type]
    return Pair(client, server).handshake()


def clear_packets(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    """Split clear-text output: identification line (if any), payloads up to NEWKEYS, the rest."""
    reader = PacketReader()
    reader.feed(data)
    line = reader.take_line(255) if data.startswith(b"SSH-") else b""
    payloads = []
    while (got := reader.next_packet()) is not None:
        payloads.append(got[0])
        if got[0][0] == Msg.NEWKEYS:
            break  # what follows is encrypted
    return line or b"", payloads, bytes(reader._buf[reader._pos :])


def frame(*payloads: bytes) -> bytes:
    """Clear-text packets, as before the first NEWKEYS."""
    writer = PacketWriter()
    return b"".join(bytes(writer.write(p)) for p in payloads)


def claim_length(t: Transport, length: int) -> bytes:
    """The first four wire bytes of a packet of ``length`` as ``t`` would read them next."""
    raw = struct.pack(">I", length)
    cipher = t._reader.cipher  # reaching in: chacha20-poly1305 encrypts the length
    if isinstance(cipher, ChaCha20Poly1305):
        return cipher._header(t._reader.seq, memoryview(raw))
    return raw


def disconnect_in(data: bytes) -> int:
    """The reason code of the clear-text DISCONNECT at the end of ``data``."""
    _, payloads, _ = clear_packets(data)
    assert payloads[-1][0] == Msg.DISCONNECT, payloads
    return Reader(payloads[-1], 1).uint32()


class Manual:
    """A client put together by hand from kex.py and cipher.py."""

    def __init__(self, version: bytes = b"SSH-2.0-Manual_1.0") -> None:
        self.version = version
        self.writer = PacketWriter(seeded(5))
        self.reader = PacketReader()
        self.out = bytearray(version + b"\r\n")
        self.server_version: bytes | None = None
        self.server_kexinit = b""
        self.init: KexInit | None = None
        self.init_raw = b""
        self.method: KexMethod | None = None
        self.q_c = b""
        self.strict = False
        self.next_in: PacketCipher | None = None
        self.next_out: PacketCipher | None = None
        self.session_id: bytes | None = None
        self.last_reply = b""

    def send(self, payload: bytes) -> None:
        self.out += self.writer.write(payload)

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data

    def send_kexinit(
        self,
        *,
        kex: tuple[str, ...] = ("curve25519-sha256",),
        strict: bool = True,
        ext_info: bool = True,
        follows: bool = False,
        ciphers: tuple[str, ...] = ("aes128-gcm@openssh.com",),
    ) -> None:
        names = kex + ((EXT_INFO_C,) if ext_info else ()) + ((STRICT_C,) if strict else ())
        self.init = KexInit(
            cookie=bytes(16),
            kex_algorithms=names,
            server_host_key_algorithms=("ssh-ed25519",),
            ciphers_c2s=ciphers,
            ciphers_s2c=ciphers,
            macs_c2s=("hmac-sha2-256",),
            macs_s2c=("hmac-sha2-256",),
            compression_c2s=("none",),
            compression_s2c=("none",),
            first_kex_packet_follows=follows,
        )
        self.init_raw = self.init.to_payload()
        self.send(self.init_raw)

    def send_ecdh_init(self, kex: str = "curve25519-sha256", value: bytes | None = None) -> None:
        self.method = KEX_METHODS[kex](seeded(6))
        self.q_c = self.method.client_public()
        self.send(ecdh_payload(Msg.KEX_ECDH_INIT, self.q_c if value is None else value))

    def receive(self, data: bytes) -> list[bytes]:
        self.reader.feed(data)
        if self.server_version is None:
            line = self.reader.take_line(255)
            assert line is not None
            self.server_version = line.rstrip(b"\r\n")
        out = []
        while (got := self.reader.next_packet()) is not None:
            payload = got[0]
            out.append(payload)
            if payload[0] == Msg.KEXINIT:
                self.server_kexinit = payload
            if payload[0] == Msg.KEX_ECDH_REPLY:
                self.last_reply = payload
                self.derive(payload)
            if payload[0] == Msg.NEWKEYS and self.next_in is not None:
                self.reader.set_cipher(self.next_in)
                if self.strict:
                    self.reader.seq = 0
        return out

    def derive(self, reply: bytes) -> None:
        """From the server's message 31: check the signature over H, derive both keys."""
        assert self.method is not None and self.init is not None and self.server_version
        k_s, q_s, signature = parse_strings(reply, 3)
        k = self.method.client_shared(q_s)
        h = exchange_hash(
            v_c=self.version,
            v_s=self.server_version,
            i_c=self.init_raw,
            i_s=self.server_kexinit,
            k_s=k_s,
            q_c=self.q_c,
            q_s=q_s,
            k=k,
        )
        assert hostkey.verify(k_s, signature, h)
        server_init = KexInit.parse(self.server_kexinit)
        if self.session_id is None:
            self.session_id = h
            self.strict = (
                STRICT_C in self.init.kex_algorithms
                and "kex-strict-s-v00@openssh.com" in server_init.kex_algorithms
            )
        algs = negotiate(self.init, server_init)

        def build(name: str, iv_letter: str, key_letter: str):  # type: ignore[no-untyped-def]
            spec = CIPHERS[name]
            assert self.session_id is not None
            key = derive_key(k, h, key_letter, self.session_id, spec.key_len)
            iv = derive_key(k, h, iv_letter, self.session_id, spec.iv_len)
            return make_cipher(name, key, iv)

        self.next_out = build(algs.cipher_c2s, "A", "C")
        self.next_in = build(algs.cipher_s2c, "B", "D")

    def send_newkeys(self) -> None:
        assert self.next_out is not None
        self.send(bytes([Msg.NEWKEYS]))
        self.writer.cipher = self.next_out
        if self.strict:
            self.writer.seq = 0

    def handshake(self, server: Transport, **kexinit: object) -> tuple[list[bytes], list[Event]]:
        """A whole initial exchange against ``server``: (server payloads, server events)."""
        self.send_kexinit(**kexinit)  # type: ignore[arg-type]
        self.send_ecdh_init()
        server.receive_data(self.take())
        events = drain(server)
        payloads = self.receive(server.data_to_send())
        self.send_newkeys()
        server.receive_data(self.take())
        events += drain(server)
        payloads += self.receive(server.data_to_send())
        return payloads, events


def server() -> Transport:
    return Transport(Role.SERVER, host_key=HOST_KEY, rng=seeded(2))


def fails(
    t: Transport, data: bytes, reason: DisconnectReason, match: str | None = None
) -> TransportError:
    """Feed ``data``; it must end ``t`` with ``reason`` and leave the DISCONNECT queued."""
    t.receive_data(data)
    with pytest.raises(TransportError, match=match) as info:
        drain(t)
    assert info.value.reason is reason
    assert t.state is TransportState.ERROR
    return info.value


# == version exchange (RFC 4253 4.2) ===========================================================


def test_version_client_skips_lines_before_the_server_identification() -> None:
    client = Transport(Role.CLIENT)
    client.receive_data(b"Welcome\r\nto the server\n\r\nSSH-2.0-Other_1.0 comment\r\n")
    assert drain(client) == [VersionReceived(version="SSH-2.0-Other_1.0 comment")]
    assert client.peer_version == "SSH-2.0-Other_1.0 comment"


def test_version_server_refuses_other_lines_first() -> None:
    t = server()
    fails(t, b"hello\r\nSSH-2.0-x\r\n", DisconnectReason.PROTOCOL_ERROR, "not an SSH")


@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_version_line_is_at_most_255_bytes_including_crlf(role: Role) -> None:
    line = b"SSH-2.0-" + b"x" * (255 - 2 - 8)
    t = Transport(role, host_key=HOST_KEY)
    t.receive_data(line + b"\r\n")
    assert drain(t) == [VersionReceived(version=line.decode())]
    t = Transport(role, host_key=HOST_KEY)
    t.receive_data(line + b"x\r")  # 255 bytes and no LF yet: refused without waiting
    with pytest.raises(TransportError, match="longer than 255"):
        drain(t)


def test_version_lines_and_total_bytes_are_bounded() -> None:
    junk = b"j" * 253 + b"\r\n"
    client = Transport(Role.CLIENT, max_version_lines=5)
    client.receive_data(junk * 4 + b"SSH-2.0-x\r\n")
    assert kinds(drain(client)) == ["VersionReceived"]
    client = Transport(Role.CLIENT, max_version_lines=5)
    client.receive_data(junk * 5)
    with pytest.raises(TransportError, match="within 5 lines"):
        drain(client)
    # So at most max_version_lines * 255 bytes ever precede the identification.
    client = Transport(Role.CLIENT)
    client.receive_data(junk * 49)
    assert drain(client) == []
    client.receive_data(junk)
    with pytest.raises(TransportError):
        drain(client)


@pytest.mark.parametrize("version", ["SSH-2.0-Peer_1", "SSH-1.99-Peer_1"])
def test_version_accepts_2_0_and_1_99(version: str) -> None:
    client = Transport(Role.CLIENT)
    client.receive_data(version.encode() + b"\r\n")
    assert drain(client) == [VersionReceived(version=version)]


@pytest.mark.parametrize("line", [b"SSH-1.5-Old\r\n", b"SSH-3.0-Future\r\n", b"SSH-2.0\r\n"])
def test_version_other_protocol_versions_are_refused(line: bytes) -> None:
    t = server()
    t.data_to_send()
    fails(t, line, DisconnectReason.PROTOCOL_VERSION_NOT_SUPPORTED)
    assert disconnect_in(t.data_to_send()) == DisconnectReason.PROTOCOL_VERSION_NOT_SUPPORTED


@pytest.mark.parametrize("line", [b"SSH-2.0-a\x00b\r\n", b"SSH-2.0-\xff\r\n", b"SSH-2.0-\r\n"])
def test_version_malformed_identification_is_refused(line: bytes) -> None:
    fails(server(), line, DisconnectReason.PROTOCOL_ERROR)


@pytest.mark.parametrize("terminator", [b"\r\n", b"\n"])
def test_version_strings_enter_the_hash_exactly_as_sent(terminator: bytes) -> None:
    # The signature over H only verifies if both sides hashed the same
    # identification bytes: comments kept, CR LF (or a bare LF) dropped.
    pair = Pair(
        server=Transport(
            Role.SERVER, host_key=HOST_KEY, version="SSH-2.0-Srv_2.1 with  comments", rng=seeded(2)
        )
    )
    first = pair.server.data_to_send().replace(b"\r\n", terminator, 1)
    pair.client.receive_data(first)
    pair.cev += drain(pair.client)
    pair.handshake()
    assert pair.client.peer_version == "SSH-2.0-Srv_2.1 with  comments"


def test_version_eof_before_identification_is_connection_closed() -> None:
    client = Transport(Role.CLIENT)
    client.receive_data(b"SSH-2.0-trunc")
    client.receive_data(b"")
    [event] = drain(client)
    assert isinstance(event, ConnectionClosed) and "identification" in event.reason


# == binary packets =========================================================================


@pytest.mark.parametrize("cipher", DEFAULT_CIPHERS)
def test_oversize_packet_is_refused_before_allocation(cipher: str) -> None:
    pair = open_pair(c_ciphers=(cipher,))
    # Four bytes claiming a 1 GiB packet: refused on the spot, nothing more awaited.
    header = claim_length(pair.server, 1 << 30)
    err = fails(pair.server, header, DisconnectReason.PROTOCOL_ERROR)
    assert "exceeds" in err.msg
    assert pair.server._reader.buffered == 4


@pytest.mark.parametrize("cipher", DEFAULT_CIPHERS)
def test_tampered_ciphertext_is_a_mac_error_and_disconnects(cipher: str) -> None:
    pair = open_pair(c_ciphers=(cipher,))
    pair.client.send_payload(b"\x5e" + bytes(100))
    wire = bytearray(pair.client.data_to_send())
    wire[30] ^= 0x01
    fails(pair.server, bytes(wire), DisconnectReason.MAC_ERROR)
    # The DISCONNECT is encrypted with the server's live keys, so the client reads it.
    pair.transfer(pair.server, pair.client)
    [event] = pair.cev[-1:]
    assert isinstance(event, DisconnectReceived) and event.code == DisconnectReason.MAC_ERROR
    assert pair.client.state is TransportState.CLOSED


def test_padding_below_four_is_refused_by_the_transport() -> None:
    t = server()
    bad = struct.pack(">IB", 12, 3) + b"\x02" + bytes(7) + bytes(3)
    fails(t, b"SSH-2.0-x\r\n" + bad[: 4 + 12], DisconnectReason.PROTOCOL_ERROR, "padding")


@pytest.mark.parametrize("cipher", DEFAULT_CIPHERS)
def test_sequence_numbers_wrap_at_2_32(cipher: str) -> None:
    pair = open_pair(c_ciphers=(cipher,), s_ciphers=(cipher,))
    # Reaching in: jump both directions to just below the wrap.
    for a, b in ((pair.client, pair.server), (pair.server, pair.client)):
        a._writer.seq = b._reader.seq = 0xFFFFFFFE
    for i in range(4):
        pair.client.send_payload(bytes([0x5E, i]))
        pair.server.send_payload(bytes([0x5F, i]))
    pair.pump()
    assert [e.seq for e in pair.sev if isinstance(e, PayloadReceived)] == [
        0xFFFFFFFE,
        0xFFFFFFFF,
        0,
        1,
    ]
    assert len(pair.payloads("client")) == 4


# == key exchange ============================================================================


@pytest.mark.parametrize("kex", DEFAULT_KEX)
@pytest.mark.parametrize("cipher", DEFAULT_CIPHERS)
def test_kex_completes_with_each_cipher_and_kex_algorithm(kex: str, cipher: str) -> None:
    pair = open_pair(c_kex_algorithms=(kex,), c_ciphers=(cipher,))
    done = [e for e in pair.cev if isinstance(e, KexComplete)]
    assert done == [
        KexComplete(
            first=True,
            session_id=pair.client.session_id or b"",
            kex=kex,
            cipher_c2s=cipher,
            cipher_s2c=cipher,
        )
    ]
    assert kinds(pair.cev) == [
        "VersionReceived",
        "HostKeyReceived",
        "KexComplete",
        "ExtInfoReceived",
    ]
    assert kinds(pair.sev) == ["VersionReceived", "KexComplete"]
    assert pair.client.session_id == pair.server.session_id
    assert pair.client.strict_kex and pair.server.strict_kex
    pair.client.send_payload(SERVICE_REQUEST)
    pair.server.send_payload(b"\x5e" + bytes(40000))
    pair.pump()
    assert pair.payloads("server") == [SERVICE_REQUEST]
    assert pair.payloads("client") == [b"\x5e" + bytes(40000)]


@pytest.mark.parametrize("cipher", DEFAULT_CIPHERS)
def test_kex_fed_one_byte_at_a_time(cipher: str) -> None:
    pair = Pair(Transport(Role.CLIENT, ciphers=(cipher,), rng=seeded(1))).handshake(bytewise=True)
    pair.client.send_payload(SERVICE_REQUEST)
    pair.server.send_payload(b"\x5e" + bytes(300))
    pair.pump(bytewise=True)
    assert pair.payloads("server") == [SERVICE_REQUEST]
    assert pair.payloads("client") == [b"\x5e" + bytes(300)]


def test_kex_everything_in_one_chunk_with_trailing_data() -> None:
    manual = Manual()
    manual.send_kexinit()
    manual.send_ecdh_init()
    t = server()
    t.receive_data(manual.take() + b"\x00\x00")  # the start of a packet that never completes
    assert kinds(drain(t)) == ["VersionReceived"]
    assert t.kex_phase is KexPhase.NEWKEYS


def test_kex_the_server_proves_its_host_key() -> None:
    pair = open_pair()
    assert pair.client.server_host_key_blob == hostkey.public_blob(HOST_KEY)
    assert [e for e in pair.cev if isinstance(e, HostKeyReceived)] == [
        HostKeyReceived(key_blob=hostkey.public_blob(HOST_KEY))
    ]


def test_kex_host_key_received_comes_before_our_newkeys_so_disconnect_commits_nothing() -> None:
    pair = Pair()
    pair.transfer(pair.server, pair.client)  # the client answers with KEX_ECDH_INIT
    pair.transfer(pair.client, pair.server)  # the server replies: 31, NEWKEYS, EXT_INFO
    pair.client.receive_data(pair.server.data_to_send())
    assert kinds([pair.client.next_event()]) == ["HostKeyReceived"]
    assert pair.client.data_to_send() == b""  # our NEWKEYS waits for the caller's verdict
    pair.client.disconnect(DisconnectReason.HOST_KEY_NOT_VERIFIABLE, "unknown host key")
    _, payloads, _ = clear_packets(pair.client.data_to_send())
    assert [p[0] for p in payloads] == [Msg.DISCONNECT]
    assert pair.client.state is TransportState.CLOSED
    assert pair.client.next_event() is NEED_DATA


def test_kex_bad_host_key_signature_fails() -> None:
    pair = Pair()
    pair.transfer(pair.server, pair.client)
    pair.transfer(pair.client, pair.server)
    _, payloads, rest = clear_packets(pair.server.data_to_send())
    reply = bytearray(payloads[0])
    assert reply[0] == Msg.KEX_ECDH_REPLY
    reply[-1] ^= 0x01  # the last byte of the Ed25519 signature over H
    wire = frame(bytes(reply), payloads[1]) + rest
    fails(pair.client, wire, DisconnectReason.KEY_EXCHANGE_FAILED, "does not verify")


@pytest.mark.parametrize("who", ["client", "server"])
def test_kex_kexinit_enters_the_hash_exactly_as_received(who: str) -> None:
    # A man in the middle changes one byte of a KEXINIT cookie; both sides
    # still negotiate the same algorithms, but their H differ, so the
    # client cannot verify the server's signature.
    pair = Pair()
    src, dst = (pair.client, pair.server) if who == "client" else (pair.server, pair.client)
    line, payloads, _ = clear_packets(src.data_to_send())
    tampered = bytearray(payloads[0])
    tampered[5] ^= 0xFF
    dst.receive_data(line + frame(bytes(tampered)))
    (pair.cev if dst is pair.client else pair.sev).extend(drain(dst))
    with pytest.raises(TransportError) as info:
        pair.pump()
    assert info.value.reason is DisconnectReason.KEY_EXCHANGE_FAILED
    assert pair.client.state is TransportState.ERROR


def test_kex_session_id_is_the_first_h_and_never_changes() -> None:
    pair = open_pair()
    session_id = pair.client.session_id
    for initiator in (pair.client, pair.server, pair.client):
        initiator.start_rekey()
        pair.pump()
    done = [e for e in pair.cev + pair.sev if isinstance(e, KexComplete)]
    assert len(done) == 8
    assert {e.session_id for e in done} == {session_id}
    assert [e.first for e in pair.cev if isinstance(e, KexComplete)] == [True, False, False, False]


def test_kex_all_zero_x25519_value_fails() -> None:
    manual = Manual()
    manual.send_kexinit()
    manual.send_ecdh_init(value=bytes(32))
    fails(server(), manual.take(), DisconnectReason.KEY_EXCHANGE_FAILED, "all zeros")


def test_kex_no_common_cipher_fails() -> None:
    manual = Manual()
    manual.send_kexinit(ciphers=("aes128-ctr",))
    fails(server(), manual.take(), DisconnectReason.KEY_EXCHANGE_FAILED, "cipher")


@pytest.mark.parametrize(
    "messages",
    [
        [bytes([Msg.NEWKEYS])],  # NEWKEYS before any exchange
        ["kexinit", "kexinit"],  # KEXINIT twice
        ["kexinit", bytes([Msg.KEX_ECDH_REPLY])],  # the server's message, from a client
        ["kexinit", bytes([Msg.NEWKEYS])],  # NEWKEYS before the ECDH
    ],
)
def test_kex_messages_out_of_order_are_fatal(messages: list[bytes | str]) -> None:
    manual = Manual()
    for m in messages:
        if m == "kexinit":
            manual.send_kexinit(strict=False)
        else:
            manual.send(m)  # type: ignore[arg-type]
    fails(server(), manual.take(), DisconnectReason.PROTOCOL_ERROR)


def test_kex_manual_client_agrees_with_the_server() -> None:
    # The hand-built client proves H, K and the key letters against the server.
    t = server()
    payloads, events = Manual().handshake(t)
    assert kinds(events) == ["VersionReceived", "KexComplete"]
    assert [p[0] for p in payloads] == [Msg.KEXINIT, 31, Msg.NEWKEYS, Msg.EXT_INFO]


# -- first_kex_packet_follows ---------------------------------------------------------------


def test_kex_wrong_guess_the_next_kex_packet_is_ignored() -> None:
    t = Transport(
        Role.SERVER,
        host_key=HOST_KEY,
        kex_algorithms=("curve25519-sha256@libssh.org", "curve25519-sha256"),
    )
    manual = Manual()
    # The client guesses curve25519-sha256, the server prefers the @libssh.org
    # name: by RFC 4253 7.1 the guess is wrong even though the client's first
    # choice is what gets negotiated, so its guessed packet must be dropped.
    manual.send_kexinit(kex=("curve25519-sha256", "curve25519-sha256@libssh.org"), follows=True)
    manual.send(ecdh_payload(Msg.KEX_ECDH_INIT, b"guessed packet, ignored"))
    manual.send_ecdh_init()
    t.receive_data(manual.take())
    drain(t)
    payloads = manual.receive(t.data_to_send())
    assert [p[0] for p in payloads] == [Msg.KEXINIT, 31, Msg.NEWKEYS, Msg.EXT_INFO]
    manual.send_newkeys()
    t.receive_data(manual.take())
    assert kinds(drain(t)) == ["KexComplete"]


def test_kex_right_guess_the_guessed_packet_is_used() -> None:
    manual = Manual()
    manual.send_kexinit(follows=True)
    manual.send_ecdh_init()
    t = Transport(Role.SERVER, host_key=HOST_KEY, kex_algorithms=("curve25519-sha256",))
    t.receive_data(manual.take())
    drain(t)
    payloads = manual.receive(t.data_to_send())
    assert [p[0] for p in payloads][:3] == [Msg.KEXINIT, 31, Msg.NEWKEYS]


# -- strict kex ------------------------------------------------------------------------------


def test_strict_kex_only_when_both_first_kexinits_carry_the_marker() -> None:
    t = server()
    Manual().handshake(t, strict=False)
    assert not t.strict_kex
    t = server()
    Manual().handshake(t, strict=True)
    assert t.strict_kex
    # Our later KEXINITs carry no markers: the decision belongs to the first.
    pair = open_pair()
    pair.client.start_rekey()
    assert pair.client._our_kexinit is not None  # reaching in to read what we sent
    assert STRICT_C not in pair.client._our_kexinit.kex_algorithms


@pytest.mark.parametrize("first", [Msg.IGNORE, Msg.DEBUG, 8])
def test_strict_kex_kexinit_must_be_the_first_packet(first: int) -> None:
    manual = Manual()
    manual.send(bytes([first]) + bytes(8))
    manual.send_kexinit()
    fails(server(), manual.take(), DisconnectReason.PROTOCOL_ERROR, "first packet")


@pytest.mark.parametrize(
    "intruder",
    [
        message(Msg.IGNORE, string(b"x")),
        message(Msg.DEBUG, b"\x00", string("hi"), string("")),
        message(Msg.UNIMPLEMENTED, uint32(0)),
        bytes([8]),
        bytes([Msg.EXT_INFO]) + uint32(0),
        SERVICE_REQUEST,
        b"\x5e\x00",
    ],
)
def test_strict_kex_any_other_message_during_the_initial_exchange_is_fatal(
    intruder: bytes,
) -> None:
    manual = Manual()
    manual.send_kexinit()
    manual.send(intruder)
    fails(server(), manual.take(), DisconnectReason.PROTOCOL_ERROR)


def test_without_strict_kex_ignore_and_debug_before_kexinit_are_fine() -> None:
    t = server()
    manual = Manual()
    manual.send(message(Msg.IGNORE, string(b"padding")))
    manual.send(message(Msg.DEBUG, b"\x00", string("hi"), string("")))
    _, events = manual.handshake(t, strict=False)
    assert kinds(events) == ["VersionReceived", "KexComplete"]
    assert not t.strict_kex


def test_strict_kex_resets_sequence_numbers_after_each_newkeys() -> None:
    pair = open_pair()
    pair.client.send_payload(SERVICE_REQUEST)
    pair.pump()
    # After the client's NEWKEYS its next packet is number 0 again.
    assert [e.seq for e in pair.sev if isinstance(e, PayloadReceived)] == [0]
    pair.client.start_rekey()
    pair.pump()
    pair.client.send_payload(SERVICE_REQUEST)
    pair.server.send_payload(b"\x5e")
    pair.pump()
    assert [e.seq for e in pair.sev if isinstance(e, PayloadReceived)] == [0, 0]
    # The server's EXT_INFO took number 0 after its first NEWKEYS; after the rekey, 0 again.
    assert [e.seq for e in pair.cev if isinstance(e, PayloadReceived)] == [0]


def test_without_strict_kex_sequence_numbers_are_never_reset() -> None:
    t = server()
    manual = Manual()
    manual.handshake(t, strict=False)
    manual.send(SERVICE_REQUEST)
    t.receive_data(manual.take())
    [event] = drain(t)
    assert isinstance(event, PayloadReceived)
    assert event.seq == 3  # KEXINIT 0, KEX_ECDH_INIT 1, NEWKEYS 2


def test_sequence_number_wrap_during_the_initial_exchange_is_fatal() -> None:
    # Without strict kex a flood of IGNOREs could walk the counter round;
    # OpenSSH refuses that, and so do we.
    t = server()
    manual = Manual()
    manual.writer.seq = 0xFFFFFFFE
    t._reader.seq = 0xFFFFFFFE  # reaching in: 4 billion IGNOREs take too long
    manual.send(message(Msg.IGNORE, string(b"")))
    manual.send(message(Msg.IGNORE, string(b"")))
    fails(t, manual.take(), DisconnectReason.PROTOCOL_ERROR, "wrapped")


# -- ext-info (RFC 8308) -----------------------------------------------------------------------


def test_ext_info_is_the_packet_right_after_the_servers_first_newkeys() -> None:
    t = server()
    payloads, _ = Manual().handshake(t)
    assert [p[0] for p in payloads][-2:] == [Msg.NEWKEYS, Msg.EXT_INFO]
    assert parse_ext_info(payloads[-1]) == {"server-sig-algs": b"ssh-ed25519"}
    pair = open_pair()
    [ext] = [e for e in pair.cev if isinstance(e, ExtInfoReceived)]
    assert ext.extensions == {"server-sig-algs": b"ssh-ed25519"}
    assert pair.client._reader.seq == 1  # reaching in: EXT_INFO was packet 0 after NEWKEYS


def test_ext_info_markers_ride_in_the_first_kexinit_only() -> None:
    for role, markers in (
        (Role.CLIENT, ("ext-info-c", STRICT_C)),
        (Role.SERVER, ("ext-info-s", "kex-strict-s-v00@openssh.com")),
    ):
        t = Transport(role, host_key=HOST_KEY)
        _, payloads, _ = clear_packets(t.data_to_send())
        init = KexInit.parse(payloads[0])
        assert init.kex_algorithms[-2:] == markers
        assert init.real_kex_algorithms == DEFAULT_KEX


def test_ext_info_only_when_the_client_asked_and_only_once() -> None:
    t = server()
    payloads, _ = Manual().handshake(t, ext_info=False)
    assert [p[0] for p in payloads] == [Msg.KEXINIT, 31, Msg.NEWKEYS]
    pair = open_pair()
    pair.server.start_rekey()
    pair.pump()
    assert len([e for e in pair.cev if isinstance(e, ExtInfoReceived)]) == 1


# == rekeying ==================================================================================


@pytest.mark.parametrize("initiator", ["client", "server", "both"])
def test_rekey_mid_stream_queues_payloads_and_flushes_them_after_newkeys(initiator: str) -> None:
    pair = open_pair()
    sent_c = [bytes([0x5E]) + i.to_bytes(4, "big") * 100 for i in range(5)]
    sent_s = [bytes([0x5F]) + i.to_bytes(4, "big") * 100 for i in range(5)]
    pair.client.send_payload(sent_c[0])
    pair.server.send_payload(sent_s[0])
    if initiator in ("client", "both"):
        pair.client.start_rekey()
    if initiator in ("server", "both"):
        pair.server.start_rekey()
    for c, s in zip(sent_c[1:], sent_s[1:], strict=True):
        pair.client.send_payload(c)
        pair.server.send_payload(s)
        pair.transfer(pair.client, pair.server)
        pair.transfer(pair.server, pair.client)
    pair.pump()
    assert pair.payloads("server") == sent_c
    assert pair.payloads("client")[-5:] == sent_s
    assert pair.client.state is pair.server.state is TransportState.OPEN
    assert len([e for e in pair.cev if isinstance(e, KexComplete)]) == 2
    assert pair.client.queued_payload_bytes == pair.server.queued_payload_bytes == 0


def test_rekey_our_payloads_wait_from_our_kexinit_to_our_newkeys() -> None:
    pair = open_pair()
    pair.client.start_rekey()
    pair.client.data_to_send()  # the KEXINIT, kept from the server for now
    pair.client.send_payload(b"\x5e" * 50)
    assert pair.client.data_to_send() == b""
    assert pair.client.queued_payload_bytes == 50


def test_rekey_channel_data_the_peer_sent_before_seeing_our_kexinit_is_accepted() -> None:
    pair = open_pair()
    pair.server.start_rekey()
    server_kexinit = pair.server.data_to_send()
    pair.client.send_payload(b"\x5e in flight")
    pair.transfer(pair.client, pair.server)  # arrives while the server waits for a KEXINIT
    assert pair.payloads("server") == [b"\x5e in flight"]
    pair.client.receive_data(server_kexinit)
    pair.cev += drain(pair.client)
    pair.pump()
    assert pair.server.state is TransportState.OPEN


def test_rekey_payload_between_the_peers_kexinit_and_newkeys_is_fatal() -> None:
    pair = open_pair()
    pair.client.start_rekey()
    pair.transfer(pair.client, pair.server)  # the server has the client's KEXINIT
    pair.client._emit(b"\x5e sneaked")  # reaching in: push a payload past the rekey queue
    fails(pair.server, pair.client.data_to_send(), DisconnectReason.PROTOCOL_ERROR, "key exchange")


def test_rekey_by_bytes() -> None:
    pair = open_pair(c_rekey_bytes=100_000)
    for _ in range(30):
        pair.client.send_payload(b"\x5e" + bytes(5000))
        pair.pump()
    done = [e for e in pair.cev if isinstance(e, KexComplete)]
    assert len(done) >= 2 and not done[1].first
    assert len(pair.payloads("server")) == 30


def test_rekey_by_bytes_received() -> None:
    pair = open_pair(c_rekey_bytes=100_000)
    for _ in range(30):
        pair.server.send_payload(b"\x5e" + bytes(5000))
        pair.pump()
    assert len([e for e in pair.cev if isinstance(e, KexComplete)]) >= 2


def test_rekey_by_time() -> None:
    client = Transport(Role.CLIENT, rekey_interval=60.0, now=1000.0, rng=seeded(1))
    pair = Pair(client).handshake()
    assert client.get_timer() == 1060.0
    client.handle_timer(1059.0)
    assert client.state is TransportState.OPEN
    client.handle_timer(1060.0)
    assert client.state is TransportState.REKEY
    assert client.get_timer() is None
    pair.pump()
    assert client.state is TransportState.OPEN
    assert client.get_timer() == 1120.0
    assert pair.server.get_timer() == 3600.0


def test_rekey_with_a_different_host_key_is_refused() -> None:
    pair = open_pair()
    pair.server._host_key = OTHER_KEY  # reaching in: a server that swapped keys
    pair.client.start_rekey()
    with pytest.raises(TransportError) as info:
        pair.pump()
    assert info.value.reason is DisconnectReason.HOST_KEY_NOT_VERIFIABLE


def test_start_rekey_rules() -> None:
    client = Transport(Role.CLIENT)
    with pytest.raises(LocalProtocolError):
        client.start_rekey()  # no keys yet
    pair = open_pair()
    pair.client.start_rekey()
    first = pair.client.data_to_send()
    pair.client.start_rekey()  # already running: nothing more
    assert first and pair.client.data_to_send() == b""
    pair.server.receive_data(first)
    drain(pair.server)
    pair.pump()
    assert pair.client.state is TransportState.OPEN


# == transport messages ===========================================================================


def test_unknown_transport_message_is_answered_with_unimplemented() -> None:
    pair = open_pair()
    pair.client._emit(bytes([15]) + b"what")  # reaching in: send() refuses numbers below 50
    pair.client.send_payload(b"\x5e")  # so we know which seq the unknown one had
    pair.pump()
    [unimplemented] = [e for e in pair.cev if isinstance(e, Unimplemented)]
    [payload] = [e for e in pair.sev if isinstance(e, PayloadReceived)]
    assert unimplemented.seq == payload.seq - 1


def test_upper_layer_can_answer_unimplemented() -> None:
    pair = open_pair()
    pair.client.send_payload(b"\xc8 local extension")
    pair.pump()
    [event] = [e for e in pair.sev if isinstance(e, PayloadReceived)]
    pair.server.send_unimplemented(event.seq)
    pair.pump()
    assert [e for e in pair.cev if isinstance(e, Unimplemented)] == [Unimplemented(seq=event.seq)]


def test_ignore_and_debug_are_handled_silently() -> None:
    pair = open_pair()
    pair.client._emit(message(Msg.IGNORE, string(b"x" * 100)))  # reaching in, as above
    pair.client._emit(message(Msg.DEBUG, b"\x01", string("msg"), string("")))
    pair.client.send_payload(b"\x5e")
    pair.pump()
    assert kinds(pair.sev[-1:]) == ["PayloadReceived"]
    assert kinds(pair.sev) == ["VersionReceived", "KexComplete", "PayloadReceived"]


def test_disconnect_in_both_directions() -> None:
    pair = open_pair()
    pair.client.send_payload(b"\x5e")
    pair.client.disconnect(DisconnectReason.BY_APPLICATION, "bye\x1b[31m")
    with pytest.raises(LocalProtocolError):
        pair.client.send_payload(b"\x5e")
    pair.transfer(pair.client, pair.server)
    assert pair.sev[-2:] == [
        PayloadReceived(payload=b"\x5e", seq=0),
        DisconnectReceived(code=DisconnectReason.BY_APPLICATION, description="bye?[31m"),
    ]
    assert pair.sev[-1].reason_name == "BY_APPLICATION"  # type: ignore[attr-defined]
    assert pair.server.state is pair.client.state is TransportState.CLOSED
    pair.client.disconnect(DisconnectReason.BY_APPLICATION)  # a no-op once closed
    assert pair.client.data_to_send() == b""
    pair.server.receive_data(b"")
    assert drain_until_closed(pair.server).reason == "EOF"


def drain_until_closed(t: Transport) -> ConnectionClosed:
    event = t.next_event()
    assert isinstance(event, ConnectionClosed), event
    return event


@pytest.mark.parametrize(
    ("stage", "reason"),
    [
        ("start", "identification"),
        ("version", "initial key exchange"),
        ("open", "EOF"),
        ("partial", "middle of a packet"),
    ],
)
def test_eof_is_connection_closed(stage: str, reason: str) -> None:
    if stage == "start":
        t = server()
    elif stage == "version":
        t = server()
        t.receive_data(b"SSH-2.0-x\r\n")
        drain(t)
    else:
        pair = open_pair()
        t = pair.server
        if stage == "partial":
            pair.client.send_payload(b"\x5e" * 100)
            t.receive_data(pair.client.data_to_send()[:50])
            drain(t)
    t.receive_data(b"")
    event = drain_until_closed(t)
    assert reason in event.reason
    assert t.state is TransportState.CLOSED
    assert drain_until_closed(t) == event  # and it stays closed
    with pytest.raises(LocalProtocolError):
        t.receive_data(b"more")


def test_error_state_is_terminal_and_disconnects_once() -> None:
    t = server()
    t.data_to_send()
    fails(t, b"SSH-2.0-x\r\n" + struct.pack(">I", 1 << 30), DisconnectReason.PROTOCOL_ERROR)
    assert disconnect_in(t.data_to_send()) == DisconnectReason.PROTOCOL_ERROR
    with pytest.raises(TransportError):
        t.next_event()
    t.receive_data(b"ignored")
    t.disconnect(DisconnectReason.BY_APPLICATION)
    assert t.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        t.send_payload(b"\x5e")


def test_garbage_instead_of_packets_is_refused() -> None:
    t = server()
    t.receive_data(b"SSH-2.0-x\r\n" + b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    with pytest.raises(TransportError):
        drain(t)


# == the upper layers' side ============================================================


def test_send_payload_rules() -> None:
    client = Transport(Role.CLIENT)
    with pytest.raises(LocalProtocolError, match="state"):
        client.send_payload(SERVICE_REQUEST)  # before the first KexComplete
    pair = open_pair()
    for number in (1, 2, 4, 7, 20, 21, 30, 49):
        with pytest.raises(LocalProtocolError):
            pair.client.send_payload(bytes([number]))
    with pytest.raises(LocalProtocolError):
        pair.client.send_payload(b"")
    with pytest.raises(LocalProtocolError):
        pair.client.send_payload(b"\x5e" * (MAX_SEND_PAYLOAD + 1))
    pair.client.send_payload(b"\x5e" * MAX_SEND_PAYLOAD)
    pair.pump()
    assert len(pair.payloads("server")[0]) == MAX_SEND_PAYLOAD


def test_data_to_send_views() -> None:
    pair = open_pair()
    for i in range(3):
        pair.client.send_payload(bytes([0x5E, i]))
    assert pair.client.pending_output > 0
    views = pair.client.data_to_send_views()
    assert len(views) == 3 and pair.client.pending_output == 0
    pair.server.receive_data(b"".join(bytes(v) for v in views))
    assert [e.payload for e in drain(pair.server)] == [b"\x5e\x00", b"\x5e\x01", b"\x5e\x02"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"role": Role.SERVER},  # no host key
        {"max_packet": 34999},
        {"version": "SSH-1.5-old"},
        {"version": "SSH-2.0-bad\r\n"},
        {"ciphers": ("aes128-ctr",)},
        {"kex_algorithms": ("diffie-hellman-group1-sha1",)},
        {"ciphers": ()},
        {"rekey_bytes": 0},
        {"max_version_lines": 0},
    ],
)
def test_constructor_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    role = kwargs.pop("role", Role.CLIENT)
    with pytest.raises(LocalProtocolError):
        Transport(role, **kwargs)  # type: ignore[arg-type]


def test_rng_is_injected() -> None:
    a = Transport(Role.CLIENT, rng=seeded(9)).data_to_send()
    b = Transport(Role.CLIENT, rng=seeded(9)).data_to_send()
    assert a == b


# == every (phase, message) pair on the server ====================================================

_BODIES: dict[int, bytes] = {
    Msg.DISCONNECT: uint32(11) + string("bye") + string(""),
    Msg.UNIMPLEMENTED: uint32(0),
    Msg.EXT_INFO: uint32(0),
    Msg.IGNORE: string(b""),
}


def _server_in(phase: str, strict: bool) -> tuple[Transport, Manual]:
    t = server()
    manual = Manual()
    if phase == "kexinit":  # only the identification line so far
        t.receive_data(manual.take())
        drain(t)
        manual.receive(t.data_to_send())
    elif phase == "ecdh":
        manual.send_kexinit(strict=strict)
        t.receive_data(manual.take())
        drain(t)
        manual.receive(t.data_to_send())
    elif phase == "newkeys":
        manual.send_kexinit(strict=strict)
        manual.send_ecdh_init()
        t.receive_data(manual.take())
        drain(t)
        manual.receive(t.data_to_send())
    else:
        manual.handshake(t, strict=strict)
    return t, manual


def _expected(phase: str, strict: bool, msg: int) -> str:
    """What RFC 4253, RFC 8308 and strict kex say the server does with ``msg`` in ``phase``."""
    if msg == Msg.DISCONNECT:
        return "DisconnectReceived"
    if phase == "open":
        if msg in (Msg.IGNORE, Msg.DEBUG):
            return "silent"
        if msg == Msg.UNIMPLEMENTED:
            return "Unimplemented"
        if msg == Msg.EXT_INFO:
            return "ExtInfoReceived"
        if msg in (5, 6) or msg >= 50:
            return "PayloadReceived"
        if msg == Msg.KEXINIT:
            return "silent"  # a peer-initiated rekey; our KEXINIT goes out
        if msg == Msg.NEWKEYS or 30 <= msg < 50:
            return "fatal"
        return "unimplemented"
    # During the initial exchange.
    expected_kex = {"kexinit": Msg.KEXINIT, "ecdh": Msg.KEX_ECDH_INIT, "newkeys": Msg.NEWKEYS}
    if msg == expected_kex[phase]:
        return "kex"
    if msg in (Msg.KEXINIT, Msg.NEWKEYS) or 30 <= msg < 50:
        return "fatal"
    if strict and phase != "kexinit":
        return "fatal"
    if strict and phase == "kexinit" and msg not in (5, 6, Msg.EXT_INFO) and msg < 50:
        # The peer's strictness is not known before its KEXINIT; the rule bites
        # when that KEXINIT arrives and is not packet 0.
        return "late-fatal"
    if msg in (5, 6, Msg.EXT_INFO) or msg >= 50:
        return "fatal"
    if msg in (Msg.IGNORE, Msg.DEBUG):
        return "silent"
    if msg == Msg.UNIMPLEMENTED:
        return "Unimplemented"
    return "unimplemented"


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("phase", ["kexinit", "ecdh", "newkeys", "open"])
def test_every_message_in_every_server_phase(phase: str, strict: bool) -> None:
    for msg in range(256):
        t, manual = _server_in(phase, strict)
        t.data_to_send()
        if msg == Msg.KEXINIT:
            manual.send_kexinit(strict=strict)
        elif msg == Msg.KEX_ECDH_INIT:
            manual.send_ecdh_init()
        elif msg == Msg.NEWKEYS and phase == "newkeys":
            manual.send_newkeys()
        else:
            manual.send(bytes([msg]) + _BODIES.get(msg, b""))
        expected = _expected(phase, strict, msg)
        t.receive_data(manual.take())
        try:
            events = drain(t)
        except TransportError:
            assert expected == "fatal", (phase, strict, msg)
            continue
        got = kinds(events)
        if expected == "late-fatal":
            assert got in ([], ["Unimplemented"]), (phase, msg, got)
            manual.send_kexinit(strict=True)
            t.receive_data(manual.take())
            with pytest.raises(TransportError, match="first packet"):
                drain(t)
        elif expected in ("silent", "kex", "unimplemented"):
            assert got in ([], ["KexComplete"]), (phase, strict, msg, got)
            answer = manual.receive(t.data_to_send())
            if expected == "unimplemented":
                assert [p[0] for p in answer] == [Msg.UNIMPLEMENTED], (phase, msg)
        else:
            assert got == [expected], (phase, strict, msg, got)


# == property tests ============================================================


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), chunk=st.integers(min_value=1, max_value=700))
def test_random_bytes_after_a_valid_banner_only_raise_transport_errors(
    data: bytes, chunk: int
) -> None:
    t = server()
    stream = b"SSH-2.0-Fuzz\r\n" + data
    with contextlib.suppress(TransportError):
        for i in range(0, len(stream), chunk):
            t.receive_data(stream[i : i + chunk])
            drain(t)
        t.receive_data(b"")
        drain(t)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2000))
def test_random_bytes_after_a_valid_kexinit_only_raise_transport_errors(data: bytes) -> None:
    manual = Manual()
    manual.send_kexinit(strict=False)
    t = server()
    with contextlib.suppress(TransportError):
        t.receive_data(manual.take() + data)
        drain(t)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=1, max_size=2000))
def test_random_bytes_after_the_handshake_only_raise_transport_errors(data: bytes) -> None:
    pair = open_pair()
    try:
        pair.server.receive_data(data)
        drain(pair.server)
    except RemoteProtocolError as exc:
        assert isinstance(exc, TransportError)
