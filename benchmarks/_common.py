"""Shared by the benchmark scripts: the CIFAR-10 dev data, noise injection, result tables."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
#: Where the benchmarks look for their data unless given ``--data DIR``.
DATA = REPO.parent / "shared" / "data"
CIFAR_DEV = DATA / "cifar10-dev"
RESULTS = REPO / "benchmarks" / "RESULTS.md"

#: The noise settings of the paper's Tables 7-8 plus the low-noise cases real data has.
NOISE_SETTINGS = {
    "sym-5": ("symmetric", 0.05),
    "sym-10": ("symmetric", 0.10),
    "sym-20": ("symmetric", 0.20),
    "sym-50": ("symmetric", 0.50),
    "sym-80": ("symmetric", 0.80),
    "asym-40": ("asymmetric", 0.40),
}


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """Give a benchmark the shared ``--data DIR`` option (resolve it with :func:`data_folder`)."""
    parser.add_argument(
        "--data",
        type=Path,
        default=DATA,
        metavar="DIR",
        help="the folder holding cifar10-dev/ (and imagenette-dev/); benchmarks/README.md says "
        "how to build it [default: ../shared/data]",
    )


def data_folder(data: Path, name: str, *, needs: tuple[str, ...] = ()) -> Path:
    """``data/name`` (or ``data`` itself when it is that folder), checked to hold ``needs``.

    Exits with one ``error:`` line naming the folder when it is missing, so a user without
    the shared data learns what to pass instead of reading a traceback.
    """
    folder = data if data.name == name and data.is_dir() else data / name
    if not folder.is_dir():
        sys.exit(
            f"error: no {name}/ folder in {data}: pass --data DIR, the folder that holds "
            f"{name}/ (benchmarks/README.md says how to build it)"
        )
    missing = [f for f in needs if not (folder / f).exists()]
    if missing:
        sys.exit(f"error: {folder} lacks {', '.join(missing)} (see benchmarks/README.md)")
    return folder


def limit_threads() -> None:
    """One thread per core: this machine has two."""
    import torch

    torch.set_num_threads(int(os.environ.get("LABELCLEAN_THREADS", os.cpu_count() or 2)))


#: Label sets built from crowd.csv, whose k-th vote of an image is CIFAR-10N's random_label{k}:
#: rand2 / rand3 (18% wrong) and worst2, a wrong one of those two votes where there is one (31%).
#: Other people's labels of the same images: a check on rules chosen on the three files above.
CROWD_SETS = ("rand2", "rand3", "worst2")
#: The CIFAR-10N human label sets of cifar10-dev (worst 41% wrong, rand1 18%, aggre 9%).
HUMAN = ("worst", "rand1", "aggre", *CROWD_SETS)


def crowd_label_set(root: Path, name: str, truth: pd.Series) -> pd.DataFrame:
    """``path,label`` of a :data:`CROWD_SETS` set from ``root/crowd.csv``, in train.csv's order."""
    crowd = pd.read_csv(root / "crowd.csv")
    crowd["vote"] = crowd.groupby("path").cumcount() + 1
    votes = crowd.pivot(index="path", columns="vote", values="label").reindex(truth.index)
    short = votes.index[votes.reindex(columns=[2, 3]).isna().any(axis=1)]
    if len(short):
        sys.exit(f"error: {root / 'crowd.csv'} has fewer than three votes for {short[0]}")
    second, third = votes[2], votes[3]
    label = {"rand2": second, "rand3": third, "worst2": second.where(second != truth, third)}[name]
    return label.rename("label").rename_axis("path").reset_index()


def human_labels(
    workdir: Path, cifar: Path, name: str, *, seed: int = 0, subset: int | None = None
) -> tuple[Path, Path, np.ndarray]:
    """(images root, labels csv, truth names) for a CIFAR-10N label set of ``cifar``."""
    source = "crowd.csv" if name in CROWD_SETS else f"labels_{name}.csv"
    root = data_folder(cifar, "cifar10-dev", needs=(source, "train.csv"))
    truth = pd.read_csv(root / "train.csv").set_index("path")["label"]
    given = crowd_label_set(root, name, truth) if name in CROWD_SETS else pd.read_csv(root / source)
    if subset is not None and subset < len(given):
        keep = np.sort(np.random.default_rng(seed).choice(len(given), subset, replace=False))
        given = given.iloc[keep]
    workdir.mkdir(parents=True, exist_ok=True)
    csv = workdir / f"labels-{name}.csv"
    given.to_csv(csv, index=False)
    return root, csv, truth.loc[given["path"]].to_numpy(dtype=str)


def labelled_cifar(
    workdir: Path, setting: str, *, seed: int = 0, subset: int | None = None, cifar: Path = CIFAR_DEV
) -> tuple[Path, Path, np.ndarray]:
    """A human label set (:data:`HUMAN`) or injected noise (:data:`NOISE_SETTINGS`)."""
    if setting in HUMAN:
        return human_labels(workdir, cifar, setting, seed=seed, subset=subset)
    return noisy_cifar(workdir, setting, seed=seed, subset=subset, cifar=cifar)


def noisy_cifar(
    workdir: Path,
    setting: str,
    *,
    seed: int = 0,
    subset: int | None = None,
    cifar: Path = CIFAR_DEV,
) -> tuple[Path, Path, np.ndarray]:
    """Write ``labels.csv`` with injected noise for ``cifar``/train; return (images, csv, truth).

    ``cifar`` is a cifar10-dev folder, e.g. ``data_folder(args.data, "cifar10-dev")``.
    """
    from labelclean.data.manifest import read_manifest
    from labelclean.evaluate import corrupt_labels

    images = data_folder(cifar, "cifar10-dev", needs=("train.csv",))
    manifest = read_manifest(images, images / "train.csv")
    keep = np.arange(len(manifest))
    if subset is not None and subset < len(manifest):
        keep = np.sort(np.random.default_rng(seed).choice(len(manifest), subset, replace=False))
    truth = manifest.given_labels[keep]
    noise, rate = NOISE_SETTINGS[setting]
    noisy = corrupt_labels(truth, manifest.class_names, noise=noise, rate=rate, seed=seed)
    names = np.asarray(manifest.class_names)
    workdir.mkdir(parents=True, exist_ok=True)
    csv = workdir / f"labels-{setting}.csv"
    pd.DataFrame({"path": [manifest.paths[i] for i in keep], "label": names[noisy]}).to_csv(
        csv, index=False
    )
    return images, csv, names[truth]


def replace_section(title: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the ``## title`` section of RESULTS.md with ``body``."""
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmark results\n\nWritten by the scripts in this folder; each section says how it was made.\n"
    )
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(section + "\n", text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    path.write_text(text)


def publish(title: str, rows: list[dict], columns: list[str], about: str, *, write: bool) -> str:
    """Print the rows as a table and, with ``write``, make it RESULTS.md's ``## title``.

    The section opens with the command line that made it, so anyone can run it again.
    """
    table = markdown_table(rows, columns)
    print(table)
    if write:
        command = f"python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}"
        replace_section(title, f"`{command}`: {about}\n\n{table}")
    return table


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """Rows of dicts -> a Markdown table with the given columns."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
