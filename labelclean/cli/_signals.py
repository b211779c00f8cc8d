"""Ctrl-C and SIGTERM for long runs: stop at the next step with the checkpoint intact.

The first signal only sets a flag; the loop notices it before its next step, and the CLI
exits 130 (SIGINT) or 143 (SIGTERM) printing the exact command that resumes the run. A
second Ctrl-C exits at once.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from types import FrameType

from labelclean.cli._console import console

#: The last stop signal received (for the exit code of an Interrupted run).
_last_signal = {"signum": signal.SIGINT}


def interrupted_exit_code() -> int:
    """128 + the last stop signal received: 130 for SIGINT (the default), 143 for SIGTERM."""
    return 128 + int(_last_signal["signum"])


class StopRequest:
    """Installed as the SIGINT/SIGTERM handler; call it to ask whether to stop."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def __call__(self) -> bool:
        """True once a stop was requested."""
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + (self.signum or signal.SIGINT)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            os._exit(self.exit_code)  # second Ctrl-C: leave now, the checkpoint is on disk
        self.signum = _last_signal["signum"] = signum
        console.print(
            f"{signal.Signals(signum).name}: stopping at the next step "
            "(press Ctrl-C again to quit at once)"
        )


def resume_command() -> str:
    """The command line that continues this run."""
    args = [a for a in sys.argv[1:] if a not in ("--resume", "--overwrite")]
    return shlex.join(["labelclean", *args, "--resume"])
