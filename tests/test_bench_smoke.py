"""The benchmark runs end to end (short), so it cannot rot.  No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import clean_env

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "throughput.py"),
            "--size",
            "32",
            "--rounds",
            "1",
            "--json",
            str(out_json),
        ],
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
