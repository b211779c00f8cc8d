"""Audit overhead: wall time per audit epoch / wall time per plain cross-entropy epoch.

Same model, data, device and batch size, measured side by side in one process (issue 3):

    plain CE        train_epoch over all N samples, nothing else
    audit (eval)    the paper's loop: clustering + one epoch on T + eval pass over all N
    audit (train)   clustering + one epoch on T keeping the training pass's softmax
                    (+ an eval pass only for the samples outside T)

Each audit epoch trains on |T| <= N samples, so the table also gives the time per sample
trained, which is the fair comparison when T is smaller than N.

Run by hand:  python benchmarks/overhead.py [--data ../shared/data] [--subset 10000] [--epochs 6]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_data_argument,
    data_folder,
    limit_threads,
    markdown_table,
    noisy_cifar,
    replace_section,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per arm (after warmup 2)")
    parser.add_argument("--noise", default="sym-20")
    parser.add_argument("--no-write", action="store_true")
    add_data_argument(parser)
    args = parser.parse_args()
    cifar = data_folder(args.data, "cifar10-dev", needs=("train.csv",))
    limit_threads()

    from labelclean.config import AuditConfig
    from labelclean.data.images import load_dataset
    from labelclean.fgcm.audit import AuditRun, run_audit
    from labelclean.training import train_epoch

    with tempfile.TemporaryDirectory() as tmp:
        images, csv, _ = noisy_cifar(Path(tmp), args.noise, subset=args.subset, cifar=cifar)
        dataset = load_dataset(images, csv)
    n = len(dataset.manifest)
    warmup = 2
    base = AuditConfig(epochs=warmup + args.epochs, warmup=warmup, seed=0)
    rows = []

    # plain cross-entropy: the same set-up, train_epoch over all samples only
    run = AuditRun(dataset, base)
    index = np.arange(n)
    times = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        train_epoch(
            run.train_model,
            run.batches,
            index,
            run.given,
            optimizer=run.optimizer,
            scaler=run.scaler,
            batch_size=base.batch_size,
            generator=run.generator,
        )
        times.append(time.perf_counter() - t0)
    plain = float(np.median(times))
    rows.append(
        {
            "arm": "plain CE",
            "s/epoch": plain,
            "ratio": 1.0,
            "samples trained": n,
            "ratio per sample": 1.0,
        }
    )

    for record in ("eval", "train"):
        config = dataclasses.replace(base, record=record)
        log: list[dict] = []
        run_audit(dataset, config, on_epoch=lambda s, line, log=log: log.append(line))
        after = [line for line in log if line["epoch"] > warmup]
        sec = float(np.median([line["seconds"] for line in after]))
        trained = float(np.mean([line["t_size"] for line in after]))
        rows.append(
            {
                "arm": f"audit --record {record}",
                "s/epoch": sec,
                "ratio": sec / plain,
                "samples trained": trained,
                "ratio per sample": (sec / trained) / (plain / n),
            }
        )
        print(rows[-1], flush=True)
    table = markdown_table(rows, list(rows[0]))
    print(table)
    if not args.no_write:
        replace_section(
            "Audit overhead",
            f"`python benchmarks/overhead.py {' '.join(sys.argv[1:])}`: {n} CIFAR images, "
            f"{args.noise} noise, model {run.model_name}, {run.precision.describe()}, median "
            f"of {args.epochs} epochs after a {warmup}-epoch warmup; the audit epoch includes "
            f"clustering. Targets: <= 1.35 (eval), <= 1.05 (train).\n\n{table}",
        )


if __name__ == "__main__":
    main()
