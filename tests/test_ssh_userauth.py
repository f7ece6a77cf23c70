"""SSH user authentication (RFC 4252) and certificate parsing, as in-memory state machines.

Client and server layers are paired by handing payloads from one to the other;
hand-built payloads reach the states a well-behaved client never does.  Each
point of SSH-NOTES' "User authentication" section has a test named after it;
the (state, message) tables are checked exhaustively, and hypothesis feeds
arbitrary payloads and action sequences.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import SSHCertificate
from helpers import ssh_keygen
from hypothesis import given, settings
from hypothesis import strategies as st

from wraith.proto.errors import LocalProtocolError, RemoteProtocolError
from wraith.proto.ssh.certs import (
    ED25519,
    ED25519_CERT,
    CertType,
    ed25519_key_from_blob,
    parse_ed25519_certificate,
)
from wraith.proto.ssh.constants import DisconnectReason, Msg
from wraith.proto.ssh.events_common import NEED_DATA, DisconnectError, disconnect_reason
from wraith.proto.ssh.userauth import (
    _CLIENT_TRANSITIONS,
    _SERVER_TRANSITIONS,
    MAX_QUEUED_REQUESTS,
    ClientAuth,
    ClientAuthState,
    ServerAuth,
    ServerAuthState,
    publickey_signed_data,
)
from wraith.proto.ssh.userauth_events import (
    Authenticated,
    AuthFailed,
    AuthRejected,
    AuthSucceeded,
    AuthTimeout,
    Banner,
    MethodRefused,
    NoneRequest,
    PublicKeyQuery,
    PublicKeySigned,
)
from wraith.proto.ssh.wire import Reader, boolean, message, name_list, string, uint32

SID = bytes(range(32))
NOW = 1000.0


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def raw_public_of(cert: SSHCertificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def plain_blob(key: Ed25519PrivateKey) -> bytes:
    return string(ED25519) + string(raw_public(key))


def service_request(name: str = "ssh-userauth") -> bytes:
    return message(Msg.SERVICE_REQUEST, string(name))


def request(user: str | bytes, method: str, *rest: bytes, service: str = "ssh-connection") -> bytes:
    return message(Msg.USERAUTH_REQUEST, string(user), string(service), string(method), *rest)


def none_request(user: str = "alice") -> bytes:
    return request(user, "none")


def query(key_blob: bytes, algorithm: str = ED25519, user: str = "alice") -> bytes:
    return request(user, "publickey", boolean(False), string(algorithm), string(key_blob))


def signed(
    key: Ed25519PrivateKey,
    *,
    user: str = "alice",
    algorithm: str = ED25519,
    key_blob: bytes | None = None,
    session_id: bytes = SID,
    sig_algorithm: str = ED25519,
    signature: bytes | None = None,
) -> bytes:
    blob = plain_blob(key) if key_blob is None else key_blob
    if signature is None:
        data = publickey_signed_data(session_id, user.encode(), algorithm, blob)
        signature = string(sig_algorithm) + string(key.sign(data))
    return request(
        user, "publickey", boolean(True), string(algorithm), string(blob), string(signature)
    )


def failure(methods: tuple[str, ...] = ("publickey",), partial: bool = False) -> bytes:
    return message(Msg.USERAUTH_FAILURE, name_list(methods), boolean(partial))


def events(layer: ServerAuth | ClientAuth) -> list[object]:
    out: list[object] = []
    while (event := layer.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def server(**kwargs: object) -> ServerAuth:
    args: dict[str, object] = {"session_id": SID, "now": NOW, **kwargs}
    return ServerAuth(**args)  # type: ignore[arg-type]


def started_server(**kwargs: object) -> ServerAuth:
    s = server(**kwargs)
    s.receive_payload(service_request())
    assert s.payloads_to_send() == [message(Msg.SERVICE_ACCEPT, string("ssh-userauth"))]
    return s


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


# --- certificates made by ssh-keygen -s ----------------------------------------------


@dataclass
class Cert:
    key: Ed25519PrivateKey
    blob: bytes
    ca_key: Ed25519PrivateKey
    parsed: SSHCertificate


def _make_cert(d: Path, name: str, *extra: str) -> Cert:
    ca = d / f"{name}_ca"
    user = d / name
    ssh_keygen("-t", "ed25519", "-N", "", "-f", str(ca))
    ssh_keygen("-t", "ed25519", "-N", "", "-f", str(user))
    ssh_keygen("-s", str(ca), "-I", f"{name}-id", "-z", "42", *extra, f"{user}.pub")
    line = (d / f"{name}-cert.pub").read_bytes()
    blob = base64.b64decode(line.split()[1])
    parsed = serialization.load_ssh_public_identity(line)
    assert isinstance(parsed, SSHCertificate)

    def private(path: Path) -> Ed25519PrivateKey:
        k = serialization.load_ssh_private_key(path.read_bytes(), None)
        assert isinstance(k, Ed25519PrivateKey)
        return k

    return Cert(key=private(user), blob=blob, ca_key=private(ca), parsed=parsed)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Cert]:
    d = tmp_path_factory.mktemp("certs")
    return {
        "user": _make_cert(
            d,
            "user",
            "-n",
            "alice,bob",
            "-V",
            "20200101:20400101",
            "-O",
            "force-command=/bin/true",
            "-O",
            "source-address=127.0.0.1/32,::1",
        ),
        "host": _make_cert(d, "host", "-h", "-n", "host.example"),
        "bare": _make_cert(d, "bare", "-O", "clear"),
    }


def unwrap(data: bytes) -> bytes:
    if not data:
        return b""
    r = Reader(data)
    value = r.string()
    r.end()
    return value


def test_cert_blob_parsed_like_cryptography_reads_it(certs: dict[str, Cert]) -> None:
    for cert in certs.values():
        got = parse_ed25519_certificate(cert.blob)
        ref = cert.parsed
        assert got.public_key == raw_public(cert.key)
        assert got.key_blob == plain_blob(cert.key)
        assert got.serial == ref.serial == 42
        assert got.nonce == ref.nonce
        assert got.key_id == ref.key_id.decode()
        assert got.principals == tuple(p.decode() for p in ref.valid_principals)
        assert (got.valid_after, got.valid_before) == (ref.valid_after, ref.valid_before)
        # cryptography unwraps option values; we keep the raw data string.
        for ours, theirs in (
            (got.critical_options, ref.critical_options),
            (got.extensions, ref.extensions),
        ):
            assert {k.encode(): unwrap(v) for k, v in ours} == theirs
        assert got.signature_key == plain_blob(cert.ca_key)
        assert got.ca_signature_valid()
    user = parse_ed25519_certificate(certs["user"].blob)
    assert user.cert_type is CertType.USER
    assert user.principals == ("alice", "bob")
    assert [name for name, _ in user.critical_options] == ["force-command", "source-address"]
    assert dict(user.critical_options)["force-command"] == string("/bin/true")
    assert "permit-port-forwarding" in dict(user.extensions)
    assert parse_ed25519_certificate(certs["host"].blob).cert_type is CertType.HOST
    bare = parse_ed25519_certificate(certs["bare"].blob)
    assert bare.extensions == () and bare.principals == ()


def test_cert_every_truncation_and_trailing_byte_is_refused(certs: dict[str, Cert]) -> None:
    blob = certs["user"].blob
    for n in range(len(blob)):
        with pytest.raises(RemoteProtocolError):
            parse_ed25519_certificate(blob[:n])
    with pytest.raises(RemoteProtocolError, match="trailing"):
        parse_ed25519_certificate(blob + b"\x00")


def _rebuild(cert: Cert, **fields: bytes) -> bytes:
    """The certificate with some fields replaced (wire-encoded), signature kept."""
    r = Reader(cert.blob)
    parts = {
        "type": string(r.string()),
        "nonce": string(r.string()),
        "pk": string(r.string()),
        "serial": r.uint64().to_bytes(8, "big"),
        "cert_type": uint32(r.uint32()),
        "key_id": string(r.string()),
        "principals": string(r.string()),
        "after": r.uint64().to_bytes(8, "big"),
        "before": r.uint64().to_bytes(8, "big"),
        "critical": string(r.string()),
        "extensions": string(r.string()),
        "reserved": string(r.string()),
        "ca": string(r.string()),
        "signature": string(r.string()),
    }
    parts.update(fields)
    return b"".join(parts.values())


def test_cert_structure_checks(certs: dict[str, Cert]) -> None:
    cert = certs["user"]
    assert parse_ed25519_certificate(_rebuild(cert)) == parse_ed25519_certificate(cert.blob)
    bad = {
        "type": string("ssh-rsa-cert-v01@openssh.com"),
        "pk": string(bytes(31)),
        "cert_type": uint32(3),
        "principals": string(string(b"\xff")),
        "critical": string(string("b") + string("") + string("a") + string("")),
        "extensions": string(string("x") + string("") + string("x") + string("")),
    }
    for field, value in bad.items():
        with pytest.raises(RemoteProtocolError):
            parse_ed25519_certificate(_rebuild(cert, **{field: value}))
    tampered = parse_ed25519_certificate(_rebuild(cert, serial=(7).to_bytes(8, "big")))
    assert not tampered.ca_signature_valid()
    assert not parse_ed25519_certificate(_rebuild(cert, ca=string(b"junk"))).ca_signature_valid()


def test_cert_parse_is_total(certs: dict[str, Cert]) -> None:
    blob = certs["user"].blob

    @settings(max_examples=200, deadline=None)
    @given(pos=st.integers(0, len(blob) - 1), value=st.integers(0, 255))
    def mutate(pos: int, value: int) -> None:
        data = bytearray(blob)
        data[pos] = value
        try:
            parsed = parse_ed25519_certificate(bytes(data))
        except RemoteProtocolError:
            return
        assert len(parsed.public_key) == 32
        parsed.ca_signature_valid()
        # No parser differential with the policy's parser (cryptography): where both
        # accept the bytes, both find the same embedded key and CA key.
        line = ED25519_CERT.encode() + b" " + base64.b64encode(bytes(data))
        try:
            ref = serialization.load_ssh_public_identity(line)
        except Exception:
            return
        assert isinstance(ref, SSHCertificate)
        assert raw_public_of(ref) == parsed.public_key

    mutate()


def test_plain_key_blob_parsing(key: Ed25519PrivateKey) -> None:
    assert ed25519_key_from_blob(plain_blob(key)) == raw_public(key)
    for blob in (plain_blob(key)[:-1], plain_blob(key) + b"x", string("ssh-rsa") + string(b"k")):
        with pytest.raises(RemoteProtocolError):
            ed25519_key_from_blob(blob)


# --- pairs -------------------------------------------------------------------------


def transfer(s: ServerAuth, c: ClientAuth) -> None:
    while True:
        to_server, to_client = c.payloads_to_send(), s.payloads_to_send()
        if not to_server and not to_client:
            return
        for p in to_server:
            s.receive_payload(p)
        for p in to_client:
            c.receive_payload(p)


def test_pair_plain_key_logs_in(key: Ed25519PrivateKey) -> None:
    s, c = server(), ClientAuth(session_id=SID, username="alice", key=key)
    assert s.state is ServerAuthState.SERVICE and c.state is ClientAuthState.IDLE
    c.start()
    transfer(s, c)
    assert events(s) == [
        PublicKeySigned(username="alice", algorithm=ED25519, key_blob=plain_blob(key))
    ]
    assert c.state is ClientAuthState.USERAUTH
    s.accept()
    assert events(s) == [Authenticated(username="alice")]
    transfer(s, c)
    assert events(c) == [AuthSucceeded()]
    assert s.authenticated and c.state is ClientAuthState.SUCCEEDED
    assert s.get_timer() is None and s.failures == 0


def test_pair_certificate_logs_in(certs: dict[str, Cert]) -> None:
    cert = certs["user"]
    s = server()
    c = ClientAuth(session_id=SID, username="alice", key=cert.key, certificate_blob=cert.blob)
    assert c.algorithm == ED25519_CERT
    c.start()
    transfer(s, c)
    assert events(s) == [
        PublicKeySigned(username="alice", algorithm=ED25519_CERT, key_blob=cert.blob)
    ]
    s.accept()
    transfer(s, c)
    assert events(c) == [AuthSucceeded()]


def test_pair_rejected_key(key: Ed25519PrivateKey) -> None:
    s, c = server(), ClientAuth(session_id=SID, username="alice", key=key)
    c.start()
    transfer(s, c)
    assert isinstance(s.next_event(), PublicKeySigned)
    s.reject()
    transfer(s, c)
    assert events(c) == [AuthRejected(methods_that_can_continue=("publickey",), partial=False)]
    assert c.state is ClientAuthState.FAILED
    assert s.failures == 1 and s.state is ServerAuthState.WAITING


def test_pair_banner(key: Ed25519PrivateKey) -> None:
    s, c = server(), ClientAuth(session_id=SID, username="alice", key=key, max_banner=5)
    c.start()
    transfer(s, c)
    s.send_banner("welcome\r\n")
    transfer(s, c)
    assert events(c) == [Banner(text="welco", truncated=True)]


# --- server: the points of SSH-NOTES -------------------------------------------------


def test_service_request_for_another_service_is_service_not_available() -> None:
    s = server()
    with pytest.raises(DisconnectError) as info:
        s.receive_payload(service_request("ssh-connection"))
    assert disconnect_reason(info.value) is DisconnectReason.SERVICE_NOT_AVAILABLE
    assert s.state is ServerAuthState.ERROR
    with pytest.raises(RemoteProtocolError):
        s.receive_payload(service_request())


def test_userauth_for_another_service_is_service_not_available(key: Ed25519PrivateKey) -> None:
    s = started_server()
    with pytest.raises(DisconnectError) as info:
        s.receive_payload(request("alice", "none", service="ssh-userauth"))
    assert info.value.reason is DisconnectReason.SERVICE_NOT_AVAILABLE


def test_none_answers_the_method_list_publickey_only() -> None:
    s = started_server()
    s.receive_payload(none_request())
    assert s.payloads_to_send() == [failure()]
    assert events(s) == [NoneRequest(username="alice")]
    assert s.failures == 0  # not an attempt
    r = Reader(failure())
    assert r.byte() == Msg.USERAUTH_FAILURE and r.name_list() == ["publickey"] and not r.boolean()


def test_none_answer_lists_the_configured_methods() -> None:
    s = started_server(methods=("publickey", "keyboard-interactive"))
    s.receive_payload(none_request())
    assert s.payloads_to_send() == [failure(("publickey", "keyboard-interactive"))]


def test_publickey_query_has_false_and_no_signature_answered_pk_ok(
    key: Ed25519PrivateKey,
) -> None:
    s = started_server()
    s.receive_payload(query(plain_blob(key)))
    assert events(s) == [
        PublicKeyQuery(username="alice", algorithm=ED25519, key_blob=plain_blob(key))
    ]
    assert s.state is ServerAuthState.QUERY and s.payloads_to_send() == []
    s.accept_query()
    assert s.payloads_to_send() == [
        message(Msg.USERAUTH_PK_OK, string(ED25519), string(plain_blob(key)))
    ]
    assert s.failures == 0 and s.state is ServerAuthState.WAITING


def test_publickey_query_with_trailing_signature_is_malformed(key: Ed25519PrivateKey) -> None:
    s = started_server()
    with pytest.raises(RemoteProtocolError, match="trailing"):
        s.receive_payload(query(plain_blob(key)) + string(b"sig"))


def test_refused_query_counts_as_a_failed_attempt(key: Ed25519PrivateKey) -> None:
    s = started_server()
    s.receive_payload(query(plain_blob(key)))
    events(s)
    s.reject()
    assert s.payloads_to_send() == [failure()]
    assert s.failures == 1


def test_signed_data_is_rfc4252_section7(key: Ed25519PrivateKey) -> None:
    blob = plain_blob(key)
    expected = (
        string(SID)
        + bytes([50])
        + string("alice")
        + string("ssh-connection")
        + string("publickey")
        + b"\x01"
        + string(ED25519)
        + string(blob)
    )
    assert publickey_signed_data(SID, b"alice", ED25519, blob) == expected


def test_client_request_verifies_over_the_signed_data(key: Ed25519PrivateKey) -> None:
    c = ClientAuth(session_id=SID, username="alice", key=key)
    c.start()
    assert c.payloads_to_send() == [service_request()]
    c.receive_payload(message(Msg.SERVICE_ACCEPT, string("ssh-userauth")))
    [payload] = c.payloads_to_send()
    r = Reader(payload)
    assert r.byte() == Msg.USERAUTH_REQUEST
    assert [r.text(), r.text(), r.text()] == ["alice", "ssh-connection", "publickey"]
    assert r.boolean() is True
    assert r.text() == ED25519 and r.string() == plain_blob(key)
    sig = Reader(r.string())
    r.end()
    assert sig.text() == ED25519
    raw = sig.string()
    sig.end()
    key.public_key().verify(raw, publickey_signed_data(SID, b"alice", ED25519, plain_blob(key)))


@pytest.mark.parametrize(
    "case",
    ["other-key", "other-session", "other-user-signed", "sig-algorithm", "short-sig", "junk-sig"],
)
def test_bad_signature_is_a_failure_and_an_attempt(
    case: str, key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    blob = plain_blob(key)
    data = publickey_signed_data(SID, b"alice", ED25519, blob)
    payload = {
        "other-key": signed(key, signature=string(ED25519) + string(other_key.sign(data))),
        "other-session": signed(key, session_id=bytes(32)),
        "other-user-signed": signed(
            key,
            signature=string(ED25519)
            + string(key.sign(publickey_signed_data(SID, b"bob", ED25519, blob))),
        ),
        "sig-algorithm": signed(key, sig_algorithm="ssh-ed448"),
        "short-sig": signed(key, signature=string(ED25519) + string(key.sign(data)[:63])),
        "junk-sig": signed(key, signature=b"\x00\x00"),
    }[case]
    s = started_server()
    s.receive_payload(payload)
    assert s.payloads_to_send() == [failure()]
    assert events(s) == [AuthFailed(username="alice", method="publickey", reason="bad-signature")]
    assert s.failures == 1 and s.state is ServerAuthState.WAITING


def test_certificate_signature_uses_the_embedded_key(certs: dict[str, Cert]) -> None:
    cert = certs["user"]
    s = started_server()
    s.receive_payload(signed(cert.key, algorithm=ED25519_CERT, key_blob=cert.blob))
    assert events(s) == [
        PublicKeySigned(username="alice", algorithm=ED25519_CERT, key_blob=cert.blob)
    ]
    s.reject()
    # Signed by the CA instead of the certificate's key: not a proof of the holder.
    s.receive_payload(signed(cert.ca_key, algorithm=ED25519_CERT, key_blob=cert.blob))
    assert events(s) == [AuthFailed(username="alice", method="publickey", reason="bad-signature")]


def test_certificate_trust_is_left_to_the_caller(certs: dict[str, Cert]) -> None:
    """The layer proves possession only: a certificate whose CA signature is broken
    still reaches the caller, whose policy (the CA it trusts) alone can accept it."""
    cert = certs["user"]
    forged = _rebuild(cert, serial=(7).to_bytes(8, "big"))
    assert not parse_ed25519_certificate(forged).ca_signature_valid()
    s = started_server()
    s.receive_payload(signed(cert.key, algorithm=ED25519_CERT, key_blob=forged))
    assert events(s) == [PublicKeySigned(username="alice", algorithm=ED25519_CERT, key_blob=forged)]
    assert not s.authenticated and s.payloads_to_send() == []
    s.reject()
    assert s.payloads_to_send() == [failure()] and not s.authenticated


@pytest.mark.parametrize(
    ("algorithm", "which_blob", "reason"),
    [
        (ED25519, "cert", "key-type-mismatch"),
        (ED25519_CERT, "plain", "key-type-mismatch"),
        ("rsa-sha2-256", "plain", "unsupported-algorithm"),
        ("ssh-rsa", "plain", "unsupported-algorithm"),
        (ED25519, "truncated", "malformed-key"),
        (ED25519_CERT, "broken-cert", "malformed-key"),
        (ED25519, "empty", "malformed-key"),
    ],
)
@pytest.mark.parametrize("with_signature", [False, True])
def test_algorithm_must_match_the_key_blob(
    algorithm: str,
    which_blob: str,
    reason: str,
    with_signature: bool,
    certs: dict[str, Cert],
) -> None:
    cert = certs["user"]
    blob = {
        "cert": cert.blob,
        "plain": plain_blob(cert.key),
        "truncated": plain_blob(cert.key)[:-1],
        "broken-cert": cert.blob[:-1],
        "empty": b"",
    }[which_blob]
    s = started_server()
    if with_signature:
        s.receive_payload(signed(cert.key, algorithm=algorithm, key_blob=blob))
    else:
        s.receive_payload(query(blob, algorithm))
    assert events(s) == [AuthFailed(username="alice", method="publickey", reason=reason)]
    assert s.payloads_to_send() == [failure()] and s.failures == 1


@pytest.mark.parametrize("method", ["password", "keyboard-interactive", "hostbased", "gssapi"])
def test_other_methods_are_refused_and_counted(method: str) -> None:
    s = started_server()
    s.receive_payload(request("alice", method, boolean(False), string("hunter2")))
    assert s.payloads_to_send() == [failure()]
    assert events(s) == [MethodRefused(username="alice", method=method)]
    assert s.failures == 1


def test_attempts_are_bounded(key: Ed25519PrivateKey, other_key: Ed25519PrivateKey) -> None:
    s = started_server(max_attempts=3)
    s.receive_payload(request("alice", "password", boolean(False), string("x")))
    s.receive_payload(query(plain_blob(key)))
    events(s)
    s.reject()
    s.receive_payload(none_request())  # free, even near the limit
    s.receive_payload(signed(key, session_id=bytes(32)))
    assert s.failures == 3
    events(s)
    with pytest.raises(DisconnectError, match="too many authentication failures") as info:
        s.receive_payload(signed(key))
    assert info.value.reason is DisconnectReason.NO_MORE_AUTH_METHODS_AVAILABLE
    assert s.state is ServerAuthState.ERROR
    with pytest.raises(RemoteProtocolError):
        s.receive_payload(signed(key))
    with pytest.raises(RemoteProtocolError):
        s.next_event()


def test_attempt_limit_applies_to_pipelined_requests(key: Ed25519PrivateKey) -> None:
    s = started_server(max_attempts=1)
    s.receive_payload(query(plain_blob(key)))
    s.receive_payload(signed(key))  # queued behind the query
    assert isinstance(s.next_event(), PublicKeyQuery)
    s.reject()
    with pytest.raises(DisconnectError, match="too many"):
        s.next_event()
    assert s.state is ServerAuthState.ERROR


def test_auth_deadline() -> None:
    s = server(auth_timeout=30.0)
    assert s.get_timer() == NOW + 30.0
    s.handle_timer(NOW + 29.9)
    assert s.state is ServerAuthState.SERVICE and events(s) == []
    s.receive_payload(service_request())
    assert s.get_timer() == NOW + 30.0  # a deadline, not an idle timer
    s.handle_timer(NOW + 30.0)
    assert s.state is ServerAuthState.TIMED_OUT and s.get_timer() is None
    assert events(s) == [AuthTimeout()]
    with pytest.raises(RemoteProtocolError, match="deadline"):
        s.receive_payload(none_request())
    s.handle_timer(NOW + 60)  # harmless once terminal
    assert events(s) == []


def test_auth_deadline_also_while_the_caller_decides(key: Ed25519PrivateKey) -> None:
    s = started_server()
    s.receive_payload(signed(key))
    events(s)
    s.handle_timer(NOW + 31)
    assert events(s) == [AuthTimeout()]
    with pytest.raises(LocalProtocolError):
        s.accept()


def test_no_deadline_after_success(key: Ed25519PrivateKey) -> None:
    s = started_server()
    s.receive_payload(signed(key))
    events(s)
    s.accept()
    assert s.get_timer() is None
    s.handle_timer(NOW + 3600)
    assert s.authenticated and events(s) == [Authenticated(username="alice")]


@pytest.mark.parametrize(
    "payload",
    [
        message(Msg.GLOBAL_REQUEST, string("tcpip-forward"), boolean(True), string(""), uint32(0)),
        message(Msg.CHANNEL_OPEN, string("session"), uint32(0), uint32(1 << 20), uint32(1 << 15)),
        message(Msg.SERVICE_ACCEPT, string("ssh-userauth")),
        message(Msg.KEXINIT),
        message(Msg.USERAUTH_SUCCESS),
        message(Msg.USERAUTH_PK_OK, string(ED25519), string(b"")),
        bytes([61]),
        bytes([200]),
        b"",
    ],
    ids=lambda p: f"msg{p[0]}" if p else "empty",
)
def test_non_userauth_messages_before_success_are_protocol_errors(payload: bytes) -> None:
    s = started_server()
    with pytest.raises(RemoteProtocolError):
        s.receive_payload(payload)
    assert s.state is ServerAuthState.ERROR


def test_userauth_messages_after_success_are_ignored(key: Ed25519PrivateKey) -> None:
    s = started_server()
    s.receive_payload(signed(key))
    s.receive_payload(none_request())  # pipelined behind the good one: dropped on success
    events(s)
    s.accept()
    s.payloads_to_send()
    for payload in (signed(key), none_request(), failure(), bytes([60])):
        s.receive_payload(payload)
    assert s.payloads_to_send() == [] and events(s) == [Authenticated(username="alice")]
    with pytest.raises(RemoteProtocolError, match="routing"):
        s.receive_payload(message(Msg.CHANNEL_OPEN))


def test_pipelined_requests_are_answered_in_order(key: Ed25519PrivateKey) -> None:
    s = started_server()
    for payload in (none_request(), query(plain_blob(key)), signed(key)):
        s.receive_payload(payload)
    assert events(s) == [
        NoneRequest(username="alice"),
        PublicKeyQuery(username="alice", algorithm=ED25519, key_blob=plain_blob(key)),
    ]
    assert s.payloads_to_send() == [failure()]
    s.accept_query()
    assert events(s) == [
        PublicKeySigned(username="alice", algorithm=ED25519, key_blob=plain_blob(key))
    ]
    assert s.payloads_to_send() == [
        message(Msg.USERAUTH_PK_OK, string(ED25519), string(plain_blob(key)))
    ]


def test_pipelined_requests_are_bounded(key: Ed25519PrivateKey) -> None:
    s = started_server()
    s.receive_payload(query(plain_blob(key)))
    for _ in range(MAX_QUEUED_REQUESTS):
        s.receive_payload(none_request())
    with pytest.raises(RemoteProtocolError, match="pipelined"):
        s.receive_payload(none_request())


def test_user_name_may_not_change(key: Ed25519PrivateKey) -> None:
    s = started_server()
    s.receive_payload(none_request("alice"))
    with pytest.raises(RemoteProtocolError, match="user name changed"):
        s.receive_payload(none_request("bob"))


@pytest.mark.parametrize("user", [b"a" * 257, b"\xff\xfe"])
def test_illegal_user_names(user: bytes) -> None:
    s = started_server()
    with pytest.raises(DisconnectError) as info:
        s.receive_payload(request(user, "none"))
    assert info.value.reason is DisconnectReason.ILLEGAL_USER_NAME


def test_every_truncation_and_trailing_byte_of_requests_is_refused(
    key: Ed25519PrivateKey,
) -> None:
    for payload in (service_request(), none_request(), query(plain_blob(key)), signed(key)):
        for n in range(1, len(payload)):
            s = server() if payload[0] == Msg.SERVICE_REQUEST else started_server()
            with pytest.raises(RemoteProtocolError):
                s.receive_payload(payload[:n])
        s = server() if payload[0] == Msg.SERVICE_REQUEST else started_server()
        with pytest.raises(RemoteProtocolError, match="trailing"):
            s.receive_payload(payload + b"\x00")


def test_server_local_misuse(key: Ed25519PrivateKey) -> None:
    for call in ("accept", "accept_query", "reject"):
        s = started_server()
        with pytest.raises(LocalProtocolError):
            getattr(s, call)()
    s = started_server()
    s.receive_payload(query(plain_blob(key)))
    events(s)
    with pytest.raises(LocalProtocolError):
        s.accept()  # a query is answered with accept_query(), never with success
    with pytest.raises(LocalProtocolError):
        server().send_banner("too early")
    for bad in (
        {"session_id": b""},
        {"max_attempts": 0},
        {"auth_timeout": 0},
        {"methods": ("a,b",)},
    ):
        with pytest.raises(LocalProtocolError):
            server(**bad)


# --- client ------------------------------------------------------------------------


def started_client(key: Ed25519PrivateKey, **kwargs: object) -> ClientAuth:
    c = ClientAuth(session_id=SID, username="alice", key=key, **kwargs)  # type: ignore[arg-type]
    c.start()
    c.receive_payload(message(Msg.SERVICE_ACCEPT, string("ssh-userauth")))
    c.payloads_to_send()
    return c


def test_client_partial_success_is_still_a_rejection(key: Ed25519PrivateKey) -> None:
    c = started_client(key)
    c.receive_payload(failure(("password", "keyboard-interactive"), partial=True))
    assert events(c) == [
        AuthRejected(methods_that_can_continue=("password", "keyboard-interactive"), partial=True)
    ]
    with pytest.raises(RemoteProtocolError):
        c.receive_payload(message(Msg.USERAUTH_SUCCESS))


def test_client_banner_forms(key: Ed25519PrivateKey) -> None:
    c = started_client(key)
    c.receive_payload(message(Msg.USERAUTH_BANNER, string("hi"), string("en")))
    c.receive_payload(message(Msg.USERAUTH_BANNER, string("no language tag")))
    c.receive_payload(message(Msg.USERAUTH_BANNER, string(b"bad \xff utf-8"), string("")))
    assert events(c) == [
        Banner(text="hi"),
        Banner(text="no language tag"),
        Banner(text="bad \ufffd utf-8"),
    ]
    with pytest.raises(RemoteProtocolError):
        c.receive_payload(message(Msg.USERAUTH_BANNER, string("x"), string("en"), b"!"))


@pytest.mark.parametrize(
    "payload",
    [
        message(Msg.SERVICE_ACCEPT, string("ssh-connection")),
        message(Msg.USERAUTH_PK_OK, string(ED25519), string(b"")),
        message(Msg.USERAUTH_REQUEST),
        message(Msg.USERAUTH_SUCCESS, b"x"),
        message(Msg.CHANNEL_DATA, uint32(0), string(b"")),
        b"",
    ],
    ids=lambda p: f"msg{p[0]}-{len(p)}" if p else "empty",
)
def test_client_refuses_what_a_server_may_not_send(payload: bytes, key: Ed25519PrivateKey) -> None:
    c = ClientAuth(session_id=SID, username="alice", key=key)
    c.start()
    if payload[:1] != bytes([Msg.SERVICE_ACCEPT]):
        c.receive_payload(message(Msg.SERVICE_ACCEPT, string("ssh-userauth")))
    with pytest.raises(RemoteProtocolError):
        c.receive_payload(payload)
    assert c.state is ClientAuthState.ERROR
    with pytest.raises(RemoteProtocolError):
        c.next_event()


def test_client_constructor_checks(key: Ed25519PrivateKey, certs: dict[str, Cert]) -> None:
    with pytest.raises(LocalProtocolError, match="another key"):
        ClientAuth(session_id=SID, username="a", key=key, certificate_blob=certs["user"].blob)
    host = certs["host"]
    with pytest.raises(LocalProtocolError, match="not a user"):
        ClientAuth(session_id=SID, username="a", key=host.key, certificate_blob=host.blob)
    with pytest.raises(LocalProtocolError, match="unusable"):
        ClientAuth(session_id=SID, username="a", key=key, certificate_blob=b"junk")
    for bad in ({"username": ""}, {"username": "x" * 300}, {"session_id": b""}):
        args: dict[str, object] = {"session_id": SID, "username": "a", "key": key, **bad}
        with pytest.raises(LocalProtocolError):
            ClientAuth(**args)  # type: ignore[arg-type]
    c = ClientAuth(session_id=SID, username="a", key=key)
    c.start()
    with pytest.raises(LocalProtocolError):
        c.start()


# --- every (state, message) pair ---------------------------------------------------

SERVER_STATES = [s for s in ServerAuthState]
SERVER_MESSAGES = [
    "service",
    "service-other",
    "none",
    "query",
    "signed-good",
    "signed-bad",
    "password",
    "failure",
    "channel-open",
]


def _server_in(state: ServerAuthState, key: Ed25519PrivateKey) -> ServerAuth:
    s = server()
    if state is ServerAuthState.SERVICE:
        return s
    if state is ServerAuthState.TIMED_OUT:
        s.handle_timer(NOW + 31)
        return s
    if state is ServerAuthState.ERROR:
        with pytest.raises(RemoteProtocolError):
            s.receive_payload(b"\x00")
        return s
    s.receive_payload(service_request())
    if state is ServerAuthState.QUERY:
        s.receive_payload(query(plain_blob(key)))
    elif state in (ServerAuthState.SIGNED, ServerAuthState.AUTHENTICATED):
        s.receive_payload(signed(key))
    events(s)
    if state is ServerAuthState.AUTHENTICATED:
        s.accept()
    assert s.state is state
    s.payloads_to_send()
    events(s)
    return s


def _server_payload(name: str, key: Ed25519PrivateKey) -> bytes:
    return {
        "service": service_request(),
        "service-other": service_request("ssh-connection"),
        "none": none_request(),
        "query": query(plain_blob(key)),
        "signed-good": signed(key),
        "signed-bad": signed(key, session_id=bytes(32)),
        "password": request("alice", "password", boolean(False), string("pw")),
        "failure": failure(),
        "channel-open": message(Msg.CHANNEL_OPEN, string("session")),
    }[name]


def _server_expected(state: ServerAuthState, name: str) -> ServerAuthState | None:
    """The state after the message, or None for a protocol error (from the tables)."""
    S = ServerAuthState
    if state is S.AUTHENTICATED:
        return S.AUTHENTICATED if name not in ("service", "service-other", "channel-open") else None
    if name == "service":
        return _SERVER_TRANSITIONS.get((state, _server_input("GOT_SERVICE_REQUEST")))
    if name in ("service-other", "failure", "channel-open") or state not in (
        S.WAITING,
        S.QUERY,
        S.SIGNED,
    ):
        return None
    if state is not S.WAITING:
        return state  # queued behind the pending decision
    return {"query": S.QUERY, "signed-good": S.SIGNED}.get(name, S.WAITING)


def _server_input(name: str) -> object:
    from wraith.proto.ssh.userauth import _ServerInput

    return _ServerInput[name]


@pytest.mark.parametrize("state", SERVER_STATES, ids=lambda s: s.name)
@pytest.mark.parametrize("name", SERVER_MESSAGES)
def test_server_state_message_table(
    state: ServerAuthState, name: str, key: Ed25519PrivateKey
) -> None:
    s = _server_in(state, key)
    expected = _server_expected(state, name)
    if expected is None:
        with pytest.raises(RemoteProtocolError):
            s.receive_payload(_server_payload(name, key))
        # Terminal states stay as they are; every other one becomes ERROR.
        terminal = state if state is ServerAuthState.TIMED_OUT else ServerAuthState.ERROR
        assert s.state is terminal
        with pytest.raises(RemoteProtocolError):
            s.receive_payload(none_request())
    else:
        s.receive_payload(_server_payload(name, key))
        assert s.state is expected


CLIENT_MESSAGES = {
    "service-accept": message(Msg.SERVICE_ACCEPT, string("ssh-userauth")),
    "banner": message(Msg.USERAUTH_BANNER, string("hello"), string("")),
    "success": message(Msg.USERAUTH_SUCCESS),
    "failure": failure(),
    "pk-ok": message(Msg.USERAUTH_PK_OK, string(ED25519), string(b"")),
    "request": none_request(),
    "global": message(Msg.GLOBAL_REQUEST, string("x"), boolean(False)),
}
_CLIENT_INPUT_OF = {
    "service-accept": "GOT_SERVICE_ACCEPT",
    "banner": "GOT_BANNER",
    "success": "GOT_SUCCESS",
    "failure": "GOT_FAILURE",
}


def _client_in(state: ClientAuthState, key: Ed25519PrivateKey) -> ClientAuth:
    c = ClientAuth(session_id=SID, username="alice", key=key)
    steps = {
        ClientAuthState.IDLE: [],
        ClientAuthState.SERVICE: ["start"],
        ClientAuthState.USERAUTH: ["start", "service-accept"],
        ClientAuthState.SUCCEEDED: ["start", "service-accept", "success"],
        ClientAuthState.FAILED: ["start", "service-accept", "failure"],
        ClientAuthState.ERROR: ["junk"],
    }[state]
    for step in steps:
        if step == "start":
            c.start()
        elif step == "junk":
            with pytest.raises(RemoteProtocolError):
                c.receive_payload(b"\x00")
        else:
            c.receive_payload(CLIENT_MESSAGES[step])
    assert c.state is state
    return c


@pytest.mark.parametrize("state", list(ClientAuthState), ids=lambda s: s.name)
@pytest.mark.parametrize("name", list(CLIENT_MESSAGES))
def test_client_state_message_table(
    state: ClientAuthState, name: str, key: Ed25519PrivateKey
) -> None:
    from wraith.proto.ssh.userauth import _ClientInput

    c = _client_in(state, key)
    legal = name in _CLIENT_INPUT_OF and (state, _ClientInput[_CLIENT_INPUT_OF[name]]) in (
        _CLIENT_TRANSITIONS
    )
    if legal:
        c.receive_payload(CLIENT_MESSAGES[name])
        assert c.state is _CLIENT_TRANSITIONS[(state, _ClientInput[_CLIENT_INPUT_OF[name]])]
    else:
        with pytest.raises(RemoteProtocolError):
            c.receive_payload(CLIENT_MESSAGES[name])
        assert c.state is ClientAuthState.ERROR


# --- hypothesis: arbitrary payloads and action sequences ------------------------------

_KEY = Ed25519PrivateKey.generate()
_ACTIONS = st.one_of(
    st.sampled_from(SERVER_MESSAGES).map(lambda n: ("payload", _server_payload(n, _KEY))),
    st.binary(max_size=80).map(lambda b: ("payload", b)),
    st.builds(
        lambda n, cut: ("payload", _server_payload(n, _KEY)[:cut]),
        st.sampled_from(SERVER_MESSAGES),
        st.integers(0, 200),
    ),
    st.sampled_from(["accept", "accept_query", "reject", "timer", "events"]).map(
        lambda a: (a, b"")
    ),
)


@settings(max_examples=200, deadline=None)
@given(actions=st.lists(_ACTIONS, max_size=25))
def test_server_survives_any_sequence(actions: list[tuple[str, bytes]]) -> None:
    """Only RemoteProtocolError escapes the receive path; ERROR is terminal; limits hold."""
    s = server(max_attempts=4)
    for action, payload in actions:
        before = s.state
        if action == "payload":
            try:
                s.receive_payload(payload)
            except RemoteProtocolError:
                assert s.state in (ServerAuthState.ERROR, ServerAuthState.TIMED_OUT)
        elif action == "timer":
            s.handle_timer(NOW + 100)
            if before in (
                ServerAuthState.SERVICE,
                ServerAuthState.WAITING,
                ServerAuthState.QUERY,
                ServerAuthState.SIGNED,
            ):
                assert s.state is ServerAuthState.TIMED_OUT
        elif action == "events":
            try:
                events(s)
            except RemoteProtocolError:
                assert s.state is ServerAuthState.ERROR
        else:
            legal = {
                "accept": ServerAuthState.SIGNED,
                "accept_query": ServerAuthState.QUERY,
                "reject": None,
            }[action]
            ok = (
                before in (ServerAuthState.QUERY, ServerAuthState.SIGNED)
                if legal is None
                else (before is legal)
            )
            if ok:
                getattr(s, action)()
            else:
                with pytest.raises(LocalProtocolError):
                    getattr(s, action)()
        assert s.failures <= 4
        if before in (ServerAuthState.ERROR, ServerAuthState.TIMED_OUT):
            assert s.state is before
        for out in s.payloads_to_send():
            assert out[0] in (
                Msg.SERVICE_ACCEPT,
                Msg.USERAUTH_FAILURE,
                Msg.USERAUTH_SUCCESS,
                Msg.USERAUTH_PK_OK,
            )


@settings(max_examples=200, deadline=None)
@given(payloads=st.lists(st.binary(max_size=60), max_size=8), start=st.booleans())
def test_client_survives_any_payloads(payloads: list[bytes], start: bool) -> None:
    c = ClientAuth(session_id=SID, username="alice", key=_KEY)
    if start:
        c.start()
    for payload in [CLIENT_MESSAGES["service-accept"], *payloads]:
        try:
            c.receive_payload(payload)
        except RemoteProtocolError:
            assert c.state is ClientAuthState.ERROR
        try:
            events(c)
        except RemoteProtocolError:
            assert c.state is ClientAuthState.ERROR
