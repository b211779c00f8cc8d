"""The audit's semi-supervised epilogue: a better guess for the labels the report removed.

After the report is built, the audit's network trains ``--semi-epochs`` more epochs with
finetune's mixed semi-training (:func:`labelclean.fgcm.finetune.run_finetune`: the report's
kept and relabeled rows as labeled, the rest as unlabeled; no confidence threshold,
:data:`SEMI_TAU`), then predicts the rows the report unlabeled. Its softmax, weighed by how
often each class is given the row's label (:mod:`labelclean.fgcm.transition`), gives their
``pseudo_label`` (``conf_pseudo`` follows: the late-window mean confidence of that label, as
for every row, so a changed row's point moves in the report's scatter of the clustering),
and the network saved beside the report is the one that made it. Clusters and every other
row stay the clustering's.

A deviation from the paper, whose audit ends with the clustering: the late-window pseudo
label comes from a network trained on every given label, wrong ones included, while this
one learns from the cleaned labels and from the unlabeled images' own consistency. Measured
on CIFAR-10 (benchmarks/RESULTS.md, "The audit's semi-supervised epilogue"): the unlabeled
rows' guesses were right more often at every noise setting but one, so the cleaned labels
were too.

An unlabeled row whose network's own guess (its softmax's argmax) is its given label is kept
with it (guard ``semi_agrees``): a network trained on the cleaned labels sides with the label
the clustering's network disputed. About seven in ten of those labels were right
(CIFAR-10N "worst": 234 rows, detection F1 .803 -> .809, label precision .865 -> .859), so
``finetune`` trains on them as unlabeled (:data:`labelclean.fgcm.finetune.GUESSED`). A row
whose guess becomes its given label only through the weighing stays flagged, with its given
label as the suggestion: both networks dispute the label, which is merely likelier than any
one other class.

The exception is a class pair flipped systematically (:func:`~labelclean.fgcm.guard.flip_shares`
over :data:`~labelclean.fgcm.guard.SYSTEMATIC_PAIR_SHARE`): the labeled set still holds
part of that flip, the network learns it, and for those rows its guess is the flip again
(40% pair noise: cleaned labels 79.7% -> 78.7% right). Rows whose (given label, late-window
pseudo label) is such a pair keep the late-window pseudo label.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from labelclean.config import FinetuneConfig
from labelclean.errors import ReportError
from labelclean.fgcm.guard import SYSTEMATIC_PAIR_SHARE, flip_shares
from labelclean.fgcm.result import network_weights
from labelclean.fgcm.transition import guess_flagged
from labelclean.progress import Progress
from labelclean.report.schema import with_columns
from labelclean.training import ImageBatches, predict_probs

if TYPE_CHECKING:
    from collections.abc import Callable

    from labelclean.fgcm.result import AuditResult
    from labelclean.fgcm.run import AuditRun
    from labelclean.fgcm.state import AuditState

logger = logging.getLogger(__name__)

#: Confidence an unlabeled row's weak-view guess needs to train the strong view in the
#: epilogue: none. The paper's 0.95 (from FixMatch) suits a network trained with plain
#: cross-entropy; the audit's trains with mixup and is rarely that sure, so at 0.95 the
#: epilogue's first epoch trained on 8% of its mixed-batch rows (CIFAR-10N "worst") and the
#: rows it has to guess were mostly left out. Measured on the saved trainings
#: (benchmarks/RESULTS.md, "No confidence threshold in the epilogue"): cleaned labels .759 ->
#: .766 on "worst", .728 -> .743 at 50% symmetric noise, none worse.
SEMI_TAU = 0.0


def semi_epilogue(
    result: AuditResult,
    state: AuditState,
    run: AuditRun,
    *,
    tau: float = SEMI_TAU,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> AuditResult:
    """``result`` with the unlabeled rows' pseudo labels guessed by the semi-trained network.

    ``tau``: the mixed batch's confidence threshold (:data:`SEMI_TAU`). Returns ``result``
    unchanged when ``--semi-epochs`` is 0, when nothing was unlabeled or for a frozen audit
    (it trains no network). Raises :class:`~labelclean.training.StepInterrupted` when
    ``should_stop`` asks mid-training.
    """
    from labelclean.fgcm.finetune import run_finetune, split_report
    from labelclean.fgcm.run import ReindexedBatches

    config = run.config
    if not config.semi_epochs or result.network is None:
        return result
    start = time.perf_counter()
    frame = result.to_pandas()
    names = list(result.metadata["class_names"])
    unlabel = np.flatnonzero(frame["action"].to_numpy() == "unlabel")
    if len(unlabel) == 0:
        return result
    try:
        labeled_rows, labels, unlabeled_rows = split_report(frame, names)
    except ReportError as why:  # nothing to learn a classifier from: keep the report's guesses
        logger.warning("no semi-training after the report: %s", str(why).removeprefix("report: "))
        return result
    code = {name: k for k, name in enumerate(names)}
    given = frame["given_label"].map(code).to_numpy(dtype=np.int64)
    pseudo = frame["pseudo_label"].map(code).to_numpy(dtype=np.int64)
    batches = run.batches  # read through the canonical order; its source is in report order
    images = batches.inner if isinstance(batches, ReindexedBatches) else None
    assert isinstance(images, ImageBatches), "a network audit reads an image cache"
    semi = FinetuneConfig(
        epochs=config.semi_epochs,
        seed=config.seed,
        device=str(run.precision.device),
        amp=config.amp,
        eval_every=config.semi_epochs,
        tau=tau,
    )
    trained = run_finetune(
        images.images,
        labeled_rows,
        labels,
        unlabeled_rows,
        semi,
        n_classes=len(names),
        model_name=run.model_name,
        mean=list(images.mean),
        std=list(images.std),
        crop_padding=images.crop_padding,
        hflip=images.hflip,
        progress=progress,
        should_stop=should_stop,
        dist=run.dist,
        init_state=result.network,
        task="semi",
    )
    probs = predict_probs(
        trained.model,
        images,
        unlabel,
        batch_size=run.batch_size * 2,
        task="semi guess",
        progress=progress,
        flip=images.hflip,
    )
    pair = flip_shares(given, pseudo, len(names))[unlabel] > SYSTEMATIC_PAIR_SHARE
    plain = np.where(pair, pseudo[unlabel], probs.argmax(1))
    clean = frame["clean_label"].map(code).fillna(-1).to_numpy(dtype=np.int64)
    weighed, _ = guess_flagged(probs, given, clean, plain)  # clean is -1 exactly on unlabel
    guess = np.where(pair, plain, weighed)
    new = pseudo.copy()
    new[unlabel] = guess
    canonical = new[run.canon]  # the history is in canonical order (manifest row canon[j])
    joint = state.history.joint_confidence(run.given, pseudo_labels=canonical, window="late")
    conf = np.empty(len(new), dtype=np.float32)
    conf[run.canon] = joint[:, 1]
    agrees = unlabel[~pair & (plain == given[unlabel])]  # a second look sides with the label
    action = frame["action"].to_numpy(dtype=object).copy()
    guard = frame["guard"].to_numpy(dtype=object).copy()
    guard[frame["guard"].isna().to_numpy()] = None  # pandas may read a null back as NaN
    action[agrees], guard[agrees] = "keep", "semi_agrees"
    clean[agrees] = given[agrees]
    table = with_columns(
        result.table,
        {
            "pseudo_label": new,
            "conf_pseudo": conf,
            "action": action,
            "clean_label": clean,
            "guard": guard,
        },
        class_names=names,
    )
    seconds = time.perf_counter() - start
    metadata: dict[str, Any] = dict(result.metadata)
    metadata["semi"] = {
        "epochs": config.semi_epochs,
        "tau": tau,
        "labeled": len(labeled_rows),
        "unlabeled": len(unlabeled_rows),
        "guessed": int((~pair).sum()),
        "kept_systematic_pair": int(pair.sum()),
        "kept_agreeing": len(agrees),
        "weighed_by_given": int((weighed != plain)[~pair].sum()),
        "changed": int((new != pseudo).sum()),
        "seconds": round(seconds, 3),
    }
    metadata["wall_time_s"] = round(float(metadata["wall_time_s"]) + seconds, 3)
    logger.info(
        "semi epilogue: %d of %d unlabeled rows got another pseudo label (%.0f s)",
        metadata["semi"]["changed"],
        len(unlabel),
        seconds,
    )
    result.table = table
    result.metadata = metadata
    result.network = network_weights(trained.model)
    return result
