"""Who to trust: one row per annotator, from their votes and the final posterior.

``estimated_accuracy`` is the expected share of an annotator's votes that are right, the
mean over their votes of P(true class = their vote | everything): the votes of everyone and
the network (:mod:`labelclean.crowd.combine`). It is the posterior estimate of the figure a
team would compute with the truth in hand, so it ranks annotators the way the truth would
(Spearman .81 on the CIFAR-10N dev crowd with the votes alone). It does not shrink: a worker
with ten votes is judged on those ten. The consensus itself, in contrast, shrinks every
annotator's confusion toward the crowd's (:mod:`labelclean.crowd.model`), so a handful of
lucky votes buys no extra weight. The class pair an annotator confuses most is the largest
off-diagonal entry of their expected (true class, vote) counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from labelclean.crowd.model import Votes, expected_counts

#: Columns of the annotators table, in order.
ANNOTATOR_COLUMNS = (
    "annotator",
    "n_votes",
    "agreement",
    "estimated_accuracy",
    "confused_true",
    "confused_voted",
    "confused_share",
)
_MIN_CONFUSED_VOTES = 1.0  #: an expected error count below one vote is no pattern


def annotator_table(
    votes: Votes,
    posterior: np.ndarray,
    final_labels: np.ndarray,
    *,
    class_names: Sequence[str],
) -> pd.DataFrame:
    """One row per annotator with votes, most trusted first (see module docstring).

    Args:
        votes: Every vote.
        posterior: ``[N, C]`` final P(true class) of each image.
        final_labels: ``[N]`` the final label of each image; ``-1`` where there is none
            (those images do not count in ``agreement``).
        class_names: Names of the class codes.

    Returns:
        :data:`ANNOTATOR_COLUMNS`: ``n_votes`` (int32); ``agreement`` (float32, share of
        their votes equal to the final label, NaN when none of their images has one);
        ``estimated_accuracy`` (float32); ``confused_true`` / ``confused_voted`` (the true
        class and what they voted for it in their most frequent error, null when they are
        expected to make less than one error of any kind); ``confused_share`` (float32,
        share of their votes that are this error, 0 when null).
    """
    a, c = votes.n_annotators, votes.n_classes
    n_votes = votes.per_annotator()
    right = np.bincount(votes.annotator, weights=posterior[votes.sample, votes.label], minlength=a)
    final = np.asarray(final_labels)[votes.sample]
    judged = np.bincount(votes.annotator, weights=final >= 0, minlength=a)
    agree = np.bincount(votes.annotator, weights=final == votes.label, minlength=a)
    errors = expected_counts(votes, posterior)  # [annotator, true, vote]
    errors[:, np.arange(c), np.arange(c)] = 0
    flat = errors.reshape(a, -1)
    worst = flat.argmax(1)
    worst_count = flat[np.arange(a), worst]
    confused = worst_count >= _MIN_CONFUSED_VOTES
    names = np.asarray(list(class_names), dtype=object)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame(
            {
                "annotator": list(votes.annotator_names),
                "n_votes": n_votes.astype(np.int32),
                "agreement": (agree / judged).astype(np.float32),
                "estimated_accuracy": (right / np.maximum(n_votes, 1)).astype(np.float32),
                "confused_true": np.where(confused, names[worst // c], None),
                "confused_voted": np.where(confused, names[worst % c], None),
                "confused_share": np.where(
                    confused, worst_count / np.maximum(n_votes, 1), 0.0
                ).astype(np.float32),
            }
        )
    table = table[n_votes > 0]
    order = np.lexsort((table["annotator"].to_numpy(), -table["estimated_accuracy"].to_numpy()))
    return table.iloc[order].reset_index(drop=True)
