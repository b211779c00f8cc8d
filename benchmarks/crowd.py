"""Crowd votes (issue 16): labelclean's final labels vs the aggregators a team would use.

On the CIFAR-10N dev crowd (cifar10-dev/crowd.csv: every human vote, three per image; truth
train.csv), each method gives one label per image, scored against the truth:

    majority vote     the most voted class, ties at random (CIFAR-10N's "aggre" labels)
    dawid-skene       plain Dawid-Skene EM, every annotator's confusion from their votes only
    consensus         labelclean's consensus before the audit (annotators shrunk to the crowd)
    labelclean        the audit on the votes: consensus -> FGCM -> network + votes combined
    single-label      labelclean's audit of the majority-vote labels (what it did before);
                      its final label is clean_label, or the pseudo label where unlabeled
    cleanlab          cleanlab.multiannotator.get_label_quality_multiannotator (CROWDLAB) with
                      out-of-fold probabilities of the same network: K cross-entropy
                      trainings on the majority-vote labels (cleanlab's recipe)

"annotator rho" is Spearman's rank correlation between a method's per-annotator score and the
annotator's true accuracy (majority vote / Dawid-Skene / consensus: agreement with their own
labels weighted by their posterior; cleanlab: annotator_quality; labelclean:
estimated_accuracy). Wall times include reading the votes; under shared load they are an
upper bound, so the audits also report CPU minutes (process time, every thread), whose ratio
("cpu_vs_single") does not depend on what else runs; "crowd_overhead" is the crowd audit's
wall time over the same minus its two crowd steps (consensus EM, final combination).
"final label accuracy" is the label recall: labelclean counts an image it leaves unlabeled as
wrong; "label precision" is the accuracy over the images given a label (the same
for the methods that label every image).

Run by hand:  nice -n 10 python benchmarks/crowd.py --data /work/shared/data [--subset 2000]
              [--methods ...] [--folds 5] [--epochs 40] [--probs-cache oof.npz]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import limit_threads, markdown_table, replace_section  # noqa: E402
from compare import out_of_fold_probs  # noqa: E402

METHODS = ("majority-vote", "dawid-skene", "consensus", "labelclean", "single-label", "cleanlab")


def _inputs(data: Path, workdir: Path, subset: int | None, seed: int) -> tuple[Path, Path, Path]:
    """(images, crowd.csv, truth.csv), a random subset of the images with all their votes."""
    dev = data / "cifar10-dev"
    crowd, truth = dev / "crowd.csv", dev / "train.csv"
    if subset is None:
        return dev, crowd, truth
    votes, clean = pd.read_csv(crowd, dtype=str), pd.read_csv(truth, dtype=str)
    keep = set(np.random.default_rng(seed).choice(clean["path"], subset, replace=False))
    votes[votes["path"].isin(keep)].to_csv(workdir / "crowd.csv", index=False)
    clean[clean["path"].isin(keep)].to_csv(workdir / "truth.csv", index=False)
    return dev, workdir / "crowd.csv", workdir / "truth.csv"


def _rho(score: pd.Series, true_accuracy: pd.Series) -> float:
    joined = pd.concat([score.rename("s"), true_accuracy.rename("t")], axis=1, join="inner")
    return float(joined["s"].corr(joined["t"], method="spearman"))


def _posterior_agreement(votes, posterior: np.ndarray) -> pd.Series:
    right = np.bincount(votes.annotator, weights=posterior[votes.sample, votes.label],
                        minlength=votes.n_annotators)
    return pd.Series(right / np.maximum(votes.per_annotator(), 1), index=list(votes.annotator_names))


def _audit(images: Path, labels: Path):
    from labelclean.config import AuditConfig
    from labelclean.data.images import load_dataset
    from labelclean.fgcm.audit import run_audit

    dataset = load_dataset(images, labels)
    return dataset, run_audit(dataset, AuditConfig(seed=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40, help="per cleanlab training (the audit's default)")
    parser.add_argument("--probs-cache", type=Path, default=None, help="save cleanlab's out-of-fold probs fold by fold (.npz) and reuse them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--section", default="Crowd votes")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    limit_threads()
    from labelclean.crowd.model import dawid_skene, fit_crowd, majority_vote
    from labelclean.crowd.scoring import annotator_truth
    from labelclean.data.manifest import read_manifest
    from labelclean.evaluate import read_truth

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        images, crowd_csv, truth_csv = _inputs(args.data, Path(tmp), args.subset, args.seed)
        t0 = time.perf_counter()
        manifest = read_manifest(images, crowd_csv)
        read_seconds = time.perf_counter() - t0
        votes, names = manifest.votes, np.asarray(manifest.class_names, dtype=object)
        truth = read_truth(truth_csv, pd.DataFrame({"path": manifest.paths}))
        truth_code = pd.Categorical(truth, categories=list(names)).codes
        per_vote = pd.DataFrame({"row": votes.sample, "annotator": np.asarray(votes.annotator_names)[votes.annotator],
                                 "vote": names[votes.label]})
        true_acc = annotator_truth(per_vote, truth).set_index("annotator")["true_accuracy"]

        def add(method: str, labels: np.ndarray, seconds: float, rho: float | None, **extra) -> None:
            labels = np.asarray(labels)
            right, labeled = labels == truth_code, labels >= 0  # -1: left unlabeled
            row = {"method": method, "label precision": float(right[labeled].mean()),
                   "final label accuracy": float(right.mean()), "annotator rho": rho,
                   "minutes": seconds / 60, **extra}
            rows.append(row)
            print(json.dumps(row, default=str), flush=True)

        mv = majority_vote(votes, seed=args.seed)
        if "majority-vote" in args.methods:
            t0 = time.perf_counter()
            labels = majority_vote(votes, seed=args.seed)
            onehot = np.eye(len(names))[labels]
            add("majority vote", labels, time.perf_counter() - t0, _rho(_posterior_agreement(votes, onehot), true_acc))
        for method, fit in (("dawid-skene", dawid_skene), ("consensus", fit_crowd)):
            if method in args.methods:
                t0 = time.perf_counter()
                post = fit(votes).posterior
                add(method, post.argmax(1), time.perf_counter() - t0, _rho(_posterior_agreement(votes, post), true_acc))
        single_seconds = single_cpu = None
        if "single-label" in args.methods:
            mv_csv = Path(tmp) / "majority.csv"
            pd.DataFrame({"path": manifest.paths, "label": names[mv]}).to_csv(mv_csv, index=False)
            t0, c0 = time.perf_counter(), time.process_time()
            _, result = _audit(images, mv_csv)
            single_seconds, single_cpu = time.perf_counter() - t0, time.process_time() - c0
            f = result.to_pandas()
            final = np.where(f["action"] == "unlabel", f["pseudo_label"], f["clean_label"])
            add("labelclean, single-label audit of the majority vote", pd.Categorical(final, categories=list(names)).codes,
                single_seconds, None, cpu_minutes=single_cpu / 60)
        if "labelclean" in args.methods:
            t0, c0 = time.perf_counter(), time.process_time()
            _, result = _audit(images, crowd_csv)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            f = result.to_pandas()
            est = result.annotators.set_index("annotator")["estimated_accuracy"]
            labeled = f["action"] != "unlabel"
            # The crowd audit is the single-label audit of the consensus plus two crowd steps:
            # the consensus (when the votes are read) and the final combination.
            t1 = time.perf_counter()
            fit_crowd(votes)
            crowd_seconds = time.perf_counter() - t1 + result.metadata["crowd"]["seconds"]
            add("labelclean (votes + audit)", pd.Categorical(f["clean_label"], categories=list(names)).codes,
                seconds, _rho(est, true_acc), unlabeled=int((~labeled).sum()),
                network_weight=result.metadata["crowd"]["network_weight"], crowd_seconds=crowd_seconds,
                time_vs_single=seconds / single_seconds if single_seconds else None,
                cpu_minutes=cpu / 60, cpu_vs_single=cpu / single_cpu if single_seconds else None,
                crowd_overhead=seconds / (seconds - crowd_seconds))
        if "cleanlab" in args.methods:
            from cleanlab.multiannotator import get_label_quality_multiannotator

            from labelclean.data.images import load_dataset

            cached = args.probs_cache is not None and args.probs_cache.exists()
            dataset = load_dataset(images, crowd_csv)
            probs, train_seconds = out_of_fold_probs(dataset, mv, seed=args.seed, epochs=args.epochs,
                                                     warmup=None, folds=args.folds, cache=args.probs_cache)
            wide = per_vote.assign(code=votes.label).pivot(index="row", columns="annotator", values="code")
            wide = wide.reindex(np.arange(len(manifest.paths)))
            t1 = time.perf_counter()
            out = get_label_quality_multiannotator(wide, probs, verbose=False)
            call_seconds = time.perf_counter() - t1
            quality = out["annotator_stats"]["annotator_quality"]
            add("cleanlab multiannotator (CROWDLAB), out-of-fold probs", out["label_quality"]["consensus_label"].to_numpy(),
                train_seconds + call_seconds + read_seconds, _rho(quality, true_acc),
                probs_cached=cached, oof_accuracy=float((probs.argmax(1) == truth_code).mean()))
    columns = ["method", "label precision", "final label accuracy", "annotator rho", "minutes", "cpu_minutes",
               "unlabeled", "time_vs_single", "cpu_vs_single", "crowd_overhead"]
    table = markdown_table(rows, columns)
    print(table)
    if not args.no_write:
        n = len(manifest.paths)
        replace_section(args.section, f"`python benchmarks/crowd.py {' '.join(sys.argv[1:])}`: {n} CIFAR-10N dev images, "
                        f"{len(votes)} human votes by {votes.n_annotators} annotators; truth train.csv. labelclean and the "
                        f"single-label audit: default settings; cleanlab: {args.folds} trainings of the same network "
                        f"({args.epochs} epochs each) on the majority-vote labels. Minutes are wall time on 2 CPU cores "
                        f"shared with other work (upper bounds).\n\n{table}")


if __name__ == "__main__":
    main()
