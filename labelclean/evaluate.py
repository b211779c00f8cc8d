"""Measuring cleaning quality against known truth, and injecting noise to create that truth.

The figures are DESIGN.md's "Measuring cleaning quality". Noise follows the paper (4.1.1)
and DivideMix: a symmetric flip is uniform over the *other* classes (so the realised noise
rate is the asked rate, not ``rate * (C - 1) / C`` as with "uniform over all classes");
asymmetric noise uses the paper's CIFAR-10 pairs (truck->automobile, bird->airplane,
deer->horse, cat<->dog).

A ratio whose denominator is zero (no flagged rows, no relabels, ...) is ``None``, shown as
``n/a`` by the CLI and ``null`` in JSON, never 0 or NaN, so "nothing to measure" is not
mistaken for "measured zero".
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelclean.errors import ConfigError, ReportError
from labelclean.fgcm.clustering import CLUSTER_NAMES

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# The paper's (and DivideMix's) asymmetric CIFAR-10 noise: visually similar classes.
CIFAR10_ASYMMETRIC = {
    "truck": "automobile",
    "bird": "airplane",
    "deer": "horse",
    "cat": "dog",
    "dog": "cat",
}
NOISE_TYPES = ("symmetric", "asymmetric")
ACTIONS = ("keep", "relabel", "unlabel")
UNLABELED = "(unlabeled)"
_MAX_LISTED = 20


def asymmetric_map(class_names: Sequence[str]) -> dict[str, str]:
    """The default asymmetric map: the paper's pairs for CIFAR-10, else each class to the next.

    Example:
        >>> asymmetric_map(["a", "b", "c"])
        {'a': 'b', 'b': 'c', 'c': 'a'}
    """
    names = list(class_names)
    if set(names) == set(CIFAR10_CLASSES):
        return dict(CIFAR10_ASYMMETRIC)
    return {names[i]: names[(i + 1) % len(names)] for i in range(len(names))}


def _check_mapping(mapping: Mapping[Any, Any], class_names: Sequence[str]) -> dict[str, str]:
    if not isinstance(mapping, Mapping) or not mapping:
        raise ConfigError(
            '--map: expected a non-empty object of class -> class, e.g. {"cat": "dog"}'
        )
    bad = [
        f"{k!r}: {v!r}"
        for k, v in mapping.items()
        if not (isinstance(k, str) and isinstance(v, str))
    ]
    if bad:
        raise ConfigError(f"--map: class names must be strings; got {', '.join(bad)}")
    known = set(class_names)
    unknown = sorted({name for pair in mapping.items() for name in pair if name not in known})
    if unknown:
        raise ConfigError(
            f"--map names unknown classes: {', '.join(unknown)}; the classes are "
            f"{', '.join(class_names)}"
        )
    same = [k for k, v in mapping.items() if k == v]
    if same:
        raise ConfigError(f"--map maps {', '.join(same)} to itself; a flip must change the class")
    return dict(mapping)


def corrupt_labels(
    given_labels: np.ndarray,
    class_names: Sequence[str],
    *,
    noise: str,
    rate: float,
    seed: int = 0,
    mapping: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Return noisy label codes ``[N]`` made from clean ones, reproducibly from ``seed``.

    Args:
        given_labels: Clean label codes ``[N]`` into ``class_names``.
        class_names: Names for the codes (C >= 2).
        noise: ``symmetric``: exactly ``round(rate * N)`` samples, chosen at random, get a
            label drawn uniformly from the C - 1 *other* classes, so the realised rate is
            the asked one. ``asymmetric``: in each *source* class of the map,
            ``round(rate * n_class)`` samples, chosen at random, flip to its target; other
            classes stay clean (so the overall rate is lower than ``rate`` when the map does
            not cover every class, as in the paper's CIFAR-10 setting).
        rate: Fraction in [0, 1).
        seed: Random seed.
        mapping: class -> class for asymmetric noise; default :func:`asymmetric_map`.

    Raises:
        ConfigError: Naming ``--noise``, ``--rate`` or ``--map``.

    Example:
        >>> noisy = corrupt_labels(np.repeat(np.arange(10), 50), [str(i) for i in range(10)],
        ...                        noise="symmetric", rate=0.4)
        >>> float((noisy != np.repeat(np.arange(10), 50)).mean())
        0.4
    """
    if noise not in NOISE_TYPES:
        raise ConfigError(f"--noise {noise!r}: expected symmetric or asymmetric")
    if not 0 <= rate < 1:
        raise ConfigError(f"--rate {rate}: expected a fraction in [0, 1), e.g. 0.4")
    c = len(class_names)
    if c < 2:
        raise ConfigError(f"need at least two classes to flip labels, found {c}")
    given = np.asarray(given_labels)
    if given.ndim != 1 or (given.size and not np.issubdtype(given.dtype, np.integer)):
        raise ValueError(
            f"given_labels: expected integer codes [N], got {given.dtype} {given.shape}"
        )
    given = given.astype(np.int64)
    if given.size and (given.min() < 0 or given.max() >= c):
        raise ValueError(f"given_labels: codes must lie in [0, {c})")
    rng = np.random.default_rng(seed)
    noisy = given.copy()
    if noise == "symmetric":
        flip = rng.choice(len(given), int(round(rate * len(given))), replace=False)
        offset = rng.integers(1, c, len(flip))  # 1..C-1: uniform over the other classes
        noisy[flip] = (given[flip] + offset) % c
        return noisy
    pairs = _check_mapping(
        mapping if mapping is not None else asymmetric_map(class_names), class_names
    )
    code = {name: i for i, name in enumerate(class_names)}
    for source, target in pairs.items():  # flips are drawn from the clean labels: no chains
        members = np.flatnonzero(given == code[source])
        flip = rng.choice(members, int(round(rate * len(members))), replace=False)
        noisy[flip] = code[target]
    return noisy


def _ratio(num: float, den: float) -> float | None:
    """``num / den``, or None when ``den`` is 0 (nothing to measure)."""
    return float(num) / float(den) if den else None


def _codes(values: Any, categories: list[str]) -> np.ndarray:
    """Strings -> codes into ``categories``; missing values -> -1."""
    return np.asarray(pd.Categorical(values, categories=categories).codes, dtype=np.int64)


def _sort_classes(names: set[str]) -> list[str]:
    from labelclean.data.manifest import class_order

    return class_order([str(n) for n in names])


def cleaning_metrics(report: pd.DataFrame, true_labels: pd.Series | np.ndarray) -> dict[str, Any]:
    """Every figure of DESIGN.md "Measuring cleaning quality" for a report frame.

    With ``noisy = given != truth``, ``flagged = action != keep``, ``labeled = action !=
    unlabel``: detection precision = flagged∧noisy / flagged, recall = flagged∧noisy /
    noisy, F1 = 2·flagged∧noisy / (flagged + noisy); label precision = labeled rows whose
    clean label is true / labeled rows; label recall = the same / N (the paper's Tables 7
    and 8); relabel accuracy over relabel rows; cleaned accuracy = clean label, or the
    pseudo label where unlabeled, is true, over N; given precision = 1 - noise rate.

    Args:
        report: Report rows (columns given_label, action, clean_label, pseudo_label; cluster
            optional), as :func:`~labelclean.report.parquet.read_report` gives them.
        true_labels: The true class name of every row, aligned with ``report``
            (see :func:`read_truth`).

    Returns:
        A JSON-able dict: the figures above (None where the denominator is 0), counts,
        ``actions``, ``clusters`` (per cluster: n, noisy, noise rate, actions),
        ``per_class`` (one dict per class), ``confusion`` (given x clean counts, with an
        ``(unlabeled)`` column) and ``top_flips`` (the most frequent given->clean relabels).

    Example:
        >>> m = cleaning_metrics(read_report("r.parquet").frame, truth)  # doctest: +SKIP
        >>> m["label_precision"], m["given_precision"]  # doctest: +SKIP
    """
    n = len(report)
    truth_raw = np.asarray(true_labels, dtype=object)
    if truth_raw.shape != (n,):
        raise ValueError(
            f"true_labels: expected {n} labels aligned with the report, got {truth_raw.shape}"
        )
    if pd.isna(truth_raw).any():
        raise ValueError("true_labels: missing values")
    truth_raw = truth_raw.astype(str)
    missing = [
        c for c in ("given_label", "action", "clean_label", "pseudo_label") if c not in report
    ]
    if missing:
        raise ReportError(f"report lacks the column(s) {', '.join(missing)}")
    action = report["action"].to_numpy(dtype=object)
    odd = sorted({str(a) for a in action if a not in ACTIONS})
    if odd:
        raise ReportError(
            f"report has action values {', '.join(odd)}; expected keep, relabel or unlabel"
        )
    present = (
        set(truth_raw) | set(report["given_label"].dropna()) | set(report["pseudo_label"].dropna())
    )
    classes = _sort_classes(present | set(report["clean_label"].dropna()))
    c = len(classes)
    truth = _codes(truth_raw, classes)
    given = _codes(report["given_label"], classes)
    clean = _codes(report["clean_label"], classes)
    pseudo = _codes(report["pseudo_label"], classes)

    noisy = given != truth
    flagged = action != "keep"
    labeled = action != "unlabel"
    relabel = action == "relabel"
    correct = labeled & (clean == truth)  # a labeled row without a clean label counts as wrong
    cleaned = np.where(labeled, clean, pseudo) == truth
    hits = int((flagged & noisy).sum())

    def per(codes: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        keep = codes >= 0 if mask is None else (codes >= 0) & mask
        return np.bincount(codes[keep], minlength=c)

    n_given, n_true, n_clean = per(given), per(truth), per(clean, labeled)
    given_ok, clean_ok = per(given, ~noisy), per(clean, correct)
    noisy_by, flagged_by, hits_by = (
        per(given, noisy),
        per(given, flagged),
        per(given, flagged & noisy),
    )
    out_by, in_by, unl_by = per(given, relabel), per(clean, relabel), per(given, ~labeled)
    per_class = [
        {
            "class": name,
            "n_given": int(n_given[k]),
            "n_true": int(n_true[k]),
            "given_precision": _ratio(given_ok[k], n_given[k]),
            "noise_rate": _ratio(noisy_by[k], n_given[k]),
            "flagged_rate": _ratio(flagged_by[k], n_given[k]),
            "detection_recall": _ratio(hits_by[k], noisy_by[k]),
            "n_clean": int(n_clean[k]),
            "label_precision": _ratio(clean_ok[k], n_clean[k]),
            "label_recall": _ratio(clean_ok[k], n_true[k]),
            "relabeled_out": int(out_by[k]),
            "relabeled_in": int(in_by[k]),
            "unlabeled": int(unl_by[k]),
        }
        for k, name in enumerate(classes)
    ]
    column = np.where(labeled & (clean >= 0), clean, c)  # the last column holds unlabeled rows
    confusion = np.bincount(given * (c + 1) + column, minlength=c * (c + 1)).reshape(c, c + 1)
    pair = given[relabel] * c + clean[relabel]
    flips = np.bincount(pair, minlength=c * c)
    flips_ok = np.bincount(pair[(clean == truth)[relabel]], minlength=c * c)
    order = [int(p) for p in np.argsort(-flips, kind="stable")[:_MAX_LISTED] if flips[p]]
    top_flips = [
        {
            "given": classes[p // c],
            "clean": classes[p % c],
            "count": int(flips[p]),
            "correct": int(flips_ok[p]),
        }
        for p in order
    ]
    return {
        "n": n,
        "noisy": int(noisy.sum()),
        "noise_rate": _ratio(noisy.sum(), n),
        "given_precision": _ratio((~noisy).sum(), n),
        "flagged": int(flagged.sum()),
        "labeled": int(labeled.sum()),
        "detection_precision": _ratio(hits, flagged.sum()),
        "detection_recall": _ratio(hits, noisy.sum()),
        "detection_f1": _ratio(2 * hits, flagged.sum() + noisy.sum()),
        "label_precision": _ratio(correct.sum(), labeled.sum()),
        "label_recall": _ratio(correct.sum(), n),
        "relabel_accuracy": _ratio((relabel & (clean == truth)).sum(), relabel.sum()),
        "cleaned_accuracy": _ratio(cleaned.sum(), n),
        "actions": {a: int((action == a).sum()) for a in ACTIONS},
        "clusters": _per_cluster(report, noisy, action) if "cluster" in report else {},
        "per_class": per_class,
        "confusion": {
            "given": classes,
            "clean": [*classes, UNLABELED],
            "counts": confusion.tolist(),
        },
        "top_flips": top_flips,
    }


def _per_cluster(report: pd.DataFrame, noisy: np.ndarray, action: np.ndarray) -> dict[str, Any]:
    """Noise rate and actions per cluster, in the paper's cluster order then by name."""
    cluster = report["cluster"].astype(str).to_numpy()
    found = set(cluster)
    names = [k for k in CLUSTER_NAMES if k in found] + sorted(found - set(CLUSTER_NAMES))
    codes = _codes(cluster, names)
    size = np.bincount(codes, minlength=len(names))
    bad = np.bincount(codes[noisy], minlength=len(names))
    acts = {a: np.bincount(codes[action == a], minlength=len(names)) for a in ACTIONS}
    return {
        name: {
            "n": int(size[k]),
            "noisy": int(bad[k]),
            "noise_rate": _ratio(bad[k], size[k]),
            **{a: int(acts[a][k]) for a in ACTIONS},
        }
        for k, name in enumerate(names)
    }


def _listed(items: Sequence[str]) -> str:
    more = f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def read_truth(
    path: str | os.PathLike[str],
    report: pd.DataFrame,
    *,
    path_column: str = "path",
    label_column: str | None = "label",
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """The true label of each report row, matched by path (not by row order).

    Paths are matched as the manifest reader spells them (``./a//b.jpg`` == ``a/b.jpg``,
    backslashes accepted, Unicode NFC == NFD); labels are read as text, so "007" stays
    "007".

    Args:
        path: CSV/TSV/Parquet truth file.
        report: Report rows with a ``path`` column.
        path_column: Truth column holding paths.
        label_column: Truth column holding the true labels; None picks ``true_label`` when
            the file has one (the output of ``labelclean corrupt``), else ``label``.
        class_names: The report's classes; a true label outside them is refused (a truth
            file that names the classes differently would otherwise score as all wrong).

    Returns:
        ``[N]`` object array of class names aligned with ``report``.

    Raises:
        ReportError: The file or a column is missing, a path is listed twice with different
            labels, a label is empty, or the two files do not hold the same paths (up to 20
            of each side are named).

    Example:
        >>> truth = read_truth("truth.csv", read_report("report.parquet").frame)  # doctest: +SKIP
    """
    from labelclean.data.manifest import path_key, read_table

    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such truth file (give a CSV/Parquet with path,label)")
    frame = read_table(path)
    if label_column is None:
        label_column = "true_label" if "true_label" in frame.columns else "label"
    for col, flag in ((path_column, "--truth-path-column"), (label_column, "--truth-label-column")):
        if col not in frame.columns:
            raise ReportError(
                f"{path}: no column {col!r}; found {', '.join(map(str, frame.columns))} "
                f"(choose another with {flag})"
            )
    labels = frame[label_column].astype(str).str.strip()
    empty = np.flatnonzero((labels == "").to_numpy())
    if len(empty):
        lines = [f"line {i + 2}" for i in empty]
        raise ReportError(f"{path}: empty label on {_listed(lines)}; every row needs a true label")
    if class_names is not None:
        unknown = sorted(set(labels) - set(class_names))
        if unknown:
            raise ReportError(
                f"{path}: true label(s) {_listed(unknown)} are not classes of the report "
                f"({_listed(list(class_names))}); the truth must use the report's class names"
            )
    keys = frame[path_column].astype(str).str.strip().map(path_key)
    truth = pd.Series(labels.to_numpy(), index=keys.to_numpy())
    dup = truth.groupby(level=0).nunique()
    conflicts = dup[dup > 1].index.tolist()
    if conflicts:
        raise ReportError(f"{path}: path(s) listed with different labels: {_listed(conflicts)}")
    truth = truth[~truth.index.duplicated()]
    if "path" not in report:
        raise ReportError("report has no path column")
    wanted = pd.Index(report["path"].astype(str).map(path_key))
    missing = wanted[~wanted.isin(truth.index)].tolist()
    extra = truth.index[~truth.index.isin(wanted)].tolist()
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no truth for {len(missing)} report row(s): {_listed(missing)}")
        if extra:
            parts.append(f"{len(extra)} truth row(s) are not in the report: {_listed(extra)}")
        raise ReportError(
            f"{path}: {'; '.join(parts)} (the truth file must list exactly the report's images)"
        )
    return truth.reindex(wanted).to_numpy(dtype=object)


def metrics_json(metrics: Mapping[str, Any]) -> str:
    """The metrics as one JSON object (None -> null)."""
    return json.dumps(metrics, indent=1, default=float)
