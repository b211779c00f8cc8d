"""The given label as evidence for a flagged row's guess (labelclean.fgcm.transition)."""

import numpy as np

from labelclean.fgcm.transition import (
    fit_temperature,
    guess_flagged,
    temper,
    transition_matrix,
    weigh_by_given,
)


def test_the_transition_matrix_counts_given_per_label_with_one_added():
    t = transition_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 2)
    np.testing.assert_allclose(t, [[2 / 4, 2 / 4], [1 / 3, 2 / 3]])
    assert np.all(transition_matrix(np.array([], int), np.array([], int), 3) == 1 / 3)


def test_a_doubtful_label_wins_only_while_the_network_half_believes_it():
    transition = np.array([[0.6, 0.4], [0.1, 0.9]])  # class 0 is often labeled 1, not back
    probs = np.array([[0.4, 0.6], [0.9, 0.1], [0.05, 0.95], [0.7, 0.3]])
    given = np.array([0, 1, 0, 1])
    # row 0: .4 * .6 > .6 * .1, its label stands against a surer network; row 2: .05 * .6 < .95
    # * .1, it does not; rows 1 and 3: a 1 is often a mislabeled 0, so 0 wins even at .7 / .3
    assert weigh_by_given(probs, given, transition).tolist() == [0, 0, 1, 0]


def test_the_weighed_guess_is_right_more_often_under_pair_noise():
    """Labels flipped to the next class 40% of the time, a noisy network: Bayes helps."""
    rng = np.random.default_rng(0)
    n, c = 20_000, 4
    truth = rng.integers(0, c, n)
    given = np.where(rng.random(n) < 0.4, (truth + 1) % c, truth)
    logits = 1.5 * np.eye(c)[truth] + rng.normal(size=(n, c))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    plain = (probs.argmax(1) == truth).mean()
    weighed = weigh_by_given(probs, given, transition_matrix(probs.argmax(1), given, c))
    assert (weighed == truth).mean() > plain + 0.05


def _symmetric_noise(rng, n, c, rate, sharpness):
    """Truth drawn from a calibrated softmax, labels flipped uniformly at ``rate``."""
    logits = sharpness * rng.normal(size=(n, c))
    calibrated = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    truth = (calibrated.cumsum(1) > rng.random((n, 1))).argmax(1)
    flip = rng.random(n) < rate
    given = np.where(flip, (truth + rng.integers(1, c, n)) % c, truth)
    return calibrated, truth, given


def test_tempering_sharpens_below_one_and_keeps_rows_summing_to_one():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(temper(probs, 1.0), probs)
    sharp, flat = temper(probs, 0.5), temper(probs, 2.0)
    np.testing.assert_allclose(sharp.sum(1), 1.0)
    np.testing.assert_allclose(sharp[0], np.array([25, 9, 4]) / 38)
    assert (sharp.max(1) > probs.max(1)).all() and (flat.max(1) < probs.max(1)).all()


def test_the_fitted_temperature_undoes_a_flattened_softmax():
    """A calibrated softmax flattened to the power 1/2 is fitted back with t near 1/2."""
    rng = np.random.default_rng(1)
    calibrated, truth, given = _symmetric_noise(rng, 20_000, 10, rate=0.4, sharpness=3.0)
    transition = transition_matrix(truth, given, 10)
    assert abs(fit_temperature(calibrated, given, transition) - 1.0) < 0.1
    assert abs(fit_temperature(temper(calibrated, 2.0), given, transition) - 0.5) < 0.05


def test_a_flat_softmax_tempered_first_gives_more_right_guesses():
    """Without tempering a flat softmax lets a wrong label's small share win it back."""
    rng = np.random.default_rng(2)
    calibrated, truth, given = _symmetric_noise(rng, 20_000, 10, rate=0.4, sharpness=3.0)
    flat = temper(calibrated, 3.0)
    plain = flat.argmax(1)
    clean = np.where(plain == given, given, -1)  # flag what the softmax disputes
    flagged = clean < 0
    args = (flat[flagged], given, clean, plain[flagged])
    as_is, one = guess_flagged(*args)
    tempered, t = guess_flagged(*args, every_row=flat)
    assert one == 1.0 and t < 0.5  # sharper (the matrix is counted over guesses, not truth)
    right = truth[flagged]
    assert (tempered == right).mean() > (as_is == right).mean() + 0.03


def test_a_large_softmax_is_fitted_on_a_seeded_subset_of_its_rows(monkeypatch):
    """Above the cell budget the fit reads a random subset: the same temperature, each time."""
    from labelclean.fgcm import transition

    rng = np.random.default_rng(3)
    calibrated, truth, given = _symmetric_noise(rng, 20_000, 10, rate=0.4, sharpness=3.0)
    flat, matrix = temper(calibrated, 2.0), transition_matrix(truth, given, 10)
    whole = fit_temperature(flat, given, matrix)
    monkeypatch.setattr(transition, "TEMPERATURE_FIT_CELLS", 20_000)  # 2,000 rows of 10
    part = fit_temperature(flat, given, matrix)
    assert part == fit_temperature(flat, given, matrix) != whole
    assert abs(part - whole) < 0.1
