"""ACME: get and renew the server's TLS certificates by itself (ADR-008).

Theory of operation
-------------------
:class:`AcmeManager` runs the blocking ``acme`` library (certbot's client,
the optional extra ``wraith[acme]``) in its **own thread**, so both the trio
and the asyncio server only start and stop it, and per connection ask it for
an ``ssl.SSLContext``:

* :func:`choose_context` (or :meth:`AcmeManager.choose_context`) takes the
  sniffed ClientHello (:mod:`wraith.proto.sniff`): a hello offering ALPN
  ``acme-tls/1`` is a TLS-ALPN-01 validator and gets the validation context of
  the :class:`~wraith.acme_challenges.ChallengeResponder` (or None: close);
  everything else gets the serving context picked by SNI
  (:meth:`CertificateStore.context_for`), or None before the first
  certificate exists.
* Port 80 (when served) answers ``responder.http01_response(path)``.

Identifiers are DNS names and IP addresses; they are grouped into at most two
certificates: the DNS names in one order, the IP addresses in another.  The
IP order asks for the ``shortlived`` profile when the directory's
``meta.profiles`` offers it (Let's Encrypt issues IP certificates only so);
``ClientV2.new_order(profile=...)`` sends it.

Challenges: HTTP-01 when ``http01`` is set (a port-80 listener exists; with
TLS-ALPN-01 as the fallback if the CA does not offer it), otherwise
TLS-ALPN-01 only.  The account agrees to the CA's terms of service
automatically (running with ``--acme-domain`` is the operator's consent);
an e-mail contact is optional.

Storage, under ``state_dir/acme/<directory>/`` (0700; files 0600, each
written to a temporary file and renamed into place, so a crash never leaves
half a file):

* ``account.json``: the account key (EC P-256, as a private JWK) and the
  account URL;
* ``dns.pem`` and ``ip.pem``: the full chain as the CA sent it (leaf first)
  followed by the certificate's private key, one file so that the pair is
  replaced at once.

Timing: a certificate is renewed when ``renew_at`` of its lifetime is left
(default one third: at notBefore + 2/3 of the lifetime), or earlier when the
CA's ARI (RFC 9773, ``renewalInfo``, asked every 6 hours) suggests so; the
new order does not name the certificate it ``replaces``.  The new context is swapped
in atomically: the next handshake gets it, open connections keep theirs.
Failures are logged as one line each on the ``wraith`` logger and retried
with exponential backoff and full jitter (:class:`wraith.proto.backoff.Backoff`).
On restart, stored certificates are served at once; an order is placed only
when one is missing, its identifiers changed, or renewal is due.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import ipaddress
import json
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import __version__
from .acme_challenges import ACME_TLS_ALPN, ChallengeResponder
from .config import ConfigError
from .proto.backoff import Backoff
from .proto.sniff import ClientHello
from .tls import server_context

if TYPE_CHECKING:
    from acme import client as acme_client
    from acme import messages
    from josepy.jwk import JWK

__all__ = [
    "DNS",
    "IP",
    "LETS_ENCRYPT",
    "AcmeManager",
    "AcmeSettings",
    "CertificateStore",
    "ChallengeResponder",
    "ServedCertificate",
    "choose_context",
]

log = logging.getLogger("wraith")

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
EXTRA_MISSING = "ACME needs the acme extra: pip install 'wraith[acme]'"

#: The two certificate groups.
DNS = "dns"
IP = "ip"
SHORTLIVED = "shortlived"

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
#: ARI is asked again this often (RFC 9773 suggests honouring Retry-After; 6 h is its default).
_ARI_INTERVAL = 6 * 3600.0
#: The longest single sleep, so that a changed wall clock (suspend, NTP) is noticed.
_MAX_SLEEP = 3600.0
#: Never renew the same certificate again sooner than this after an issuance.
_MIN_GAP = 1.0


# --------------------------------------------------------------------------
# Settings


def normalize_identifier(value: str) -> str:
    """A DNS name (lower case, no trailing dot) or an IP address (canonical form).

    Raises :class:`ConfigError` with a one-line reason.
    """
    raw = value.strip()
    if not raw:
        raise ConfigError("--acme-domain: empty name")
    if "%" in raw:
        raise ConfigError(f"--acme-domain: {raw!r}: IPv6 zone indexes are not allowed")
    try:
        ip = ipaddress.ip_address(raw.strip("[]"))
    except ValueError:
        pass
    else:
        if ip.is_unspecified or ip.is_multicast:
            raise ConfigError(f"--acme-domain: {raw} cannot have a certificate")
        return str(ip)
    name = raw.lower().rstrip(".")
    if name.startswith("*."):
        raise ConfigError(
            f"--acme-domain: {raw}: wildcard names need the DNS-01 challenge, "
            "which Wraith does not do; list the names instead"
        )
    if not name.isascii():
        raise ConfigError(f"--acme-domain: {raw!r}: write international names as xn--...")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ConfigError(f"--acme-domain: {raw!r} is not a valid DNS name or IP address")
    if labels[-1].isdigit():
        raise ConfigError(f"--acme-domain: {raw!r} is not a valid DNS name or IP address")
    return name


def _is_ip(identifier: str) -> bool:
    try:
        ipaddress.ip_address(identifier)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class AcmeSettings:
    """What the ACME manager needs; construction validates (:class:`ConfigError`).

    ``renew_at`` (``--acme-renew-at FRACTION``): renew when this fraction of
    the certificate's lifetime is left; 1/3 by default, must be in (0, 1).
    ``retry_initial``/``retry_cap``: the failure backoff (seconds; full jitter).
    """

    identifiers: Sequence[str]
    state_dir: Path
    email: str | None = None
    directory: str = LETS_ENCRYPT
    ca_file: Path | None = None
    renew_at: float = 1 / 3
    http01: bool = False
    retry_initial: float = 60.0
    retry_cap: float = 3600.0
    #: The longest one order may take (validation, finalization), seconds.
    order_timeout: float = 120.0
    #: The timeout of each HTTP request to the CA, seconds.
    network_timeout: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.identifiers, str):
            raise ConfigError("--acme-domain: pass a list of names")
        seen: list[str] = []
        for value in self.identifiers:
            ident = normalize_identifier(value)
            if ident not in seen:
                seen.append(ident)
        if not seen:
            raise ConfigError("ACME needs at least one --acme-domain")
        object.__setattr__(self, "identifiers", tuple(seen))
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        if not self.directory.startswith("https://"):
            raise ConfigError(f"--acme-directory: {self.directory!r} is not an https:// URL")
        if self.ca_file is not None:
            ca = Path(self.ca_file)
            object.__setattr__(self, "ca_file", ca)
            if not ca.is_file():
                raise ConfigError(f"--acme-ca: {ca}: no such file")
        if self.email is not None and (
            not re.fullmatch(r"[^@\s,]+@[^@\s,]+\.[^@\s,]+", self.email)
        ):
            raise ConfigError(f"--acme-email: {self.email!r} is not an e-mail address")
        if not 0.0 < self.renew_at < 1.0:
            raise ConfigError("--acme-renew-at must be a fraction between 0 and 1 (e.g. 0.33)")
        if not 0 < self.retry_initial <= self.retry_cap:
            raise ConfigError("ACME retry delays must be positive, the cap at least the first")
        if not (self.order_timeout > 0 and self.network_timeout > 0):
            raise ConfigError("ACME timeouts must be positive")

    def groups(self) -> dict[str, tuple[str, ...]]:
        """The identifiers per certificate: ``{"dns": (...), "ip": (...)}``, non-empty only."""
        out: dict[str, tuple[str, ...]] = {}
        dns = tuple(i for i in self.identifiers if not _is_ip(i))
        ips = tuple(i for i in self.identifiers if _is_ip(i))
        if dns:
            out[DNS] = dns
        if ips:
            out[IP] = ips
        return out

    def storage_dir(self) -> Path:
        """``state_dir/acme/<host_path of the directory URL>``: one account per CA."""
        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", self.directory.removeprefix("https://")).strip("_")
        return self.state_dir / "acme" / (slug or "default")


def profile_for(group: str, profiles: object) -> str | None:
    """The profile an order of ``group`` asks for: ``shortlived`` for IPs, if offered.

    ``profiles`` is the directory's ``meta.profiles`` (name -> description), or None.
    """
    if group == IP and isinstance(profiles, dict) and SHORTLIVED in profiles:
        return SHORTLIVED
    return None


# --------------------------------------------------------------------------
# Serving certificates


@dataclass(frozen=True)
class ServedCertificate:
    group: str
    #: The certificate's identifiers (normalized: DNS names, IP addresses).
    identifiers: frozenset[str]
    context: ssl.SSLContext = field(repr=False)
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: int
    path: Path
    leaf_pem: bytes = field(repr=False)

    @property
    def lifetime(self) -> float:
        return (self.not_after - self.not_before).total_seconds()

    def renewal_time(self, renew_at: float) -> datetime.datetime:
        """When ``renew_at`` of the lifetime is left."""
        return self.not_before + datetime.timedelta(seconds=(1.0 - renew_at) * self.lifetime)

    def covers(self, identifier: str) -> bool:
        return identifier in self.identifiers


class CertificateSource(Protocol):
    def context_for(self, server_name: str | None) -> ssl.SSLContext | None: ...


class CertificateStore:
    """The current serving certificates; swapped atomically, read without a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._served: dict[str, ServedCertificate] = {}

    def get(self, group: str) -> ServedCertificate | None:
        return self._served.get(group)

    def all(self) -> tuple[ServedCertificate, ...]:
        return tuple(self._served.values())

    def put(self, cert: ServedCertificate) -> None:
        with self._lock:
            served = dict(self._served)
            served[cert.group] = cert
            self._served = served  # one reference swap: readers see old or new

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        """The serving context for a ClientHello's SNI (None: no certificate yet).

        A DNS SNI gets the certificate that names it; no SNI, or an IP address
        sent as SNI, gets the certificate covering IP addresses.  Otherwise the
        DNS certificate, then anything, is the default.
        """
        served = self._served
        if not served:
            return None
        dns, ip = served.get(DNS), served.get(IP)
        name = server_name.lower().rstrip(".") if server_name else None
        if name is not None and _is_ip(name.strip("[]")):
            name = str(ipaddress.ip_address(name.strip("[]")))
        if name is None or _is_ip(name):
            chosen = ip or dns
        elif dns is not None and dns.covers(name):
            chosen = dns
        else:
            chosen = dns or ip
        assert chosen is not None
        return chosen.context


def choose_context(
    hello: ClientHello, responder: ChallengeResponder, certificates: CertificateSource
) -> ssl.SSLContext | None:
    """The context for a sniffed ClientHello, or None: close the connection.

    ``acme-tls/1`` offered: a TLS-ALPN-01 validator, answered only with the
    validation certificate for its SNI.  Anything else: the serving
    certificate chosen by SNI (None before the first one exists).
    """
    if ACME_TLS_ALPN in hello.alpn:
        return responder.tls_alpn_context(hello.server_name)
    return certificates.context_for(hello.server_name)


# --------------------------------------------------------------------------
# Files


def _private_dirs(storage: Path) -> None:
    """Create ``state_dir/acme/<directory>`` with both of our levels 0700."""
    storage.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (storage.parent, storage):
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) atomically: temporary file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _identifiers_of(cert: x509.Certificate) -> frozenset[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    names = {n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)}
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return frozenset(names | ips)


def load_served(group: str, path: Path) -> ServedCertificate:
    """Load a stored chain + key file; raises ValueError (or OSError) if it is unusable."""
    data = path.read_bytes()
    chain = x509.load_pem_x509_certificates(data)
    leaf = chain[0]
    try:
        ctx = server_context(path, path)
    except ConfigError as e:
        raise ValueError(str(e).split(": ", 1)[-1]) from None
    return ServedCertificate(
        group=group,
        identifiers=_identifiers_of(leaf),
        context=ctx,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        serial=leaf.serial_number,
        path=path,
        leaf_pem=leaf.public_bytes(serialization.Encoding.PEM),
    )


# --------------------------------------------------------------------------
# The acme library (lazy)


@functools.cache
def _acme() -> Any:
    try:
        import acme.client
        import acme.messages
        import josepy.jwk  # noqa: F401  (the acme library's own dependency)
    except ImportError:
        raise ConfigError(EXTRA_MISSING) from None
    return acme


@functools.cache
def _ready_response_class() -> Any:
    """A challenge response whose JSON is ``{}``: "I am ready, validate now".

    The ``acme`` library no longer knows TLS-ALPN-01; every response RFC 8555
    and RFC 8737 define is the empty object (the type field and the key
    authorization are never sent).  It must carry a field all the same: an
    object without fields is falsy, and the library then sends an empty
    payload, a POST-as-GET, which validates nothing.
    """
    from acme import challenges

    class Ready(challenges.KeyAuthorizationChallengeResponse):
        typ = "wraith-ready"

    return Ready


class AcmeFailure(Exception):
    """One order failed; the message is one line for the log."""


class _Stopped(Exception):
    pass


def _describe(exc: BaseException, redact: Iterable[str] = ()) -> str:
    """One line for a failed attempt, without key authorizations."""
    import requests
    from acme import errors as acme_errors
    from acme import messages

    if isinstance(exc, AcmeFailure):
        text = str(exc)
    elif isinstance(exc, messages.Error):
        text = exc.detail or exc.description or str(exc)
        if exc.code:
            text = f"{text} ({exc.code})"
    elif isinstance(exc, requests.exceptions.RequestException):
        url = exc.request.url if exc.request is not None else None
        if isinstance(url, bytes):
            url = url.decode("ascii", "replace")
        where = f" at {url}" if url else ""
        if isinstance(exc, requests.exceptions.SSLError):
            text = f"TLS error talking to the CA{where} (is --acme-ca right?): {_short(exc)}"
        elif isinstance(exc, requests.exceptions.Timeout):
            text = f"the CA{where} did not answer in time"
        else:
            text = f"cannot reach the CA{where}: {_short(exc)}"
    elif exc.args and isinstance(exc.args[0], requests.Response):
        resp = exc.args[0]
        text = f"unexpected answer HTTP {resp.status_code} from {resp.url}"
    elif isinstance(exc, acme_errors.Error):
        text = str(exc) or type(exc).__name__
    elif isinstance(exc, OSError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    for secret in redact:
        if secret:
            text = text.replace(secret, "[redacted]")
    return " ".join(text.split())


def _short(exc: BaseException) -> str:
    """The gist of a requests/urllib3 error, whose text nests several reprs."""
    text = str(exc)
    for pattern in (
        r"certificate verify failed: ([^(\"']+)",
        r"\[SSL: \w+\] ([^(\"']+)",
        r"\[Errno -?\d+\] ([^(\"']+)",
    ):
        m = re.search(pattern, text)
        if m:
            return m.group(1).strip().lower()
    return text[:200]


# --------------------------------------------------------------------------
# The manager


class AcmeManager:
    """Gets, stores and renews the certificates of :class:`AcmeSettings`, in a thread.

    ``start()`` loads what is stored (served at once) and starts the thread;
    ``stop()`` wakes and joins it.  Servers call :meth:`choose_context` per
    connection, and serve ``responder.http01_response`` on port 80.
    ``on_change`` is called (from the manager thread) after each swap.
    """

    def __init__(
        self,
        settings: AcmeSettings,
        *,
        responder: ChallengeResponder | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        _acme()  # fail early, with one line, without the extra
        self.settings = settings
        self.responder = responder if responder is not None else ChallengeResponder()
        self.store = CertificateStore()
        self._on_change = on_change
        self._dir = settings.storage_dir()
        self._cond = threading.Condition()
        self._generation = 0
        self._orders = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._forced: set[str] = set()
        #: ARI's suggested renewal time per group, for the certificate with that serial.
        self._ari: dict[str, tuple[int, datetime.datetime]] = {}
        #: The group being ordered right now (for the failure line).
        self._ordering: str | None = None
        self._next_ari_check = 0.0
        self._ari_offered: bool | None = None
        self._last_issued: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        #: Key authorizations (and tokens) in flight: never in a log line.
        self._secrets: list[str] = []
        self._backoff = Backoff(
            initial=settings.retry_initial, cap=settings.retry_cap, stable_after=0.0
        )

    # -- what the servers use ---------------------------------------------

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        return self.store.context_for(server_name)

    def choose_context(self, hello: ClientHello) -> ssl.SSLContext | None:
        return choose_context(hello, self.responder, self.store)

    # -- life cycle ----------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the ACME manager is already started")
        self._load_stored()
        self._thread = threading.Thread(target=self._run, name="wraith-acme", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Wake the thread and wait for it (an HTTP request in flight may take a moment)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.responder.clear()

    def __enter__(self) -> AcmeManager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def renew_now(self) -> None:
        """Order new certificates for every group now (not waiting for the schedule)."""
        with self._cond:
            self._forced.update(self.settings.groups())
        self._wake.set()

    # -- observing (tests, status) ---------------------------------------------

    @property
    def generation(self) -> int:
        """How many times a certificate was put in service (loaded or issued)."""
        return self._generation

    @property
    def orders(self) -> int:
        """How many orders this manager placed (successful or not)."""
        return self._orders

    def ready(self) -> bool:
        """Every group has an unexpired certificate for exactly its identifiers."""
        now = datetime.datetime.now(datetime.UTC)
        for group, wanted in self.settings.groups().items():
            cert = self.store.get(group)
            if cert is None or cert.identifiers != frozenset(wanted) or cert.not_after <= now:
                return False
        return True

    def wait_ready(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(self.ready, timeout)

    def wait_changed(self, after: int, timeout: float) -> bool:
        """Wait until :attr:`generation` is more than ``after``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._generation > after, timeout)

    # -- the thread ----------------------------------------------------------

    def _serve(self, cert: ServedCertificate) -> None:
        with self._cond:
            self.store.put(cert)
            self._generation += 1
            self._cond.notify_all()
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:
                log.exception("ACME: certificate change callback failed")

    def _load_stored(self) -> None:
        for group, wanted in self.settings.groups().items():
            path = self._dir / f"{group}.pem"
            if not path.exists():
                continue
            try:
                cert = load_served(group, path)
            except (OSError, ValueError) as e:
                log.warning("ACME: ignoring the stored certificate %s: %s", path, _describe(e))
                continue
            if cert.identifiers != frozenset(wanted):
                log.info(
                    "ACME: the stored certificate for %s does not match --acme-domain; "
                    "ordering a new one",
                    ", ".join(sorted(cert.identifiers)),
                )
                continue
            self._serve(cert)
            log.info(
                "ACME: serving the stored certificate for %s (valid until %s)",
                ", ".join(wanted),
                cert.not_after.strftime("%Y-%m-%d %H:%M UTC"),
            )

    def _due(self, now: datetime.datetime) -> tuple[list[str], datetime.datetime | None]:
        """The groups to order now, and when the next one falls due."""
        due: list[str] = []
        later: datetime.datetime | None = None
        with self._cond:
            forced = set(self._forced)
        for group, wanted in self.settings.groups().items():
            cert = self.store.get(group)
            if group in forced or cert is None or cert.identifiers != frozenset(wanted):
                due.append(group)
                continue
            when = cert.renewal_time(self.settings.renew_at)
            ari = self._ari.get(group)
            if ari is not None and ari[0] == cert.serial and ari[1] < when:
                when = ari[1]
            last = self._last_issued.get(group)
            if last is not None:
                when = max(when, datetime.datetime.fromtimestamp(last + _MIN_GAP, datetime.UTC))
            if when <= now:
                due.append(group)
            elif later is None or when < later:
                later = when
        return due, later

    def _run(self) -> None:
        try:
            self._loop()
        except _Stopped:
            pass
        except Exception:  # a bug: say so instead of dying silently
            log.exception("ACME: the certificate manager stopped")

    def _loop(self) -> None:
        while not self._stop.is_set():
            due, later = self._due(datetime.datetime.now(datetime.UTC))
            if due:
                try:
                    self._order_groups(due)
                except _Stopped:
                    return
                except Exception as e:
                    delay = self._backoff.next_delay()
                    failed = [self._ordering] if self._ordering else due
                    names = ", ".join(i for g in failed for i in self.settings.groups()[g])
                    log.warning(
                        "ACME: getting a certificate for %s failed: %s; retrying in %.1fs",
                        names,
                        _describe(e, self._secrets),
                        delay,
                    )
                    self._secrets = []
                    self._sleep_until_woken(delay)
                    continue
                self._backoff.reset()
                continue
            if time.time() >= self._next_ari_check:
                self._check_ari()
            wait = _MAX_SLEEP
            if later is not None:
                wait = min(wait, (later - datetime.datetime.now(datetime.UTC)).total_seconds())
            if self._ari_offered:
                wait = min(wait, self._next_ari_check - time.time())
            self._sleep_until_woken(max(wait, 0.0))

    def _sleep_until_woken(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()
        if self._stop.is_set():
            raise _Stopped

    def _pause(self, seconds: float) -> None:
        """Sleep inside an order: only stop() interrupts."""
        if self._stop.wait(seconds):
            raise _Stopped

    # -- ACME protocol -------------------------------------------------------

    def _network(self, key: JWK | None) -> acme_client.ClientNetwork:
        acme = _acme()
        from josepy.jwa import ES256

        # ``verify_ssl`` goes to requests' ``verify=``, which takes a CA file too.
        verify: Any = str(self.settings.ca_file) if self.settings.ca_file else True
        return acme.client.ClientNetwork(  # type: ignore[no-any-return]
            key,
            alg=ES256,
            verify_ssl=verify,
            user_agent=f"wraith/{__version__} acme-python",
            timeout=int(self.settings.network_timeout),
        )

    def _check_ari(self) -> None:
        """Ask the CA's renewalInfo (RFC 9773) when to renew; quietly skip on any error."""
        self._next_ari_check = time.time() + _ARI_INTERVAL
        certs = self.store.all()
        if not certs or self._ari_offered is False:
            return
        acme = _acme()
        net = self._network(None)
        try:
            directory = acme.client.ClientV2.get_directory(self.settings.directory, net)
            client = acme.client.ClientV2(directory, net)
            self._ari_offered = "renewalInfo" in directory.to_partial_json()
            if not self._ari_offered:
                return
            for cert in certs:
                when, _ = client.renewal_time(cert.leaf_pem)
                if isinstance(when, datetime.datetime) and when.tzinfo is not None:
                    self._ari[cert.group] = (cert.serial, when)
        except Exception as e:
            log.debug("ACME: renewal info not available: %s", _describe(e))
        finally:
            net.session.close()

    def _account(self, net: acme_client.ClientNetwork, client: acme_client.ClientV2) -> None:
        """Load or create the account key, and register (or find) the account."""
        acme = _acme()
        from josepy.jwk import JWK, JWKEC

        _private_dirs(self._dir)
        path = self._dir / "account.json"
        stored: dict[str, Any] = {}
        if path.exists():
            stored = json.loads(path.read_text())
            key = JWK.from_json(stored["key"])
        else:
            key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
            stored = {"directory": self.settings.directory, "key": key.to_json(), "uri": None}
            _write_private(path, json.dumps(stored, indent=1).encode())
        net.key = key
        reg = acme.messages.NewRegistration.from_data(
            email=self.settings.email, terms_of_service_agreed=True
        )
        try:
            regr = client.new_account(reg)
            uri = regr.uri
        except acme.errors.ConflictError as e:  # the key has an account already
            uri = e.location
            net.account = acme.messages.RegistrationResource(
                body=acme.messages.Registration(), uri=uri
            )
        if uri != stored.get("uri"):
            stored["uri"] = uri
            _write_private(path, json.dumps(stored, indent=1).encode())

    def _order_groups(self, groups: list[str]) -> None:
        acme = _acme()
        self._ordering = None
        net = self._network(None)
        try:
            directory = acme.client.ClientV2.get_directory(self.settings.directory, net)
            client = acme.client.ClientV2(directory, net)
            if directory.meta.external_account_required:
                raise AcmeFailure("the CA requires external account binding, not supported")
            self._account(net, client)
            profiles = getattr(directory.meta, "profiles", None)
            for group in groups:
                wanted = self.settings.groups()[group]
                self._ordering = group
                cert = self._order(client, group, wanted, profile_for(group, profiles))
                self._ordering = None
                log.info(
                    "ACME: new certificate for %s in service (serial %x, valid until %s)",
                    ", ".join(wanted),
                    cert.serial,
                    cert.not_after.strftime("%Y-%m-%d %H:%M UTC"),
                )
                self._last_issued[group] = time.time()
                with self._cond:
                    self._forced.discard(group)
                self._serve(cert)
        finally:
            net.session.close()

    def _order(
        self,
        client: acme_client.ClientV2,
        group: str,
        identifiers: tuple[str, ...],
        profile: str | None,
    ) -> ServedCertificate:
        deadline = time.monotonic() + self.settings.order_timeout
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address(i)) if _is_ip(i) else x509.DNSName(i)
            for i in identifiers
        ]
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256())
        )
        self._orders += 1
        orderr = client.new_order(csr.public_bytes(serialization.Encoding.PEM), profile=profile)
        for authzr in orderr.authorizations:
            self._authorize(client, authzr, deadline)
        order = self._finalize(client, orderr, deadline)
        assert order.certificate is not None
        chain_pem = self._download(client, order.certificate)
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
        leaf = chain[0]
        if leaf.public_key() != key.public_key():
            raise AcmeFailure("the CA returned a certificate for another key")
        got = _identifiers_of(leaf)
        if not got >= set(identifiers):
            raise AcmeFailure(f"the certificate names {', '.join(sorted(got))}, not all asked for")
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain) + key_pem
        _private_dirs(self._dir)
        path = self._dir / f"{group}.pem"
        _write_private(path, pem)
        return load_served(group, path)

    def _authorize(
        self,
        client: acme_client.ClientV2,
        authzr: messages.AuthorizationResource,
        deadline: float,
    ) -> None:
        acme = _acme()
        msg = acme.messages
        body = authzr.body
        if body.status == msg.STATUS_VALID:
            return
        ident = body.identifier.value
        if body.identifier.typ == msg.IDENTIFIER_IP:
            ident = str(ipaddress.ip_address(ident))
        offered: dict[str, Any] = {}
        for challb in body.challenges:
            jobj = challb.chall.to_partial_json()
            offered[str(jobj.get("type"))] = (challb, jobj)
        preference = ["http-01", "tls-alpn-01"] if self.settings.http01 else ["tls-alpn-01"]
        if not self.settings.http01 and "tls-alpn-01" not in offered:
            raise AcmeFailure(
                f"the CA offers no tls-alpn-01 challenge for {ident} (serve port 80 for http-01)"
            )
        typ = next((t for t in preference if t in offered), None)
        if typ is None:
            raise AcmeFailure(f"the CA offers no usable challenge for {ident}")
        challb, jobj = offered[typ]
        token = str(jobj.get("token", ""))
        if not re.fullmatch(r"[A-Za-z0-9_-]{16,}", token):
            raise AcmeFailure(f"the CA sent a malformed {typ} token for {ident}")
        from josepy.b64 import b64encode

        account_key = client.net.key
        assert account_key is not None
        thumb = b64encode(account_key.thumbprint(hash_function=hashes.SHA256)).decode()
        key_authorization = f"{token}.{thumb}"
        self._secrets = [key_authorization, token]
        if typ == "tls-alpn-01":
            self.responder.add_tls_alpn01(ident, key_authorization)
        else:
            self.responder.add_http01(token, key_authorization)
        try:
            if challb.status == msg.STATUS_PENDING:
                # Not ClientV2.answer_challenge: it insists on a Link "up" header,
                # which RFC 8555 does not require (Pebble 2.4 sends none).
                client.net.post(
                    challb.uri,
                    _ready_response_class()(key_authorization=key_authorization),
                    new_nonce_url=client.directory["newNonce"],
                )
            delay = 0.2
            while True:
                authzr, response = client.poll(authzr)
                status = authzr.body.status
                if status == msg.STATUS_VALID:
                    break
                if status not in (msg.STATUS_PENDING, msg.STATUS_PROCESSING):
                    raise AcmeFailure(_validation_error(ident, typ, authzr))
                if time.monotonic() > deadline:
                    raise AcmeFailure(f"validation of {ident} ({typ}) timed out")
                self._pause(_retry_after(response, delay))
                delay = min(delay * 2, 2.0)
        finally:
            if typ == "tls-alpn-01":
                self.responder.remove_tls_alpn01(ident)
            else:
                self.responder.remove_http01(token)
        self._secrets = []

    def _post_as_get(self, client: acme_client.ClientV2, url: str) -> Any:
        return client.net.post(url, None, new_nonce_url=client.directory["newNonce"])

    def _finalize(
        self, client: acme_client.ClientV2, orderr: messages.OrderResource, deadline: float
    ) -> messages.Order:
        acme = _acme()
        msg = acme.messages
        finalized = False
        delay = 0.2
        while True:
            response = self._post_as_get(client, orderr.uri)
            order = msg.Order.from_json(response.json())
            if order.status == msg.STATUS_VALID and order.certificate:
                return order  # type: ignore[no-any-return]
            if order.status == msg.STATUS_INVALID:
                why = _describe(order.error) if order.error is not None else "no reason given"
                raise AcmeFailure(f"the CA refused the order: {why}")
            if order.status == msg.STATUS_READY and not finalized:
                client.begin_finalization(orderr)
                finalized = True
                continue
            if time.monotonic() > deadline:
                raise AcmeFailure(f"the order did not complete in {self.settings.order_timeout}s")
            self._pause(_retry_after(response, delay))
            delay = min(delay * 2, 2.0)

    def _download(self, client: acme_client.ClientV2, url: str) -> str:
        response = self._post_as_get(client, url)
        return str(response.text)


def _retry_after(response: Any, default: float) -> float:
    value = response.headers.get("Retry-After")
    try:
        return min(max(float(value), 0.1), 10.0) if value is not None else default
    except ValueError:
        return default


def _validation_error(ident: str, typ: str, authzr: messages.AuthorizationResource) -> str:
    for challb in authzr.body.challenges:
        if challb.error is not None:
            detail = challb.error.detail or challb.error.description or str(challb.error)
            return f"validation of {ident} ({typ}) failed: {detail}"
    return f"validation of {ident} ({typ}) failed ({authzr.body.status})"
