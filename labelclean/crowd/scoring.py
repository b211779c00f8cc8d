"""A crowd report against the truth: the consensus, the final labels, the annotator ranking.

``labelclean evaluate`` adds these to the cleaning figures when the report holds votes:

- ``majority_accuracy``: the plain majority vote (ties at random), what a team has before;
- ``consensus_accuracy``: the label the audit started from (``given_label``);
- ``final_accuracy``: the final label (``clean_label``) over all images; an image left
  without a label counts as wrong, so unlabeling cannot buy accuracy;
- ``annotator_rank_correlation``: Spearman's rho between each annotator's
  ``estimated_accuracy`` (the annotators table) and their true accuracy (share of their votes
  equal to the truth): does the ranking say whom to trust?
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def majority_labels(votes: pd.DataFrame, n_rows: int, *, seed: int = 0) -> np.ndarray:
    """The most voted label of each row ``[n_rows]`` object; ties broken at random.

    Args:
        votes: One row per vote with columns ``row`` and ``vote``.
        n_rows: Number of images.
        seed: Tie-breaking.
    """
    rng = np.random.default_rng(seed)
    counts = votes.groupby(["row", "vote"]).size().rename("n").reset_index()
    counts["key"] = rng.random(len(counts))
    counts = counts.sort_values(["row", "n", "key"], ascending=[True, False, False])
    top = counts.drop_duplicates("row").set_index("row")["vote"]
    return top.reindex(np.arange(n_rows)).to_numpy(dtype=object)


def annotator_truth(votes: pd.DataFrame, truth: np.ndarray) -> pd.DataFrame:
    """Each annotator's votes and true accuracy: ``annotator, n_votes, true_accuracy``.

    ``votes`` has one row per vote with columns ``row``, ``annotator`` and ``vote``.
    """
    right = votes["vote"].to_numpy(dtype=object) == truth[votes["row"].to_numpy()]
    grouped = pd.DataFrame({"annotator": votes["annotator"], "right": right}).groupby("annotator")
    return grouped["right"].agg(n_votes="size", true_accuracy="mean").reset_index()


def crowd_scores(
    report: pd.DataFrame,
    truth: np.ndarray,
    annotators: pd.DataFrame | None,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """The crowd figures of the module docstring for a report frame with a ``votes`` column.

    Args:
        report: Report rows (``given_label``, ``clean_label``, ``votes``).
        truth: ``[N]`` true class names aligned with ``report`` (see ``evaluate.read_truth``).
        annotators: The annotators table, or None (no rank correlation then).
        seed: Tie-breaking of the majority vote.

    Returns:
        A JSON-able dict (None where there is nothing to measure).
    """
    from labelclean.report.crowd import vote_rows

    truth = np.asarray(truth, dtype=object).astype(str)
    votes = vote_rows(report)
    majority = majority_labels(votes, len(report), seed=seed)
    final = report["clean_label"].to_numpy(dtype=object)
    out: dict[str, Any] = {
        "n_votes": len(votes),
        "vote_accuracy": float((votes["vote"].to_numpy(dtype=object) == truth[votes["row"]]).mean())
        if len(votes)
        else None,
        "majority_accuracy": float((majority == truth).mean()),
        "consensus_accuracy": float((report["given_label"].to_numpy(dtype=object) == truth).mean()),
        "final_accuracy": float((final == truth).mean()),
        "unlabeled": int(pd.isna(final).sum()),
        "annotator_rank_correlation": None,
    }
    per = annotator_truth(votes, truth)
    out["n_annotators"] = len(per)
    if annotators is not None and len(per) > 1:
        joined = per.merge(annotators[["annotator", "estimated_accuracy"]], on="annotator")
        rho = joined["estimated_accuracy"].corr(joined["true_accuracy"], method="spearman")
        out["annotator_rank_correlation"] = None if pd.isna(rho) else float(rho)
        out["annotators"] = joined.sort_values("estimated_accuracy", ascending=False).to_dict(
            "records"
        )
    return out
