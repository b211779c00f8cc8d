"""report.parquet: the schema of DESIGN.md, an atomic writer, and a reader that checks.

One row per sample in manifest order; the settings and results that apply to the whole
run (tool version, image root, class names, config, GMM, ...) are one JSON value under
the ``labelclean`` key of the Parquet schema metadata, so ``finetune`` and ``report`` need
nothing but this file and the images.

Only ``clean_label``, ``admitted_epoch`` and ``guard`` may be null (DESIGN.md marks them
so); the other columns are declared non-nullable, which Parquet stores as ``required``.
``guard`` came in a later version: a report without it reads back with it all null.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from labelclean._io import atomic_path, check_writable
from labelclean._version import __version__
from labelclean.errors import ReportError
from labelclean.fgcm.guard import GUARD_REASONS

logger = logging.getLogger(__name__)

METADATA_KEY = b"labelclean"
ACTIONS = ("keep", "relabel", "unlabel")
NULLABLE = ("clean_label", "admitted_epoch", "guard")
#: Columns older reports may lack; read back as all null.
ADDED_COLUMNS = ("guard",)
REPORT_SCHEMA = pa.schema(
    [
        pa.field("index", pa.int64(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("given_label", pa.string(), nullable=False),
        pa.field("cluster", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("clean_label", pa.string(), nullable=True),
        pa.field("pseudo_label", pa.string(), nullable=False),
        pa.field("conf_given", pa.float32(), nullable=False),
        pa.field("conf_pseudo", pa.float32(), nullable=False),
        pa.field("cluster_prob", pa.float32(), nullable=False),
        pa.field("admitted_epoch", pa.int32(), nullable=True),
        pa.field("guard", pa.string(), nullable=True),
        pa.field("trace_given", pa.list_(pa.float32()), nullable=False),
        pa.field("trace_pseudo", pa.list_(pa.float32()), nullable=False),
    ]
)
#: A vote of the ``votes`` column: who voted, what, and the probability that it is right
#: given every vote and the network (the final posterior of the voted class).
VOTE_TYPE = pa.struct(
    [
        pa.field("annotator", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("p_right", pa.float32(), nullable=False),
    ]
)
#: Crowd input only (DESIGN.md): votes per image, share for the consensus (``given_label``),
#: and the votes themselves.
CROWD_FIELDS = (
    pa.field("n_votes", pa.int32(), nullable=False),
    pa.field("agreement", pa.float32(), nullable=False),
    pa.field("votes", pa.list_(VOTE_TYPE), nullable=False),
)
CROWD_SCHEMA = pa.schema([*REPORT_SCHEMA, *CROWD_FIELDS])
CROWD_COLUMNS = tuple(f.name for f in CROWD_FIELDS)
REQUIRED_METADATA = (
    "tool_version",
    "image_root",
    "class_names",
    "config",
    "seed",
    "epochs",
    "device",
    "mode",
    "wall_time_s",
)
OPTIONAL_METADATA = (
    "gmm",
    "cluster_names",
    "image_size",
    "normalization",
    "rejected",
)
_LABEL_COLUMNS = ("given_label", "clean_label", "pseudo_label")
_TRACE_COLUMNS = ("trace_given", "trace_pseudo")
# A list<float32> column addresses its values with int32 offsets; above this many values in
# one array the trace columns are split into chunks (a module constant so tests can shrink it).
_MAX_LIST_VALUES = 2**31 - 1


@dataclass
class Report:
    """A report read back: the per-sample frame and the run's metadata.

    Attributes:
        frame: One row per sample, manifest order, the columns of :data:`REPORT_SCHEMA`
            (or the subset asked for). Null labels are missing values; ``admitted_epoch``
            is a nullable ``Int32``; traces are float32 arrays.
        metadata: The run's JSON metadata (see :data:`REQUIRED_METADATA`).
        path: The file it came from, or None when built in memory.
    """

    frame: pd.DataFrame
    metadata: dict[str, Any]
    path: Path | None = None

    @property
    def class_names(self) -> list[str]:
        """Class names in the audit's order."""
        return list(self.metadata["class_names"])

    @property
    def image_root(self) -> Path:
        """Absolute folder the ``path`` column is relative to."""
        return Path(self.metadata["image_root"])


def _labels(name: str, codes: Any, n: int, names: pa.Array, *, nullable: bool) -> pa.Array:
    """Integer codes ``[N]`` -> class-name strings (``-1`` -> null), one vectorised take."""
    codes = np.asarray(codes)
    if codes.shape != (n,):
        raise ValueError(f"report column {name}: expected shape [{n}], got {codes.shape}")
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"report column {name}: expected integer label codes, got {codes.dtype}")
    codes = codes.astype(np.int64, copy=False)
    low = -1 if nullable else 0
    bad = (codes < low) | (codes >= len(names))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"report column {name}: code {int(codes[row])} at row {row} is outside "
            f"[{low}, {len(names)}) for {len(names)} classes"
        )
    null = codes < 0
    return names.take(pa.array(np.where(null, 0, codes), mask=null if null.any() else None))


def _traces(name: str, values: Any, n: int) -> pa.ChunkedArray:
    """``[N, E]`` floats -> list<float32> without a per-row loop (zero-copy for float32).

    Split into chunks when ``N * E`` would overflow the list's int32 offsets.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] != n:
        raise ValueError(f"report column {name}: expected shape [{n}, E], got {values.shape}")
    e = values.shape[1]
    rows_per_chunk = max(1, _MAX_LIST_VALUES // e) if e else max(n, 1)
    chunks = []
    for start in range(0, n, rows_per_chunk):
        block = values[start : start + rows_per_chunk]
        offsets = np.arange(0, (len(block) + 1) * e, e, dtype=np.int32) if e else None
        if offsets is None:
            offsets = np.zeros(len(block) + 1, dtype=np.int32)
        chunks.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(block.reshape(-1))))
    return pa.chunked_array(chunks, type=pa.list_(pa.float32()))


def _column(name: str, values: Any, n: int, dtype: type) -> np.ndarray:
    array = np.asarray(values).astype(dtype, copy=False)
    if array.shape != (n,):
        raise ValueError(f"report column {name}: expected shape [{n}], got {array.shape}")
    return array


def build_report_table(columns: Mapping[str, Any], *, class_names: Sequence[str]) -> pa.Table:
    """Arrays from the audit -> a table in :data:`REPORT_SCHEMA`, without per-row Python.

    Args:
        columns: One entry per schema column. ``given_label``/``pseudo_label``: integer codes
            ``[N]`` into ``class_names``; ``clean_label``: codes with ``-1`` for null (exactly
            the ``unlabel`` rows); ``admitted_epoch``: ``[N]`` ints, ``-1`` for null;
            ``cluster``/``action``: strings ``[N]``; ``trace_given``/``trace_pseudo``:
            ``[N, E]`` floats; ``guard`` (optional, all null when left out): the reason
            code (GUARD_REASONS) of the guard that moved each sample, None where none did;
            the rest ``[N]``.
        class_names: Names of the label codes.

    Raises:
        ValueError: A column is missing, unknown, mis-shaped or out of range (a bug in the
            caller, not in the user's data).

    Example:
        >>> table = build_report_table(columns, class_names=["cat", "dog"])  # doctest: +SKIP
    """
    schema = CROWD_SCHEMA if "votes" in columns else REPORT_SCHEMA
    missing = [f for f in schema.names if f not in columns and f not in ADDED_COLUMNS]
    unknown = [f for f in columns if f not in schema.names]
    if missing or unknown:
        raise ValueError(f"report columns: missing {missing}, unknown {unknown}")
    n = len(columns["index"])
    names = pa.array(list(class_names), type=pa.string())
    action = _column("action", columns["action"], n, str)
    bad_action = ~np.isin(action, ACTIONS)
    if bad_action.any():
        raise ValueError(
            f"report column action: {sorted(set(action[bad_action]))} not in {ACTIONS}"
        )
    clean = np.asarray(columns["clean_label"])
    if clean.shape == (n,) and ((clean < 0) != (action == "unlabel")).any():
        raise ValueError("report column clean_label: must be -1 exactly on the unlabel rows")
    admitted = _column("admitted_epoch", columns["admitted_epoch"], n, np.int32)
    guard = _column("guard", columns.get("guard", np.full(n, None)), n, object)
    unknown_guard = set(guard.tolist()) - set(GUARD_REASONS)
    if unknown_guard:
        raise ValueError(f"report column guard: {sorted(map(str, unknown_guard))} unknown")
    arrays = {
        "index": pa.array(_column("index", columns["index"], n, np.int64)),
        "path": pa.array(_column("path", columns["path"], n, object), type=pa.string()),
        "cluster": pa.array(_column("cluster", columns["cluster"], n, str), type=pa.string()),
        "action": pa.array(action, type=pa.string()),
        "admitted_epoch": pa.array(admitted, mask=admitted < 0),
        "guard": pa.array(guard, type=pa.string()),
    }
    for name in _LABEL_COLUMNS:
        arrays[name] = _labels(name, columns[name], n, names, nullable=name == "clean_label")
    for name in ("conf_given", "conf_pseudo", "cluster_prob"):
        arrays[name] = pa.array(_column(name, columns[name], n, np.float32))
    for name in _TRACE_COLUMNS:
        arrays[name] = _traces(name, columns[name], n)
    if np.shape(columns["trace_given"]) != np.shape(columns["trace_pseudo"]):
        raise ValueError("report columns trace_given and trace_pseudo differ in shape")
    if schema is CROWD_SCHEMA:
        arrays["n_votes"] = pa.array(_column("n_votes", columns["n_votes"], n, np.int32))
        arrays["agreement"] = pa.array(_column("agreement", columns["agreement"], n, np.float32))
        arrays["votes"] = columns["votes"]
        if len(arrays["votes"]) != n or not arrays["votes"].type.equals(pa.list_(VOTE_TYPE)):
            raise ValueError(f"report column votes: expected {n} lists of {VOTE_TYPE}")
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)


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
    unlabel = pc.equal(table["action"], "unlabel")
    if not pc.all(pc.equal(pc.is_null(table["clean_label"]), unlabel)).as_py() and len(table):
        raise ReportError(f"cannot write {path}: clean_label must be null exactly when unlabel")


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
    # Replacing the schema metadata is zero-copy; from_pandas tables carry a "pandas" key we drop.
    table = table.replace_schema_metadata({METADATA_KEY: blob})
    with atomic_path(path, overwrite=overwrite) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size)
    logger.debug("wrote %s: %d rows", path, table.num_rows)
    return path


def read_report(path: str | os.PathLike[str], *, columns: Sequence[str] | None = None) -> Report:
    """Read and check a report; every error names the file and what is wrong with it.

    Args:
        path: A report.parquet written by :func:`write_report`.
        columns: Read only these columns (e.g. skip the traces of a million-row report).

    Raises:
        ReportError: The file is missing, not Parquet, not a labelclean report, or lacks
            columns or metadata. A report from another labelclean version only logs a warning.

    Example:
        >>> rep = read_report("report.parquet")  # doctest: +SKIP
        >>> rep.frame["action"].value_counts(), rep.class_names  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise ReportError(f"{path}: no such report (make one with `labelclean audit`)")
    if not path.is_file():
        raise ReportError(f"{path}: is a directory, expected a report.parquet file")
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
    try:
        metadata = json.loads(raw)
    except ValueError as err:
        raise ReportError(f"{path}: labelclean metadata is not valid JSON ({err})") from err
    if not isinstance(metadata, dict):
        raise ReportError(f"{path}: labelclean metadata is not a JSON object")
    lacking = [k for k in REQUIRED_METADATA if k not in metadata]
    if lacking:
        raise ReportError(f"{path}: report metadata lacks {', '.join(lacking)}")
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
    frame = table.to_pandas()
    for name in wanted:
        if name not in frame:  # a column added since this report was written: all null
            frame.insert(wanted.index(name), name, pd.Series([None] * len(frame), dtype=object))
    if "admitted_epoch" in frame:
        frame["admitted_epoch"] = frame["admitted_epoch"].astype("Int32")
    _check_rows(path, frame, metadata)
    return Report(frame=frame, metadata=metadata, path=path)


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
    for column in _LABEL_COLUMNS:
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
