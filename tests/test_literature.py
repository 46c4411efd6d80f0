"""Strategies from the active-learning literature: stochastic batch acquisition, core-set, TypiClust,
foreground-aware random. The registry-wide contract tests (tests/test_strategies.py) cover them too."""
import numpy as np
import pytest

from focal_al import selection
from focal_al.registry import get_strategy, query_strategy, strategy_info
from focal_al.scores import PoolScores


def make_scores(n=60, d=8, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    fields = dict(
        entropy=rng.random(n) * np.log(2), margin=rng.random(n), least_confidence=rng.random(n) / 2,
        descriptors=rng.normal(0, 1, (n, d)).astype(np.float32), extras={},
    )
    fields.update(overrides)
    return PoolScores(**fields)


def draw_frequencies(values, n_draws=4000, **kw):
    rng = np.random.default_rng(0)
    first = [selection.stochastic_top(values, 1, rng, **kw)[0] for _ in range(n_draws)]
    return np.bincount(first, minlength=len(values)) / n_draws


# --------------------------------------------------------------------------- stochastic sampling


def test_stochastic_top_first_draw_follows_the_mode_distribution():
    values = np.array([3.0, 1.0, 0.0, -1.0])
    # power: negative scores present, so shifted by the minimum: weights 4, 2, 1, 0.
    np.testing.assert_allclose(draw_frequencies(values, mode="power"), [4 / 7, 2 / 7, 1 / 7, 0], atol=0.03)
    softmax = np.exp(values / 2.0) / np.exp(values / 2.0).sum()
    np.testing.assert_allclose(draw_frequencies(values, mode="softmax", temperature=2.0), softmax, atol=0.03)
    softrank = np.arange(1, 5.0) ** -2.0 / (np.arange(1, 5.0) ** -2.0).sum()
    np.testing.assert_allclose(draw_frequencies(values, mode="softrank", beta=2.0), softrank, atol=0.03)
    # Non-negative scores are used as they are (the paper's definition), here with beta = 2.
    np.testing.assert_allclose(draw_frequencies(np.array([2.0, 1.0]), beta=2.0), [0.8, 0.2], atol=0.03)


@pytest.mark.parametrize("mode", selection.STOCHASTIC_MODES)
def test_stochastic_top_equal_scores_are_uniform_and_all_can_be_drawn(mode):
    for values in (np.zeros(4), np.full(4, -2.0), np.full(4, 0.3)):
        np.testing.assert_allclose(draw_frequencies(values, mode=mode), 0.25, atol=0.03)
        drawn = selection.stochastic_top(values, 4, np.random.default_rng(1), mode=mode)
        assert sorted(drawn.tolist()) == [0, 1, 2, 3]


def test_stochastic_top_zero_weights_come_last_and_beta_zero_is_uniform():
    values = np.array([0.0, 5.0, 0.0, 1.0])
    for seed in range(20):
        drawn = selection.stochastic_top(values, 4, np.random.default_rng(seed))
        assert set(drawn[:2].tolist()) == {1, 3}
    np.testing.assert_allclose(draw_frequencies(np.array([9.0, 1.0, 0.5]), beta=0.0), 1 / 3, atol=0.03)
    # Ties in softrank share their mean rank: the two 1.0 are equally likely.
    freq = draw_frequencies(np.array([1.0, 1.0, 0.0]), mode="softrank")
    assert abs(freq[0] - freq[1]) < 0.04 and freq[2] < freq[0]


def test_stochastic_top_validates():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="'mode' parameter must be one of.*Got 'gumbel'"):
        selection.stochastic_top([1.0, 2.0], 1, rng, mode="gumbel")
    with pytest.raises(ValueError, match="'beta' parameter must be a finite number >= 0. Got -1"):
        selection.stochastic_top([1.0, 2.0], 1, rng, beta=-1)
    with pytest.raises(ValueError, match="'temperature' parameter must be a finite number > 0. Got 0"):
        selection.stochastic_top([1.0, 2.0], 1, rng, mode="softmax", temperature=0)
    with pytest.raises(ValueError, match="0 <= n <= 2"):
        selection.stochastic_top([1.0, 2.0], 3, rng)
    with pytest.raises(ValueError, match="finite"):
        selection.stochastic_top([1.0, np.nan], 1, rng)
    with pytest.raises(TypeError, match="Generator"):
        selection.stochastic_top([1.0, 2.0], 1, None)
    assert selection.stochastic_top([], 0, rng).size == 0


def test_stochastic_strategy_any_criterion_by_name():
    scores = make_scores()
    stochastic = get_strategy("stochastic")
    for criterion in ("iu", "margin", "least-confidence", "id"):
        picked = stochastic(scores, 10, np.arange(60), np.random.default_rng(0), uncertainty=criterion)
        assert len(set(picked.tolist())) == 10
    # A very cold sampler is the top-T; a warm one is not.
    top = set(np.argsort(-scores.entropy)[:10].tolist())
    cold = stochastic(scores, 10, np.arange(60), np.random.default_rng(0), mode="softmax", temperature=1e-6)
    assert set(cold.tolist()) == top
    warm = stochastic(scores, 10, np.arange(60), np.random.default_rng(0))
    assert set(warm.tolist()) != top
    with pytest.raises(KeyError, match="Unknown criterion 'iuu'"):
        stochastic(scores, 2, np.arange(60), np.random.default_rng(0), uncertainty="iuu")
    # Composed through the registry, a misspelt criterion is refused before any query.
    with pytest.raises(KeyError, match="Unknown criterion 'marginn'.*Did you mean 'margin'"):
        query_strategy("stochastic", uncertainty="marginn")


def test_focannot_default_selection_is_unchanged_and_stochastic_stays_in_the_refined_sets():
    scores = make_scores(n=90)
    focannot = get_strategy("focannot")
    default = focannot(scores, 9, np.arange(90), np.random.default_rng(3), k=3)
    explicit = focannot(scores, 9, np.arange(90), np.random.default_rng(3), k=3, selection="top", beta=7.0)
    np.testing.assert_array_equal(default, explicit)
    # candidate_ratio = 1: Q_c = T_c, so sampling inside the refined set takes all of it.
    for mode in selection.STOCHASTIC_MODES:
        sampled = focannot(scores, 9, np.arange(90), np.random.default_rng(3), k=3, candidate_ratio=1.0, selection=mode)
        tops = focannot(scores, 9, np.arange(90), np.random.default_rng(3), k=3, candidate_ratio=1.0)
        assert set(sampled.tolist()) == set(tops.tolist())
    runs = {tuple(sorted(focannot(scores, 9, np.arange(90), np.random.default_rng(s), k=1, candidate_ratio=3.0,
                                  selection="power").tolist())) for s in range(5)}
    assert len(runs) > 1
    with pytest.raises(ValueError, match="'selection' parameter must be one of.*Got 'best'"):
        focannot(scores, 9, np.arange(90), np.random.default_rng(3), selection="best")
    with pytest.raises(ValueError, match="'temperature'"):
        focannot(scores, 9, np.arange(90), np.random.default_rng(3), selection="softmax", temperature=-1.0)


# ------------------------------------------------------------------------------------- core-set


def test_coreset_is_a_farthest_first_traversal():
    # Points on a line: 0, 1, 2, 11, 20. From 1: 20 is farthest, then 11 (9 from 20, 10 from 1).
    descriptors = np.array([[0.0], [1.0], [2.0], [11.0], [20.0]], dtype=np.float32)
    scores = make_scores(n=5, d=1, descriptors=descriptors)
    firsts = set()
    for seed in range(12):
        picked = get_strategy("coreset")(scores, 3, np.arange(5), np.random.default_rng(seed))
        firsts.add(int(picked[0]))
        expected = {0: [4, 3], 1: [4, 3], 2: [4, 3], 3: [0, 4], 4: [0, 3]}[int(picked[0])]
        assert picked[1:].tolist() == expected
    assert len(firsts) > 1  # the start is random


def test_coreset_matches_brute_force_k_center():
    rng = np.random.default_rng(1)
    scores = make_scores(n=80, d=5, descriptors=(100.0 + rng.normal(0, 1, (80, 5))).astype(np.float32))
    candidates = np.setdiff1d(np.arange(80), [2, 7])
    picked = get_strategy("coreset")(scores, 12, candidates, np.random.default_rng(4))
    x = scores.descriptors[candidates].astype(np.float64)
    pairwise = ((x[:, None] - x[None]) ** 2).sum(-1)
    order = [int(np.flatnonzero(candidates == picked[0])[0])]
    for _ in range(11):
        order.append(int(np.argmax(pairwise[:, order].min(axis=1))))
    np.testing.assert_array_equal(picked, candidates[order])


# ------------------------------------------------------------------------------------ TypiClust


def test_typiclust_picks_the_dense_core_of_each_cluster():
    rng = np.random.default_rng(0)
    # Three blobs; each has a dense core at its centre and a sparse halo.
    centres = np.array([[0.0, 0.0], [40.0, 0.0], [0.0, 40.0]])
    blobs = [np.concatenate([c + rng.normal(0, 0.1, (15, 2)), c + rng.normal(0, 5.0, (15, 2))]) for c in centres]
    scores = make_scores(n=90, d=2, descriptors=np.concatenate(blobs).astype(np.float32))
    picked = get_strategy("typiclust")(scores, 3, np.arange(90), np.random.default_rng(0))
    assert sorted((picked // 30).tolist()) == [0, 1, 2]
    assert np.all(picked % 30 < 15)
    # More picks than clusters: max_clusters=3 sends the picks round the clusters again.
    six = get_strategy("typiclust")(scores, 6, np.arange(90), np.random.default_rng(0), max_clusters=3)
    assert np.bincount(six // 30, minlength=3).tolist() == [2, 2, 2]


def test_typiclust_validates():
    scores = make_scores(n=10)
    for name in ("n_neighbors", "max_clusters"):
        with pytest.raises(ValueError, match=f"'{name}' parameter of typiclust must be an int >= 1. Got 0"):
            get_strategy("typiclust")(scores, 2, np.arange(10), np.random.default_rng(0), **{name: 0})


# ---------------------------------------------------------------------------- foreground random


def test_random_foreground_guarantees_the_share():
    fraction = np.where(np.arange(100) < 10, 0.4, 0.0)  # only patches 0..9 contain foreground
    scores = make_scores(n=100, extras={"foreground_fraction": fraction})
    select = get_strategy("random-foreground")
    for seed in range(10):
        picked = select(scores, 8, np.arange(100), np.random.default_rng(seed))
        assert len(set(picked.tolist())) == 8 and (picked < 10).sum() >= 4
        assert (select(scores, 8, np.arange(100), np.random.default_rng(seed), foreground_share=1.0) < 10).sum() == 8
    # Fewer foreground candidates than the share asks for: all of them, the rest random.
    picked = select(scores, 30, np.arange(5, 100), np.random.default_rng(0), foreground_share=0.5)
    assert set(range(5, 10)) <= set(picked.tolist()) and len(picked) == 30


def test_random_foreground_errors():
    select = get_strategy("random-foreground")
    with pytest.raises(KeyError, match="extras\\['foreground_fraction'\\].*extras \\[\\]"):
        select(make_scores(n=10), 2, np.arange(10), np.random.default_rng(0))
    scores = make_scores(n=10, extras={"foreground_fraction": np.full(10, 0.5)})
    with pytest.raises(ValueError, match="'foreground_share'.*\\[0, 1\\]. Got 1.5"):
        select(scores, 2, np.arange(10), np.random.default_rng(0), foreground_share=1.5)
    bad = make_scores(n=10, extras={"foreground_fraction": np.full(10, 2.0)})
    with pytest.raises(ValueError, match="values in \\[0, 1\\]"):
        select(bad, 2, np.arange(10), np.random.default_rng(0))
    assert "oracle-assisted" in strategy_info("random-foreground").summary
