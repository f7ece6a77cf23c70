"""Keys: loading from path/bytes/str, fingerprints against ssh-keygen, generation."""

from __future__ import annotations

import base64
import contextlib
import os
import pathlib
import shutil
import stat
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from wraith.ssh import keys
from wraith.ssh.keys import (
    KeyLoadError,
    certificate_blob,
    default_state_dir,
    fingerprint,
    fingerprint_blob,
    generate_keypair,
    load_certificate,
    load_or_create_host_key,
    load_private_key,
    load_public_key,
    private_key_openssh_bytes,
    public_key_blob,
    public_key_line,
)


def keygen(*args: str | pathlib.Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-q", *map(str, args)], check=True, capture_output=True, text=True
    )
    return out.stdout


def keygen_fp(path: pathlib.Path) -> str:
    return keygen("-l", "-E", "sha256", "-f", path).split()[1]


@pytest.fixture(scope="module")
def kdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("keys")
    keygen("-t", "ed25519", "-N", "", "-C", "alice@test", "-f", d / "id_ed25519")
    keygen("-t", "rsa", "-b", "1024", "-N", "", "-f", d / "id_rsa")
    keygen("-t", "rsa", "-b", "1024", "-N", "", "-m", "PEM", "-f", d / "id_rsa_pem")
    keygen("-t", "ecdsa", "-N", "", "-f", d / "id_ecdsa")
    keygen("-t", "ed25519", "-N", "pass", "-f", d / "id_encrypted")
    keygen("-t", "ed25519", "-N", "", "-f", d / "ca")
    shutil.copy(d / "id_ed25519.pub", d / "user.pub")
    keygen("-s", d / "ca", "-I", "alice-cert", "-n", "alice", "-V", "-5m:+1h", d / "user.pub")
    shutil.copy(d / "id_ed25519.pub", d / "host.pub")
    keygen("-s", d / "ca", "-h", "-I", "host-cert", "-n", "h.example", d / "host.pub")
    return d


# --- private keys ---------------------------------------------------------------------------


def test_private_key_from_path_bytes_str_pathlike(kdir: pathlib.Path) -> None:
    path = kdir / "id_ed25519"
    expected = keygen_fp(path)
    text = path.read_text()
    for src in (str(path), path, path.read_bytes(), text):
        key = load_private_key(src)
        assert isinstance(key, Ed25519PrivateKey)
        assert fingerprint(key.public_key()) == expected


def test_private_key_text_with_leading_whitespace(kdir: pathlib.Path) -> None:
    text = "\n  " + (kdir / "id_ed25519").read_text()
    assert fingerprint(load_private_key(text).public_key()) == keygen_fp(kdir / "id_ed25519")


def test_private_key_tilde_path(kdir: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(kdir))
    key = load_private_key("~/id_ed25519")
    assert fingerprint(key.public_key()) == keygen_fp(kdir / "id_ed25519")


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("id_rsa", "only Ed25519 keys are supported (got ssh-rsa)"),
        ("id_ecdsa", "only Ed25519 keys are supported (got ecdsa-sha2-nistp256)"),
        ("id_encrypted", "is encrypted with a passphrase; not supported yet"),
        ("id_rsa_pem", "not an OpenSSH private key (-----BEGIN RSA PRIVATE KEY-----)"),
        ("id_ed25519.pub", "is a public key, not a private key"),
        ("nonexistent", "no such file"),
    ],
)
def test_private_key_errors(kdir: pathlib.Path, name: str, needle: str) -> None:
    path = kdir / name
    with pytest.raises(KeyLoadError) as ei:
        load_private_key(path)
    msg = str(ei.value)
    assert msg.startswith(f"identity {path}: ")
    assert needle in msg
    assert "\n" not in msg


def test_private_key_error_inline_and_what(kdir: pathlib.Path) -> None:
    with pytest.raises(KeyLoadError, match=r"^host key <inline>: only Ed25519"):
        load_private_key((kdir / "id_rsa").read_bytes(), what="host key")


def test_private_key_directory_and_garbage(kdir: pathlib.Path) -> None:
    with pytest.raises(KeyLoadError, match="is a directory"):
        load_private_key(kdir)
    (kdir / "garbage").write_bytes(b"\x00\x01 not a key")
    with pytest.raises(KeyLoadError, match="not an OpenSSH private key"):
        load_private_key(kdir / "garbage")
    broken = b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    with pytest.raises(KeyLoadError, match="not a valid OpenSSH private key"):
        load_private_key(broken)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=300))
def test_private_key_fuzz_only_keyloaderror(body: bytes) -> None:
    armoured = (
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
        + base64.encodebytes(b"openssh-key-v1\x00" + body)
        + b"-----END OPENSSH PRIVATE KEY-----\n"
    )
    for data in (armoured, body + b"\n"):
        with contextlib.suppress(KeyLoadError):
            load_private_key(data)


def test_private_key_roundtrip_through_ssh_keygen(tmp_path: pathlib.Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "k"
    path.write_bytes(private_key_openssh_bytes(key, "c"))
    path.chmod(0o600)
    derived = keygen("-y", "-f", path).split()
    assert derived[0] == "ssh-ed25519"
    assert base64.b64decode(derived[1]) == public_key_blob(key.public_key())
    assert fingerprint(load_private_key(path).public_key()) == fingerprint(key.public_key())


# --- public keys and fingerprints -------------------------------------------------------------


def test_public_key_sources_and_blob(kdir: pathlib.Path) -> None:
    pub = kdir / "id_ed25519.pub"
    line = pub.read_text()
    b64 = line.split()[1]
    for src in (pub, str(pub), line, line.encode(), "# comment\n" + line, kdir / "id_ed25519"):
        key = load_public_key(src)
        assert public_key_blob(key) == base64.b64decode(b64)
        assert fingerprint(key) == keygen_fp(pub)


def test_public_key_line_format(kdir: pathlib.Path) -> None:
    key = load_public_key(kdir / "id_ed25519.pub")
    line = public_key_line(key, "a  b\nc")
    assert line == " ".join((kdir / "id_ed25519.pub").read_text().split()[:2]) + " a b c"
    assert public_key_line(key).count(" ") == 1


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("id_rsa.pub", "only Ed25519 keys are supported (got ssh-rsa)"),
        ("id_ecdsa.pub", "(got ecdsa-sha2-nistp256)"),
        ("user-cert.pub", "is a certificate, not a plain public key"),
        ("id_rsa", "only Ed25519 keys are supported (got ssh-rsa)"),
    ],
)
def test_public_key_errors(kdir: pathlib.Path, name: str, needle: str) -> None:
    with pytest.raises(KeyLoadError, match=r"^public key ") as ei:
        load_public_key(kdir / name)
    assert needle in str(ei.value)


def test_public_key_inline_rsa_is_not_taken_for_a_path(kdir: pathlib.Path) -> None:
    with pytest.raises(KeyLoadError, match=r"<inline>: only Ed25519 .*ssh-rsa"):
        load_public_key((kdir / "id_rsa.pub").read_text().strip())


def test_fingerprint_blob_matches_ssh_keygen_for_rsa(kdir: pathlib.Path) -> None:
    blob = base64.b64decode((kdir / "id_rsa.pub").read_text().split()[1])
    assert fingerprint_blob(blob) == keygen_fp(kdir / "id_rsa.pub")


# --- certificates ------------------------------------------------------------------------


def test_load_certificate(kdir: pathlib.Path) -> None:
    path = kdir / "user-cert.pub"
    cert = load_certificate(path)
    assert cert.key_id == b"alice-cert"
    assert cert.valid_principals == [b"alice"]
    assert certificate_blob(cert) == base64.b64decode(path.read_text().split()[1])
    assert load_certificate(path.read_text()).key_id == b"alice-cert"
    # The certificate's key is the user's key: the fingerprint ssh-keygen shows for it.
    assert fingerprint(cert.public_key()) == keygen_fp(kdir / "id_ed25519.pub")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("host-cert.pub", "is a host certificate, not a user certificate"),
        ("id_ed25519.pub", "is a plain public key, not a certificate"),
        ("id_rsa.pub", "only ssh-ed25519-cert-v01@openssh.com certificates are supported"),
    ],
)
def test_certificate_errors(kdir: pathlib.Path, name: str, needle: str) -> None:
    with pytest.raises(KeyLoadError, match=r"^certificate ") as ei:
        load_certificate(kdir / name)
    assert needle in str(ei.value)


def test_certificate_bad_signature(kdir: pathlib.Path) -> None:
    kind, b64 = (kdir / "user-cert.pub").read_text().split()[:2]
    blob = bytearray(base64.b64decode(b64))
    blob[-1] ^= 1
    with pytest.raises(KeyLoadError, match="signature does not verify"):
        load_certificate(f"{kind} {base64.b64encode(bytes(blob)).decode()}")


# --- generation and the state directory ----------------------------------------------------


def test_generate_keypair(tmp_path: pathlib.Path) -> None:
    old = os.umask(0o077)
    try:
        fp = generate_keypair(tmp_path / "sub" / "id", comment="me@host")
    finally:
        os.umask(old)
    priv, pub = tmp_path / "sub" / "id", tmp_path / "sub" / "id.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert keygen_fp(priv) == fp == keygen_fp(pub)
    assert pub.read_text().endswith(" me@host\n")
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.endswith(".tmp")]

    with pytest.raises(FileExistsError, match=r"id already exists; refusing to overwrite"):
        generate_keypair(priv)
    assert keygen_fp(priv) == fp
    priv.unlink()
    with pytest.raises(FileExistsError, match=r"id\.pub already exists"):
        generate_keypair(priv)

    fp2 = generate_keypair(priv, overwrite=True)
    assert fp2 != fp and keygen_fp(priv) == fp2 == keygen_fp(pub)
    fp3 = generate_keypair(priv, overwrite=True)
    assert fp3 != fp2 and keygen_fp(priv) == fp3


def test_load_or_create_host_key(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state" / "wraith"
    key, created = load_or_create_host_key(state)
    assert created
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    path = state / keys.HOST_KEY_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keygen_fp(path) == fingerprint(key.public_key())
    key2, created2 = load_or_create_host_key(state)
    assert not created2
    assert fingerprint(key2.public_key()) == fingerprint(key.public_key())
    # A stale .pub alone does not block creating the key.
    path.unlink()
    key3, created3 = load_or_create_host_key(state)
    assert created3 and keygen_fp(path) == fingerprint(key3.public_key())


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WRAITH_STATE_DIR", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert default_state_dir() == tmp_path / ".local" / "state" / "wraith"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    assert default_state_dir() == tmp_path / ".local" / "state" / "wraith"
    monkeypatch.setenv("XDG_STATE_HOME", "/xdg")
    assert default_state_dir() == pathlib.Path("/xdg/wraith")
    monkeypatch.setenv("WRAITH_STATE_DIR", "~/w")
    assert default_state_dir() == tmp_path / "w"
