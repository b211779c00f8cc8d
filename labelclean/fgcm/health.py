"""Is the training sound? A diverged run stops; collapsed predictions are flagged.

Both failures come from the optimisation, not the data, and both made the audit report
nonsense without a word: a learning rate that is far too large turns the loss NaN (which
ended in a k-means traceback), and one that is merely too large collapses the network onto
one class, after which every other label looks wrong (66.7% "noise" on clean digits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import torch

from labelclean.errors import DivergedError

#: Collapse when the predictions use less than this share of the labels' effective classes
#: beyond the first (see :func:`collapse_warning`).
COLLAPSE_SHARE = 0.5


class Where(TypedDict):
    """Where a divergence happened, for the messages of the checks below (``**where``)."""

    epoch: int  #: 0-based
    epochs: int
    lr: float
    task: str  #: ``audit`` or ``finetune``


def check_finite(
    values: float | np.ndarray, *, what: str, epoch: int, epochs: int, lr: float, task: str
) -> None:
    """Raise :class:`DivergedError` naming the epoch unless every value is finite.

    Called before the epoch's results are used or checkpointed, so the last checkpoint
    written is the last good epoch's.

    Args:
        values: The epoch's mean loss, or its recorded probabilities ``[N, C]``.
        what: What the values are, for the message ("the training loss").
        epoch: The 0-based epoch that produced them.
        epochs: Total epochs.
        lr: The base learning rate (``--lr``) of the run.
        task: ``audit`` or ``finetune``.
    """
    array = np.asarray(values)
    finite = np.isfinite(array)
    if finite.all():
        return
    if array.ndim == 0:
        found = f"{what} is {float(array)}"
    else:
        rows = int((~finite.reshape(len(array), -1)).any(1).sum())
        found = f"{what} of {rows} of {len(array)} samples are not finite"
    raise _diverged(found, epoch=epoch, epochs=epochs, lr=lr, task=task)


def check_finite_weights(
    model: torch.nn.Module, *, epoch: int, epochs: int, lr: float, task: str
) -> None:
    """Like :func:`check_finite` for the network's parameters and buffers.

    A loss can stay finite while the weights are not: measured with ``--lr 1e6``, the first
    epoch's loss was 7e13 and its batch-norm variances inf, so every later epoch (even at a
    lower ``--lr`` after a resume) was NaN. Checkpointing that state would keep nothing good.
    """
    with torch.no_grad():
        bad = [
            name
            for name, tensor in model.state_dict().items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
        ]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        found = f"the network's weights are not finite ({shown})"
        raise _diverged(found, epoch=epoch, epochs=epochs, lr=lr, task=task)


def _diverged(found: str, *, epoch: int, epochs: int, lr: float, task: str) -> DivergedError:
    kept = f"epoch {epoch}" if epoch else "the start"
    return DivergedError(
        f"{task} epoch {epoch + 1}/{epochs}: {found}, so training diverged; run again with a "
        f"lower --lr (it is {lr:g}; try {lr / 10:g}). Nothing of this epoch was kept: the "
        f"work directory's last checkpoint is from {kept}"
    )


def effective_classes(labels: np.ndarray, n_classes: int) -> float:
    """``exp`` of the Shannon entropy of the label histogram (its perplexity).

    The number of equally common classes with the same spread: C for balanced labels, 1
    when every sample has one label, and less sensitive to a few stray samples than a count
    of the classes present.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    if counts.sum() == 0:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(math.exp(-(p * np.log(p)).sum()))


def collapse_warning(
    pseudo_labels: np.ndarray, given_labels: np.ndarray, class_names: Sequence[str]
) -> str:
    """A warning when the predictions collapsed onto few classes, else ``""``.

    The test compares the spread of the max-repeating pseudo labels with the spread of the
    given labels, as effective numbers of classes ``E`` (:func:`effective_classes`), counted
    beyond the first: collapse when ``(E_pred - 1) < COLLAPSE_SHARE * (E_given - 1)``. For
    10 balanced classes that means fewer than 5.5 effective classes predicted; for two
    balanced classes, one class taking more than ~89% of the predictions. Label noise moves
    some samples between classes but does not concentrate predictions onto a few of them,
    so a network that learned anything stays well above the line (the small CPU network
    at 50% noise on CIFAR-10 still predicts every class); one whose predictions collapsed
    (too high a learning rate) falls far below it.
    """
    c = len(class_names)
    given = effective_classes(given_labels, c)
    if given <= 1 + 1e-9 or len(pseudo_labels) == 0:
        return ""
    predicted = effective_classes(pseudo_labels, c)
    if predicted - 1 >= COLLAPSE_SHARE * (given - 1):
        return ""
    counts = np.bincount(np.asarray(pseudo_labels, dtype=np.int64), minlength=c)
    top = int(counts.argmax())
    return (
        f"the network's predictions collapsed: they spread over {predicted:.1f} effective "
        f"classes where the given labels spread over {given:.1f} ('{class_names[top]}' takes "
        f"{counts[top] / counts.sum():.0%} of them), so the flags mostly say that the network "
        "learned little, not that the labels are wrong. Audit again with a lower --lr, more "
        "--epochs or another --model"
    )
