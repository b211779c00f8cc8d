"""Neighbourhood evidence for the frozen audit: the labels of an image's nearest neighbours.

In a feature space where the classes separate, an image's nearest neighbours mostly share
its true class, and symmetric or pairwise noise flips their labels independently, so their
label vote is evidence about the sample's own label that no head trained on that label can
have memorised (SimiFeat, Zhu et al. 2022; the idea behind Docta's "label consensus").
The frozen audit mixes this vote into every recorded softmax (``FrozenAuditRun.record``).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from labelclean.progress import Progress, report

logger = logging.getLogger(__name__)

#: Above this many samples the neighbours are searched among a seeded random subset of this
#: size: exact search costs N^2 * D, the subset N * MAX_REFERENCE * D.
MAX_REFERENCE = 100_000


def features_in_order(source: object, order: np.ndarray, *, chunk: int = 8192) -> np.ndarray:
    """Standardised mean-view embeddings ``[N, D]`` (float16) of ``order``, as the head sees them.

    Args:
        source: A :class:`~labelclean.fgcm.frozen.FeatureBatches`.
        order: Cache rows in the order wanted (the audit's canonical order).
        chunk: Rows per step.
    """
    parts = []
    for start in range(0, len(order), chunk):
        batch = source.prepare(source.load(order[start : start + chunk]))  # type: ignore[attr-defined]
        parts.append(batch.cpu().numpy().astype(np.float16))
    return np.concatenate(parts)


@torch.inference_mode()
def nearest_neighbours(
    features: np.ndarray,
    k: int,
    *,
    chunk: int = 1024,
    seed: int = 0,
    progress: Progress | None = None,
) -> np.ndarray:
    """The ``k`` nearest other samples of each sample by cosine similarity: ``[N, k]`` int64.

    Exact search in chunks; above :data:`MAX_REFERENCE` samples, among a random subset.
    """
    x = torch.from_numpy(np.asarray(features, dtype=np.float32))
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = len(x)
    reference = np.arange(n)
    if n > MAX_REFERENCE:
        reference = np.sort(np.random.default_rng(seed).choice(n, MAX_REFERENCE, replace=False))
        logger.info("neighbours: searched among %d random samples of %d", MAX_REFERENCE, n)
    ref = x[torch.from_numpy(reference)]
    position = np.full(n, -1, dtype=np.int64)  # sample -> its column among the references
    position[reference] = np.arange(len(reference))
    k = min(k, len(reference) - 1)
    out = np.empty((n, k), dtype=np.int64)
    steps = -(-n // chunk)
    for step, start in enumerate(range(0, n, chunk)):
        sim = x[start : start + chunk] @ ref.T
        own = position[start : start + len(sim)]
        inside = np.flatnonzero(own >= 0)
        sim[inside, own[inside]] = -torch.inf  # never its own neighbour
        out[start : start + len(sim)] = reference[sim.topk(k, dim=1).indices.numpy()]
        report(progress, "neighbours", step + 1, steps)
    return out


def neighbour_votes(neighbours: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Share of each class among the labeled neighbours of every sample: ``[N, C]`` float32.

    Args:
        neighbours: ``[N, k]`` indices from :func:`nearest_neighbours`.
        labels: ``[N]`` class codes the neighbours vote with; -1 = no vote (outside T).
        n_classes: C.

    A sample none of whose neighbours votes gets the uniform distribution.
    """
    votes = labels[neighbours]  # [N, k]
    counts = np.zeros((len(neighbours), n_classes + 1), dtype=np.float32)
    np.add.at(counts, (np.repeat(np.arange(len(neighbours)), votes.shape[1]), votes.ravel()), 1)
    counts = counts[:, :n_classes]  # code -1 landed in the last column
    total = counts.sum(1, keepdims=True)
    return np.where(total > 0, counts / np.maximum(total, 1), 1.0 / n_classes).astype(np.float32)
