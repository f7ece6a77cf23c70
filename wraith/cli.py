"""The ``wraith`` command: serve, connect, keygen and demo.

The CLI only fills :mod:`wraith.options` and runs a driver.  Every flag can
also come from a ``WRAITH_*`` environment variable (``--known-hosts`` is
``WRAITH_KNOWN_HOSTS``; repeatable flags take a comma-separated list; booleans
take 1/true/yes).  Flags win over the environment.

Output: the fingerprint, the ready-to-paste connect line and listener
addresses go to stdout; logs go to stderr.  Both are flushed line by line.
Errors are one line on stderr, with the exit codes in :mod:`wraith.errors`
(2 usage, 3 cannot connect, 4 auth refused, 5 host key not trusted, 1 other).

Heavy modules (paramiko, trio, asyncio drivers) are imported only once a
command runs, so ``wraith --help`` stays fast.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CONNECT, EXIT_AUTH, EXIT_HOST_KEY = 0, 1, 2, 3, 4, 5

EPILOG = """\
exit codes: 0 ok, 1 runtime error (e.g. session lost), 2 bad usage or options,
3 cannot connect, 4 authentication refused, 5 host key unknown or mismatching.
Every flag of serve and connect can be set with a WRAITH_* environment variable,
e.g. WRAITH_BACKEND=asyncio; flags win over the environment."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"wraith: {self.prog}: {message} (see --help)\n")


def _env_name(action: argparse.Action) -> str | None:
    longs = [s for s in action.option_strings if s.startswith("--")]
    if not longs:
        return None
    return "WRAITH_" + longs[0][2:].upper().replace("-", "_")


def _apply_env(parser: argparse.ArgumentParser) -> None:
    """Take defaults from WRAITH_* variables, and say so in --help."""
    for action in parser._actions:
        name = _env_name(action)
        if name is None or action.dest in ("help", "version"):
            continue
        action.help = f"{action.help or ''} [env: {name}]".strip()
        value = os.environ.get(name)
        if value is None or value == "":
            continue
        if isinstance(action, argparse._StoreTrueAction):
            action.default = value.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(action, argparse._CountAction):
            action.default = int(value) if value.isdigit() else 1
        elif isinstance(action, argparse._AppendAction):
            action.default = [v.strip() for v in value.split(",") if v.strip()]
        else:
            action.default = value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=("trio", "asyncio"),
        default="trio",
        help="I/O backend (default: trio)",
    )
    p.add_argument(
        "--engine",
        choices=("sansio", "paramiko"),
        default="sansio",
        help="SSH engine: sansio, Wraith's own (default), or paramiko",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    p.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log format on stderr"
    )


def _shutdown_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, stop accepting and give open tunnels this long to finish "
        "before disconnecting; a second signal exits at once (default: 10)",
    )


def _ssh_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--ciphers",
        action="append",
        metavar="LIST",
        help="ciphers to offer, comma-separated, in order of preference, like ssh -c "
        "(default: aes128-gcm@openssh.com,aes256-gcm@openssh.com,"
        "chacha20-poly1305@openssh.com; paramiko has no chacha20-poly1305)",
    )
    p.add_argument(
        "--keepalive-interval",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="send a keepalive after this long without hearing from the peer (default: 15)",
    )
    p.add_argument(
        "--keepalive-count",
        type=int,
        default=3,
        metavar="N",
        help="give the peer up as dead after N unanswered keepalives (default: 3)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wraith",
        description="Self-hostable SSH tunnels: a SOCKS5 proxy and port forwards over SSH.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"wraith {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser(
        "serve",
        help="run a Wraith server",
        description="Run a Wraith SSH server that serves tunnels (direct-tcpip and "
        "tcpip-forward) to clients with an authorized Ed25519 key or certificate. "
        "Shell, exec and every other session request are refused.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "--listen",
        action="append",
        metavar="URL",
        help="listen address tcp://HOST:PORT, tls://HOST:PORT for SSH inside TLS (needs "
        "--tls-cert/--tls-key or --acme-domain), or http://HOST:80 for ACME HTTP-01 "
        "challenges only; repeatable (default: tcp://127.0.0.1:2222)",
    )
    s.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="certificate chain (PEM) for tls:// listeners",
    )
    s.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
    s.add_argument(
        "--acme-domain",
        action="append",
        metavar="NAME",
        help="get and renew the tls:// certificate by ACME for this DNS name or IP address, "
        "repeatable (instead of --tls-cert); validated by TLS-ALPN-01 on the tls:// "
        "listener, or by HTTP-01 when an http://HOST:80 listener is given too",
    )
    s.add_argument("--acme-email", metavar="EMAIL", help="ACME account contact (optional)")
    s.add_argument(
        "--acme-directory",
        metavar="URL",
        help="ACME directory (default: Let's Encrypt production)",
    )
    s.add_argument(
        "--acme-ca",
        metavar="FILE",
        help="trust the CA certificates in FILE for the ACME directory's own HTTPS "
        "(a test CA such as Pebble's)",
    )
    s.add_argument(
        "--acme-renew-at",
        type=float,
        default=1 / 3,
        metavar="FRACTION",
        help="renew a certificate when this fraction of its lifetime is left (default: 0.333)",
    )
    s.add_argument(
        "--stealth",
        action="store_true",
        help="stealth mode on the tls:// listeners: SSH only after an HTTP Upgrade to a "
        "secret path (made in the state directory, printed in the connect line); every "
        "other visitor gets the decoy web site",
    )
    s.add_argument(
        "--decoy",
        metavar="URL|DIR",
        help="with --stealth: the decoy site, an http:// or https:// web server to pass "
        "visitors to unchanged, or a directory of files to serve (default: a plain "
        "built-in page)",
    )
    s.add_argument(
        "--proxy-protocol",
        action="append",
        metavar="ADDRS",
        help="accept a PROXY protocol v1/v2 header from these front proxies (comma-separated "
        "addresses or networks, e.g. 127.0.0.1 or 10.0.0.0/8), so that logs and bans see "
        "the real client address; repeatable",
    )
    s.add_argument(
        "--host-key",
        metavar="KEY",
        help="host private key, a path or the OpenSSH key text "
        "(default: created as host_ed25519_key in the state directory)",
    )
    s.add_argument(
        "--authorized-keys",
        metavar="FILE",
        help="OpenSSH authorized_keys, a path or its text (default: ~/.ssh/authorized_keys)",
    )
    s.add_argument(
        "--cert-authority",
        action="append",
        metavar="FILE",
        help="CA public key trusted to sign user certificates, repeatable",
    )
    s.add_argument(
        "--allow-remote-bind",
        action="store_true",
        help="let -R forwards listen on non-loopback addresses (default: loopback only)",
    )
    s.add_argument(
        "--allow-dest",
        action="append",
        metavar="PATTERN",
        help="let tunnels reach only destinations matching a pattern, repeatable: an IP or "
        "CIDR (10.0.0.0/8, ::1) or a host name glob (*.internal, db.example.org), with an "
        "optional :PORT or :LO-HI ([2001:db8::/32]:443); a name is also checked after it "
        "resolves (default: every destination)",
    )
    s.add_argument(
        "--deny-dest",
        action="append",
        metavar="PATTERN",
        help="refuse tunnels to destinations matching a pattern (as --allow-dest), "
        "repeatable; deny wins over allow. Link-local and cloud metadata addresses "
        "are always refused",
    )
    s.add_argument(
        "--state-dir",
        metavar="DIR",
        help="state directory (default: $WRAITH_STATE_DIR or ~/.local/state/wraith)",
    )
    s.add_argument(
        "--auth-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="close connections not authenticated within this time (default: 30)",
    )
    s.add_argument(
        "--dial-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for a tunnel destination to accept (default: 10)",
    )
    s.add_argument(
        "--ban-after",
        type=int,
        default=5,
        metavar="N",
        help="ban a source after N failed authentications within --ban-window; "
        "a banned source is disconnected before the SSH banner; 0 turns bans off (default: 5)",
    )
    s.add_argument(
        "--ban-window",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how far back failures count toward a ban (default: 600)",
    )
    s.add_argument(
        "--ban-time",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="how long a ban lasts (default: 900)",
    )
    s.add_argument(
        "--max-unauth-per-source",
        type=int,
        default=10,
        metavar="N",
        help="connections not yet authenticated allowed per source address "
        "(IPv6: per /64) (default: 10)",
    )
    s.add_argument(
        "--max-unauth",
        type=int,
        default=256,
        metavar="N",
        help="connections not yet authenticated allowed in total (default: 256)",
    )
    _ssh_flags(s)
    _shutdown_flag(s)
    _common(s)

    c = sub.add_parser(
        "connect",
        help="connect to a server and run SOCKS5 / port forwards",
        description="Connect to a Wraith server (or OpenSSH sshd) and run a SOCKS5 proxy "
        "(socks5h: names are resolved by the server) and OpenSSH-style port forwards. "
        "With no -D, -L or -R, a SOCKS5 proxy opens on 127.0.0.1:1080.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument(
        "target",
        nargs="?",
        default=os.environ.get("WRAITH_TARGET") or None,
        metavar="TARGET",
        help="[user@]host[:port] (default port 2222), tcp://..., or tls://host[:port] "
        "for SSH inside TLS (default port 443) [env: WRAITH_TARGET]",
    )
    c.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="for tls://: trust the CA certificates in FILE instead of the system roots",
    )
    c.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="for tls://: the SNI and the name the certificate must match "
        "(default: the target's host)",
    )
    c.add_argument(
        "--stealth-path",
        metavar="PATH",
        help="for tls:// to a server in stealth mode: its secret path, as printed by "
        "wraith serve --stealth",
    )
    c.add_argument(
        "-D",
        "--socks",
        action="append",
        metavar="[BIND:]PORT",
        help="SOCKS5 listener, repeatable (default with no -D/-L/-R: 127.0.0.1:1080)",
    )
    c.add_argument(
        "-L",
        "--local",
        action="append",
        metavar="SPEC",
        help="local forward [bind:]port:host:hostport, as ssh -L; repeatable",
    )
    c.add_argument(
        "-R",
        "--remote",
        action="append",
        metavar="SPEC",
        help="remote forward [bind:]port:host:hostport, as ssh -R; repeatable",
    )
    c.add_argument(
        "-i",
        "--identity",
        metavar="KEY",
        help="Ed25519 private key, a path or the key text (default: ~/.ssh/id_ed25519)",
    )
    c.add_argument("--certificate", metavar="CERT", help="OpenSSH user certificate for -i")
    c.add_argument("-l", "--user", metavar="USER", help="user name (default: the local user)")
    c.add_argument(
        "--host-key-fingerprint",
        action="append",
        metavar="SHA256:...",
        help="trust the server host key with this fingerprint, repeatable",
    )
    c.add_argument(
        "--known-hosts", metavar="FILE", help="OpenSSH known_hosts file to check the host key"
    )
    c.add_argument("--socks-user", metavar="USER", help="require this SOCKS5 user name")
    c.add_argument("--socks-password", metavar="PASSWORD", help="require this SOCKS5 password")
    c.add_argument(
        "--socks-open",
        action="store_true",
        help="allow a non-loopback SOCKS listener without a password",
    )
    c.add_argument(
        "--connect-timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="timeout for TCP connect, handshake and auth (default: 15)",
    )
    c.add_argument(
        "--no-reconnect",
        action="store_true",
        help="exit (code 1) when the session is lost instead of reconnecting",
    )
    c.add_argument(
        "--reconnect-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="ceiling of the first reconnect delay; it doubles per failed attempt, "
        "each delay drawn at random below it (default: 1)",
    )
    c.add_argument(
        "--reconnect-max-delay",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="cap of the reconnect delay ceiling (default: 30)",
    )
    c.add_argument(
        "--session-wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long a new SOCKS or -L connection waits for the session while it "
        "reconnects, before it is refused (default: 10)",
    )
    _ssh_flags(c)
    _shutdown_flag(c)
    _common(c)

    k = sub.add_parser(
        "keygen",
        help="write an Ed25519 key pair",
        description="Write an OpenSSH Ed25519 key pair (PATH and PATH.pub) and print "
        "its fingerprint.",
    )
    k.add_argument("-f", "--file", required=True, metavar="PATH", help="private key path")
    k.add_argument("-C", "--comment", default="", help="comment for the public key")
    k.add_argument("--force", action="store_true", help="overwrite an existing key")

    d = sub.add_parser(
        "demo",
        help="run a server and a client on loopback and fetch a page through SOCKS5",
        description="Generate keys, start `wraith serve` and `wraith connect` on loopback, "
        "fetch a page from a local web server through the SOCKS5 port, show what happened, "
        "and keep the tunnel up until Ctrl-C.",
    )
    d.add_argument("--once", action="store_true", help="exit after the fetch")
    d.add_argument("--socks-port", type=int, default=0, help="SOCKS port (default: any free)")
    _common(d)

    # serve and connect take every flag from WRAITH_* too (services, containers);
    # keygen and demo are interactive one-shots and read no environment.
    for p in (s, c):
        _apply_env(p)
    return parser


def _err(msg: str) -> None:
    print(f"wraith: {msg}", file=sys.stderr, flush=True)


def _line_buffered() -> None:
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


def main(argv: Sequence[str] | None = None) -> int:
    # Start-up creates some 50,000 objects that live as long as the process (modules,
    # classes, functions) and no garbage cycles: the cyclic collector would only scan
    # them again and again (some 10 ms of `wraith connect`'s time to first byte).
    # It stays off until the driver is imported (_imports_done) or main() returns.
    global _gc_wanted
    _gc_wanted = gc.isenabled()
    gc.disable()
    try:
        return _main(argv)
    finally:
        if _gc_wanted:
            gc.enable()


#: Whether the collector was on when main() started (it is restored).
_gc_wanted = True


def _imports_done() -> None:
    """Start-up imports are over: the collector back on, without what they created;
    the allocator set up for bulk transfers (:mod:`wraith.memtune`)."""
    if _gc_wanted and not gc.isenabled():
        gc.freeze()  # the permanent generation: never scanned again
        gc.enable()
    from .memtune import tune_allocator

    tune_allocator()


def _main(argv: Sequence[str] | None) -> int:
    _line_buffered()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "keygen":
            return _keygen(args)
        if args.command == "demo":
            _imports_done()
            from .demo import run_demo

            return run_demo(args)
        from .logs import setup_logging

        setup_logging(args.verbose, args.log_format)
        if args.command == "serve":
            return _serve(args)
        return _connect(args, parser)
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    from .ssh import keys

    try:
        fp = keys.generate_keypair(args.file, comment=args.comment, overwrite=args.force)
    except (FileExistsError, OSError) as e:
        _err(str(e))
        return EXIT_ERROR
    print(f"{fp} {args.file}")
    return EXIT_OK


def _run(backend: str, fn: Any, *a: Any) -> Any:
    if backend == "asyncio":
        import asyncio

        return asyncio.run(fn(*a))
    import trio

    return trio.run(fn, *a)


def _classify(e: BaseException) -> int | None:
    from .config import ConfigError
    from .errors import ConnectError
    from .ssh.engine import AuthenticationFailed, HandshakeFailed
    from .ssh.known_hosts import HostKeyError

    if isinstance(e, ConfigError):
        return EXIT_USAGE
    if isinstance(e, ConnectError | HandshakeFailed):
        return EXIT_CONNECT
    if isinstance(e, AuthenticationFailed):
        return EXIT_AUTH
    if isinstance(e, HostKeyError):
        return EXIT_HOST_KEY
    return None


def _serve(args: argparse.Namespace) -> int:
    from .options import DEFAULT_LISTEN, ServeOptions

    opts = ServeOptions(
        listen=args.listen or [DEFAULT_LISTEN],
        host_key=args.host_key,
        authorized_keys=args.authorized_keys,
        cert_authority=args.cert_authority or [],
        allow_remote_bind=args.allow_remote_bind,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        acme_domains=args.acme_domain or [],
        acme_email=args.acme_email,
        acme_directory=args.acme_directory,
        acme_ca=args.acme_ca,
        acme_renew_at=args.acme_renew_at,
        stealth=args.stealth,
        decoy=args.decoy,
        proxy_protocol=args.proxy_protocol or [],
        allow_dest=args.allow_dest or [],
        deny_dest=args.deny_dest or [],
        state_dir=args.state_dir,
        engine=args.engine,
        ciphers=args.ciphers or [],
        keepalive_interval=args.keepalive_interval,
        keepalive_count=args.keepalive_count,
        auth_timeout=args.auth_timeout,
        dial_timeout=args.dial_timeout,
        shutdown_timeout=args.shutdown_timeout,
        ban_after=args.ban_after,
        ban_window=args.ban_window,
        ban_time=args.ban_time,
        max_unauth_per_source=args.max_unauth_per_source,
        max_unauth=args.max_unauth,
    )
    try:
        _run(args.backend, _serve_async(args.backend), opts)
    except Exception as e:
        code = _classify(e)
        if code is None:
            raise
        _err(str(e))
        return code
    return EXIT_OK


def _serve_async(backend: str) -> Any:
    async def run(opts: Any) -> None:
        serve: Any
        if backend == "asyncio":
            from .io_asyncio import serve
        else:
            from .io_trio import serve
        from .ssh import keys

        _imports_done()

        async with serve(opts) as server:
            cfg = server.config
            fp = keys.fingerprint(cfg.host_key.public_key())
            if cfg.host_key_created:
                print(f"created host key {cfg.state_dir / 'host_ed25519_key'}")
            print(f"host key fingerprint: {fp}")
            schemes = [t.scheme for t in cfg.listen]
            for (host, port), scheme in zip(server.addresses, schemes, strict=True):
                print(f"listening on {scheme}://{_url_host(host)}:{port}")
            # The connect line names the first listener (an http:// one serves no SSH).
            first = next((i for i, s in enumerate(schemes) if s != "http"), 0)
            if cfg.front is not None and cfg.front.stealth is not None:
                first = schemes.index("tls")  # stealth clients need the secret path
            host, port = server.addresses[first]
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            extra = ""
            if schemes[first] == "tls":
                front = cfg.front
                if front is not None and front.stealth is not None:
                    extra = f"--stealth-path {front.stealth.path} "
                if cfg.acme_names:
                    shown = cfg.acme_names[0]
            prefix = "tls://" if schemes[first] == "tls" else ""
            print(
                f"connect with: wraith connect --host-key-fingerprint {fp} {extra}"
                f"{prefix}{_url_host(shown)}:{port}"
            )
            await server.run_until_stopped(opts.shutdown_timeout)

    return run


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _connect(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .options import DEFAULT_SOCKS, ConnectOptions

    if not args.target:
        _err("connect: a TARGET ([user@]host[:port]) is required")
        return EXIT_USAGE
    socks = args.socks or []
    if not socks and not args.local and not args.remote:
        socks = [DEFAULT_SOCKS]
    creds = None
    if args.socks_user or args.socks_password:
        if not (args.socks_user and args.socks_password):
            _err("--socks-user and --socks-password go together")
            return EXIT_USAGE
        creds = (args.socks_user, args.socks_password)
    opts = ConnectOptions(
        target=args.target,
        user=args.user,
        identity=args.identity,
        certificate=args.certificate,
        host_key_fingerprints=args.host_key_fingerprint or [],
        known_hosts=args.known_hosts,
        socks=socks,
        local_forwards=args.local or [],
        remote_forwards=args.remote or [],
        socks_credentials=creds,
        socks_open=args.socks_open,
        engine=args.engine,
        ciphers=args.ciphers or [],
        keepalive_interval=args.keepalive_interval,
        keepalive_count=args.keepalive_count,
        tls_ca=args.tls_ca,
        tls_server_name=args.tls_server_name,
        stealth_path=args.stealth_path,
        connect_timeout=args.connect_timeout,
        reconnect=not args.no_reconnect,
        reconnect_delay=args.reconnect_delay,
        reconnect_max_delay=args.reconnect_max_delay,
        session_wait=args.session_wait,
        shutdown_timeout=args.shutdown_timeout,
    )
    try:
        reason = _run(args.backend, _connect_async(args.backend), opts)
    except Exception as e:
        code = _classify(e)
        if code is None:
            raise
        _err(str(e))
        return code
    if reason is None:
        return EXIT_OK  # stopped by SIGINT/SIGTERM, after the graceful shutdown
    _err(f"SSH session lost: {reason}")
    return EXIT_ERROR


def _connect_async(backend: str) -> Any:
    async def run(opts: Any) -> str | None:
        connect: Any
        if backend == "asyncio":
            from .io_asyncio import connect
        else:
            from .io_trio import connect
        _imports_done()

        async with connect(opts) as client:
            print(f"connected to {client.config.target.hostport()} ({client.server_fingerprint})")
            for host, port in client.socks_addresses:
                print(f"SOCKS5 proxy listening on {_url_host(host)}:{port}")
            for host, port in client.local_addresses:
                print(f"local forward listening on {_url_host(host)}:{port}")
            for entry in client.forwards.entries():
                if entry.bound_port is not None:
                    print(f"remote forward listening on server port {entry.bound_port}")
            reason: str | None = await client.run_until_stopped(opts.shutdown_timeout)
            return reason

    return run


if __name__ == "__main__":
    raise SystemExit(main())
