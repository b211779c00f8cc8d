"""The report's schema, and how the audit's arrays become a table in it.

One row per sample in manifest order (:data:`REPORT_SCHEMA`, plus :data:`CROWD_FIELDS` for
crowd input); the run's settings and results are one JSON value under :data:`METADATA_KEY`
of the Parquet schema metadata. :mod:`labelclean.report.parquet` writes and reads the file;
this module holds what both sides agree on, so the schema is stated once.

Only ``clean_label``, ``admitted_epoch`` and ``guard`` may be null (DESIGN.md marks them
so); the other columns are declared non-nullable, which Parquet stores as ``required``.
``guard`` came in a later version: a report without it reads back with it all null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from labelclean.fgcm.guard import GUARD_REASONS

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
#: The JSON type each metadata key must have when present, as :func:`read_report
#: <labelclean.report.parquet.read_report>` checks it: ``str``, ``int``, ``float`` (any
#: number), ``bool``, ``dict``, ``list``, or ``[str]`` (a list of strings); a trailing ``?``
#: allows null. A hand-edited ``class_names: null`` is refused naming the key, rather than
#: ending in a TypeError inside whichever command reads it first.
METADATA_TYPES = {
    "tool_version": "str",
    "image_root": "str",
    "class_names": "[str]",
    "config": "dict",
    "seed": "int",
    "epochs": "int",
    "device": "str",
    "mode": "str",
    "wall_time_s": "float",
    "paths_outside_root": "bool",
    "model": "str",
    "architecture": "str?",
    "gmm": "dict?",
    "cluster_names": "[str]?",
    "image_size": "int?",
    "normalization": "dict?",
    "n_samples": "int",
    "manifest_fingerprint": "str",
    "rejected": "int",
    "epoch_log": "list",
    "guard_note": "str?",
    "warnings": "list?",
    "network": "dict?",
    "semi": "dict?",
    "crowd": "dict",
}
LABEL_COLUMNS = ("given_label", "clean_label", "pseudo_label")
TRACE_COLUMNS = ("trace_given", "trace_pseudo")
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
    def suggested_labels(self) -> pd.Series:
        """The label offered to a person for each row (:func:`suggested_label`)."""
        return suggested_label(self.frame)

    @property
    def image_root(self) -> Path:
        """Absolute folder the ``path`` column is relative to."""
        return Path(self.metadata["image_root"])

    def images_now(self, image_root: str | Path | None = None) -> Path:
        """The folder the images are in now: ``image_root`` if they moved, else the audit's.

        Refused early, before any training, when it is not a folder or holds none of the
        first images.
        """
        from labelclean.errors import ConfigError

        root = Path(image_root).resolve() if image_root is not None else self.image_root
        flag = "--image-root" if image_root is not None else f"{self.path}: the image root"
        if not root.is_dir():
            raise ConfigError(
                f"{flag} {root} is not a folder"
                + ("" if image_root is not None else "; if the images moved, pass --image-root DIR")
            )
        sample = self.frame["path"].head(64).tolist()
        if sample and not any((root / p).is_file() for p in sample):
            raise ConfigError(
                f"{flag} {root} holds none of the report's first {len(sample)} images "
                f"(e.g. {sample[0]}); "
                "if they moved, pass --image-root DIR, the folder their paths are relative to"
            )
        return root


def suggested_label(frame: pd.DataFrame) -> pd.Series:
    """The one label a person is offered to accept for each row: the audit's decision.

    ``clean_label`` where the audit kept or relabeled, ``pseudo_label`` where it unlabeled:
    on an unlabeled row that column holds the audit's best guess (the semi-supervised
    epilogue's prediction weighed by the given labels, :mod:`labelclean.fgcm.semi`; the
    late-window max-repeating label without it), which is what ``evaluate`` scores as the
    cleaned label. On kept and relabeled rows ``pseudo_label`` is the network's own guess,
    evidence to show beside the suggestion and never offered as it: where the audit kept a
    label the network disputes, the kept label is far more often right (DESIGN.md, "One
    suggestion rule").

    Stated once, here, for every reader (review card and its ``a`` key, Label Studio
    pre-annotation, the report page's grids and CSV export, ``apply``'s ``accept``).
    Never null: a class name for every row (``[N]`` object strings, the frame's index).

    Example:
        >>> suggested_label(rep.frame).value_counts()  # doctest: +SKIP
    """
    clean = frame["clean_label"].astype(object)
    return clean.where(clean.notna(), frame["pseudo_label"].astype(object)).rename(
        "suggested_label"
    )


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
    array: np.ndarray = np.asarray(values).astype(dtype, copy=False)
    if array.shape != (n,):
        raise ValueError(f"report column {name}: expected shape [{n}], got {array.shape}")
    return array


#: The NumPy type each plain column's values are converted to before Arrow takes them.
_NUMPY_TYPES = {pa.int64(): np.int64, pa.int32(): np.int32, pa.float32(): np.float32}


def _arrow_column(name: str, values: Any, n: int, names: pa.Array) -> pa.Array | pa.ChunkedArray:
    """One column of the audit's arrays (as :func:`build_report_table` takes them) -> Arrow."""
    if name in LABEL_COLUMNS:
        return _labels(name, values, n, names, nullable=name == "clean_label")
    if name in TRACE_COLUMNS:
        return _traces(name, values, n)
    if name == "admitted_epoch":
        admitted = _column(name, values, n, np.int32)
        return pa.array(admitted, mask=admitted < 0)
    if name == "votes":
        if len(values) != n or not values.type.equals(pa.list_(VOTE_TYPE)):
            raise ValueError(f"report column votes: expected {n} lists of {VOTE_TYPE}")
        return values
    kind = CROWD_SCHEMA.field(name).type
    if kind == pa.string():
        return pa.array(_column(name, values, n, object), type=kind)
    return pa.array(_column(name, values, n, _NUMPY_TYPES[kind]), type=kind)


def _check_rows(table: pa.Table) -> None:
    """The rules that tie a report's columns together; ValueError names the one broken."""
    action = table["action"].to_numpy().astype(str)
    bad_action = ~np.isin(action, ACTIONS)
    if bad_action.any():
        raise ValueError(
            f"report column action: {sorted(set(action[bad_action]))} not in {ACTIONS}"
        )
    clean_null = table["clean_label"].is_null().to_numpy()
    if (clean_null != (action == "unlabel")).any():
        raise ValueError("report column clean_label: must be -1 exactly on the unlabel rows")
    unknown_guard = set(table["guard"].unique().to_pylist()) - set(GUARD_REASONS)
    if unknown_guard:
        raise ValueError(f"report column guard: {sorted(map(str, unknown_guard))} unknown")


def build_report_table(columns: Mapping[str, Any], *, class_names: Sequence[str]) -> pa.Table:
    """Arrays from the audit -> a table in :data:`REPORT_SCHEMA`, without per-row Python.

    Args:
        columns: One entry per schema column. ``given_label``/``pseudo_label``: integer codes
            ``[N]`` into ``class_names``; ``clean_label``: codes with ``-1`` for null (exactly
            the ``unlabel`` rows); ``admitted_epoch``: ``[N]`` ints, ``-1`` for null;
            ``cluster``/``action``: strings ``[N]``; ``trace_given``/``trace_pseudo``:
            ``[N, E]`` floats; ``guard`` (optional, all null when left out): the reason
            code (GUARD_REASONS) of the guard that moved each sample, None where none did;
            the rest ``[N]``. With ``votes`` (a list<VOTE_TYPE> array) the table is in
            :data:`CROWD_SCHEMA`.
        class_names: Names of the label codes.

    Raises:
        ValueError: A column is missing, unknown, mis-shaped or out of range, or the columns
            break a rule that ties them (a bug in the caller, not in the user's data).

    Example:
        >>> table = build_report_table(columns, class_names=["cat", "dog"])  # doctest: +SKIP
    """
    schema = CROWD_SCHEMA if "votes" in columns else REPORT_SCHEMA
    missing = [f for f in schema.names if f not in columns and f not in ADDED_COLUMNS]
    unknown = [f for f in columns if f not in schema.names]
    if missing or unknown:
        raise ValueError(f"report columns: missing {missing}, unknown {unknown}")
    if np.shape(columns["trace_given"]) != np.shape(columns["trace_pseudo"]):
        raise ValueError("report columns trace_given and trace_pseudo differ in shape")
    n = len(columns["index"])
    names = pa.array(list(class_names), type=pa.string())
    given = {"guard": np.full(n, None), **columns}
    arrays = [_arrow_column(f.name, given[f.name], n, names) for f in schema]
    table = pa.Table.from_arrays(arrays, schema=schema)
    _check_rows(table)
    return table


def with_columns(
    table: pa.Table, columns: Mapping[str, Any], *, class_names: Sequence[str]
) -> pa.Table:
    """``table`` (a report) with ``columns`` replaced, or appended when it lacks them.

    For the steps after the clustering that change some columns of its report (the audit's
    epilogue, the crowd combination): each column is given and converted as
    :func:`build_report_table` takes it, and the result obeys the same rules.
    Appending ``votes`` (with ``n_votes`` and ``agreement``) makes it a crowd report.

    Raises:
        ValueError: As :func:`build_report_table`, for the columns given.
    """
    unknown = [name for name in columns if name not in CROWD_SCHEMA.names]
    if unknown:
        raise ValueError(f"report columns: unknown {unknown}")
    n = table.num_rows
    names = pa.array(list(class_names), type=pa.string())
    for name, values in columns.items():
        array = _arrow_column(name, values, n, names)
        field = CROWD_SCHEMA.field(name)
        index = table.schema.get_field_index(name)
        if index < 0:
            table = table.append_column(field, array)
        else:
            table = table.set_column(index, field, array)
    _check_rows(table)
    schema = CROWD_SCHEMA if "votes" in table.schema.names else REPORT_SCHEMA
    return table.cast(schema)
