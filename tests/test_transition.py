"""The given label as evidence for a flagged row's guess (labelclean.fgcm.transition)."""

import numpy as np

from labelclean.fgcm.transition import transition_matrix, weigh_by_given


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
