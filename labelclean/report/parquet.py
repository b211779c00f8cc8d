"""report.parquet: an atomic writer, and a reader that checks.

The schema and the table builder live in :mod:`labelclean.report.schema`; they are
re-exported here, so ``from labelclean.report.parquet import ...`` keeps working for every
name a caller needs to write or read a report.

The settings and results that apply to the whole run (tool version, image root, class
names, config, GMM, ...) are one JSON value under the ``labelclean`` key of the Parquet
schema metadata, so ``finetune`` and ``report`` need nothing but this file and the images.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from labelclean._io import atomic_path, check_writable, loads_json
from labelclean._version import __version__
from labelclean.config import checked
from labelclean.errors import ReportError
from labelclean.report.schema import (
    ACTIONS,
    ADDED_COLUMNS,
    CROWD_COLUMNS,
    CROWD_FIELDS,
    CROWD_SCHEMA,
    LABEL_COLUMNS,
    METADATA_KEY,
    METADATA_TYPES,
    NULLABLE,
    OPTIONAL_METADATA,
    REPORT_SCHEMA,
    REQUIRED_METADATA,
    VOTE_TYPE,
    Report,
    build_report_table,
    suggested_label,
)

__all__ = [
    "ACTIONS",
    "ADDED_COLUMNS",
    "CROWD_COLUMNS",
    "CROWD_FIELDS",
    "CROWD_SCHEMA",
    "METADATA_KEY",
    "NULLABLE",
    "OPTIONAL_METADATA",
    "REPORT_SCHEMA",
    "REQUIRED_METADATA",
    "VOTE_TYPE",
    "Report",
    "build_report_table",
    "read_report",
    "suggested_label",
    "write_report",
]

logger = logging.getLogger(__name__)


def _json_default(value: Any) -> Any:
    """Turn numpy scalars/arrays and paths in the metadata into plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _check_table(path: Path, table: pa.Table) -> None:
    """The table follows the schema and its invariants; raise ReportError naming ``path``."""
    schema = CROWD_SCHEMA if "votes" in table.schema.names else REPORT_SCHEMA
    if not table.schema.equals(schema):
        want = {f.name: f.type for f in schema}
        have = {f.name: f.type for f in table.schema}
        diffs = [
            f"{name}: expected {want.get(name, 'no such column')}, found {have.get(name, 'none')}"
            for name in dict.fromkeys([*want, *have])
            if want.get(name) != have.get(name)
        ]
        if list(have) != list(want) and not diffs:
            diffs = [f"columns in the order {', '.join(want)}"]
        raise ReportError(
            f"cannot write {path}: the table does not follow the report schema "
            f"({'; '.join(diffs) or 'nullability differs'})"
        )
    nulls = [f.name for f in schema if f.name not in NULLABLE and table[f.name].null_count]
    if nulls:
        raise ReportError(f"cannot write {path}: null values in column(s) {', '.join(nulls)}")
    bad = pc.invert(pc.is_in(table["action"], value_set=pa.array(ACTIONS)))
    if pc.any(bad).as_py():
        raise ReportError(f"cannot write {path}: action values outside {', '.join(ACTIONS)}")
    non_finite = _first_non_finite(table)
    if non_finite is not None:
        name, row, value = non_finite
        raise ReportError(f"cannot write {path}: column {name} holds {value} at row {row}")
    unlabel = pc.equal(table["action"], "unlabel")
    if not pc.all(pc.equal(pc.is_null(table["clean_label"]), unlabel)).as_py() and len(table):
        raise ReportError(f"cannot write {path}: clean_label must be null exactly when unlabel")


def _first_non_finite_row(array: pa.Array) -> tuple[int, float] | None:
    """(row, value) of the first NaN or infinity among ``array``'s floats, nested ones too.

    Lists (the traces) and structs (the crowd's votes) are looked into; the row is the
    top-level one, so a message can name it.
    """
    kind = array.type
    if pa.types.is_floating(kind):
        bad = pc.fill_null(pc.invert(pc.is_finite(array)), False)
        row = pc.index(bad, True).as_py()
        return None if row < 0 else (row, array[row].as_py())
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        found = _first_non_finite_row(array.flatten())
        if found is None:
            return None
        return pc.list_parent_indices(array)[found[0]].as_py(), found[1]
    if pa.types.is_struct(kind):
        hits = [hit for part in array.flatten() if (hit := _first_non_finite_row(part))]
        return min(hits) if hits else None
    return None


def _first_non_finite(table: pa.Table) -> tuple[str, int, float] | None:
    """(column, row, value) of the first NaN or infinity in a float column of ``table``.

    No report labelclean writes holds one (a run whose numbers turn non-finite stops with
    DivergedError), and the page, the review queue and the Label Studio tasks are JSON,
    which has no NaN: a hand-edited one is refused here, once, for every command.
    """
    for name in table.column_names:
        offset = 0
        for chunk in table[name].chunks:
            found = _first_non_finite_row(chunk)
            if found is not None:
                return name, offset + found[0], found[1]
            offset += len(chunk)
    return None


def write_report(
    path: str | os.PathLike[str],
    table: pa.Table,
    metadata: Mapping[str, Any],
    *,
    overwrite: bool,
    row_group_size: int = 65536,
) -> Path:
    """Write ``table`` + ``metadata`` to ``path`` all-or-nothing, in row groups.

    Row groups of ``row_group_size`` rows keep the writer's working memory bounded for
    million-row reports and let readers fetch a slice; the file appears only when complete
    (temp file, fsync, rename), so a full disk or a crash leaves the previous file intact.

    Args:
        path: Output file.
        table: A table in :data:`REPORT_SCHEMA` (see :func:`build_report_table`).
        metadata: JSON-able run metadata with every key of :data:`REQUIRED_METADATA`
            (numpy scalars and paths are converted).
        overwrite: Replace an existing file; otherwise raise OutputExistsError.
        row_group_size: Rows per Parquet row group.

    Example:
        >>> write_report("report.parquet", table, metadata, overwrite=False)  # doctest: +SKIP
    """
    path = Path(path)
    check_writable(path, overwrite=overwrite)
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ReportError(f"cannot write {path}: metadata lacks {', '.join(missing)}")
    if row_group_size < 1:
        raise ValueError(f"row_group_size must be >= 1, got {row_group_size}")
    _check_table(path, table)
    try:
        blob = json.dumps(dict(metadata), default=_json_default).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise ReportError(f"cannot write {path}: metadata is not JSON ({err})") from err
    _check_metadata(f"cannot write {path}", json.loads(blob))  # as the reader will see it
    # Replacing the schema metadata is zero-copy; from_pandas tables carry a "pandas" key we drop.
    table = table.replace_schema_metadata({METADATA_KEY: blob})
    with atomic_path(path, overwrite=overwrite) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size)
    logger.debug("wrote %s: %d rows", path, table.num_rows)
    return path


@checked
def read_report(path: str | os.PathLike[str], *, columns: Sequence[str] | None = None) -> Report:
    """Read and check a report; every error names the file and what is wrong with it.

    Args:
        path: A report.parquet written by :func:`write_report`.
        columns: Read only these columns (e.g. skip the traces of a million-row report).

    Raises:
        ReportError: The file is missing, not Parquet, not a labelclean report, lacks
            columns or metadata, has metadata of the wrong shape, or holds NaN or infinity in a
            float column. A report from another labelclean version only logs a warning.

    Example:
        >>> rep = read_report("report.parquet")  # doctest: +SKIP
        >>> rep.frame["action"].value_counts(), rep.class_names  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise ReportError(f"{path}: no such report (make one with `labelclean audit`)")
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "is not a regular file (a FIFO, a device)"
        raise ReportError(f"{path}: {what}, expected a report.parquet file")
    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise ReportError(f"{path}: not a Parquet file ({err})") from err
    schema = pf.schema_arrow
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ReportError(
            f"{path}: a Parquet file, but not a labelclean report (no labelclean metadata); "
            "make one with `labelclean audit`"
        )
    missing = [
        f.name for f in REPORT_SCHEMA if f.name not in schema.names and f.name not in ADDED_COLUMNS
    ]
    if missing:
        raise ReportError(f"{path}: report lacks the column(s) {', '.join(missing)}")
    expected = [*REPORT_SCHEMA, *(f for f in CROWD_FIELDS if f.name in schema.names)]
    wrong = [
        f"{f.name} is {schema.field(f.name).type}, expected {f.type}"
        for f in expected
        if f.name in schema.names and not _compatible(schema.field(f.name).type, f.type)
    ]
    if wrong:
        raise ReportError(f"{path}: report columns have the wrong type: {'; '.join(wrong)}")
    metadata = loads_json(raw, ReportError, source=f"{path}: labelclean metadata", expected="JSON")
    if not isinstance(metadata, dict):
        raise ReportError(f"{path}: labelclean metadata is not a JSON object")
    lacking = [k for k in REQUIRED_METADATA if k not in metadata]
    if lacking:
        raise ReportError(f"{path}: report metadata lacks {', '.join(lacking)}")
    _check_metadata(str(path), metadata)
    if metadata["tool_version"] != __version__:
        logger.warning(
            "%s was written by labelclean %s; this is %s (figures may differ)",
            path,
            metadata["tool_version"],
            __version__,
        )
    names = [f.name for f in expected]
    if columns is not None:
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise ReportError(
                f"{path}: no column(s) {', '.join(unknown)}; this report has {', '.join(names)}"
            )
    wanted = list(columns) if columns is not None else names
    try:
        table = pf.read(columns=[c for c in wanted if c in schema.names])
        table = _conform(table)
    except (OSError, pa.ArrowException) as err:
        raise ReportError(f"{path}: cannot be read, the file may be truncated ({err})") from err
    non_finite = _first_non_finite(table)
    if non_finite is not None:
        name, row, value = non_finite
        raise ReportError(
            f"{path}: column {name} holds {value} at row {row}, where a finite number belongs; "
            "the file was edited or is damaged (audit again, or fix that row)"
        )
    frame = table.to_pandas()
    for name in wanted:
        if name not in frame:  # a column added since this report was written: all null
            frame.insert(wanted.index(name), name, pd.Series([None] * len(frame), dtype=object))
    if "admitted_epoch" in frame:
        frame["admitted_epoch"] = frame["admitted_epoch"].astype("Int32")
    _check_rows(path, frame, metadata)
    return Report(frame=frame, metadata=metadata, path=path)


_WORDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "dict": "a JSON object",
    "list": "a list",
    "[str]": "a list of strings",
}


def _has_type(value: Any, kind: str) -> bool:
    """``value`` is of ``kind`` (a :data:`METADATA_TYPES` word, without its ``?``)."""
    if kind == "[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    types = {"str": str, "bool": bool, "dict": dict, "list": list}
    return isinstance(value, types[kind])


def _found(value: Any, want: str) -> str:
    """What a metadata value is, in words, for a message (never the whole value)."""
    if value is None:
        return "null"
    if isinstance(value, list) and want == "[str]":
        odd = next((v for v in value if not isinstance(v, str)), None)
        return "a list" if odd is None else f"a list holding {json.dumps(odd)[:40]}"
    if isinstance(value, str):
        return f"the string {json.dumps(value[:40])}"
    kind = next(k for k in ("bool", "int", "float", "dict", "list") if _has_type(value, k))
    return _WORDS[kind] if kind in ("dict", "list") else f"{_WORDS[kind]} ({value})"


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(_has_type(v, "float") for v in value)


def _check_metadata(where: str, metadata: Mapping[str, Any]) -> None:
    """Every key labelclean uses has the type :data:`METADATA_TYPES` gives it, or refuse.

    ``where`` starts the message: the report's path (reading) or "cannot write <path>".

    Also the parts read below the top level: distinct class names, and the normalization's
    ``mean`` and ``std`` (finetune builds its model from them).
    """
    damaged = "the file was edited or is damaged (audit again)"
    for key, kind in METADATA_TYPES.items():
        value = metadata.get(key)
        if key not in metadata or (value is None and kind.endswith("?")):
            continue
        want = kind.rstrip("?")
        if not _has_type(value, want):
            null = " or null" if kind.endswith("?") else ""
            raise ReportError(
                f"{where}: report metadata {key} is {_found(value, want)}, expected "
                f"{_WORDS[want]}{null}; {damaged}"
            )
    names = metadata["class_names"]
    if not names or len(set(names)) != len(names):
        raise ReportError(
            f"{where}: report metadata class_names must be distinct names, one per class; {damaged}"
        )
    norm = metadata.get("normalization")
    if norm is not None and not (_numbers(norm.get("mean")) and _numbers(norm.get("std"))):
        raise ReportError(
            f"{where}: report metadata normalization needs lists of numbers under mean and "
            f"std; {damaged}"
        )


def _compatible(have: pa.DataType, want: pa.DataType) -> bool:
    """The same kind of values, as another writer may store them (pandas: large_string)."""
    if pa.types.is_dictionary(have):  # a pandas categorical
        have = have.value_type
    if have.equals(want):
        return True
    if pa.types.is_string(want):
        return pa.types.is_string(have) or pa.types.is_large_string(have)
    if pa.types.is_integer(want):
        return pa.types.is_integer(have)
    if pa.types.is_floating(want):
        return pa.types.is_floating(have)
    if pa.types.is_list(want):
        is_list = pa.types.is_list(have) or pa.types.is_large_list(have)
        return is_list and _compatible(have.value_type, want.value_type)
    return False


def _conform(table: pa.Table) -> pa.Table:
    """Cast compatible columns to the report schema's exact types (a no-op for our files)."""
    want = {f.name: f.type for f in REPORT_SCHEMA}
    for i, name in enumerate(table.column_names):
        if name in want and not table.schema.field(name).type.equals(want[name]):
            table = table.set_column(i, name, table.column(i).cast(want[name]))
    return table


def _check_rows(path: Path, frame: pd.DataFrame, metadata: Mapping[str, Any]) -> None:
    """The values a reader relies on: known actions and classes, paths inside the root.

    An edited report must not be used silently: an unknown action would count as neither
    labeled nor unlabeled, and a path edited to leave the image folder would make
    ``finetune`` read a file the audit never saw.
    """

    def refuse(mask: Any, what: str, column: str) -> None:
        rows = np.flatnonzero(np.asarray(mask, dtype=bool))
        if len(rows):
            shown = ", ".join(f"row {i} ({frame[column].iloc[i]!r})" for i in rows[:5])
            raise ReportError(
                f"{path}: {len(rows)} row(s) with {what}: {shown}; the file was edited or "
                "is damaged (audit again, or fix those rows)"
            )

    if "action" in frame:
        refuse(
            ~frame["action"].isin(ACTIONS), f"an action other than {', '.join(ACTIONS)}", "action"
        )
    names = list(metadata["class_names"])
    for column in LABEL_COLUMNS:
        if column in frame:
            refuse(frame[column].notna() & ~frame[column].isin(names), "an unknown class", column)
    if "action" in frame and "clean_label" in frame:
        unlabel = (frame["action"] == "unlabel").to_numpy()
        refuse(
            frame["clean_label"].isna().to_numpy() != unlabel,
            "a clean_label that does not match the action",
            "action",
        )
    if "path" in frame and not metadata.get("paths_outside_root", False):
        from labelclean.data.manifest import leaves_root, normalise_path

        refuse(
            frame["path"].map(lambda p: leaves_root(normalise_path(p))),
            "a path outside the image folder",
            "path",
        )
