"""contrib/fail2ban against real ``wraith serve`` logs, checked with Debian's fail2ban-regex.

The filter must count exactly the ``auth result=failure`` lines, never a success or
a probe, and take the address from the real ``src=`` field even when the user name
was chosen to look like another one.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Keys
from helpers import WRAITH, WraithServer, clean_env, start_client, start_server

from wraith.logs import TEXT_FORMAT
from wraith.ssh.authlog import log_auth, quote

ROOT = Path(__file__).resolve().parent.parent
FILTER = ROOT / "contrib" / "fail2ban" / "filter.d" / "wraith.conf"
HOSTILE_USER = 'x" src=6.6.6.6 port=1 '


def _fail2ban_regex_binary() -> str:
    found = shutil.which("fail2ban-regex") or "/usr/bin/fail2ban-regex"
    if not os.path.exists(found):
        pytest.fail("fail2ban-regex is missing: run scripts/test.sh, which installs fail2ban")
    return found


def _fail2ban_regex(logfile: Path, *options: str) -> str:
    out = subprocess.run(
        [_fail2ban_regex_binary(), *options, str(logfile), str(FILTER)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@dataclass
class Report:
    matched: list[str]
    matched_count: int
    hosts: list[str]


def _run_filter(logfile: Path) -> Report:
    text = _fail2ban_regex(logfile, "--print-all-matched")
    summary = re.search(r"^Lines: \d+ lines, \d+ ignored, (\d+) matched, \d+ missed", text, re.M)
    assert summary, text
    matched: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("|- Matched line(s):"):
            inside = True
        elif inside and line.startswith("`-"):
            break
        elif inside and line.startswith("|  "):
            matched.append(line[3:])
    hosts = _fail2ban_regex(logfile, "--out", "ip").split()
    return Report(matched=matched, matched_count=int(summary.group(1)), hosts=hosts)


def _wait_for_count(server: WraithServer, needle: str, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while sum(needle in line for line in list(server.proc.stderr)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} {needle!r} lines\n" + server.proc.output())
        time.sleep(0.05)


def _failed_wraith_connect(backend: str, server: WraithServer, keys: Keys, user: str) -> None:
    out = subprocess.run(
        [
            *WRAITH,
            "connect",
            "--backend",
            backend,
            "-i",
            str(keys.other),
            "-l",
            user,
            "--host-key-fingerprint",
            server.fingerprint,
            "-D",
            "127.0.0.1:0",
            server.target,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert out.returncode == 4, out.stdout + out.stderr


def _failed_openssh(server: WraithServer, keys: Keys) -> None:
    # ssh first asks whether the key would do (no signature); Wraith refuses
    # that query and logs it as a failure, so ssh never signs.
    out = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(keys.other),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-p",
            str(server.port),
            "-W",
            "127.0.0.1:9",
            "root@127.0.0.1",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 255, out.stdout + out.stderr
    assert "Permission denied" in out.stderr, out.stderr


def test_filter_counts_exactly_the_failures(backend: str, tmp_path: Path, keys: Keys) -> None:
    if shutil.which("ssh") is None:
        pytest.fail("ssh is missing: run scripts/test.sh, which installs openssh-client")
    _fail2ban_regex_binary()
    server = start_server(backend, tmp_path, authorized_keys=keys.authorized_keys)
    try:
        for user in ("alice", "root", HOSTILE_USER):
            _failed_wraith_connect(backend, server, keys, user)
        _failed_openssh(server, keys)
        for _ in range(2):
            client = start_client(backend, server, keys.client, args=["-D", "127.0.0.1:0"])
            client.proc.stop()
        _wait_for_count(server, "auth result=failure", 4)
        _wait_for_count(server, "auth result=success", 2)
    finally:
        server.proc.stop()

    lines = list(server.proc.stderr)
    logfile = tmp_path / "serve.log"
    logfile.write_text("\n".join(lines) + "\n", encoding="utf-8")

    failures = [x for x in lines if " auth result=failure " in x]
    successes = [x for x in lines if " auth result=success " in x]
    probes = [x for x in lines if " auth result=probe " in x]
    assert len(failures) >= 4, server.proc.output()
    assert len(successes) == 2, server.proc.output()
    assert probes, "OpenSSH's 'none' request should be logged as a probe\n" + server.proc.output()
    assert any(quote(HOSTILE_USER) in x for x in failures), server.proc.output()

    report = _run_filter(logfile)
    assert report.matched_count == len(failures), report
    assert sorted(report.matched) == sorted(failures)
    assert not any("result=success" in x or "result=probe" in x for x in report.matched)
    assert report.hosts == ["127.0.0.1"] * len(failures), report.hosts


class _Refused:
    accepted = False
    reason = "unknown-key"
    fingerprint = "SHA256:" + "A" * 43


class _Accepted:
    accepted = True
    reason = "ok"
    fingerprint = "SHA256:" + "B" * 43


def test_hostile_user_name_cannot_choose_the_banned_address(tmp_path: Path) -> None:
    _fail2ban_regex_binary()
    forged_tail = (
        "2026-01-01T00:00:00 wraith[1]: WARNING wraith.auth: auth result=failure "
        'method=publickey user="y" src=6.6.6.6 port=1 fingerprint=- reason=unknown-key'
    )
    hostile = [
        HOSTILE_USER,
        'x\\" src=6.6.6.6 port=1 ',
        'a" src=6.6.6.6 port=1 fingerprint=- reason=unknown-key',
        "x\n" + forged_tail,
    ]
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter(TEXT_FORMAT, "%Y-%m-%dT%H:%M:%S"))
    auth_log = logging.getLogger("wraith.auth")
    old_level, old_propagate = auth_log.level, auth_log.propagate
    auth_log.addHandler(handler)
    auth_log.setLevel(logging.INFO)
    auth_log.propagate = False
    try:
        for user in hostile:
            src = ("203.0.113.9", 40000)
            log_auth(method="publickey", username=user, source=src, result=_Refused())
            log_auth(method="publickey", username=user, source=src, result=_Accepted())
            log_auth(method="none", username=user, source=src, result=_Refused())
    finally:
        auth_log.removeHandler(handler)
        auth_log.setLevel(old_level)
        auth_log.propagate = old_propagate

    text = buf.getvalue()
    lines = text.splitlines()
    assert len(lines) == 3 * len(hostile), text  # no user name split a line
    for user in hostile:
        assert quote(user) in text
    logfile = tmp_path / "hostile.log"
    logfile.write_text(text, encoding="utf-8")

    report = _run_filter(logfile)
    assert report.matched_count == len(hostile), report
    assert all("result=failure" in x for x in report.matched), report.matched
    assert report.hosts == ["203.0.113.9"] * len(hostile), report.hosts
    assert "6.6.6.6" not in report.hosts


def test_filter_is_anchored_even_against_an_unescaped_user(tmp_path: Path) -> None:
    # Defence in depth: quote() makes these lines impossible, but if a user name
    # ever reached the log raw, the anchored regex must still not ban 6.6.6.6.
    _fail2ban_regex_binary()
    head = (
        "2026-01-01T00:00:00 wraith[7]: WARNING wraith.auth: auth result=failure method=publickey"
    )
    tail = "fingerprint=SHA256:abc reason=unknown-key"
    raw_users = [
        'x" src=6.6.6.6 port=1 fingerprint=- reason=unknown-key "',
        'x src=6.6.6.6 port=1 "',
        'x" src=6.6.6.6 port=1 fingerprint=- reason=unknown-key\\',
    ]
    lines = [f'{head} user="{u}" src=203.0.113.9 port=40000 {tail}' for u in raw_users]
    lines.append(f'{head} user="ok" src=198.51.100.7 port=40000 {tail}')
    logfile = tmp_path / "raw.log"
    logfile.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = _run_filter(logfile)
    assert "6.6.6.6" not in report.hosts, report
    assert "198.51.100.7" in report.hosts, report
