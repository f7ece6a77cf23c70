"""Key exchange pieces (SSH-NOTES "Key exchange"): KEXINIT, negotiation, K, H, keys, host keys."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from wraith.proto.errors import RemoteProtocolError
from wraith.proto.ssh import hostkey
from wraith.proto.ssh.constants import DisconnectReason
from wraith.proto.ssh.kex import (
    KEX_METHODS,
    MARKERS,
    MLKEM_AVAILABLE,
    STRICT_C,
    Curve25519,
    KexInit,
    MlKem768X25519,
    derive_key,
    exchange_hash,
    ext_info_payload,
    guess_was_wrong,
    negotiate,
    parse_ext_info,
)
from wraith.proto.ssh.transport_events import TransportError
from wraith.proto.ssh.wire import Reader, string, uint32

LOW_ORDER_POINTS = [bytes(32), (1).to_bytes(32, "little")]


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def kexinit(**overrides: object) -> KexInit:
    fields: dict[str, object] = {
        "cookie": bytes(range(16)),
        "kex_algorithms": ("curve25519-sha256", "curve25519-sha256@libssh.org"),
        "server_host_key_algorithms": ("ssh-ed25519",),
        "ciphers_c2s": ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"),
        "ciphers_s2c": ("aes256-gcm@openssh.com",),
        "macs_c2s": ("hmac-sha2-256",),
        "macs_s2c": ("hmac-sha2-256",),
        "compression_c2s": ("none",),
        "compression_s2c": ("none",),
    }
    fields.update(overrides)
    return KexInit(**fields)  # type: ignore[arg-type]


# -- KEXINIT ----------------------------------------------------------------------------


def test_kexinit_round_trips_with_cookie_ten_lists_flag_and_reserved() -> None:
    init = kexinit(languages_c2s=("en",), first_kex_packet_follows=True, reserved=0xDEADBEEF)
    payload = init.to_payload()
    assert payload[0] == 20 and payload[1:17] == bytes(range(16))
    assert payload[-5:] == b"\x01\xde\xad\xbe\xef"
    assert KexInit.parse(payload) == init


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p[:-1],  # truncated reserved field
        lambda p: p + b"\x00",  # trailing byte
        lambda p: b"\x15" + p[1:],  # not a KEXINIT
        lambda p: p[:10],  # truncated cookie
    ],
)
def test_malformed_kexinit_is_a_remote_error(mutate: Callable[[bytes], bytes]) -> None:
    with pytest.raises(RemoteProtocolError):
        KexInit.parse(mutate(kexinit().to_payload()))


# -- negotiation (RFC 4253 7.1) -----------------------------------------------------------


def test_negotiation_takes_the_clients_first_choice_the_server_supports() -> None:
    client = kexinit(kex_algorithms=("curve25519-sha256@libssh.org", "curve25519-sha256"))
    server = kexinit(kex_algorithms=("curve25519-sha256", "curve25519-sha256@libssh.org"))
    algs = negotiate(client, server)
    assert algs.kex == "curve25519-sha256@libssh.org"
    assert algs.cipher_c2s == "aes128-gcm@openssh.com"
    assert negotiate(server, client).kex == "curve25519-sha256"


def test_markers_are_never_negotiated() -> None:
    client = kexinit(kex_algorithms=("ext-info-c", STRICT_C, "curve25519-sha256"))
    server = kexinit(kex_algorithms=("ext-info-c", STRICT_C, "curve25519-sha256"))
    assert negotiate(client, server).kex == "curve25519-sha256"
    with pytest.raises(TransportError) as info:
        negotiate(kexinit(kex_algorithms=tuple(MARKERS)), kexinit(kex_algorithms=tuple(MARKERS)))
    assert info.value.reason is DisconnectReason.KEY_EXCHANGE_FAILED


@pytest.mark.parametrize(
    "field", ["kex_algorithms", "server_host_key_algorithms", "ciphers_s2c", "compression_c2s"]
)
def test_no_common_algorithm_fails_the_key_exchange(field: str) -> None:
    with pytest.raises(TransportError) as info:
        negotiate(kexinit(), kexinit(**{field: ("something-else",)}))
    assert info.value.reason is DisconnectReason.KEY_EXCHANGE_FAILED


def test_first_kex_packet_follows_guess_rule() -> None:
    same = kexinit()
    assert not guess_was_wrong(same, same)
    other_kex = kexinit(kex_algorithms=("curve25519-sha256@libssh.org", "curve25519-sha256"))
    assert guess_was_wrong(same, other_kex)
    other_host_key = kexinit(server_host_key_algorithms=("ssh-rsa", "ssh-ed25519"))
    assert guess_was_wrong(same, other_host_key)
    # Markers in front do not make a right guess wrong.
    marked = kexinit(kex_algorithms=("ext-info-c", "curve25519-sha256"))
    assert not guess_was_wrong(marked, same)


# -- curve25519-sha256 (RFC 8731) ------------------------------------------------------------


@pytest.mark.parametrize("name", ["curve25519-sha256", "curve25519-sha256@libssh.org"])
def test_curve25519_both_sides_agree(name: str) -> None:
    client = KEX_METHODS[name](seeded(1))
    server = KEX_METHODS[name](seeded(2))
    q_s, k_server = server.server_respond(client.client_public())
    assert client.client_shared(q_s) == k_server


def test_curve25519_k_is_an_mpint_of_the_raw_secret() -> None:
    seen_high_bit = seen_leading_zero = False
    for seed in range(400):
        a, b = seeded(seed)(32), seeded(seed + 1000)(32)
        raw = X25519PrivateKey.from_private_bytes(a).exchange(
            X25519PrivateKey.from_private_bytes(b).public_key()
        )
        client = Curve25519("curve25519-sha256", lambda n, a=a: a)  # type: ignore[misc]
        server = Curve25519("curve25519-sha256", lambda n, b=b: b)  # type: ignore[misc]
        _, k = server.server_respond(client.client_public())
        value = raw.lstrip(b"\x00")
        if value[0] & 0x80:
            value = b"\x00" + value
            seen_high_bit = True
        if raw[0] == 0:
            seen_leading_zero = True
        assert k == string(value)
    assert seen_high_bit and seen_leading_zero


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_curve25519_all_zero_shared_secret_is_refused(point: bytes) -> None:
    for side in ("client", "server"):
        method = Curve25519("curve25519-sha256", seeded(1))
        method.client_public()
        with pytest.raises(TransportError) as info:
            if side == "client":
                method.client_shared(point)
            else:
                method.server_respond(point)
        assert info.value.reason is DisconnectReason.KEY_EXCHANGE_FAILED


@pytest.mark.parametrize("size", [0, 31, 33, 65])
def test_curve25519_public_value_must_be_32_bytes(size: int) -> None:
    with pytest.raises(TransportError):
        Curve25519("curve25519-sha256", seeded(1)).server_respond(b"\x09" * size)


# -- mlkem768x25519-sha256 -------------------------------------------------------------------


needs_mlkem = pytest.mark.skipif(not MLKEM_AVAILABLE, reason="cryptography lacks ML-KEM-768")


@needs_mlkem
def test_mlkem_layout_and_k_is_a_string_of_sha256() -> None:
    client = MlKem768X25519(seeded(1))
    server = MlKem768X25519(seeded(2))
    q_c = client.client_public()
    assert len(q_c) == 1184 + 32
    # The client's value is its ML-KEM-768 key, then its X25519 key.
    mlkem.MLKEM768PublicKey.from_public_bytes(q_c[:1184])
    x25519_client_private = X25519PrivateKey.from_private_bytes(seeded(1)(32))
    assert q_c[1184:] == x25519_client_private.public_key().public_bytes_raw()
    q_s, k_server = server.server_respond(q_c)
    assert len(q_s) == 1088 + 32  # ciphertext, then the server's X25519 key
    k_client = client.client_shared(q_s)
    assert k_client == k_server
    # Recompute K independently from the two component secrets.
    rng = seeded(1)
    rng(32)  # the X25519 key came first
    decaps = mlkem.MLKEM768PrivateKey.from_seed_bytes(rng(64))
    pq = decaps.decapsulate(q_s[:1088])
    classic = x25519_client_private.exchange(X25519PublicKey.from_public_bytes(q_s[1088:]))
    assert k_client == string(hashlib.sha256(pq + classic).digest())
    assert len(k_client) == 4 + 32  # a string, not an mpint


@needs_mlkem
@pytest.mark.parametrize("size", [0, 1215, 1217])
def test_mlkem_client_value_size_is_checked(size: int) -> None:
    with pytest.raises(TransportError):
        MlKem768X25519(seeded(1)).server_respond(bytes(size))


@needs_mlkem
@pytest.mark.parametrize("size", [0, 1119, 1121])
def test_mlkem_server_value_size_is_checked(size: int) -> None:
    client = MlKem768X25519(seeded(1))
    client.client_public()
    with pytest.raises(TransportError):
        client.client_shared(bytes(size))


@needs_mlkem
def test_mlkem_x25519_half_refuses_low_order_points() -> None:
    client = MlKem768X25519(seeded(1))
    q_c = client.client_public()
    with pytest.raises(TransportError):
        MlKem768X25519(seeded(2)).server_respond(q_c[:1184] + bytes(32))


# -- H and the keys ------------------------------------------------------------------------------


def test_exchange_hash_covers_every_field_in_order() -> None:
    parts = {n: n.encode() * 3 for n in ("v_c", "v_s", "i_c", "i_s", "k_s", "q_c", "q_s")}
    k = string(b"\x01\x02")
    expected = hashlib.sha256(
        b"".join(string(parts[n]) for n in ("v_c", "v_s", "i_c", "i_s", "k_s", "q_c", "q_s")) + k
    ).digest()
    assert exchange_hash(**parts, k=k) == expected
    for name in parts:
        changed = dict(parts, **{name: parts[name] + b"!"})
        assert exchange_hash(**changed, k=k) != expected


def test_derive_key_extends_as_rfc_4253_section_7_2() -> None:
    k, h, sid = string(b"\x42" * 32), b"H" * 32, b"S" * 32
    k1 = hashlib.sha256(k + h + b"C" + sid).digest()
    k2 = hashlib.sha256(k + h + k1).digest()
    k3 = hashlib.sha256(k + h + k1 + k2).digest()
    assert derive_key(k, h, "C", sid, 16) == k1[:16]
    assert derive_key(k, h, "C", sid, 64) == k1 + k2
    assert derive_key(k, h, "C", sid, 80) == (k1 + k2 + k3)[:80]
    assert derive_key(k, h, "D", sid, 32) != k1


# -- ext-info (RFC 8308) ----------------------------------------------------------------------


def test_ext_info_round_trip() -> None:
    ext = {"server-sig-algs": b"ssh-ed25519,rsa-sha2-256", "ping@openssh.com": b"0"}
    payload = ext_info_payload(ext)
    assert payload[0] == 7
    assert parse_ext_info(payload) == ext


@pytest.mark.parametrize(
    "payload",
    [
        b"\x07" + uint32(65),  # too many
        b"\x07" + uint32(2) + string("a") + string("1") + string("a") + string("2"),  # twice
        b"\x07" + uint32(1) + string("a"),  # truncated
        b"\x07" + uint32(0) + b"x",  # trailing
    ],
)
def test_bad_ext_info_is_a_remote_error(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_ext_info(payload)


# -- ssh-ed25519 (RFC 8709) ------------------------------------------------------------------------


def test_ed25519_blob_and_signature_formats() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    blob = hostkey.public_blob(key)
    r = Reader(blob)
    assert r.string() == b"ssh-ed25519" and r.string() == key.public_key().public_bytes_raw()
    signature = hostkey.sign(key, b"H")
    r = Reader(signature)
    assert r.string() == b"ssh-ed25519"
    raw = r.string()
    assert len(raw) == 64
    key.public_key().verify(raw, b"H")
    assert hostkey.verify(blob, signature, b"H")
    assert not hostkey.verify(blob, signature, b"h")
    other = hostkey.public_blob(Ed25519PrivateKey.from_private_bytes(bytes(32)))
    assert not hostkey.verify(other, signature, b"H")


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        string("ssh-rsa") + string(bytes(32)),
        string("ssh-ed25519") + string(bytes(31)),
        string("ssh-ed25519") + string(bytes(32)) + b"x",
    ],
)
def test_malformed_ed25519_blobs_are_key_exchange_failures(blob: bytes) -> None:
    with pytest.raises(TransportError) as info:
        hostkey.public_key_from_blob(blob)
    assert info.value.reason is DisconnectReason.KEY_EXCHANGE_FAILED


def test_malformed_signature_blob_is_refused() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    blob = hostkey.public_blob(key)
    for signature in (
        string("ssh-ed25519") + string(bytes(63)),
        string("ssh-rsa") + string(bytes(64)),
    ):
        with pytest.raises(TransportError):
            hostkey.verify(blob, signature, b"H")


def test_kexinit_name_list_length_is_bounded() -> None:
    # wire.MAX_NAME_LIST (64 KiB) applies to each of the ten lists.
    long_list = ("a" * 1000,) * 70
    payload = kexinit(kex_algorithms=long_list).to_payload()
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        KexInit.parse(payload)
