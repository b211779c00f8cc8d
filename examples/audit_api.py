"""Audit a labelled image folder with the Python API, then look at the report as a frame.

Shows: ``labelclean.audit`` on a folder + ``labels.csv``, the per-image frame (clusters,
actions, suggested labels), the samples worth a human look first, and writing
``report.parquet`` for ``labelclean report``/``review``/``finetune``.

Run:  python examples/audit_api.py IMAGES LABELS.csv [--epochs 30] [--out report.parquet]
      python examples/audit_api.py          # the built-in demo: sklearn's digits, 30% noise
"""

from __future__ import annotations

import argparse
from pathlib import Path

import labelclean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="?", type=Path, help="image folder [default: demo data]")
    parser.add_argument("labels", nargs="?", type=Path, help="CSV with path,label columns")
    parser.add_argument("--epochs", type=int, default=None, help="[default: the audit's]")
    parser.add_argument("--out", type=Path, default=Path("report.parquet"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args()
    if args.out.exists() and not args.overwrite:  # before the audit, not after it
        raise SystemExit(f"error: {args.out} exists; pass --overwrite to replace it")
    options = {}
    if args.images is None:  # digits written as PNGs to ./labelclean-demo, 30% labels flipped
        from labelclean.demo import DEMO_CONFIG, write_demo_data

        args.images, args.labels, _ = write_demo_data(Path("labelclean-demo"))
        options = dict(DEMO_CONFIG)  # no flips for digits, a higher learning rate
    if args.epochs is not None:
        options.update(epochs=args.epochs, warmup=max(1, args.epochs // 4))

    result = labelclean.audit(args.images, args.labels, **options)
    frame = result.to_pandas()  # one row per image, in manifest order

    print(f"{len(frame)} images; actions:", frame["action"].value_counts().to_dict())
    # the five FGCM clusters against what the audit decided for them
    print(frame.groupby(["cluster", "action"], observed=True).size().unstack(fill_value=0))

    # relabels: given -> suggested, most confident first
    relabel = frame[frame["action"] == "relabel"].sort_values("conf_pseudo", ascending=False)
    print(relabel[["path", "given_label", "clean_label", "conf_given", "conf_pseudo"]].head(10))
    # the most frequent corrections
    print(relabel.groupby(["given_label", "clean_label"], observed=True).size().nlargest(5))

    # unlabeled: the network trusts neither the given label nor its own guess
    unsure = frame[frame["action"] == "unlabel"].sort_values("conf_given")
    print(unsure[["path", "given_label", "pseudo_label", "cluster"]].head(10))

    result.write(args.out, overwrite=args.overwrite)  # refuses to replace a file unless asked
    print(f"wrote {args.out}; next: labelclean report {args.out}")


if __name__ == "__main__":
    try:
        main()
    except labelclean.LabelcleanError as err:  # bad input: one line, no traceback
        raise SystemExit(f"error: {err}") from None
