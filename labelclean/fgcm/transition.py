"""The given label as evidence for the guess that replaces it.

A flagged row's guess used to be the class the network found likeliest for the image. The
given label says more than "wrong": people (and scrapers) confuse some classes far more
often than others, and a doubtful label is still right more often than any one other class
the network half believes. With a class-conditional noise model, Bayes gives the guess

    P(true = c | image, given = g)  ∝  P(c | image) · P(given = g | true = c),

the network's softmax weighed by the noise transition matrix. The matrix is counted over
the cleaned labels, each row's kept or relabeled label or its plain guess, which stand in
for the truth (the network's guesses of wrong labels are the only estimate of what they
should be); one add-one count per cell keeps a confusion never seen possible.

Ours, not the paper's, whose guess is the max-repeating prediction. It is the label
posterior of forward loss correction (Patrini et al. 2017) applied to the guess alone: the
flags do not change. It needs a softmax not fitted to the row's own label: the audit's
semi-supervised epilogue (:mod:`labelclean.fgcm.semi`, whose network then trains on the
flagged rows as unlabeled) and the frozen audit's cross-fitted heads (which never see it).
A network fitted to every given label already leans to each row's own, and weighing it
again counts the label twice. Measured on the saved trainings
(benchmarks/RESULTS.md, "The given label as evidence"): cleaned labels on CIFAR-10N "worst"
76.6% -> 77.8% right, at 40% pair noise 80.0% -> 83.5%, none of 10 trainings worse; frozen
heads on photos at 40% pair noise 98.0% -> 98.8%, at symmetric noise within a tenth of a
point on average (down .2-.4 on one seed of three).

Bayes needs a calibrated softmax. The frozen audit's heads train on mixup blends and their
recordings are half neighbours' votes: too flat, so a wrong given label's small share came
back through the weighing. Their softmax is first tempered to the temperature under which
it best explains every row's given label through the same matrix (:func:`fit_temperature`;
the heads never saw those labels, so the fit is honest). The epilogue's network trained on
the kept rows' labels, and its flagged rows alone are a biased sample, so its softmax is
used as it is (tempering it either way was worse on human labels). Measured on ten noise
draws of the imagenette-dev photos (benchmarks/RESULTS.md, "A calibrated softmax for the
frozen heads' guesses"): fitted t .45-.56, cleaned labels 98.24% -> 98.70% at 40% symmetric
noise and 98.60% -> 99.15% at 20% (every draw up), 98.60% -> 98.65% at 40% pair noise.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

#: Softmax cells (rows x classes) the temperature is fitted on, at most: above it a seeded
#: random subset of rows. A one-parameter fit needs few rows, and each try tempers a float64
#: copy of them (80 MB here: 1,000,000 rows of 10 classes or 10,000 of 1,000).
TEMPERATURE_FIT_CELLS = 10_000_000


def transition_matrix(
    labels: npt.NDArray[np.integer], given: npt.NDArray[np.integer], n_classes: int
) -> npt.NDArray[np.float64]:
    """``[C, C]``: row c is P(given = g | label = c), counted with one added per cell."""
    counts = np.ones((n_classes, n_classes))
    np.add.at(counts, (np.asarray(labels), np.asarray(given)), 1.0)
    matrix: npt.NDArray[np.float64] = counts / counts.sum(axis=1, keepdims=True)
    return matrix


def weigh_by_given(
    probs: npt.NDArray[np.floating],
    given: npt.NDArray[np.integer],
    transition: npt.NDArray[np.float64],
) -> npt.NDArray[np.int64]:
    """The guess per row: argmax over c of ``probs[:, c] * transition[c, given]``."""
    weighed = np.asarray(probs, dtype=np.float64) * transition[:, np.asarray(given)].T
    guesses: npt.NDArray[np.int64] = weighed.argmax(axis=1).astype(np.int64)
    return guesses


def temper(probs: npt.NDArray[np.floating], temperature: float) -> npt.NDArray[np.float64]:
    """``probs`` to the power 1 / ``temperature``, each row renormalised (under 1: sharper)."""
    return _renormalised(_logs(probs) / temperature)


def _logs(probs: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """float64 log of ``probs``, clipped away from 0."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None))


def _renormalised(logs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each row of ``exp(logs)`` divided by its sum (the row's max subtracted first)."""
    tempered = np.exp(logs - logs.max(axis=1, keepdims=True))
    out: npt.NDArray[np.float64] = tempered / tempered.sum(axis=1, keepdims=True)
    return out


def fit_temperature(
    probs: npt.NDArray[np.floating],
    given: npt.NDArray[np.integer],
    transition: npt.NDArray[np.float64],
) -> float:
    """The temperature that makes the softmax explain the given labels best through the noise.

    Maximum likelihood of each row's given label g under sum over c of
    ``temper(probs)[c] * transition[c, g]``, over every row (``probs`` ``[N, C]``, from
    predictions that never saw the row's label); searched between 0.05 and 20.
    """
    from scipy.optimize import minimize_scalar

    probs, given = np.asarray(probs), np.asarray(given)
    most = max(1, TEMPERATURE_FIT_CELLS // probs.shape[1])
    if len(given) > most:
        rows = np.random.default_rng(0).choice(len(given), most, replace=False)
        probs, given = probs[rows], given[rows]
    columns = transition[:, given].T  # [rows, C]: P(given = g_i | true = c)
    logs = _logs(probs)  # once: each try only rescales them

    def loss(log_t: float) -> float:
        likelihood = (_renormalised(logs / math.exp(log_t)) * columns).sum(axis=1)
        return float(-np.log(np.maximum(likelihood, 1e-300)).mean())

    best = minimize_scalar(loss, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(best.x))


def guess_flagged(
    probs: npt.NDArray[np.floating],
    given: npt.NDArray[np.integer],
    clean: npt.NDArray[np.integer],
    plain: npt.NDArray[np.integer],
    *,
    every_row: npt.NDArray[np.floating] | None = None,
) -> tuple[npt.NDArray[np.int64], float]:
    """The weighed guesses of the flagged rows, in row order, and the softmax's temperature.

    ``clean``: every row's kept or relabeled label, -1 where flagged; ``probs`` and
    ``plain``: the flagged rows' softmax and plain guess. The transition matrix is counted
    over the cleaned labels, ``clean`` with ``plain`` filled in; ``given``: every row's
    given label. ``every_row``: every row's softmax, out of fold: the flagged rows' softmax
    is tempered to :func:`fit_temperature` on it first; without it the temperature is 1.
    """
    flagged = np.asarray(clean) < 0
    cleaned = np.array(clean, dtype=np.int64)
    cleaned[flagged] = plain
    transition = transition_matrix(cleaned, given, np.shape(probs)[1])
    temperature = 1.0 if every_row is None else fit_temperature(every_row, given, transition)
    if temperature != 1.0:
        probs = temper(probs, temperature)
    return weigh_by_given(probs, np.asarray(given)[flagged], transition), temperature
