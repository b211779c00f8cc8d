"""Fault injection for the crash-and-resume tests (issue 8), inert unless asked for.

``LABELCLEAN_FAULT=point:epoch:SIGNAL`` makes the process send itself SIGNAL (KILL, INT or
TERM) when it reaches ``point`` (``train_step``, ``record``, ``checkpoint_write``,
``epoch_end``) in 0-based ``epoch``, or ``decode`` at a block of images (issue 14). Only the
tests set it. The audit loop does not read it: :func:`maybe_fail` is only the default of
``run_audit(faults=...)``, which in-process tests replace with their own callback.
"""

from __future__ import annotations

import os
import signal


def maybe_fail(point: str, epoch: int) -> None:
    """Signal ourselves if the environment asks for a fault here."""
    spec = os.environ.get("LABELCLEAN_FAULT")
    if not spec:
        return
    where, at, sig = spec.split(":")
    if where == point and int(at) == epoch:
        os.environ.pop("LABELCLEAN_FAULT")  # once: a handled SIGINT must not fire again
        os.kill(os.getpid(), getattr(signal, f"SIG{sig}"))
