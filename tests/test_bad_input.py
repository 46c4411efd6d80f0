"""Bad input through the API and the CLI: a clear error (type and words), no trace left behind.

The parametrised battery at the top lists each refused input with the exception it must raise and
the words its message must contain; the tests below it check what a refusal must *not* do (change
the learner, loop, write half a run).
"""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from focal_al import registry
from focal_al.bench.config import preset_config
from focal_al.bench.runner import prepare_data, run_bench
from focal_al.cli import main
from focal_al.datasets import load_folder, make_synthetic
from focal_al.estimator import SegmentationNet
from focal_al.learner import PatchActiveLearner
from focal_al.scores import PoolScores
from focal_al.selection import evaluate_criterion, kmeans
from focal_al.store import PatchStore

TINY_BENCH = dict(
    n_images=8, image_size=48, patch_size=16, overlap=0.5, depth=2, width=2, train_steps=1,
    initial_train_steps=1, batch_size=4, step=0.1, budget=0.3, clusters=2, sa_ensemble=2, seeds=(0,),
    max_train_steps=2, full_supervision_epochs=1.0,
)


def tiny_net(**kw):
    return SegmentationNet(module__width=2, module__depth=1, max_epochs=1, steps_per_epoch=1, batch_size=4,
                           random_state=0, **kw)


def pool(n=8, l=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, 3, l, l), dtype=np.uint8)
    y = rng.integers(0, 2, (n, l, l), dtype=np.uint8)
    coords = np.array([(0, 8 * i) for i in range(n)])
    return X, y, coords


def patch_learner(**kw):
    X, y, coords = pool()
    learner = PatchActiveLearner(tiny_net(), "random-patch", labels=y, coords=coords,
                                 image_index=np.zeros(len(X), dtype=int), image_shapes=[(8, 8 * len(X))],
                                 patch_size=8, X_pool=X, random_state=0, **kw)
    return learner, X, y


def scores(n=6):
    rng = np.random.default_rng(0)
    return PoolScores(entropy=rng.random(n), margin=rng.random(n), least_confidence=rng.random(n),
                      descriptors=rng.random((n, 4)).astype(np.float32))


def _bad_fit_nan():
    X, y, _ = pool()
    X = X.astype(np.float32)
    X[3, 0, 2, 2] = np.nan
    tiny_net().fit(X, y)


def _teach_unlabelled_rows():
    learner, X, y = patch_learner()
    learner.labels[2:4] = 255
    learner.teach([2, 3])


def _teach_label_7():
    learner, X, y = patch_learner()
    learner.teach([2, 3], y=np.full((2, 8, 8), 7, dtype=np.uint8))


def _load_weights(content: bytes, tmp_path: Path):
    path = tmp_path / "w.pt"
    path.write_bytes(content)
    tiny_net().load_weights(path)


def _truncated_weights(tmp_path):
    net = tiny_net()
    X, y, _ = pool()
    net.fit(X, y)
    net.save_weights(tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    _load_weights(data[: len(data) // 2], tmp_path)


def _criterion_of_strings():
    evaluate_criterion(lambda s, c, rng: np.array(["high"] * len(c)), scores(), np.arange(6), None)


def _criterion_writes_in_place():
    def sneaky(s, c, rng):
        s.entropy[:] = 0.0
        return s.entropy[c]

    evaluate_criterion(sneaky, scores(), np.arange(6), None)


def _store_from_jpeg_masks(tmp_path):
    (tmp_path / "im").mkdir()
    (tmp_path / "ma").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "im" / "a.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "ma" / "a.jpg")
    load_folder(tmp_path / "im", tmp_path / "ma")


BATTERY = [
    # (case, callable(tmp_path), exception type, words the message must contain)
    ("fit on NaN input", lambda t: _bad_fit_nan(), ValueError, ["NaN", "sample 3"]),
    ("teach rows whose labels are all unlabelled", lambda t: _teach_unlabelled_rows(), ValueError, ["255", "y="]),
    ("teach label value 7", lambda t: _teach_label_7(), ValueError, ["[7]", "outside 0..1"]),
    ("load_weights of an empty file", lambda t: _load_weights(b"", t), ValueError, ["w.pt", "empty, truncated"]),
    ("load_weights of a truncated file", _truncated_weights, ValueError, ["w.pt", "truncated"]),
    ("criterion returning strings", lambda t: _criterion_of_strings(), ValueError, ["must return numbers", "<lambda>"]),
    ("criterion writing the cached scores", lambda t: _criterion_writes_in_place(), ValueError, ["read-only"]),
    ("misspelt strategy parameter", lambda t: registry.query_strategy("focannot", uncertanity="iu"), TypeError,
     ["uncertanity", "did you mean 'uncertainty'"]),
    ("unknown criterion name", lambda t: registry.query_strategy("focannot", uncertainty="entropyy"), KeyError,
     ["Unknown criterion 'entropyy'"]),
    ("criterion parameter of the wrong type", lambda t: registry.query_strategy("iu", uncertainty=3), TypeError,
     ["'uncertainty'", "names a criterion"]),
    ("JPEG masks", _store_from_jpeg_masks, ValueError, ["lossless", "a.jpg"]),
    ("budget below the initial set", lambda t: run_bench(preset_config("quick", **{
        **TINY_BENCH, "out_dir": str(t / "b"), "step": 0.1, "budget": 0.15}), quiet=True, with_full_supervision=False),
     ValueError, ["initial labelled set", "--budget"]),
    ("more clusters than the pool", lambda t: run_bench(preset_config("quick", **{
        **TINY_BENCH, "out_dir": str(t / "b"), "clusters": 10_000, "strategies": ("7",)}), quiet=True,
        with_full_supervision=False), ValueError, ["--clusters 10000", "unlabelled patches"]),
]


@pytest.mark.parametrize("case, call, error, words", BATTERY, ids=[case for case, *_ in BATTERY])
def test_bad_input_battery(tmp_path, case, call, error, words):
    with pytest.raises(error) as info:
        call(tmp_path)
    message = str(info.value)
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    assert not (tmp_path / "b" / "runs").exists()


# ----------------------------------------------------------------------------------- learner


def test_refused_teach_leaves_the_learner_unchanged():
    learner, X, y = patch_learner()
    learner.teach([0, 1])
    before = (learner.labelled_.copy(), learner.y_labelled_.copy(), learner.cost_)
    with pytest.raises(ValueError, match="outside 0..1"):
        learner.teach([2, 3], y=np.full((2, 8, 8), 7, dtype=np.uint8))
    np.testing.assert_array_equal(learner.labelled_, before[0])
    np.testing.assert_array_equal(learner.y_labelled_, before[1])
    assert learner.cost_ == before[2]
    learner.teach([2, 3])  # the same rows with good labels are accepted afterwards
    assert learner.labelled_.tolist() == [0, 1, 2, 3] and learner.cost_ == pytest.approx(0.5)


def test_teach_with_partial_labels_is_accepted():
    learner, X, y = patch_learner()
    partial = np.full((1, 8, 8), 255, dtype=np.uint8)
    partial[0, :4] = 1
    learner.teach([5], y=partial)
    assert learner.labelled_.tolist() == [5]


# ----------------------------------------------------------------------------------- labels and scores


def test_zero_255_labels_warn_loudly(tmp_path):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    with pytest.warns(UserWarning, match=r"only the values 0 and 255.*\(mask > 0\)"):
        PatchStore.build(tmp_path / "s.h5", [np.zeros((16, 16, 3), np.uint8)], [mask], ["a"], patch_size=8, overlap=0)
    X, _, _ = pool(n=4)
    with pytest.warns(UserWarning, match=r"only the values 0 and 255.*\(mask > 0\)"):
        tiny_net().fit(X, np.where(np.arange(64).reshape(1, 8, 8) % 2, 255, 0).repeat(4, 0).astype(np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_net().fit(X, np.ones((4, 8, 8), np.uint8))


def test_pool_scores_are_read_only_and_leave_the_inputs_writable():
    entropy = np.ones(3)
    s = PoolScores(entropy=entropy, margin=np.ones(3), least_confidence=np.ones(3),
                   descriptors=np.ones((3, 2)), extras={"d": np.ones(3)})
    for array in (s.entropy, s.margin, s.least_confidence, s.descriptors, s.extras["d"], s.take([0, 1]).entropy):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 5.0
    entropy[0] = 2.0  # the caller's own array is untouched


def test_kmeans_centroids_are_the_member_means():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5)).astype(np.float32)  # one blob: poorly separated clusters
    labels, centroids = kmeans(x, 4, rng=np.random.default_rng(0))
    for c in range(4):
        np.testing.assert_allclose(centroids[c], x[labels == c].mean(axis=0), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------- bench


@pytest.fixture
def bad_strategy():
    """A strategy whose output is set by its ``mode`` parameter."""
    outputs = {
        "empty": lambda n, c: np.array([], dtype=int),
        "duplicates": lambda n, c: np.repeat(c[:1], n),
        "negative": lambda n, c: np.array([-1] * n),
        "out-of-range": lambda n, c: np.array([10**6] * n),
        "floats": lambda n, c: c[:n].astype(float),
    }

    @registry.register_strategy("test-bad-output")
    def select(scores, n_instances, candidates, rng, *, mode="empty"):
        return outputs[mode](n_instances, np.asarray(candidates))

    yield
    registry._STRATEGIES.pop("test-bad-output")


@pytest.mark.parametrize("mode, error, words", [
    ("empty", ValueError, "is empty"),
    ("duplicates", ValueError, "duplicates"),
    ("negative", IndexError, "must lie in [0,"),
    ("out-of-range", IndexError, "must lie in [0,"),
    ("floats", TypeError, "integer pool indices"),
])
def test_bench_checks_what_a_strategy_returns(tmp_path, bad_strategy, mode, error, words):
    from focal_al.bench.config import BenchStrategy
    from focal_al.bench.runner import run_strategy

    config = preset_config("quick", **{**TINY_BENCH, "out_dir": str(tmp_path)})
    data = prepare_data(config, tmp_path)
    spec = BenchStrategy("bad", "bad", "test-bad-output", params={"mode": mode})
    with pytest.raises(error, match="test-bad-output") as info:
        run_strategy(config, spec, 0, data, tmp_path)
    assert words in str(info.value)
    state = json.loads((tmp_path / "runs" / "bad-seed0" / "state.json").read_text())
    assert state["round"] == 0  # the refused round left nothing behind


@pytest.mark.parametrize("strategy", ["7", "6"])
def test_clustered_strategies_run_to_the_end_of_the_pool(tmp_path, strategy):
    # The reproduction: 4 images of 72 px, patches of 32 without overlap, budget 100 %.
    args = ["bench", "--n-images", "4", "--image-size", "72", "--patch-size", "32", "--overlap", "0", "--width", "4",
            "--depth", "2", "--train-steps", "1", "--initial-train-steps", "1", "--max-train-steps", "2", "--budget", "1.0", "--strategies",
            strategy, "--seeds", "0", "--threads", "1", "--no-full-supervision", "--quiet", "--out-dir",
            str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = next((tmp_path / "out" / "runs").iterdir())
    state = json.loads((run / "state.json").read_text())
    assert state["exhausted"] and state["complete"] and (tmp_path / "out" / "report.md").is_file()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["threads"] == 1 and all(r["threads"] == 1 for r in state["records"])


def _finished_run(tmp_path):
    config = preset_config("quick", **{**TINY_BENCH, "out_dir": str(tmp_path), "strategies": ("random-patch",),
                                       "budget": 0.2})
    run_bench(config, quiet=True, with_full_supervision=False)
    return config, tmp_path / "runs" / "random-patch-seed0" / "state.json"


@pytest.mark.parametrize("damage, words", [
    (lambda s: s.pop("revealed") and None, "missing keys ['revealed']"),
    (lambda s: [s], "expected a JSON object, found a JSON list"),
    (lambda s: s.update(labelled_patches=[10**7]), "does not fit this pool"),
    (lambda s: s.update(round="3"), "wrong types: round"),
])
def test_damaged_run_state_names_the_file_to_delete(tmp_path, damage, words):
    config, path = _finished_run(tmp_path)
    state = json.loads(path.read_text())
    state["records"] = state["records"][:1]
    state["complete"] = False
    damaged = damage(state)
    path.write_text(json.dumps(state if damaged is None else damaged))
    args = ["bench", "--out-dir", str(tmp_path), "--resume", "--quiet", "--no-full-supervision",
            "--strategies", "random-patch", "--seeds", "0", "--budget", "0.3"]
    args += [a for k, v in TINY_BENCH.items() if k not in ("seeds", "budget", "depth", "sa_ensemble")
             for a in (f"--{k.replace('_', '-')}", str(v))]
    args += ["--depth", "2", "--sa-ensemble", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert words in result.output and "Delete the folder" in result.output and str(path) in result.output


def test_truncated_store_cache_is_rebuilt(tmp_path):
    config = preset_config("quick", **{**TINY_BENCH, "out_dir": str(tmp_path)})
    store = prepare_data(config, tmp_path).store
    path, n = Path(store.path), len(store)
    store.close()
    path.write_bytes(path.read_bytes()[:4096])
    with pytest.warns(UserWarning, match="Rebuilding the damaged patch cache"):
        assert len(prepare_data(config, tmp_path).store) == n


def test_cli_reads_folders_with_a_mask_suffix_and_says_what_it_read(tmp_path):
    data = make_synthetic(6, size=(48, 48), seed=0)
    folder = tmp_path / "data"
    folder.mkdir()
    for name, image, mask in zip(data.names, data.images, data.masks):
        Image.fromarray(image).save(folder / f"{name}.jpg", quality=95)
        Image.fromarray(((mask > 0) * 255).astype(np.uint8)).save(folder / f"{name}_label.png")
    args = ["bench", "--dataset", "folder", "--images-dir", str(folder), "--masks-dir", str(folder),
            "--mask-suffix", "_label", "--test-fraction", "0.34", "--patch-size", "16", "--width", "2",
            "--train-steps", "1", "--initial-train-steps", "1", "--max-train-steps", "2", "--step", "0.1", "--budget", "0.4",
            "--strategies", "random-patch", "--seeds", "0", "--no-full-supervision", "--out-dir", str(tmp_path / "o")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "Read 4 training images (48x48 px" in result.output and "objects per mask" in result.output
    assert "2 test images" in result.output
    # --masks-dir defaults to --images-dir with a suffix; the quick preset's tiny network is flagged.
    args = ["bench", "--dataset", "folder", "--images-dir", str(folder), "--mask-suffix", "_label",
            "--test-fraction", "0.34", "--patch-size", "16", "--train-steps", "1", "--initial-train-steps", "1",
            "--max-train-steps", "2", "--step", "0.1", "--budget", "0.4", "--strategies", "random-patch", "--seeds",
            "0", "--no-full-supervision", "--out-dir", str(tmp_path / "o2")]
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "Warning: --preset quick trains a tiny network" in again.stderr and "Traceback" not in again.stderr


def test_a_one_image_test_set_is_flagged(tmp_path):
    config = preset_config("quick", **{**TINY_BENCH, "out_dir": str(tmp_path), "test_fraction": 0.05,
                                       "strategies": ("random-patch",), "budget": 0.2})
    with pytest.warns(UserWarning, match="test set has 1 image"):
        run_bench(config, quiet=True, with_full_supervision=False)
