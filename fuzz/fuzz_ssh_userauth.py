"""Fuzz SSH userauth (both roles): any payloads give events, NEED_DATA or RemoteProtocolError.

Input layout (atheris.FuzzedDataProvider): the first bytes pick the role,
whether a valid service exchange comes first, and ``max_attempts``.  Then,
until the input runs out, one step each: a selector byte either names a
ready-made message (a valid none, query, signed request, banner...) or a
message number followed by fuzzed bytes; a second byte decides how the
caller answers the events that need an answer, and whether the auth timer
fires.  ``check()`` holds the invariant, so tests can feed it hand-made steps:
only ``RemoteProtocolError`` escapes the receive path, ERROR is terminal, the
caller's legal answers never raise, and the attempt limit holds.
Run: ``python fuzz/fuzz_ssh_userauth.py -max_total_time=60``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from wraith.proto.errors import RemoteProtocolError
    from wraith.proto.ssh.constants import Msg
    from wraith.proto.ssh.events_common import NEED_DATA
    from wraith.proto.ssh.userauth import (
        ClientAuth,
        ClientAuthState,
        ServerAuth,
        ServerAuthState,
        publickey_signed_data,
    )
    from wraith.proto.ssh.userauth_events import (
        AuthTimeout,
        PublicKeyQuery,
        PublicKeySigned,
    )
    from wraith.proto.ssh.wire import boolean, message, name_list, string

SID = bytes(range(32))
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
BLOB = string("ssh-ed25519") + string(KEY.public_key().public_bytes_raw())


def _request(method: str, *rest: bytes) -> bytes:
    return message(
        Msg.USERAUTH_REQUEST, string("alice"), string("ssh-connection"), string(method), *rest
    )


def _signed() -> bytes:
    sig = KEY.sign(publickey_signed_data(SID, b"alice", "ssh-ed25519", BLOB))
    return _request(
        "publickey",
        boolean(True),
        string("ssh-ed25519"),
        string(BLOB),
        string(string("ssh-ed25519") + string(sig)),
    )


#: Whole messages the fuzzer can pick by index, so it reaches the deep states.
MESSAGES = [
    message(Msg.SERVICE_REQUEST, string("ssh-userauth")),
    message(Msg.SERVICE_ACCEPT, string("ssh-userauth")),
    _request("none"),
    _request("publickey", boolean(False), string("ssh-ed25519"), string(BLOB)),
    _signed(),
    _request("password", boolean(False), string("pw")),
    message(Msg.USERAUTH_FAILURE, name_list(["publickey"]), boolean(False)),
    message(Msg.USERAUTH_SUCCESS),
    message(Msg.USERAUTH_BANNER, string("hello"), string("")),
    message(Msg.USERAUTH_PK_OK, string("ssh-ed25519"), string(BLOB)),
]
#: Message numbers a fuzzed payload may start with (then fuzzed bytes follow).
NUMBERS = [5, 6, 50, 50, 50, 51, 52, 53, 60, 61, 80, 90, 94]
MAX_ATTEMPTS = 3


def check(steps: list[tuple[bytes, int]], *, server: bool, max_attempts: int = 3) -> bool:
    """Feed ``steps`` (payload, answer bits); True if the layer ended authenticated."""
    layer: ServerAuth | ClientAuth
    if server:
        layer = ServerAuth(session_id=SID, now=0.0, max_attempts=max_attempts)
    else:
        layer = ClientAuth(session_id=SID, username="alice", key=KEY)
        layer.start()
    for payload, answer in steps:
        if answer & 0x80 and isinstance(layer, ServerAuth):
            layer.handle_timer(31.0)
            assert layer.state is ServerAuthState.TIMED_OUT or layer.get_timer() is None
        try:
            layer.receive_payload(payload)
            while (event := layer.next_event()) is not NEED_DATA:
                if isinstance(layer, ServerAuth):
                    _answer(layer, event, answer)
        except RemoteProtocolError:
            terminal = (ServerAuthState.ERROR, ServerAuthState.TIMED_OUT, ClientAuthState.ERROR)
            assert layer.state in terminal, layer.state
            try:
                layer.receive_payload(payload)
            except RemoteProtocolError:
                return False
            raise AssertionError("ERROR is not terminal") from None
        if isinstance(layer, ServerAuth):
            assert layer.failures <= max_attempts
        for out in layer.payloads_to_send():
            assert out and out[0] in (5, 6, 50, 51, 52, 53, 60), out
    if isinstance(layer, ServerAuth):
        return layer.state is ServerAuthState.AUTHENTICATED
    return layer.state is ClientAuthState.SUCCEEDED


def _answer(layer: ServerAuth, event: object, answer: int) -> None:
    if isinstance(event, PublicKeyQuery):
        if answer & 1:
            layer.accept_query()
        else:
            layer.reject()
    elif isinstance(event, PublicKeySigned):
        if answer & 2:
            layer.accept()
        else:
            layer.reject()
    elif isinstance(event, AuthTimeout):
        assert layer.state is ServerAuthState.TIMED_OUT


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    server = fdp.ConsumeBool()
    prefix = fdp.ConsumeBool()
    max_attempts = fdp.ConsumeIntInRange(1, 4)
    steps: list[tuple[bytes, int]] = []
    if prefix:
        steps.append((MESSAGES[0] if server else MESSAGES[1], 0))
    while fdp.remaining_bytes() and len(steps) < 32:
        selector = fdp.ConsumeIntInRange(0, len(MESSAGES) + len(NUMBERS))
        answer = fdp.ConsumeIntInRange(0, 255)
        if selector < len(MESSAGES):
            payload = MESSAGES[selector]
        elif selector < len(MESSAGES) + len(NUMBERS):
            body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 120))
            payload = bytes([NUMBERS[selector - len(MESSAGES)]]) + body
        else:
            payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 120))
        steps.append((payload, answer))
    check(steps, server=server, max_attempts=max_attempts)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
