"""One way for every ``python -m nic_core.<module>`` command to end: a user's mistake (a bad
parameter, a missing or unreadable image, checkpoint or folder) is one ``error: ...`` line and
exit status 1, never a traceback; Ctrl-C is status 130. ``NIC_DEBUG=1`` shows the traceback.
A resumable evaluation stopped by SIGTERM / SIGINT (:class:`nic_core.journal.Stopped`) prints
what it saved and exits 128 + the signal's number (143 / 130): it did not finish.

Training handles SIGTERM / SIGINT itself (a checkpoint is written first, ``nic_core.trainers``);
what reaches this wrapper has already been saved or never started.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Optional, Sequence

# DataError, CheckpointError and the parameter validation's errors are ValueErrors.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def run(main: Callable[[Optional[Sequence[str]]], int],
        argv: Optional[Sequence[str]] = None) -> int:
    """Call ``main(argv)`` and turn the user's errors into a one-line message and exit status 1.

    Args:
        main: a module's command-line entry point, returning its exit status.
        argv: arguments (default: ``sys.argv[1:]``, as argparse reads them).

    Returns:
        ``main``'s status; 1 after an error of :data:`USER_ERRORS`; 130 after Ctrl-C.
    """
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt as e:  # (nic_core.journal.Stopped: a resumable evaluation's stop)
        print(getattr(e, "message", "interrupted"), file=sys.stderr, flush=True)
        return int(getattr(e, "status", 130))
    except USER_ERRORS as e:
        if os.environ.get("NIC_DEBUG"):
            raise
        print(f"error: {e}\n(set NIC_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1
