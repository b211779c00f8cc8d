"""Audit quality on real CIFAR-10 images: the default against same-budget baselines (issue 15).

Settings: the human CIFAR-10N labels of cifar10-dev (worst 41% wrong, rand1 18%, aggre 9%;
rand2, rand3 and worst2 from crowd.csv, see benchmarks/README.md) and the synthetic noise of the paper's Tables 7-8 (sym-N, asym-40). Every variant of a
setting runs on the same images, and variants that share their training share it:

    default       the default audit (air_cnn + mixup, --schedule once: one clustering at the end)
    default-loss2 the same training, the loss-only 2-component split of prior work
    default-no-guard / default-confident  the same training and clustering with --guard none
                  (the default before the report's flag budget) / --guard confident
    paper-loop    the same training up to the warmup, then the paper's loop on T (mixup kept)
    ce-once       air_cnn, plain cross-entropy, one FGCM clustering at the end (no mixup)
    ce-loss2      the same cross-entropy run, loss-only 2-component split
    old-default   the default before issue 15: small_cnn, the paper's loop, guard confident
    paper-alg1    --preset paper on air_cnn: the paper's Algorithm 1 exactly (union T, no guard,
                  NS relabeled, report = the last epoch's clustering), its schedule scaled to
                  --epochs (warmup 80/350, LR steps at 80 and 150 of 350, LR 0.06)
    paper-alg1+final  the same run with labelclean's extra clustering after the last epoch
    paper-alg1-latest Algorithm 1 with T = this epoch's refined clusters (--t-update latest)
    cleanlab-4fold  cleanlab's prune at the same budget: 4 cross-entropy trainings of air_cnn,
                  each on 3/4 of the images for --epochs / 3 epochs (as many training passes
                  as one audit), find_label_issues on the out-of-fold softmax, flagged rows
                  unlabeled (cleanlab's advice), the argmax as their suggestion

Wall time of a variant = its training (shared or not) + its own clustering; the
branch of paper-loop counts the shared epochs up to its warmup; cleanlab-4fold's are its four
trainings (no recording pass per epoch, so a little less than one audit's).

Run by hand:  python benchmarks/audit_quality.py --settings worst sym-50 [--variants ...]
Figures go to benchmarks/RESULTS.md, section "Audit quality: default vs baselines".
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    HUMAN,
    NOISE_SETTINGS,
    REPO,
    labelled_cifar,
    limit_threads,
    markdown_table,
    replace_section,
)

#: training name -> AuditConfig overrides of that training (None = the library's defaults)
TRAININGS: dict[str, dict[str, Any]] = {
    "default": {},
    "ce": {"schedule": "once", "mixup": 0.0},
    "old-default": {"model": "small_cnn", "schedule": "paper", "mixup": 0.0, "lr": 0.02},
    "paper": {"preset": "paper", "model": "air_cnn"},
    "paper-latest": {"preset": "paper", "model": "air_cnn", "t_update": "latest"},
}
#: variant -> (training, clustering overrides, branch: continue with the paper's loop)
VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "default": ("default", {}, False),
    "default-loss2": ("default", {"components": 2}, False),
    "default-no-guard": ("default", {"guard": "none"}, False),
    "default-confident": ("default", {"guard": "confident"}, False),
    "paper-loop": ("default", {"schedule": "paper"}, True),
    "ce-once": ("ce", {}, False),
    "ce-loss2": ("ce", {"components": 2}, False),
    "old-default": ("old-default", {}, False),
    "paper-alg1": ("paper", {}, False),
    "paper-alg1+final": ("paper", {"final_clustering": True}, False),
    "paper-alg1-latest": ("paper-latest", {}, False),
}
#: The same-budget cleanlab baseline (not a labelclean training): K folds of epochs / (K - 1)
CLEANLAB, CLEANLAB_FOLDS = "cleanlab-4fold", 4


def test_accuracy(run: Any, data: Path) -> float:
    """Top-1 accuracy of the run's model on cifar10-dev/test (2,000 images)."""
    from labelclean.data.images import load_dataset
    from labelclean.fgcm.finetune import evaluate_accuracy

    test = load_dataset(data / "cifar10-dev", data / "cifar10-dev" / "test.csv")
    names = list(test.manifest.class_names)
    own = list(run.dataset.manifest.class_names)
    labels = np.array([own.index(names[g]) for g in test.manifest.given_labels])
    norm = run.normalization
    return evaluate_accuracy(
        run.model, (test.cache.images, labels), norm["mean"], norm["std"], run.precision
    )


def train(dataset: Any, config: Any, branch_at: int | None, data: Path) -> dict[str, Any]:
    """Run one training; keep its final state (before clustering) and a branch point."""
    from labelclean.fgcm.audit import AuditRun, run_audit

    t0 = time.perf_counter()
    run = AuditRun(dataset, config)
    kept: dict[str, Any] = {}

    def on_epoch(state: Any, line: dict[str, Any]) -> None:
        if state.epoch == branch_at:
            kept["branch"] = (copy.deepcopy(state), copy.deepcopy(run))
            kept["branch_s"] = time.perf_counter() - t0
        if state.epoch == run.config.epochs:
            kept["final"] = copy.deepcopy(state)

    result = run_audit(dataset, config, run=run, on_epoch=on_epoch)
    kept.update(run=run, result=result, seconds=time.perf_counter() - t0)
    kept["test_acc"] = test_accuracy(run, data)
    return kept


def variant_result(dataset: Any, trained: dict[str, Any], config: Any, branch: bool) -> tuple:
    """(audit result, seconds of its own work, shared training seconds it builds on)."""
    from labelclean.fgcm.audit import run_audit

    t1 = time.perf_counter()
    if branch:
        state, run = copy.deepcopy(trained["branch"])
        shared = trained["branch_s"]
    else:
        state, run = copy.deepcopy(trained["final"]), copy.deepcopy(trained["run"])
        shared = trained["seconds"]
    run.config = config
    result = run_audit(dataset, config, state=state, run=run)
    return result, time.perf_counter() - t1, shared


def score(frame: pd.DataFrame, truth: np.ndarray) -> dict[str, float]:
    """DESIGN.md's figures plus detection F1."""
    from labelclean.evaluate import cleaning_metrics

    m = cleaning_metrics(frame, truth)
    p, r = m["detection_precision"] or 0.0, m["detection_recall"] or 0.0
    return {
        "label precision": m["label_precision"],
        "label recall": m["label_recall"],
        "flagged": float((frame["action"] != "keep").mean()),
        "detection P": p,
        "detection R": r,
        "detection F1": 2 * p * r / (p + r) if p + r else 0.0,
        "cleaned acc": m["cleaned_accuracy"],
    }


def cleanlab_row(dataset: Any, truth: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """cleanlab's K-fold prune with as many training passes as one audit of --epochs."""
    from compare import _find_issues, out_of_fold_probs

    given = dataset.manifest.given_labels
    epochs = max(1, round(args.epochs / (CLEANLAB_FOLDS - 1)))
    probs, seconds = out_of_fold_probs(
        dataset, given, seed=args.seed, epochs=epochs, warmup=None, folds=CLEANLAB_FOLDS
    )
    from labelclean.models import default_model_name
    from labelclean.training import resolve_device

    frame = _find_issues(given, probs, list(dataset.manifest.class_names), drop=True)
    # out_of_fold_probs trains the audit's default network, as the audit resolves it here
    model = default_model_name(dataset.cache.image_size, resolve_device("auto"))
    return {**score(frame, truth), "minutes": seconds / 60, "model": model}


def run_setting(setting: str, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Every requested variant on one noise setting, trainings shared."""
    from labelclean.config import AuditConfig
    from labelclean.data.images import load_dataset

    images, csv, truth = labelled_cifar(
        tmp, setting, seed=args.seed, subset=args.subset, cifar=args.data
    )
    dataset = load_dataset(images, csv)
    given = np.asarray(dataset.manifest.class_names)[dataset.manifest.given_labels]
    rows = [
        {"noise": setting, "variant": "given labels", "label precision": np.mean(given == truth)}
    ]
    common = {"epochs": args.epochs, "seed": args.seed}
    trained: dict[str, dict[str, Any]] = {}
    for name in args.variants:
        if name == CLEANLAB:
            rows.append({"noise": setting, "variant": name, **cleanlab_row(dataset, truth, args)})
            print(json.dumps(rows[-1]), flush=True)
            continue
        training, overrides, branch = VARIANTS[name]
        if training not in trained:
            options = dict(TRAININGS[training])
            config = AuditConfig.from_preset(options.pop("preset", None), **common, **options)
            needs_branch = any(VARIANTS[v][0] == training and VARIANTS[v][2] for v in args.variants)
            paper = AuditConfig(**common, schedule="paper", mixup=1.0).resolve("air_cnn")
            branch_at = paper.warmup if needs_branch else None
            trained[training] = train(dataset, config, branch_at, args.data)
            if args.save_dir is not None:  # the trained state, to replay other clusterings
                args.save_dir.mkdir(parents=True, exist_ok=True)
                keep = {k: trained[training][k] for k in ("final", "run", "seconds", "test_acc")}
                with open(args.save_dir / f"{setting}-{training}.pkl", "wb") as fh:
                    pickle.dump({**keep, "truth": truth}, fh)
            print(
                f"{setting}: trained {training} in {trained[training]['seconds']:.0f} s", flush=True
            )
        done = trained[training]
        base = done["run"].config
        if branch:  # the paper's loop from the same trunk: its resolved warmup/guard/relabel
            extra = {"schedule": "paper", "mixup": base.mixup, "model": base.model}
            config = AuditConfig(**common, **extra).resolve(done["run"].model_name)
        else:
            config = dataclasses.replace(base, **overrides)
        result, own, shared = variant_result(dataset, done, config, branch)
        if args.save_dir is not None:
            args.save_dir.mkdir(parents=True, exist_ok=True)
            result.write(args.save_dir / f"{setting}-{name}.parquet", overwrite=True)
        row = {"noise": setting, "variant": name, **score(result.to_pandas(), truth)}
        row["model test acc"] = done["test_acc"] if not branch else float("nan")
        row["minutes"] = (shared + own) / 60
        row["model"] = result.metadata["model"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=["worst", "rand1", "aggre", "sym-50"])
    names = [*VARIANTS, CLEANLAB]
    parser.add_argument("--variants", nargs="+", default=names, choices=names)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--subset", type=int, default=None, help="use a random subset of N images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    parser.add_argument("--json", type=Path, default=None, help="also dump rows as JSON here")
    parser.add_argument("--save-dir", type=Path, default=None, help="keep each report and trained state here")
    args = parser.parse_args()
    unknown = [s for s in args.settings if s not in HUMAN and s not in NOISE_SETTINGS]
    if unknown:
        parser.error(f"--settings {unknown[0]}: expected {', '.join((*HUMAN, *NOISE_SETTINGS))}")
    limit_threads()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings:
            rows += run_setting(setting, args, Path(tmp))
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = markdown_table(rows, columns)
    print(table)
    if not args.no_write:
        replace_section(
            "Audit quality: default vs baselines",
            f"`python benchmarks/audit_quality.py {' '.join(sys.argv[1:])}` on cifar10-dev/train "
            f"({args.subset or 10000} images), {args.epochs} epochs.\n\n{table}",
        )


if __name__ == "__main__":
    main()
