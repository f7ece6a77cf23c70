"""Turn :mod:`wraith.options` into what the drivers run: keys, policies, forwards.

This is the part of start-up that both backends share: it reads files, parses
specs and fails early with one clear line (:class:`ConfigError`) before any
socket is opened.
"""

from __future__ import annotations

import getpass
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .options import ConnectOptions, KeySource, ServeOptions
from .proto import forwards as fw
from .proto import names
from .proto.destpolicy import DestinationPolicy
from .proto.errors import RemoteProtocolError
from .proto.target import Target, parse_target

if TYPE_CHECKING:
    from .front import Front
    from .gate import GateSettings
    from .ssh.auth import AuthPolicy
    from .ssh.engine import SSHSettings
    from .ssh.known_hosts import HostKeyPolicy

ENGINES = ("sansio", "paramiko")


class ConfigError(Exception):
    """Options that cannot work; the message is one line for the user."""


def _engine(name: str) -> str:
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r} (choose from: {', '.join(ENGINES)})")
    return name


def _ssh_settings(opts: ServeOptions | ConnectOptions, engine: str) -> SSHSettings:
    from .ssh.engine import SSHSettings
    from .ssh.engines import ENGINE_CIPHERS

    supported = ENGINE_CIPHERS[engine]
    ciphers: list[str] = []
    for name in opts.ciphers:
        for c in (part.strip() for part in name.split(",")):
            if not c:
                continue
            if c not in supported:
                raise ConfigError(
                    f"--ciphers: {c!r} is not offered by the {engine} engine "
                    f"(choose from: {', '.join(supported)})"
                )
            if c not in ciphers:
                ciphers.append(c)
    if not opts.keepalive_interval > 0:
        raise ConfigError("--keepalive-interval must be more than 0 seconds")
    if not 1 <= opts.keepalive_count <= 60:
        raise ConfigError("--keepalive-count must be from 1 to 60")
    return SSHSettings(
        ciphers=tuple(ciphers),
        keepalive_interval=float(opts.keepalive_interval),
        keepalive_count=int(opts.keepalive_count),
    )


def _dest_policy(opts: ServeOptions) -> DestinationPolicy:
    for flag, patterns in (("--allow-dest", opts.allow_dest), ("--deny-dest", opts.deny_dest)):
        try:
            DestinationPolicy(allow=patterns)
        except ValueError as e:
            raise ConfigError(f"{flag}: {e}") from None
    return DestinationPolicy(allow=opts.allow_dest, deny=opts.deny_dest)


def _server_front(
    opts: ServeOptions, listen: list[Target], engine: str, state_dir: Path
) -> Front | None:
    """What the ``tls://`` listeners do before SSH: certificates, stealth, PROXY protocol."""
    wants_tls = any(t.scheme == "tls" for t in listen)
    if any(t.scheme == "http" for t in listen) and not opts.acme_domains:
        raise ConfigError(
            "an http:// listener only answers ACME HTTP-01 challenges: it needs --acme-domain"
        )
    if not wants_tls:
        for given, flag in (
            (opts.tls_cert is not None or opts.tls_key is not None, "--tls-cert/--tls-key"),
            (bool(opts.acme_domains), "--acme-domain"),
            (opts.stealth, "--stealth"),
            (opts.decoy is not None, "--decoy"),
        ):
            if given:
                raise ConfigError(f"{flag} needs a tls:// listener (--listen tls://HOST:PORT)")
    elif engine != "sansio":
        raise ConfigError("tls:// needs the sansio engine (--engine sansio)")
    if opts.decoy is not None and not opts.stealth:
        raise ConfigError("--decoy goes with --stealth")
    if (opts.tls_cert is None) != (opts.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    from .front import Front

    proxy_from = None
    if opts.proxy_protocol:
        from .proto.errors import LocalProtocolError
        from .proto.proxyproto import parse_networks

        try:
            proxy_from = [n for text in opts.proxy_protocol for n in parse_networks(text)]
        except LocalProtocolError as e:
            raise ConfigError(f"--proxy-protocol: {e}") from None
    if not wants_tls:
        return Front(proxy_from=proxy_from) if proxy_from else None
    if opts.tls_cert is not None and opts.acme_domains:
        raise ConfigError("--tls-cert and --acme-domain are alternatives: give one")
    if opts.tls_cert is None and not opts.acme_domains:
        raise ConfigError("a tls:// listener needs --tls-cert and --tls-key, or --acme-domain")
    front = Front(proxy_from=proxy_from)
    if opts.tls_cert is not None and opts.tls_key is not None:
        from .tls import server_context

        front.static = server_context(opts.tls_cert, opts.tls_key)
    if opts.acme_domains:
        from .acme import LETS_ENCRYPT, AcmeManager, AcmeSettings

        settings = AcmeSettings(
            identifiers=list(opts.acme_domains),
            state_dir=state_dir,
            email=opts.acme_email,
            ca_file=Path(opts.acme_ca) if opts.acme_ca is not None else None,
            renew_at=float(opts.acme_renew_at),
            http01=any(t.scheme == "http" for t in listen),
            directory=opts.acme_directory or LETS_ENCRYPT,
        )
        front.acme = AcmeManager(settings)
    if opts.stealth:
        from .decoy import parse_decoy
        from .front import make_stealth

        front.stealth = make_stealth(state_dir, parse_decoy(opts.decoy))
    return front


def _acme_names(opts: ServeOptions) -> list[str]:
    """``--acme-domain`` values, normalized, in order, without repeats."""
    if not opts.acme_domains:
        return []
    from .acme import normalize_identifier

    names: list[str] = []
    for value in opts.acme_domains:
        name = normalize_identifier(value)
        if name not in names:
            names.append(name)
    return names


def _gate_settings(opts: ServeOptions) -> GateSettings:
    from .gate import GateSettings

    if opts.ban_after < 0:
        raise ConfigError("--ban-after must be 0 (no bans) or more")
    if not opts.ban_window > 0 or not opts.ban_time > 0:
        raise ConfigError("--ban-window and --ban-time must be more than 0 seconds")
    if opts.max_unauth_per_source < 1 or opts.max_unauth < 1:
        raise ConfigError("--max-unauth-per-source and --max-unauth must be at least 1")
    if not opts.shutdown_timeout >= 0:
        raise ConfigError("--shutdown-timeout must not be negative")
    return GateSettings(
        ban_after=opts.ban_after,
        failure_window=float(opts.ban_window),
        ban_time=float(opts.ban_time),
        max_unauth_per_source=opts.max_unauth_per_source,
        max_unauth=opts.max_unauth,
    )


@dataclass
class ServerConfig:
    listen: list[Target]
    host_key: Ed25519PrivateKey
    host_key_created: bool
    state_dir: Path
    policy: AuthPolicy
    engine: str
    ssh: SSHSettings
    gate: GateSettings
    warnings: list[str] = field(default_factory=list)
    #: What the ``tls://`` listeners do before SSH (None without one).
    front: Front | None = None
    #: ``--acme-domain`` names and addresses, in the order given.
    acme_names: list[str] = field(default_factory=list)
    #: ``--allow-dest`` / ``--deny-dest``: what tunnels may reach.
    dest_policy: DestinationPolicy = field(default_factory=DestinationPolicy)

    @classmethod
    def from_options(cls, opts: ServeOptions) -> ServerConfig:
        from .ssh import keys
        from .ssh.auth import AuthPolicy
        from .ssh.authorized_keys import AuthorizedKeysError

        engine = _engine(opts.engine)
        ssh = _ssh_settings(opts, engine)
        dest_policy = _dest_policy(opts)
        gate = _gate_settings(opts)
        listen = []
        for url in opts.listen:
            try:
                target = parse_target(url, allow_user=False, listen=True)
            except RemoteProtocolError as e:
                raise ConfigError(f"--listen: {e.msg}") from None
            listen.append(target)
        if not listen:
            raise ConfigError("--listen: at least one address is needed")
        state_dir = Path(opts.state_dir) if opts.state_dir else keys.default_state_dir()
        front = _server_front(opts, listen, engine, state_dir)
        warnings: list[str] = []
        try:
            if opts.host_key is not None:
                host_key = keys.load_private_key(opts.host_key, what="host key")
                created = False
            else:
                host_key, created = keys.load_or_create_host_key(state_dir)
        except (keys.KeyLoadError, OSError) as e:
            raise ConfigError(str(e)) from None
        if opts.authorized_keys is None:
            default = os.path.expanduser("~/.ssh/authorized_keys")
            if not os.path.exists(default):
                warnings.append(
                    f"{default} does not exist: no plain key can log in "
                    "(pass --authorized-keys or --cert-authority)"
                )
        try:
            policy = AuthPolicy.from_sources(opts.authorized_keys, list(opts.cert_authority))
        except (AuthorizedKeysError, keys.KeyLoadError, OSError) as e:
            raise ConfigError(str(e)) from None
        warnings += list(policy.warnings)
        if opts.stealth and any(t.scheme == "tcp" for t in listen):
            warnings.append(
                "--stealth with a tcp:// listener too: that port answers with a plain SSH "
                "banner, which gives the server away to anyone who probes it"
            )
        return cls(
            listen=listen,
            host_key=host_key,
            host_key_created=created,
            state_dir=state_dir,
            policy=policy,
            engine=engine,
            ssh=ssh,
            gate=gate,
            warnings=warnings,
            front=front,
            acme_names=_acme_names(opts),
            dest_policy=dest_policy,
        )


@dataclass
class SocksListener:
    forward: fw.DynamicForward
    bind_host: str


@dataclass
class ClientConfig:
    target: Target
    username: str
    identity: Ed25519PrivateKey
    certificate: str | None
    host_keys: HostKeyPolicy
    socks: list[SocksListener]
    local: list[fw.LocalForward]
    registry: fw.ForwardRegistry
    socks_credentials: tuple[str, str] | None
    engine: str
    ssh: SSHSettings
    connect_timeout: float
    #: For a ``tls://`` target: the context and the SNI / name to verify.
    tls: ssl.SSLContext | None
    tls_server_name: str | None
    #: For stealth mode: the server's secret path (an HTTP Upgrade to it comes first).
    stealth_path: str | None
    reconnect: bool
    reconnect_delay: float
    reconnect_max_delay: float
    session_wait: float

    @classmethod
    def from_options(cls, opts: ConnectOptions) -> ClientConfig:
        from .ssh import keys
        from .ssh.known_hosts import HostKeyPolicy

        engine = _engine(opts.engine)
        ssh = _ssh_settings(opts, engine)
        if not opts.reconnect_delay > 0:
            raise ConfigError("--reconnect-delay must be more than 0 seconds")
        if not opts.reconnect_max_delay >= opts.reconnect_delay:
            raise ConfigError("--reconnect-max-delay must be at least --reconnect-delay")
        if not opts.session_wait >= 0:
            raise ConfigError("--session-wait must not be negative")
        try:
            target = parse_target(opts.target)
        except RemoteProtocolError as e:
            raise ConfigError(e.msg) from None
        tls_ctx = None
        if target.scheme == "tls":
            if engine != "sansio":
                raise ConfigError("tls:// needs the sansio engine (--engine sansio)")
            from .tls import client_context

            tls_ctx = client_context(opts.tls_ca)
        elif opts.tls_ca is not None or opts.tls_server_name is not None:
            raise ConfigError("--tls-ca/--tls-server-name need a tls:// target")
        if opts.stealth_path is not None:
            if target.scheme != "tls":
                raise ConfigError("--stealth-path needs a tls:// target (stealth runs inside TLS)")
            from .proto.errors import LocalProtocolError
            from .proto.stealth import StealthGate

            try:
                StealthGate(opts.stealth_path)
            except LocalProtocolError as e:
                raise ConfigError(f"--stealth-path: {e}") from None
        username = opts.user or target.user or getpass.getuser()
        identity_src: KeySource = opts.identity or os.path.expanduser("~/.ssh/id_ed25519")
        try:
            identity = keys.load_private_key(identity_src, what="identity")
            certificate = None
            if opts.certificate is not None:
                cert = keys.load_certificate(opts.certificate)
                certificate = cert.public_bytes().decode("ascii")
        except (keys.KeyLoadError, OSError) as e:
            raise ConfigError(str(e)) from None
        try:
            host_keys = HostKeyPolicy(
                fingerprints=list(opts.host_key_fingerprints), known_hosts=opts.known_hosts
            )
        except (ValueError, OSError) as e:
            raise ConfigError(str(e)) from None
        socks: list[SocksListener] = []
        local: list[fw.LocalForward] = []
        registry = fw.ForwardRegistry()
        try:
            for spec in opts.socks:
                d = fw.parse_dynamic(spec)
                socks.append(SocksListener(d, fw.effective_bind_host(d.bind_host)))
            for spec in opts.local_forwards:
                local.append(fw.parse_local(spec))
            for spec in opts.remote_forwards:
                registry.add(fw.parse_remote(spec))
        except fw.ForwardSpecError as e:
            raise ConfigError(e.msg) from None
        creds = opts.socks_credentials
        for s in socks:
            if not names.is_loopback(s.bind_host) and creds is None and not opts.socks_open:
                raise ConfigError(
                    f"SOCKS listener {s.forward.spec()} is not on loopback: refusing to run an "
                    "open proxy; set --socks-user/--socks-password, or --socks-open if you "
                    "really mean it"
                )
        return cls(
            target=target,
            username=username,
            identity=identity,
            certificate=certificate,
            host_keys=host_keys,
            socks=socks,
            local=local,
            registry=registry,
            socks_credentials=creds,
            engine=engine,
            ssh=ssh,
            connect_timeout=opts.connect_timeout,
            tls=tls_ctx,
            tls_server_name=opts.tls_server_name or (target.host if tls_ctx else None),
            stealth_path=opts.stealth_path,
            reconnect=opts.reconnect,
            reconnect_delay=float(opts.reconnect_delay),
            reconnect_max_delay=float(opts.reconnect_max_delay),
            session_wait=float(opts.session_wait),
        )
