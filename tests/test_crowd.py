"""The consensus, the combination with a network and the annotators table, on simulated crowds."""

import numpy as np
import pytest

from labelclean.crowd.annotators import annotator_table
from labelclean.crowd.combine import combine, tempered_prior
from labelclean.crowd.model import Votes, dawid_skene, fit_crowd, majority_vote
from labelclean.crowd.simulate import Crowd, random_crowd, simulate_votes
from labelclean.errors import ConfigError

C = 6
NAMES = ["bird", "cat", "deer", "dog", "frog", "ship"]
CAT, DOG = NAMES.index("cat"), NAMES.index("dog")


def _votes(truth, crowd, k, seed=0):
    s, w, lab = simulate_votes(truth, crowd, votes_per_image=k, seed=seed)
    names = tuple(f"w{i:03d}" for i in range(len(crowd.activity)))
    return Votes(s, w, lab, n_samples=len(truth), n_classes=crowd.confusion.shape[1], annotator_names=names)


def _accuracy(labels, truth):
    return float((np.asarray(labels) == truth).mean())


@pytest.fixture(scope="module")
def truth():
    return np.random.default_rng(0).integers(0, C, 3000)


def test_votes_check_their_codes_and_count():
    v = Votes(np.array([0, 0, 1]), np.array([0, 1, 1]), np.array([2, 2, 0]), n_samples=2, n_classes=3,
              annotator_names=("a", "b"))
    assert v.counts().tolist() == [[0, 0, 2], [1, 0, 0]]
    assert v.per_annotator().tolist() == [1, 2] and len(v) == 3
    with pytest.raises(ValueError, match="label codes must lie in"):
        Votes(np.array([0]), np.array([0]), np.array([3]), n_samples=1, n_classes=3, annotator_names=("a",))
    with pytest.raises(ValueError, match="every sample needs at least one vote"):
        fit_crowd(Votes(np.array([0]), np.array([0]), np.array([1]), n_samples=2, n_classes=3,
                        annotator_names=("a",)))


def test_majority_vote_breaks_ties_at_random_among_the_tied_classes():
    v = Votes(np.zeros(2, int), np.array([0, 1]), np.array([1, 2]), n_samples=1, n_classes=3,
              annotator_names=("a", "b"))
    picks = {int(majority_vote(v, seed=s)[0]) for s in range(20)}
    assert picks == {1, 2}


def test_the_consensus_beats_majority_vote_and_plain_dawid_skene(truth):
    """Many workers with a handful of votes, some careless, some spammers."""
    crowd = random_crowd(150, C, spammers=0.1, seed=1)
    v = _votes(truth, crowd, 3)
    assert v.per_annotator().min() < 10  # a handful of votes for some
    mv = _accuracy(majority_vote(v), truth)
    ds = _accuracy(dawid_skene(v).posterior.argmax(1), truth)
    ours = _accuracy(fit_crowd(v).posterior.argmax(1), truth)
    assert ours > mv + 0.03, (ours, mv)
    assert ours > ds, (ours, ds)


def test_shrinkage_follows_the_crowd(truth):
    """Identical workers: the evidence pools them; varied workers: each gets their own matrix."""
    same = Crowd(np.broadcast_to(np.full((C, C), 0.04) + np.eye(C) * 0.76, (40, C, C)).copy(),
                 np.full(40, 1 / 40), np.full(40, "honest", dtype=object))
    pooled = fit_crowd(_votes(truth, same, 3)).strengths
    varied = fit_crowd(_votes(truth, random_crowd(40, C, spammers=0.2, seed=3), 3)).strengths
    assert pooled["skill"] >= 1000 and varied["skill"] < 100


def test_one_vote_per_image_keeps_the_vote(truth):
    crowd = random_crowd(20, C, seed=4)
    v = _votes(truth, crowd, 1)
    assert (fit_crowd(v).posterior.argmax(1) == v.label[np.argsort(v.sample)]).all()


def test_a_spammer_ranks_last(truth):
    crowd = random_crowd(12, C, spammers=0.0, accuracy=(0.7, 0.9), seed=5)
    confusion = crowd.confusion.copy()
    confusion[7] = 1 / C  # worker 7 votes at random
    crowd = Crowd(confusion, crowd.activity, crowd.kind)
    v = _votes(truth, crowd, 3)
    fit = fit_crowd(v)
    table = annotator_table(v, fit.posterior, fit.posterior.argmax(1), class_names=NAMES)
    assert table["annotator"].iloc[-1] == "w007"
    assert table["estimated_accuracy"].is_monotonic_decreasing
    assert table["estimated_accuracy"].iloc[-1] < 0.4


def test_an_annotator_who_swaps_two_classes_is_found_with_that_pair(truth):
    crowd = random_crowd(10, C, spammers=0.0, accuracy=(0.75, 0.9), seed=6)
    confusion = crowd.confusion.copy()
    confusion[3] = np.eye(C)
    confusion[3][[CAT, DOG]] = confusion[3][[DOG, CAT]]  # always dog for cat, cat for dog
    crowd = Crowd(confusion, crowd.activity, crowd.kind)
    v = _votes(truth, crowd, 3)
    fit = fit_crowd(v)
    table = annotator_table(v, fit.posterior, fit.posterior.argmax(1), class_names=NAMES).set_index("annotator")
    swapper = table.loc["w003"]
    assert {swapper["confused_true"], swapper["confused_voted"]} == {"cat", "dog"}
    assert swapper["confused_share"] > 0.1
    assert fit.confusion[3, CAT, DOG] > 0.8 and fit.confusion[3, DOG, CAT] > 0.8  # and reads them right
    honest = table.drop("w003")
    assert (honest["confused_share"] < 0.1).all()


def test_combining_with_an_informative_network_beats_the_votes_alone(truth):
    rng = np.random.default_rng(7)
    crowd = random_crowd(60, C, spammers=0.1, seed=7)
    v = _votes(truth, crowd, 3)
    logits = rng.normal(size=(len(truth), C))
    logits[np.arange(len(truth)), truth] += 2.0  # right about 75% of the time, calibrated-ish
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    alone = fit_crowd(v)
    both = combine(v, probs, crowd=alone)
    assert both.beta > 0.3
    assert _accuracy(both.labels, truth) > _accuracy(alone.posterior.argmax(1), truth) + 0.01


def test_an_uninformative_network_is_ignored(truth):
    crowd = random_crowd(60, C, spammers=0.1, seed=8)
    v = _votes(truth, crowd, 3)
    noise = np.random.default_rng(8).dirichlet(np.ones(C), size=len(truth))
    both = combine(v, noise)
    assert both.beta <= 0.1
    assert (both.labels == both.crowd_only.posterior.argmax(1)).mean() > 0.99


def test_ties_go_to_the_model():
    """Two equally reliable workers disagree on every image: the network decides."""
    n = 400
    truth = np.arange(n) % C
    other = (truth + 1) % C
    first = np.arange(n) % 2 == 0  # who is right alternates, so neither is more reliable
    sample = np.repeat(np.arange(n), 2)
    annotator = np.tile([0, 1], n)
    label = np.stack([np.where(first, truth, other), np.where(first, other, truth)], 1).reshape(-1)
    # plus unanimous images so that the workers look reliable
    sample = np.concatenate([sample, np.repeat(np.arange(n, 2 * n), 2)])
    annotator = np.concatenate([annotator, np.tile([0, 1], n)])
    label = np.concatenate([label, np.repeat(np.arange(n) % C, 2)])
    v = Votes(sample, annotator, label, n_samples=2 * n, n_classes=C, annotator_names=("a", "b"))
    probs = np.full((2 * n, C), 0.1 / (C - 1))
    probs[np.arange(n), truth] = 0.9  # the network is sure on the split images
    probs[np.arange(n, 2 * n), np.arange(n) % C] = 0.9
    both = combine(v, probs)
    assert (both.labels[:n] == truth).all()


def test_tempered_prior_ends():
    probs = np.array([[0.7, 0.2, 0.1]])
    prior = np.array([0.2, 0.3, 0.5])
    assert np.allclose(tempered_prior(probs, prior, 0.0), prior)
    assert np.allclose(tempered_prior(probs, prior, 1.0), probs)


def test_simulated_crowds_are_what_they_say(truth):
    crowd = random_crowd(30, C, spammers=0.2, seed=9)
    assert (crowd.kind == "spammer").sum() == 6
    assert np.allclose(crowd.confusion.sum(2), 1) and np.isclose(crowd.activity.sum(), 1)
    sample, worker, label = simulate_votes(truth, crowd, votes_per_image=4, seed=1)
    assert len(sample) == 4 * len(truth)
    per_image = worker.reshape(-1, 4)
    assert (np.sort(per_image, 1)[:, 1:] != np.sort(per_image, 1)[:, :-1]).all()  # distinct
    honest = crowd.kind == "honest"
    right = np.bincount(worker, weights=label == truth[sample], minlength=30) / np.bincount(worker, minlength=30)
    assert np.abs(right[honest] - crowd.accuracy[honest]).mean() < 0.08
    assert (right[~honest] < 0.35).all()
    with pytest.raises(ConfigError, match="--annotators 40"):
        simulate_votes(truth, crowd, votes_per_image=40)
    with pytest.raises(ConfigError, match="--workers 0"):
        random_crowd(0, C)
