"""Audit quality on real CIFAR-10 images with injected noise (issue 3; paper Tables 7-8).

For each noise setting the warmup epochs run once and the variants continue from a copy of
that state, so they differ only where they are meant to (clustering and T after warmup):

    fgcm5        the default audit (5 components, --t-update latest, the default guard)
    fgcm5-paper  the paper's literal rules (--t-update union --guard none)
    fgcm5-noguard  5 components, latest T, no guard
    fgcm5-norelabel  the default with --no-relabel (NS unlabeled, not relabeled)
    loss2        the 2-component loss-only split of prior work (--components 2)

Run by hand:  python benchmarks/audit_quality.py [--settings sym-20 sym-50 asym-40] [--epochs 40]
Figures go to benchmarks/RESULTS.md, section "Audit quality".
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import NOISE_SETTINGS, limit_threads, markdown_table, noisy_cifar, replace_section  # noqa: E402

VARIANTS = {
    "fgcm5": {},
    "fgcm5-paper": {"t_update": "union", "guard": "none"},
    "fgcm5-noguard": {"guard": "none"},
    "loss2": {"components": 2},
    "fgcm5-norelabel": {"relabel": False},
    "fgcm5-record-train": {"record": "train"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(NOISE_SETTINGS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--subset", type=int, default=None, help="use a random subset of N images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    parser.add_argument("--json", type=Path, default=None, help="also dump rows as JSON here")
    parser.add_argument("--save-dir", type=Path, default=None, help="keep each report here")
    args = parser.parse_args()
    limit_threads()

    from labelclean.config import AuditConfig
    from labelclean.data.images import load_dataset
    from labelclean.evaluate import cleaning_metrics
    from labelclean.fgcm.audit import AuditInterrupted, run_audit
    from labelclean.models import default_model_name
    from labelclean.training import resolve_device

    base = AuditConfig(
        seed=args.seed,
        **{
            k: v for k, v in {"epochs": args.epochs, "warmup": args.warmup}.items() if v is not None
        },
    ).resolve(default_model_name(32, resolve_device("auto")))  # CIFAR is 32 px
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings:
            images, csv, truth = noisy_cifar(Path(tmp), setting, seed=args.seed, subset=args.subset)
            dataset = load_dataset(images, csv)
            given_precision = float(
                np.mean(
                    np.asarray(dataset.manifest.class_names)[dataset.manifest.given_labels] == truth
                )
            )
            t0 = time.perf_counter()
            try:
                done = {"epochs": 0}
                run_audit(
                    dataset,
                    base,
                    on_epoch=lambda state, line, done=done: done.update(epochs=state.epoch),
                    should_stop=lambda done=done: done["epochs"] >= base.warmup,
                )
                raise RuntimeError("warmup did not stop")
            except AuditInterrupted as stop:
                warm_state, warm_run = stop.state, stop.run
            warm_seconds = time.perf_counter() - t0
            for name in args.variants:
                config = dataclasses.replace(base, **VARIANTS[name])
                state, run = copy.deepcopy(warm_state), copy.deepcopy(warm_run)
                run.config = config
                t1 = time.perf_counter()
                result = run_audit(dataset, config, state=state, run=run)
                seconds = warm_seconds + time.perf_counter() - t1
                frame = result.to_pandas()
                if args.save_dir is not None:
                    args.save_dir.mkdir(parents=True, exist_ok=True)
                    result.write(args.save_dir / f"{setting}-{name}.parquet", overwrite=True)
                    np.save(args.save_dir / f"{setting}-truth.npy", truth.astype(str))
                m = cleaning_metrics(frame, truth)
                row = {
                    "noise": setting,
                    "variant": name,
                    "given precision": given_precision,
                    "label precision": m["label_precision"],
                    "label recall": m["label_recall"],
                    "flagged": float((frame["action"] != "keep").mean()),
                    "true noise": 1 - given_precision,
                    "detection P": m["detection_precision"],
                    "detection R": m["detection_recall"],
                    "relabel acc": m["relabel_accuracy"],
                    "cleaned acc": m["cleaned_accuracy"],
                    "minutes": seconds / 60,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    columns = list(rows[0])
    table = markdown_table(rows, columns)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if not args.no_write:
        replace_section(
            "Audit quality",
            f"`python benchmarks/audit_quality.py {' '.join(sys.argv[1:])}` on "
            f"cifar10-dev/train ({len(dataset.manifest)} images), {base.epochs} epochs "
            f"({base.warmup} warmup), model {result.metadata['model']}, "
            f"{result.metadata['precision']}. Minutes include the shared warmup.\n\n{table}",
        )


if __name__ == "__main__":
    main()
