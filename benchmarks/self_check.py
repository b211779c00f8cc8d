"""The audit's self-check against the truth, on saved audits (README "How it works").

For each saved run (a folder holding ``report.parquet``, and for a network audit the
``report.network.safetensors`` beside it) the script takes the report's own ``self_check``
when it has one, else computes it post hoc exactly as the audit does at its end (the
cross-fitted probe on the saved network's penultimate features,
:func:`labelclean.fgcm.selfcheck.estimate_right`), and compares it with the truth: the share
of given labels that are right, and of cleaned labels (``clean_label``, or the guess where
unlabeled, as ``labelclean evaluate`` counts them).

    python benchmarks/self_check.py --runs RUNS [--data ../shared/data] [--write]

``RUNS`` holds one folder per setting: ``worst``, ``rand1``, ``aggre``, ``crowd`` (10,000
CIFAR-10N images, default audit), the same with ``2500`` (the first 2,500 images; their
manifests ``RUNS/worst2500.csv`` ..., the crowd's votes of those images), ``short12`` (the first 1,500 "worst" images,
``--epochs 12``), ``imagenette`` (imagenette-dev at 40% symmetric noise, ``--frozen``;
its truth in ``RUNS/imagenette_truth.csv``; a frozen report from before the self-check is
read with its last checkpoint, kept as ``RUNS/imagenette/keep/last.pt``) and ``demo`` (``labelclean demo --out
RUNS/demo``). A missing folder is skipped and said so. Rows go to
``benchmarks/results/self_check.csv`` (setting, method, metric, value, wall_s, machine,
commit) and, with ``--write``, to RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, add_data_argument, data_folder, limit_threads, publish  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "self_check.csv"


def settings(runs: Path, data: Path) -> list[tuple[str, Path, Path, Path, Path]]:
    """``(setting, run folder, images, manifest, truth csv)`` of every known setting."""
    rows = []
    cifar = data_folder(data, "cifar10-dev")
    for name in ("worst", "rand1", "aggre", "crowd"):
        manifest = cifar / ("crowd.csv" if name == "crowd" else f"labels_{name}.csv")
        rows.append((name, runs / name, cifar, manifest, cifar / "train.csv"))
    for name in ("worst", "rand1", "aggre", "crowd"):  # the first 2,500 images, default audit
        rows.append(
            (
                f"{name}2500",
                runs / f"{name}2500",
                cifar,
                runs / f"{name}2500.csv",
                cifar / "train.csv",
            )
        )
    rows.append(("short12", runs / "short12", cifar, runs / "worst1500.csv", cifar / "train.csv"))
    imagenette = data_folder(data, "imagenette-dev")
    rows.append(
        (
            "imagenette",
            runs / "imagenette",
            imagenette,
            runs / "imagenette_sym40.csv",
            runs / "imagenette_truth.csv",
        )
    )
    demo = runs / "demo"
    rows.append(("demo", demo, demo / "images", demo / "labels.csv", demo / "truth.csv"))
    return rows


def post_hoc(report: Path, rep, images: Path, manifest: Path) -> dict:
    """The self-check of a network audit whose report predates it, as the audit computes it."""
    import torch
    from safetensors.torch import load_file

    from labelclean.data.images import load_dataset
    from labelclean.fgcm import selfcheck as sc
    from labelclean.models import create_model
    from labelclean.training import ImageBatches, Precision

    md, names = rep.metadata, list(rep.metadata["class_names"])
    data = load_dataset(images, manifest, image_size=md["image_size"])
    if list(data.manifest.paths) != list(rep.frame["path"]):
        raise SystemExit(f"error: {manifest} is not the manifest of {report}")
    model = create_model(md["architecture"], len(names))
    model.load_state_dict(load_file(str(report.parent / md["network"]["file"])))
    norm = md["normalization"]
    precision = Precision.choose(torch.device("cpu"), amp=False)
    batches = ImageBatches(data.cache.images, norm["mean"], norm["std"], precision)
    seed = int(md.get("seed", 0))
    rows = sc.check_rows(len(rep.frame), len(names), seed)
    features = sc.penultimate_features(model, batches, rows, batch_size=256)
    given, cleaned = sc.report_codes(rep.frame, names)
    probs = sc.cross_fitted_probe(features, given[rows], len(names), seed=seed)
    return sc.estimate_right(probs, given[rows], cleaned[rows], seed=seed, method=sc.PROBE)


def post_hoc_frozen(checkpoint: Path, rep) -> dict:
    """A frozen audit's self-check from its last checkpoint: the heads' recordings (history)."""
    import torch

    from labelclean.fgcm import selfcheck as sc

    history = torch.load(checkpoint, map_location="cpu", weights_only=False)["audit"]["history"]
    late = history.get("late_sums")
    sums = late if late is not None and float(late.sum()) > 0 else history["sums"]
    sums = sums.numpy().astype(np.float64)
    canon = np.argsort(np.asarray(rep.frame["path"].tolist(), dtype=object), kind="stable")
    probs = np.empty_like(sums)
    probs[canon] = sums / sums.sum(1, keepdims=True)  # canonical (path) order -> report order
    names, seed = list(rep.metadata["class_names"]), int(rep.metadata.get("seed", 0))
    rows = sc.check_rows(len(rep.frame), len(names), seed)
    given, cleaned = sc.report_codes(rep.frame, names)
    return sc.estimate_right(probs[rows], given[rows], cleaned[rows], seed=seed, method=sc.HEADS)


def measure(setting: str, folder: Path, images: Path, manifest: Path, truth: Path) -> list[dict]:
    """The rows of one setting: truth and estimate of the given and cleaned labels' accuracy."""
    from labelclean.fgcm.selfcheck import read_check, report_codes
    from labelclean.report.parquet import read_report

    report = folder / "report.parquet"
    rep = read_report(report)
    start = time.perf_counter()
    check = read_check(rep.metadata)
    source = "report"
    if check is None:
        kept = folder / "keep" / "last.pt"
        if rep.metadata.get("network"):
            check, source = post_hoc(report, rep, images, manifest), "post hoc"
        elif kept.is_file():
            check, source = post_hoc_frozen(kept, rep), "post hoc"
        else:
            print(f"{setting}: {report} has no self-check and no network to compute it from")
            return []
    wall = time.perf_counter() - start
    names = list(rep.metadata["class_names"])
    given, cleaned = report_codes(rep.frame, names)
    code = {name: k for k, name in enumerate(names)}
    true_of = pd.read_csv(truth, dtype=str).set_index("path")["label"]
    true = rep.frame["path"].map(true_of).map(code).to_numpy()
    rows = []
    for metric, labels, key in (
        ("given", given, "given_right"),
        ("cleaned", cleaned, "cleaned_right"),
    ):
        entry = check[key]
        right = float((labels == true).mean())
        for what, value in (
            (f"{metric}_true", right),
            (f"{metric}_estimate", entry["estimate"]),
            (f"{metric}_low", entry["low"]),
            (f"{metric}_high", entry["high"]),
            (f"{metric}_error", entry["estimate"] - right),
        ):
            rows.append(
                {
                    "setting": setting,
                    "method": f"{check.get('method', '')} ({source})",
                    "metric": what,
                    "value": round(float(value), 4),
                    "wall_s": round(wall, 1),
                }
            )
    for model, figures in (check.get("models") or {}).items():  # each noise model's reading
        for metric, right in (("given", rows[0]["value"]), ("cleaned", rows[5]["value"])):
            value = float(figures[f"{metric}_right"])
            for what, v in ((f"{metric}_estimate", value), (f"{metric}_error", value - right)):
                rows.append(
                    {
                        "setting": setting,
                        "method": f"{model} model ({source})",
                        "metric": what,
                        "value": round(v, 4),
                        "wall_s": round(wall, 1),
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder of the saved runs")
    parser.add_argument("--only", nargs="*", help="settings to measure [default: all found]")
    parser.add_argument("--write", action="store_true", help="also update RESULTS.md")
    add_data_argument(parser)
    args = parser.parse_args()
    limit_threads()
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    machine = f"{platform.machine()} {platform.node()}"
    rows: list[dict] = []
    for setting, folder, images, manifest, truth in settings(args.runs, args.data):
        if args.only and setting not in args.only:
            continue
        if not (folder / "report.parquet").is_file():
            print(f"{setting}: no saved run in {folder}; not measured")
            continue
        rows += [
            {**r, "machine": machine, "commit": commit}
            for r in measure(setting, folder, images, manifest, truth)
        ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    columns = ["setting", "method", "metric", "value", "wall_s", "machine", "commit"]
    with open(OUT, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    wide = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == setting]
        values = {r["metric"]: r["value"] for r in mine if "model (" not in r["method"]}
        for r in mine:
            if "model (" in r["method"] and r["metric"].endswith("estimate"):
                values[f"{r['metric']}_{r['method'].split()[0]}"] = r["value"]
        wide.append({"setting": setting, **values})
    cols = ["setting", "given_true", "given_estimate", "given_error"]
    cols += ["cleaned_true", "cleaned_estimate", "cleaned_error"]
    cols += ["given_estimate_calibrated", "cleaned_estimate_calibrated"]
    publish(
        "The audit's self-check against the truth",
        wide,
        cols,
        "the self-check's estimates of the share of right given and cleaned labels, against "
        "the truth, on saved audits (benchmarks/self_check.py).",
        write=args.write,
    )
    print(f"rows: {OUT}")


if __name__ == "__main__":
    main()
