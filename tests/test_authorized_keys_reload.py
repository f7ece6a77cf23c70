"""authorized_keys is read again on SIGHUP and when the file changes, without a restart.

Key A (``keys.client``) and key B (``keys.other``); each test writes its own
authorized_keys file.  A key that is removed stops new logins, but a session
it already has keeps working.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import Keys
from helpers import (
    EchoServer,
    WraithServer,
    socks_connect,
    start_client,
    start_server,
)

from wraith.ssh.auth import RELOAD_CHECK_INTERVAL, AuthPolicy

EXIT_AUTH = 4


def _pub(key: Path) -> str:
    return Path(f"{key}.pub").read_text(encoding="ascii")


def _write(path: Path, *keys: Path) -> None:
    """Replace the file as an editor would: a new inode, renamed into place."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(_pub(k) for k in keys), encoding="ascii")
    tmp.replace(path)


def _refused(backend: str, server: WraithServer, key: Path) -> None:
    client = start_client(backend, server, key, ready=False)
    try:
        code = client.proc.wait(60)
    finally:
        client.proc.stop()
    assert code == EXIT_AUTH, client.proc.output()


def _works(backend: str, server: WraithServer, key: Path, echo: EchoServer) -> None:
    client = start_client(backend, server, key, args=["-D", "127.0.0.1:0"])
    try:
        assert client.socks_port is not None
        _echo_via(client.socks_port, echo)
    finally:
        client.proc.stop()


def _echo_via(socks_port: int, echo: EchoServer) -> None:
    with socks_connect(socks_port, "127.0.0.1", echo.port, timeout=20) as sock:
        sock.sendall(b"hello")
        assert sock.recv(16) == b"hello"


def _reloaded(server: WraithServer, n: int, after: int) -> None:
    """Wait for the n-key reload line, among stderr lines after index ``after``."""
    deadline = time.monotonic() + 20
    want = f"authorized_keys reloaded: {n} keys"
    while time.monotonic() < deadline:
        if any(want in line for line in server.proc.stderr[after:]):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {want!r}\n" + server.proc.output())


def test_sighup_adds_a_key_and_a_broken_file_keeps_the_old_keys(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    ak = tmp_path / "authorized_keys"
    _write(ak, keys.client)
    server = start_server(backend, tmp_path, authorized_keys=ak)
    try:
        _refused(backend, server, keys.other)
        with ak.open("a", encoding="ascii") as f:
            f.write(_pub(keys.other))
        mark = len(server.proc.stderr)
        server.proc.popen.send_signal(signal.SIGHUP)
        _reloaded(server, 2, mark)
        _works(backend, server, keys.other, echo)

        # A file that does not load: one warning, and the old keys stay.
        ak.write_text("bogus-option " + _pub(keys.client), encoding="ascii")
        mark = len(server.proc.stderr)
        server.proc.popen.send_signal(signal.SIGHUP)
        server.proc.wait_for(
            r"WARNING .*authorized_keys reload failed, keeping the old keys: ", stream="stderr"
        )
        warnings = [x for x in server.proc.stderr[mark:] if "reload failed" in x]
        assert len(warnings) == 1
        assert "AAAA" not in warnings[0]  # no key material in the log
        _works(backend, server, keys.other, echo)
        assert server.proc.popen.poll() is None
    finally:
        server.proc.stop()


def test_an_edited_file_is_picked_up_without_a_signal(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    ak = tmp_path / "authorized_keys"
    _write(ak, keys.client)
    server = start_server(backend, tmp_path, authorized_keys=ak)
    try:
        mark = len(server.proc.stderr)
        _write(ak, keys.client, keys.other)
        time.sleep(RELOAD_CHECK_INTERVAL + 0.5)
        _works(backend, server, keys.other, echo)
        _reloaded(server, 2, mark)
    finally:
        server.proc.stop()


def test_a_removed_key_is_refused_but_its_session_stays(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    ak = tmp_path / "authorized_keys"
    _write(ak, keys.client, keys.other)
    server = start_server(backend, tmp_path, authorized_keys=ak)
    try:
        client = start_client(backend, server, keys.client, args=["-D", "127.0.0.1:0"])
        try:
            assert client.socks_port is not None
            tunnel = socks_connect(client.socks_port, "127.0.0.1", echo.port, timeout=20)
            with tunnel:
                tunnel.sendall(b"before")
                assert tunnel.recv(16) == b"before"
                _write(ak, keys.other)
                mark = len(server.proc.stderr)
                server.proc.popen.send_signal(signal.SIGHUP)
                _reloaded(server, 1, mark)
                _refused(backend, server, keys.client)
                _works(backend, server, keys.other, echo)
                # The session key A opened before the reload is not cut.
                tunnel.sendall(b"after")
                assert tunnel.recv(16) == b"after"
                _echo_via(client.socks_port, echo)
            assert client.proc.popen.poll() is None
        finally:
            client.proc.stop()
    finally:
        server.proc.stop()


# --- AuthPolicy.maybe_reload / reload, in-process ---------------------------------


def _blob(key: Path) -> bytes:
    return base64.b64decode(_pub(key).split()[1])


def _accepts(policy: AuthPolicy, key: Path) -> bool:
    result = policy.check(username="u", key_blob=_blob(key), source_ip="127.0.0.1", now=time.time())
    return result.accepted


def test_maybe_reload_looks_at_most_every_interval(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    ak = tmp_path / "authorized_keys"
    _write(ak, keys.client)
    policy = AuthPolicy.from_sources(str(ak), [])
    assert _accepts(policy, keys.client) and not _accepts(policy, keys.other)
    _write(ak, keys.client, keys.other)
    now = time.monotonic()
    assert not policy.maybe_reload(now)  # too soon after loading
    later = now + RELOAD_CHECK_INTERVAL + 0.1
    with caplog.at_level(logging.INFO, logger="wraith.ssh"):
        assert policy.maybe_reload(later)
    assert _accepts(policy, keys.other)
    assert [r.getMessage() for r in caplog.records] == ["authorized_keys reloaded: 2 keys"]
    assert not policy.maybe_reload(later + 0.5)  # checked just now
    assert not policy.maybe_reload(later + RELOAD_CHECK_INTERVAL + 0.1)  # unchanged
    # Same size, same inode, written in place: the mtime still tells.
    text = ak.read_text(encoding="ascii")
    ak.write_text(text.replace(_pub(keys.client), ""), encoding="ascii")
    ak.write_text(text, encoding="ascii")
    os.utime(ak, ns=(1, 1))
    assert policy.maybe_reload(later + 2 * RELOAD_CHECK_INTERVAL + 0.2)


def test_failed_reload_keeps_old_keys_and_warns_once(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    ak = tmp_path / "authorized_keys"
    _write(ak, keys.client)
    policy = AuthPolicy.from_sources(ak, [])
    ak.write_text('permitopen="x:1 ' + _pub(keys.other), encoding="ascii")
    with caplog.at_level(logging.INFO, logger="wraith.ssh"):
        assert not policy.reload()
        assert not policy.maybe_reload(time.monotonic() + 10)  # same file: no new warning
        ak.unlink()
        assert not policy.reload()
    assert _accepts(policy, keys.client) and not _accepts(policy, keys.other)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    for r in caplog.records:
        assert r.levelno == logging.WARNING
        assert r.getMessage().startswith("authorized_keys reload failed, keeping the old keys: ")
        assert "AAAA" not in r.getMessage() and "\n" not in r.getMessage()


def test_inline_text_is_not_reloaded(keys: Keys) -> None:
    policy = AuthPolicy.from_sources(_pub(keys.client), [])
    assert not policy.reload()
    assert not policy.maybe_reload(time.monotonic() + 100)
    assert _accepts(policy, keys.client)


def test_default_file_may_appear_later_and_cas_survive_a_reload(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    ca = tmp_path / "ca.pub"
    ca.write_text(_pub(keys.other), encoding="ascii")  # any Ed25519 key will do as a CA
    policy = AuthPolicy.from_sources(None, [ca])
    assert policy.key_count == 1  # the CA; ~/.ssh/authorized_keys is missing
    (tmp_path / ".ssh").mkdir()
    _write(tmp_path / ".ssh" / "authorized_keys", keys.client)
    assert policy.maybe_reload(time.monotonic() + RELOAD_CHECK_INTERVAL + 0.1)
    assert _accepts(policy, keys.client)
    assert policy.key_count == 2
