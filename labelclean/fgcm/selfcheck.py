"""The audit's self-check: how many of its cleaned labels (and of the given ones) are right.

Nothing in an audit's report says whether to trust it: a short run can leave fewer labels
right than it was given and look as confident as a good one (issue 39: a 12-epoch audit of
1,500 CIFAR images left 47.9% right against 58.5% given). The self-check estimates, from
evidence the run has and without the truth, the share of rows whose given label is right and
the share whose cleaned label (the final label, or the guess where the audit unlabeled) is.

Not yet called by the audit: measured on the dev sets (benchmarks/results/self_check.csv) it
is within 3 points where the noise follows the class (digits, photos with planted noise) and
on crowd consensus, but 5-17 points too kind on one person's labels per image (CIFAR-10N
rand1, worst), whose mistakes follow the image, and a report must not show a figure that
misleads. ``benchmarks/self_check.py`` measures it on saved runs.

The evidence must not be fitted to each row's own label: a network trained on the given
labels agrees with them, wrong ones included, so its softmax would vouch for them. So

- the frozen audit uses its cross-fitted heads' recordings (each row's from a head that never
  trained on it, :mod:`labelclean.fgcm.frozen`);
- an audit that trains a network uses a cross-fitted probe (:func:`cross_fitted_probe`): a
  multinomial logistic regression on the saved network's penultimate features, fitted
  ``folds`` times on the given labels of the other folds and read on its own fold.

Then Bayes with a class-conditional noise model, as for the unlabeled rows' guesses
(:mod:`labelclean.fgcm.transition`): each row's posterior over its true class

    P(true = c | image, given = g)  ∝  P(true = c | image) · T[c, g],

and the expected share of right labels of any labelling is the mean over rows of the
posterior of its label. Two models read the evidence (:func:`estimate_right`): *sharp*
(:func:`posterior`: the evidence, tempered to the temperature under which it explains the
given labels best through the noise, is P(true | image); the transition is counted over the
posterior, a few rounds of EM started from the cleaned labels) and *calibrated*
(:func:`calibrated_posterior`: the evidence is a calibrated P(given | image), the transition
comes from its anchors and is taken out by its inverse; nothing sharpened). The sharp model
is the estimate (it measured best); with a weak network (a short run) sharpening makes it
sure of the very guesses the audit made, so when the calibrated model finds the cleaned
labels no better than the given ones, the audit warns that they may not be (``doubt``).

The interval is a bootstrap over rows of the sharp model's posterior (fitted once),
widened to take in the calibrated model's estimate: it covers the sampling of the images
and the choice between the two models, not label noise that depends on the image rather
than its class (people's mistakes often do: on CIFAR-10N "worst" the given labels looked 17
points better than they are), nor evidence that still leans to the given labels. The
measured errors against truth (README "The self-check", benchmarks/self_check.py) are the
guide to that part.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from labelclean.fgcm.transition import fit_temperature, temper, transition_matrix

if TYPE_CHECKING:  # torch only where a network is read: the report reads this module too
    from torch import nn

    from labelclean.fgcm.result import AuditResult
    from labelclean.fgcm.run import AuditRun
    from labelclean.fgcm.state import AuditState

logger = logging.getLogger(__name__)

#: Rounds of expectation-maximisation of the transition and the temperature.
EM_ROUNDS = 10
#: Bootstrap resamples of the rows for the interval.
BOOTSTRAP = 50
#: At most this many report rows, and rows x classes, are read (:func:`check_rows`).
MAX_ROWS = 50_000
MAX_CELLS = 5_000_000
#: Central share of the bootstrap distribution the interval spans.
COVERAGE = 0.9
#: Folds of the cross-fitted probe.
PROBE_FOLDS = 5
#: L2 penalty of the probe (on standardised features, per row of the mean loss).
PROBE_L2 = 1e-3
#: The report's ``method`` for each kind of evidence.
PROBE = "cross-fitted probe on the network's features + noise transition (Bayes)"
HEADS = "cross-fitted heads + noise transition (Bayes)"
IN_SAMPLE = "recorded softmax, fitted to the labels (optimistic) + noise transition (Bayes)"


def posterior(
    probs: npt.NDArray[np.floating],
    given: npt.NDArray[np.integer],
    cleaned: npt.NDArray[np.integer],
    *,
    rounds: int = EM_ROUNDS,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
    """``(P(true = c | image, given) [N, C], transition [C, C], temperature)``.

    ``probs``: evidence not fitted to each row's label; ``given``, ``cleaned``: class codes.
    The transition starts from the cleaned labels against the given ones and is then counted
    over the posterior; the temperature is refitted to it each round.
    """
    evidence = np.asarray(probs, dtype=np.float64)
    given = np.asarray(given, dtype=np.int64)
    n_classes = evidence.shape[1]
    transition = transition_matrix(np.asarray(cleaned), given, n_classes)
    onehot = np.zeros_like(evidence)
    onehot[np.arange(len(given)), given] = 1.0
    temperature = 1.0
    post = evidence
    for _ in range(max(1, rounds)):
        temperature = fit_temperature(evidence, given, transition)
        post = temper(evidence, temperature) * transition[:, given].T
        post /= np.maximum(post.sum(axis=1, keepdims=True), 1e-300)
        counts = 1.0 + post.T @ onehot  # one added per cell, as transition_matrix
        transition = counts / counts.sum(axis=1, keepdims=True)
    return post, transition, temperature


#: Percentile of each class's evidence above which rows count as that class's anchors.
ANCHOR_PERCENTILE = 99


def anchor_transition(probs: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """``[C, C]``: row c is the mean softmax of the rows likeliest to be of class c.

    The anchor estimate of forward loss correction (Patrini et al. 2017): where the
    evidence is surest of class c (its top :data:`ANCHOR_PERCENTILE` percentile), the true
    class is c, so the softmax of labels there is P(given | true = c).
    """
    probs = np.asarray(probs, dtype=np.float64)
    rows = []
    for c in range(probs.shape[1]):
        column = probs[:, c]
        rows.append(probs[column >= np.percentile(column, ANCHOR_PERCENTILE)].mean(axis=0))
    matrix = np.asarray(rows)
    out: npt.NDArray[np.float64] = matrix / matrix.sum(axis=1, keepdims=True)
    return out


def calibrated_posterior(
    probs: npt.NDArray[np.floating], given: npt.NDArray[np.integer]
) -> npt.NDArray[np.float64]:
    """P(true = c | image, given) reading ``probs`` as P(given = c | image), calibrated.

    The cautious noise model: the evidence (trained on the given labels, out of fold) is
    tempered to explain the given labels themselves, the transition comes from its anchors
    (:func:`anchor_transition`), and the true class's softmax is the evidence with the noise
    taken out (``probs @ inverse(T)``, clipped at 0). Nothing is sharpened: a weak network's
    doubts stay doubts.
    """
    given = np.asarray(given, dtype=np.int64)
    n_classes = np.shape(probs)[1]
    calibrated = temper(probs, fit_temperature(probs, given, np.eye(n_classes)))
    transition = anchor_transition(calibrated)
    clean = np.clip(calibrated @ np.linalg.pinv(transition), 1e-6, None)
    clean /= clean.sum(axis=1, keepdims=True)
    post = clean * transition[:, given].T
    out: npt.NDArray[np.float64] = post / np.maximum(post.sum(axis=1, keepdims=True), 1e-300)
    return out


def _rates(post: np.ndarray, given: np.ndarray, cleaned: np.ndarray) -> tuple[float, float]:
    """The expected shares of right given and cleaned labels under posterior ``post``."""
    rows = np.arange(len(given))
    return float(post[rows, given].mean()), float(post[rows, cleaned].mean())


def estimate_right(
    probs: npt.NDArray[np.floating],
    given: npt.NDArray[np.integer],
    cleaned: npt.NDArray[np.integer],
    *,
    boot: int = BOOTSTRAP,
    seed: int = 0,
    method: str = "",
) -> dict[str, Any]:
    """The expected share of right given and cleaned labels, each with an interval.

    Two noise models read the same evidence: ``sharp`` (:func:`posterior`: the evidence,
    tempered through the noise, is the true class's softmax) and ``calibrated``
    (:func:`calibrated_posterior`: the evidence is a calibrated softmax of the given labels;
    nothing sharpened). The estimate is the sharp model's, the one that measured best
    (README "The self-check"); the interval is a bootstrap over rows of it, widened to take
    in the calibrated model's estimate. ``doubt`` is set when the calibrated model finds
    the cleaned labels no better than the given ones while the sharp one finds them better:
    a short run's weak network looks sure of its own guesses once sharpened, so that
    disagreement is worth a warning of its own (it also fired on two good audits).

    Returns the report's ``self_check`` entry: ``given_right`` and ``cleaned_right``
    (``estimate``, ``low``, ``high``: shares in [0, 1]), ``method``, ``model`` (the one
    estimated with), ``models`` (both models' estimates), ``doubt``, ``n`` (rows),
    ``coverage`` (of the bootstrap) and ``expect_better`` (the cleaned labels expected
    right more often).
    """
    given = np.asarray(given, dtype=np.int64)
    cleaned = np.asarray(cleaned, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n = len(given)
    if n == 0:
        raise ValueError("the self-check needs at least one row")
    sharp = posterior(probs, given, cleaned)[0]
    rows = np.arange(n)
    per_row = np.stack([sharp[rows, given], sharp[rows, cleaned]], axis=1)  # [N, 2]
    models = {"sharp": _rates(sharp, given, cleaned)}
    models["calibrated"] = _rates(calibrated_posterior(probs, given), given, cleaned)
    chosen = "sharp"
    point, other = models["sharp"], models["calibrated"]
    tail = (1 - COVERAGE) / 2
    spread = None
    if boot > 0:  # rows resampled, the posterior fitted once: the interval is the rows' part
        picks = np.random.default_rng(seed).integers(0, n, (boot, n))
        drawn = per_row[picks].mean(axis=1)  # [boot, 2]
        spread = np.quantile(drawn, [tail, 1 - tail], axis=0) - drawn.mean(0) + np.asarray(point)

    def entry(k: int) -> dict[str, float]:
        est = float(point[k])
        low = float(np.clip(spread[0, k], 0, 1)) if spread is not None else est
        high = float(np.clip(spread[1, k], 0, 1)) if spread is not None else est
        return {
            "estimate": round(est, 4),
            "low": round(min(low, est, other[k]), 4),
            "high": round(max(high, est, other[k]), 4),
        }

    given_right, cleaned_right = entry(0), entry(1)
    return {
        "given_right": given_right,
        "cleaned_right": cleaned_right,
        "expect_better": cleaned_right["estimate"] > given_right["estimate"],  # for readers
        "method": method,
        "model": chosen,
        "doubt": bool(point[1] > point[0] and other[1] <= other[0]),
        "models": {
            m: {"given_right": round(g, 4), "cleaned_right": round(c, 4)}
            for m, (g, c) in models.items()
        },
        "n": n,
        "coverage": COVERAGE,
    }


def penultimate_features(
    model: nn.Module, batches: Any, index: npt.NDArray[np.integer], *, batch_size: int
) -> npt.NDArray[np.float32]:
    """The input of ``model``'s last linear layer for samples ``index`` (eval mode, float32).

    Every built-in network and timm classifier ends in one linear layer on pooled features;
    a forward hook reads what it is given, whatever the architecture.
    """
    import torch
    from torch import nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the network has no linear layer to read features from")
    seen: list[Any] = []
    handle = linears[-1].register_forward_hook(
        lambda _m, inputs, _out: seen.append(inputs[0].detach().float().flatten(1).cpu())
    )
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(index), batch_size):
                x = batches.prepare(batches.load(np.asarray(index[start : start + batch_size])))
                with batches.precision.autocast():
                    model(x)
    finally:
        handle.remove()
    return torch.cat(seen).numpy() if seen else np.zeros((0, 0), dtype=np.float32)


def cross_fitted_probe(
    features: npt.NDArray[np.floating],
    labels: npt.NDArray[np.integer],
    n_classes: int,
    *,
    folds: int = PROBE_FOLDS,
    seed: int = 0,
    l2: float = PROBE_L2,
) -> npt.NDArray[np.float64]:
    """Out-of-fold softmax ``[N, C]`` of a logistic regression of ``labels`` on ``features``.

    Each fold's rows are read by a probe fitted on the other folds only (scikit-learn's
    multinomial logistic regression on standardised features, penalty ``l2`` per row), so no
    row's softmax saw its own label. A class absent from a fold's training rows gets 0.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(features, dtype=np.float64)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    fold = np.random.default_rng(seed).permutation(n) % max(2, min(folds, n))
    out = np.zeros((n, n_classes))
    for k in np.unique(fold):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        seen = np.unique(y[train])
        if len(seen) < 2:  # one class only: it is all the probe can say
            out[np.ix_(test, seen)] = 1.0
            continue
        probe = LogisticRegression(C=1.0 / (2 * max(l2, 1e-12) * len(train)), max_iter=200)
        with warnings.catch_warnings():  # a few hundred steps are plenty for a probability
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(x[train], y[train])
        out[np.ix_(test, probe.classes_)] = probe.predict_proba(x[test])
    return out


def describe(check: dict[str, Any]) -> str:
    """The self-check in one sentence, e.g. for stderr and the report's first screen."""

    def pct(entry: dict[str, float]) -> str:
        return (
            f"{100 * entry['estimate']:.0f}% ({100 * entry['low']:.0f}-{100 * entry['high']:.0f}%)"
        )

    return (
        f"the audit expects {pct(check['cleaned_right'])} of its labels to be right, "
        f"against {pct(check['given_right'])} of the given ones"
    )


def read_check(metadata: Any) -> dict[str, Any] | None:
    """A report's ``self_check`` when it has one of the right shape, else None.

    Reports written before the self-check have none; a damaged entry is ignored rather than
    breaking the page that shows it.
    """
    check = metadata.get("self_check") if isinstance(metadata, dict) else None
    if not isinstance(check, dict):
        return None
    for key in ("given_right", "cleaned_right"):
        entry = check.get(key)
        if not isinstance(entry, dict):
            return None
        for part in ("estimate", "low", "high"):
            value = entry.get(part)
            if not isinstance(value, int | float) or not math.isfinite(value):
                return None
    return check


def expect_better(check: dict[str, Any]) -> bool:
    """Whether the cleaned labels are expected to be right more often than the given ones."""
    return float(check["cleaned_right"]["estimate"]) > float(check["given_right"]["estimate"])


def warning(check: dict[str, Any] | None) -> str | None:
    """The warning when the cleaned labels may not beat the given ones, else None.

    Either the estimate says so, or (``doubt``) the cautious noise model does.
    """
    if not check:
        return None
    advice = (
        "do not use them as they are (train longer, use --frozen with a pretrained backbone, "
        "or review the flagged images)"
    )
    if not expect_better(check):
        return (
            f"self-check: {describe(check)}: the cleaned labels are not expected to be better "
            f"than the given ones; {advice}"
        )
    cautious = (check.get("models") or {}).get("calibrated") or {}
    if check.get("doubt") and _numbers_in(cautious):
        return (
            f"self-check: {describe(check)}, but a cautious noise model expects "
            f"{100 * cautious['cleaned_right']:.0f}% against "
            f"{100 * cautious['given_right']:.0f}%: the cleaned labels may not be better than "
            f"the given ones; check a sample of them by hand before using them"
        )
    return None


def _numbers_in(entry: Any) -> bool:
    return isinstance(entry, dict) and all(
        isinstance(entry.get(k), int | float) for k in ("given_right", "cleaned_right")
    )


def report_codes(frame: Any, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(given, cleaned)`` class codes of a report's rows.

    Cleaned = ``clean_label``, or the guess (``pseudo_label``) where the audit unlabeled:
    what ``labelclean evaluate`` scores as the cleaned labels.
    """
    code = {name: k for k, name in enumerate(class_names)}
    given = frame["given_label"].map(code).to_numpy(dtype=np.int64)
    clean = frame["clean_label"].map(code)
    guess = frame["pseudo_label"].map(code)
    cleaned = clean.where(clean.notna(), guess).to_numpy(dtype=np.int64)
    return given, cleaned


def check_rows(n_samples: int, n_classes: int, seed: int) -> npt.NDArray[np.int64]:
    """The report rows the self-check reads: all, or a seeded random :data:`MAX_CELLS` share.

    The estimates are means over rows, so a random subset of tens of thousands pins them
    to a fraction of a point (the bootstrap says how closely), and a million-image audit
    pays for one forward pass over them, not over every image.
    """
    most = max(1, min(MAX_ROWS, MAX_CELLS // max(1, n_classes)))
    if n_samples <= most:
        return np.arange(n_samples, dtype=np.int64)
    rows = np.random.default_rng(seed).choice(n_samples, most, replace=False)
    return np.sort(rows).astype(np.int64)


def audit_evidence(
    result: AuditResult, state: AuditState, run: AuditRun, rows: npt.NDArray[np.int64]
) -> tuple[Any, str]:
    """``(softmax [len(rows), C], method)`` of report ``rows``: evidence not fitted to them.

    A frozen audit with cross-fitted heads: their late-window recordings. An audit that saved
    a network: :func:`cross_fitted_probe` on that network's penultimate features. Anything
    else (one frozen head on every row): its recordings, which saw the labels (optimistic).
    """
    if result.network is None or run.config.frozen:
        probs = np.empty_like(state.history.sums, dtype=np.float64)
        probs[run.canon] = state.history.mean_confidence(window="late")  # -> report order
        if run.config.recordings_memorise(run.model_name):
            return probs[rows], IN_SAMPLE
        return probs[rows], HEADS
    from labelclean.fgcm.run import ReindexedBatches

    batches = run.batches.inner if isinstance(run.batches, ReindexedBatches) else run.batches
    model = copy.deepcopy(run.model)  # the audit's own stays as training left it
    model.load_state_dict(result.network)
    features = penultimate_features(model, batches, rows, batch_size=max(run.batch_size * 2, 256))
    given, _ = report_codes(result.to_pandas(), list(result.metadata["class_names"]))
    return cross_fitted_probe(features, given[rows], run.n_classes, seed=run.config.seed), PROBE


def with_self_check(result: AuditResult, state: AuditState, run: AuditRun) -> AuditResult:
    """``result`` with ``self_check`` in its metadata; its warning goes to stderr (logged).

    ``labelclean report`` and the HTML page read the warning back from ``self_check``
    (:func:`warning`), so it is not repeated under the metadata's ``warnings``.
    """
    if not run.dist.is_main or run.n_samples == 0:
        return result
    rows = check_rows(run.n_samples, run.n_classes, run.config.seed)
    probs, method = audit_evidence(result, state, run, rows)
    given, cleaned = report_codes(result.to_pandas(), list(result.metadata["class_names"]))
    check = estimate_right(probs, given[rows], cleaned[rows], seed=run.config.seed, method=method)
    check["of"] = run.n_samples  # rows of the report; ``n`` of them were read
    metadata = dict(result.metadata)
    metadata["self_check"] = check
    logger.info("self-check: %s", describe(check))
    said = warning(check)
    if said:
        logger.warning(said)
    result.metadata = metadata
    return result


__all__ = [
    "audit_evidence",
    "check_rows",
    "cross_fitted_probe",
    "describe",
    "estimate_right",
    "expect_better",
    "penultimate_features",
    "anchor_transition",
    "calibrated_posterior",
    "posterior",
    "read_check",
    "warning",
    "with_self_check",
]
