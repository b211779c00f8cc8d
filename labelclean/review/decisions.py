"""The decisions file of a review: read, check against its report, update under a lock.

One row per decided image, ``path,decision,label,time``; ``decision`` is ``accept`` (take the
audit's suggestion, :func:`labelclean.report.schema.suggested_label`), ``keep`` (the given
label), ``relabel`` (to ``label``) or ``drop`` (leave the image out); an empty ``decision``
decides nothing (the image is undecided again). When a file holds several rows for one path
the last one wins, so rows can be appended by hand or files concatenated. Other columns (a
``note``) and ``#`` comment lines are the user's: the review keeps them as they are.

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

A line starting with ``#`` is a comment before the header; after it, such a line is a row
only when its path is an image of the report (an image may be called ``#1.png``): labelclean
quotes such a path (``"#1.png"``), a quoted cell is always data, and unquoted ones (older
files, a spreadsheet's save) are told apart by the report's paths.

Several review servers, tabs or a hand edit may change one file: every decision (or bulk of
decisions) re-reads the file under an exclusive lock on its folder, changes the images' own
rows and replaces the file atomically, once (:func:`record_decisions`), so no decision is lost,
nobody's edit is undone and a bulk is written whole or not at all.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import logging
import os
import re
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from labelclean._csv import escape_cell, unescape_cell
from labelclean._io import atomic_write_text, not_a_file
from labelclean.errors import ReportError
from labelclean.report.parquet import Report

logger = logging.getLogger(__name__)

DECISIONS = ("accept", "keep", "relabel", "drop")
COLUMNS = ("path", "decision", "label", "time")
#: Separators a spreadsheet may save a CSV with, for the hint when the header is one cell.
_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}
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


def _path_of(text: str, images: Container[str]) -> str | None:
    """``text`` as an image path of the report: verbatim, else with surrounding spaces cut."""
    if text in images:
        return text
    return text.strip() if text.strip() in images else None


def _class_of(text: str, classes: set[str]) -> str | None:
    """``text`` as a class: verbatim (a class may be ``"cat "``), else the one spelled like it.

    :func:`labelclean.data.manifest.class_finder`: ``cat`` typed for ``"cat "``, or a
    spelling ``--normalize-labels`` merged.
    """
    if text in classes:
        return text
    from labelclean.data.manifest import class_finder

    return class_finder(classes)(text)


def check_decision(
    d: Decision, where: str, *, labels: Mapping[str, tuple[str, str]], classes: set[str]
) -> Decision:
    """``d`` normalised, or a DecisionError naming ``where`` (file and line, or task).

    Path and label are matched as written first, so names with surrounding spaces round-trip.
    """
    decision = d.decision.strip().lower()
    if decision not in DECISIONS:
        raise DecisionError(
            f"{where}: decision {d.decision!r} is not one of {', '.join(DECISIONS)}"
        )
    path = _path_of(d.path, labels)
    if path is None:
        raise DecisionError(f"{where}: path {d.path!r} is not an image of the report")
    label = None
    if (d.label or "").strip():
        label = _class_of(d.label or "", classes)
        if label is None:
            raise DecisionError(
                f"{where}: label {d.label!r} is not a class of the report "
                f"({_first(sorted(classes))})"
            )
    given, suggested = labels[path]
    if decision == "relabel" and label is None:
        raise DecisionError(f"{where}: relabel needs a label")
    if decision == "accept" and label is not None and label != suggested:
        # an older file: accept meant the network's guess, and the row names what it took
        decision = "keep" if label == given else "relabel"
    expected = {"accept": suggested, "keep": given}.get(decision)
    if expected is not None and label is not None and label != expected:
        raise DecisionError(
            f"{where}: {decision} means the label {expected!r} for {path}, but the row says "
            f"{label!r}; write relabel to choose another class"
        )
    if decision == "drop":
        label = None
    return Decision(path, decision, label or expected, d.time, d.line)


def _first(names: list[str], k: int = 10) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


@dataclass
class _Record:
    """One record of the file as written: its first line, text (line ends included), cells."""

    line: int
    raw: str
    cells: list[str]
    hashed: bool  #: starts with ``#`` unquoted: a comment, or a row of an image named ``#...``


@dataclass
class _Table:
    """A decisions file record by record, so that an update rewrites only its own row."""

    records: list[_Record]
    columns: dict[str, int]  #: header name -> cell index (the first of a repeated name)
    start: int  #: index of the first record after the header
    fingerprint: str | None
    bom: bool = False
    newline: str = "\r\n"


def _records(lines: list[str]) -> Iterator[_Record]:
    """The CSV records of ``lines``; a line starting with ``#`` is one record on its own."""
    pos = 0

    def rest() -> Iterator[str]:
        nonlocal pos
        while pos < len(lines):
            pos += 1
            yield lines[pos - 1]

    while pos < len(lines):
        start = pos
        if lines[pos].lstrip(" \t").startswith("#"):
            pos += 1
            cells = next(csv.reader([lines[start].rstrip("\r\n")]), [])
            yield _Record(start + 1, lines[start], cells, True)
        else:
            cells = next(csv.reader(rest()), [])
            raw = "".join(lines[start:pos])
            if pos == len(lines) and unclosed(raw):
                # the reader ran to the end of the file inside a quote: every later row (and
                # one the review appends) would be part of this cell
                raise csv.Error(f"line {start + 1}: a quoted cell is never closed")
            yield _Record(start + 1, raw, cells, False)


def unclosed(raw: str) -> bool:
    """Whether the CSV record ``raw`` ends inside a quoted cell (a ``"`` missing)."""
    try:
        list(csv.reader([raw], strict=True))
    except csv.Error as err:
        return "end of data" in str(err)
    return False


def _parse(text: str, source: Path) -> _Table:
    """The records of a decisions file, its header and the fingerprint above the header."""
    bom = text.startswith("\ufeff")
    lines = list(io.StringIO(text[1:] if bom else text, newline=""))
    try:
        records = list(_records(lines))
    except csv.Error as err:
        raise DecisionError(f"{source}: not a decisions CSV ({err})") from None
    fingerprint, columns = None, None
    for k, r in enumerate(records):
        if not any(c.strip() for c in r.cells):
            continue
        if r.hashed:  # before the header every '#' line is a comment
            match = _FINGERPRINT.match(r.cells[0].strip())
            if match and fingerprint is None:
                fingerprint = match.group(1)
            continue
        header = [c.strip().lower() for c in r.cells]
        lacking = [c for c in ("path", "decision") if c not in header]
        if lacking:
            # a spreadsheet set to another locale saves with ';': say so, not "no path"
            other = next((n for c, n in _SEPARATORS.items() if c in r.cells[0]), None)
            if len(r.cells) == 1 and other is not None:
                raise DecisionError(
                    f"{source} line {r.line}: the header {r.cells[0]!r} looks separated by "
                    f"{other}; decisions are comma-separated: save it with commas"
                )
            raise DecisionError(
                f"{source} line {r.line}: the header needs the columns "
                f"{','.join(COLUMNS)} (missing {', '.join(lacking)})"
            )
        columns = {}
        for i, name in enumerate(header):
            columns.setdefault(name, i)
        newline = next((e for e in ("\r\n", "\n", "\r") if lines[0].endswith(e)), "\r\n")
        return _Table(records, columns, k + 1, fingerprint, bom, newline)
    raise DecisionError(f"{source}: no header line {','.join(COLUMNS)}")


def _rows_of(table: _Table, images: Container[str] | None) -> list[tuple[int, Decision]]:
    """``(record index, decision as written)`` of each row after the header.

    An unquoted ``#`` line is a row only when its path is one of ``images`` (with ``None``,
    never): so comments stay comments, and an image named ``#1.png`` keeps its decision.
    """

    def cell(cells: list[str], name: str) -> str:
        k = table.columns.get(name)
        return unescape_cell(cells[k]) if k is not None and k < len(cells) else ""

    out = []
    for i in range(table.start, len(table.records)):
        r = table.records[i]
        if not any(c.strip() for c in r.cells):
            continue
        path = cell(r.cells, "path")
        if r.hashed and (images is None or _path_of(path, images) is None):
            continue  # a comment
        decision, label, time = (cell(r.cells, c) for c in ("decision", "label", "time"))
        out.append((i, Decision(path, decision, label or None, time.strip(), r.line)))
    return out


def decisions_text(path: Path) -> str:
    """The text of a CSV of decisions (a leading BOM kept), or a DecisionError saying why not."""
    if not path.is_file():
        raise DecisionError(not_a_file(path, "decisions file"))
    raw = path.read_bytes()
    if raw.startswith(b"PAR1"):  # `apply report.parquet report.parquet`: say what it is
        raise DecisionError(
            f"{path}: a Parquet file (a report?), not decisions; give the decisions CSV of "
            "`labelclean review` or a report page or Label Studio export"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DecisionError(
            f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})"
        ) from None
    if "\x00" in text:
        raise DecisionError(f"{path}: a binary file, not a decisions CSV")
    return text


def read_decisions_csv(
    path: str | os.PathLike[str], *, images: Container[str] | None = None
) -> tuple[list[Decision], str | None]:
    """The rows of a decisions CSV (unchecked) and the fingerprint it carries.

    ``images`` (the report's paths) tells rows of images named ``#...`` from comments.
    """
    path = Path(path)
    table = _parse(decisions_text(path), path)
    return [d for _, d in _rows_of(table, images)], table.fingerprint


def _decide_all(
    rows: Iterable[tuple[int, Decision]],
    where: str,
    *,
    labels: Mapping[str, tuple[str, str]],
    classes: set[str],
) -> tuple[dict[str, Decision], dict[str, list[int]]]:
    """The last decision per image, and the rows (record indexes) that name each image.

    A row with an empty decision decides nothing: the image is undecided again.
    """
    by_path: dict[str, Decision] = {}
    owners: dict[str, list[int]] = {}
    for idx, d in rows:
        here = f"{where} {d.line}"
        if d.decision.strip():
            checked = check_decision(d, here, labels=labels, classes=classes)
            path = checked.path
            by_path.pop(path, None)  # keep dict order = order of the last decisions
            by_path[path] = checked
        else:
            found = _path_of(d.path, labels)
            if found is None:
                raise DecisionError(f"{here}: path {d.path!r} is not an image of the report")
            if (d.label or "").strip():
                raise DecisionError(
                    f"{here}: the label {d.label!r} needs a decision ({', '.join(DECISIONS)})"
                )
            path = found
            by_path.pop(path, None)
        owners.setdefault(path, []).append(idx)
    return by_path, owners


def _check_fingerprint(path: Path, carried: str | None, fingerprint: str, report: str) -> None:
    if carried is not None and carried != fingerprint:
        raise DecisionError(
            f"{path}: made for another report (fingerprint sha256={carried[:12]}..., "
            f"{report} has {fingerprint[:12]}...); use the decisions file of this report"
        )


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

    labels = suggested_labels(report)
    unit = "line"
    rows: list[tuple[int, Decision]]
    if path.suffix.lower() == ".json":
        from labelclean.interop.label_studio import read_label_studio_export

        tasks, carried = read_label_studio_export(path, report)
        rows, unit = list(enumerate(tasks)), "task"
    elif (other := read_other_csv(path, report)) is not None:
        rows, carried = list(enumerate(other[0])), other[1]
    else:
        table = _parse(decisions_text(path), path)
        rows, carried = _rows_of(table, labels), table.fingerprint
    _check_fingerprint(
        path, carried, fingerprint, report.path.name if report.path else "this report"
    )
    if carried is None and rows:
        logger.warning(
            "%s has no report fingerprint; cannot check it was made for this report", path
        )
    by_path, _ = _decide_all(rows, f"{path} {unit}", labels=labels, classes=set(report.class_names))
    older = [
        d.line
        for _, d in rows
        if d.decision.strip().lower() == "accept"
        and (path_ := _path_of(d.path, labels)) is not None
        and (d.label or "").strip()
        and _class_of(d.label or "", set(report.class_names)) != labels[path_][1]
    ]
    if older:
        logger.warning(
            "%s: %d accept row(s) name a label that is not the audit's suggestion (%s %d%s); "
            "read as that label (up to labelclean 0.1.0, accept took the network's guess)",
            path,
            len(older),
            unit,
            older[0],
            ", ..." if len(older) > 1 else "",
        )
    return DecisionSet(by_path, fingerprint=carried, source=path)


def _cell(text: str) -> str:
    """One CSV cell (escaped for spreadsheets already), quoted where a reader could misread it.

    That is a separator or quote inside, surrounding spaces (a class ``"cat "``), or a
    leading ``#`` (a path, not a comment).
    """
    if text and (any(c in text for c in ',"\r\n') or text != text.strip() or text.startswith("#")):
        return '"' + text.replace('"', '""') + '"'
    return text


def _fingerprint_line(fingerprint: str, report_name: str) -> str:
    safe_name = re.sub(r"[\s,\"]+", "_", report_name)
    return f"# labelclean decisions for {safe_name} sha256={fingerprint}"


def render_decisions(decisions: Iterable[Decision], *, fingerprint: str, report_name: str) -> str:
    """The decisions file's text: the fingerprint line, the header, one row per decision."""
    lines = [_fingerprint_line(fingerprint, report_name), ",".join(COLUMNS)]
    lines += [
        ",".join(_cell(escape_cell(v)) for v in (d.path, d.decision, d.label or "", d.time))
        for d in decisions
    ]
    return "".join(line + "\r\n" for line in lines)


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


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` while a decisions file in it is read and replaced.

    The folder, not the file: the file is replaced by a rename at each update, so a lock on
    it would be left behind on the old file. Where locks are unavailable (not POSIX, a file
    system without them) the update goes on unlocked; one server's threads are serialised
    by the server anyway.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        fcntl = None  # type: ignore[assignment]
    fd = -1
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock


_CLAIMS: list[int] = []


def claim_report(path: str | os.PathLike[str]) -> bool:
    """Mark ``path`` as under review by this process; False when another process has.

    An advisory ``flock`` kept until the process ends, only to warn that two reviews run on
    one report; nothing depends on it (:func:`record_decision` merges either way). Where
    locks are unavailable it says True.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        return err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN)
    _CLAIMS.append(fd)
    return True


def writable_decisions_path(path: str | os.PathLike[str]) -> Path:
    """The file to replace for ``path``: where it leads, when it is a link to a file.

    Each update replaces the file by a rename, which would replace a link itself with a
    copy: the user's link (into a synced folder, say) would be gone and the file it names
    left stale, and a second review using the real name would merge into another file.
    Resolved once, when the review starts: a link swapped in for the file later is replaced
    like any file, never followed to what it names.
    """
    path = Path(path)
    try:
        linked = path.is_symlink() and path.is_file()
    except OSError:  # a name too long, a loop: the output check says so, naming the option
        return path
    return Path(os.path.realpath(path)) if linked else path


def _fresh_table(fingerprint: str, report_name: str) -> _Table:
    lines = [_fingerprint_line(fingerprint, report_name), ",".join(COLUMNS)]
    records = [_Record(i + 1, line + "\r\n", [line], i == 0) for i, line in enumerate(lines)]
    return _Table(records, {c: i for i, c in enumerate(COLUMNS)}, 2, fingerprint)


def _set_row(
    table: _Table, idxs: list[int], decision: Decision | None, image: str, dropped: set[int]
) -> list[int]:
    """Make ``decision`` (None: no decision) the last word on ``image``, touching only its rows.

    A decision rewrites the image's last row in place, keeping its other cells (a note), or
    appends one; earlier rows stay as written (the last row wins). Forgetting removes the
    image's rows, except that a row with other cells keeps them, its decision emptied.
    Removed rows are only added to ``dropped`` (the caller leaves them out at the end), so the
    record indexes of the other images stay valid through a bulk. Returns the image's rows now.
    """
    cols, records = table.columns, table.records
    known = {cols[c] for c in COLUMNS if c in cols}

    def render(cells: list[str]) -> str:
        last = max(known)
        while len(cells) > last + 1 and not cells[-1].strip():
            cells.pop()
        return ",".join(map(_cell, cells)) + table.newline

    if decision is None:
        kept = []
        for i in idxs:
            r = records[i]
            if any(c.strip() for k, c in enumerate(r.cells) if k not in known):
                cells = list(r.cells)
                for name in ("decision", "label", "time"):
                    if name in cols and cols[name] < len(cells):
                        cells[cols[name]] = ""
                records[i] = _Record(r.line, render(cells), cells, False)
                kept.append(i)
            else:
                dropped.add(i)
        return kept
    values = {
        "path": image,
        "decision": decision.decision,
        "label": decision.label or "",
        "time": decision.time,
    }
    cells = list(records[idxs[-1]].cells) if idxs else []
    cells += [""] * (max(known) + 1 - len(cells))
    for name, value in values.items():
        if name in cols:
            cells[cols[name]] = escape_cell(value)  # the other cells stay as written
    new = _Record(0, render(cells), cells, False)
    if idxs:
        records[idxs[-1]] = new
        return idxs
    last = max((i for i in range(len(records)) if i not in dropped), default=None)
    if last is not None and not records[last].raw.endswith(("\n", "\r")):
        r = records[last]
        records[last] = _Record(r.line, r.raw + table.newline, r.cells, r.hashed)
    records.append(new)
    return [len(records) - 1]


def record_decision(
    path: str | os.PathLike[str],
    image: str,
    decision: Decision | None,
    *,
    fingerprint: str,
    report_name: str,
    labels: Mapping[str, tuple[str, str]],
    classes: set[str],
) -> dict[str, Decision]:
    """Set (with ``None``: forget) the decision on ``image`` in the file; the file's decisions.

    One change of :func:`record_decisions`, which says how the file is updated.
    """
    return record_decisions(
        path,
        [(image, decision)],
        fingerprint=fingerprint,
        report_name=report_name,
        labels=labels,
        classes=classes,
    )


def record_decisions(
    path: str | os.PathLike[str],
    changes: Sequence[tuple[str, Decision | None]],
    *,
    fingerprint: str,
    report_name: str,
    labels: Mapping[str, tuple[str, str]],
    classes: set[str],
) -> dict[str, Decision]:
    """Apply ``changes`` (``(image, decision)``, None forgets) in order; the file's decisions.

    All at once, all or nothing: the file is read afresh under an exclusive lock, changed in
    the images' own rows only and replaced atomically, once for the whole list (a bulk of a
    thousand images is one read and one write, not a thousand). What other servers, tabs or a
    hand edit wrote meanwhile is kept, and so are comments, other columns and the other rows
    as they are written. An image named twice takes its last change. The decisions are
    already checked (:func:`check_decision`).

    Raises:
        DecisionError: The file now is one that cannot be used (made for another report, a bad
            row, naming file and line), or a change cannot be written in it; nothing is
            written.
        OutputError: It cannot be written (a full disk); it is left as it was.
    """
    path = Path(path)  # resolved once by the caller (writable_decisions_path), not here:
    # a link swapped in later must not redirect the write to a file it names
    with _folder_lock(path.parent):
        if path.exists():
            table = _parse(decisions_text(path), path)
            _check_fingerprint(path, table.fingerprint, fingerprint, report_name)
            if table.fingerprint is None:  # written by hand: bind it to the report now
                line = _fingerprint_line(fingerprint, report_name) + table.newline
                table.records.insert(0, _Record(0, line, [line.strip()], True))
                table.start += 1
        else:
            table = _fresh_table(fingerprint, report_name)
        relabels = any(d is not None and d.decision == "relabel" for _, d in changes)
        if relabels and "label" not in table.columns:
            raise DecisionError(f"{path}: no label column; add one to record a relabel")
        where = f"{path} line"
        _, owners = _decide_all(_rows_of(table, labels), where, labels=labels, classes=classes)
        dropped: set[int] = set()
        for image, decision in changes:
            owners[image] = _set_row(table, owners.get(image, []), decision, image, dropped)
        table.records = [r for i, r in enumerate(table.records) if i not in dropped]
        text = ("\ufeff" if table.bom else "") + "".join(r.raw for r in table.records)
        # read back what will be written, before writing: line numbers as in the file for
        # later messages, and a text that would not read back is never written
        written = _parse(text, path)
        by_path, _ = _decide_all(_rows_of(written, labels), where, labels=labels, classes=classes)
        atomic_write_text(path, text, overwrite=True, flag="--decisions")
    return by_path
