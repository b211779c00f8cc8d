"""Does finetune give a model as good as clean data? (issue 5) Test accuracy, side by side.

On cifar10-dev (10k train, 2k test) with injected noise or a CIFAR-10N human label set
(worst, rand1, aggre), the same network and epoch budget:

    CE on noisy labels         plain cross-entropy on the given (noisy) labels
    mixup on noisy labels      cross-entropy with input mixup on the given labels (--mixup)
    CE on the audit's labels   cross-entropy on the audit's labeled set only
    finetune                   the paper's mixed semi-training on the audited report, from a
                               fresh network (the paper; ``--init scratch``)
    finetune from the audit    the same, starting from the network the audit trained (the
                               default since it is saved beside the report; ``--init audit``)
    CE noisy from the audit    cross-entropy on the noisy labels from that same start
    CE on clean labels         the ceiling (truth labels, not available to users)

The audit and finetune arms run finetune's recipe, with its input mixup on the labeled batch
(``--mixup``; finetune's default for a network is 0); the noisy and clean arms are plain
cross-entropy.

Run by hand:  python benchmarks/finetune.py [--setting sym-50|worst] [--epochs 30] [--mu 2]
                [--model air_cnn] [--report R] [--subset N] [--arms noisy audit finetune clean]
``--report R`` reuses an audit; the arms from its network read ``R``'s
``.network.safetensors`` (``--network FILE`` names another copy of it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CIFAR_DEV, labelled_cifar, limit_threads, publish  # noqa: E402

#: The arms, in the order they train.
ARMS = ("noisy", "noisy-mixup", "audit", "finetune", "finetune-audit", "noisy-audit", "clean")
#: Arms that start from the audit's network.
FROM_AUDIT = ("finetune-audit", "noisy-audit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", default="sym-50")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--audit-epochs", type=int, default=40)
    parser.add_argument("--mu", type=int, default=2, help="paper: 7; 2 keeps a CPU run short")
    parser.add_argument("--report", type=Path, default=None, help="reuse an audit report")
    parser.add_argument("--subset", type=int, default=None, help="train on a random subset of N images")
    parser.add_argument("--model", default="air_cnn", help="every arm's network (the default audit's)")
    parser.add_argument("--arms", nargs="+", default=[a for a in ARMS if a not in ("noisy-mixup", "noisy-audit")], choices=ARMS, help="which arms to train")
    parser.add_argument("--network", type=Path, default=None, help="the audit's network (default: beside --report)")
    parser.add_argument("--mixup", type=float, default=None, help="finetune's --mixup (default: finetune's, 0 for a network)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    limit_threads()
    with tempfile.TemporaryDirectory() as scratch:  # the label file and the audit's network
        compare_arms(args, parser, Path(scratch))


def compare_arms(args: argparse.Namespace, parser: argparse.ArgumentParser, scratch: Path) -> None:
    """Train every requested arm on the same images and publish the table."""
    from labelclean.config import AuditConfig, FinetuneConfig
    from labelclean.data.images import load_dataset
    from labelclean.fgcm.audit import run_audit
    from labelclean.fgcm.finetune import run_finetune, split_report

    images, csv, truth = labelled_cifar(scratch, args.setting, subset=args.subset)
    train = load_dataset(images, csv)
    test = load_dataset(CIFAR_DEV, CIFAR_DEV / "test.csv")
    names = train.manifest.class_names
    test_labels = np.array([names.index(test.manifest.class_names[g]) for g in test.manifest.given_labels])
    code = {n: i for i, n in enumerate(names)}
    truth_codes = np.array([code[t] for t in truth])
    t0 = time.perf_counter()
    network = args.network
    if args.report is None:
        result = run_audit(train, AuditConfig(epochs=args.audit_epochs))
        frame = result.to_pandas()
        if result.network is not None:
            from safetensors.torch import save_file

            network = scratch / "audit.network.safetensors"
            save_file(result.network, network)
    else:
        from labelclean.report.parquet import read_report

        report = read_report(args.report)
        frame = report.frame
        if network is None and report.metadata.get("network"):
            network = args.report.parent / report.metadata["network"]["file"]
    if network is None and set(args.arms) & set(FROM_AUDIT):
        parser.error("the arms from the audit's network need --network (the report names none)")
    audit_minutes = (time.perf_counter() - t0) / 60
    rows_l, labels_l, rows_u = split_report(frame, names)
    common = dict(n_classes=len(names), model_name=args.model, mean=list(train.cache.mean),
                  std=list(train.cache.std), crop_padding=4, hflip=True,
                  test=(np.ascontiguousarray(test.cache.images), test_labels))
    all_rows = np.arange(len(train.manifest))
    mixup = FinetuneConfig(mixup=args.mixup).labeled_mixup(frozen=False)
    none = np.array([], np.int64)
    given = train.manifest.given_labels
    arms = {
        "noisy": ("CE on noisy labels", all_rows, given, none, 0, 0.0),
        "noisy-mixup": (f"mixup {mixup:g} on noisy labels", all_rows, given, none, 0, mixup),
        "audit": (f"CE on the audit's labeled set (mixup {mixup:g})", rows_l, labels_l, rows_u, 0, mixup),  # rows_u: same steps, unused
        "finetune": (f"finetune (mu={args.mu}, mixup {mixup:g})", rows_l, labels_l, rows_u, args.mu, mixup),
        "finetune-audit": (f"finetune from the audit's network (mu={args.mu}, mixup {mixup:g})", rows_l, labels_l, rows_u, args.mu, mixup),
        "noisy-audit": ("CE on noisy labels from the audit's network", all_rows, given, none, 0, 0.0),
        "clean": ("CE on clean labels (ceiling)", all_rows, truth_codes, none, 0, 0.0),
    }
    results = []
    for arm in args.arms:
        name, rows, labels, unlabeled, mu, arm_mixup = arms[arm]
        t1 = time.perf_counter()
        cfg = FinetuneConfig(epochs=args.epochs, mu=mu, lambda_m=1.0 if mu else 0.0, eval_every=args.epochs,
                             mixup=arm_mixup, weights=str(network) if arm in FROM_AUDIT else None)
        res = run_finetune(train.cache.images, rows, labels, unlabeled, cfg, **common)
        results.append({"arm": name, "labeled": len(rows), "unlabeled": len(unlabeled) if mu else 0,
                        "test accuracy": res.test_accuracy, "minutes": (time.perf_counter() - t1) / 60})
        print(results[-1], flush=True)
    publish("Finetune", results, list(results[0]),
            f"{args.setting} noise on {len(train.manifest)} cifar10-dev/train images, test on cifar10-dev/test (2,000), "
            f"{args.model}, {args.epochs} epochs per arm; the audit took {audit_minutes:.1f} min.", write=not args.no_write)


if __name__ == "__main__":
    main()
