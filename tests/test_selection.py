import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from focal_al import selection
from focal_al.scores import PoolScores


def make_scores(n=20, d=4, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    fields = dict(entropy=rng.random(n), margin=rng.random(n), least_confidence=rng.random(n),
                  descriptors=rng.standard_normal((n, d)))
    fields.update(overrides)
    return PoolScores(**fields)


def test_top_rank_order_and_ties():
    np.testing.assert_array_equal(selection.top_rank([0.1, 0.9, 0.5, 0.9, 0.2], 3), [1, 3, 2])
    np.testing.assert_array_equal(selection.top_rank([1.0, 1.0, 1.0, 0.0], 2), [0, 1])
    np.testing.assert_array_equal(selection.top_rank([3.0, 1.0], 2), [0, 1])
    assert selection.top_rank([1.0], 0).size == 0
    with pytest.raises(ValueError, match="0 <= n <= 2"):
        selection.top_rank([1.0, 2.0], 3)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=30), st.data())
def test_top_rank_matches_stable_argsort(values, data):
    n = data.draw(st.integers(0, len(values)))
    values = np.asarray(values, dtype=float)
    np.testing.assert_array_equal(selection.top_rank(values, n), np.argsort(-values, kind="stable")[:n])


def test_mean_sq_sorted_distance_matches_brute_force():
    z = np.random.default_rng(1).standard_normal((7, 5))
    s = np.sort(z, axis=1)
    pair = ((s[:, None, :] - s[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(selection.mean_sq_sorted_distance(z), pair.sum(1) / 6, rtol=1e-12)
    np.testing.assert_allclose(selection.mean_sorted_distance(z, p=2, root=True), np.sqrt(pair).sum(1) / 6, rtol=1e-12)
    p3 = (np.abs(s[:, None, :] - s[None, :, :]) ** 3).sum(-1)
    np.testing.assert_allclose(selection.mean_sorted_distance(z, p=3), p3.sum(1) / 6, rtol=1e-12)
    assert selection.mean_sq_sorted_distance(z[:1]).tolist() == [0.0]
    with pytest.raises(ValueError, match="'p'"):
        selection.mean_sorted_distance(z, p=0.5)


def test_kmeans_seeded_and_k_checks():
    x = np.concatenate([np.zeros((10, 3)), np.full((10, 3), 5.0)]) + np.random.default_rng(0).normal(0, 0.1, (20, 3))
    a, ca = selection.kmeans(x, 2, rng=np.random.default_rng(4))
    b, cb = selection.kmeans(x, 2, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ca, cb)
    assert len(set(a[:10])) == 1 and len(set(a[10:])) == 1 and a[0] != a[10]
    with pytest.raises(ValueError, match="'k' parameter \\(21 clusters\\).*number of candidates \\(20\\)"):
        selection.kmeans(x, 21, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="'k'"):
        selection.kmeans(x, 0, rng=np.random.default_rng(0))
    labels, centroids = selection.kmeans(x, 1, rng=np.random.default_rng(0))
    assert labels.tolist() == [0] * 20 and centroids.shape == (1, 3)


def test_allocate_quotas_largest_remainder():
    np.testing.assert_array_equal(selection.allocate_quotas([0.5, 0.3, 0.2], 10), [5, 3, 2])
    # 7 * (1/3, 1/3, 1/3) = 2.33 each: the one remaining unit goes to the lowest index.
    np.testing.assert_array_equal(selection.allocate_quotas([1, 1, 1], 7), [3, 2, 2])
    np.testing.assert_array_equal(selection.allocate_quotas([0.1, 0.45, 0.45], 3), [0, 2, 1])
    np.testing.assert_array_equal(selection.allocate_quotas([0, 0], 3), [2, 1])


def test_allocate_quotas_passes_surplus_iteratively():
    # Cluster 0 wants 8 but holds 1; cluster 1 then wants more than its 3; cluster 2 takes the rest.
    q = selection.allocate_quotas([0.8, 0.15, 0.05], 10, capacities=[1, 3, 50])
    np.testing.assert_array_equal(q, [1, 3, 6])
    np.testing.assert_array_equal(selection.allocate_quotas([1.0, 0.0], 4, capacities=[2, 5]), [2, 2])
    with pytest.raises(ValueError, match="Cannot allocate 9"):
        selection.allocate_quotas([1, 1], 9, capacities=[4, 4])
    with pytest.raises(ValueError, match="finite"):
        selection.allocate_quotas([np.nan, 1], 2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=1, max_size=6), st.data())
def test_allocate_quotas_properties(weights, data):
    caps = np.asarray(data.draw(st.lists(st.integers(0, 20), min_size=len(weights), max_size=len(weights))))
    total = data.draw(st.integers(0, int(caps.sum())))
    q = selection.allocate_quotas(weights, total, capacities=caps)
    assert q.sum() == total and np.all(q >= 0) and np.all(q <= caps)


def test_cluster_importance_normalisation():
    x = np.array([[0.0], [2.0], [10.0], [10.0]])
    labels = np.array([0, 0, 1, 1])
    centroids = np.array([[1.0], [10.0]])
    # CU = [1, 0], CD = [81, 81]: summed to one each -> [1, 0] and [.5, .5]; mixed 50/50 -> [.75, .25].
    np.testing.assert_allclose(selection.cluster_importance(x, labels, centroids), [0.75, 0.25])
    # Raw mixing (the paper): [41, 40.5] / 81.5.
    np.testing.assert_allclose(selection.cluster_importance(x, labels, centroids, normalize=None), [41 / 81.5, 40.5 / 81.5])
    np.testing.assert_allclose(selection.cluster_importance(x, labels, centroids, lam=1.0), [1.0, 0.0])
    # Every cluster collapsed on one point: zero CU and CD, equal importance rather than NaN.
    same = np.zeros((4, 1))
    np.testing.assert_allclose(selection.cluster_importance(same, labels, np.zeros((2, 1))), [0.5, 0.5])
    with pytest.raises(ValueError, match="'lam'"):
        selection.cluster_importance(x, labels, centroids, lam=1.5)
    with pytest.raises(ValueError, match="'normalize'"):
        selection.cluster_importance(x, labels, centroids, normalize="max")


def test_double_ranking_by_hand():
    # Two clusters of 4; importance 0.75 / 0.25; T = 4 -> quotas 3 / 1, Q = 6 -> 5 / 1 (capped at 4 / 2).
    entropy = np.array([0.9, 0.8, 0.7, 0.1, 0.5, 0.4, 0.3, 0.2])
    descriptors = np.array([[0.0], [0.0], [9.0], [9.0], [0.0], [1.0], [2.0], [3.0]])
    scores = make_scores(n=8, d=1, entropy=entropy, descriptors=descriptors)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    picked = selection.double_ranking(
        scores, np.arange(8), 4, n_candidates=6, cluster_labels=labels, importance=np.array([0.75, 0.25]),
        rng=np.random.default_rng(0),
    )
    assert len(picked) == 4 and len(set(picked.tolist())) == 4
    assert set(picked[:3].tolist()) <= {0, 1, 2, 3} and picked[3] in {4, 5}
    # In cluster 0, patch 2 (far from the others) beats 1 despite lower entropy once reweighted by ID.
    assert 2 in picked[:3]


def test_double_ranking_accepts_callables_and_names_bad_criterion():
    scores = make_scores(n=6)

    def nan_criterion(scores, candidates, rng):
        return np.full(len(candidates), np.nan)

    with pytest.raises(ValueError, match="Criterion 'nan_criterion' produced 6 non-finite"):
        selection.double_ranking(scores, np.arange(6), 2, n_candidates=4, cluster_labels=np.zeros(6, int),
                                 importance=np.ones(1), rank_criterion=nan_criterion, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="one score per candidate"):
        selection.evaluate_criterion(lambda s, c, r: np.zeros(2), scores, np.arange(3), np.random.default_rng(0))
    with pytest.raises(ValueError, match="one entry per candidate"):
        selection.double_ranking(scores, np.arange(6), 2, n_candidates=4, cluster_labels=np.zeros(5, int),
                                 importance=np.ones(1), rng=np.random.default_rng(0))


def test_check_n_instances():
    assert selection.check_n_instances(3, 3) == 3
    with pytest.raises(ValueError, match="must be in \\[1, 3\\].*Got 0"):
        selection.check_n_instances(0, 3)
    with pytest.raises(ValueError, match="Got 4"):
        selection.check_n_instances(4, 3)
    with pytest.raises(ValueError, match="no candidates left"):
        selection.check_n_instances(1, 0)
    with pytest.raises(TypeError, match="int"):
        selection.check_n_instances(2.0, 3)
