"""``<report>.annotators.parquet``: the annotators table written beside a crowd report.

``report.parquet`` -> ``report.annotators.parquet``. It follows the report's rules: written
all-or-nothing together with the report (both temp files complete before either is moved
into place), refused where it would replace an input or a folder, and replaced only with
``--overwrite`` and only when labelclean wrote it (its metadata says so): the user did not
name this file, so a file of theirs by that name is never touched. Its metadata carries the
report's manifest fingerprint, so a table left from another audit is not read as this one's.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from labelclean._io import atomic_path, check_writable, loads_json
from labelclean._version import __version__
from labelclean.crowd.annotators import ANNOTATOR_COLUMNS
from labelclean.errors import OutputExistsError, ReportError

METADATA_KEY = b"labelclean_annotators"
ANNOTATORS_SCHEMA = pa.schema(
    [
        pa.field("annotator", pa.string(), nullable=False),
        pa.field("n_votes", pa.int32(), nullable=False),
        pa.field("agreement", pa.float32()),
        pa.field("estimated_accuracy", pa.float32(), nullable=False),
        pa.field("confused_true", pa.string()),
        pa.field("confused_voted", pa.string()),
        pa.field("confused_share", pa.float32(), nullable=False),
    ]
)


def annotators_path(report: str | Path) -> Path:
    """``report.parquet`` -> ``report.annotators.parquet`` (beside it)."""
    report = Path(report)
    stem = report.name[: -len(report.suffix)] if report.suffix else report.name
    return report.with_name(f"{stem}.annotators.parquet")


def _written_by_labelclean(path: Path) -> bool:
    try:
        return METADATA_KEY in (pq.read_schema(path).metadata or {})
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def check_annotators_writable(
    report: str | Path, *, overwrite: bool, inputs: Sequence[str | Path] = ()
) -> Path:
    """Refuse early where the annotators table could not be written or would destroy a file.

    Raises:
        OutputExistsError: It exists and ``overwrite`` is off, or it exists and labelclean
            did not write it (whatever ``overwrite`` says), or it is a folder.
        ReportError: It is one of the command's ``inputs``.
    """
    path = annotators_path(report)
    for given in inputs:
        if Path(given).resolve() == path.resolve():
            raise ReportError(
                f"the annotators table {path} (named after --out {report}) would replace the "
                f"input {given}; choose another --out"
            )
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder; the annotators table needs that name")
    if path.exists() and overwrite and not _written_by_labelclean(path):
        raise OutputExistsError(
            f"{path} exists and was not written by labelclean, so --overwrite leaves it alone; "
            "move it or choose another --out"
        )
    return check_writable(path, overwrite=overwrite)


def _table(frame: pd.DataFrame, metadata: Mapping[str, Any]) -> pa.Table:
    table = pa.Table.from_pandas(frame[list(ANNOTATOR_COLUMNS)], preserve_index=False)
    table = table.cast(ANNOTATORS_SCHEMA)
    blob = json.dumps(
        {
            "tool_version": __version__,
            "manifest_fingerprint": metadata.get("manifest_fingerprint"),
            "class_names": list(metadata.get("class_names", [])),
        }
    ).encode()
    return table.replace_schema_metadata({METADATA_KEY: blob})


def write_with_annotators(
    report: Path,
    table: pa.Table,
    metadata: Mapping[str, Any],
    annotators: pd.DataFrame | None,
    *,
    overwrite: bool,
) -> Path:
    """Write the report and its annotators table; neither appears unless both are complete."""
    from labelclean.report.parquet import write_report

    if annotators is None:
        return write_report(report, table, metadata, overwrite=overwrite)
    side = check_annotators_writable(report, overwrite=overwrite)
    check_writable(report, overwrite=overwrite)
    side_table = _table(annotators, metadata)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(side, overwrite=overwrite))
        pq.write_table(side_table, tmp)
        write_report(report, table, metadata, overwrite=overwrite)
    return report


def read_annotators(report_path: str | Path, metadata: Mapping[str, Any]) -> pd.DataFrame | None:
    """The annotators table of a crowd report, or None when it has none.

    Raises:
        ReportError: The file exists but is not an annotators table, cannot be read, or
            belongs to another audit (its manifest fingerprint differs from the report's).
    """
    path = annotators_path(report_path)
    if not path.exists():
        return None
    try:
        pf = pq.ParquetFile(path)
        raw = (pf.schema_arrow.metadata or {}).get(METADATA_KEY)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise ReportError(f"{path}: not a Parquet file ({err})") from err
    if raw is None:
        raise ReportError(f"{path}: not a labelclean annotators table")
    info = loads_json(raw, ReportError, source=str(path), expected="an annotators table")
    if not isinstance(info, dict):
        raise ReportError(f"{path}: not an annotators table (its metadata is not a JSON object)")
    if info.get("manifest_fingerprint") != metadata.get("manifest_fingerprint"):
        raise ReportError(
            f"{path} belongs to another audit than {report_path} (their manifests differ); "
            "audit again, or move the stale table away"
        )
    missing = [c for c in ANNOTATOR_COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise ReportError(f"{path}: lacks the column(s) {', '.join(missing)}")
    try:
        return pf.read(columns=list(ANNOTATOR_COLUMNS)).to_pandas()
    except (OSError, pa.ArrowException) as err:
        raise ReportError(f"{path}: cannot be read, the file may be truncated ({err})") from err
