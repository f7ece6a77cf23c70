"""Wraith: self-hostable SSH tunnels, built as a Sans-IO protocol toolkit.

The pure protocol state machines live in :mod:`wraith.proto`; the I/O drivers in
:mod:`wraith.io_trio` and :mod:`wraith.io_asyncio`; the SSH engine interface and
policy in :mod:`wraith.ssh`.  Nothing heavy is imported here, so ``wraith --help``
stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
