"""The frozen audit on natural photos (issue 19): how close to what clean labels would give?

On imagenette-dev (3,925 photos, 10 classes, clean labels) with injected noise, every method
works on the same cached EfficientNet-Lite0 embeddings (both views, ``--frozen-flip``):

    ceiling           a linear probe trained on the CLEAN labels, 4-fold cross-validated: how
                      many images the features can get right (no user has this)
    given             no cleaning
    cleanlab          cleanlab's recipe: 5-fold cross-validated logistic regression on the
                      noisy labels, then cleanlab.filter.find_label_issues; the argmax of the
                      out-of-fold probabilities is the suggested label
    labelclean-1head  the frozen audit before issue 19: one head on all of T, no neighbours
    labelclean        the frozen audit with today's defaults (labelclean.fgcm.frozen)
    labelclean-every-dispute  the same, with the report flagging every label the heads
                      dispute, as before 2026-12-06 (guard.partly_disputed)
    labelclean-training-slack  the same, with the report's flag budget given the training
                      slack, as before issue 19's last change (guard.report_slack)
    labelclean-k20    the same with a neighbour vote of 20 labels (--neighbours 20)
    labelclean-linear the same with linear heads (--head linear), the default before the MLP
    labelclean-no-mixup  linear heads trained on unblended embeddings (--head linear --mixup 0),
                      the default before mixup and the MLP

Each setting is scored with DESIGN.md's figures and cleaned accuracy as a share of the
ceiling. Noise is `labelclean corrupt`'s (labelclean.evaluate.corrupt_labels); asymmetric
noise flips 40% of each source class of IMAGENETTE_PAIRS to its partner.

Run by hand:  python benchmarks/frozen_quality.py --data /work/shared/data [--seeds 0 1 2]
                [--settings sym-20 sym-40 asym-40] [--methods ...] [--half A|B] [--limit N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import limit_threads, markdown_table, replace_section  # noqa: E402
from compare import _find_issues  # noqa: E402

#: Asymmetric noise for Imagenette's classes, the analogue of the paper's CIFAR-10 pairs
#: (truck->automobile, bird->airplane, deer->horse, cat<->dog): photos that share a scene.
IMAGENETTE_PAIRS = {
    "garbage_truck": "gas_pump",  # street and forecourt scenes, vehicles
    "gas_pump": "garbage_truck",
    "church": "parachute",  # buildings and open sky
    "cassette_player": "chain_saw",  # a hand-held machine
    "tench": "springer",  # outdoor photos of a person holding or with the subject
}
SETTINGS = {
    "sym-20": ("symmetric", 0.2),
    "sym-40": ("symmetric", 0.4),
    "asym-40": ("asymmetric", 0.4),
}


def subset(ds, keep: np.ndarray):
    """The images of ``ds`` where ``keep`` is True, with their decoded pixels."""
    from labelclean.data.images import Dataset

    return Dataset(ds.manifest.subset(keep), dataclasses.replace(ds.cache, images=ds.cache.images[keep]), [])


def load(data: Path, half: str | None, limit: int | None = None):
    """imagenette-dev with its clean labels, embedded once (cached); optionally one half.

    ``limit``: only the first ``limit`` images of a seeded permutation (seed 0), a random
    subset, for a machine where embedding all 3,925 photos takes too long.
    """
    from labelclean.config import AuditConfig
    from labelclean.data.images import load_dataset
    from labelclean.fgcm.frozen import efficientnet_lite0_weights, embed_images

    root = data / "imagenette-dev"
    ds = load_dataset(root / "images", root / "labels.csv")
    if limit is not None and limit < len(ds.manifest):
        keep = np.zeros(len(ds.manifest), bool)
        keep[np.random.default_rng(0).permutation(len(keep))[:limit]] = True
        ds = subset(ds, keep)
    config = AuditConfig(model="tf_efficientnet_lite0", weights=str(efficientnet_lite0_weights()))
    t0 = time.perf_counter()
    features, _ = embed_images(ds, config, flip=True)
    embed_seconds = time.perf_counter() - t0
    if half is not None:  # a fixed random half, for tuning on one and confirming on the other
        keep = np.random.default_rng(1234).permutation(len(features)) % 2 == "AB".index(half)
        ds, features = subset(ds, keep), features[keep]
    return ds, features, config, embed_seconds


def ceiling(features: np.ndarray, truth: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold probabilities of a linear probe on the clean labels (4 folds)."""
    return _oof_probe(features, truth, folds=4, seed=seed)


def _oof_probe(features: np.ndarray, labels: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = features.astype(np.float32).mean(1)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, x, labels, cv=cv, method="predict_proba")


def method_cleanlab(ctx: dict) -> pd.DataFrame:
    probs = _oof_probe(ctx["features"], ctx["noisy"], folds=5, seed=ctx["seed"])
    return _find_issues(ctx["noisy"], probs, ctx["names"])


def _frozen_audit(ctx: dict, recipe: dict | None = None, **options) -> pd.DataFrame:
    """The frozen audit of ctx's noisy labels; ``recipe``: AuditConfig fields to override."""
    from labelclean.config import AuditConfig
    from labelclean.data.images import Dataset
    from labelclean.fgcm.audit import run_audit
    from labelclean.fgcm.frozen import FrozenAuditRun, frozen_config

    ds = ctx["dataset"]
    noisy = Dataset(dataclasses.replace(ds.manifest, given_labels=ctx["noisy"]), ds.cache, [])
    base = dataclasses.replace(ctx["config"], seed=ctx["seed"], **(recipe or {}))
    config = frozen_config(AuditConfig.from_dict(base.to_dict()), flip=True, **options)
    run = FrozenAuditRun(noisy, config, features=ctx["features"])
    return run_audit(noisy, config, run=run).to_pandas()


def method_labelclean(ctx: dict) -> pd.DataFrame:
    return _frozen_audit(ctx)


def method_labelclean_1head(ctx: dict) -> pd.DataFrame:
    return _frozen_audit(ctx, {"mixup": 0.0}, head="linear", folds=1, neighbours=0)


def method_labelclean_training_slack(ctx: dict) -> pd.DataFrame:
    from unittest import mock

    from labelclean.fgcm import state
    from labelclean.fgcm.guard import TRAINING_SLACK

    with mock.patch.object(state, "report_slack", lambda method, memorised: TRAINING_SLACK):
        return _frozen_audit(ctx)


def method_labelclean_every_dispute(ctx: dict) -> pd.DataFrame:
    """The report of before 2026-12-06: every label the heads dispute is flagged."""
    from unittest import mock

    from labelclean.fgcm import guard

    with mock.patch.object(guard, "partly_disputed", lambda flagged, *_: np.zeros(len(flagged), bool)):
        return _frozen_audit(ctx)


METHODS = {
    "cleanlab": method_cleanlab,
    "labelclean-1head": method_labelclean_1head,
    "labelclean-training-slack": method_labelclean_training_slack,
    "labelclean-every-dispute": method_labelclean_every_dispute,
    "labelclean": method_labelclean,
    "labelclean-k20": lambda ctx: _frozen_audit(ctx, neighbours=20),
    "labelclean-linear": lambda ctx: _frozen_audit(ctx, head="linear"),
    "labelclean-no-mixup": lambda ctx: _frozen_audit(ctx, {"mixup": 0.0}, head="linear"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--half", choices=["A", "B"], default=None)
    parser.add_argument("--limit", type=int, default=None, help="a seeded random subset of N images")
    parser.add_argument("--section", default="Frozen audit on natural photos")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    limit_threads()
    from labelclean.evaluate import cleaning_metrics, corrupt_labels

    ds, features, config, embed_seconds = load(args.data, args.half, args.limit)
    names = ds.manifest.class_names
    truth = ds.manifest.given_labels.copy()
    truth_names = np.asarray(names)[truth]
    rows = []
    for seed in args.seeds:
        ceil = float((ceiling(features, truth, seed).argmax(1) == truth).mean())
        for setting in args.settings:
            noise, rate = SETTINGS[setting]
            noisy = corrupt_labels(truth, names, noise=noise, rate=rate, seed=seed,
                                   mapping=IMAGENETTE_PAIRS if noise == "asymmetric" else None)
            ctx = {"dataset": ds, "features": features, "config": config, "names": names,
                   "noisy": noisy, "seed": seed}
            for name in ["given", *args.methods]:
                t0 = time.perf_counter()
                if name == "given":
                    from compare import _frame

                    frame = _frame(noisy, np.zeros(len(noisy), bool), noisy, names)
                else:
                    frame = METHODS[name](ctx)
                m = cleaning_metrics(frame, truth_names)
                row = {"noise": setting, "seed": seed, "method": name, "ceiling": ceil,
                       "detection P": m["detection_precision"], "detection R": m["detection_recall"],
                       "detection F1": m["detection_f1"], "label precision": m["label_precision"],
                       "label recall": m["label_recall"], "cleaned acc": m["cleaned_accuracy"],
                       "share of ceiling": m["cleaned_accuracy"] / ceil,
                       "seconds": time.perf_counter() - t0}
                rows.append(row)
                print(json.dumps(row, default=str), flush=True)
    frame = pd.DataFrame(rows)
    metrics = ["ceiling", "detection P", "detection R", "detection F1", "label precision",
               "label recall", "cleaned acc", "share of ceiling", "seconds"]
    mean = frame.groupby(["noise", "method"], sort=False)[metrics].mean().reset_index()
    worst = frame.groupby(["noise", "method"], sort=False)[["detection F1", "cleaned acc"]].min()
    mean["min F1"] = worst["detection F1"].to_numpy()
    mean["min cleaned"] = worst["cleaned acc"].to_numpy()
    table = markdown_table(mean.fillna(float("nan")).to_dict("records"),
                           ["noise", "method", *metrics[:-1], "min F1", "min cleaned", "seconds"])
    print(table)
    if not args.no_write:
        where = f"all {len(truth)} images"
        if args.half or args.limit:
            where = f"a random {'half' if args.half else 'subset'} of {len(truth)} images"
        replace_section(args.section, (
            f"`python benchmarks/frozen_quality.py {' '.join(sys.argv[1:])}` "
            f"({time.strftime('%Y-%m-%d')}): imagenette-dev, {where}, EfficientNet-Lite0 "
            f"embeddings of both views (embedding: {embed_seconds:.0f} s this run, cached "
            f"otherwise), mean over seeds {args.seeds}, worst seed in the min columns.\n\n{table}"))


if __name__ == "__main__":
    main()
