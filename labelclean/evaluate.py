"""Measuring cleaning quality against known truth, and injecting noise to create that truth.

The figures are DESIGN.md's "Measuring cleaning quality"; noise follows the paper (4.1.1):
symmetric flips are uniform over the *other* classes; asymmetric noise uses the paper's
CIFAR-10 pairs (truck->automobile, bird->airplane, deer->horse, cat<->dog).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelclean.errors import ConfigError, ReportError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_ASYMMETRIC = {
    "truck": "automobile",
    "bird": "airplane",
    "deer": "horse",
    "cat": "dog",
    "dog": "cat",
}


def corrupt_labels(
    given_labels: np.ndarray,
    class_names: list[str],
    *,
    noise: str,
    rate: float,
    seed: int = 0,
    mapping: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Return noisy label codes ``[N]``.

    Args:
        given_labels: Clean label codes ``[N]``.
        class_names: Names for the codes.
        noise: ``symmetric``: exactly ``round(rate * N)`` samples, chosen at random, get a
            label drawn uniformly from the other classes. ``asymmetric``: within each
            source class of the map, ``round(rate * n_class)`` samples flip to the target.
        rate: Fraction in [0, 1).
        seed: Random seed.
        mapping: class -> class for asymmetric noise; default the paper's CIFAR-10 pairs
            when the classes are CIFAR-10's, else each class to the next one.
    """
    if not 0 <= rate < 1:
        raise ConfigError(f"--rate {rate}: expected a fraction in [0, 1)")
    rng = np.random.default_rng(seed)
    given = np.asarray(given_labels, dtype=np.int64)
    noisy = given.copy()
    c = len(class_names)
    if noise == "symmetric":
        flip = rng.choice(len(given), int(round(rate * len(given))), replace=False)
        offset = rng.integers(1, c, len(flip))  # 1..C-1: never the true class
        noisy[flip] = (given[flip] + offset) % c
        return noisy
    if noise != "asymmetric":
        raise ConfigError(f"--noise {noise!r}: expected symmetric or asymmetric")
    if mapping is None:
        if set(CIFAR10_CLASSES) <= set(class_names):
            mapping = CIFAR10_ASYMMETRIC
        else:
            mapping = {class_names[i]: class_names[(i + 1) % c] for i in range(c)}
    code = {n: i for i, n in enumerate(class_names)}
    unknown = [k for pair in mapping.items() for k in pair if k not in code]
    if unknown:
        raise ConfigError(f"--map names unknown classes: {', '.join(sorted(set(unknown)))}")
    for source, target in mapping.items():
        members = np.flatnonzero(given == code[source])
        flip = rng.choice(members, int(round(rate * len(members))), replace=False)
        noisy[flip] = code[target]
    return noisy


def _ratio(num: float, den: float) -> float | None:
    """The ratio, or None when the denominator is 0 (reported as n/a)."""
    return float(num) / float(den) if den else None


def cleaning_metrics(report: pd.DataFrame, true_labels: pd.Series | np.ndarray) -> dict[str, Any]:
    """Every figure of DESIGN.md "Measuring cleaning quality" for a report frame.

    Args:
        report: The report rows (columns given_label, action, clean_label, pseudo_label, cluster).
        true_labels: The true class name of every row, aligned with ``report``.

    Returns:
        A dict of figures (None where a ratio has an empty denominator), plus per-cluster
        noise rates, a per-class table and the given->clean confusion of the relabels.
    """
    truth = np.asarray(true_labels, dtype=object)
    given = report["given_label"].to_numpy(dtype=object)
    action = report["action"].to_numpy(dtype=object)
    clean = report["clean_label"].to_numpy(dtype=object)
    pseudo = report["pseudo_label"].to_numpy(dtype=object)
    n = len(report)
    noisy = given != truth
    flagged = action != "keep"
    labeled = action != "unlabel"
    relabel = action == "relabel"
    correct_clean = labeled & (clean == truth)
    cleaned = np.where(labeled, clean, pseudo) == truth
    det_p = _ratio((flagged & noisy).sum(), flagged.sum())
    det_r = _ratio((flagged & noisy).sum(), noisy.sum())
    f1 = 2 * det_p * det_r / (det_p + det_r) if det_p and det_r else None
    clusters = {
        str(k): {"n": int(len(g)), "noise_rate": float((g["given_label"] != g["_truth"]).mean())}
        for k, g in report.assign(_truth=truth).groupby("cluster")
    }
    per_class = []
    for name in sorted(set(truth) | set(given)):
        rows = given == name
        per_class.append(
            {
                "class": str(name),
                "n": int(rows.sum()),
                "true_noise": _ratio((rows & noisy).sum(), rows.sum()),
                "flagged": _ratio((rows & flagged).sum(), rows.sum()),
                "relabeled_out": int((rows & relabel).sum()),
                "relabeled_in": int((relabel & (clean == name)).sum()),
            }
        )
    flips = pd.DataFrame({"given": given[relabel], "clean": clean[relabel]}).value_counts().head(20)
    return {
        "n": n,
        "noisy": int(noisy.sum()),
        "given_precision": float(1 - noisy.mean()) if n else None,
        "flagged": int(flagged.sum()),
        "detection_precision": det_p,
        "detection_recall": det_r,
        "detection_f1": f1,
        "label_precision": _ratio(correct_clean.sum(), labeled.sum()),
        "label_recall": _ratio(correct_clean.sum(), n),
        "relabel_accuracy": _ratio((relabel & (clean == truth)).sum(), relabel.sum()),
        "cleaned_accuracy": float(cleaned.mean()) if n else None,
        "actions": {k: int((action == k).sum()) for k in ("keep", "relabel", "unlabel")},
        "clusters": clusters,
        "per_class": per_class,
        "top_flips": [
            {"given": str(g), "clean": str(c), "count": int(v)} for (g, c), v in flips.items()
        ],
    }


def read_truth(
    path: str | Path,
    report: pd.DataFrame,
    *,
    path_column: str = "path",
    label_column: str = "label",
) -> np.ndarray:
    """The true label of each report row, matched by normalised path."""
    from labelclean.data.manifest import _normalise, _read_table

    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such truth file")
    frame = _read_table(path)
    for col in (path_column, label_column):
        if col not in frame.columns:
            raise ReportError(
                f"{path}: no column {col!r}; found {', '.join(frame.columns)} "
                "(choose with --truth-path-column/--truth-label-column)"
            )
    truth = dict(zip(frame[path_column].map(_normalise), frame[label_column].astype(str)))
    paths = report["path"].map(_normalise)
    missing = [p for p in paths if p not in truth]
    if missing:
        raise ReportError(
            f"{path}: no truth for {len(missing)} report row(s): " + ", ".join(missing[:20])
        )
    extra = set(truth) - set(paths)
    if extra:
        raise ReportError(
            f"{path}: {len(extra)} row(s) are not in the report: " + ", ".join(sorted(extra)[:20])
        )
    return np.asarray([truth[p] for p in paths], dtype=object)


def metrics_json(metrics: Mapping[str, Any]) -> str:
    """The metrics as one JSON object."""
    return json.dumps(metrics, indent=1, default=float)
