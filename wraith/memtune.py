"""Allocator settings for the long-running commands (``serve``, ``connect``).

A bulk transfer allocates and frees a few 128-256 KiB buffers per SSH packet.
With glibc's defaults such blocks are mapped and unmapped, or the heap is
trimmed, over and over, and every re-use faults fresh zeroed pages in (some
100,000 page faults per GB moved, measured).  Raising the mmap threshold to
4 MiB and the trim threshold to 256 MiB keeps freed blocks in the heap for the
next packet.  Only the CLI calls this; a program that embeds Wraith keeps its
own allocator settings.  Anything but glibc on Linux: nothing happens.
"""

from __future__ import annotations

import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Apply the settings; True if glibc took them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt)
    mmap_ok = int(mallopt(_M_MMAP_THRESHOLD, 4 << 20)) == 1
    trim_ok = int(mallopt(_M_TRIM_THRESHOLD, 256 << 20)) == 1
    return mmap_ok and trim_ok
