"""What both drivers do on SIGINT/SIGTERM: drain first, and a second signal exits at once.

The first signal starts a graceful shutdown: stop accepting, let open tunnels
finish for up to ``--shutdown-timeout`` seconds, then close every session with
an SSH disconnect and exit 0.  The drivers then install :func:`exit_now` for
both signals, so an impatient second Ctrl-C (or systemd's follow-up) ends the
process on the spot, whatever a peer or a thread is stuck on.
"""

from __future__ import annotations

import os
import signal
import types

from .errors import EXIT_ERROR

#: The signals that start a graceful shutdown.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_now(signum: int, frame: types.FrameType | None) -> None:
    """Signal handler for the second signal: no cleanup, no waiting."""
    del frame
    name = signal.Signals(signum).name
    os.write(2, f"wraith: {name} again: exiting now\n".encode())
    os._exit(EXIT_ERROR)


def arm_second_signal() -> None:
    """From now on SIGINT/SIGTERM end the process at once (main thread only)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, exit_now)
