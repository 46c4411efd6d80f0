import numpy as np
import pytest

from focal_al import registry
from focal_al.registry import get_strategy, list_strategies
from focal_al.scores import PoolScores


def make_scores(n=60, d=8, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (3, d))
    fields = dict(
        entropy=rng.random(n) * np.log(2), margin=rng.random(n), least_confidence=rng.random(n) / 2,
        descriptors=(centres[np.arange(n) % 3] + rng.normal(0, 1, (n, d))).astype(np.float32),
        # Every third patch without foreground, for the foreground-aware random baseline.
        extras={"disagreement": rng.random(n), "foreground_fraction": np.where(np.arange(n) % 3 == 0, 0.0, rng.random(n))},
    )
    # BADGE's gradient embeddings, drawn last so the arrays above keep their values.
    fields["extras"]["gradient_embedding"] = rng.normal(0, 1, (n, 4)) * fields["entropy"][:, None]
    # What SegmentationNet.score_pool adds for ClaSP PE and the predicted-foreground random baseline.
    p_foreground = rng.random(n)
    fields["extras"]["class_entropy"] = fields["entropy"][:, None] * np.stack([1 - p_foreground, p_foreground], axis=1)
    fields["extras"]["predicted_foreground_fraction"] = np.where(np.arange(n) % 4 == 0, 0.0, p_foreground)
    fields.update(overrides)
    return PoolScores(**fields)


@pytest.mark.parametrize("name", list_strategies())
def test_strategy_contract(name):
    scores = make_scores()
    candidates = np.setdiff1d(np.arange(60), [3, 10, 11, 40])
    select = get_strategy(name)
    a = np.asarray(select(scores, 7, candidates, np.random.default_rng(5)))
    b = np.asarray(select(scores, 7, candidates, np.random.default_rng(5)))
    assert a.shape == (7,) and np.issubdtype(a.dtype, np.integer)
    assert len(np.unique(a)) == 7
    assert np.isin(a, candidates).all()
    np.testing.assert_array_equal(a, b)
    # All the candidates can be asked for.
    assert len(np.unique(select(scores, len(candidates), candidates, np.random.default_rng(0)))) == len(candidates)


@pytest.mark.parametrize("name", list_strategies())
def test_strategy_rejects_bad_sizes(name):
    scores = make_scores(n=10)
    select = get_strategy(name)
    with pytest.raises(ValueError, match="'n_instances'.*\\[1, 4\\].*Got 5"):
        select(scores, 5, np.arange(4), np.random.default_rng(0))
    with pytest.raises(ValueError, match="'n_instances'.*Got 0"):
        select(scores, 0, np.arange(4), np.random.default_rng(0))
    with pytest.raises(ValueError, match="no candidates left"):
        select(scores, 1, np.arange(0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="duplicate"):
        select(scores, 1, np.array([1, 1]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="\\[0, 10\\)"):
        select(scores, 1, np.array([10]), np.random.default_rng(0))


def test_iu_and_iu_id():
    scores = make_scores()
    candidates = np.arange(60)
    top = np.argsort(-scores.entropy)
    np.testing.assert_array_equal(get_strategy("iu")(scores, 5, candidates, None), top[:5])
    picked = get_strategy("iu-id")(scores, 5, candidates, None, candidate_ratio=2.0)
    assert set(picked.tolist()) <= set(top[:10].tolist())
    # candidate_ratio = 1: Q = T, so IU+ID keeps exactly the IU top-T.
    assert set(get_strategy("iu-id")(scores, 5, candidates, None, candidate_ratio=1.0).tolist()) == set(top[:5].tolist())
    with pytest.raises(ValueError, match="candidate_ratio"):
        get_strategy("iu-id")(scores, 5, candidates, None, candidate_ratio=0.5)


def test_focannot_errors_and_parameters():
    scores = make_scores(n=12)
    focannot = get_strategy("focannot")
    # Fewer candidates than clusters (the end of a pool): each candidate is its own cluster.
    for name in ("focannot", "cluster-equal"):
        for n in (1, 2, 4):
            chosen = get_strategy(name)(scores, n, np.arange(4), np.random.default_rng(0), k=5)
            assert len(set(chosen.tolist())) == n and set(chosen.tolist()) <= set(range(4))
    with pytest.raises(ValueError, match="'k' parameter \\(number of clusters\\) must be an int >= 1"):
        focannot(scores, 2, np.arange(4), np.random.default_rng(0), k=0)
    bad = make_scores(n=12, entropy=np.where(np.arange(12) == 3, np.nan, 0.5))
    with pytest.raises(ValueError, match="Criterion 'iu' produced 1 non-finite"):
        focannot(bad, 2, np.arange(12), np.random.default_rng(0), k=2)
    with pytest.raises(KeyError, match="Unknown criterion 'iuu'.*Did you mean 'iu'"):
        focannot(scores, 2, np.arange(12), np.random.default_rng(0), uncertainty="iuu")
    for normalize in ("sum", None):
        assert len(focannot(scores, 4, np.arange(12), np.random.default_rng(0), k=2, normalize=normalize)) == 4


def test_focannot_quotas_follow_cluster_importance():
    # Two well separated blobs, one spread out (high CU): with lam = 1 it gets most of the quota.
    rng = np.random.default_rng(0)
    tight = rng.normal(0, 0.01, (30, 4))
    loose = 50 + rng.normal(0, 3.0, (30, 4))
    scores = make_scores(n=60, d=4, descriptors=np.concatenate([tight, loose]))
    picked = get_strategy("focannot")(scores, 10, np.arange(60), np.random.default_rng(1), k=2, lam=1.0)
    assert (picked >= 30).sum() == 10
    equal = get_strategy("cluster-equal")(scores, 10, np.arange(60), np.random.default_rng(1), k=2)
    assert (equal >= 30).sum() == 5


def test_user_criterion_replaces_iu_in_focannot():
    calls = []

    @registry.register_criterion("test-reverse-index")
    def reverse_index(scores, candidates, rng):
        """Prefers high pool indices (test criterion)."""
        calls.append(len(candidates))
        return candidates.astype(float)

    try:
        scores = make_scores()
        picked = get_strategy("focannot")(
            scores, 6, np.arange(60), np.random.default_rng(0), k=3, candidate_ratio=1.0, uncertainty="test-reverse-index"
        )
        assert calls and sum(calls) == 60
        # Q = T: each cluster keeps its highest-index members.
        labels_high = np.sort(picked)
        assert labels_high.min() >= 60 - 3 * 6
    finally:
        del registry._CRITERIA["test-reverse-index"]


def test_sa_by_hand():
    # Disagreement picks images 0, 1, 2, 3 (K_u = 4); descriptors: 0 and 1 duplicate the crowd, 2 is alone.
    descriptors = np.array([[1, 0], [1, 0.01], [0, 1], [1, 0.02], [1, 0.03], [1, 0.04], [0.02, 1]], dtype=float)
    scores = make_scores(n=7, d=2, descriptors=descriptors,
                         extras={"disagreement": np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.1, 0.1])})
    picked = get_strategy("sa")(scores, 2, np.arange(7), np.random.default_rng(0))
    # The first pick covers the crowd of five similar images; the second covers images 2 and 6.
    assert picked[1] == 2 and picked[0] in {0, 1, 3}
    with pytest.raises(ValueError, match="'n_uncertain'"):
        get_strategy("sa")(scores, 2, np.arange(7), None, n_uncertain=1)
    with pytest.raises(KeyError, match="disagreement"):
        get_strategy("sa")(make_scores(n=7, extras={}), 2, np.arange(7), None)


def test_image_iu_is_top_mean_entropy():
    scores = make_scores(n=9)
    np.testing.assert_array_equal(get_strategy("image-iu")(scores, 3, np.arange(9), None), np.argsort(-scores.entropy)[:3])


def test_badge_picks_spread_out_embeddings_and_needs_them():
    # Three tight groups of embeddings: k-means++ seeding takes one from each before a second from any.
    emb = np.repeat(np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]]), 20, axis=0)
    emb += np.random.default_rng(0).normal(0, 0.01, emb.shape)
    scores = make_scores(n=60, extras={"gradient_embedding": emb})
    picked = get_strategy("badge")(scores, 3, np.arange(60), np.random.default_rng(1))
    assert sorted(i // 20 for i in picked) == [0, 1, 2]
    with pytest.raises(KeyError, match=r"gradient_embedding.*score_gradients=True"):
        get_strategy("badge")(make_scores(extras={}), 3, np.arange(60), np.random.default_rng(1))


def test_clasp_pe_stratifies_by_class_and_noises_less_as_beta_grows():
    n = 200
    entropy = np.linspace(0.01, 0.69, n)
    p_fg = np.where(np.arange(n) < 100, 0.9, 0.0)  # the foreground class only in the first half
    scores = make_scores(n=n, entropy=entropy, extras={"class_entropy": np.stack([entropy * (1 - p_fg), entropy * p_fg], 1)})
    select = get_strategy("clasp-pe")
    picked = select(scores, 30, np.arange(n), np.random.default_rng(0), beta=1e6)  # no noise: exact top ranks
    # 66 % of 30 = 19 by foreground entropy (the top of the first half), the 11 others by entropy (the top overall).
    np.testing.assert_array_equal(picked, np.r_[np.arange(81, 100), np.arange(189, 200)])
    noisy = [select(scores, 30, np.arange(n), np.random.default_rng(s), beta=1.0) for s in range(5)]
    assert all(len(set(p.tolist())) == 30 for p in noisy)
    assert len({tuple(p.tolist()) for p in noisy}) == 5  # power sampling draws other sets
    assert np.mean([np.isin(p, np.arange(100)).mean() for p in noisy]) > 0.5  # still stratified towards foreground
    with pytest.raises(ValueError, match="'beta' parameter of clasp-pe"):
        select(scores, 3, np.arange(n), np.random.default_rng(0), beta=0)
    with pytest.raises(KeyError, match="class_entropy"):
        select(make_scores(extras={}), 3, np.arange(60), np.random.default_rng(0))


def test_clasp_pe_noise_decays_with_the_budget_spent():
    """Without a fixed beta the noise follows nnActive's schedule, beta from 1 at progress 0 to 100 at
    progress 1: late queries keep to the top of the ranking, early ones spread."""
    n = 400
    entropy = np.linspace(0.01, 0.69, n)
    scores = make_scores(n=n, entropy=entropy, extras={"class_entropy": np.stack([entropy * 0, entropy], 1)})
    select = get_strategy("clasp-pe")

    def rank_of_picks(progress):
        picks = [select(scores, 20, np.arange(n), np.random.default_rng(s), progress=progress) for s in range(20)]
        return np.mean([n - 1 - p for p in picks])  # mean rank below the top (0 = the most uncertain)

    early, late = rank_of_picks(0.0), rank_of_picks(1.0)
    assert late < 15 < early
    # progress 0 is beta 1, progress 1 is beta 100 (the same draws as the fixed values).
    for progress, beta in ((0.0, 1.0), (1.0, 100.0), (0.5, 10.0)):
        np.testing.assert_array_equal(select(scores, 20, np.arange(n), np.random.default_rng(3), progress=progress),
                                      select(scores, 20, np.arange(n), np.random.default_rng(3), beta=beta))
    with pytest.raises(ValueError, match="'progress' parameter of clasp-pe"):
        select(scores, 3, np.arange(n), np.random.default_rng(0), progress=1.5)


def test_random_predicted_foreground_reads_the_networks_foreground_not_the_truth():
    scores = make_scores(extras={"predicted_foreground_fraction": np.where(np.arange(60) < 10, 0.5, 0.0)})
    picked = get_strategy("random-predicted-foreground")(scores, 8, np.arange(60), np.random.default_rng(0))
    assert np.isin(picked, np.arange(10)).sum() >= 4  # ceil(0.5 * 8) from the predicted foreground
    with pytest.raises(KeyError, match="predicted_foreground_fraction"):
        get_strategy("random-predicted-foreground")(make_scores(extras={}), 3, np.arange(60), np.random.default_rng(0))
