"""Measuring cleaning quality against known truth (the truth often made by injected noise).

The figures are DESIGN.md's "Measuring cleaning quality". The noise that creates a known
truth is :mod:`labelclean.noise`; its names are re-exported here, where the CLI's
``corrupt`` and ``evaluate`` and the benchmarks have always found them.

A ratio whose denominator is zero (no flagged rows, no relabels, ...) is ``None``, shown as
``n/a`` by the CLI and ``null`` in JSON, never 0 or NaN, so "nothing to measure" is not
mistaken for "measured zero".
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelclean.errors import ReportError
from labelclean.fgcm.clustering import CLUSTER_NAMES
from labelclean.noise import (
    CIFAR10_ASYMMETRIC,
    CIFAR10_CLASSES,
    NOISE_TYPES,
    asymmetric_map,
    corrupt_labels,
)

__all__ = [
    "ACTIONS",
    "CIFAR10_ASYMMETRIC",
    "CIFAR10_CLASSES",
    "NOISE_TYPES",
    "UNLABELED",
    "asymmetric_map",
    "cleaning_metrics",
    "corrupt_labels",
    "metrics_json",
    "read_truth",
]

ACTIONS = ("keep", "relabel", "unlabel")
UNLABELED = "(unlabeled)"
_MAX_LISTED = 20


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
    truth, action = _checked_inputs(report, true_labels)
    rows = _encode(report, truth, action)
    return {
        **_overall(rows),
        "actions": {a: int((action == a).sum()) for a in ACTIONS},
        "clusters": _per_cluster(report, rows.noisy, action) if "cluster" in report else {},
        "per_class": _per_class(rows),
        "confusion": _confusion(rows),
        "top_flips": _top_flips(rows),
    }


def _checked_inputs(
    report: pd.DataFrame, true_labels: pd.Series | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The truth as strings and the action column, once both are known to be usable.

    Checked here rather than trusted: a misaligned truth or an edited action would give
    figures that look plausible and are wrong.
    """
    n = len(report)
    truth = np.asarray(true_labels, dtype=object)
    if truth.shape != (n,):
        raise ValueError(
            f"true_labels: expected {n} labels aligned with the report, got {truth.shape}"
        )
    if pd.isna(truth).any():
        raise ValueError("true_labels: missing values")
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
    return truth.astype(str), action


@dataclass(frozen=True)
class _Rows:
    """Every row's labels as codes into one class list, and the masks the figures count.

    One encoding for all figures, so the per-class table, the confusion matrix and the
    totals cannot disagree about which rows are noisy, flagged or correct.
    """

    classes: list[str]
    truth: np.ndarray
    given: np.ndarray
    clean: np.ndarray
    action: np.ndarray
    noisy: np.ndarray
    flagged: np.ndarray
    labeled: np.ndarray
    relabel: np.ndarray
    correct: np.ndarray
    cleaned: np.ndarray


def _encode(report: pd.DataFrame, truth_raw: np.ndarray, action: np.ndarray) -> _Rows:
    """Codes into the sorted union of every class named anywhere (truth, given, clean, pseudo)."""
    present = (
        set(truth_raw) | set(report["given_label"].dropna()) | set(report["pseudo_label"].dropna())
    )
    classes = _sort_classes(present | set(report["clean_label"].dropna()))
    truth = _codes(truth_raw, classes)
    given = _codes(report["given_label"], classes)
    clean = _codes(report["clean_label"], classes)
    pseudo = _codes(report["pseudo_label"], classes)
    labeled = action != "unlabel"
    return _Rows(
        classes=classes,
        truth=truth,
        given=given,
        clean=clean,
        action=action,
        noisy=given != truth,
        flagged=action != "keep",
        labeled=labeled,
        relabel=action == "relabel",
        correct=labeled & (clean == truth),  # a labeled row without a clean label is wrong
        cleaned=np.where(labeled, clean, pseudo) == truth,
    )


def _overall(rows: _Rows) -> dict[str, Any]:
    """The whole-dataset figures of the docstring of :func:`cleaning_metrics`, in its order."""
    n = len(rows.truth)
    noisy, flagged, labeled, relabel = rows.noisy, rows.flagged, rows.labeled, rows.relabel
    hits = int((flagged & noisy).sum())
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
        "label_precision": _ratio(rows.correct.sum(), labeled.sum()),
        "label_recall": _ratio(rows.correct.sum(), n),
        "relabel_accuracy": _ratio((relabel & (rows.clean == rows.truth)).sum(), relabel.sum()),
        "cleaned_accuracy": _ratio(rows.cleaned.sum(), n),
    }


def _per_class(rows: _Rows) -> list[dict[str, Any]]:
    """The same figures per class.

    Noise and detection go by the given label; label precision by the clean label (a class
    is judged on the rows the audit put in it).
    """
    c = len(rows.classes)
    given, clean, noisy, flagged = rows.given, rows.clean, rows.noisy, rows.flagged

    def per(codes: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        keep = codes >= 0 if mask is None else (codes >= 0) & mask
        return np.bincount(codes[keep], minlength=c)

    n_given, n_true, n_clean = per(given), per(rows.truth), per(clean, rows.labeled)
    given_ok, clean_ok = per(given, ~noisy), per(clean, rows.correct)
    noisy_by, flagged_by, hits_by = (
        per(given, noisy),
        per(given, flagged),
        per(given, flagged & noisy),
    )
    out_by, in_by = per(given, rows.relabel), per(clean, rows.relabel)
    unl_by = per(given, ~rows.labeled)
    return [
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
        for k, name in enumerate(rows.classes)
    ]


def _confusion(rows: _Rows) -> dict[str, Any]:
    """Given x clean counts; one extra last column holds the unlabeled rows."""
    c, classes = len(rows.classes), rows.classes
    column = np.where(rows.labeled & (rows.clean >= 0), rows.clean, c)
    counts = np.bincount(rows.given * (c + 1) + column, minlength=c * (c + 1)).reshape(c, c + 1)
    return {"given": classes, "clean": [*classes, UNLABELED], "counts": counts.tolist()}


def _top_flips(rows: _Rows) -> list[dict[str, Any]]:
    """The most frequent given->clean relabels and how many of each were right."""
    c, classes = len(rows.classes), rows.classes
    relabel = rows.relabel
    pair = rows.given[relabel] * c + rows.clean[relabel]
    flips = np.bincount(pair, minlength=c * c)
    flips_ok = np.bincount(pair[(rows.clean == rows.truth)[relabel]], minlength=c * c)
    order = [int(p) for p in np.argsort(-flips, kind="stable")[:_MAX_LISTED] if flips[p]]
    return [
        {
            "given": classes[p // c],
            "clean": classes[p % c],
            "count": int(flips[p]),
            "correct": int(flips_ok[p]),
        }
        for p in order
    ]


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
            file that names the classes differently would otherwise score as all wrong). A
            label is matched as the report spells it (``"cat "`` stays), else to the one
            class spelled like it (``cat``, or ``Cat`` merged by ``--normalize-labels``).

    Returns:
        ``[N]`` object array of class names aligned with ``report``.

    Raises:
        ReportError: The file or a column is missing, a path is listed twice with different
            labels, a label is empty, or the two files do not hold the same paths (up to 20
            of each side are named).

    Example:
        >>> truth = read_truth("truth.csv", read_report("report.parquet").frame)  # doctest: +SKIP
    """
    from labelclean.data.manifest import class_finder, path_key, read_table

    path = Path(path)
    if not path.is_file():
        from labelclean._io import not_a_file

        raise ReportError(not_a_file(path, "truth file") + " (give a CSV/Parquet with path,label)")
    frame = read_table(path)
    if label_column is None:
        label_column = "true_label" if "true_label" in frame.columns else "label"
    for col, flag in ((path_column, "--truth-path-column"), (label_column, "--truth-label-column")):
        if col not in frame.columns:
            raise ReportError(
                f"{path}: no column {col!r}; found {', '.join(map(str, frame.columns))} "
                f"(choose another with {flag})"
            )
    labels = frame[label_column].astype(str)
    if class_names is not None:  # as the report spells them: "cat " stays, "Cat" merged
        find = class_finder(class_names)
        spelled = {t: find(t) or t.strip() for t in labels.unique()}
        labels = labels.map(spelled)
    else:
        labels = labels.str.strip()
    empty = np.flatnonzero((labels.str.strip() == "").to_numpy())
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
