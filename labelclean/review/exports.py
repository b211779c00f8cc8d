"""CSV files of other round trips read as decisions: the report page's export, Label Studio's.

``apply`` (and ``finetune --decisions``) take any of them in place of a decisions CSV, told
apart by the header (the first line that is neither empty nor a ``#`` comment):

- a ``decision`` column: the review's own decisions file (:mod:`labelclean.review.decisions`);
- ``path`` and ``new_label``: the report page's "Export CSV" (``report.js``). A row whose
  ``new_label`` is filled in decides its image: ``accept`` when it is the audit's suggestion,
  ``keep`` when it is the given label, ``relabel`` otherwise; an empty ``new_label`` decides
  nothing. ``report.js`` escapes its cells for spreadsheets as labelclean's CSVs do
  (:mod:`labelclean._csv`), so path and label are unescaped, or a class ``=x`` would not
  match;
- ``label`` beside ``labelclean_report`` or ``annotation_id``: Label Studio's CSV export of the
  tasks of ``labelclean export --format label-studio``, one row per task with its data fields
  and the chosen ``label`` and ``review`` values as columns
  (:func:`labelclean.interop.label_studio.read_label_studio_csv`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from labelclean._csv import unescape_cell
from labelclean.data.manifest import class_finder
from labelclean.report.parquet import Report
from labelclean.review.decisions import (
    Decision,
    DecisionError,
    decisions_text,
    suggested_labels,
    unclosed,
)

#: The column the report page's CSV export leaves empty for a person to fill in.
NEW_LABEL = "new_label"


def _table(text: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header (lower case) and each later non-empty row with its line number.

    No rows for a decisions CSV (a ``decision`` column): the decisions reader parses it, and
    a second parse here doubled the time and memory ``apply`` took on a large file.

    Raises:
        csv.Error: A cell past the CSV reader's size limit, or a quote never closed (the
            reader would take every later row into that cell, and their decisions with it).
    """
    lines = io.StringIO(text, newline="").readlines()  # as the reader splits them
    reader = csv.reader(lines)
    header: list[str] | None = None
    rows = []
    start = 1  # the line the next record starts on
    for cells in reader:
        first, start = start, reader.line_num + 1
        if reader.line_num == len(lines) and unclosed("".join(lines[first - 1 :])):
            raise csv.Error(f"line {first}: a quoted cell is never closed")
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            if cells[0].strip().startswith("#"):
                continue
            header = [c.strip().lower() for c in cells]
            if "decision" in header:  # the review's own file: its reader parses the rows
                break
            continue
        rows.append((reader.line_num, dict(zip(header, (c.strip() for c in cells)))))
    return header or [], rows


def read_other_csv(path: Path, report: Report) -> tuple[list[Decision], str | None] | None:
    """Decisions and carried fingerprint of a report-page or Label Studio CSV; None otherwise.

    None means the file is not one of them (a decisions CSV, or something the decisions
    reader refuses with its own message).
    """
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    try:
        header, rows = _table(decisions_text(path).removeprefix("\ufeff"))
    except csv.Error as err:
        raise DecisionError(f"{path}: not a readable CSV ({err})") from None
    if "decision" in header:
        return None
    if "path" in header and NEW_LABEL in header:
        return _from_report_export(rows, report), None
    if "label" in header and ({"labelclean_report", "annotation_id"} & set(header)):
        from labelclean.interop.label_studio import read_label_studio_csv

        return read_label_studio_csv(path, rows, report)
    return None


def _from_report_export(rows: list[tuple[int, dict[str, str]]], report: Report) -> list[Decision]:
    """A decision for every row whose ``new_label`` is filled in (line = its CSV line)."""
    labels = suggested_labels(report)
    find = class_finder(report.class_names)
    out = []
    for line, row in rows:
        path, label = (unescape_cell(row.get(c, "")) for c in ("path", NEW_LABEL))
        if not label:
            continue
        label = find(label) or label  # the class it names, as the report spells it
        given, suggested = labels.get(path, (None, None))
        kind = "accept" if label == suggested else "keep" if label == given else "relabel"
        out.append(Decision(path, kind, label, "", line))
    return out
