"""ACME challenge material that the servers answer while an order is pending.

Theory of operation
-------------------
:class:`ChallengeResponder` is the meeting point between the ACME manager's
thread (which adds and removes challenges) and the servers' event loops (which
look them up per connection); a lock guards both maps, and lookups are cheap.

* **TLS-ALPN-01** (RFC 8737): a validator connects to port 443, offers only
  the ALPN protocol ``acme-tls/1`` and sends the identifier as SNI, or for an
  IP address its reverse-DNS name (RFC 8738: ``1.0.0.127.in-addr.arpa``).
  The server answers with a self-signed certificate whose only SAN is the
  identifier and whose critical ``id-pe-acmeIdentifier`` extension holds the
  SHA-256 of the key authorization.  :func:`validation_certificate` builds it
  with ``cryptography``; :meth:`ChallengeResponder.tls_alpn_context` returns an
  ``SSLContext`` serving it with ALPN ``acme-tls/1``.  Stdlib ``ssl`` cannot
  see the offered ALPN, so the server sniffs the ClientHello first
  (:mod:`wraith.proto.sniff`) and picks the context before the handshake:
  see :func:`wraith.acme.choose_context`.
* **HTTP-01** (RFC 8555 section 8.3): ``GET /.well-known/acme-challenge/TOKEN``
  on port 80 answers the key authorization (:meth:`http01_response`).

Nothing here imports the ``acme`` library.  Key authorizations are not
secret for long, but they are never logged.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
import tempfile
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "ACME_IDENTIFIER_OID",
    "ACME_TLS_ALPN",
    "HTTP01_PREFIX",
    "ChallengeResponder",
    "sni_name",
    "validation_certificate",
    "validation_context",
]

#: The ALPN protocol of TLS-ALPN-01 validation handshakes.
ACME_TLS_ALPN = "acme-tls/1"
#: id-pe-acmeIdentifier (RFC 8737 section 6.1).
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: The path prefix of HTTP-01 requests.
HTTP01_PREFIX = "/.well-known/acme-challenge/"


def _ip(identifier: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(identifier)
    except ValueError:
        return None


def sni_name(identifier: str) -> str:
    """The SNI a TLS-ALPN-01 validator sends for ``identifier``.

    A DNS name as it is (lower case); an IP address as its reverse-DNS name
    (RFC 8738 section 6), e.g. ``127.0.0.1`` -> ``1.0.0.127.in-addr.arpa``.
    """
    ip = _ip(identifier)
    if ip is not None:
        return ip.reverse_pointer
    return identifier.lower().rstrip(".")


def validation_certificate(identifier: str, key_authorization: str) -> tuple[bytes, bytes]:
    """The RFC 8737 self-signed validation certificate and its key, both PEM.

    The only SAN is ``identifier`` (a dNSName, or an iPAddress for an IP); the
    critical acmeIdentifier extension is the DER OCTET STRING of
    SHA-256(key authorization).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    # DER: OCTET STRING (tag 4), length 32, the digest.
    acme_identifier = bytes([0x04, len(digest)]) + digest
    ip = _ip(identifier)
    san: x509.GeneralName = x509.IPAddress(ip) if ip is not None else x509.DNSName(identifier)
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([san]), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, acme_identifier), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def validation_context(identifier: str, key_authorization: str) -> ssl.SSLContext:
    """A server ``SSLContext`` that serves the validation certificate with ALPN acme-tls/1."""
    cert_pem, key_pem = validation_certificate(identifier, key_authorization)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl loads certificates from files only: a private (0700) temporary
    # directory holds this throwaway pair for the moment it takes to load it.
    with tempfile.TemporaryDirectory(prefix="wraith-acme-") as tmp:
        path = os.path.join(tmp, "validation.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem + key_pem)
        ctx.load_cert_chain(path)
    ctx.set_alpn_protocols([ACME_TLS_ALPN])
    return ctx


class ChallengeResponder:
    """Pending challenge material, shared between the ACME thread and the servers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tls: dict[str, ssl.SSLContext] = {}
        self._http: dict[str, str] = {}

    # -- the ACME thread --------------------------------------------------

    def add_tls_alpn01(self, identifier: str, key_authorization: str) -> str:
        """Serve a validation certificate for ``identifier``; returns the SNI it answers."""
        name = sni_name(identifier)
        ctx = validation_context(identifier, key_authorization)
        with self._lock:
            self._tls[name] = ctx
        return name

    def remove_tls_alpn01(self, identifier: str) -> None:
        with self._lock:
            self._tls.pop(sni_name(identifier), None)

    def add_http01(self, token: str, key_authorization: str) -> None:
        with self._lock:
            self._http[token] = key_authorization

    def remove_http01(self, token: str) -> None:
        with self._lock:
            self._http.pop(token, None)

    def clear(self) -> None:
        with self._lock:
            self._tls.clear()
            self._http.clear()

    @property
    def pending(self) -> int:
        """How many challenges are being answered right now."""
        with self._lock:
            return len(self._tls) + len(self._http)

    # -- the servers --------------------------------------------------------

    def tls_alpn_context(self, server_name: str | None) -> ssl.SSLContext | None:
        """The validation context for a ClientHello offering acme-tls/1, or None.

        None means no challenge is pending for that SNI: abort the handshake
        (RFC 8737 section 3) rather than serve the normal certificate.
        """
        if not server_name:
            return None
        name = server_name.lower().rstrip(".")
        with self._lock:
            return self._tls.get(name)

    def http01_response(self, path: str) -> bytes | None:
        """The body for ``GET path`` on port 80, or None (answer 404)."""
        if not path.startswith(HTTP01_PREFIX):
            return None
        token = path[len(HTTP01_PREFIX) :].split("?", 1)[0]
        with self._lock:
            ka = self._http.get(token)
        return ka.encode("ascii") if ka is not None else None
