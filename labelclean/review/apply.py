"""Reviewer decisions + the audit's outcome -> the final label of every image.

Reviewer decisions come first: ``accept`` takes the suggested (pseudo) label, ``keep`` the
given one, ``relabel`` the chosen class, ``drop`` leaves the image out. Images nobody decided
keep the audit's outcome (its clean label; none where it unlabeled them), or their given label
with ``only_reviewed``. Pure functions on the report's frame, vectorised over N.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from labelclean.report.parquet import Report
from labelclean.review.decisions import DECISIONS, Decision


@dataclass
class FinalLabels:
    """Per report row: the final label (None: no label), dropped, and the decision (or "")."""

    labels: np.ndarray  #: [N] object, class name or None
    dropped: np.ndarray  #: [N] bool
    decision: np.ndarray  #: [N] object, one of DECISIONS or ""


@dataclass
class ApplySummary:
    """What ``apply`` changed, for the terminal."""

    n_images: int
    n_written: int
    decided: dict[str, int] = field(default_factory=dict)  #: rows per decision
    changed_from_given: int = 0  #: written rows whose label is not the given one
    changed_from_audit: int = 0  #: decided rows whose outcome differs from the audit's
    unlabeled: int = 0  #: written rows without a label
    left_out_unlabeled: int = 0  #: rows left out by drop_unlabeled

    def lines(self) -> list[str]:
        """The summary as short lines of text."""
        d = self.decided
        decided = sum(d.values())
        out = [
            f"{self.n_written} of {self.n_images} images written; {decided} decided by a reviewer "
            f"({', '.join(f'{d.get(k, 0)} {k}' for k in DECISIONS)})",
            f"{self.changed_from_audit} reviewer decisions differ from the audit's outcome; "
            f"{self.changed_from_given} written labels differ from the given ones",
        ]
        if self.unlabeled:
            out.append(f"{self.unlabeled} images have no label (the audit unlabeled them)")
        if self.left_out_unlabeled:
            out.append(f"{self.left_out_unlabeled} unlabeled images left out (--drop-unlabeled)")
        return out


def _names(column: pd.Series) -> np.ndarray:
    """Label strings ``[N]`` as objects with None (not NaN) where missing."""
    return column.to_numpy(dtype=object, na_value=None)


def final_labels(
    frame: pd.DataFrame, decisions: Mapping[str, Decision], *, only_reviewed: bool = False
) -> FinalLabels:
    """The final label of every row of ``frame`` (see the module docstring)."""
    paths = frame["path"].astype(str)
    decision = paths.map({p: d.decision for p, d in decisions.items()}).fillna("").to_numpy(object)
    chosen = paths.map({p: d.label for p, d in decisions.items()}).to_numpy(object)
    base = frame["given_label"] if only_reviewed else frame["clean_label"]
    labels = _names(base)
    labels = np.where(decision == "accept", frame["pseudo_label"].to_numpy(object), labels)
    labels = np.where(decision == "keep", frame["given_label"].to_numpy(object), labels)
    labels = np.where(decision == "relabel", chosen, labels)
    dropped = decision == "drop"
    labels = np.where(dropped, None, labels)
    return FinalLabels(labels=labels, dropped=dropped, decision=decision)


def apply_decisions(
    report: Report,
    decisions: Mapping[str, Decision],
    *,
    only_reviewed: bool = False,
    drop_unlabeled: bool = False,
) -> tuple[pd.DataFrame, ApplySummary]:
    """The final ``path,label`` table (dropped images left out) and what changed.

    Example:
        >>> found = load_decisions("report.decisions.csv", rep, fingerprint=fp)  # doctest: +SKIP
        >>> table, summary = apply_decisions(rep, found.by_path)  # doctest: +SKIP
    """
    f = report.frame
    fin = final_labels(f, decisions, only_reviewed=only_reviewed)
    has_label = np.array([x is not None for x in fin.labels], dtype=bool)
    keep = ~fin.dropped & (has_label | (not drop_unlabeled))
    table = pd.DataFrame({"path": f["path"].to_numpy()[keep], "label": fin.labels[keep]})
    audit = _names(f["clean_label"])
    decided = fin.decision != ""
    differs = np.array([a != b for a, b in zip(fin.labels, audit)], dtype=bool) | fin.dropped
    given = f["given_label"].to_numpy(object)
    summary = ApplySummary(
        n_images=len(f),
        n_written=int(keep.sum()),
        decided={k: int((fin.decision == k).sum()) for k in DECISIONS},
        changed_from_given=int((keep & has_label & (fin.labels != given)).sum()),
        changed_from_audit=int((decided & differs).sum()),
        unlabeled=int((keep & ~has_label).sum()),
        left_out_unlabeled=int((~fin.dropped & ~has_label).sum()) if drop_unlabeled else 0,
    )
    return table, summary


def reviewed_frame(
    report: Report, decisions: Mapping[str, Decision], *, only_reviewed: bool = False
) -> pd.DataFrame:
    """The report's frame with the reviewed labels as its outcome, dropped images removed.

    A decided row becomes ``keep`` (its label is the given one) or ``relabel`` (another label),
    so everything downstream of a report (``finetune``'s labeled/unlabeled split) trains on
    the reviewer's labels without knowing about decisions. Its ``guard`` is cleared: the
    reviewer decided, not a guard.
    """
    f = report.frame
    fin = final_labels(f, decisions, only_reviewed=only_reviewed)
    out = f.copy()
    if "guard" in out.columns:
        guard = np.where(fin.decision == "", out["guard"].to_numpy(object), None)
        out["guard"] = pd.Series(guard, index=f.index, dtype=object)
    has_label = np.array([x is not None for x in fin.labels], dtype=bool)
    given = f["given_label"].to_numpy(object)
    out["clean_label"] = pd.Series(fin.labels, index=f.index, dtype=object)
    out["action"] = np.where(
        ~has_label, "unlabel", np.where(fin.labels == given, "keep", "relabel")
    )
    return out[~fin.dropped].reset_index(drop=True)
