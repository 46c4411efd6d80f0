import numpy as np
import pytest

from focal_al.registry import criterion_info, get_strategy, list_criteria, query_strategy
from focal_al.scores import PoolScores

pytestmark = pytest.mark.skipif(
    "entropy-times-margin" not in list_criteria(),
    reason="the example plugin is not installed: pip install ./examples/focal-al-plugin-example",
)


def make_scores(n=30, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return PoolScores(entropy=rng.random(n), margin=rng.random(n), least_confidence=rng.random(n),
                      descriptors=rng.standard_normal((n, d)).astype(np.float32))


def test_example_plugin_is_registered_from_its_distribution():
    info = criterion_info("entropy-times-margin")
    assert (info.source, info.version, info.kind) == ("focal-al-example-plugin", "0.1.0", "instance")
    assert info.module == "focal_al_example_plugin"


def test_example_criterion_values():
    scores = make_scores()
    candidates = np.array([4, 0, 9])
    values = criterion_info("entropy-times-margin").func(scores, candidates, np.random.default_rng(0))
    np.testing.assert_allclose(values, scores.entropy[candidates] * (1 - scores.margin[candidates]))


def test_example_criterion_drives_strategies():
    scores = make_scores()
    expected = np.argsort(-(scores.entropy * (1 - scores.margin)), kind="stable")[:4]
    picked = get_strategy("iu")(scores, 4, np.arange(30), None, uncertainty="entropy-times-margin")
    np.testing.assert_array_equal(picked, expected)
    learner = type("L", (), {"pool_scores": lambda self, X: scores})()
    strategy = query_strategy("focannot", k=2, uncertainty="entropy-times-margin", random_state=0)
    idx = strategy(learner, np.zeros((30, 1)), n_instances=5)
    assert len(set(idx.tolist())) == 5
