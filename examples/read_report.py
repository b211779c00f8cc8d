"""Read ``report.parquet`` without labelclean's helpers: pandas, pyarrow, and its metadata.

Shows: the report is a plain Parquet file. pandas gives the per-image frame; pyarrow gives
the schema and the run's metadata (tool version, image root, class names, the full
configuration, the fitted mixture, wall time), stored as JSON under the schema key
``labelclean``. ``labelclean.read_report`` does the same with checks.

Run:  python examples/read_report.py REPORT.parquet
      (make a report first, e.g. python examples/audit_api.py)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path, help="report.parquet from an audit")
    args = parser.parse_args()
    if not args.report.is_file():
        raise SystemExit(f"error: {args.report}: no such file")

    # pandas: one row per image; labels are categoricals, traces are arrays per row
    frame = pd.read_parquet(args.report)
    print(frame.dtypes.to_string())
    fixed = frame[frame["action"] == "relabel"]
    print(f"{len(fixed)} of {len(frame)} labels corrected, e.g.:")
    print(fixed[["path", "given_label", "clean_label"]].head().to_string())
    # a confidence trace: the given label's softmax at every recorded epoch
    print("trace of row 0:", [round(float(v), 3) for v in frame["trace_given"].iloc[0]])

    # pyarrow: the schema and the run's metadata, without reading any rows
    schema = pq.read_schema(args.report)
    meta = json.loads(schema.metadata[b"labelclean"])
    print(
        f"labelclean {meta['tool_version']}, {meta['epochs']} epochs on {meta['device']}, "
        f"{meta['wall_time_s']:.0f} s"
    )
    print("images under", meta["image_root"])
    print("classes", meta["class_names"])
    print("config", {k: meta["config"][k] for k in ("model", "epochs", "warmup", "seed")})

    # a column subset straight from pyarrow (large reports: read only what you need)
    table = pq.read_table(args.report, columns=["path", "action"])
    print(table.group_by("action").aggregate([("path", "count")]).to_pandas().to_string())


if __name__ == "__main__":
    main()
