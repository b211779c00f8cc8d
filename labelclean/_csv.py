"""CSV cells no spreadsheet runs as a formula, read back exactly as they were.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return as a formula (CSV injection: a label ``=HYPERLINK("http://...")`` becomes a link in
the reviewer's spreadsheet, ``=cmd|...`` worse). Every CSV labelclean writes (``export``,
``apply``, ``predict``, ``corrupt``, the decisions file, the rejected images, and the report
page's CSV button, in ``report.js``) follows one rule, OWASP's: such a text cell gets a single
quote in front. A cell that already starts with a quote gets one more, so the rule can be
undone: labelclean's own readers (manifests, truth and vote files, decisions files) drop one
leading quote wherever one of those characters or another quote follows it, so a label or
path written and read back is the one the user had. Plain numbers (``-1``, ``+0.5``,
``-2e3``) are written as they are: no spreadsheet runs them, and a class named ``-1`` stays
readable by other tools.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

#: What a spreadsheet takes for the start of a formula, plus the escape itself.
_ESCAPED_START = re.compile(r"[=+\-@\t\r']")
_ESCAPE = re.compile(r"'[=+\-@\t\r']")  #: a cell escape_cell changed
_HAS_CR = re.compile(r".*\r", re.DOTALL)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def escape_cell(value: Any) -> Any:
    """``value`` as a CSV cell: a text a spreadsheet would run gets a ``'`` in front.

    Example:
        >>> escape_cell("=HYPERLINK(1)"), escape_cell("'quoted"), escape_cell("-1")
        ("'=HYPERLINK(1)", "''quoted", '-1')
    """
    if isinstance(value, str) and _ESCAPED_START.match(value) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def unescape_cell(text: str) -> str:
    """A cell as :func:`escape_cell` had it: one leading ``'`` dropped where it escaped.

    Example:
        >>> unescape_cell("'=HYPERLINK(1)"), unescape_cell("''quoted"), unescape_cell("'90s")
        ('=HYPERLINK(1)', "'quoted", "'90s")
    """
    if _ESCAPE.match(text):
        return text[1:]
    return text


def _is_text(column: pd.Series) -> bool:
    return column.dtype == object or isinstance(column.dtype, pd.StringDtype)


def _starting(column: pd.Series, pattern: re.Pattern[str]) -> np.ndarray:
    """Which cells are strings that start with ``pattern``: bools ``[N]`` (vectorised)."""
    try:
        found = column.str.match(pattern.pattern, flags=pattern.flags)
    except AttributeError:  # an object column without a single string
        return np.zeros(len(column), dtype=bool)
    return found.eq(True).to_numpy(dtype=bool, na_value=False)


def _replaced(column: pd.Series, rows: np.ndarray, change: Callable[[Any], Any]) -> pd.Series:
    """``column`` with ``change`` applied to the cells at the boolean positions ``rows``."""
    values = column.to_numpy(dtype=object, copy=True)
    values[rows] = [change(v) for v in values[rows]]
    return pd.Series(values, index=column.index, name=column.name, dtype=column.dtype)


def escape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell and column name escaped for a CSV."""
    out = frame.rename(columns=escape_cell)
    for i in range(out.shape[1]):
        column = out.iloc[:, i]
        if isinstance(column.dtype, pd.CategoricalDtype):  # its categories are text too
            column = column.astype(object)
            out.isetitem(i, column.array)
        risky = _starting(column, _ESCAPED_START) if _is_text(column) else None
        if risky is not None and risky.any():
            out.isetitem(i, _replaced(column, risky, escape_cell).array)
    return out


def unescape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (a CSV read as text) with :func:`unescape_cell` applied to cells and names."""
    out = frame.rename(columns=lambda c: unescape_cell(c) if isinstance(c, str) else c)
    for i in range(out.shape[1]):
        column = out.iloc[:, i]
        escaped = _starting(column, _ESCAPE) if _is_text(column) else None
        if escaped is not None and escaped.any():
            out.isetitem(i, _replaced(column, escaped, unescape_cell).array)
    return out


def frame_to_csv(frame: pd.DataFrame, path: str | os.PathLike[str], *, sep: str = ",") -> None:
    """Write ``frame`` (no index) as CSV, or TSV with a tab ``sep``, its cells escaped.

    Lines end in LF; where a cell holds a carriage return they end in CR LF (RFC 4180),
    since Python's CSV writer quotes only the characters of its line ending and an unquoted
    CR would split the row when read back.
    """
    out = escape_frame(frame)
    text = [out.iloc[:, i] for i in range(out.shape[1]) if _is_text(out.iloc[:, i])]
    has_cr = any("\r" in str(c) for c in out.columns) or any(
        _starting(c, _HAS_CR).any() for c in text
    )
    out.to_csv(path, index=False, sep=sep, lineterminator="\r\n" if has_cr else "\n")


class _EscapingWriter:
    """A ``csv.writer`` whose rows are escaped cell by cell."""

    def __init__(self, stream: Any, **options: Any) -> None:
        self._writer = csv.writer(stream, **options)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([escape_cell(cell) for cell in row])


def csv_writer(stream: Any, **options: Any) -> _EscapingWriter:
    """``csv.writer(stream, **options)``, with every cell passed through :func:`escape_cell`."""
    return _EscapingWriter(stream, **options)
