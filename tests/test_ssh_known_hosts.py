"""The client's host key pin: fingerprints and OpenSSH known_hosts (hashed, [host]:port)."""

from __future__ import annotations

import base64
import pathlib
import subprocess

import pytest

from wraith.ssh.keys import KeyLoadError, fingerprint_blob
from wraith.ssh.known_hosts import (
    HostKeyError,
    HostKeyMismatch,
    HostKeyPolicy,
    RevokedHostKey,
    UnknownHostKey,
    host_key_name,
    parse_known_hosts,
    validate_fingerprint,
)


def keygen(*args: str | pathlib.Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-q", *map(str, args)], check=True, capture_output=True, text=True
    )
    return out.stdout


class Keys:
    def __init__(self, d: pathlib.Path) -> None:
        self.d = d
        for name in ("a", "b", "c", "bad"):
            keygen("-t", "ed25519", "-N", "", "-f", d / name)
        keygen("-t", "rsa", "-b", "1024", "-N", "", "-f", d / "rsa")

    def line(self, name: str) -> str:
        return " ".join((self.d / f"{name}.pub").read_text().split()[:2])

    def blob(self, name: str) -> bytes:
        return base64.b64decode(self.line(name).split()[1])

    def fp(self, name: str) -> str:
        return keygen("-l", "-E", "sha256", "-f", self.d / f"{name}.pub").split()[1]


@pytest.fixture(scope="module")
def k(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("kh"))


def known_hosts_text(k: Keys) -> str:
    return (
        f"# comment\n"
        f"server.example,10.0.0.5 {k.line('a')}\n"
        f"[server.example]:2222 {k.line('b')}\n"
        f"*.wild.example,!nope.wild.example {k.line('c')}\n"
        f"rsa-only.example {k.line('rsa')}\n"
        f"@revoked * {k.line('bad')}\n"
        f"@cert-authority *.example {k.line('c')}\n"
    )


def test_host_key_name() -> None:
    assert host_key_name("Server.Example", 22) == "server.example"
    assert host_key_name("server.example", 2222) == "[server.example]:2222"
    assert host_key_name("::1", 22) == "::1"
    assert host_key_name("[::1]", 2222) == "[::1]:2222"


@pytest.mark.parametrize("hashed", [False, True])
def test_known_hosts_matching(k: Keys, tmp_path: pathlib.Path, hashed: bool) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(known_hosts_text(k))
    if hashed:
        keygen("-H", "-f", path)
        text = path.read_text()
        assert "server.example" not in text and "|1|" in text
        # ssh-keygen -F finds the hashed [host]:port entry we are about to look up.
        assert "|1|" in keygen("-F", "[server.example]:2222", "-f", path)
    policy = HostKeyPolicy(known_hosts=path)
    assert policy.check("server.example", 22, k.blob("a")) == k.fp("a")
    assert policy.check("SERVER.example", 22, k.blob("a")) == k.fp("a")
    assert policy.check("10.0.0.5", 22, k.blob("a")) == k.fp("a")
    assert policy.check("server.example", 2222, k.blob("b")) == k.fp("b")
    with pytest.raises(HostKeyMismatch):
        policy.check("server.example", 2222, k.blob("a"))  # port 2222 has its own key
    with pytest.raises(HostKeyMismatch):
        policy.check("server.example", 22, k.blob("b"))
    with pytest.raises(UnknownHostKey):
        policy.check("server.example", 2200, k.blob("a"))
    assert policy.check("x.wild.example", 22, k.blob("c")) == k.fp("c")
    with pytest.raises(UnknownHostKey):
        policy.check("nope.wild.example", 22, k.blob("c"))
    assert any("@cert-authority" in w for w in policy.warnings)


def test_unknown_message(k: Keys) -> None:
    policy = HostKeyPolicy()
    with pytest.raises(UnknownHostKey) as ei:
        policy.check("server.example", 2222, k.blob("a"))
    fp = k.fp("a")
    assert str(ei.value) == (
        f"host key for server.example:2222 is not trusted: server key is {fp}; "
        f"to trust it, add --host-key-fingerprint {fp}"
    )
    assert ei.value.fingerprint == fp
    assert (ei.value.host, ei.value.port) == ("server.example", 2222)


def test_unknown_when_only_other_key_types_known(k: Keys) -> None:
    policy = HostKeyPolicy(known_hosts=known_hosts_text(k))
    with pytest.raises(UnknownHostKey, match=r"known_hosts has only ssh-rsa keys"):
        policy.check("rsa-only.example", 22, k.blob("a"))


def test_mismatch_message(k: Keys) -> None:
    policy = HostKeyPolicy(known_hosts=known_hosts_text(k))
    with pytest.raises(HostKeyMismatch) as ei:
        policy.check("server.example", 22, k.blob("c"))
    msg = str(ei.value)
    fa, fc = k.fp("a"), k.fp("c")
    assert msg.startswith(f"HOST KEY MISMATCH for server.example:22: expected {fa}, ")
    assert f"server presented {fc}" in msg
    assert msg.endswith(
        f"refusing to connect (to trust the new key, use --host-key-fingerprint {fc})"
    )
    assert "\n" not in msg
    assert ei.value.fingerprint == fc and ei.value.expected == (fa,)
    assert isinstance(ei.value, HostKeyError)


def test_fingerprint_pins(k: Keys) -> None:
    policy = HostKeyPolicy(fingerprints=[k.fp("a"), k.fp("b")])
    assert policy.check("anything", 22, k.blob("a")) == k.fp("a")
    assert policy.check("[::1]", 2222, k.blob("b")) == k.fp("b")
    with pytest.raises(HostKeyMismatch) as ei:
        policy.check("::1", 2222, k.blob("c"))
    assert str(ei.value).startswith(
        f"HOST KEY MISMATCH for [::1]:2222: expected {k.fp('a')} or {k.fp('b')}, "
    )


def test_pins_and_known_hosts_combine(k: Keys) -> None:
    policy = HostKeyPolicy(fingerprints=[k.fp("c")], known_hosts=known_hosts_text(k))
    assert policy.check("server.example", 22, k.blob("a")) == k.fp("a")
    assert policy.check("server.example", 22, k.blob("c")) == k.fp("c")
    with pytest.raises(HostKeyMismatch) as ei:
        policy.check("server.example", 22, k.blob("b"))
    assert ei.value.expected == (k.fp("c"), k.fp("a"))


def test_revoked_is_refused_everywhere_even_if_pinned(k: Keys) -> None:
    policy = HostKeyPolicy(fingerprints=[k.fp("bad")], known_hosts=known_hosts_text(k))
    with pytest.raises(RevokedHostKey) as ei:
        policy.check("server.example", 22, k.blob("bad"))
    assert "REVOKED" in str(ei.value) and k.fp("bad") in str(ei.value)
    assert "known_hosts:6" in str(ei.value)


def test_revoked_hashed_file(k: Keys, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "kh"
    path.write_text(f"@revoked server.example {k.line('a')}\nserver.example {k.line('a')}\n")
    keygen("-H", "-f", path)
    with pytest.raises(RevokedHostKey):
        HostKeyPolicy(known_hosts=path).check("server.example", 22, k.blob("a"))


@pytest.mark.parametrize(
    "bad", ["", "SHA256:", "sha256:" + "A" * 43, "MD5:aa:bb", "SHA256:" + "A" * 42, "A" * 50]
)
def test_fingerprint_validation(bad: str) -> None:
    with pytest.raises(ValueError, match=r"not in SHA256:\.\.\. form"):
        HostKeyPolicy(fingerprints=[bad])


def test_fingerprint_validation_accepts_ssh_keygen_output(k: Keys) -> None:
    assert validate_fingerprint(f" {k.fp('a')} ") == k.fp("a")
    assert HostKeyPolicy(fingerprints=k.fp("a")).fingerprints == (k.fp("a"),)


def test_malformed_lines_are_skipped_with_warnings(k: Keys) -> None:
    warnings: list[str] = []
    text = (
        f"only-host\n"
        f"h ssh-ed25519 !!!\n"
        f"h ssh-rsa {k.line('a').split()[1]}\n"
        f"|1|bad|hash {k.line('a')}\n"
        f"@weird h {k.line('a')}\n"
        f"good {k.line('a')}\n"
    )
    entries = parse_known_hosts(text, source="kh", warnings=warnings)
    assert [e.source for e in entries] == ["kh:6"]
    assert [w.split(":", 2)[1] for w in warnings] == ["1", "2", "3", "4", "5"]


def test_known_hosts_sources(k: Keys, tmp_path: pathlib.Path) -> None:
    text = f"server.example {k.line('a')}\n"
    path = tmp_path / "kh"
    path.write_text(text)
    for src in (path, str(path), text, text.encode(), text.strip()):
        assert HostKeyPolicy(known_hosts=src).check("server.example", 22, k.blob("a"))
    with pytest.raises(KeyLoadError, match="no such file"):
        HostKeyPolicy(known_hosts=tmp_path / "missing")


def test_malformed_server_blob_never_escapes_as_another_error(k: Keys) -> None:
    policy = HostKeyPolicy(known_hosts=known_hosts_text(k))
    for blob in (b"", b"\xff" * 7, k.blob("a")[:-1]):
        with pytest.raises(HostKeyError) as ei:
            policy.check("server.example", 22, blob)
        assert ei.value.fingerprint == fingerprint_blob(blob)
