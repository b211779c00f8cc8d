"""Shared by the benchmark scripts: the CIFAR-10 dev data, noise injection, result tables."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CIFAR_DEV = REPO.parent / "shared" / "data" / "cifar10-dev"
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


def limit_threads() -> None:
    """One thread per core: this machine has two."""
    import torch

    torch.set_num_threads(int(os.environ.get("LABELCLEAN_THREADS", os.cpu_count() or 2)))


def noisy_cifar(
    workdir: Path, setting: str, *, seed: int = 0, subset: int | None = None
) -> tuple[Path, Path, np.ndarray]:
    """Write ``labels.csv`` with injected noise for cifar10-dev/train; return (images, csv, truth)."""
    from labelclean.data.manifest import read_manifest
    from labelclean.evaluate import corrupt_labels

    images = CIFAR_DEV
    manifest = read_manifest(images, CIFAR_DEV / "train.csv")
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
