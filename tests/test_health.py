"""Divergence stops a run naming the epoch; collapsed predictions are told apart from noise."""

import numpy as np
import pytest
import torch

from labelclean.errors import DivergedError
from labelclean.fgcm.health import (
    check_finite,
    check_finite_weights,
    collapse_warning,
    effective_classes,
)

CTX = {"epoch": 2, "epochs": 10, "lr": 0.5, "task": "audit"}
NAMES = [str(i) for i in range(10)]


def test_non_finite_values_raise_naming_the_epoch_and_a_lower_lr():
    check_finite(1.25, what="the training loss", **CTX)
    check_finite(np.full((4, 3), 1 / 3), what="the recorded probabilities", **CTX)
    with pytest.raises(DivergedError, match=r"audit epoch 3/10: the training loss is nan.*--lr \(it is 0.5; try 0.05\)"):
        check_finite(float("nan"), what="the training loss", **CTX)
    probs = np.full((5, 3), 1 / 3)
    probs[[1, 3], 0] = np.inf
    with pytest.raises(DivergedError, match="probabilities of 2 of 5 samples.*checkpoint is from epoch 2"):
        check_finite(probs, what="the recorded probabilities", **CTX)


def test_non_finite_weights_or_buffers_raise_before_they_are_checkpointed():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    check_finite_weights(model, **CTX)
    model[1].running_var[0] = float("inf")  # measured at --lr 1e6 while the loss was finite
    with pytest.raises(DivergedError, match=r"weights are not finite \(1.running_var\)"):
        check_finite_weights(model, **{**CTX, "epoch": 0, "task": "finetune"})


def test_effective_classes_is_the_perplexity_of_the_label_histogram():
    assert effective_classes(np.arange(100) % 10, 10) == pytest.approx(10)
    assert effective_classes(np.zeros(50, int), 10) == pytest.approx(1)
    assert effective_classes(np.array([0, 0, 1, 1]), 3) == pytest.approx(2)


def test_collapse_is_flagged_and_ordinary_noise_is_not():
    rng = np.random.default_rng(0)
    given = np.arange(1000) % 10
    collapsed = np.where(rng.random(1000) < 0.97, 2, given)  # --lr 2: one class almost always
    warning = collapse_warning(collapsed, given, NAMES)
    assert "collapsed" in warning and "'2' takes 97%" in warning and "lower --lr" in warning
    noisy = np.where(rng.random(1000) < 0.5, rng.integers(0, 10, 1000), given)  # 50% symmetric noise
    assert collapse_warning(noisy, given, NAMES) == ""
    merged = np.where(given == 3, 5, given)  # the network confuses two classes: not a collapse
    assert collapse_warning(merged, given, NAMES) == ""
    assert collapse_warning(np.arange(1000) % 6, given, NAMES) == ""  # 6 of 10 classes predicted
    assert "collapsed" in collapse_warning(given % 5, given, NAMES)  # 5 of 10: below the line


def test_collapse_with_two_classes_and_with_imbalanced_labels():
    given = np.arange(200) % 2
    assert "collapsed" in collapse_warning(np.where(np.arange(200) < 190, 0, 1), given, ["a", "b"])  # 95/5
    assert collapse_warning(np.where(np.arange(200) < 140, 0, 1), given, ["a", "b"]) == ""  # 70/30
    imbalanced = np.repeat(np.arange(5), [600, 200, 100, 60, 40])
    assert collapse_warning(imbalanced, imbalanced, NAMES[:5]) == ""  # predictions as skewed as labels
    assert collapse_warning(np.zeros(0, int), imbalanced, NAMES[:5]) == ""
