"""The decisions file of a review: read, check against its report, write atomically.

One row per decided image, ``path,decision,label,time``; ``decision`` is ``accept`` (take the
audit's suggestion, :func:`labelclean.report.schema.suggested_label`), ``keep`` (the given
label), ``relabel`` (to ``label``) or ``drop`` (leave the image out). When a file holds several
rows for one path the last one wins, so rows can be appended by hand or files concatenated.

Up to labelclean 0.1.0 the suggestion was the network's guess (``pseudo_label``) on every
row. An ``accept`` row always carries the label it accepted, so such a row whose label is no
longer the suggestion is read as that label (``keep`` when it is the given one, else
``relabel``), with a warning: what the reviewer saw and took is what the file keeps meaning.

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
    """``path -> (given label, suggested label)``; ``accept`` means the suggestion.

    The suggestion is the audit's decision (:attr:`Report.suggested_labels`), not the
    network's guess.
    """
    f = report.frame
    return dict(
        zip(
            f["path"].astype(str),
            zip(f["given_label"].astype(str), report.suggested_labels.astype(str)),
        )
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
    if decision == "accept" and label is not None and label != suggested:
        # an older file: accept meant the network's guess, and the row names what it took
        decision = "keep" if label == given else "relabel"
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
        rows.append((line, dict(zip(header, (c.strip() for c in cells)))))
    if header is None:
        raise DecisionError(f"{source}: no header line {','.join(COLUMNS)}")
    return rows, fingerprint


def decisions_text(path: Path) -> str:
    """The text of a CSV of decisions, or a DecisionError saying why it is not one."""
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
    return text


def read_decisions_csv(path: str | os.PathLike[str]) -> tuple[list[Decision], str | None]:
    """The rows of a decisions CSV (unchecked) and the fingerprint it carries."""
    path = Path(path)
    text = decisions_text(path)
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
    """Read a decisions file and check it against ``report``.

    The file is a decisions CSV of ``labelclean review``, the report page's CSV export (its
    ``new_label`` column), or a Label Studio export (JSON, JSON-MIN or CSV);
    :func:`labelclean.review.exports.read_other_csv` tells the CSVs apart by their header.

    Raises:
        DecisionError: The file was made for another report, or a row names an unknown path,
            class or decision (with its file and line).
    """
    from labelclean.review.exports import read_other_csv

    path = Path(path)
    unit = "line"
    if path.suffix.lower() == ".json":
        from labelclean.interop.label_studio import read_label_studio_export

        rows, carried = read_label_studio_export(path, report)
        unit = "task"
    elif (other := read_other_csv(path, report)) is not None:
        rows, carried = other
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
    older: list[str] = []
    for d in rows:
        where = f"{path} {unit} {d.line}"
        checked = check_decision(d, where, labels=labels, classes=classes)
        if d.decision.strip().lower() == "accept" and checked.decision != "accept":
            older.append(where)
        out.by_path.pop(checked.path, None)  # keep dict order = order of the last decisions
        out.by_path[checked.path] = checked
    if older:
        logger.warning(
            "%s: %d accept row(s) name a label that is not the audit's suggestion (%s%s); "
            "read as that label (up to labelclean 0.1.0, accept took the network's guess)",
            path,
            len(older),
            older[0],
            ", ..." if len(older) > 1 else "",
        )
    return out


def render_decisions(decisions: Iterable[Decision], *, fingerprint: str, report_name: str) -> str:
    """The decisions file's text: the fingerprint line, the header, one row per decision."""
    buf = io.StringIO()
    safe_name = re.sub(r"[\s,\"]+", "_", report_name)
    buf.write(f"# labelclean decisions for {safe_name} sha256={fingerprint}\r\n")
    writer = csv.writer(buf, lineterminator="\r\n")
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
