"""Audit crowd votes: the label per image, and which annotators to trust.

Shows: ``labelclean.audit`` on a long vote table (``path,annotator,label``, one row per vote).
The audit starts from the votes' consensus, trains on it as usual, then combines the network
with the votes; the frame gains ``n_votes``, ``agreement`` and ``votes``, and
``result.annotators`` ranks the annotators by their estimated accuracy.

Run:  python examples/crowd_votes.py IMAGES VOTES.csv [--epochs 30]
      python examples/crowd_votes.py   # demo: the digits, 3 votes each from 30 simulated
                                       # workers, 10% of them spammers who vote at random
"""

from __future__ import annotations

import argparse
from pathlib import Path

import labelclean


def demo_votes(folder: Path) -> tuple[Path, Path]:
    """The digits as PNGs and a simulated vote table (votes.csv) for them."""
    from labelclean.crowd.simulate import simulate_crowd_votes
    from labelclean.data.digits import write_digits
    from labelclean.data.manifest import read_manifest

    images, clean_csv = write_digits(folder / "images", layout="csv")
    truth = read_manifest(images, clean_csv)
    votes, summary = simulate_crowd_votes(
        truth.paths,
        truth.given_labels,
        truth.class_names,
        votes_per_image=3,
        workers=30,
        spammers=0.1,
    )
    print(
        f"simulated votes: {summary['wrong']:.0%} wrong, majority vote "
        f"{summary['majority']:.1%} right, {summary['spammers']} spammers"
    )
    votes.drop(columns="true_label").to_csv(folder / "votes.csv", index=False)
    return images, folder / "votes.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="?", type=Path, help="image folder [default: demo data]")
    parser.add_argument("votes", nargs="?", type=Path, help="CSV with path,annotator,label")
    parser.add_argument("--epochs", type=int, default=None, help="[default: the audit's]")
    parser.add_argument("--out", type=Path, default=Path("crowd-report.parquet"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args()
    options = {}
    if args.images is None:
        from labelclean.demo import DEMO_CONFIG

        args.images, args.votes = demo_votes(Path("labelclean-crowd-demo"))
        options = dict(DEMO_CONFIG)
    if args.epochs is not None:
        options.update(epochs=args.epochs, warmup=max(1, args.epochs // 4))

    result = labelclean.audit(args.images, args.votes, **options)
    frame = result.to_pandas()
    print(frame["action"].value_counts().to_string())
    # images the voters disagreed on, least agreement first
    split = frame[frame["agreement"] < 1].sort_values("agreement")
    columns = ["path", "given_label", "clean_label", "n_votes", "agreement"]
    print(split[columns].head(10).to_string())
    # who to trust: most trusted first; spammers sink to the bottom
    print(result.annotators.head(5).to_string())
    print(result.annotators.tail(5).to_string())
    result.write(args.out, overwrite=args.overwrite)  # + <out>.annotators.parquet beside it
    print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except labelclean.LabelcleanError as err:
        raise SystemExit(f"error: {err}") from None
