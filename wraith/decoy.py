"""Where stealth mode's decoy web site comes from: ``--decoy URL``, ``--decoy DIR``, or built in.

``--decoy URL`` (``http://`` or ``https://``) makes the server splice every
non-Wraith connection to that web server, so probers get exactly its bytes.
``--decoy DIR`` serves the files under ``DIR`` with :class:`~wraith.proto.decoy.StaticSite`;
without ``--decoy`` a plain built-in page is served the same way.
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .config import ConfigError
from .proto.decoy import Page

#: The largest file ``--decoy DIR`` serves (larger ones are 404).
MAX_FILE = 32 * 1024 * 1024

DEFAULT_PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Welcome</title>
<style>body { font-family: sans-serif; max-width: 40em; margin: 4em auto; color: #333; }</style>
</head>
<body>
<h1>Welcome</h1>
<p>This site is under construction. Please check back soon.</p>
</body>
</html>
"""


@dataclass(frozen=True)
class DecoyUpstream:
    """``--decoy URL``: a real web server to splice probers to."""

    host: str
    port: int
    tls: bool
    #: The SNI and name to verify when ``tls`` (the URL's host).
    server_name: str

    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


class DecoyFiles:
    """``--decoy DIR`` (or the built-in page when ``root`` is None): a page lookup."""

    def __init__(self, root: Path | None) -> None:
        self.root = root.resolve() if root is not None else None

    def __call__(self, path: str) -> Page | None:
        if self.root is None:
            return Page(DEFAULT_PAGE, "text/html; charset=utf-8") if path == "/" else None
        if "\x00" in path:
            return None
        candidate = (self.root / path.lstrip("/")).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            return None  # ../ and symlinks out of the site
        if candidate.is_dir():
            candidate = candidate / "index.html"
        try:
            st = candidate.stat()
            if not candidate.is_file() or st.st_size > MAX_FILE:
                return None
            body = candidate.read_bytes()
        except OSError:
            return None
        ctype = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        return Page(body, ctype, st.st_mtime)


Decoy = DecoyUpstream | DecoyFiles


def parse_decoy(value: str | os.PathLike[str] | None) -> Decoy:
    """``--decoy``: an http(s):// URL, a directory, or None for the built-in page."""
    if value is None:
        return DecoyFiles(None)
    text = os.fspath(value)
    if text.startswith(("http://", "https://")):
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as e:
            raise ConfigError(f"--decoy: bad URL {text!r}: {e}") from None
        if not parts.hostname:
            raise ConfigError(f"--decoy: bad URL {text!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(
                f"--decoy: {text!r}: give the web server's origin only (no path); "
                "every request is passed on unchanged"
            )
        tls = parts.scheme == "https"
        return DecoyUpstream(
            host=parts.hostname,
            port=port if port is not None else (443 if tls else 80),
            tls=tls,
            server_name=parts.hostname,
        )
    root = Path(text)
    if not root.is_dir():
        raise ConfigError(
            f"--decoy: {text!r} is neither an http:// or https:// URL nor a directory"
        )
    return DecoyFiles(root)
