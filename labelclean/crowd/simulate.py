"""Simulated crowds on clean labels: to measure the consensus where the truth is known.

A crowd is W workers, each a confusion matrix ``[C, C]`` (P(votes l | true class k)) and an
activity (their share of the work). Honest workers differ in accuracy and in what they
confuse: people tend to confuse the same classes (cat and dog), so each class's errors
follow a pattern shared by the crowd, and every worker's own errors scatter around it.
Spammers vote uniformly at random. Activities are uneven (log-normal), as on Mechanical Turk,
so some workers give many votes and some a handful. Every image gets K votes from K
different workers, drawn by activity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from labelclean.errors import ConfigError

#: Honest workers' accuracies are uniform in this range (CIFAR-10N workers: .50-1.0, mean .82).
ACCURACY_RANGE = (0.55, 0.95)
_CHUNK = 4096  #: images per block when drawing workers (memory: block x W floats)


@dataclass(frozen=True)
class Crowd:
    """Simulated workers."""

    confusion: np.ndarray  #: [W, C, C] P(votes l | true class k)
    activity: np.ndarray  #: [W] share of the votes each worker is offered
    kind: np.ndarray  #: [W] "honest" or "spammer"

    @property
    def accuracy(self) -> np.ndarray:
        """Each worker's accuracy on balanced classes ``[W]``."""
        return np.diagonal(self.confusion, axis1=1, axis2=2).mean(1)


def random_crowd(
    n_workers: int,
    n_classes: int,
    *,
    spammers: float = 0.1,
    accuracy: tuple[float, float] = ACCURACY_RANGE,
    seed: int = 0,
) -> Crowd:
    """W workers: honest ones of varied accuracy and confusions, and a share of spammers.

    Args:
        n_workers: W.
        n_classes: C >= 2.
        spammers: Share of workers who vote at random (rounded; at least one when > 0 and
            W >= 2, never all of them).
        accuracy: Range of the honest workers' accuracies.
        seed: Random seed.
    """
    if n_workers < 1:
        raise ConfigError(f"--workers {n_workers}: need at least one worker")
    if not 0 <= spammers < 1:
        raise ConfigError(f"--spammers {spammers}: expected a share in [0, 1)")
    rng = np.random.default_rng(seed)
    c = n_classes
    n_spam = min(max(int(round(spammers * n_workers)), int(spammers > 0)), n_workers - 1)
    acc = rng.uniform(*accuracy, n_workers)
    spread = None
    if c > 2:
        # The crowd's pattern: class k's errors go mostly to a few classes (Dirichlet 0.5);
        # each worker's own: Dirichlet around it with C - 1 pseudo-counts, visibly different.
        shared = rng.dirichlet(np.full(c - 1, 0.5), size=c)  # [C, C-1]
        alpha = np.maximum((c - 1) * shared, 1e-3)
        spread = np.stack([rng.dirichlet(alpha[k], size=n_workers) for k in range(c)], axis=1)
    confusion = np.zeros((n_workers, c, c))
    eye = np.eye(c, dtype=bool)
    confusion[:, eye] = acc[:, None]
    if spread is not None:
        confusion[:, ~eye] = ((1 - acc)[:, None, None] * spread).reshape(n_workers, -1)
    else:
        confusion[:, ~eye] = (1 - acc)[:, None]
    kind = np.full(n_workers, "honest", dtype=object)
    spam = rng.choice(n_workers, n_spam, replace=False)
    confusion[spam] = 1 / c
    kind[spam] = "spammer"
    activity = rng.lognormal(0.0, 1.0, n_workers)
    return Crowd(confusion, activity / activity.sum(), kind)


def simulate_votes(
    true_labels: np.ndarray, crowd: Crowd, *, votes_per_image: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K votes per image from K different workers: ``(sample, worker, label)``, each ``[N*K]``.

    Example:
        >>> crowd = random_crowd(20, 3, seed=0)
        >>> sample, worker, label = simulate_votes(np.array([0, 1, 2]), crowd, votes_per_image=3)
        >>> len(sample), len(set(worker[sample == 0]))
        (9, 3)
    """
    w, c, _ = crowd.confusion.shape
    k = votes_per_image
    if not 1 <= k <= w:
        raise ConfigError(f"--annotators {k}: between 1 and --workers ({w}) votes per image")
    truth = np.asarray(true_labels, dtype=np.int64)
    n = len(truth)
    rng = np.random.default_rng(seed)
    log_activity = np.log(np.maximum(crowd.activity, 1e-300))
    workers = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _CHUNK):  # Gumbel top-k: k distinct workers, by activity
        keys = log_activity + rng.gumbel(size=(min(_CHUNK, n - start), w))
        workers[start : start + _CHUNK] = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    sample = np.repeat(np.arange(n), k)
    worker = workers.reshape(-1)
    rows = crowd.confusion[worker, truth[sample]]  # [V, C]
    label = (rows.cumsum(1) < rng.random(len(rows))[:, None]).sum(1)
    return sample, worker, np.minimum(label, c - 1).astype(np.int64)


def simulate_crowd_votes(
    paths: list[str],
    true_labels: np.ndarray,
    class_names: list[str],
    *,
    votes_per_image: int,
    workers: int,
    spammers: float = 0.1,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """A long vote table ``path, annotator, label, true_label`` for clean labels, and a summary.

    Args:
        paths: Image paths ``[N]``.
        true_labels: Their clean label codes ``[N]`` into ``class_names``.
        class_names: Names of the codes.
        votes_per_image: K.
        workers: W.
        spammers: Share of spammers (:func:`random_crowd`).
        seed: Random seed; the same seed gives the same crowd and votes.

    Returns:
        The table (rows grouped by image, in ``paths`` order) and ``{"wrong": share of wrong
        votes, "majority": majority-vote accuracy, "spammers": count}``.
    """
    from labelclean.crowd.model import Votes, majority_vote

    truth = np.asarray(true_labels, dtype=np.int64)
    crowd = random_crowd(workers, len(class_names), spammers=spammers, seed=seed)
    sample, worker, label = simulate_votes(
        truth, crowd, votes_per_image=votes_per_image, seed=seed + 1
    )
    width = len(str(workers))
    ids = np.asarray([f"w{i:0{width}d}" for i in range(workers)], dtype=object)
    names = np.asarray(class_names, dtype=object)
    frame = pd.DataFrame(
        {
            "path": np.asarray(paths, dtype=object)[sample],
            "annotator": ids[worker],
            "label": names[label],
            "true_label": names[truth[sample]],
        }
    )
    votes = Votes(
        sample,
        worker,
        label,
        n_samples=len(truth),
        n_classes=len(class_names),
        annotator_names=tuple(ids),
    )
    summary = {
        "wrong": float((label != truth[sample]).mean()),
        "majority": float((majority_vote(votes, seed=seed) == truth).mean()),
        "spammers": int((crowd.kind == "spammer").sum()),
    }
    return frame, summary
