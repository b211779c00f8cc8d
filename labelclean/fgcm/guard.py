"""Our guards against making labels dirtier, as pure functions and their composition.

None of this is in the paper (README "How it works", DESIGN.md "Low noise"). Each guard
decides on arrays alone, so each is tested without training anything:

- :func:`unsure_relabels`: NS samples whose new label the model is not sure enough of; they
  are unlabeled (NHI) instead of relabeled. Reason code ``unsure_relabel``.
- :func:`flag_budget`: at low noise the forced 5-way split flags far more samples than are
  wrong; samples go back to CH with their given label until the flags fit the budget.
  Reason code ``budget``.
- :func:`partly_disputed`: in the report of a run with little noise, a label the network
  disputes in only some of the late epochs is kept, unless its class pair was flipped
  systematically (:func:`flip_shares`). Reason code ``partly_disputed``.
- :func:`class_floor`: no class may drop out of T. Reason code ``class_floor``.

:func:`apply_guard` runs them in that order on one clustering and records, per sample,
which guard moved it last (:data:`GUARD_REASONS`; the report's ``guard`` column).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from labelclean.fgcm.clustering import CLUSTER_NAMES

#: Per-sample reason codes: index 0 (None) means no guard moved the sample (null in the report).
#: ``semi_agrees`` comes after the clustering, from the audit's epilogue (labelclean.fgcm.semi).
GUARD_REASONS = (None, "unsure_relabel", "budget", "class_floor", "partly_disputed", "semi_agrees")
#: Room above the flag budget's estimate while the clusters pick the training set T.
TRAINING_SLACK = 0.25
#: Above this share of disputed labels, a label disputed in only some late epochs is flagged.
HIGH_NOISE_SHARE = 1 / 3
#: Above this share of one class pair's labels, that pair's partly disputed labels are flagged.
SYSTEMATIC_PAIR_SHARE = 1 / 4
_CS, _CH, _NS, _NHI = (CLUSTER_NAMES.index(n) for n in ("CS", "CH", "NS", "NHI"))


def class_thresholds(joint: np.ndarray, given_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class confidence thresholds ``[C]``: the mean confidence of each class's given label.

    ``t_j`` = mean of ``a`` over samples labeled ``j`` (confident learning's per-class
    threshold, Northcutt et al. 2021): how confident the model typically is in a class. A
    class no sample is given (all its images rejected) has no typical confidence: its
    threshold is ``+inf``, so no pseudo label of that class ever counts as sure.
    """
    sums = np.bincount(given_labels, weights=joint[:, 0], minlength=n_classes)
    counts = np.bincount(given_labels, minlength=n_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf).astype(np.float32)


def sure_pseudo_labels(
    joint: np.ndarray, pseudo_labels: np.ndarray, thresholds: np.ndarray
) -> npt.NDArray[np.bool_]:
    """``[N]`` bool: the mean confidence of ``my`` reaches the threshold of its class."""
    sure: npt.NDArray[np.bool_] = joint[:, 1] >= thresholds[pseudo_labels]
    return sure


def confident_noise_rate(
    joint: np.ndarray, given_labels: np.ndarray, pseudo_labels: np.ndarray, thresholds: np.ndarray
) -> float:
    """Estimated share of wrong labels: the model prefers another class, and is sure of it.

    Confident learning's off-diagonal count (Northcutt et al. 2021), with the max-repeating
    pseudo label as the prediction: a sample counts when ``my != ay`` and the mean
    confidence of ``my`` reaches that class's threshold (:func:`class_thresholds`). Unlike
    the raw disagreement ``mean(my != ay)``, it does not count the samples a weak model has
    simply not learned yet (measured on 10,000 CIFAR images at 5% noise with the small CPU
    network: disagreement 19.2%, this estimate 5.5%).
    """
    confident = (pseudo_labels != given_labels) & sure_pseudo_labels(
        joint, pseudo_labels, thresholds
    )
    return float(confident.mean())


def unsure_relabels(
    codes: np.ndarray,
    joint: np.ndarray,
    given_labels: np.ndarray,
    pseudo_labels: np.ndarray,
    thresholds: np.ndarray,
) -> np.ndarray:
    """NS samples to unlabel instead of relabel: ``[N]`` bool.

    An NS sample is relabeled only when the mean confidence of its pseudo label reaches that
    class's threshold (:func:`class_thresholds`). With the paper's strong networks NS is
    confident anyway; with a small CPU network, weak guesses would otherwise replace correct
    labels.

    Args:
        codes: Cluster codes ``[N]`` (indices into CLUSTER_NAMES).
        joint: Joint confidences ``[N, 2]``.
        given_labels: ``[N]``.
        pseudo_labels: ``[N]``.
        thresholds: ``[C]`` from :func:`class_thresholds`.
    """
    disagree: npt.NDArray[np.bool_] = pseudo_labels != given_labels
    ns: npt.NDArray[np.bool_] = codes == _NS
    return ns & disagree & ~sure_pseudo_labels(joint, pseudo_labels, thresholds)


def flag_budget(
    kept: np.ndarray,
    joint: np.ndarray,
    given_labels: np.ndarray,
    pseudo_labels: np.ndarray,
    thresholds: np.ndarray,
    *,
    method: str = "budget",
    slack: float = TRAINING_SLACK,
) -> tuple[np.ndarray, float]:
    """Samples to move back to CH with their given label: ``([N] bool, estimated noise)``.

    At low noise the clean samples form one long diagonal ``a = m`` (``my == ay`` puts a
    point exactly on it), and a forced 5-way split cuts its lower, harder part into NHR/NHI,
    unlabeling correct labels: 35% flagged on ~9% real noise. The budget caps what FGCM
    flags at ``eps * (1 + slack)``; when the clusters flag more, samples go back, highest
    given-label confidence first, until the cap is met. At high noise the cap is loose and
    the paper's split stands. The two methods differ in ``eps`` and in what may go back:

    - ``budget``: ``eps`` is the model's disagreement ``mean(my != ay)``, the noise it has
      not memorised; only agreeing samples go back, so T holds only labels the model agrees
      with, as in the paper. For networks that fit their training set.
    - ``confident``: ``eps`` is the :func:`confident_noise_rate`; agreeing samples go back
      first, then disagreeing ones the model is unsure of. For a network that underfits
      (the small CPU network): it disagrees with many right labels it has not learned, so
      its disagreement overstates the noise, and it is too small to memorise the wrong
      labels it is trained on. A network that can memorise must not use it: a frozen-
      feature head trained on its unsure disagreements learned them and flagged 1.9% at
      20% noise; and the estimate counts too few where the model is overconfident.

    The confident disagreements are never moved, so NS relabels are unchanged.

    ``slack`` is :data:`TRAINING_SLACK` while the clusters choose what the network trains on:
    a sample flagged there is only left out of T, and leaving out a few right labels costs
    less than training on wrong ones. The report's own clustering uses
    :func:`report_slack`: 0 for ``budget`` on recordings that did not memorise the labels,
    so the report keeps every label the model agrees with and flags exactly those it
    disputes (README "How it works" has the figures).

    Args:
        kept: ``[N]`` bool, samples the clusters keep with their given label (CS/CH, agreeing).
        joint: Joint confidences ``[N, 2]``.
        given_labels: ``[N]``.
        pseudo_labels: ``[N]``.
        thresholds: ``[C]`` from :func:`class_thresholds`.
        method: ``budget`` or ``confident`` (see above).
        slack: Relative room above ``eps``.
    """
    agree = pseudo_labels == given_labels
    n = len(kept)
    if method == "confident":
        estimate = confident_noise_rate(joint, given_labels, pseudo_labels, thresholds)
        movable = agree | ~sure_pseudo_labels(joint, pseudo_labels, thresholds)
    elif method == "budget":
        estimate, movable = float((~agree).mean()), agree
    else:
        raise ValueError(f"unknown flag budget {method!r}")
    excess = n - int(kept.sum()) - int(np.ceil(estimate * (1 + slack) * n))
    moved = np.zeros(n, dtype=bool)
    candidates = np.flatnonzero(~kept & movable)
    if excess > 0 and len(candidates):
        # Agreeing samples first, then (confident only) unsure disagreeing ones.
        order = candidates[np.lexsort((-joint[candidates, 0], ~agree[candidates]))]
        moved[order[:excess]] = True
    return moved, estimate


def report_slack(method: str | None, *, memorised: bool) -> float:
    """The slack of the clustering that becomes the report (the one after the last epoch).

    ``budget`` on recordings that did not memorise the labels (``memorised`` False, see
    :meth:`~labelclean.config.AuditConfig.recordings_memorise`) caps the flags at the model's
    disagreement itself: the report keeps every label the model agrees with and flags the
    ones it disputes, where the clusters would also flag hard samples whose label the model
    agrees with (and at low noise, only the ones it disputes in every late epoch:
    :func:`partly_disputed`). Otherwise the cap keeps :data:`TRAINING_SLACK`: a memorised
    wrong label agrees too, and ``confident``'s estimate is of the noise itself, with an error.
    """
    return 0.0 if method == "budget" and not memorised else TRAINING_SLACK


def flip_shares(given_labels: np.ndarray, pseudo_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per sample, how often its label's flip happens: ``[N]`` float, 0 where none (agreeing).

    For a disputed label (given g, pseudo p): the share of the images the network calls p
    that carry label g, an estimate of how often true p images were labeled g. Where labels
    are confused at random it is small even at high noise (at most .21 on the CIFAR-10N
    label sets, .13 at 20% symmetric noise); a class pair flipped systematically stands out
    (.28-.39 at 40% asymmetric noise).
    """
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (given_labels, pseudo_labels), 1)
    called = np.maximum(counts.sum(axis=0), 1)
    share: npt.NDArray[np.float64] = counts[given_labels, pseudo_labels] / called[pseudo_labels]
    share[given_labels == pseudo_labels] = 0.0
    return share


def partly_disputed(
    flagged: np.ndarray,
    late_disputes: np.ndarray,
    late_epochs: int,
    disagreement: float,
    flip_share: np.ndarray,
) -> np.ndarray:
    """Flagged samples to keep with their given label in the report: ``[N]`` bool.

    ``late_disputes``: in how many of the ``late_epochs`` the network's argmax was not the
    given label. A label disputed in every late epoch is wrong most of the time in every
    setting measured; whether one disputed in only some of them is wrong follows the noise
    rate. Across the CIFAR-10N label sets, the odds that such a label is wrong were 2-3
    times the odds of a label being wrong at all, so it is more likely wrong than right
    only where over a quarter to a third of the labels are: 60% of them were wrong on
    "worst" (41% noise), 35% on "rand1" (18%), 24% on "aggre" (9%). No per-sample figure the run
    records tells those wrong ones from the right ones (benchmarks/RESULTS.md, "How many
    labels the report should flag"). So when the network disputes at most
    :data:`HIGH_NOISE_SHARE` of the labels (``disagreement``, an estimate of the noise rate
    that errs high at low noise), they keep their given label; above it they stay flagged.

    The same holds inside one class pair. ``flip_share`` (:func:`flip_shares`) is the noise
    rate of the sample's own pair (given g, pseudo p); where it exceeds
    :data:`SYSTEMATIC_PAIR_SHARE` the pair was flipped systematically and its partly
    disputed labels stay flagged. That estimate errs low, since the network learns part of
    a systematic flip, hence the low end of the range. Measured at 40% asymmetric noise
    (benchmarks/RESULTS.md, "Class pairs flipped systematically"): F1 .359 -> .486, cleaned
    .780 -> .797; no human label set has such a pair.

    It applies where the report flags exactly what the model disputes (no slack,
    :func:`report_slack`): networks that do not memorise and cross-fitted frozen heads. Those
    heads learn a class pair flipped 40% as a pair, so only with the pair exception does it
    help them (imagenette-dev at asym-40, three seeds: cleaned .976 -> .980, against .904 at
    seed 0 without the exception). The labels kept here are the report's best guess, not
    training targets: ``finetune`` trains on them as unlabeled
    (:func:`~labelclean.fgcm.finetune.split_report`).
    """
    if disagreement > HIGH_NOISE_SHARE or late_epochs == 0:
        return np.zeros(len(flagged), dtype=bool)
    keep: npt.NDArray[np.bool_] = (
        flagged & (late_disputes < late_epochs) & (flip_share <= SYSTEMATIC_PAIR_SHARE)
    )
    return keep


def class_floor(
    kept: np.ndarray,
    given_labels: np.ndarray,
    given_conf: np.ndarray,
    n_classes: int,
    *,
    share: float = 0.5,
) -> np.ndarray:
    """Samples to keep with their given label so that no class drops out of T: ``[N]`` bool.

    The network trains only on T, so a class it finds hard early can leave T; it then never
    predicts that class, every sample of it disagrees with its label, and the class is
    flagged whole (measured: CIFAR "cat" 0% kept at 5% noise with the small CPU network,
    56% of all samples flagged). Like UNICON's uniform selection, each class keeps at least
    ``share`` x the median class's kept fraction, its samples with the highest given-label
    confidence first. At the paper's noise levels the given label is still each class's
    plurality, so a class kept far below its peers is a failure of the network, not of the
    labels. A class no sample is given has nothing to keep and does not count in the median.

    Args:
        kept: ``[N]`` bool, samples the clusters keep with their given label.
        given_labels: ``[N]``.
        given_conf: ``[N]`` mean confidence of the given label (the ranking).
        n_classes: C.
        share: Fraction of the median class's kept share that every class keeps.
    """
    counts = np.bincount(given_labels, minlength=n_classes)
    kept_counts = np.bincount(given_labels[kept], minlength=n_classes)
    present = counts > 0
    rescue = np.zeros(len(kept), dtype=bool)
    if not present.any():
        return rescue
    floor = share * float(np.median(kept_counts[present] / counts[present]))
    need = np.maximum(np.ceil(floor * counts).astype(np.int64) - kept_counts, 0)
    if not need.any():
        return rescue
    candidates = np.flatnonzero(~kept)
    # By class, then by decreasing confidence: the rank inside a class block picks the top.
    order = candidates[np.lexsort((-given_conf[candidates], given_labels[candidates]))]
    cls = given_labels[order]
    rank = np.arange(len(order)) - np.searchsorted(cls, cls)
    rescue[order[rank < need[cls]]] = True
    return rescue


@dataclass
class GuardResult:
    """What :func:`apply_guard` decided for one clustering."""

    codes: np.ndarray  #: int8 [N], the guarded cluster codes
    keep_given: np.ndarray  #: bool [N], keep the given label whatever the pseudo label
    reason: np.ndarray  #: int8 [N], index into GUARD_REASONS of the guard that moved it last
    notes: list[str] = field(default_factory=list)  #: one sentence per guard that acted

    @property
    def note(self) -> str:
        """The notes as one line (``""`` when no guard acted)."""
        return ("guard: " + "; ".join(self.notes)) if self.notes else ""


def apply_guard(
    codes: np.ndarray,
    joint: np.ndarray,
    given_labels: np.ndarray,
    pseudo_labels: np.ndarray,
    *,
    n_classes: int,
    method: str = "budget",
    slack: float = TRAINING_SLACK,
    late_disputes: np.ndarray | None = None,
    late_epochs: int = 0,
) -> GuardResult:
    """The guards on one clustering: unsure relabels, budget, partly disputed, class floor.

    The partly disputed labels are kept only when ``late_disputes`` is given.

    Args:
        codes: Cluster codes ``[N]`` (indices into CLUSTER_NAMES).
        joint: Joint confidences ``[N, 2]``.
        given_labels: ``[N]``.
        pseudo_labels: ``[N]``.
        n_classes: C, from the manifest's class names (a class may have no sample).
        method: ``budget``, ``confident`` (see :func:`flag_budget`) or ``none``.
        slack: Relative room above the estimated noise (:func:`flag_budget`).
        late_disputes: ``[N]`` late epochs whose argmax disputed the given label, for the
            report's clustering where it judges exactly what the network disputes
            (:func:`partly_disputed`); None for the clusterings that choose T.
        late_epochs: K, the number of late epochs recorded.

    Returns:
        The guarded codes; the samples to keep with their given label whatever their pseudo
        label (unsure disagreements kept by ``confident``, and the class floor); the reason
        code of each sample; and a note per guard that acted.
    """
    if method not in ("none", "budget", "confident"):
        raise ValueError(f"unknown guard {method!r}")
    codes = np.array(codes, copy=True)
    reason = np.zeros(len(codes), dtype=np.int8)
    keep_given = np.zeros(len(codes), dtype=bool)
    if method == "none":
        return GuardResult(codes, keep_given, reason)
    notes = []
    thresholds = class_thresholds(joint, given_labels, n_classes)
    unsure = unsure_relabels(codes, joint, given_labels, pseudo_labels, thresholds)
    codes[unsure], reason[unsure] = _NHI, GUARD_REASONS.index("unsure_relabel")
    if unsure.any():
        notes.append(f"{int(unsure.sum())} NS samples below their class threshold unlabeled")
    agree = pseudo_labels == given_labels
    kept = np.isin(codes, (_CS, _CH)) & agree
    flagged = len(codes) - int(kept.sum())  # relabel + unlabel
    moved, estimate = flag_budget(
        kept, joint, given_labels, pseudo_labels, thresholds, method=method, slack=slack
    )
    codes[moved], reason[moved] = _CH, GUARD_REASONS.index("budget")
    kept |= moved
    keep_given |= moved & ~agree
    if moved.any():
        basis = "estimated wrong labels" if method == "confident" else "model disagreement"
        room = f" +{slack:.0%}" if slack else ""
        notes.append(
            f"the clusters flagged {flagged / len(codes):.1%} of samples, over the cap of "
            f"{basis} {estimate:.1%}{room}; kept {int(moved.sum())} with their given label"
        )
    if late_disputes is not None:
        disagreement = float((~agree).mean())
        share = flip_shares(given_labels, pseudo_labels, n_classes)
        partly = partly_disputed(~kept, late_disputes, late_epochs, disagreement, share)
        codes[partly], reason[partly] = _CH, GUARD_REASONS.index("partly_disputed")
        kept |= partly
        keep_given |= partly & ~agree
        if partly.any():
            paired = int((~kept & (late_disputes < late_epochs)).sum())
            notes.append(
                f"the model disputes {disagreement:.1%} of labels (at most "
                f"{HIGH_NOISE_SHARE:.0%}); kept {int(partly.sum())} it disputed in only some "
                f"of the {late_epochs} late epochs"
                + (f", not the {paired} in class pairs flipped systematically" if paired else "")
            )
    rescue = class_floor(kept, given_labels, joint[:, 0], n_classes)
    codes[rescue], reason[rescue] = _CH, GUARD_REASONS.index("class_floor")
    keep_given |= rescue
    if rescue.any():
        notes.append(
            f"kept {int(rescue.sum())} samples so that no class drops out of T (the samples "
            "the network trains on)"
        )
    return GuardResult(codes, keep_given, reason, notes)
