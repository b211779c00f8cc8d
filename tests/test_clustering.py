import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from labelclean.fgcm.clustering import (
    GMMParams,
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
