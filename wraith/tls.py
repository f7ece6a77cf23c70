"""TLS for the ``tls://`` transport: SSH runs inside a TLS connection.

Server: ``--tls-cert`` (the full chain, PEM) and ``--tls-key``.  Client: the
server's certificate is verified against the system roots, or ``--tls-ca``;
SNI is the target's host name unless ``--tls-server-name`` says otherwise.
TLS 1.2 and 1.3 only; both sides offer ALPN ``http/1.1``, as a browser does.
"""

from __future__ import annotations

import os
import ssl

from .config import ConfigError

ALPN = ["http/1.1"]


def server_context(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(os.fspath(cert), os.fspath(key))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"--tls-cert/--tls-key: cannot load {cert}: {_why(e)}") from None
    ctx.set_alpn_protocols(ALPN)
    return ctx


def client_context(ca: str | os.PathLike[str] | None) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=os.fspath(ca) if ca is not None else None)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"--tls-ca: cannot load {ca}: {_why(e)}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    return ctx


def handshake_error(exc: BaseException, server_name: str) -> str:
    """One line for a failed client handshake (certificate problems spelled out)."""
    while exc.__cause__ is not None and not isinstance(exc, ssl.SSLError):
        exc = exc.__cause__
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate of {server_name} not trusted: {exc.verify_message} "
            "(pass --tls-ca FILE for a private CA, or --tls-server-name NAME)"
        )
    return f"TLS handshake with {server_name} failed: {_why(exc)}"


def _why(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError) and e.reason:
        return str(e.reason).lower().replace("_", " ")
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__
