"""Decode-and-cache speed on real images (issue 2): first run (decode) vs second (cache hit).

Each run happens in a fresh subprocess so its peak memory (max RSS) is its own.

Run by hand:  python benchmarks/ingest.py [--data ../shared/data] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_data_argument, data_folder, publish  # noqa: E402


def one_run(data: Path, cache: Path, workers: int) -> dict:
    from labelclean.data.images import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(data, data / "train.csv", cache_dir=cache, workers=workers)
    seconds = time.perf_counter() - t0
    n = len(ds.manifest)
    return {"images": n, "seconds": seconds, "images/s": n / seconds,
            "peak RSS MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cache MB": ds.cache.images.nbytes / 2**20, "size": ds.cache.image_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_argument(parser)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--one", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.data = data_folder(args.data, "cifar10-dev", needs=("train.csv",))
    if args.one is not None:
        print(json.dumps(one_run(args.data, args.one, args.workers)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for label in ("first run (decode)", "second run (cache hit)"):
            out = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--workers",
                                  str(args.workers), "--one", cache], check=True,
                                 capture_output=True, text=True)
            rows.append({"run": label, **json.loads(out.stdout.strip().splitlines()[-1])})
            print(rows[-1], flush=True)
    rows.append({"run": "ratio (second / first speed)",
                 "images/s": rows[1]["images/s"] / rows[0]["images/s"]})
    publish("Ingestion", rows, ["run", "images", "seconds", "images/s", "peak RSS MB", "cache MB", "size"],
            f"{args.data.name}/train.csv, {args.workers} decode threads, each run in a fresh process.",
            write=not args.no_write)


if __name__ == "__main__":
    main()
