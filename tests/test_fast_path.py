"""The fast path (channels_last, BatchNorm folding), the thread rule and the GPU path."""
import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from focal_al.cli import main
from focal_al.estimator import SegmentationNet
from focal_al.learner import PatchActiveLearner
from focal_al.nets import EDConvNet, fold_batchnorm
from focal_al.registry import query_strategy
from focal_al.threads import check_threads, default_threads, set_process_threads, using_threads


def pool(n=24, side=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8)
    y = (X[:, 0] > 127).astype(np.uint8)
    return X, y


def twins(**params):
    """A fast-path net trained a little, and a plain-path net holding the same weights."""
    X, y = pool()
    fast = SegmentationNet(module__width=4, module__depth=2, max_epochs=1, steps_per_epoch=8, batch_size=4,
                           random_state=0, **params).fit(X, y)
    eager = SegmentationNet(module__width=4, module__depth=2, max_epochs=1, batch_size=4, random_state=0,
                            fast_path=False, **params).initialize()
    eager.module_.load_state_dict(fast.module_.state_dict())
    return fast, eager, X, y


def test_fold_batchnorm_gives_the_same_outputs_and_leaves_the_module_alone():
    torch.manual_seed(0)
    net = EDConvNet(width=4, depth=2)
    net.train()
    for _ in range(3):  # running statistics away from their initial (0, 1)
        net(torch.rand(4, 3, 16, 16))
    net.eval()
    before = copy.deepcopy(net.state_dict())
    folded = fold_batchnorm(net)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        (a, da), (b, db) = net(x), folded(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(db, da, rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 10  # 3 encoder + 2 decoder blocks
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("extras", [{}, {"score_tta": True}, {"score_gradients": True},
                                    {"mc_samples": 3, "module__dropout": 0.3}])
def test_fast_path_scores_equal_the_plain_path_to_float32_rounding(extras):
    fast, eager, X, _ = twins(**extras)
    assert fast.module_.encoder.blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    a, b = fast.score_pool(X), eager.score_pool(X)
    for name in ("entropy", "margin", "least_confidence", "descriptors"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-5, err_msg=name)
    assert set(a.extras) == set(b.extras)
    for name in a.extras:
        np.testing.assert_allclose(a.extras[name], b.extras[name], rtol=1e-3, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(fast.predict_proba(X), eager.predict_proba(X), rtol=1e-4, atol=1e-5)
    images = [np.moveaxis(X[0], 0, -1), np.moveaxis(X[1, :, :12], 0, -1)]
    for p, q in zip(fast.predict_images(images), eager.predict_images(images)):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("strategy, params", [("focannot", {"k": 2}), ("iu", {})])
def test_fast_path_selects_what_the_plain_path_selects(strategy, params):
    fast, eager, X, y = twins()
    chosen = []
    for net in (fast, eager):
        learner = PatchActiveLearner(net, query_strategy(strategy, **params), labels=y, random_state=0)
        chosen.append(learner.query(X, n_instances=5, random_state=3)[0])
    np.testing.assert_array_equal(chosen[0], chosen[1])


def test_fast_path_training_is_deterministic_and_leaves_module_weights_loadable(tmp_path):
    X, y = pool()
    nets = [SegmentationNet(module__width=4, module__depth=2, max_epochs=2, steps_per_epoch=5, batch_size=4,
                            random_state=7).fit(X, y) for _ in range(2)]
    for (k, a), b in zip(nets[0].module_.state_dict().items(), nets[1].module_.state_dict().values()):
        assert torch.equal(a, b), k
    nets[0].save_weights(tmp_path / "w.pt")
    plain = SegmentationNet(module__width=4, module__depth=2, fast_path=False).load_weights(tmp_path / "w.pt")
    np.testing.assert_allclose(plain.predict_proba(X), nets[0].predict_proba(X), rtol=1e-4, atol=1e-5)


def test_fast_path_is_a_checked_parameter():
    X, y = pool()
    with pytest.raises(ValueError, match="'fast_path' must be True or False. Got 'yes'"):
        SegmentationNet(module__width=2, module__depth=1, fast_path="yes").fit(X, y)


def test_thread_rule_follows_omp_num_threads_else_half_the_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    assert default_threads() == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_threads() == 1
    assert check_threads("auto") == 1 and check_threads(None) is None and check_threads(2) == 2
    for bad in (0, -1, True, 1.5, "many"):
        with pytest.raises(ValueError, match="'threads' parameter must be an int >= 1, 'auto' or None"):
            check_threads(bad)


def test_a_net_trains_and_scores_on_its_threads_and_restores_the_process_setting():
    X, y = pool()
    before = torch.get_num_threads()
    seen = []

    class Spy(SegmentationNet):
        def train_step(self, batch, **fit_params):
            seen.append(torch.get_num_threads())
            return super().train_step(batch, **fit_params)

        def _score_batches(self, *args):
            seen.append(torch.get_num_threads())
            return super()._score_batches(*args)

    other = 2 if before == 1 else 1
    net = Spy(module__width=2, module__depth=1, max_epochs=1, steps_per_epoch=2, batch_size=4, threads=other).fit(X, y)
    net.score_pool(X)
    assert seen == [other] * 3 and torch.get_num_threads() == before
    with using_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="'threads' must be an int >= 1"):
        SegmentationNet(module__width=2, module__depth=1, threads=0).fit(X, y)


def test_set_process_threads_sets_torch_and_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        assert set_process_threads(2) == 2 and torch.get_num_threads() == 2
        import os

        assert os.environ["OMP_NUM_THREADS"] == "2" and default_threads() == 2
        with pytest.raises(ValueError, match="'--threads' parameter must be an int >= 1"):
            set_process_threads(0)
    finally:
        torch.set_num_threads(before)


TINY_BENCH = ["--n-images", "11", "--image-size", "48", "--patch-size", "16", "--width", "2", "--train-steps", "2",
              "--initial-train-steps", "2", "--batch-size", "4", "--step", "0.1", "--budget", "0.2", "--clusters", "2",
              "--max-train-steps", "4", "--quiet", "--no-full-supervision", "--seeds", "0", "--threads", "1"]


def test_a_folder_of_plain_path_runs_is_never_extended_or_resumed_with_the_fast_path(tmp_path):
    out = tmp_path / "old"
    made = CliRunner().invoke(main, ["bench", *TINY_BENCH, "--eager-path", "--strategies", "random-patch",
                                     "--out-dir", str(out)])
    assert made.exit_code == 0, made.output
    # A folder made before the fast path existed records no fast_path: it reads as the plain path.
    for path in [out / "config.json", *out.glob("runs/*/config.json"), *out.glob("runs/*/state.json")]:
        data = json.loads(path.read_text())
        data.pop("fast_path", None)
        data.get("protocol", {}).pop("fast_path", None)
        path.write_text(json.dumps(data))
    added = CliRunner().invoke(main, ["bench", *TINY_BENCH, "--strategies", "4", "--out-dir", str(out)])
    assert added.exit_code != 0 and "fast_path=False" in added.output and "--eager-path" in added.output
    assert not (out / "runs" / "4-iu-seed0").exists()
    resumed = CliRunner().invoke(main, ["bench", *TINY_BENCH, "--budget", "0.3", "--strategies", "random-patch",
                                        "--resume", "--out-dir", str(out)])
    assert resumed.exit_code != 0 and "--eager-path" in resumed.output
    extended = CliRunner().invoke(main, ["bench", *TINY_BENCH, "--eager-path", "--strategies", "4",
                                         "--out-dir", str(out)])
    assert extended.exit_code == 0, extended.output
    assert json.loads((out / "runs" / "4-iu-seed0" / "config.json").read_text())["fast_path"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_mixed_precision_channels_last_and_pinned_batches_score_like_the_cpu():
    X, y = pool(n=64, side=32)
    gpu = SegmentationNet(module__width=4, module__depth=2, max_epochs=1, steps_per_epoch=4, batch_size=8,
                          device="cuda", random_state=0).fit(X, y)
    cpu = SegmentationNet(module__width=4, module__depth=2, device="cpu", fast_path=False).initialize()
    cpu.module_.load_state_dict({k: v.cpu() for k, v in gpu.module_.state_dict().items()})
    assert gpu._inference_batch_size(None, X.shape) >= 512
    assert next(gpu.module_.parameters()).is_contiguous(memory_format=torch.channels_last)
    a, b = gpu.score_pool(X), cpu.score_pool(X)
    # bfloat16 autocast keeps about 3 significant digits.
    np.testing.assert_allclose(a.entropy, b.entropy, atol=0.05)
    assert np.corrcoef(a.entropy, b.entropy)[0, 1] > 0.95
