"""finetune from a frozen audit (issue 19): test accuracy on held-out photos, side by side.

imagenette-dev is split into 4 folds (stratified, seeded); each fold in turn is the held-out
test set (clean labels) and the other three are audited with injected noise. Every arm
trains a fresh head (``--head``: the frozen audit's default, an MLP, unless asked) on the
same cached EfficientNet-Lite0 embeddings with the same number of steps (FinetuneConfig
defaults):

    CE on noisy labels     cross-entropy on the given (noisy) labels of every image
    mixup on noisy labels  the same with input mixup on the embeddings (--mixup)
    CE on cleaned labels   cross-entropy on the audit's labeled set only
    finetune               `labelclean finetune` on the frozen report: the mixed semi-training
                           on the labeled set plus the unlabeled rest
    CE on clean labels     cross-entropy on the truth of every image (the ceiling)

The cleaned-label and finetune arms use finetune's recipe, input mixup on the labeled batch
included (``--mixup``; finetune's default for a head is 1); the noisy and clean arms are
plain cross-entropy.

The first fold also runs the user's commands end to end (`audit --frozen`, `finetune --test`,
`predict` on `--cli-test` held-out photos), to show the exported model, run on the images,
scores what the head scored on their cached embeddings. The embeddings are put in the cache
first (see _seed_embedding_cache), so the CLI does not embed the photos a second time.

Run by hand:  python benchmarks/frozen_finetune.py --data /work/shared/data [--setting sym-40]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import limit_threads, markdown_table, replace_section  # noqa: E402
from frozen_quality import IMAGENETTE_PAIRS, SETTINGS, load, subset  # noqa: E402


def _folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    fold = np.empty(len(labels), dtype=np.int64)
    for f, (_, test) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(labels, labels)):
        fold[test] = f
    return fold


def _audit(ds, features, config, noisy: np.ndarray, seed: int) -> pd.DataFrame:
    from labelclean.config import AuditConfig
    from labelclean.data.images import Dataset
    from labelclean.fgcm.audit import run_audit
    from labelclean.fgcm.frozen import FrozenAuditRun, frozen_config

    data = Dataset(dataclasses.replace(ds.manifest, given_labels=noisy), ds.cache, [])
    cfg = frozen_config(AuditConfig.from_dict({**config.to_dict(), "seed": seed}), flip=True)
    return run_audit(data, cfg, run=FrozenAuditRun(data, cfg, features=features)).to_pandas()


def _seed_embedding_cache(root: Path, manifest: Path, features: dict, config) -> None:
    """Put the fold's embeddings where `audit --frozen` will look, as a user's second run finds them.

    Embedding the images again through the CLI would cost an hour on this shared CPU and
    measure nothing new (``embed_images`` is the same code); the audit then hits the cache.
    """
    from labelclean.data.images import load_dataset
    from labelclean.fgcm.frozen import embedding_cache_path

    ds = load_dataset(root, manifest)
    block = np.stack([features[p] for p in ds.manifest.paths])
    path = embedding_cache_path(ds, config, flip=True)
    np.save(path.with_suffix(".tmp.npy"), block)
    path.with_suffix(".tmp.npy").replace(path)


def _cli_round_trip(ds, features, train: np.ndarray, test: np.ndarray, noisy: np.ndarray, config,
                    n_test: int) -> dict:
    """The user's commands on real files: audit --frozen, finetune, predict on ``n_test`` photos."""
    names = np.asarray(ds.manifest.class_names)
    paths = np.asarray(ds.manifest.paths)
    root = ds.manifest.root
    test = np.sort(np.random.default_rng(0).permutation(test)[:n_test])
    out: dict = {"predicted images": len(test)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pd.DataFrame({"path": paths[train], "label": names[noisy]}).to_csv(tmp / "noisy.csv", index=False)
        _seed_embedding_cache(root, tmp / "noisy.csv", dict(zip(paths[train], features[train])), config)
        weights = config.weights
        pd.DataFrame({"path": paths[test], "label": names[ds.manifest.given_labels[test]]}).to_csv(
            tmp / "test.csv", index=False)
        _seed_embedding_cache(root, tmp / "test.csv", dict(zip(paths[test], features[test])), config)
        cli = [sys.executable, "-m", "labelclean"]
        steps = {
            "audit": [*cli, "audit", str(root), str(tmp / "noisy.csv"), "--frozen", "--model",
                      "tf_efficientnet_lite0", "--weights", weights, "--frozen-flip", "--out",
                      str(tmp / "r.parquet"), "--quiet"],
            "finetune": [*cli, "finetune", str(tmp / "r.parquet"), "--out", str(tmp / "model"), "--test",
                         str(root), "--test-labels", str(tmp / "test.csv"), "--quiet"],
            "predict": [*cli, "predict", str(tmp / "model"), str(root), str(tmp / "test.csv"), "--out",
                        str(tmp / "p.parquet"), "--quiet"],
        }
        for name, command in steps.items():
            t0 = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{name} failed:\n{done.stderr}")
            out[f"{name} seconds"] = time.perf_counter() - t0
        metrics = json.loads((tmp / "model" / "metrics.json").read_text())
        out["finetune test accuracy (head on embeddings)"] = metrics["test_accuracy"]
        out["predict accuracy (exported model on the images)"] = float(
            pd.read_parquet(tmp / "p.parquet")["correct"].mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--settings", nargs="+", default=["sym-40", "asym-40"])
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI run")
    parser.add_argument("--cli-test", type=int, default=200, help="held-out photos run through predict")
    parser.add_argument("--limit", type=int, default=None, help="a seeded random subset of N images")
    parser.add_argument("--head", choices=("mlp", "linear"), default=None, help="every arm's head (default: the frozen audit's)")
    parser.add_argument("--mixup", type=float, default=None, help="finetune's --mixup (default: finetune's, 1 for a head)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    limit_threads()
    from labelclean.config import FinetuneConfig
    from labelclean.evaluate import corrupt_labels
    from labelclean.fgcm.finetune import split_report
    from labelclean.fgcm.frozen import FROZEN_OPTIONS
    from labelclean.fgcm.frozen_finetune import run_frozen_finetune

    mixup = FinetuneConfig(mixup=args.mixup).labeled_mixup(frozen=True)
    head = args.head or str(FROZEN_OPTIONS["head"])

    ds, features, config, _ = load(args.data, None, args.limit)
    names = ds.manifest.class_names
    truth = ds.manifest.given_labels.copy()
    fold = _folds(truth, args.folds, args.seed)
    rows, checks = [], []
    for setting in args.settings:
        noise, rate = SETTINGS[setting]
        for f in range(args.folds):
            train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            noisy = corrupt_labels(truth[train], names, noise=noise, rate=rate, seed=args.seed + f,
                                   mapping=IMAGENETTE_PAIRS if noise == "asymmetric" else None)
            t0 = time.perf_counter()
            report = _audit(subset(ds, np.isin(np.arange(len(truth)), train)), features[train], config,
                            noisy, args.seed)
            audit_seconds = time.perf_counter() - t0
            labeled, cleaned, unlabeled = split_report(report, names)
            everything, nothing = np.arange(len(train)), np.array([], np.int64)
            arms = [
                ("CE on noisy labels", everything, noisy, nothing, 0.0, 0.0),
                (f"mixup {mixup:g} on noisy labels", everything, noisy, nothing, 0.0, mixup),
                ("CE on cleaned labels", labeled, cleaned, unlabeled, 0.0, mixup),
                ("finetune", labeled, cleaned, unlabeled, 1.0, mixup),
                ("CE on clean labels", everything, truth[train], nothing, 0.0, 0.0),
            ]
            for arm, rows_l, labels_l, rows_u, lambda_m, arm_mixup in arms:
                t1 = time.perf_counter()
                cfg = FinetuneConfig(lambda_m=lambda_m, seed=args.seed, mixup=arm_mixup)
                result, _ = run_frozen_finetune(
                    features[train], rows_l, labels_l, rows_u, cfg,
                    n_classes=len(names), head=head, test=(features[test], truth[test]))
                rows.append({"noise": setting, "fold": f, "arm": arm, "labeled": len(rows_l),
                             "unlabeled": len(rows_u) if lambda_m else 0,
                             "test accuracy": result.test_accuracy, "seconds": time.perf_counter() - t1,
                             "audit seconds": audit_seconds})
                print(json.dumps(rows[-1]), flush=True)
            if f == 0 and not args.no_cli:
                check = {"noise": setting,
                         **_cli_round_trip(ds, features, train, test, noisy, config, args.cli_test)}
                checks.append(check)
                print(json.dumps(check), flush=True)
    frame = pd.DataFrame(rows)
    summary = frame.groupby(["noise", "arm"], sort=False).agg(
        **{"labeled": ("labeled", "mean"), "unlabeled": ("unlabeled", "mean"),
           "test accuracy": ("test accuracy", "mean"), "worst fold": ("test accuracy", "min"),
           "seconds": ("seconds", "mean")}).reset_index()
    table = markdown_table(summary.to_dict("records"), list(summary.columns))
    text = table
    if checks:
        text += "\n\nThe user's commands on fold 0 (held-out photos through `labelclean predict`):\n\n"
        text += markdown_table(checks, list(checks[0]))
    print(text)
    if not args.no_write:
        replace_section("Finetune from a frozen audit", (
            f"`python benchmarks/frozen_finetune.py {' '.join(sys.argv[1:])}` ({time.strftime('%Y-%m-%d')}): "
            f"imagenette-dev ({len(truth)} images{', a seeded random subset' if args.limit else ''}) "
            f"in {args.folds} stratified folds, each held out once (clean labels) while "
            "the other three are audited with the noise; mean over folds, worst fold beside it; "
            f"a {head} head on EfficientNet-Lite0 embeddings (both views) for every arm, "
            "FinetuneConfig's defaults (30 epochs, mu 7, tau .95).\n\n" + text))


if __name__ == "__main__":
    main()
