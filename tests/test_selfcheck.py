"""The self-check estimator (not yet called by the audit): pure functions on known truth."""

import numpy as np
import pytest

from labelclean.fgcm import selfcheck
from labelclean.fgcm.selfcheck import cross_fitted_probe, estimate_right, read_check, warning


def synthetic(noise: float, sharpness: float, seed: int = 0, n: int = 4000, c: int = 10):
    """Truth, given labels (symmetric noise) and the softmax of an ideal out-of-fold probe.

    The probe never saw the rows' labels and learned the others': its softmax is P(given |
    image) = P(true | image) @ T, P(true | image) from logits ``sharpness`` above noise.
    """
    rng = np.random.default_rng(seed)
    true = rng.integers(0, c, n)
    flipped = rng.random(n) < noise
    given = np.where(flipped, (true + rng.integers(1, c, n)) % c, true)
    logits = sharpness * np.eye(c)[true] + rng.normal(0, 1, (n, c))
    clean = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    transition = np.full((c, c), noise / (c - 1))
    np.fill_diagonal(transition, 1 - noise)
    return true, given, clean @ transition


@pytest.mark.parametrize("noise,sharpness", [(0.2, 2.0), (0.4, 2.0), (0.4, 4.0), (0.6, 3.0)])
def test_the_sharp_model_lands_within_three_points_of_the_truth(noise, sharpness):
    """Class-conditional noise and evidence that never saw the labels: the model's own world."""
    true, given, probs = synthetic(noise, sharpness)
    cleaned = probs.argmax(1)
    post, transition, _ = selfcheck.posterior(probs, given, cleaned)
    rows = np.arange(len(given))
    assert abs(post[rows, given].mean() - (given == true).mean()) < 0.03
    assert abs(post[rows, cleaned].mean() - (cleaned == true).mean()) < 0.03
    assert abs(np.diag(transition).mean() - (1 - noise)) < 0.05


def test_the_estimate_has_an_interval_and_says_when_the_cleaned_labels_win():
    true, given, probs = synthetic(0.4, 4.0)
    cleaned = probs.argmax(1)
    check = estimate_right(probs, given, cleaned, boot=20)
    for key, labels in (("given_right", given), ("cleaned_right", cleaned)):
        entry, right = check[key], float((labels == true).mean())
        assert abs(entry["estimate"] - right) < 0.03, (key, entry, right)
        assert 0 <= entry["low"] <= entry["estimate"] <= entry["high"] <= 1
    assert check["model"] == "sharp" and set(check["models"]) == {"sharp", "calibrated"}
    assert check["expect_better"] and warning(check) is None and check["n"] == len(given)


def test_a_labelling_worse_than_the_given_one_is_expected_worse_and_warned():
    true, given, probs = synthetic(0.3, 2.0, seed=1)
    rng = np.random.default_rng(2)
    worse = np.where(rng.random(len(given)) < 0.3, rng.integers(0, 10, len(given)), given)
    check = estimate_right(probs, given, worse, boot=20)
    assert (worse == true).mean() < (given == true).mean() - 0.1
    assert not check["expect_better"]
    for model in check["models"].values():  # both noise models see it
        assert model["cleaned_right"] < model["given_right"]
    said = warning(check)
    assert said and "not expected to be better" in said and "of its labels to be right" in said


def test_a_cautious_model_that_disagrees_is_a_warning_too():
    """The short run's case: the sharp model expects better, the calibrated one worse."""
    check = {
        "given_right": {"estimate": 0.488, "low": 0.48, "high": 0.57},
        "cleaned_right": {"estimate": 0.563, "low": 0.478, "high": 0.57},
        "models": {
            "sharp": {"given_right": 0.488, "cleaned_right": 0.563},
            "calibrated": {"given_right": 0.570, "cleaned_right": 0.479},
        },
        "doubt": True,
    }
    said = warning(check)
    assert said and "a cautious noise model expects 48% against 57%" in said
    assert "may not be better" in said
    assert warning({**check, "doubt": False}) is None


def test_the_calibrated_model_does_not_sharpen_a_weak_networks_guesses():
    """Evidence that is a calibrated softmax of the given labels (what the probe learns)."""
    rng = np.random.default_rng(3)
    n, c = 4000, 10
    true = rng.integers(0, c, n)
    given = np.where(rng.random(n) < 0.3, (true + rng.integers(1, c, n)) % c, true)
    noisy = np.full((n, c), 0.3 / 9)
    noisy[np.arange(n), true] = 0.7
    # a weak network: its softmax of the given labels is half the truth's, half uniform
    probs = 0.5 * noisy + 0.5 / c
    guesses = np.where(rng.random(n) < 0.4, probs.argmax(1), rng.integers(0, c, n))
    post = selfcheck.calibrated_posterior(probs, given)
    rows = np.arange(n)
    assert post[rows, guesses].mean() < post[rows, given].mean()
    assert (guesses == true).mean() < (given == true).mean()


def test_the_probe_is_out_of_fold():
    """On features that say nothing, a probe read in sample fits the labels; out of fold not."""
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(300, 60)), rng.integers(0, 5, 300)
    probs = cross_fitted_probe(features, labels, 5, l2=1e-6)
    assert probs.shape == (300, 5) and np.allclose(probs.sum(1), 1)
    assert (probs.argmax(1) == labels).mean() < 0.35  # chance is .2; in sample it is ~1


def test_a_large_audit_is_checked_on_a_seeded_subset_of_rows():
    assert selfcheck.check_rows(300, 10, 0).tolist() == list(range(300))
    rows = selfcheck.check_rows(2_000_000, 1000, 0)
    assert len(rows) == selfcheck.MAX_CELLS // 1000 and len(set(rows)) == len(rows)
    assert np.all(np.diff(rows) > 0) and rows.max() < 2_000_000
    assert np.array_equal(rows, selfcheck.check_rows(2_000_000, 1000, 0))
    assert len(selfcheck.check_rows(10**7, 2, 1)) == selfcheck.MAX_ROWS


def test_a_damaged_or_missing_entry_is_no_self_check():
    assert read_check({}) is None
    assert read_check({"self_check": {"given_right": {"estimate": "x"}}}) is None
    _, given, probs = synthetic(0.2, 3.0, n=500)
    good = estimate_right(probs, given, np.zeros(500, int), boot=0)
    assert read_check({"self_check": good}) == good
