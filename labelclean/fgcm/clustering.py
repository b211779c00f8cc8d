"""Clustering the joint confidences: a fast 2-D EM, naming, refinement, the training set T.

Pure functions on arrays (DESIGN.md "The audit, pinned down"), so each step is tested
without training anything.

- :func:`fit_gmm`: full-covariance Gaussian mixture by closed-form EM, vectorised over
  samples (float32 for the N-sized arrays), warm-started from the previous epoch's fit. It
  replaces scikit-learn's GaussianMixture (the reference the tests compare against), which
  takes seconds per fit at 1M points.
  A component that loses its points is dropped, so every component returned holds data.
- :func:`name_components`: CS, CH, NS, NHR, NHI from the component means (a, m).
- :func:`refine` (paper 3.2) and :func:`update_training_set` (Algorithm 1, lines 17-20).

Our guards against dirtier labels live in :mod:`labelclean.fgcm.guard`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

CLUSTER_NAMES = ("CS", "CH", "NS", "NHR", "NHI")
_LOG_2PI = float(np.log(2 * np.pi))


@dataclass
class GMMParams:
    """A fitted mixture: ``weights [K]``, ``means [K, D]``, ``covariances [K, D, D]``."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    converged: bool = False
    n_iter: int = 0
    lower_bound: float = float("-inf")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (report metadata, checkpoints)."""
        return {
            "weights": self.weights.tolist(),
            "means": self.means.tolist(),
            "covariances": self.covariances.tolist(),
            "converged": bool(self.converged),
            "n_iter": int(self.n_iter),
            "lower_bound": float(self.lower_bound),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GMMParams:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(d["weights"], dtype=np.float64),
            np.asarray(d["means"], dtype=np.float64),
            np.asarray(d["covariances"], dtype=np.float64),
            bool(d.get("converged", False)),
            int(d.get("n_iter", 0)),
            float(d.get("lower_bound", float("-inf"))),
        )


def _log_prob(points: np.ndarray, params: GMMParams) -> np.ndarray:
    """``log w_k + log N(x | mu_k, Sigma_k)`` as float32 ``[N, K]``."""
    n, d = points.shape
    k = len(params.weights)
    out = np.empty((n, k), dtype=np.float32)
    inv = np.linalg.inv(params.covariances)
    _, logdet = np.linalg.slogdet(params.covariances)
    for j in range(k):
        diff = points - params.means[j].astype(np.float32)
        maha = np.einsum("nd,de,ne->n", diff, inv[j].astype(np.float32), diff, optimize=True)
        out[:, j] = np.log(params.weights[j]) - 0.5 * (d * _LOG_2PI + logdet[j] + maha)
    return out


def _responsibilities(points: np.ndarray, params: GMMParams) -> tuple[np.ndarray, float]:
    """E-step: posteriors ``[N, K]`` and the mean log-likelihood."""
    logp = _log_prob(points, params)
    top = logp.max(1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logp - top).sum(1))
    resp = np.exp(logp - lse[:, None])
    return resp, float(lse.mean(dtype=np.float64))


def _m_step(points: np.ndarray, resp: np.ndarray, reg_covar: float) -> GMMParams:
    """M-step in closed form; sums accumulate in float64."""
    nk = resp.sum(0, dtype=np.float64) + 10 * np.finfo(np.float32).eps
    means = (resp.T.astype(np.float64) @ points.astype(np.float64)) / nk[:, None]
    d = points.shape[1]
    covs = np.empty((len(nk), d, d))
    for j in range(len(nk)):
        diff = points - means[j].astype(np.float32)
        covs[j] = (resp[:, j, None] * diff).T.astype(np.float64) @ diff / nk[j]
        covs[j].flat[:: d + 1] += reg_covar
    return GMMParams(nk / nk.sum(), means, covs)


def _as_points(points: np.ndarray) -> np.ndarray:
    """``[N, D]`` float32 points (``[N]`` -> ``[N, 1]``); refuses empty or non-finite input.

    One NaN would otherwise turn every mixture parameter NaN without a word.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim == 1:
        points = points[:, None]
    if len(points) == 0:
        raise ValueError("cannot cluster zero points")
    finite = np.isfinite(points).all(1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{len(bad)} of {len(points)} points to cluster are not finite (NaN or inf), "
            f"the first at row {int(bad[0])}"
        )
    return points


def _n_distinct(points: np.ndarray, at_most: int) -> int:
    """How many distinct rows ``points`` has, up to ``at_most`` (a prefix usually decides)."""
    if len(np.unique(points[:10_000], axis=0)) >= at_most:
        return at_most
    return min(at_most, len(np.unique(points, axis=0)))


def _drop_empty(params: GMMParams, counts: np.ndarray, min_count: float) -> GMMParams:
    """Without the components whose responsibilities sum to less than ``min_count`` points.

    An emptied component's mean collapses to (0, 0) (its sums are ~0 over a ~0 count); named
    by that mean, it would take a role such as CH from a live blob. Dropped, it is never
    named, and the live components are named by the rule for their number.
    """
    live = counts >= min_count
    if live.all() or not live.any():
        return params
    weights = params.weights[live]
    return GMMParams(weights / weights.sum(), params.means[live], params.covariances[live])


def _cold_start(points: np.ndarray, n_components: int, seed: int, reg_covar: float) -> GMMParams:
    """k-means initial responsibilities, as scikit-learn's default ``init_params='kmeans'``.

    At most as many components as there are distinct points, and only the k-means
    clusters that got points (near-duplicate points can leave some empty).
    """
    rng = np.random.default_rng(seed)
    sample = points if len(points) <= 50_000 else points[rng.choice(len(points), 50_000, False)]
    km = _kmeans(sample, n_components, n_init=1, seed=seed)
    used, labels = np.unique(km.predict(points), return_inverse=True)
    resp = np.zeros((len(points), len(used)), dtype=np.float32)
    resp[np.arange(len(points)), labels] = 1
    return _m_step(points, resp, reg_covar)


class _FittedKMeans(Protocol):
    """What the callers use of a fitted scikit-learn ``KMeans`` (sklearn ships no types)."""

    labels_: np.ndarray  #: ``[N]`` cluster of each fitted point
    cluster_centers_: np.ndarray  #: ``[K, D]``

    def predict(self, X: np.ndarray) -> np.ndarray: ...


def _kmeans(points: np.ndarray, n_components: int, *, n_init: int, seed: int) -> _FittedKMeans:
    """scikit-learn's KMeans fitted with at most as many centers as distinct points.

    Its warning that fewer distinct clusters were found is silenced: the callers use only
    the clusters that got points.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    k = _n_distinct(points, n_components)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted: _FittedKMeans = KMeans(k, n_init=n_init, random_state=seed).fit(points)
    return fitted


def fit_gmm(
    points: np.ndarray,
    *,
    n_components: int = 5,
    init: GMMParams | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    seed: int = 0,
    max_fit_points: int = 200_000,
    min_count: float = 1.0,
) -> GMMParams:
    """Fit a full-covariance GMM to ``points`` ``[N, D]`` by EM.

    May return fewer than ``n_components`` components: never more than the points have
    distinct values, and a component whose responsibilities sum to less than ``min_count``
    points after an M-step is dropped (scikit-learn keeps it, with its mean at ~0).

    Args:
        points: The joint confidences (D = 2), or the given-label confidence alone (D = 1).
        n_components: K.
        init: Warm start (the previous epoch's fit); cold k-means start when None.
        max_iter: EM iterations at most.
        tol: Stop when the mean log-likelihood improves by less (scikit-learn's rule).
        reg_covar: Added to covariance diagonals, as in scikit-learn.
        seed: For the k-means start and the subsample.
        max_fit_points: Above this, fit on a seeded random subsample (the assignment pass
            over all points is :func:`gmm_posteriors`).
        min_count: Components holding less than this many points are dropped.

    Raises:
        ValueError: No points, or a point that is not finite.
    """
    points = _as_points(points)
    if len(points) > max_fit_points:
        rng = np.random.default_rng(seed)
        points = points[rng.choice(len(points), max_fit_points, replace=False)]
    if init is not None and len(init.weights) == n_components:
        params = GMMParams(init.weights.copy(), init.means.copy(), init.covariances.copy())
    else:
        params = _cold_start(points, n_components, seed, reg_covar)
    previous = float("-inf")
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported
        resp, lower = _responsibilities(points, params)
        params = _drop_empty(_m_step(points, resp, reg_covar), resp.sum(0), min_count)
        if abs(lower - previous) < tol:
            converged = True
            break
        previous = lower
    params.converged, params.n_iter, params.lower_bound = converged, n_iter, lower
    return params


def gmm_posteriors(points: np.ndarray, params: GMMParams, *, chunk: int = 1 << 18) -> np.ndarray:
    """Posterior of each component for every point, float32 ``[N, K]``, in chunks."""
    points = _as_points(points)
    out = np.empty((len(points), len(params.weights)), dtype=np.float32)
    for start in range(0, len(points), chunk):
        out[start : start + chunk] = _responsibilities(points[start : start + chunk], params)[0]
    return out


def fit_kmeans(
    points: np.ndarray, *, n_components: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """k-means instead of a GMM (the paper's ablation): ``(assignments [N], centers [K, D])``.

    At most as many centers as there are distinct points, and only those that got points.
    """
    points = _as_points(points)
    km = _kmeans(points, n_components, n_init=3, seed=seed)
    used, labels = np.unique(km.labels_, return_inverse=True)
    return labels.astype(np.int64), km.cluster_centers_[used].astype(np.float64)


def name_components(means: np.ndarray) -> list[str]:
    """Name mixture components from their means ``(a, m)`` ``[K, 2]`` (or ``(a,)`` ``[K, 1]``).

    K = 5, DESIGN.md's rule: CS = highest a; CH = second-highest a; of the other three NS =
    largest m - a; of the last two NHR = the higher a, NHI = the other. Ablations: K = 4 ->
    CS, CH, NS, NHI; K = 3 -> CS, NS, NHI; K = 2 -> CS, NHI (1-D, by a alone).

    Fewer live components than asked for (:func:`fit_gmm` drops emptied ones) are named by
    the rule for their number, so a role never goes to a component without points. Two 2-D
    components are CS and NS: the clean diagonal and the blob furthest above it, the two
    groups the paper's refinement treats differently (keep vs relabel). One is CS.
    """
    means = np.asarray(means, dtype=np.float64)
    k = len(means)
    a = means[:, 0]
    two_d = means.shape[1] > 1
    gap = means[:, 1] - a if two_d else np.zeros(k)
    names = [""] * k
    order = list(np.argsort(-a, kind="stable"))
    names[order.pop(0)] = "CS"
    if k >= 4:
        names[order.pop(0)] = "CH"
    if k >= 3 or (k == 2 and two_d):
        ns = max(order, key=lambda j: gap[j])
        names[ns] = "NS"
        order.remove(ns)
    if len(order) == 2:
        names[order[0]], names[order[1]] = "NHR", "NHI"  # order is by decreasing a
    elif len(order) == 1:
        names[order[0]] = "NHI"
    return names


def refine(
    cluster_names: np.ndarray, given_labels: np.ndarray, pseudo_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster refinement (paper 3.2): ``(admit [N] bool, labels [N] int64, -1 if not)``.

    CS and CH keep a sample with its given label only when ``my == ay``; NS keeps it with
    ``my`` only when ``my != ay``; NHR and NHI are never admitted.
    """
    names = np.asarray(cluster_names)
    agree = pseudo_labels == given_labels
    clean = np.isin(names, ("CS", "CH")) & agree
    noisy = (names == "NS") & ~agree
    labels = np.where(clean, given_labels, np.where(noisy, pseudo_labels, -1)).astype(np.int64)
    return clean | noisy, labels


def update_training_set(
    in_t: np.ndarray,
    t_labels: np.ndarray,
    admitted_epoch: np.ndarray,
    admit: np.ndarray,
    labels: np.ndarray,
    *,
    epoch: int,
    rule: str = "latest",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grow or replace T (Algorithm 1, lines 17-20); returns new ``(in_t, t_labels, epochs)``.

    ``union`` (the paper): once admitted a sample stays, with the label of its latest
    admission; ``admitted_epoch`` is its first admission. ``latest``: T is this epoch's
    refined clusters; ``admitted_epoch`` is when its current stay in T began.
    """
    new_epoch = np.where(admit & ~in_t, epoch, admitted_epoch).astype(np.int32)
    if rule == "union":
        return in_t | admit, np.where(admit, labels, t_labels).astype(np.int64), new_epoch
    if rule == "latest":
        return (
            admit.copy(),
            np.where(admit, labels, -1).astype(np.int64),
            np.where(admit, new_epoch, -1).astype(np.int32),
        )
    raise ValueError(f"unknown T update rule {rule!r}")
