"""The audit's report for crowd input: the final combination step and the crowd's columns.

The FGCM audit runs unchanged on the consensus (``given_label``); coming out, this step
combines its network with the votes (:func:`labelclean.crowd.combine.combine`) and decides
each image again: ``clean_label`` is the most probable class given the image and every vote;
``keep`` when that is the consensus, ``relabel`` when not, and ``unlabel`` when even the most
probable class is more likely wrong than right (probability below one half), so the labeled
set holds only labels the evidence vouches for. The FGCM columns (cluster, confidences,
traces, pseudo label) stay as the audit found them. It adds ``n_votes``, ``agreement`` and
``votes`` (each vote with its probability of being right), and the annotators table that is
written beside the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from labelclean.crowd.annotators import annotator_table
from labelclean.crowd.combine import Combined, combine
from labelclean.crowd.model import Votes
from labelclean.fgcm.audit import AuditResult
from labelclean.report.schema import with_columns

#: Below this probability a final label is more likely wrong than right: unlabeled.
VOUCH = 0.5


def crowd_actions(given_labels: np.ndarray, combined: Combined) -> tuple[np.ndarray, np.ndarray]:
    """``(action [N] str, clean_label [N] int, -1 when unlabeled)`` from the combined posterior."""
    final = combined.labels
    vouched = combined.confidence >= VOUCH
    action = np.where(~vouched, "unlabel", np.where(final == given_labels, "keep", "relabel"))
    return action, np.where(vouched, final, -1).astype(np.int64)


def votes_column(votes: Votes, class_names: list[str], posterior: np.ndarray) -> pa.ListArray:
    """``[N]`` lists of ``{annotator, label, p_right}``, each image's votes, without a per-row loop.

    ``p_right`` is ``posterior[image, vote]``: how likely the vote is right.
    """
    from labelclean.report.parquet import VOTE_TYPE

    order = np.argsort(votes.sample, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(votes.per_sample())]).astype(np.int32)
    annotators = pa.array(list(votes.annotator_names), type=pa.string())
    labels = pa.array(list(class_names), type=pa.string())
    p_right = posterior[votes.sample[order], votes.label[order]].astype(np.float32)
    structs = pa.StructArray.from_arrays(
        [
            annotators.take(pa.array(votes.annotator[order])),
            labels.take(pa.array(votes.label[order])),
            pa.array(p_right),
        ],
        fields=list(VOTE_TYPE),
    )
    return pa.ListArray.from_arrays(pa.array(offsets), structs, type=pa.list_(VOTE_TYPE))


def agreement(votes: Votes, labels: np.ndarray) -> np.ndarray:
    """Share of each image's votes for ``labels`` ``[N]`` float32."""
    hits = np.bincount(
        votes.sample, weights=votes.label == labels[votes.sample], minlength=votes.n_samples
    )
    return (hits / np.maximum(votes.per_sample(), 1)).astype(np.float32)


@dataclass
class CrowdAuditResult(AuditResult):
    """An :class:`AuditResult` with crowd columns, plus the annotators table."""

    annotators: pd.DataFrame | None = None  #: one row per annotator, most trusted first

    def _write_report(self, path: Path, metadata: dict[str, Any], *, overwrite: bool) -> Path:
        """The report and ``<report>.annotators.parquet``, both all-or-nothing."""
        from labelclean.report.annotators import check_annotators_writable, write_with_annotators

        inputs = [given for given in self.inputs.values() if given is not None]
        check_annotators_writable(path, overwrite=overwrite, inputs=inputs)

        return write_with_annotators(
            path, self.table, metadata, self.annotators, overwrite=overwrite
        )


def finish_crowd_audit(result: AuditResult, votes: Votes, probs: np.ndarray) -> CrowdAuditResult:
    """The final combination: the audit's report -> the crowd report (module docstring).

    Args:
        result: The audit's result on the consensus labels.
        votes: Every vote, samples in manifest order (the report's row order).
        probs: ``[N, C]`` the audit's mean softmax, manifest order.
    """
    start = time.perf_counter()
    table, metadata = result.table, dict(result.metadata)
    names = list(metadata["class_names"])
    code = {name: k for k, name in enumerate(names)}
    given = np.array([code[g] for g in table["given_label"].to_pylist()], dtype=np.int64)
    combined = combine(votes, probs)
    action, clean = crowd_actions(given, combined)
    crowd = {
        "action": action,
        "clean_label": clean,
        "n_votes": votes.per_sample(),
        "agreement": agreement(votes, given),
        "votes": votes_column(votes, names, combined.posterior),
    }
    table = with_columns(table, crowd, class_names=names)
    annotators = annotator_table(votes, combined.posterior, clean, class_names=names)
    seconds = time.perf_counter() - start
    metadata["crowd"] = {**_crowd_metadata(votes, given, combined), "seconds": round(seconds, 3)}
    metadata["wall_time_s"] = round(metadata["wall_time_s"] + seconds, 3)
    return CrowdAuditResult(
        table=table,
        metadata=metadata,
        network=result.network,
        inputs=result.inputs,
        annotators=annotators,
    )


def _crowd_metadata(votes: Votes, given: np.ndarray, combined: Combined) -> dict[str, Any]:
    """What the report's metadata records about the crowd and the combination."""
    split = agreement(votes, given) < 1
    return {
        "n_votes": len(votes),
        "n_annotators": votes.n_annotators,
        "votes_per_image": float(len(votes) / max(votes.n_samples, 1)),
        "split_images": int(split.sum()),
        "network_weight": combined.beta,
        "prior_strengths": combined.fit.strengths,
        "consensus_prior_strengths": combined.crowd_only.strengths,
        "consensus_changed": int((combined.labels != given).sum()),
        "vouch": VOUCH,
    }
