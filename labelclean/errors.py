"""Errors a user can cause and fix; the CLI prints their message and exits 1.

Anything else that escapes is a bug in labelclean and is shown with a traceback.
"""

from __future__ import annotations


class LabelcleanError(Exception):
    """Base class: a problem with the user's input, options or files."""


class ConfigError(LabelcleanError):
    """An option has a value that cannot work; the message names the flag."""


class ManifestError(LabelcleanError):
    """The label file or image folder is malformed; the message names file and row."""


class ImageError(LabelcleanError):
    """One or more images cannot be used; the message names file and row."""


class ReportError(LabelcleanError):
    """A report.parquet is missing, malformed or from an incompatible version."""


class CheckpointError(LabelcleanError):
    """A checkpoint or work directory cannot be used to resume."""


class OutputError(LabelcleanError):
    """An output cannot go where asked: an input, a folder the user owns, a full disk, ..."""


class OutputExistsError(OutputError):
    """An output already exists and --overwrite was not given."""


class ModelError(LabelcleanError):
    """An exported model folder is incomplete, corrupt or inconsistent."""


class MissingExtraError(LabelcleanError):
    """An optional dependency is not installed; the message says what to install."""


class DivergedError(LabelcleanError):
    """Training diverged (non-finite loss or probabilities); the message names the epoch."""


class Interrupted(Exception):  # noqa: N818 - the user's stop request, not an error
    """Ctrl-C or SIGTERM stopped the work before anything was written; the CLI exits 130/143."""
