"""report.parquet: the schema of DESIGN.md, an atomic writer, and a reader that checks.

One row per sample in manifest order; the settings and results that apply to the whole
run (tool version, image root, class names, config, GMM, ...) are one JSON value under
the ``labelclean`` key of the Parquet schema metadata, so ``finetune`` and ``report`` need
nothing but this file and the images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from labelclean._io import atomic_path, check_writable
from labelclean._version import __version__
from labelclean.errors import ReportError

logger = logging.getLogger(__name__)

METADATA_KEY = b"labelclean"
ACTIONS = ("keep", "relabel", "unlabel")
REPORT_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("path", pa.string()),
        ("given_label", pa.string()),
        ("cluster", pa.string()),
        ("action", pa.string()),
        ("clean_label", pa.string()),
        ("pseudo_label", pa.string()),
        ("conf_given", pa.float32()),
        ("conf_pseudo", pa.float32()),
        ("cluster_prob", pa.float32()),
        ("admitted_epoch", pa.int32()),
        ("trace_given", pa.list_(pa.float32())),
        ("trace_pseudo", pa.list_(pa.float32())),
    ]
)
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


@dataclass
class Report:
    """A report read back: the per-sample frame and the run's metadata."""

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


def _labels(codes: np.ndarray, names: np.ndarray) -> pa.Array:
    """Integer codes -> class-name strings, -1 -> null, without a Python loop."""
    codes = np.asarray(codes, dtype=np.int64)
    valid = codes >= 0
    dictionary = pa.DictionaryArray.from_arrays(
        pa.array(np.where(valid, codes, 0).astype(np.int32), mask=~valid), pa.array(names)
    )
    return dictionary.cast(pa.string())


def _traces(values: np.ndarray) -> pa.Array:
    """``[N, E]`` floats -> list<float32> without a per-row loop."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    n, e = values.shape
    offsets = (
        pa.array(np.arange(0, (n + 1) * e, e, dtype=np.int32))
        if e
        else pa.array(np.zeros(n + 1, dtype=np.int32))
    )
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))


def build_report_table(columns: Mapping[str, Any], *, class_names: Sequence[str]) -> pa.Table:
    """Arrays from the audit -> a table in :data:`REPORT_SCHEMA`.

    Label columns (given/clean/pseudo) are integer codes into ``class_names`` (-1 = null);
    ``admitted_epoch`` uses -1 for null; traces are ``[N, E]`` arrays.
    """
    names = np.asarray(list(class_names), dtype=object)
    admitted = np.asarray(columns["admitted_epoch"], dtype=np.int32)
    arrays = {
        "index": pa.array(np.asarray(columns["index"], dtype=np.int64)),
        "path": pa.array(list(columns["path"]), type=pa.string()),
        "given_label": _labels(columns["given_label"], names),
        "cluster": pa.array(np.asarray(columns["cluster"]).astype(str), type=pa.string()),
        "action": pa.array(np.asarray(columns["action"]).astype(str), type=pa.string()),
        "clean_label": _labels(columns["clean_label"], names),
        "pseudo_label": _labels(columns["pseudo_label"], names),
        "conf_given": pa.array(np.asarray(columns["conf_given"], dtype=np.float32)),
        "conf_pseudo": pa.array(np.asarray(columns["conf_pseudo"], dtype=np.float32)),
        "cluster_prob": pa.array(np.asarray(columns["cluster_prob"], dtype=np.float32)),
        "admitted_epoch": pa.array(admitted, mask=admitted < 0),
        "trace_given": _traces(columns["trace_given"]),
        "trace_pseudo": _traces(columns["trace_pseudo"]),
    }
    return pa.Table.from_arrays([arrays[f.name] for f in REPORT_SCHEMA], schema=REPORT_SCHEMA)


def write_report(
    path: str | Path,
    table: pa.Table,
    metadata: Mapping[str, Any],
    *,
    overwrite: bool,
    row_group_size: int = 65536,
) -> Path:
    """Write ``table`` + ``metadata`` to ``path`` all-or-nothing, in row groups."""
    path = Path(path)
    check_writable(path, overwrite=overwrite)
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ValueError(f"report metadata lacks {', '.join(missing)}")
    if not table.schema.equals(REPORT_SCHEMA):
        raise ValueError(f"report table does not follow the schema:\n{table.schema}")
    schema = REPORT_SCHEMA.with_metadata({METADATA_KEY: json.dumps(dict(metadata)).encode()})
    with atomic_path(path, overwrite=overwrite) as tmp:
        pq.write_table(table.cast(schema), tmp, row_group_size=row_group_size)
    return path


def read_report(path: str | Path) -> Report:
    """Read and check a report; errors name the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such report (make one with `labelclean audit`)")
    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise ReportError(f"{path}: not a Parquet file ({err})") from err
    raw = (pf.schema_arrow.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ReportError(f"{path}: a Parquet file, but not a labelclean report (no metadata)")
    missing = [f.name for f in REPORT_SCHEMA if f.name not in pf.schema_arrow.names]
    if missing:
        raise ReportError(f"{path}: report lacks the column(s) {', '.join(missing)}")
    metadata = json.loads(raw)
    if metadata.get("tool_version") != __version__:
        logger.warning(
            "%s was written by labelclean %s; this is %s",
            path,
            metadata.get("tool_version"),
            __version__,
        )
    frame = pf.read().to_pandas()
    frame["admitted_epoch"] = frame["admitted_epoch"].astype("Int32")
    return Report(frame=frame, metadata=metadata, path=path)
