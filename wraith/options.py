"""The programmatic API's options: one dataclass per role.

The CLI, the ``WRAITH_*`` environment variables and library callers all fill
these same fields; nothing reads a config file.  Key fields take a path or the
key itself (OpenSSH text, as ``str`` or ``bytes``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

KeySource = str | bytes | os.PathLike[str]

#: Seconds from TCP accept to successful authentication before the server hangs up.
DEFAULT_AUTH_TIMEOUT = 30.0
#: Seconds the server waits for a destination to accept a tunnelled connection.
DEFAULT_DIAL_TIMEOUT = 10.0
#: Seconds the client waits for the TCP connect plus SSH handshake and auth.
DEFAULT_CONNECT_TIMEOUT = 15.0
#: Seconds of silence from the peer before a keepalive goes out.
DEFAULT_KEEPALIVE_INTERVAL = 15.0
#: Keepalives left unanswered before the peer counts as dead.
DEFAULT_KEEPALIVE_COUNT = 3
#: First reconnect delay ceiling and the cap, seconds (full jitter below each).
DEFAULT_RECONNECT_DELAY = 1.0
DEFAULT_RECONNECT_MAX_DELAY = 30.0
#: Seconds a new SOCKS or -L connection waits for a session that is reconnecting.
DEFAULT_SESSION_WAIT = 10.0
#: Seconds open channels get to finish on SIGINT/SIGTERM before the disconnect.
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
DEFAULT_LISTEN = "tcp://127.0.0.1:2222"
DEFAULT_SOCKS = "127.0.0.1:1080"


@dataclass(kw_only=True)
class ServeOptions:
    """Options of ``wraith serve`` / :func:`wraith.io_trio.serve`."""

    #: Listen URLs, ``tcp://HOST:PORT``; port 0 picks a free port.
    listen: Sequence[str] = (DEFAULT_LISTEN,)
    #: Host private key (path or OpenSSH text); ``None`` uses/creates one in ``state_dir``.
    host_key: KeySource | None = None
    #: authorized_keys (path or text); ``None`` means ``~/.ssh/authorized_keys``.
    authorized_keys: KeySource | None = None
    #: Files (or texts) with CA public keys trusted for user certificates.
    cert_authority: Sequence[KeySource] = ()
    #: Let ``-R`` forwards bind non-loopback addresses.
    allow_remote_bind: bool = False
    #: For ``tls://`` listeners: the certificate chain and its key (PEM files).
    tls_cert: str | os.PathLike[str] | None = None
    tls_key: str | os.PathLike[str] | None = None
    #: ACME: names and IP addresses to get certificates for (instead of ``tls_cert``).
    acme_domains: Sequence[str] = ()
    #: ACME account contact e-mail (optional).
    acme_email: str | None = None
    #: ACME directory URL; ``None`` means Let's Encrypt production.
    acme_directory: str | None = None
    #: PEM file trusted for the ACME directory's own HTTPS (a test CA).
    acme_ca: str | os.PathLike[str] | None = None
    #: Renew when this fraction of a certificate's lifetime is left (default a third).
    acme_renew_at: float = 1 / 3
    #: Stealth mode on the ``tls://`` listeners: SSH only after an HTTP Upgrade to
    #: the secret path; everyone else gets the decoy web site.
    stealth: bool = False
    #: The decoy: an ``http(s)://`` origin to pass probers to, a directory of
    #: files, or ``None`` for a plain built-in page.
    decoy: str | os.PathLike[str] | None = None
    #: Accept PROXY protocol v1/v2 headers from these addresses or networks
    #: (the front: sslh, nginx stream, a load balancer); empty means off.
    proxy_protocol: Sequence[str] = ()
    #: Destination patterns a tunnel may reach (``10.0.0.0/8``, ``*.internal:443``,
    #: ``[2001:db8::/32]:1-1023``); if any is given, every destination must match one.
    allow_dest: Sequence[str] = ()
    #: Destination patterns no tunnel may reach; deny wins over allow.
    deny_dest: Sequence[str] = ()
    #: Where the host key lives; ``None`` means ``$WRAITH_STATE_DIR`` or the XDG state dir.
    state_dir: str | os.PathLike[str] | None = None
    #: SSH engine: ``sansio`` (Wraith's own, the default) or ``paramiko``.
    engine: str = "sansio"
    #: Ciphers to offer, in order; empty means the engine's default (AES-GCM first).
    ciphers: Sequence[str] = ()
    #: Keepalive after this many seconds of silence; dead after ``keepalive_count`` more.
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    keepalive_count: int = DEFAULT_KEEPALIVE_COUNT
    #: On SIGINT/SIGTERM (CLI) or ``shutdown()``: seconds open tunnels get to finish.
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    auth_timeout: float = DEFAULT_AUTH_TIMEOUT
    dial_timeout: float = DEFAULT_DIAL_TIMEOUT
    #: Ban a source after this many failed authentications within ``ban_window``
    #: seconds, for ``ban_time`` seconds (0 turns bans off).
    ban_after: int = 5
    ban_window: float = 600.0
    ban_time: float = 900.0
    #: Connections not authenticated yet, per source (IPv4 address or IPv6 /64) and in all.
    max_unauth_per_source: int = 10
    max_unauth: int = 256


@dataclass(kw_only=True)
class ConnectOptions:
    """Options of ``wraith connect`` / :func:`wraith.io_trio.connect`."""

    #: ``[user@]host[:port]`` or ``tcp://[user@]host[:port]``.
    target: str
    #: User name; ``None`` takes it from the target, else the local user.
    user: str | None = None
    #: Ed25519 private key (path or text); ``None`` means ``~/.ssh/id_ed25519``.
    identity: KeySource | None = None
    #: OpenSSH user certificate for the identity (path or text).
    certificate: KeySource | None = None
    #: Pinned server host key fingerprints (``SHA256:...``).
    host_key_fingerprints: Sequence[str] = ()
    #: OpenSSH known_hosts file (path or text).
    known_hosts: KeySource | None = None
    #: SOCKS5 listeners, ``[BIND:]PORT``.  The library opens none unless asked.
    socks: Sequence[str] = ()
    #: ``-L`` specs, as ssh(1) takes them.
    local_forwards: Sequence[str] = ()
    #: ``-R`` specs, as ssh(1) takes them.
    remote_forwards: Sequence[str] = ()
    #: RFC 1929 username/password required by the SOCKS listeners.
    socks_credentials: tuple[str, str] | None = None
    #: Allow a non-loopback SOCKS listener without credentials.
    socks_open: bool = False
    #: SSH engine: ``sansio`` (Wraith's own, the default) or ``paramiko``.
    engine: str = "sansio"
    #: Ciphers to offer, in order; empty means the engine's default (AES-GCM first).
    ciphers: Sequence[str] = ()
    #: Keepalive after this many seconds of silence; dead after ``keepalive_count`` more.
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    keepalive_count: int = DEFAULT_KEEPALIVE_COUNT
    #: For a ``tls://`` target: CA certificates to trust instead of the system roots.
    tls_ca: str | os.PathLike[str] | None = None
    #: For a ``tls://`` target: the SNI and the name to verify (default: the host).
    tls_server_name: str | None = None
    #: For a ``tls://`` target in stealth mode: the server's secret path
    #: (``wraith serve --stealth`` prints it in its connect line).
    stealth_path: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: Reconnect after a lost session (listeners stay open meanwhile).
    reconnect: bool = True
    reconnect_delay: float = DEFAULT_RECONNECT_DELAY
    reconnect_max_delay: float = DEFAULT_RECONNECT_MAX_DELAY
    #: How long a new local connection waits for the session while it is down.
    session_wait: float = DEFAULT_SESSION_WAIT
    #: On SIGINT/SIGTERM (CLI) or ``shutdown()``: seconds open tunnels get to finish.
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
