import numpy as np
import ot
import pytest

from focal_al.registry import get_criterion, list_criteria
from focal_al.scores import PoolScores


def make_scores(n=10, d=8, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    fields = dict(
        entropy=rng.random(n) * np.log(2), margin=rng.random(n), least_confidence=rng.random(n) / 2,
        descriptors=rng.standard_normal((n, d)), extras={"disagreement": rng.random(n)},
    )
    # Drawn last, so the arrays above keep their values.
    fields["extras"]["tta_disagreement"] = rng.random(n) / 4
    fields["extras"]["bald"] = rng.random(n) / 8
    fields.update(overrides)
    return PoolScores(**fields)


def pot_mean_cost(descriptors, metric="sqeuclidean", root=False):
    """Reference: mean over q != n of the exact OT cost between descriptor value sets (POT, per pair)."""
    z = np.asarray(descriptors, dtype=np.float64)
    n, d = z.shape
    w = np.full(d, 1.0 / d)
    out = np.zeros(n)
    for i in range(n):
        for j in range(n):
            if i != j:
                # emd2 with uniform weights is the mean cost per unit mass; Eq. 4 sums over d values.
                cost = d * ot.emd2(w, w, ot.dist(z[i][:, None], z[j][:, None], metric=metric))
                out[i] += np.sqrt(cost) if root else cost
    return out / (n - 1)


# ------------------------------------------------------------------------ hand-checked cases


def test_uncertainty_criteria_by_hand():
    scores = make_scores(
        n=3, entropy=np.array([0.1, 0.6, 0.3]), margin=np.array([0.9, 0.1, 0.5]),
        least_confidence=np.array([0.05, 0.45, 0.2]),
    )
    candidates = np.array([2, 0])
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(get_criterion("iu")(scores, candidates, rng), [0.3, 0.1])
    np.testing.assert_allclose(get_criterion("margin")(scores, candidates, rng), [-0.5, -0.9])
    np.testing.assert_allclose(get_criterion("least-confidence")(scores, candidates, rng), [0.2, 0.05])
    np.testing.assert_allclose(
        get_criterion("disagreement")(scores, candidates, rng), scores.extras["disagreement"][[2, 0]]
    )


def test_random_criterion_uses_the_generator():
    scores = make_scores()
    a = get_criterion("random")(scores, np.arange(5), np.random.default_rng(3))
    b = get_criterion("random")(scores, np.arange(5), np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5,) and np.all((a >= 0) & (a < 1))


def test_disagreement_missing_extra():
    scores = make_scores(extras={})
    with pytest.raises(KeyError, match="extras\\['disagreement'\\]"):
        get_criterion("disagreement")(scores, np.arange(3), np.random.default_rng(0))
    with pytest.raises(KeyError, match=r"extras\['tta_disagreement'\].*score_tta=True"):
        get_criterion("tta")(scores, np.arange(3), np.random.default_rng(0))
    with pytest.raises(KeyError, match=r"extras\['bald'\].*mc_samples=T"):
        get_criterion("bald")(scores, np.arange(3), np.random.default_rng(0))


def test_id_by_hand():
    # Sorted descriptors: [0, 1], [0, 1], [3, 3]; W = 0 between the first two, 9 + 4 = 13 to the third.
    descriptors = np.array([[0.0, 1.0], [1.0, 0.0], [3.0, 3.0]])
    scores = make_scores(n=3, d=2, entropy=np.array([1.0, 2.0, 0.5]), descriptors=descriptors)
    s = get_criterion("id")(scores, np.arange(3), np.random.default_rng(0))
    np.testing.assert_allclose(s, [1.0 * 6.5, 2.0 * 6.5, 0.5 * 13.0])
    rooted = get_criterion("id-rooted")(scores, np.arange(3), np.random.default_rng(0))
    np.testing.assert_allclose(rooted, [np.sqrt(13) / 2, np.sqrt(13), 0.5 * np.sqrt(13)])
    w1 = get_criterion("id-w1")(scores, np.arange(3), np.random.default_rng(0))
    np.testing.assert_allclose(w1, [1.0 * 2.5, 2.0 * 2.5, 0.5 * 5.0])


def test_id_single_candidate_is_zero():
    scores = make_scores(n=4)
    for name in ("id", "id-rooted", "id-w1"):
        np.testing.assert_array_equal(get_criterion(name)(scores, np.array([2]), np.random.default_rng(0)), [0.0])


@pytest.mark.parametrize("seed", range(4))
def test_id_matches_pot(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(2, 7)), int(rng.integers(1, 9))
    scores = make_scores(n=n + 3, d=d, seed=seed)
    candidates = rng.permutation(n + 3)[:n]
    z = scores.descriptors[candidates]
    h = scores.entropy[candidates]
    r = np.random.default_rng(0)
    reference = pot_mean_cost(z)
    np.testing.assert_allclose(get_criterion("id")(scores, candidates, r), h * reference, rtol=1e-9, atol=0)
    np.testing.assert_allclose(get_criterion("id-rooted")(scores, candidates, r), h * pot_mean_cost(z, root=True), rtol=1e-9)
    np.testing.assert_allclose(get_criterion("id-w1")(scores, candidates, r), h * pot_mean_cost(z, metric="cityblock"), rtol=1e-9)
    # The 1-D solver agrees too (it returns the mean cost per unit mass, W_p^p).
    by_1d = np.array([
        sum(d * ot.wasserstein_1d(z[i], z[j], p=2) for j in range(n) if j != i) / (n - 1) for i in range(n)
    ])
    np.testing.assert_allclose(reference, by_1d, rtol=1e-9)


def test_id_float32_descriptors_match_float64_reference():
    scores = make_scores(n=6, d=16, seed=7)
    scores32 = make_scores(n=6, d=16, seed=7, descriptors=scores.descriptors.astype(np.float32))
    z = scores32.descriptors.astype(np.float64)
    expected = scores.entropy * pot_mean_cost(z)
    np.testing.assert_allclose(get_criterion("id")(scores32, np.arange(6), np.random.default_rng(0)), expected, rtol=1e-9)


def test_cluster_criteria_by_hand():
    descriptors = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 4.0]])
    labels = np.array([0, 0, 1, 1])
    centroids = np.array([[1.0, 0.0], [10.0, 2.0]])
    np.testing.assert_allclose(get_criterion("cu")(descriptors, labels, centroids), [1.0, 4.0])
    np.testing.assert_allclose(get_criterion("cd")(descriptors, labels, centroids), [85.0, 85.0])
    np.testing.assert_allclose(get_criterion("uniform")(descriptors, labels, centroids), [1.0, 1.0])
    three = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    # Squared distances: 0-1: 9, 0-2: 16, 1-2: 25; divided by k - 1 = 2.
    np.testing.assert_allclose(get_criterion("cd")(three, np.arange(3), three), [12.5, 17.0, 20.5])
    np.testing.assert_allclose(get_criterion("cu")(three, np.arange(3), three), [0.0, 0.0, 0.0])


def test_cluster_criteria_single_and_empty_cluster():
    x = np.array([[0.0], [2.0]])
    np.testing.assert_allclose(get_criterion("cd")(x, np.array([0, 0]), np.array([[1.0]])), [0.0])
    np.testing.assert_allclose(get_criterion("cu")(x, np.array([0, 0]), np.array([[1.0], [5.0]])), [1.0, 0.0])


# ------------------------------------------------------------- contract, over the whole registry

# Cases where "higher = ask first" has a meaning: the candidate that must score highest.
def _most_uncertain_case():
    return make_scores(
        n=4, d=4, entropy=np.array([0.1, 0.2, 0.69, 0.3]), margin=np.array([0.8, 0.6, 0.01, 0.5]),
        least_confidence=np.array([0.1, 0.2, 0.49, 0.25]), extras={"disagreement": np.array([0.0, 0.1, 0.9, 0.2])},
        descriptors=np.array([[0, 0, 0, 0], [0, 0, 0, 0.1], [5, 5, 5, 5], [0, 0, 0.1, 0]], dtype=np.float32),
    )


EXPECTED_TOP = {name: 2 for name in ("iu", "margin", "least-confidence", "disagreement", "id", "id-rooted",
                                     "id-w1", "entropy-times-margin")}


@pytest.mark.parametrize("name", list_criteria(kind="instance"))
def test_instance_criterion_contract(name):
    func = get_criterion(name)
    scores = make_scores(n=9, d=5)
    before = {f: np.copy(getattr(scores, f)) for f in ("entropy", "margin", "least_confidence", "descriptors")}
    candidates = np.array([7, 1, 4, 0, 8])
    a = np.asarray(func(scores, candidates, np.random.default_rng(11)))
    b = np.asarray(func(scores, candidates, np.random.default_rng(11)))
    assert a.shape == (len(candidates),)
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    for f, value in before.items():
        np.testing.assert_array_equal(getattr(scores, f), value)
    if name in EXPECTED_TOP:
        values = func(_most_uncertain_case(), np.arange(4), np.random.default_rng(0))
        assert int(np.argmax(values)) == EXPECTED_TOP[name]


@pytest.mark.parametrize("name", list_criteria(kind="cluster"))
def test_cluster_criterion_contract(name):
    rng = np.random.default_rng(2)
    descriptors = rng.standard_normal((12, 3))
    labels = np.arange(12) % 3
    centroids = np.stack([descriptors[labels == c].mean(axis=0) for c in range(3)])
    values = np.asarray(get_criterion(name)(descriptors, labels, centroids))
    assert values.shape == (3,)
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    np.testing.assert_array_equal(values, get_criterion(name)(descriptors, labels, centroids))
