import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from labelclean.fgcm.clustering import (
    CLUSTER_NAMES,
    GMMParams,
    apply_guard,
    confident_noise_rate,
    fit_gmm,
    gmm_posteriors,
    name_components,
    refine,
    update_training_set,
)

# Where the paper's Figure 2 puts the five kinds of samples, as (a, m).
ROLES = {
    "CS": (0.95, 0.95),
    "CH": (0.7, 0.7),
    "NS": (0.1, 0.8),
    "NHR": (0.35, 0.45),
    "NHI": (0.1, 0.2),
}


def _blobs(n_per=400, spread=0.03, seed=0):
    rng = np.random.default_rng(seed)
    pts, truth = [], []
    for j, center in enumerate(ROLES.values()):
        pts.append(rng.normal(center, spread, (n_per, 2)))
        truth += [j] * n_per
    return np.concatenate(pts).astype(np.float32), np.array(truth)


def test_em_matches_scikit_learn_partition_on_separated_blobs():
    pts, truth = _blobs()
    ours = gmm_posteriors(pts, fit_gmm(pts, n_components=5, seed=0)).argmax(1)
    ref = GaussianMixture(5, covariance_type="full", random_state=0).fit(pts).predict(pts)
    assert adjusted_rand_score(ours, ref) > 0.99
    assert adjusted_rand_score(ours, truth) > 0.99


def test_em_likelihood_close_to_scikit_learn_on_overlapping_data():
    pts, _ = _blobs(spread=0.12, seed=3)
    ours = fit_gmm(pts, n_components=5, seed=0, tol=1e-4, max_iter=300)
    ref = GaussianMixture(5, covariance_type="full", random_state=0, tol=1e-4, max_iter=300).fit(
        pts
    )
    assert ours.lower_bound == pytest.approx(ref.score(pts), abs=0.02)


def test_warm_start_converges_in_a_few_iterations():
    pts, _ = _blobs(seed=1)
    cold = fit_gmm(pts, n_components=5, seed=0)
    warm = fit_gmm(pts + 0.005, n_components=5, init=cold)
    assert warm.converged and warm.n_iter <= 5


def test_one_dimensional_fit_and_subsampling():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.normal(0.9, 0.03, 3000), rng.normal(0.2, 0.05, 1000)]).astype(
        np.float32
    )
    params = fit_gmm(a[:, None], n_components=2, max_fit_points=1000)
    assert sorted(np.round(params.means[:, 0], 1)) == [0.2, 0.9]
    post = gmm_posteriors(a, params)
    assert post.shape == (4000, 2) and np.allclose(post.sum(1), 1, atol=1e-5)


def test_params_round_trip_through_json_dict():
    pts, _ = _blobs()
    p = fit_gmm(pts, n_components=5)
    q = GMMParams.from_dict(p.to_dict())
    assert np.allclose(gmm_posteriors(pts, p), gmm_posteriors(pts, q))


def test_naming_recovers_the_figure_2_roles():
    pts, truth = _blobs()
    params = fit_gmm(pts, n_components=5, seed=0)
    names = np.array(name_components(params.means))
    assigned = names[gmm_posteriors(pts, params).argmax(1)]
    expected = np.array(list(ROLES))[truth]
    assert (assigned == expected).mean() > 0.99


def test_naming_for_ablation_sizes():
    assert name_components(np.array([[0.2], [0.9]])) == ["NHI", "CS"]
    assert name_components(np.array([[0.9, 0.9], [0.1, 0.8], [0.2, 0.3]])) == ["CS", "NS", "NHI"]
    assert name_components(np.array([[0.9, 0.9], [0.7, 0.7], [0.1, 0.8], [0.2, 0.3]])) == [
        "CS",
        "CH",
        "NS",
        "NHI",
    ]


def test_refinement_follows_section_3_2():
    names = np.array(["CS", "CS", "CH", "NS", "NS", "NHR", "NHI"])
    given = np.array([1, 1, 2, 0, 0, 1, 1])
    pseudo = np.array([1, 0, 2, 3, 0, 1, 2])
    admit, labels = refine(names, given, pseudo)
    assert admit.tolist() == [True, False, True, True, False, False, False]
    assert labels.tolist() == [1, -1, 2, 3, -1, -1, -1]


def test_union_T_only_grows_and_keeps_the_latest_label():
    in_t = np.zeros(4, bool)
    t_labels = np.full(4, -1)
    first = np.full(4, -1, np.int32)
    in_t, t_labels, first = update_training_set(
        in_t,
        t_labels,
        first,
        np.array([1, 1, 0, 0], bool),
        np.array([5, 6, -1, -1]),
        epoch=3,
        rule="union",
    )
    in_t, t_labels, first = update_training_set(
        in_t,
        t_labels,
        first,
        np.array([0, 1, 1, 0], bool),
        np.array([-1, 7, 8, -1]),
        epoch=4,
        rule="union",
    )
    assert in_t.tolist() == [True, True, True, False]
    assert t_labels.tolist() == [5, 7, 8, -1]
    assert first.tolist() == [3, 3, 4, -1]


def test_latest_T_is_this_epochs_clusters():
    in_t, t_labels, first = (
        np.array([1, 1, 0], bool),
        np.array([5, 6, -1]),
        np.array([3, 3, -1], np.int32),
    )
    in_t, t_labels, first = update_training_set(
        in_t,
        t_labels,
        first,
        np.array([0, 1, 1], bool),
        np.array([-1, 9, 8]),
        epoch=5,
        rule="latest",
    )
    assert in_t.tolist() == [False, True, True]
    assert t_labels.tolist() == [-1, 9, 8]
    assert first.tolist() == [-1, 3, 5]


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
    guarded, _, note = apply_guard(codes, joint, given, pseudo, method="budget")
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
    from labelclean.fgcm.audit import Clustering, admit_samples

    joint, given, pseudo, kind = _weak_model_population()
    codes = _codes(joint)
    budget, kept_budget, _ = apply_guard(codes, joint, given, pseudo, method="budget")
    assert not kept_budget[kind == 2].any()  # budget: T holds only labels the model agrees with
    guarded, keep_given, note = apply_guard(codes, joint, given, pseudo, method="confident")
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
    given = np.zeros(len(pts), dtype=np.int64)
    pseudo = np.where(np.isin(roles, ("CS", "CH")), 0, 1)  # noisy kinds disagree
    guarded, rescued, note = apply_guard(codes, pts, given, pseudo, method="budget")
    assert np.array_equal(guarded, codes) and note == "" and not rescued.any()


def test_guard_unlabels_ns_relabels_below_the_class_threshold():
    from labelclean.fgcm.clustering import class_thresholds

    # class 0 samples are typically held at 0.8 confidence; two NS samples want class 0
    # (class 1 has four clean samples too, so the class floor has nothing to do)
    joint = np.array([[0.8, 0.8]] * 6 + [[0.1, 0.9], [0.1, 0.4]] + [[0.7, 0.7]] * 4, dtype=np.float32)
    given = np.array([0] * 6 + [1, 1] + [1] * 4)
    pseudo = np.array([0] * 6 + [0, 0] + [1] * 4)
    assert class_thresholds(joint, given, 2)[0] == pytest.approx(0.8)
    codes = np.array([CLUSTER_NAMES.index("CS")] * 6 + [CLUSTER_NAMES.index("NS")] * 2 + [CLUSTER_NAMES.index("CS")] * 4)
    guarded, rescued, note = apply_guard(codes, joint, given, pseudo, method="budget", slack=10)
    assert not rescued.any()
    names = np.asarray(CLUSTER_NAMES)[guarded]
    assert names[6] == "NS" and names[7] == "NHI" and "below their class threshold" in note


def test_class_floor_keeps_a_collapsed_class_in_t_most_confident_first():
    from labelclean.fgcm.clustering import class_floor

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
    from labelclean.fgcm.audit import Clustering, admit_samples

    given = np.repeat([0, 1, 2], 20)
    pseudo = np.where(given == 2, 0, given)  # class 2 is never predicted
    joint = np.column_stack([np.where(given == 2, np.linspace(0.3, 0.01, 60), 0.9),
                             np.full(60, 0.9)]).astype(np.float32)
    codes = np.where(given == 2, CLUSTER_NAMES.index("NHI"), CLUSTER_NAMES.index("CS"))
    guarded, rescued, note = apply_guard(codes, joint, given, pseudo, method="budget")
    assert rescued.sum() == 10 and (given[rescued] == 2).all() and "drops out of T" in note
    assert (np.asarray(CLUSTER_NAMES)[guarded[rescued]] == "CH").all()
    clustering = Clustering(guarded, np.ones(60, np.float32), None, list(CLUSTER_NAMES), note, rescued)
    admit, labels = admit_samples(clustering, given, pseudo, 5, relabel=False)
    assert admit[rescued].all() and (labels[rescued] == 2).all()
    assert admit.sum() == 50 and (labels[admit] == given[admit]).all()


def _two_live_blobs(n_per=300, seed=0):
    """A CS blob and an NS blob only (no CH, NHR, NHI samples at all)."""
    rng = np.random.default_rng(seed)
    cs = rng.normal(ROLES["CS"], 0.02, (n_per, 2))
    ns = rng.normal(ROLES["NS"], 0.02, (n_per, 2))
    return np.concatenate([cs, ns]).astype(np.float32), np.repeat(["CS", "NS"], n_per)


def test_an_emptied_component_is_dropped_and_never_named():
    pts, truth = _two_live_blobs()
    # warm start from a fit whose CH/NHR/NHI components sit where no point is left
    init = GMMParams(
        np.full(5, 0.2),
        np.array([ROLES["CS"], (0.6, 0.6), ROLES["NS"], (0.4, 0.45), (0.3, 0.2)]),
        np.tile(np.eye(2) * 1e-4, (5, 1, 1)),
    )
    params = fit_gmm(pts, n_components=5, init=init)
    assert len(params.weights) == 2 and params.weights.sum() == pytest.approx(1)
    assert (np.abs(params.means).sum(1) > 0.5).all()  # no component collapsed onto (0, 0)
    names = np.array(name_components(params.means))
    assigned = names[gmm_posteriors(pts, params).argmax(1)]
    assert (assigned == truth).all()  # the NS blob is NS (relabeled), not CH (dropped)


def test_naming_fewer_live_components_uses_the_rule_for_their_number():
    assert name_components(np.array([[0.1, 0.8], [0.95, 0.95]])) == ["NS", "CS"]  # 2-D
    assert name_components(np.array([[0.2], [0.9]])) == ["NHI", "CS"]  # 1-D: by a alone
    assert name_components(np.array([[0.9, 0.9]])) == ["CS"]


def test_fewer_points_or_distinct_values_than_components_fit_fewer_components():
    three = np.array([[0.9, 0.9], [0.1, 0.8], [0.2, 0.3]], dtype=np.float32)
    params = fit_gmm(three, n_components=5)
    assert len(params.weights) == 3 and sorted(name_components(params.means)) == ["CS", "NHI", "NS"]
    two_values = np.repeat(np.array([[0.9, 0.9], [0.1, 0.8]], dtype=np.float32), 50, axis=0)
    params = fit_gmm(two_values, n_components=5)
    assert len(params.weights) == 2 and np.isfinite(params.means).all()
    from labelclean.fgcm.clustering import fit_kmeans

    assign, centers = fit_kmeans(two_values, n_components=5)
    assert len(centers) == 2 and set(assign) == {0, 1}


def test_a_non_finite_point_is_an_error_not_a_silent_nan_fit():
    pts, _ = _blobs(n_per=50)
    warm = fit_gmm(pts[:200], n_components=5)
    pts[17, 1] = np.nan
    with pytest.raises(ValueError, match="not finite.*row 17"):
        fit_gmm(pts, n_components=5)
    with pytest.raises(ValueError, match="not finite.*row 17"):  # warm: was every parameter NaN
        fit_gmm(pts, n_components=5, init=warm)
    with pytest.raises(ValueError, match="not finite"):
        gmm_posteriors(pts, fit_gmm(pts[:16], n_components=2))
    with pytest.raises(ValueError, match="zero points"):
        fit_gmm(np.zeros((0, 2), np.float32))
