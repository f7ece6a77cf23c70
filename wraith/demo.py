"""``wraith demo``: the whole tunnel, end to end, on loopback.

It does what a user would do by hand, with real processes: make a client key,
start ``wraith serve`` with that key authorized, start ``wraith connect`` with
the printed host key fingerprint, then fetch a page from a local web server
through the SOCKS5 port (socks5h: the *server* resolves the name) and check
what came back.  Then it keeps the tunnel up until Ctrl-C, or exits with
``--once``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PAGE = b"<html><body><h1>Hello through the Wraith tunnel</h1></body></html>\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _wait_line(proc: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process exited early (code {proc.wait()})")
        m = re.search(pattern, line)
        if m:
            return m
    raise RuntimeError(f"timed out waiting for {pattern!r}")


def fetch_via_socks(socks_port: int, host: str, port: int, path: str = "/") -> bytes:
    """HTTP GET through a SOCKS5 proxy, using Wraith's own SOCKS client state machine."""
    from .proto import socks5

    machine = socks5.SocksClient(host, port)
    with socket.create_connection(("127.0.0.1", socks_port), timeout=15) as sock:
        sock.sendall(machine.data_to_send())
        while True:
            ev = machine.next_event()
            out = machine.data_to_send()
            if out:
                sock.sendall(out)
            if isinstance(ev, socks5.Connected):
                break
            data = sock.recv(4096)
            machine.receive_data(data)
        request = f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode()
        sock.sendall(request)
        chunks = [machine.trailing_data]
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    response = b"".join(chunks)
    _, _, body = response.partition(b"\r\n\r\n")
    return body


def run_demo(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="wraith-demo-"))
    procs: list[subprocess.Popen[str]] = []
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    wraith = [sys.executable, "-m", "wraith"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("WRAITH_")}
    common = ["--backend", args.backend]
    try:
        key = work / "id_ed25519"
        out = subprocess.run(
            [*wraith, "keygen", "-f", str(key), "-C", "wraith-demo"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        _say(f"made a client key: {out.stdout.strip()}")
        shutil.copy(work / "id_ed25519.pub", work / "authorized_keys")

        server = subprocess.Popen(
            [
                *wraith,
                "serve",
                "--listen",
                "tcp://127.0.0.1:0",
                "--authorized-keys",
                str(work / "authorized_keys"),
                "--state-dir",
                str(work / "state"),
                *common,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if not args.verbose else None,
            text=True,
            env=env,
        )
        procs.append(server)
        m = _wait_line(server, r"connect with: (wraith connect .*)$", 30)
        connect_line = m.group(1)
        _say(f"server is up ({args.backend} backend); it printed: {connect_line}")
        fp = re.search(r"(SHA256:\S+)", connect_line)
        target = connect_line.split()[-1]
        assert fp is not None
        client = subprocess.Popen(
            [
                *wraith,
                "connect",
                "-i",
                str(key),
                "--host-key-fingerprint",
                fp.group(1),
                "-D",
                f"127.0.0.1:{args.socks_port}",
                target,
                *common,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if not args.verbose else None,
            text=True,
            env=env,
        )
        procs.append(client)
        m = _wait_line(client, r"SOCKS5 proxy listening on \S+:(\d+)", 30)
        socks_port = int(m.group(1))
        _say(f"client is connected; SOCKS5 (socks5h) proxy on 127.0.0.1:{socks_port}")

        web_port = web.server_address[1]
        body = fetch_via_socks(socks_port, "localhost", web_port)
        ok = body == PAGE
        _say(
            f"fetched http://localhost:{web_port}/ through the tunnel: {len(body)} bytes, "
            f"sha256 {hashlib.sha256(body).hexdigest()[:16]}... "
            + ("matches the page" if ok else "DOES NOT MATCH")
        )
        if not ok:
            return 1
        _say(
            "try it yourself: curl --socks5-hostname "
            f"127.0.0.1:{socks_port} http://localhost:{web_port}/"
        )
        if args.once:
            _say("done (--once)")
            return 0
        _say("tunnel is up; press Ctrl-C to stop")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        _say("a Wraith process exited unexpectedly")
        return 1
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
        _say(f"failed: {e}")
        return 1
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        web.shutdown()
        shutil.rmtree(work, ignore_errors=True)
