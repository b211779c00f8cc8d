"""The guards against dirtier labels: each pure function, and their composition."""

import numpy as np
import pytest
from test_clustering import ROLES, _blobs

from labelclean.fgcm.clustering import (
    CLUSTER_NAMES,
    fit_gmm,
    gmm_posteriors,
    name_components,
    refine,
)
from labelclean.fgcm.guard import (
    GUARD_REASONS,
    HIGH_NOISE_SHARE,
    SYSTEMATIC_PAIR_SHARE,
    TRAINING_SLACK,
    apply_guard,
    class_floor,
    class_thresholds,
    confident_noise_rate,
    flag_budget,
    flip_shares,
    partly_disputed,
    report_slack,
    unsure_relabels,
)


def _low_noise_population(seed=0, n=5000, noise=0.05):
    """A clean diagonal a = m stretched toward (1, 1) plus a small NS blob of noisy samples."""
    rng = np.random.default_rng(seed)
    n_noisy = int(noise * n)
    a_clean = 1 - rng.beta(1, 6, n - n_noisy)
    a_noisy = rng.normal(0.08, 0.04, n_noisy).clip(0, 1)
    m_noisy = rng.normal(0.75, 0.1, n_noisy).clip(0, 1)
    joint = np.concatenate(
        [np.stack([a_clean, a_clean], 1), np.stack([a_noisy, m_noisy], 1)]
    ).astype(np.float32)
    given = np.zeros(n, dtype=np.int64)
    pseudo = np.concatenate([np.zeros(n - n_noisy), np.ones(n_noisy)]).astype(np.int64)
    return joint, given, pseudo, n_noisy / n


def _codes(joint):
    params = fit_gmm(joint, n_components=5, seed=0)
    names = name_components(params.means)
    comp = gmm_posteriors(joint, params).argmax(1)
    return np.array([CLUSTER_NAMES.index(n) for n in names])[comp]


def test_guard_caps_flags_near_the_noise_rate_at_low_noise():
    joint, given, pseudo, noise = _low_noise_population()
    codes = _codes(joint)
    before = 1 - refine(np.asarray(CLUSTER_NAMES)[codes], given, pseudo)[1].__eq__(given).mean()
    result = apply_guard(codes, joint, given, pseudo, n_classes=2, method="budget")
    guarded, note = result.codes, result.note
    admit, labels = refine(np.asarray(CLUSTER_NAMES)[guarded], given, pseudo)
    flagged = 1 - (labels == given).mean()
    assert before > 2 * noise  # the literal split over-flags
    assert flagged <= noise * 1.3 and note
    assert (labels[pseudo != given] != given[pseudo != given]).all()  # noisy ones still flagged


def _weak_model_population(seed=0, n=4000, noise=0.05, unlearned=0.2):
    """Two classes, 5% wrong labels the model is sure of, 20% right ones it has not learned.

    Unlearned samples disagree with their label with low confidence (m ~ 0.3, a ~ 0.2), like
    the small CPU network's; wrong ones are confidently the other class (a ~ 0.05, m ~ 0.8).
    """
    rng = np.random.default_rng(seed)
    given = rng.integers(0, 2, n)
    kind = rng.choice(3, n, p=[1 - noise - unlearned, noise, unlearned])  # 0 fit, 1 wrong, 2 unlearned
    centers = np.array([[0.85, 0.85], [0.05, 0.8], [0.2, 0.3]])
    joint = (centers[kind] + rng.normal(0, 0.05, (n, 2))).clip(0, 1).astype(np.float32)
    joint[kind == 0, 1] = joint[kind == 0, 0]  # agreeing: my == ay, so m == a
    pseudo = np.where(kind == 0, given, 1 - given)
    return joint, given, pseudo, kind


def test_noise_estimate_counts_only_confident_disagreements():
    joint, given, pseudo, kind = _weak_model_population()
    assert (pseudo != given).mean() > 0.24  # raw disagreement counts the unlearned too
    assert confident_noise_rate(joint, given, pseudo, np.array([0.65, 0.65])) == pytest.approx(
        (kind == 1).mean(), abs=0.005
    )


def test_guard_keeps_what_a_weak_model_has_not_learned_with_its_given_label():
    from labelclean.fgcm.state import Clustering, admit_samples

    joint, given, pseudo, kind = _weak_model_population()
    codes = _codes(joint)
    budget = apply_guard(codes, joint, given, pseudo, n_classes=2, method="budget")
    assert not budget.keep_given[kind == 2].any()  # budget: T holds only labels the model agrees with
    result = apply_guard(codes, joint, given, pseudo, n_classes=2, method="confident")
    guarded, keep_given, note = result.codes, result.keep_given, result.note
    admit, labels = admit_samples(Clustering(guarded, np.ones(len(given), np.float32), None,
                                             list(CLUSTER_NAMES), note, keep_given), given, pseudo, 5)
    flagged = ~admit | (labels != given)
    assert flagged.mean() <= (kind == 1).mean() * 1.3 + 0.005 and "estimated" in note
    assert flagged[kind == 1].all()  # every confident disagreement is still flagged
    assert keep_given[kind == 2].mean() > 0.9 and not keep_given[kind == 1].any()
    assert (labels[kind == 2][admit[kind == 2]] == given[kind == 2][admit[kind == 2]]).all()


def test_guard_leaves_the_split_alone_at_high_noise():
    pts, truth = _blobs()
    codes = _codes(pts)
    roles = np.array(list(ROLES))[truth]
    given = np.arange(len(pts)) % 2
    pseudo = np.where(np.isin(roles, ("CS", "CH")), given, 1 - given)  # noisy kinds disagree
    result = apply_guard(codes, pts, given, pseudo, n_classes=2, method="budget")
    assert np.array_equal(result.codes, codes) and result.note == ""
    assert not result.keep_given.any() and not result.reason.any()


def test_guard_unlabels_ns_relabels_below_the_class_threshold():
    # class 0 samples are typically held at 0.8 confidence; two NS samples want class 0
    # (class 1 has four clean samples too, so the class floor has nothing to do)
    joint = np.array([[0.8, 0.8]] * 6 + [[0.1, 0.9], [0.1, 0.4]] + [[0.7, 0.7]] * 4, dtype=np.float32)
    given = np.array([0] * 6 + [1, 1] + [1] * 4)
    pseudo = np.array([0] * 6 + [0, 0] + [1] * 4)
    assert class_thresholds(joint, given, 2)[0] == pytest.approx(0.8)
    codes = np.array([CLUSTER_NAMES.index("CS")] * 6 + [CLUSTER_NAMES.index("NS")] * 2 + [CLUSTER_NAMES.index("CS")] * 4)
    result = apply_guard(codes, joint, given, pseudo, n_classes=2, method="budget", slack=10)
    assert not result.keep_given.any()
    names = np.asarray(CLUSTER_NAMES)[result.codes]
    assert names[6] == "NS" and names[7] == "NHI" and "below their class threshold" in result.note
    assert np.flatnonzero(result.reason).tolist() == [7]
    assert GUARD_REASONS[result.reason[7]] == "unsure_relabel"


def test_class_floor_keeps_a_collapsed_class_in_t_most_confident_first():
    # classes 0-3 keep 8 of 10; class 4 kept nothing (the network stopped predicting it)
    given = np.repeat(np.arange(5), 10)
    kept = np.ones(50, dtype=bool)
    kept[[8, 9, 18, 19, 28, 29, 38, 39]] = False
    kept[40:] = False
    conf = np.tile(np.linspace(0.9, 0.0, 10), 5)
    rescue = class_floor(kept, given, conf, 5)
    # floor = half the median kept share (0.8) = 0.4 -> 4 of class 4, its most confident
    assert np.flatnonzero(rescue).tolist() == [40, 41, 42, 43]
    assert not class_floor(kept | (given == 4), given, conf, 5).any()  # no class below the floor


def test_guard_rescues_a_collapsed_class_and_admission_keeps_its_given_label():
    from labelclean.fgcm.state import Clustering, admit_samples

    given = np.repeat([0, 1, 2], 20)
    pseudo = np.where(given == 2, 0, given)  # class 2 is never predicted
    joint = np.column_stack([np.where(given == 2, np.linspace(0.3, 0.01, 60), 0.9),
                             np.full(60, 0.9)]).astype(np.float32)
    codes = np.where(given == 2, CLUSTER_NAMES.index("NHI"), CLUSTER_NAMES.index("CS"))
    result = apply_guard(codes, joint, given, pseudo, n_classes=3, method="budget")
    guarded, rescued, note = result.codes, result.keep_given, result.note
    assert (result.reason[rescued] == GUARD_REASONS.index("class_floor")).all()
    assert rescued.sum() == 10 and (given[rescued] == 2).all() and "drops out of T" in note
    assert (np.asarray(CLUSTER_NAMES)[guarded[rescued]] == "CH").all()
    clustering = Clustering(guarded, np.ones(60, np.float32), None, list(CLUSTER_NAMES), note, rescued)
    admit, labels = admit_samples(clustering, given, pseudo, 5, relabel=False)
    assert admit[rescued].all() and (labels[rescued] == 2).all()
    assert admit.sum() == 50 and (labels[admit] == given[admit]).all()


def test_unsure_relabels_are_the_disagreeing_ns_samples_below_their_class_threshold():
    ns, cs = CLUSTER_NAMES.index("NS"), CLUSTER_NAMES.index("CS")
    codes = np.array([ns, ns, ns, cs])
    joint = np.array([[0.1, 0.9], [0.1, 0.5], [0.6, 0.6], [0.2, 0.5]], dtype=np.float32)
    given, pseudo = np.array([1, 1, 0, 1]), np.array([0, 0, 0, 0])
    thresholds = np.array([0.8, 0.3], dtype=np.float32)
    # sure relabel / unsure relabel / NS but agreeing / unsure but not NS
    assert unsure_relabels(codes, joint, given, pseudo, thresholds).tolist() == [False, True, False, False]


def test_flag_budget_moves_back_the_most_given_confident_first_and_never_confident_disagreements():
    # 10 samples, 1 disagreeing confidently; the clusters kept only 4 (6 flagged)
    given = np.zeros(10, dtype=np.int64)
    pseudo = np.array([0] * 9 + [1])
    joint = np.column_stack([np.linspace(0.9, 0.1, 10), np.full(10, 0.9)]).astype(np.float32)
    kept = np.array([True] * 4 + [False] * 6)
    thresholds = np.array([0.5, 0.5], dtype=np.float32)
    moved, estimate = flag_budget(kept, joint, given, pseudo, thresholds, method="budget", slack=1.0)
    assert estimate == pytest.approx(0.1)
    # budget ceil(0.1 * 2 * 10) = 2 flags: 4 of the 6 flagged go back, highest a first
    assert np.flatnonzero(moved).tolist() == [4, 5, 6, 7]
    assert not moved[9]  # the confident disagreement stays flagged
    moved, estimate = flag_budget(kept, joint, given, pseudo, thresholds, method="confident", slack=1.0)
    assert estimate == pytest.approx(0.1) and np.flatnonzero(moved).tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="unknown"):
        flag_budget(kept, joint, given, pseudo, thresholds, method="nope")


def test_flag_budget_confident_may_move_unsure_disagreements_after_agreeing_ones():
    given = np.zeros(6, dtype=np.int64)
    pseudo = np.array([0, 0, 1, 1, 1, 1])
    # samples 2-3 disagree unsurely (m below class 1's threshold), 4-5 confidently
    joint = np.array([[0.9, 0.9], [0.5, 0.5], [0.8, 0.3], [0.7, 0.3], [0.1, 0.9], [0.1, 0.9]], dtype=np.float32)
    kept = np.array([True, False, False, False, False, False])
    thresholds = np.array([0.5, 0.8], dtype=np.float32)
    # cap ceil(2/6 * 1.5 * 6) = 3 flags: 2 of the 5 flagged go back
    moved, estimate = flag_budget(kept, joint, given, pseudo, thresholds, method="confident", slack=0.5)
    assert estimate == pytest.approx(2 / 6)
    assert np.flatnonzero(moved).tolist() == [1, 2]  # agreeing first, then unsure by a
    # budget: the cap is the disagreement 4/6 -> 4 flags; only the agreeing sample may go back
    moved, estimate = flag_budget(kept, joint, given, pseudo, thresholds, method="budget", slack=0.0)
    assert estimate == pytest.approx(4 / 6) and np.flatnonzero(moved).tolist() == [1]


def test_a_class_without_samples_never_makes_a_pseudo_label_sure():
    # class 2's images were all rejected (--on-bad-image skip): no sample is given it
    given = np.array([0] * 10 + [1] * 10)
    joint = np.full((20, 2), 0.9, dtype=np.float32)
    joint[[3, 13], 0] = 0.05  # two samples the model confidently calls class 2
    pseudo = given.copy()
    pseudo[[3, 13]] = 2
    thresholds = class_thresholds(joint, given, 3)
    assert np.isinf(thresholds[2]) and thresholds[0] == pytest.approx(0.9 * 9 / 10 + 0.005, abs=1e-3)
    assert confident_noise_rate(joint, given, pseudo, thresholds) == 0.0
    ns, cs = CLUSTER_NAMES.index("NS"), CLUSTER_NAMES.index("CS")
    codes = np.where(pseudo == 2, ns, cs)
    result = apply_guard(codes, joint, given, pseudo, n_classes=3, method="budget", slack=10)
    assert (np.asarray(CLUSTER_NAMES)[result.codes[[3, 13]]] == "NHI").all()  # unlabeled, not relabeled


def test_the_class_count_comes_from_the_caller_not_the_largest_label_seen():
    # 4 classes in the manifest; the last has no sample and is never predicted
    given = np.repeat([0, 1, 2], 10)
    joint = np.full((30, 2), 0.8, dtype=np.float32)
    codes = np.full(30, CLUSTER_NAMES.index("CS"))
    result = apply_guard(codes, joint, given, given, n_classes=4, method="budget")
    assert np.array_equal(result.codes, codes) and not result.reason.any()
    assert class_floor(np.ones(30, bool), given, joint[:, 0], 4).sum() == 0


def test_apply_guard_names_the_guard_that_moved_each_sample():
    joint, given, pseudo, kind = _weak_model_population()
    codes = _codes(joint)
    result = apply_guard(codes, joint, given, pseudo, n_classes=2, method="confident")
    moved = result.codes != codes
    assert moved.any() and (result.reason[moved] > 0).all()
    names = {GUARD_REASONS[r] for r in np.unique(result.reason[result.reason > 0])}
    assert names <= {"unsure_relabel", "budget", "class_floor"} and "budget" in names
    budget = result.reason == GUARD_REASONS.index("budget")
    assert (np.asarray(CLUSTER_NAMES)[result.codes[budget]] == "CH").all()
    none = apply_guard(codes, joint, given, pseudo, n_classes=2, method="none")
    assert np.array_equal(none.codes, codes) and not none.reason.any() and none.note == ""


def test_a_zero_slack_budget_flags_exactly_the_disagreements():
    joint, given, pseudo, _ = _low_noise_population()
    codes = _codes(joint)
    result = apply_guard(codes, joint, given, pseudo, n_classes=2, method="budget", slack=0.0)
    labels = refine(np.asarray(CLUSTER_NAMES)[result.codes], given, pseudo)[1]
    flagged = labels != given
    assert np.array_equal(flagged, pseudo != given)
    assert "over the cap of model disagreement" in result.note and "+0%" not in result.note
    loose = apply_guard(codes, joint, given, pseudo, n_classes=2, method="budget")
    loose_labels = refine(np.asarray(CLUSTER_NAMES)[loose.codes], given, pseudo)[1]
    assert ((loose_labels != given) & (pseudo == given)).any()  # the training slack leaves some


def test_the_report_has_no_slack_only_where_agreement_was_not_memorised():
    assert report_slack("budget", memorised=False) == 0.0
    assert report_slack("budget", memorised=True) == TRAINING_SLACK
    assert report_slack("confident", memorised=False) == TRAINING_SLACK  # its estimate can err


def test_partly_disputed_labels_are_kept_only_at_low_noise():
    flagged = np.array([True, True, True, False, True])
    disputes = np.array([19, 18, 3, 5, 0])  # of 19 late epochs
    share = np.full(5, 0.1)  # no pair flipped systematically
    low = partly_disputed(flagged, disputes, 19, 0.2, share)
    assert low.tolist() == [False, True, True, False, True]  # every flag but the always-disputed
    assert not partly_disputed(flagged, disputes, 19, 0.4, share).any()
    assert partly_disputed(flagged, disputes, 19, HIGH_NOISE_SHARE, share).any()  # at most
    assert not partly_disputed(flagged, disputes, 0, 0.2, share).any()  # nothing recorded


def test_partly_disputed_labels_of_a_systematically_flipped_pair_stay_flagged():
    flagged = np.ones(3, dtype=bool)
    disputes = np.array([4, 4, 4])
    share = np.array([0.1, SYSTEMATIC_PAIR_SHARE, 0.3])
    assert partly_disputed(flagged, disputes, 19, 0.2, share).tolist() == [True, True, False]


def test_flip_shares_measure_a_pair_among_the_images_called_its_pseudo_label():
    given = np.array([0, 0, 1, 1, 1, 2, 2])
    pseudo = np.array([0, 1, 1, 1, 1, 1, 0])  # no image is called 2 or 3
    share = flip_shares(given, pseudo, n_classes=4)
    assert np.allclose(share, [0, 0.2, 0, 0, 0, 0.2, 0.5])  # an agreeing label is no flip


def test_the_report_flags_the_partly_disputed_labels_of_a_flipped_pair():
    """Random confusions at low noise are kept; a pair flipped for 35% of a class is not."""
    rng = np.random.default_rng(0)
    n = 4000
    pseudo = rng.integers(0, 4, n)
    given = pseudo.copy()
    confused = rng.random(n) < 0.08
    given[confused] = (pseudo[confused] + rng.integers(1, 4, confused.sum())) % 4
    flipped = (pseudo == 2) & (rng.random(n) < 0.35)
    given[flipped] = 3
    disputed = given != pseudo
    assert (~disputed).mean() > 1 - HIGH_NOISE_SHARE  # low noise overall
    joint = np.where(disputed[:, None], rng.uniform([0.05, 0.5], [0.4, 0.9], (n, 2)),
                     np.repeat(rng.uniform(0.5, 1.0, (n, 1)), 2, 1)).astype(np.float32)
    disputes = np.where(disputed, rng.integers(10, 19, n), 0)  # none in every late epoch
    report = apply_guard(_codes(joint), joint, given, pseudo, n_classes=4, method="budget",
                         slack=0.0, late_disputes=disputes, late_epochs=19)
    partly = report.reason == GUARD_REASONS.index("partly_disputed")
    pair = disputed & (given == 3) & (pseudo == 2)
    assert partly[disputed & ~pair].all() and not partly[pair].any()
    assert f"not the {int(pair.sum())} in class pairs flipped systematically" in report.note


def _disputed_population(n=3000, wrong=0.15, seed=0):
    """Two classes; a share ``wrong`` of the labels disputed, half of them in every late epoch."""
    rng = np.random.default_rng(seed)
    given = rng.integers(0, 2, n)
    disputed = rng.random(n) < wrong
    pseudo = np.where(disputed, 1 - given, given)
    joint = np.where(disputed[:, None], rng.uniform([0.05, 0.5], [0.4, 0.9], (n, 2)),
                     np.repeat(rng.uniform(0.5, 1.0, (n, 1)), 2, 1)).astype(np.float32)
    always = disputed & (rng.random(n) < 0.5)
    disputes = np.where(always, 19, np.where(disputed, rng.integers(10, 19, n), rng.integers(0, 5, n)))
    return joint, given, pseudo, disputes, always


@pytest.mark.parametrize("wrong", [0.15, 0.45])
def test_the_report_flags_partly_disputed_labels_only_when_many_are_disputed(wrong):
    joint, given, pseudo, disputes, always = _disputed_population(wrong=wrong)
    codes = _codes(joint)
    kwargs = dict(n_classes=2, method="budget", slack=0.0)
    plain = apply_guard(codes, joint, given, pseudo, **kwargs)
    report = apply_guard(codes, joint, given, pseudo, late_disputes=disputes, late_epochs=19, **kwargs)
    flags = {}
    for name, result in (("plain", plain), ("report", report)):
        admit, labels = refine(np.asarray(CLUSTER_NAMES)[result.codes], given, pseudo)
        labels = np.where(result.keep_given, given, labels)
        flags[name] = labels != given
    assert flags["plain"][pseudo != given].all()  # the zero-slack budget flags every dispute
    if wrong > HIGH_NOISE_SHARE:  # most labels disputed: the partly disputed stay flagged
        assert np.array_equal(flags["report"], flags["plain"])
        assert not (report.reason == GUARD_REASONS.index("partly_disputed")).any()
        return
    assert np.array_equal(flags["report"], always)  # only the labels disputed in every late epoch
    partly = report.reason == GUARD_REASONS.index("partly_disputed")
    assert partly[(pseudo != given) & ~always].all() and not partly[always].any()
    assert (np.asarray(CLUSTER_NAMES)[report.codes[partly]] == "CH").all()
    assert report.keep_given[partly & (pseudo != given)].all()
    assert "it disputed in only some of the 19 late epochs" in report.note


def test_only_the_report_clustering_keeps_partly_disputed_labels():
    from labelclean.config import AuditConfig
    from labelclean.fgcm.history import ConfidenceHistory
    from labelclean.fgcm.state import cluster_samples

    rng = np.random.default_rng(0)
    n, epochs = 2000, 5
    given = rng.integers(0, 2, n)
    kind = rng.choice(3, n, p=[0.8, 0.1, 0.1])  # 0 agreed, 1 disputed always, 2 in 3 of 5 epochs
    history = ConfidenceHistory(n, 2, max_epochs=epochs)
    for epoch in range(epochs):
        disputed = (kind == 1) | ((kind == 2) & (epoch < 3))
        conf = rng.uniform(0.6, 0.95, n)
        p_given = np.where(disputed, 1 - conf, conf)
        probs = np.where(given[:, None] == 0, np.stack([p_given, 1 - p_given], 1),
                         np.stack([1 - p_given, p_given], 1))
        history.update(probs.astype(np.float32), given, late=True)
    disputes, late_epochs = history.late_disputes(given)
    assert late_epochs == epochs and np.array_equal(disputes == epochs, kind == 1)
    config = AuditConfig(model="small_cnn", guard="budget", epochs=2, warmup=1)
    partly = GUARD_REASONS.index("partly_disputed")
    report, _ = cluster_samples(history, given, config, slack=0.0, keep_partly_disputed=True)
    assert np.array_equal(report.guard_reason == partly, kind == 2)
    exact, _ = cluster_samples(history, given, config, slack=0.0)
    assert not (exact.guard_reason == partly).any()


def test_the_report_keeps_partly_disputed_labels_only_for_networks_that_did_not_memorise():
    from labelclean.config import AuditConfig
    from labelclean.fgcm.frozen import frozen_config

    def keeps(config, model="air_cnn"):  # update_clusters' rule: the report has no slack
        config = config.resolve(model)
        return report_slack(config.guard, memorised=config.recordings_memorise(model)) == 0.0

    assert keeps(AuditConfig())  # the default: mixup, --schedule once, guard budget
    assert keeps(AuditConfig(guard="budget"), "small_cnn")
    assert not keeps(AuditConfig(mixup=0.0))  # cross-entropy memorises: the report keeps the slack
    assert not keeps(AuditConfig(guard="confident"))
    backbone = "efficientnet_lite0"
    assert keeps(frozen_config(AuditConfig()), backbone)  # cross-fitted heads
    assert not keeps(frozen_config(AuditConfig(), folds=1), backbone)  # one head memorises
