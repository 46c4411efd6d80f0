import subprocess
import sys
import types

import numpy as np
import pytest

from focal_al import registry
from focal_al.scores import PoolScores


def make_scores(n=12, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return PoolScores(
        entropy=rng.random(n), margin=rng.random(n), least_confidence=rng.random(n),
        descriptors=rng.standard_normal((n, d)).astype(np.float32),
    )


class FakeDist:
    def __init__(self, name, version):
        self.name, self.version, self.metadata = name, version, {"Name": name}


class FakeEntryPoint:
    def __init__(self, name, value, dist, load):
        self.name, self.value, self.dist, self._load = name, value, dist, load

    def load(self):
        return self._load()


@pytest.fixture
def fresh_registry(monkeypatch):
    """An empty registry for the test; the real one (and its modules) come back afterwards."""
    saved = (dict(registry._CRITERIA), dict(registry._STRATEGIES), list(registry._FAILED),
             set(registry._LOADED_EPS), set(registry._EP_MODULES), registry._loaded)
    modules = {m: sys.modules.get(m) for m in {*registry._BUILTIN_MODULES.values(), *registry._EP_MODULES}}
    registry._reset()
    yield registry
    registry._CRITERIA.clear(), registry._CRITERIA.update(saved[0])
    registry._STRATEGIES.clear(), registry._STRATEGIES.update(saved[1])
    registry._FAILED[:] = saved[2]
    registry._LOADED_EPS.clear(), registry._LOADED_EPS.update(saved[3])
    registry._EP_MODULES.clear(), registry._EP_MODULES.update(saved[4])
    registry._loaded = saved[5]
    for name, module in modules.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def with_fake_plugins(monkeypatch, fakes):
    real = registry._entry_points

    def entry_points(group):
        return real(group) + [ep for g, ep in fakes if g == group]

    monkeypatch.setattr(registry, "_entry_points", entry_points)


def test_builtins_are_registered_with_their_source():
    assert {"iu", "margin", "least-confidence", "random", "id", "id-rooted", "cu", "cd", "uniform"} <= set(
        registry.list_criteria()
    )
    assert {"random-patch", "iu", "iu-id", "cluster-equal", "focannot", "random-image", "image-iu", "sa"} <= set(
        registry.list_strategies()
    )
    info = registry.criterion_info("iu")
    assert (info.source, info.version, info.kind) == ("focal-al", "0.1.0", "instance")
    assert info.module == "focal_al_plugins.criteria"
    assert registry.strategy_info("sa").kind == "image"
    assert registry.strategy_info("focannot").summary.startswith("FocAnnot")


def test_list_patterns_and_filters():
    assert registry.list_criteria("id*") == ["id", "id-rooted", "id-w1"]
    assert registry.list_criteria(kind="cluster") == ["cd", "cu", "uniform"]
    assert set(registry.list_strategies(level="image")) >= {"random-image", "image-iu", "sa"}
    assert registry.list_strategies("no-such-*") == []


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="Did you mean 'focannot'"):
        registry.get_strategy("focanot")
    with pytest.raises(KeyError, match="Unknown criterion 'zzz'"):
        registry.get_criterion("zzz")


def test_decorator_returns_function_and_registers(fresh_registry):
    def crit(scores, candidates, rng):
        """My criterion."""
        return np.zeros(len(candidates))

    assert registry.register_criterion("my-crit")(crit) is crit
    assert registry.get_criterion("my-crit") is crit
    info = registry.criterion_info("my-crit")
    assert info.module == __name__ and info.summary == "My criterion."


def test_duplicate_name_raises_naming_both_sources(fresh_registry):
    with pytest.raises(ValueError) as err:
        registry.register_criterion("iu")(lambda scores, candidates, rng: candidates * 0.0)
    message = str(err.value)
    assert "focal-al 0.1.0 (focal_al_plugins.criteria)" in message and __name__ in message


def test_bad_kind_or_level():
    with pytest.raises(ValueError, match="'kind'.*Got 'pixel'"):
        registry.register_criterion("x", kind="pixel")
    with pytest.raises(ValueError, match="'level'"):
        registry.register_strategy("x", level="volume")


def test_failing_plugin_is_reported_not_raised(fresh_registry, monkeypatch):
    def broken():
        registry.register_criterion("half-loaded")(lambda s, c, r: c * 0.0)
        raise ImportError("No module named 'missing_dependency'")

    with_fake_plugins(monkeypatch, [("focal_al.criteria", FakeEntryPoint("bad", "bad_plugin", FakeDist("bad-plugin", "9.9"), broken))])
    with pytest.warns(RuntimeWarning, match="bad-plugin 9.9.*missing_dependency"):
        names = registry.list_criteria()
    assert "iu" in names and "half-loaded" not in names
    [failure] = registry.failed_plugins()
    assert (failure.source, failure.version, failure.entry_point) == ("bad-plugin", "9.9", "bad")


def test_plugin_records_its_distribution(fresh_registry, monkeypatch):
    module = types.ModuleType("fake_plugin_module")

    def load():
        def crit(scores, candidates, rng):
            """Fake plugin criterion."""
            return np.ones(len(candidates))

        crit.__module__ = module.__name__
        registry.register_criterion("fake-plugin")(crit)
        return module

    with_fake_plugins(monkeypatch, [("focal_al.criteria", FakeEntryPoint("fake", "fake_plugin_module", FakeDist("fake-dist", "1.2.3"), load))])
    info = registry.criterion_info("fake-plugin")
    assert (info.source, info.version, info.module) == ("fake-dist", "1.2.3", "fake_plugin_module")


def test_plugin_clashing_with_builtin_is_reported(fresh_registry, monkeypatch):
    def load():
        registry.register_criterion("iu")(lambda s, c, r: c * 0.0)

    with_fake_plugins(monkeypatch, [("focal_al.criteria", FakeEntryPoint("dup", "dup_mod", FakeDist("dup-dist", "0.1"), load))])
    with pytest.warns(RuntimeWarning, match="already registered by focal-al"):
        registry.list_criteria()
    assert registry.criterion_info("iu").source == "focal-al"


def test_no_autoload_env_keeps_builtins_only(fresh_registry, monkeypatch):
    loaded = []
    with_fake_plugins(monkeypatch, [("focal_al.criteria", FakeEntryPoint("p", "p_mod", FakeDist("p-dist", "1"), lambda: loaded.append(1)))])
    monkeypatch.setenv("FOCAL_AL_NO_PLUGIN_AUTOLOAD", "1")
    assert "iu" in registry.list_criteria() and "focannot" in registry.list_strategies()
    assert loaded == []


def test_import_does_not_load_torch_or_plugins():
    code = (
        "import sys, focal_al, focal_al.registry as r\n"
        "assert 'torch' not in sys.modules\n"
        "assert not r._loaded\n"
        "r.list_criteria()\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class FakeLearner:
    def __init__(self, scores, labelled=None):
        self.scores, self.calls = scores, 0
        if labelled is not None:
            self.labelled_ = np.asarray(labelled)

    def pool_scores(self, X_pool):
        self.calls += 1
        return self.scores


def test_query_strategy_skips_labelled_and_is_seeded():
    scores = make_scores(n=12)
    pool = np.zeros((12, 1))
    learner = FakeLearner(scores, labelled=np.argsort(-scores.entropy)[:3])
    picked = registry.query_strategy("iu")(learner, pool, n_instances=2)
    np.testing.assert_array_equal(picked, np.argsort(-scores.entropy)[3:5])
    assert learner.calls == 1
    a = registry.query_strategy("random-patch", random_state=5)(learner, pool, n_instances=4)
    b = registry.query_strategy("random-patch", random_state=5)(learner, pool, n_instances=4)
    np.testing.assert_array_equal(a, b)
    assert not np.isin(a, learner.labelled_).any()


def test_query_strategy_falls_back_to_estimator_score_pool():
    scores = make_scores(n=8)
    learner = types.SimpleNamespace(estimator=types.SimpleNamespace(score_pool=lambda X: scores))
    picked = registry.query_strategy("iu")(learner, np.zeros((8, 1)), n_instances=3)
    np.testing.assert_array_equal(picked, np.argsort(-scores.entropy)[:3])


def test_query_strategy_errors():
    with pytest.raises(ValueError, match="pool is empty"):
        registry.query_strategy("iu")(FakeLearner(make_scores(n=0)), np.zeros((0, 1)), n_instances=1)
    with pytest.raises(TypeError, match="score_pool"):
        registry.query_strategy("iu")(types.SimpleNamespace(estimator=object()), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="4 rows but X_pool has 3"):
        registry.query_strategy("iu")(FakeLearner(make_scores(n=4)), np.zeros((3, 1)))
    with pytest.raises(KeyError, match="Did you mean"):
        registry.query_strategy("focanot")
