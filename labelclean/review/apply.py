"""Reviewer decisions + the audit's outcome -> the final label of every image.

Reviewer decisions come first: ``accept`` takes the audit's suggestion
(:func:`labelclean.report.schema.suggested_label`; the label the decision row names, which is
that suggestion unless an older file says otherwise), ``keep`` the given one, ``relabel`` the
chosen class, ``drop`` leaves the image out. Images nobody decided keep the audit's outcome
(its clean label), or their given label with ``only_reviewed``.

An image the audit unlabeled and nobody decided has no clean label. :func:`apply_decisions`
never writes it with an empty label: it keeps its given label (the default: the file still
names every image nobody dropped, so it can replace the manifest row for row, and no label the
audit was unsure of is changed without a person), or is left out with ``drop_unlabeled``.
Pure functions on the report's frame, vectorised over N.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from labelclean.report.parquet import Report, suggested_label
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
    unlabeled: int = 0  #: written rows the audit unlabeled, nobody decided: the given label
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
            out.append(
                f"{self.unlabeled} images the audit unlabeled and nobody decided keep their "
                "given label (--drop-unlabeled leaves them out)"
            )
        if self.left_out_unlabeled:
            out.append(
                f"{self.left_out_unlabeled} images the audit unlabeled and nobody decided "
                "left out (--drop-unlabeled)"
            )
        return out


def _names(column: pd.Series) -> np.ndarray:
    """Label strings ``[N]`` as objects with None (not NaN) where missing."""
    return column.to_numpy(dtype=object, na_value=None)


def final_labels(
    frame: pd.DataFrame, decisions: Mapping[str, Decision], *, only_reviewed: bool = False
) -> FinalLabels:
    """The final label of every row of ``frame`` (see the module docstring).

    None where the audit unlabeled a row nobody decided (``finetune`` trains on it as
    unlabeled); :func:`apply_decisions` decides what the written file holds there.
    """
    paths = frame["path"].astype(str)
    # as objects first: with no decisions the map is all-NaN float64, which "" cannot fill
    decision = paths.map({p: d.decision for p, d in decisions.items()}).astype(object)
    decision = decision.fillna("").to_numpy(object)
    chosen = _names(paths.map({p: d.label for p, d in decisions.items()}))
    base = frame["given_label"] if only_reviewed else frame["clean_label"]
    labels = _names(base)
    accepted = np.where(pd.isna(chosen), _names(suggested_label(frame)), chosen)
    labels = np.where(decision == "accept", accepted, labels)
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

    Every written row has a label: an image the audit unlabeled and nobody decided keeps its
    given label, or is left out with ``drop_unlabeled`` (module docstring).

    Example:
        >>> found = load_decisions("report.decisions.csv", rep, fingerprint=fp)  # doctest: +SKIP
        >>> table, summary = apply_decisions(rep, found.by_path)  # doctest: +SKIP
    """
    f = report.frame
    fin = final_labels(f, decisions, only_reviewed=only_reviewed)
    # the audit unlabeled, nobody decided: with only_reviewed too, so drop_unlabeled is
    # never ignored (they have their given label then, but the audit did not stand by it)
    undecided_unlabeled = (fin.decision == "") & f["clean_label"].isna().to_numpy()
    has_label = np.array([x is not None for x in fin.labels], dtype=bool)
    given = f["given_label"].to_numpy(object)
    labels = np.where(~has_label, given, fin.labels)  # never an empty label
    keep = ~fin.dropped & ~(undecided_unlabeled & drop_unlabeled)
    table = pd.DataFrame({"path": f["path"].to_numpy()[keep], "label": labels[keep]})
    audit = _names(f["clean_label"])
    decided = fin.decision != ""
    differs = np.array([a != b for a, b in zip(fin.labels, audit)], dtype=bool) | fin.dropped
    summary = ApplySummary(
        n_images=len(f),
        n_written=int(keep.sum()),
        decided={k: int((fin.decision == k).sum()) for k in DECISIONS},
        changed_from_given=int((keep & (labels != given)).sum()),
        changed_from_audit=int((decided & differs).sum()),
        unlabeled=int((keep & undecided_unlabeled).sum()),
        left_out_unlabeled=int(undecided_unlabeled.sum()) if drop_unlabeled else 0,
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
