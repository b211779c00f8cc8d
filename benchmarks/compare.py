"""labelclean against the tools a user would pick instead (issues 4 and 7), side by side.

On cifar10-dev with injected noise (or any folder + noisy labels + truth), each method gets
the same network and the same epoch budget per training, and is scored with DESIGN.md's
figures:

    given             no cleaning
    labelclean        the audit (5 components, defaults)
    labelclean-loss2  its 2-component loss-only ablation (prior work)
    cleanlab-cv       K-fold cross-validated probabilities (K trainings of the same network),
                      cleanlab.filter.find_label_issues with default settings, the argmax of
                      the out-of-sample probabilities forced onto every flagged row
    cleanlab-cv-drop  the same flags used as cleanlab's docs advise: the flagged rows are
                      dropped (unlabeled), never relabeled; shares cleanlab-cv's trainings
    frozen-labelclean the fast audit: FGCM with a linear head on frozen EfficientNet-Lite0
                      embeddings (pip install 'labelclean[pretrained]')
    frozen-cleanlab   cleanlab's own image recipe on the same embeddings: 5-fold
                      cross-validated logistic regression, then find_label_issues, argmax
                      forced onto the flagged rows
    frozen-cleanlab-drop  the same, flagged rows dropped

A "-drop" row and its argmax row share one set of probabilities and the same flags, so their
detection figures and cleaned accuracy (which scores the argmax where a row is unlabeled)
agree; they differ in label precision and recall. Its minutes include the shared trainings.

cleanlab is a benchmark-only extra: pip install -e '.[bench]'.

Run by hand:  python benchmarks/compare.py --settings sym-20 sym-50 asym-40 [--methods ...]
                [--images DIR --labels noisy.csv --truth truth.csv]   (your own data)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import limit_threads, markdown_table, noisy_cifar, replace_section  # noqa: E402


def _frame(given: np.ndarray, flagged: np.ndarray, suggested: np.ndarray, names: list[str], *,
           drop: bool = False) -> pd.DataFrame:
    """A report-like frame for a flag-and-suggest method (cleanlab).

    Flagged rows are relabeled to ``suggested`` (unlabeled where it equals the given label),
    or, with ``drop`` (cleanlab's advice: remove the issues, don't trust the argmax), all
    unlabeled. ``suggested`` stays the pseudo label either way.
    """
    names_arr = np.asarray(names, dtype=object)
    relabel = flagged & (suggested != given) & (not drop)
    action = np.where(~flagged, "keep", np.where(relabel, "relabel", "unlabel"))
    clean = np.where(action == "unlabel", None, names_arr[np.where(relabel, suggested, given)])
    return pd.DataFrame({
        "given_label": names_arr[given], "action": action, "clean_label": clean,
        "pseudo_label": names_arr[suggested], "cluster": np.where(flagged, "flagged", "kept"),
    })


def method_given(ctx: dict) -> pd.DataFrame:
    g = ctx["dataset"].manifest.given_labels
    return _frame(g, np.zeros(len(g), bool), g, ctx["names"])


def _audit(ctx: dict, **overrides) -> pd.DataFrame:
    from labelclean.config import AuditConfig
    from labelclean.fgcm.audit import run_audit

    config = AuditConfig(seed=ctx["seed"], epochs=ctx["epochs"], warmup=ctx["warmup"], **overrides)
    return run_audit(ctx["dataset"], config).to_pandas()


def method_labelclean(ctx: dict) -> pd.DataFrame:
    return _audit(ctx)


def method_labelclean_loss2(ctx: dict) -> pd.DataFrame:
    return _audit(ctx, components=2)


def _find_issues(given: np.ndarray, probs: np.ndarray, names: list[str], *,
                 drop: bool = False) -> pd.DataFrame:
    from cleanlab.filter import find_label_issues

    flagged = find_label_issues(labels=given, pred_probs=probs)
    return _frame(given, flagged, probs.argmax(1), names, drop=drop)


def _shared(ctx: dict, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()`` once per data set: a method's argmax and drop rows share it. A reuse
    books the first run's seconds in ``ctx["reused_seconds"]`` so both rows show the cost."""
    if key in ctx:
        ctx["reused_seconds"] = ctx[f"{key}_seconds"]
        return ctx[key]
    t0 = time.perf_counter()
    ctx[key] = compute()
    ctx[f"{key}_seconds"] = time.perf_counter() - t0
    return ctx[key]


def out_of_fold_probs(ds, labels: np.ndarray, *, seed: int, epochs: int, warmup: int | None,
                      folds: int, cache: Path | None = None) -> tuple[np.ndarray, float]:
    """K trainings of the audit's network with plain cross-entropy on ``labels`` (manifest
    order): the out-of-fold softmax ``[N, C]`` of every sample, manifest order, and the
    seconds the trainings took. With ``cache`` (an .npz) each finished fold is saved with its
    time, and a rerun continues after the last one."""
    from labelclean.config import AuditConfig
    from labelclean.fgcm.audit import AuditRun
    from labelclean.training import lr_factor, predict_probs, train_epoch

    n = len(ds.manifest)
    config = AuditConfig(seed=seed, epochs=epochs, warmup=warmup)
    fold = np.random.default_rng(seed).permutation(n) % folds
    probs = np.zeros((n, len(ds.manifest.class_names)), dtype=np.float32)
    done, seconds = 0, 0.0
    if cache is not None and cache.exists():
        saved = np.load(cache)
        if saved["probs"].shape == probs.shape and int(saved["folds"]) == folds:
            probs, done, seconds = saved["probs"], int(saved["done"]), float(saved["seconds"])
            print(f"  {done} of {folds} folds from {cache}", flush=True)
    for f in range(done, folds):
        start = time.perf_counter()
        run = AuditRun(ds, config)  # works in canonical order; map back below
        fold_c, labels_c = fold[run.canon], np.asarray(labels)[run.canon]
        train = np.flatnonzero(fold_c != f)
        for epoch in range(config.epochs):
            for group in run.optimizer.param_groups:
                # run.config: the LR the audit's recipe resolves for this network (config.lr is None)
                group["lr"] = run.config.lr * lr_factor(epoch, epochs=config.epochs, schedule=config.lr_schedule)
            train_epoch(run.train_model, run.batches, train, labels_c[train], optimizer=run.optimizer,
                        scaler=run.scaler, batch_size=config.batch_size, generator=run.generator)
        held = np.flatnonzero(fold_c == f)
        probs[run.canon[held]] = predict_probs(run.model, run.batches, held, batch_size=512)
        seconds += time.perf_counter() - start
        print(f"  fold {f + 1}/{folds} done", flush=True)
        if cache is not None:
            np.savez(cache, probs=probs, done=f + 1, folds=folds, seconds=seconds)
    return probs, seconds


def method_cleanlab_cv(ctx: dict, *, drop: bool = False) -> pd.DataFrame:
    """K trainings of the audit's network with plain cross-entropy, out-of-fold softmax."""
    given = ctx["dataset"].manifest.given_labels
    probs = _shared(ctx, "cv_probs", lambda: out_of_fold_probs(
        ctx["dataset"], given, seed=ctx["seed"], epochs=ctx["epochs"], warmup=ctx["warmup"],
        folds=ctx["folds"])[0])
    return _find_issues(given, probs, ctx["names"], drop=drop)


def _embeddings(ctx: dict) -> np.ndarray:
    if "embeddings" not in ctx:
        from labelclean.config import AuditConfig
        from labelclean.fgcm.frozen import efficientnet_lite0_weights, embed_images

        config = AuditConfig(model="tf_efficientnet_lite0", weights=str(efficientnet_lite0_weights()))
        t0 = time.perf_counter()
        ctx["embeddings"] = embed_images(ctx["dataset"], config, flip=True)[0]
        ctx["embed_seconds"] = time.perf_counter() - t0
    return ctx["embeddings"]


def _frozen_audit(ctx: dict, **overrides) -> pd.DataFrame:
    from labelclean.config import AuditConfig
    from labelclean.fgcm.audit import run_audit
    from labelclean.fgcm.frozen import FrozenAuditRun, efficientnet_lite0_weights, frozen_config

    _embeddings(ctx)  # cached: the audit below reuses it
    config = frozen_config(AuditConfig(model="tf_efficientnet_lite0", weights=str(efficientnet_lite0_weights()),
                                       seed=ctx["seed"], epochs=ctx["frozen_epochs"], warmup=ctx["frozen_epochs"] // 4,
                                       lr=0.05, **overrides), flip=True)
    run = FrozenAuditRun(ctx["dataset"], config)
    return run_audit(ctx["dataset"], config, run=run).to_pandas()


def method_frozen_labelclean(ctx: dict) -> pd.DataFrame:
    return _frozen_audit(ctx)


def method_frozen_labelclean_loss2(ctx: dict) -> pd.DataFrame:
    return _frozen_audit(ctx, components=2)


def _frozen_cv_probs(ctx: dict) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _embeddings(ctx).astype(np.float32).mean(1)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    return cross_val_predict(model, x, ctx["dataset"].manifest.given_labels, cv=5,
                             method="predict_proba")


def method_frozen_cleanlab(ctx: dict, *, drop: bool = False) -> pd.DataFrame:
    probs = _shared(ctx, "frozen_probs", lambda: _frozen_cv_probs(ctx))
    return _find_issues(ctx["dataset"].manifest.given_labels, probs, ctx["names"], drop=drop)


METHODS: dict[str, Callable[[dict], pd.DataFrame]] = {
    "given": method_given,
    "labelclean": method_labelclean,
    "labelclean-loss2": method_labelclean_loss2,
    "cleanlab-cv": method_cleanlab_cv,
    "cleanlab-cv-drop": lambda ctx: method_cleanlab_cv(ctx, drop=True),
    "frozen-labelclean": method_frozen_labelclean,
    "frozen-labelclean-loss2": method_frozen_labelclean_loss2,
    "frozen-cleanlab": method_frozen_cleanlab,
    "frozen-cleanlab-drop": lambda ctx: method_frozen_cleanlab(ctx, drop=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=["sym-20", "sym-50", "asym-40"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--images", type=Path)
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--truth", type=Path)
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=None, help="[default: the audit's, by model]")
    parser.add_argument("--frozen-epochs", type=int, default=40)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--section", default="Comparison")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    limit_threads()
    from labelclean.data.images import load_dataset
    from labelclean.evaluate import cleaning_metrics, read_truth

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("custom", args.images, args.labels, None)] if args.images else [
            (s, *noisy_cifar(Path(tmp), s, seed=args.seed, subset=args.subset)) for s in args.settings]
        for setting, images, labels, truth in cases:
            dataset = load_dataset(images, labels)
            if truth is None:
                truth = read_truth(args.truth, pd.DataFrame({"path": dataset.manifest.paths}))
            ctx = {"dataset": dataset, "names": dataset.manifest.class_names, "seed": args.seed,
                   "epochs": args.epochs, "warmup": args.warmup, "folds": args.folds,
                   "frozen_epochs": args.frozen_epochs}
            for name in args.methods:
                t0 = time.perf_counter()
                frame = METHODS[name](ctx)
                seconds = time.perf_counter() - t0 + ctx.pop("reused_seconds", 0.0)
                m = cleaning_metrics(frame, truth)
                row = {"noise": setting, "method": name, "label precision": m["label_precision"],
                       "label recall": m["label_recall"], "detection P": m["detection_precision"],
                       "detection R": m["detection_recall"], "detection F1": m["detection_f1"],
                       "cleaned acc": m["cleaned_accuracy"], "flagged": m["flagged"] / m["n"],
                       "minutes": seconds / 60}
                if name.startswith("frozen") and "embed_seconds" in ctx:
                    row["embed minutes"] = ctx["embed_seconds"] / 60
                rows.append(row)
                print(json.dumps(row, default=str), flush=True)
    columns = ["noise", "method", "label precision", "label recall", "detection P", "detection R",
               "detection F1", "cleaned acc", "flagged", "minutes", "embed minutes"]
    table = markdown_table(rows, columns)
    print(table)
    if not args.no_write:
        replace_section(args.section, f"`python benchmarks/compare.py {' '.join(sys.argv[1:])}`: "
                        f"{len(dataset.manifest)} images; from-scratch methods: {args.epochs} epochs per "
                        f"training of the default network ({args.folds} trainings for cleanlab-cv); "
                        f"minutes are wall time on 2 CPU cores shared with other work.\n\n{table}")


if __name__ == "__main__":
    main()
