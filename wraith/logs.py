"""Logging set-up shared by the CLI commands: text or JSON lines on stderr.

Every handler flushes per line (``logging.StreamHandler`` does), so logs show up
at once when stderr is redirected to a file.  Privacy: nothing in Wraith logs a
tunnel destination, a requested DNS name or a byte count, at any level.
"""

from __future__ import annotations

import logging
import sys
import time

TEXT_FORMAT = "%(asctime)s wraith[%(process)d]: %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json  # lazy: only --log-format json pays for it (time to first byte)

        doc: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        auth = getattr(record, "auth", None)
        if isinstance(auth, dict):
            doc["auth"] = auth
        return json.dumps(doc, separators=(",", ":"))


def setup_logging(verbosity: int = 0, fmt: str = "text") -> None:
    level = logging.DEBUG if verbosity >= 1 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party loggers can name addresses at DEBUG: keep them quiet.
    # acme logs whole request and response bodies (tokens) at DEBUG.
    for name in ("trio", "asyncio", "acme", "urllib3", "josepy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("paramiko", "paramiko.transport"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
