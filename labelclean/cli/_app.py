"""The typer app shared by every sub-command module, and the console-script entry point.

Each sub-command lives in its own module below and registers itself on :data:`app`.
No torch/timm import happens at module level, so ``labelclean --help`` is instant.
Exit codes: 0 success, 1 a user-fixable :class:`~labelclean.errors.LabelcleanError`,
2 a usage error, 130/143 interrupted.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from labelclean._version import __version__
from labelclean.errors import Interrupted, LabelcleanError

_state = {"debug": bool(os.environ.get("LABELCLEAN_DEBUG"))}


class _Repeats(logging.Filter):
    """At most :attr:`SHOWN` log lines per message template; the rest counted, not shown.

    A loop over rows warns once per row: 100,000 single-sample classes once printed 100,000
    lines, burying everything else. The first few show what is wrong, the one after them
    says more are coming, and :meth:`summary` gives the count when the command ends.
    """

    SHOWN = 5

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[tuple[str, object]] = Counter()
        self.last: dict[tuple[str, object], tuple[str, str]] = {}  #: level, message

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        self.counts[key] += 1
        if self.counts[key] <= self.SHOWN:
            return True
        self.last[key] = (record.levelname, record.getMessage())
        if self.counts[key] == self.SHOWN + 1:
            record.msg, record.args = "... more like the above, counted at the end", None
            return True
        return False

    def summary(self) -> list[str]:
        """One line per template shown :attr:`SHOWN` times and more; the counts start over."""
        lines = [
            f"{self.last[key][0]}: ... and {n - self.SHOWN:,} more like the above; "
            f"the last: {self.last[key][1]}"
            for key, n in self.counts.items()
            if n > self.SHOWN
        ]
        self.counts.clear()
        self.last.clear()
        return lines


_repeats = _Repeats()


class _Group(TyperGroup):
    """One line on stderr and exit code 1 for a user's problem (traceback with --debug).

    A LabelcleanError, or an OSError a user's disk or folders cause (full, read-only, no
    permission, name too long; see :func:`labelclean._io.os_error_message`) wherever it
    happens. A run stopped by Ctrl-C or SIGTERM before it wrote anything exits 130 / 143.
    """

    def invoke(self, ctx: Any) -> Any:
        from labelclean._io import is_user_os_error, os_error_message
        from labelclean.cli._signals import interrupted_exit_code

        try:
            try:
                return super().invoke(ctx)
            finally:  # before the error line, which stays the last
                for line in _repeats.summary():
                    typer.echo(line, err=True)
        except Interrupted as err:
            typer.echo(f"interrupted: {err}", err=True)
            raise typer.Exit(interrupted_exit_code()) from None
        except LabelcleanError as err:
            if _state["debug"]:
                raise
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
        except OSError as err:
            if _state["debug"] or not is_user_os_error(err):
                raise
            typer.echo(f"error: {os_error_message(err)}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="labelclean",
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
    help="Find wrong labels in an image dataset, fix them, and train a model robust to the rest.",
    epilog="Docs: README.md, section 'How it works'. Run `labelclean demo` for a 1-minute tour.",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"labelclean {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors.")
    ] = False,
) -> None:
    """Find wrong labels in an image dataset, fix them, and train a model robust to the rest."""
    _state["debug"] = _state["debug"] or debug
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(
        level=logging.DEBUG if _state["debug"] else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    for handler in root.handlers:
        if handler not in before and not _state["debug"]:  # --debug shows every line
            handler.addFilter(_repeats)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="labelclean")
