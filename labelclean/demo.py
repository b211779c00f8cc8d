"""The built-in example: scikit-learn's digits with injected label noise, audited end to end.

Real images (1,797 handwritten digits, 8x8), offline, small enough to audit in well under
two minutes on two CPU cores, and with known truth, so the demo can show how well the wrong
labels were found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelclean._io import MARKER, check_output_dir, marker_text
from labelclean.config import AuditConfig
from labelclean.errors import ConfigError
from labelclean.fgcm.audit import EpochHook
from labelclean.progress import Progress

#: What the demo writes in its folder (and may replace there on the next run).
DEMO_FILES = (
    "images", "labels.csv", "truth.csv", "report.parquet", "report.network.safetensors",
    "report.html", "report.parquet.work",
    "report.work",  # the name before the work folder was named after the whole report name
)  # fmt: skip


@dataclass
class DemoResult:
    """Where the demo wrote its files and how well the audit did."""

    folder: Path
    images: Path
    labels_csv: Path
    truth_csv: Path
    report: Path
    metrics: dict[str, Any]


#: Digits are 8x8 and not mirror-symmetric: no flips; a 1-pixel crop jitter. The small
#: network learns digits well (its relabels were 99.6% right), so relabeling is on.
DEMO_CONFIG = {
    "epochs": 30,
    "warmup": 8,
    "hflip": False,
    "crop_padding": 1,
    "lr": 0.05,
    "relabel": True,
}


def check_noise_rate(noise_rate: float) -> None:
    """Refuse a noise rate that is not a fraction, before anything is written."""
    if not 0 <= noise_rate < 1:
        raise ConfigError(f"--noise {noise_rate}: expected a fraction in [0, 1), e.g. 0.3")


def write_demo_data(
    folder: Path, *, noise_rate: float = 0.3, seed: int = 0
) -> tuple[Path, Path, Path]:
    """Write the digits as PNGs, a noisy ``labels.csv`` and the clean ``truth.csv``.

    ``folder`` must be new, empty or an earlier demo's (it carries the demo marker): the
    demo replaces its own files and never a folder the user owns.
    """
    from labelclean.data.digits import write_digits
    from labelclean.data.manifest import read_manifest
    from labelclean.evaluate import corrupt_labels

    check_noise_rate(noise_rate)  # before writing a single image
    check_output_dir(folder, overwrite=True, kind="demo", files=DEMO_FILES)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(marker_text("demo"))
    images, clean_csv = write_digits(folder / "images", layout="csv", seed=seed)
    assert clean_csv is not None  # layout="csv" always writes one
    manifest = read_manifest(images, clean_csv)
    noisy = corrupt_labels(
        manifest.given_labels, manifest.class_names, noise="symmetric", rate=noise_rate, seed=seed
    )
    names = np.asarray(manifest.class_names)
    labels_csv = folder / "labels.csv"
    truth_csv = folder / "truth.csv"
    pd.DataFrame({"path": manifest.paths, "label": names[noisy]}).to_csv(labels_csv, index=False)
    pd.DataFrame({"path": manifest.paths, "label": names[manifest.given_labels]}).to_csv(
        truth_csv, index=False
    )
    return images, labels_csv, truth_csv


def run_demo(
    folder: str | Path,
    *,
    noise_rate: float = 0.3,
    seed: int = 0,
    overwrite: bool = True,
    progress: Progress | None = None,
    on_epoch: EpochHook | None = None,
    **config_overrides: Any,
) -> DemoResult:
    """Write the noisy digits into ``folder``, audit them, and score the report against truth."""
    from labelclean.api import audit
    from labelclean.evaluate import cleaning_metrics, read_truth

    folder = Path(folder)
    config = AuditConfig(**{**DEMO_CONFIG, "seed": seed, **config_overrides})  # before writing
    images, labels_csv, truth_csv = write_demo_data(folder, noise_rate=noise_rate, seed=seed)
    result = audit(images, labels_csv, config=config, progress=progress, on_epoch=on_epoch)
    report = result.write(folder / "report.parquet", overwrite=overwrite)
    frame = result.to_pandas()
    metrics = cleaning_metrics(frame, read_truth(truth_csv, frame))
    return DemoResult(folder, images, labels_csv, truth_csv, report, metrics)
