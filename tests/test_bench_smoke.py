"""The benchmark runs end to end (short), so it cannot rot.  No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import clean_env

ROOT = Path(__file__).resolve().parent.parent


def throughput_command(out_json: Path, *args: str) -> list[str]:
    """``bench/throughput.py`` with ``args``, writing its table to ``out_json``."""
    return [sys.executable, str(ROOT / "bench" / "throughput.py"), *args, "--json", str(out_json)]


def test_bench_smoke(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    out = subprocess.run(
        throughput_command(out_json, "--size", "32", "--rounds", "1"),
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(),
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    table = json.loads(out_json.read_text())
    assert set(table["results"]) == {
        "openssh",
        "wraith-trio-paramiko",
        "wraith-asyncio-paramiko",
        "wraith-trio-sansio",
        "wraith-asyncio-sansio",
        "openssh/chacha20",
        "wraith-trio-sansio/chacha20",
        "wraith-asyncio-sansio/chacha20",
        "openssh/tls",
        "wraith-trio-sansio/tls",
        "wraith-asyncio-sansio/tls",
    }
    assert table["results"]["wraith-trio-sansio/chacha20"]["baseline"] == "openssh/chacha20"
    for name in ("openssh/tls", "wraith-trio-sansio/tls", "wraith-asyncio-sansio/tls"):
        assert table["results"][name]["baseline"] == "openssh/tls"
    assert table["tls"].startswith("stunnel ")
    for row in table["results"].values():
        for direction in ("up", "down"):
            assert row[direction]["median_mbps"] > 0
    assert "x OpenSSH" in out.stdout
    assert "relative to openssh/tls" in out.stdout


def test_bench_pinned(tmp_path: Path) -> None:
    """``--pin``: the tunnels run on one CPU, the bench on another (checked on
    the running processes' affinity), and the table says so."""
    out_json = tmp_path / "bench.json"
    proc = subprocess.Popen(
        throughput_command(
            out_json,
            *("--pin", "--size", "64", "--rounds", "2", "--backends", "trio"),
            *("--engines", "sansio", "--ciphers", "aes128-gcm@openssh.com", "--no-tls"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=ROOT,
    )
    seen: dict[str, set[int]] = {}
    try:
        # While it runs: the affinity of the bench and of a Wraith process it started.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and "wraith" not in seen:
            seen["bench"] = os.sched_getaffinity(proc.pid)
            for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                cmd = Path(f"/proc/{child}/cmdline").read_bytes()
                if b"wraith" in cmd and b"serve" in cmd:
                    seen["wraith"] = os.sched_getaffinity(int(child))
            time.sleep(0.05)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert len(seen["bench"]) == 1 and len(seen["wraith"]) == 1
    assert seen["bench"] != seen["wraith"]
    table = json.loads(out_json.read_text())
    assert set(table["results"]) == {"openssh", "wraith-trio-sansio"}
    assert "pinned to ONE core" in table["machine"]
    assert all(table["results"][n]["up"]["median_mbps"] > 0 for n in table["results"])
    assert "pinned" in out


#: Every row of bench/suite.py's table with its default backends (trio, asyncio).
SUITE_ROWS = {
    *(
        f"{kind}-{d}/{b}"
        for kind in ("throughput", "asyncssh", "tls")
        for d in ("up", "down")
        for b in ("trio", "asyncio")
    ),
    "concurrency/trio",
    "ttfb/trio",
    "startup",
    "memory/trio",
}


def test_bench_suite_quick(tmp_path: Path) -> None:
    """``bench/suite.py --quick`` measures every row; numbers positive, no timing asserted."""
    out_json = tmp_path / "suite.json"
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "suite.py"), "--quick", "--json", str(out_json)],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out_json.read_text())
    assert result["quick"] is True
    assert result["errors"] == {}
    rows = {row["id"]: row for row in result["rows"]}
    assert set(rows) == SUITE_ROWS
    for row in rows.values():
        assert row["wraith"] > 0, row
        assert row["peer"] is not None, row
        if row["id"].startswith("memory/"):
            # sshd's figure is for information: for the few idle channels of
            # --quick its RSS may not grow at all, or even shrink a little
            # (pages freed after the warm-up): any finite number.
            assert math.isfinite(row["peer"]), row
        else:
            assert row["peer"] > 0, row
        assert row["ratio"] is None or row["ratio"] > 0, row
        assert isinstance(row["meets"], bool), row
    assert rows["startup"]["ratio"] is None  # an absolute target
    conc = result["concurrency"]
    assert conc["connections"] == 100
    assert len(conc["runs"]["wraith"]) == len(conc["runs"]["openssh"]) == 1
    assert "meets target" in out.stdout
    assert "x OpenSSH" in out.stdout  # bench/throughput.py's table, with the asyncssh row
    assert "asyncssh" in result["throughput"]["results"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert out_json.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    else:
        assert "matplotlib not installed" in out.stdout
