"""The decisions file of a review: read, check against its report, write atomically.

One row per decided image, ``path,decision,label,time``; ``decision`` is ``accept`` (take the
audit's suggestion), ``keep`` (the given label), ``relabel`` (to ``label``) or ``drop`` (leave
the image out). When a file holds several rows for one path the last one wins, so rows can
be appended by hand or files concatenated.

The file is bound to its report by a first line ``# labelclean decisions for <name>
sha256=<hex>``, the SHA-256 of the report file. It has no comma, so a spreadsheet shows it as
one cell above the header and keeps it when the file is saved again (trailing empty cells
are tolerated); a decisions file for another report is refused by name. A file without the
line (written by hand) is accepted with a warning, since nothing says which report it was
made for.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from labelclean._csv import csv_writer, unescape_cell
from labelclean._io import atomic_write_text
from labelclean.errors import ReportError
from labelclean.report.parquet import Report

logger = logging.getLogger(__name__)

DECISIONS = ("accept", "keep", "relabel", "drop")
COLUMNS = ("path", "decision", "label", "time")
_FINGERPRINT = re.compile(r"^#\s*labelclean decisions\b.*?\bsha256=([0-9a-f]{64})")


class DecisionError(ReportError):
    """A decisions file cannot be used with this report; the message names file and line."""


@dataclass(frozen=True)
class Decision:
    """One reviewer decision on one image (``label`` only for ``relabel``, else informative)."""

    path: str
    decision: str
    label: str | None = None
    time: str = ""
    line: int = 0  #: where it was read from (0: made in memory)


@dataclass
class DecisionSet:
    """Decisions by path (the last one per path) and the report fingerprint the file carried."""

    by_path: dict[str, Decision] = field(default_factory=dict)
    fingerprint: str | None = None
    source: Path | None = None


def report_fingerprint(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a report file: decisions are only valid for the exact report."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_decisions_path(report_path: str | os.PathLike[str]) -> Path:
    """``report.parquet`` -> ``report.decisions.csv`` beside it."""
    return Path(report_path).with_suffix(".decisions.csv")


def now() -> str:
    """The time of a decision: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def suggested_labels(report: Report) -> dict[str, tuple[str, str]]:
    """``path -> (given label, suggested label)``; the suggestion is the pseudo label."""
    f = report.frame
    return dict(
        zip(f["path"].astype(str), zip(f["given_label"].astype(str), f["pseudo_label"].astype(str)))
    )


def check_decision(
    d: Decision, where: str, *, labels: Mapping[str, tuple[str, str]], classes: set[str]
) -> Decision:
    """``d`` normalised, or a DecisionError naming ``where`` (file and line, or task)."""
    decision = d.decision.strip().lower()
    if decision not in DECISIONS:
        raise DecisionError(
            f"{where}: decision {d.decision!r} is not one of {', '.join(DECISIONS)}"
        )
    if d.path not in labels:
        raise DecisionError(f"{where}: path {d.path!r} is not an image of the report")
    label = (d.label or "").strip() or None
    if label is not None and label not in classes:
        raise DecisionError(
            f"{where}: label {label!r} is not a class of the report ({_first(sorted(classes))})"
        )
    given, suggested = labels[d.path]
    if decision == "relabel" and label is None:
        raise DecisionError(f"{where}: relabel needs a label")
    expected = {"accept": suggested, "keep": given}.get(decision)
    if expected is not None and label is not None and label != expected:
        raise DecisionError(
            f"{where}: {decision} means the label {expected!r} for {d.path}, but the row says "
            f"{label!r}; write relabel to choose another class"
        )
    if decision == "drop":
        label = None
    return Decision(d.path, decision, label or expected, d.time, d.line)


def _first(names: list[str], k: int = 10) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


def _rows(text: str, source: Path) -> tuple[list[tuple[int, dict[str, str]]], str | None]:
    """CSV rows with their line numbers, and the fingerprint of the first comment line."""
    reader = csv.reader(io.StringIO(text, newline=""))
    fingerprint, header, rows = None, None, []
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        first = cells[0].strip()
        if first.startswith("#"):
            match = _FINGERPRINT.match(first)
            if match and fingerprint is None:
                fingerprint = match.group(1)
            continue
        if header is None:
            header = [c.strip().lower() for c in cells]
            lacking = [c for c in ("path", "decision") if c not in header]
            if lacking:
                raise DecisionError(
                    f"{source} line {line}: the header needs the columns "
                    f"{','.join(COLUMNS)} (missing {', '.join(lacking)})"
                )
            continue
        rows.append((line, dict(zip(header, (unescape_cell(c.strip()) for c in cells)))))
    if header is None:
        raise DecisionError(f"{source}: no header line {','.join(COLUMNS)}")
    return rows, fingerprint


def read_decisions_csv(path: str | os.PathLike[str]) -> tuple[list[Decision], str | None]:
    """The rows of a decisions CSV (unchecked) and the fingerprint it carries."""
    path = Path(path)
    if not path.is_file():
        raise DecisionError(
            f"{path}: no such decisions file" + (" (a folder)" if path.is_dir() else "")
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DecisionError(
            f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})"
        ) from None
    if "\x00" in text:
        raise DecisionError(f"{path}: a binary file, not a decisions CSV")
    rows, fingerprint = _rows(text, path)
    out = [
        Decision(
            r.get("path", ""),
            r.get("decision", ""),
            r.get("label") or None,
            r.get("time", ""),
            line,
        )
        for line, r in rows
    ]
    return out, fingerprint


def load_decisions(
    path: str | os.PathLike[str], report: Report, *, fingerprint: str
) -> DecisionSet:
    """Read a decisions file (CSV, or a Label Studio JSON export) and check it against ``report``.

    Raises:
        DecisionError: The file was made for another report, or a row names an unknown path,
            class or decision (with its file and line).
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        from labelclean.interop.label_studio import read_label_studio_export

        rows, carried = read_label_studio_export(path, report)
    else:
        rows, carried = read_decisions_csv(path)
    if carried is not None and carried != fingerprint:
        name = report.path.name if report.path else "this report"
        raise DecisionError(
            f"{path}: made for another report (fingerprint sha256={carried[:12]}..., "
            f"{name} has {fingerprint[:12]}...); use the decisions file of this report"
        )
    if carried is None and rows:
        logger.warning(
            "%s has no report fingerprint; cannot check it was made for this report", path
        )
    labels = suggested_labels(report)
    classes = set(report.class_names)
    out = DecisionSet(fingerprint=carried, source=path)
    for d in rows:
        where = (
            f"{path} line {d.line}" if path.suffix.lower() != ".json" else f"{path} task {d.line}"
        )
        checked = check_decision(d, where, labels=labels, classes=classes)
        out.by_path.pop(checked.path, None)  # keep dict order = order of the last decisions
        out.by_path[checked.path] = checked
    return out


def render_decisions(decisions: Iterable[Decision], *, fingerprint: str, report_name: str) -> str:
    """The decisions file's text: the fingerprint line, the header, one row per decision."""
    buf = io.StringIO()
    safe_name = re.sub(r"[\s,\"]+", "_", report_name)
    buf.write(f"# labelclean decisions for {safe_name} sha256={fingerprint}\r\n")
    writer = csv_writer(buf, lineterminator="\r\n")  # cells escaped: labelclean/_csv.py
    writer.writerow(COLUMNS)
    for d in decisions:
        writer.writerow([d.path, d.decision, d.label or "", d.time])
    return buf.getvalue()


def write_decisions(
    path: str | os.PathLike[str],
    decisions: Iterable[Decision],
    *,
    fingerprint: str,
    report_name: str,
) -> Path:
    """Write the whole decisions file at once (temp file, fsync, rename)."""
    text = render_decisions(decisions, fingerprint=fingerprint, report_name=report_name)
    return atomic_write_text(path, text, overwrite=True, flag="--decisions")
