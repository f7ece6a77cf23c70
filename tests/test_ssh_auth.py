"""authorized_keys parsing and the server's publickey decision, against ssh-keygen output."""

from __future__ import annotations

import base64
import calendar
import pathlib
import shutil
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wraith.ssh.auth import AuthPolicy, AuthResult, Permissions, refused_method
from wraith.ssh.authorized_keys import (
    AuthorizedKeysError,
    KeyOptions,
    load_authorized_keys,
    match_cidr_list,
    match_host_patterns,
    match_pattern_list,
    parse_authorized_keys,
)
from wraith.ssh.keys import KeyLoadError, fingerprint_blob, load_public_key


def keygen(*args: str | pathlib.Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-q", *map(str, args)], check=True, capture_output=True, text=True
    )
    return out.stdout


def keygen_fp(path: pathlib.Path) -> str:
    return keygen("-l", "-E", "sha256", "-f", path).split()[1]


def line_of(path: pathlib.Path) -> str:
    return " ".join(path.read_text().split()[:2])


def blob_of(path: pathlib.Path) -> bytes:
    return base64.b64decode(path.read_text().split()[1])


class Keys:
    def __init__(self, d: pathlib.Path) -> None:
        self.d = d
        for name in ("user", "other", "ca", "ca2"):
            keygen("-t", "ed25519", "-N", "", "-C", name, "-f", d / name)
        keygen("-t", "rsa", "-b", "1024", "-N", "", "-f", d / "rsa")

    def cert(self, name: str, *args: str, ca: str = "ca") -> bytes:
        """Sign the user key as ``name-cert.pub``; return the certificate blob."""
        shutil.copy(self.d / "user.pub", self.d / f"{name}.pub")
        keygen("-s", self.d / ca, "-I", f"id-{name}", "-z", "42", *args, self.d / f"{name}.pub")
        return blob_of(self.d / f"{name}-cert.pub")

    def line(self, name: str) -> str:
        return line_of(self.d / f"{name}.pub")

    def blob(self, name: str) -> bytes:
        return blob_of(self.d / f"{name}.pub")


@pytest.fixture(scope="module")
def k(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("auth"))


def policy(text: str, **kw: object) -> AuthPolicy:
    return AuthPolicy(parse_authorized_keys(text, source="ak"), **kw)  # type: ignore[arg-type]


def check(p: AuthPolicy, blob: bytes, user: str = "alice", ip: str = "127.0.0.1") -> AuthResult:
    return p.check(username=user, key_blob=blob, source_ip=ip, now=time.time())


# --- authorized_keys parsing --------------------------------------------------------------


def test_parse_plain_and_comment(k: Keys) -> None:
    text = f"# header\n\n   {k.line('user')} alice laptop  \r\n{k.line('rsa')}\n"
    warnings: list[str] = []
    entries = parse_authorized_keys(text, source="f", warnings=warnings)
    assert [e.source for e in entries] == ["f:3", "f:4"]
    assert entries[0].comment == "alice laptop"
    assert entries[0].blob == k.blob("user")
    assert entries[0].options == KeyOptions()
    assert entries[0].unusable_reason is None
    assert entries[1].key_type == "ssh-rsa"
    assert entries[1].unusable_reason == "key type ssh-rsa is not supported"
    assert warnings == ["f:4: key type ssh-rsa is not supported; this entry never matches"]


def test_parse_without_trailing_newline_and_one_line_at_a_time(k: Keys) -> None:
    lines = [f'from="10.0.0.0/8" {k.line("user")}', f"restrict {k.line('other')} c"]
    whole = parse_authorized_keys("\n".join(lines), source="f")
    pieces = [parse_authorized_keys(line, source="f")[0] for line in lines]
    assert [e.blob for e in whole] == [e.blob for e in pieces]
    assert [e.options for e in whole] == [e.options for e in pieces]


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ("cert-authority", KeyOptions(cert_authority=True)),
        ('principals="a,b"', KeyOptions(principals=("a", "b"))),
        ('from="10.0.0.0/8,!10.1.*,*.example.com"', None),
        ("restrict", KeyOptions(port_forwarding=False)),
        ("no-port-forwarding", KeyOptions(port_forwarding=False)),
        ("restrict,port-forwarding", KeyOptions(port_forwarding=True)),
        ("port-forwarding,restrict", KeyOptions(port_forwarding=False)),
        ("RESTRICT,Port-Forwarding", KeyOptions(port_forwarding=True)),
        (
            'permitopen="localhost:80",permitopen="*:443",permitopen="[::1]:*"',
            KeyOptions(permitopen=(("localhost", "80"), ("*", "443"), ("::1", "*"))),
        ),
        (
            'permitlisten="8080",permitlisten="0.0.0.0:9000",permitlisten="[::]:*"',
            KeyOptions(permitlisten=((None, "8080"), ("0.0.0.0", "9000"), ("::", "*"))),
        ),
        ('expiry-time="20300102"', KeyOptions(expiry_time=calendar.timegm((2030, 1, 2, 0, 0, 0)))),
        (
            'expiry-time="203001021304",expiry-time="20300102130405Z"',
            KeyOptions(expiry_time=calendar.timegm((2030, 1, 2, 13, 4, 0))),
        ),
        (
            "no-pty,no-agent-forwarding,no-X11-forwarding,no-user-rc,pty,agent-forwarding,"
            'X11-forwarding,user-rc,no-touch-required,command="echo \\"hi there\\"",'
            'environment="A=b c",tunnel="0"',
            KeyOptions(),
        ),
        ("verify-required", KeyOptions(verify_required=True)),
    ],
)
def test_parse_options(k: Keys, opts: str, expected: KeyOptions | None) -> None:
    [entry] = parse_authorized_keys(f"{opts} {k.line('user')} comment", source="f")
    assert entry.blob == k.blob("user")
    assert entry.comment == "comment"
    if expected is not None:
        assert entry.options == expected
    else:
        assert entry.options.from_patterns == ("10.0.0.0/8", "!10.1.*", "*.example.com")


def test_quoted_value_keeps_blanks_and_escaped_quotes(k: Keys) -> None:
    [entry] = parse_authorized_keys(f'principals="a b,c\\"d" {k.line("user")}', source="f")
    assert entry.options.principals == ("a b", 'c"d')


@pytest.mark.parametrize(
    ("opts", "needle"),
    [
        ("frobnicate", "option 'frobnicate' is not understood by Wraith"),
        ('no-pty,bogus="x"', "option 'bogus' is not understood"),
        ("principals=a", "needs a double-quoted value"),
        ('principals="a', "missing closing quote"),
        ("principals", "option principals needs a value"),
        ('no-pty="x"', "option no-pty takes no value"),
        ('from="10.0.0.1/8"', "bad CIDR block"),
        ('from="a",from="b"', "from= given twice"),
        ('principals="a,,b"', "empty entry"),
        ('expiry-time="2030"', "expected YYYYMMDD"),
        ('expiry-time="20301301"', "not a valid date"),
        ('permitopen="localhost"', "expected host:port"),
        ('permitopen="::1:22"', "IPv6 address needs brackets"),
        ('permitopen="h:99999"', "bad port"),
        ('permitopen="h:x"', "bad port"),
        ('permitlisten=":80"', "empty host"),
        ("no-pty,,restrict", "cannot parse options"),
        ('no-pty"', "unexpected"),
    ],
)
def test_parse_option_errors_name_file_and_line(k: Keys, opts: str, needle: str) -> None:
    text = f"{k.line('other')}\n# c\n{opts} {k.line('user')}\n"
    with pytest.raises(AuthorizedKeysError) as ei:
        parse_authorized_keys(text, source="/etc/ak")
    msg = str(ei.value)
    assert msg.startswith("/etc/ak:3: ")
    assert needle in msg


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("ssh-ed25519", "ssh-ed25519 with no key"),
        ("ssh-ed25519 AAAA", "malformed ssh-ed25519 key"),
        ("ssh-ed25519 !!!notbase64", "malformed ssh-ed25519 key"),
        ("no-pty AAAAC3Nz", "expected a key type"),
        ("no-pty", "options but no key"),
    ],
)
def test_parse_key_errors(line: str, needle: str) -> None:
    with pytest.raises(AuthorizedKeysError, match=r"^f:1: ") as ei:
        parse_authorized_keys(line, source="f")
    assert needle in str(ei.value)


def test_rsa_ed25519_type_mismatch_is_an_error(k: Keys) -> None:
    b64 = k.line("rsa").split()[1]
    with pytest.raises(AuthorizedKeysError, match="malformed ssh-ed25519"):
        parse_authorized_keys(f"ssh-ed25519 {b64}", source="f")


def test_unsupported_types_are_kept_even_when_broken() -> None:
    warnings: list[str] = []
    entries = parse_authorized_keys(
        "sk-ssh-ed25519@openssh.com AAAA x\necdsa-sha2-nistp256 !!!", warnings=warnings
    )
    assert [e.key_type for e in entries] == ["sk-ssh-ed25519@openssh.com", "ecdsa-sha2-nistp256"]
    assert len(warnings) == 2


def test_load_authorized_keys_sources(
    k: Keys, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = f"{k.line('user')}\n"
    path = tmp_path / "ak"
    path.write_text(text)
    for src in (path, str(path), text, text.encode(), k.line("user"), f"no-pty {k.line('user')}"):
        [entry] = load_authorized_keys(src)
        assert entry.blob == k.blob("user")
    assert load_authorized_keys(path)[0].source == f"{path}:1"
    assert load_authorized_keys(text)[0].source == "authorized_keys:1"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_authorized_keys(None) == []  # missing default file
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "authorized_keys").write_text(text)
    assert len(load_authorized_keys(None)) == 1
    assert len(load_authorized_keys("~/.ssh/authorized_keys")) == 1
    with pytest.raises(AuthorizedKeysError, match="no such file"):
        load_authorized_keys(tmp_path / "missing")
    path.write_text("bogus " + text)
    with pytest.raises(AuthorizedKeysError) as ei:
        load_authorized_keys(path)
    assert str(ei.value).startswith(f"{path}:1: option 'bogus' is not understood")


# --- patterns ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "ip", "host", "expected"),
    [
        (["10.0.0.0/8"], "10.1.2.3", None, True),
        (["10.0.0.0/8"], "11.1.2.3", None, False),
        (["10.0.0.0/8", "!10.1.0.0/16"], "10.1.2.3", None, False),
        (["!10.1.0.0/16", "10.0.0.0/8"], "10.2.2.3", None, True),
        (["!10.1.0.0/16"], "192.168.0.1", None, False),  # a negation alone never accepts
        (["10.1.2.*"], "10.1.2.3", None, True),
        (["10.1.2.?"], "10.1.2.33", None, False),
        (["*"], "::1", None, True),
        (["::1"], "::1", None, True),
        (["2001:db8::/32"], "2001:db8::5", None, True),
        (["2001:db8::/32"], "10.0.0.1", None, False),
        (["10.0.0.0/8"], "::ffff:10.0.0.1", None, True),
        (["fe80::/10"], "fe80::1%eth0", None, True),
        (["*.example.com"], "10.0.0.1", "ssh.EXAMPLE.com", True),
        (["*.example.com", "!bad.example.com"], "10.0.0.1", "bad.example.com", False),
        (["*.example.com"], "10.0.0.1", None, False),
        (["10.0.0.1/99"], "10.0.0.1", None, False),  # malformed CIDR never matches
        ([" 10.0.0.1 "], "10.0.0.1", None, True),
        ([], "10.0.0.1", None, False),
    ],
)
def test_match_host_patterns(
    patterns: list[str], ip: str, host: str | None, expected: bool
) -> None:
    assert match_host_patterns(patterns, ip, host) is expected


def test_match_pattern_list() -> None:
    assert match_pattern_list("[h.example]:2222", ["[*.example]:2222"])
    assert not match_pattern_list("h.example", ["*.example", "!h.example"])
    assert match_pattern_list("H.Example", ["h.example"])
    assert not match_pattern_list("x", ["!y"])


def test_match_cidr_list() -> None:
    assert match_cidr_list("10.1.2.3", "10.0.0.0/8")
    assert match_cidr_list("192.168.1.1", "10.0.0.0/8, 192.168.1.1")
    assert not match_cidr_list("127.0.0.1", "10.0.0.0/8")
    assert not match_cidr_list("not-an-ip", "10.0.0.0/8")
    for bad in ("10.0.0.0/8,", "nonsense", "10.*"):
        with pytest.raises(ValueError):
            match_cidr_list("10.1.2.3", bad)


# --- permissions ---------------------------------------------------------------------------


def test_permissions_open() -> None:
    assert Permissions().allows_open("anything", 1)
    assert not Permissions(port_forwarding=False).allows_open("h", 80)
    p = Permissions(permitopen=(("LocalHost", "80"), ("*", "443"), ("::1", "*")))
    assert p.allows_open("localhost", 80)
    assert not p.allows_open("localhost", 81)
    assert p.allows_open("example.com", 443)
    assert p.allows_open("::1", 22) and p.allows_open("[::1]", 22)
    assert not p.allows_open("127.0.0.1", 80)  # compared as written, never resolved
    closed = Permissions(port_forwarding=False, permitopen=(("*", "*"),))
    assert not closed.allows_open("h", 1)


def test_permissions_listen() -> None:
    assert Permissions().allows_listen("0.0.0.0", 80)
    p = Permissions(permitlisten=((None, "8080"), ("0.0.0.0", "9000"), ("*", "7000")))
    assert p.allows_listen("localhost", 8080)
    assert p.allows_listen("127.0.0.1", 8080) and p.allows_listen("::1", 8080)
    assert not p.allows_listen("0.0.0.0", 8080)
    assert not p.allows_listen("", 8080)
    assert p.allows_listen("0.0.0.0", 9000) and not p.allows_listen("localhost", 9000)
    assert p.allows_listen("anything", 7000)
    assert not p.allows_listen("localhost", 7001)
    assert not Permissions(port_forwarding=False).allows_listen("localhost", 8080)


def test_permissions_from_authorized_keys(k: Keys) -> None:
    p = policy(f'restrict,port-forwarding,permitopen="db:5432" {k.line("user")}')
    r = check(p, k.blob("user"))
    assert r.accepted and r.permissions is not None
    assert r.permissions.allows_open("db", 5432)
    assert not r.permissions.allows_open("db", 5433)
    assert r.permissions.allows_listen("localhost", 1)
    r = check(policy(f"restrict {k.line('user')}"), k.blob("user"))
    assert r.accepted and r.permissions == Permissions(port_forwarding=False)


# --- plain keys ----------------------------------------------------------------------------


def test_plain_key_accepted_for_any_user(k: Keys) -> None:
    p = policy(f"{k.line('rsa')}\n{k.line('user')}\n")
    fp = keygen_fp(k.d / "user.pub")
    for user in ("alice", "root", ""):
        r = check(p, k.blob("user"), user=user)
        assert r == AuthResult(
            accepted=True, reason="ok", fingerprint=fp, matched="ak:2", permissions=Permissions()
        )
    r = check(p, k.blob("other"))
    assert (r.accepted, r.reason, r.fingerprint) == (
        False,
        "unknown-key",
        keygen_fp(k.d / "other.pub"),
    )
    assert p.warnings == ["ak:1: key type ssh-rsa is not supported; never matches"]


def test_rsa_key_is_unsupported_even_when_listed(k: Keys) -> None:
    r = check(policy(k.line("rsa")), k.blob("rsa"))
    assert (r.accepted, r.reason, r.fingerprint) == (
        False,
        "unsupported-key-type",
        keygen_fp(k.d / "rsa.pub"),
    )
    assert r.detail == "type ssh-rsa"


def test_cert_authority_line_does_not_accept_its_key_as_a_plain_key(k: Keys) -> None:
    assert check(policy(f"cert-authority {k.line('user')}"), k.blob("user")).reason == (
        "unknown-key"
    )


def test_from_option(k: Keys) -> None:
    p = policy(f'from="10.0.0.0/8,!10.9.0.0/16" {k.line("user")}')
    assert check(p, k.blob("user"), ip="10.1.2.3").accepted
    assert check(p, k.blob("user"), ip="10.9.2.3").reason == "from-mismatch"
    assert check(p, k.blob("user"), ip="127.0.0.1").reason == "from-mismatch"


def test_same_key_on_two_lines_first_acceptable_wins(k: Keys) -> None:
    p = policy(f'from="10.0.0.0/8" {k.line("user")}\nrestrict {k.line("user")}\n')
    r = check(p, k.blob("user"), ip="10.0.0.1")
    assert r.matched == "ak:1" and r.permissions == Permissions()
    r = check(p, k.blob("user"), ip="192.0.2.1")
    assert r.matched == "ak:2" and r.permissions == Permissions(port_forwarding=False)
    p = policy(f'from="10.0.0.0/8" {k.line("user")}\nexpiry-time="20000101" {k.line("user")}\n')
    r = check(p, k.blob("user"), ip="192.0.2.1")
    assert (r.reason, r.matched) == ("from-mismatch", "ak:1")


def test_expiry_time(k: Keys) -> None:
    assert check(policy(f'expiry-time="20000101" {k.line("user")}'), k.blob("user")).reason == (
        "key-expired"
    )
    assert check(policy(f'expiry-time="29991231" {k.line("user")}'), k.blob("user")).accepted
    p = policy(f'expiry-time="20300101" {k.line("user")}')
    t = calendar.timegm((2030, 1, 1, 0, 0, 0))
    assert p.check(username="a", key_blob=k.blob("user"), source_ip="::1", now=t).accepted
    assert not p.check(username="a", key_blob=k.blob("user"), source_ip="::1", now=t + 1).accepted


def test_verify_required_key_never_matches(k: Keys) -> None:
    p = policy(f"verify-required {k.line('user')}")
    assert check(p, k.blob("user")).reason == "key-verify-required"
    assert p.warnings and "verify-required" in p.warnings[0]


def test_malformed_and_odd_blobs(k: Keys) -> None:
    p = policy(k.line("user"))
    good = k.blob("user")
    for blob, reason in [
        (b"", "malformed-key"),
        (b"\x00\x00\x00", "malformed-key"),
        (b"\xff\xff\xff\xff", "malformed-key"),
        (good[:-1], "malformed-key"),
        (good + b"\x00", "malformed-key"),
        (b"\x00\x00\x00\x07ssh-dss", "unsupported-key-type"),
        (b"\x00\x00\x00\x03\xff\xfe\n", "malformed-key"),
        (b"\x00\x00\x00\x20ssh-ed25519-cert-v01@openssh.com", "malformed-key"),
    ]:
        r = check(p, blob)
        assert (r.accepted, r.reason) == (False, reason), blob
        assert r.fingerprint == fingerprint_blob(blob)


def test_refused_method() -> None:
    r = refused_method("password")
    assert r == AuthResult(
        accepted=False, reason="method-not-allowed", fingerprint="-", detail="method password"
    )
    assert AuthPolicy.refused_method("keyboard-interactive").reason == "method-not-allowed"
    assert " " not in refused_method("pass word\nx").detail.split(" ", 1)[1]


# --- certificates --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(k: Keys) -> dict[str, bytes]:
    return {
        "valid": k.cert("valid", "-n", "alice,bob", "-V", "-5m:+1h"),
        "expired": k.cert("expired", "-n", "alice", "-V", "20200101:20200102"),
        "future": k.cert("future", "-n", "alice", "-V", "+1d:+2d"),
        "wrong": k.cert("wrong", "-n", "carol", "-V", "-5m:+1h"),
        "otherca": k.cert("otherca", "-n", "alice", "-V", "-5m:+1h", ca="ca2"),
        "host": k.cert("host", "-h", "-n", "alice", "-V", "-5m:+1h"),
        "srcaddr": k.cert("srcaddr", "-n", "alice", "-O", "source-address=10.0.0.0/8,::1"),
        "force": k.cert("force", "-n", "alice", "-O", "force-command=/bin/true"),
        "verify": k.cert("verify", "-n", "alice", "-O", "verify-required"),
        "critical": k.cert("critical", "-n", "alice", "-O", "critical:foo@example.com=bar"),
        "nopf": k.cert("nopf", "-n", "alice", "-O", "no-port-forwarding"),
        "clear": k.cert("clear", "-n", "alice", "-O", "clear", "-O", "permit-port-forwarding"),
        "empty": k.cert("empty", "-V", "-5m:+1h"),
        "weird-id": k.cert("weird", "-n", "alice"),
    }


@pytest.fixture(scope="module")
def ca_policy(k: Keys) -> AuthPolicy:
    return policy(f"cert-authority {k.line('ca')} the CA\n")


@pytest.mark.parametrize(
    ("cert", "user", "ip", "reason"),
    [
        ("valid", "alice", "127.0.0.1", "ok"),
        ("valid", "bob", "127.0.0.1", "ok"),
        ("valid", "mallory", "127.0.0.1", "cert-wrong-principal"),
        ("expired", "alice", "127.0.0.1", "cert-expired"),
        ("future", "alice", "127.0.0.1", "cert-not-yet-valid"),
        ("wrong", "alice", "127.0.0.1", "cert-wrong-principal"),
        ("otherca", "alice", "127.0.0.1", "cert-untrusted-ca"),
        ("host", "alice", "127.0.0.1", "cert-not-user"),
        ("srcaddr", "alice", "127.0.0.1", "cert-source-address"),
        ("srcaddr", "alice", "10.1.2.3", "ok"),
        ("srcaddr", "alice", "::ffff:10.1.2.3", "ok"),
        ("srcaddr", "alice", "::1", "ok"),
        ("force", "alice", "127.0.0.1", "ok"),
        ("verify", "alice", "127.0.0.1", "cert-verify-required"),
        ("critical", "alice", "127.0.0.1", "cert-unknown-critical-option"),
        ("nopf", "alice", "127.0.0.1", "cert-no-port-forwarding"),
        ("clear", "alice", "127.0.0.1", "ok"),
        ("empty", "alice", "127.0.0.1", "cert-empty-principals"),
    ],
)
def test_certificates(
    k: Keys,
    certs: dict[str, bytes],
    ca_policy: AuthPolicy,
    cert: str,
    user: str,
    ip: str,
    reason: str,
) -> None:
    r = check(ca_policy, certs[cert], user=user, ip=ip)
    assert (r.accepted, r.reason) == (reason == "ok", reason)
    assert r.fingerprint == keygen_fp(k.d / "user.pub")
    ca = "ca2" if cert == "otherca" else "ca"
    assert r.detail.startswith(f"cert ID id-{cert} serial 42 CA {keygen_fp(k.d / f'{ca}.pub')}")
    assert (r.permissions is not None) == r.accepted
    # Refusals decided by the CA line (principals) name it; certificate-only ones do not.
    by_line = reason in ("ok", "cert-wrong-principal", "cert-empty-principals")
    assert r.matched == ("ak:1" if by_line else "")


def test_certificate_accepted_result(
    k: Keys, certs: dict[str, bytes], ca_policy: AuthPolicy
) -> None:
    r = check(ca_policy, certs["valid"])
    assert r == AuthResult(
        accepted=True,
        reason="ok",
        fingerprint=keygen_fp(k.d / "user.pub"),
        detail=f"cert ID id-valid serial 42 CA {keygen_fp(k.d / 'ca.pub')}",
        matched="ak:1",
        permissions=Permissions(),
    )


def test_unknown_critical_option_is_named(certs: dict[str, bytes], ca_policy: AuthPolicy) -> None:
    r = check(ca_policy, certs["critical"])
    assert r.detail.endswith(" option foo@example.com")


def test_certificate_is_not_accepted_through_a_plain_key_line(
    k: Keys, certs: dict[str, bytes]
) -> None:
    p = policy(k.line("user"))
    assert check(p, certs["valid"]).reason == "cert-untrusted-ca"
    # ... and the CA key listed as a plain key is no CA.
    assert check(policy(k.line("ca")), certs["valid"]).reason == "cert-untrusted-ca"


def test_empty_principals_allowed_by_principals_option(k: Keys, certs: dict[str, bytes]) -> None:
    p = policy(f'cert-authority,principals="alice,dave" {k.line("ca")}')
    assert check(p, certs["empty"], user="alice").accepted
    assert check(p, certs["empty"], user="bob").reason == "cert-wrong-principal"
    # A non-empty list must name the user, and the line must allow the user too.
    assert check(p, certs["valid"], user="alice").accepted
    assert check(p, certs["valid"], user="bob").reason == "cert-wrong-principal"


def test_ca_line_options_apply(k: Keys, certs: dict[str, bytes]) -> None:
    p = policy(f'cert-authority,from="10.0.0.0/8",restrict {k.line("ca")}')
    assert check(p, certs["valid"], ip="127.0.0.1").reason == "from-mismatch"
    r = check(p, certs["valid"], ip="10.0.0.1")
    assert r.accepted and r.permissions == Permissions(port_forwarding=False)
    p = policy(f'cert-authority,expiry-time="20000101" {k.line("ca")}')
    assert check(p, certs["valid"]).reason == "key-expired"
    p = policy(f"cert-authority,verify-required {k.line('ca')}")
    assert check(p, certs["valid"]).reason == "cert-verify-required"


def test_two_ca_lines_first_acceptable_wins(k: Keys, certs: dict[str, bytes]) -> None:
    p = policy(
        f'cert-authority,from="10.0.0.0/8" {k.line("ca")}\n'
        f'cert-authority,principals="zed" {k.line("ca")}\n'
        f"cert-authority,restrict {k.line('ca')}\n"
    )
    r = check(p, certs["valid"], ip="10.0.0.1")
    assert (r.accepted, r.matched) == (True, "ak:1")
    r = check(p, certs["valid"], ip="192.0.2.1")
    assert (r.accepted, r.matched) == (True, "ak:3")


def test_cert_authority_argument(k: Keys, certs: dict[str, bytes], tmp_path: pathlib.Path) -> None:
    ca_key = load_public_key(k.d / "ca.pub")
    p = AuthPolicy([], cert_authorities=[ca_key])
    r = check(p, certs["valid"])
    assert (r.accepted, r.matched) == (True, "--cert-authority")
    assert check(p, certs["empty"]).reason == "cert-empty-principals"

    cafile = tmp_path / "cas"
    cafile.write_text(f"# CAs\n{k.line('ca2')}\n{k.line('ca')}\n")
    ak = tmp_path / "ak"
    ak.write_text(k.line("other") + "\n")
    p = AuthPolicy.from_sources(ak, [cafile])
    assert check(p, certs["valid"]).matched == f"cert authority {cafile}:3"
    assert check(p, certs["otherca"]).accepted
    assert check(p, k.blob("other")).accepted
    assert check(p, k.blob("user")).reason == "unknown-key"
    assert p.key_count == 3
    # A CA file may also be given inline, and its options are honoured.
    p = AuthPolicy.from_sources(ak, [f'principals="alice" {k.line("ca")}'])
    assert check(p, certs["empty"]).accepted


def test_cert_authority_file_errors(k: Keys, tmp_path: pathlib.Path) -> None:
    with pytest.raises(KeyLoadError, match="only Ed25519 CA keys are supported"):
        AuthPolicy.from_sources(k.line("user"), [k.line("rsa")])
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(KeyLoadError, match="no CA key found"):
        AuthPolicy.from_sources(k.line("user"), [tmp_path / "empty"])
    with pytest.raises(KeyLoadError, match="no such file"):
        AuthPolicy.from_sources(k.line("user"), [tmp_path / "missing"])


def test_bad_signature_and_weird_key_id(k: Keys, certs: dict[str, bytes]) -> None:
    p = policy(f"cert-authority {k.line('ca')}")
    blob = bytearray(certs["valid"])
    blob[-1] ^= 0x01
    assert check(p, bytes(blob)).reason == "cert-bad-signature"
    shutil.copy(k.d / "user.pub", k.d / "inj.pub")
    keygen("-s", k.d / "ca", "-I", 'evil id"\nx', "-n", "alice", k.d / "inj.pub")
    r = check(p, blob_of(k.d / "inj-cert.pub"))
    assert r.accepted
    assert "\n" not in r.detail and r.detail.split()[2] == "evil\\x20id\\x22\\x0ax"


def test_time_boundaries(k: Keys, certs: dict[str, bytes]) -> None:
    p = policy(f"cert-authority {k.line('ca')}")
    shutil.copy(k.d / "user.pub", k.d / "window.pub")
    keygen("-s", k.d / "ca", "-I", "w", "-n", "a", "-V", "20300101000000Z:20300102000000Z",
           k.d / "window.pub")  # fmt: skip
    blob = blob_of(k.d / "window-cert.pub")
    start = calendar.timegm((2030, 1, 1, 0, 0, 0))
    end = calendar.timegm((2030, 1, 2, 0, 0, 0))
    for now, reason in [
        (start - 1, "cert-not-yet-valid"),
        (start, "ok"),
        (end - 1, "ok"),
        (end, "cert-expired"),
    ]:
        r = p.check(username="a", key_blob=blob, source_ip="127.0.0.1", now=now)
        assert r.reason == reason, now


# --- never raises --------------------------------------------------------------------------


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(max_size=400), ip=st.text(max_size=40), user=st.text(max_size=20))
def test_check_never_raises_random(ca_policy: AuthPolicy, blob: bytes, ip: str, user: str) -> None:
    r = ca_policy.check(username=user, key_blob=blob, source_ip=ip, now=time.time())
    assert not r.accepted and r.reason and " " not in r.reason


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_check_never_raises_mutated_cert(
    certs: dict[str, bytes], ca_policy: AuthPolicy, data: st.DataObject
) -> None:
    base = bytearray(certs[data.draw(st.sampled_from(sorted(certs)))])
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, len(base)))
        if op == "flip" and pos < len(base):
            base[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del base[pos : pos + data.draw(st.integers(1, 8))]
        else:
            base[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    r = ca_policy.check(
        username="alice", key_blob=bytes(base), source_ip="10.1.2.3", now=time.time()
    )
    assert r.reason and " " not in r.reason
