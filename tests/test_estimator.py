"""Tests of focal_al.estimator.SegmentationNet on tiny inputs and tiny networks."""
import copy
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from focal_al.estimator import SegmentationNet
from focal_al.nets import FCN
from focal_al.scores import PoolScores


TINY = dict(module__width=2, module__depth=2, batch_size=4, max_epochs=1)


def data(n=8, side=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8)
    y = (X[:, 0] > 127).astype(np.uint8)
    return X, y


def tiny(**kw):
    return SegmentationNet(**{**TINY, "random_state": 0, **kw})


@pytest.fixture(scope="module")
def fitted():
    X, y = data()
    return tiny().fit(X, y), X, y


def weights(net):
    return {k: v.detach().clone() for k, v in net.module_.state_dict().items()}


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_defaults():
    net = SegmentationNet()
    assert net.batch_size == 16 and net.lr == 1e-3 and net.train_split is None
    assert net.optimizer is torch.optim.Adam and net.criterion is torch.nn.CrossEntropyLoss
    assert net.ignore_index == 255 and net.augment is True and net.device == "auto"
    assert net.iterator_train__shuffle is True


def test_fit_predict_shapes(fitted):
    net, X, _ = fitted
    proba = net.predict_proba(X)
    assert proba.shape == (8, 2, 16, 16) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    pred = net.predict(X)
    assert pred.shape == (8, 16, 16) and np.issubdtype(pred.dtype, np.integer)
    np.testing.assert_array_equal(pred, proba.argmax(axis=1))


def test_float_input_is_used_as_is(fitted):
    net, X, _ = fitted
    np.testing.assert_allclose(net.predict_proba(X.astype(np.float32) / 255), net.predict_proba(X), atol=1e-6)


def test_clone_and_params():
    net = tiny(augment=False, steps_per_epoch=3, color_jitter=0.1)
    params = net.get_params()
    for key in ("augment", "steps_per_epoch", "random_state", "ignore_index", "device", "module__width"):
        assert key in params
    twin = clone(net)
    assert twin.get_params()["steps_per_epoch"] == 3 and twin.module__width == 2
    twin.set_params(lr=0.01, module__width=4)
    assert twin.lr == 0.01 and twin.module__width == 4 and net.lr == 1e-3


def test_device_param_survives_fit_and_clone():
    X, y = data(4)
    net = tiny().fit(X, y)
    assert net.device == "auto" and net.device_ == torch.device("cpu")
    assert clone(net).device == "auto"



def test_adam_is_fused_on_cuda_only():
    net = tiny().initialize()
    params = list(net.module_.named_parameters())
    assert "fused" not in net.get_params_for_optimizer("optimizer", params)[1]
    net.device_ = torch.device("cuda")  # the choice only: no CUDA is touched
    assert net.get_params_for_optimizer("optimizer", params)[1]["fused"] is True
    for other in (tiny(optimizer__fused=False), tiny(optimizer=torch.optim.SGD)):
        other.initialize().device_ = torch.device("cuda")
        assert other.get_params_for_optimizer("optimizer", params)[1].get("fused") in (None, False)

def test_ignore_index_really_ignored(fitted):
    net, X, y = fitted
    logits = torch.randn(8, 2, 16, 16)
    target = torch.as_tensor(y, dtype=torch.long).clone()
    target[:, :8] = 255
    loss = net.get_loss(logits, target)
    changed = logits.clone()
    changed[:, :, :8] = torch.randn(8, 2, 8, 16) * 10  # logits at ignored pixels change
    assert torch.allclose(net.get_loss(changed, target), loss)
    manual = torch.nn.functional.cross_entropy(logits[:, :, 8:], target[:, 8:])
    assert torch.allclose(loss, manual)


def test_all_ignored_batch_gives_zero_loss_not_nan():
    X, y = data(4)
    y[:] = 255
    net = tiny().fit(X, y)
    assert net.history[-1, "train_loss"] == 0.0
    assert all(torch.isfinite(v).all() for v in net.module_.state_dict().values())


def test_reproducible_with_random_state():
    X, y = data()
    a = tiny(max_epochs=2, random_state=3).fit(X, y)
    b = tiny(max_epochs=2, random_state=3).fit(X, y)
    c = tiny(max_epochs=2, random_state=4).fit(X, y)
    assert same_weights(weights(a), weights(b))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not same_weights(weights(a), weights(c))


def test_random_state_leaves_global_rng_alone():
    X, y = data(4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny().fit(X, y)
    assert torch.equal(torch.rand(3), expected)


def test_warm_start_keeps_weights():
    X, y = data()
    net = tiny(warm_start=True, lr=0.0).fit(X, y)
    before = weights(net)
    net.fit(X, y)  # lr 0: weights move only if re-initialised (BN running stats aside)
    after = weights(net)
    assert same_weights({k: v for k, v in before.items() if "running" not in k and "num_batches" not in k},
                        {k: v for k, v in after.items() if "running" not in k and "num_batches" not in k})
    cold = tiny(lr=0.0).fit(X, y)
    first = weights(cold)
    cold.set_params(random_state=9)
    cold.fit(X, y)
    assert not same_weights(first, weights(cold))


def test_set_params_random_state_reseeds_streams_not_weights():
    X, y = data()
    a = tiny(warm_start=True).fit(X, y)
    b = tiny(warm_start=True, random_state=5).fit(X, y)
    b.module_.load_state_dict(a.module_.state_dict())
    # deepcopy: Adam's load_state_dict may keep the very tensors of a's state, shared in place.
    b.optimizer_.load_state_dict(copy.deepcopy(a.optimizer_.state_dict()))
    before = weights(b)
    a.set_params(random_state=11)
    b.set_params(random_state=11)
    assert same_weights(before, weights(b))
    a.fit(X, y)
    b.fit(X, y)
    assert same_weights(weights(a), weights(b))


def test_last_batch_of_one_is_dropped_for_batchnorm():
    X, y = data(5)
    net = SegmentationNet(module__width=2, module__depth=4, batch_size=4, max_epochs=1, random_state=0)
    net.fit(X, y)  # 16x16 at depth 4 has a 1x1 bottleneck: a batch of one would fail
    assert [b["train_batch_size"] for b in net.history[-1]["batches"]] == [4]


def test_partial_fit_continues():
    X, y = data()
    net = tiny().fit(X, y)
    net.partial_fit(X, y)
    assert len(net.history) == 2


def test_steps_per_epoch_draws_exact_batches():
    X, y = data(5)
    net = tiny(steps_per_epoch=7, max_epochs=2).fit(X, y)
    assert [len(epoch["batches"]) for epoch in net.history] == [7, 7]
    assert all(b["train_batch_size"] == 4 for b in net.history[-1]["batches"])


def test_augment_transforms_images_and_labels_alike():
    net = tiny().initialize()
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4).repeat(1, 3, 1, 1)
    y = x[:, 0].long()
    for _ in range(5):
        ax, ay = net._augment(x, y)
        assert torch.equal(ax[:, 0].long(), ay)
        assert torch.equal(ax.sort(dim=-1).values.sum(), x.sort(dim=-1).values.sum())


def test_memmap_input(tmp_path):
    X, y = data(12)
    mm = np.memmap(tmp_path / "patches.u8", dtype=np.uint8, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.memmap(tmp_path / "patches.u8", dtype=np.uint8, mode="r", shape=X.shape)
    a = tiny().fit(ro, y)
    b = tiny().fit(X, y)
    assert same_weights(weights(a), weights(b))
    np.testing.assert_array_equal(a.predict_proba(ro), b.predict_proba(X))
    scores = a.score_pool(ro)
    np.testing.assert_allclose(scores.entropy, b.score_pool(X).entropy)


def test_score_pool_matches_predict_proba(fitted):
    net, X, _ = fitted
    scores = net.score_pool(X, batch_size=3)
    assert isinstance(scores, PoolScores) and len(scores) == len(X)
    p = net.predict_proba(X).astype(np.float64)
    entropy = -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=1).mean(axis=(1, 2))
    top = np.sort(p, axis=1)[:, ::-1]
    np.testing.assert_allclose(scores.entropy, entropy, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores.margin, (top[:, 0] - top[:, 1]).mean(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(scores.least_confidence, (1 - top[:, 0]).mean(axis=(1, 2)), atol=1e-5)
    assert scores.descriptors.shape == (8, net.module_.descriptor_dim)
    assert scores.descriptors.dtype == np.float32
    with torch.no_grad():
        net.module_.eval()
        _, desc = net.module_(torch.as_tensor(X[:2]).float() / 255)
    np.testing.assert_allclose(scores.descriptors[:2], desc.numpy(), rtol=1e-4, atol=1e-6)


def test_whole_images_of_odd_sizes(fitted):
    net, _, _ = fitted
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(17, 23, 3), (3, 5, 3), (17, 23, 3), (16, 16, 3)]]
    probas = net.predict_images(images, batch_size=2)
    assert [p.shape for p in probas] == [(2, 17, 23), (2, 3, 5), (2, 17, 23), (2, 16, 16)]
    assert all(p.dtype == np.float32 for p in probas)
    # An image already at the network's multiple gives the same as patch prediction.
    np.testing.assert_allclose(probas[3], net.predict_proba(images[3].transpose(2, 0, 1)[None])[0], atol=1e-6)
    # Batching equal-size images changes nothing (eval-mode BatchNorm).
    np.testing.assert_allclose(probas[0], net.predict_images(images[:1])[0], atol=1e-6)
    scores = net.score_images(images, batch_size=2)
    assert len(scores) == 4 and scores.descriptors.shape == (4, net.module_.descriptor_dim)
    p = probas[1].astype(np.float64)
    np.testing.assert_allclose(scores.entropy[1], -(p * np.log(p)).sum(axis=0).mean(), rtol=1e-4)
    # One pass can return both: the same probabilities and the descriptors score_images gives.
    both, descriptors = net.predict_images(images, batch_size=2, return_descriptors=True)
    for a, b in zip(both, probas):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(descriptors, scores.descriptors, atol=1e-5)


def test_score_pool_from_images_windows(fitted):
    net, _, _ = fitted
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (24, 20, 3), dtype=np.uint8), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)]
    image_index = np.array([0, 1, 0, 0])
    coords = np.array([[0, 0], [0, 0], [8, 4], [12, 10]])  # the last reaches into the mirror padding
    scores = net.score_pool_from_images(images, image_index, coords, 12)
    assert len(scores) == 4 and scores.descriptors.shape == (4, net.module_.descriptor_dim)
    # A window's entropy is the mean of the whole-image entropy map over it.
    padded = np.pad(images[0], ((0, 0), (0, 4), (0, 0)), mode="reflect")  # 10 + 12 = 22 -> 24 (multiple of 4)
    p = net.predict_images([padded])[0].astype(np.float64)
    ent = -(p * np.log(p)).sum(axis=0)
    np.testing.assert_allclose(scores.entropy[2], ent[8:20, 4:16].mean(), rtol=1e-4)
    np.testing.assert_allclose(scores.entropy[3], ent[12:24, 10:22].mean(), rtol=1e-4)
    with torch.no_grad():
        _, cells = net.module_.forward_maps(torch.as_tensor(padded.transpose(2, 0, 1)[None]).float() / 255)
    # Window [8, 20) x [4, 16) covers bottleneck cells [2, 5) x [1, 4) (cells of 4 px).
    np.testing.assert_allclose(scores.descriptors[2], cells[0, :, 2:5, 1:4].mean(dim=(1, 2)).numpy(), rtol=1e-4, atol=1e-6)
    # A patch that is its whole (aligned) image scores exactly as score_pool.
    exact = net.score_pool(images[1].transpose(2, 0, 1)[None])
    one = net.score_pool_from_images(images[1:], [0], [[0, 0]], 16)
    np.testing.assert_allclose(one.entropy, exact.entropy, rtol=1e-5)
    np.testing.assert_allclose(one.descriptors, exact.descriptors, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="'image_index' must lie in"):
        net.score_pool_from_images(images, [0, 2], [[0, 0], [0, 0]], 12)


def test_save_load_round_trip(fitted, tmp_path):
    net, X, _ = fitted
    path = tmp_path / "weights.pt"
    net.save_weights(path)
    other = tiny(random_state=7).load_weights(path)
    np.testing.assert_array_equal(other.predict_proba(X), net.predict_proba(X))


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['EVIL_MARK']).touch()",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARK", str(mark))
    path = tmp_path / "evil.pt"
    torch.save({"w": _Evil()}, path)
    with pytest.raises(ValueError, match="not a plain weights file"):
        tiny().load_weights(path)
    assert not mark.exists()


def test_fcn_module_works():
    X, y = data(4)
    net = tiny(module=FCN).fit(X, y)
    assert net.predict_proba(X).shape == (4, 2, 16, 16)
    assert net.score_pool(X).descriptors.shape == (4, 8)


# ---------------------------------------------------------------- errors


def test_predict_before_fit():
    X, _ = data(2)
    net = tiny()
    for call in (net.predict, net.predict_proba, net.score_pool):
        with pytest.raises(NotFittedError, match="not fitted yet.*'fit'"):
            call(X)
    with pytest.raises(NotFittedError, match="before 'predict_images'"):
        net.predict_images([np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(NotFittedError):
        net.save_weights("unused.pt")


def test_wrong_channel_count():
    X, y = data(2)
    with pytest.raises(ValueError, match=r"'X' has 1 channels .* expects in_channels=3"):
        tiny().fit(X[:, :1], y)


def test_channels_last_images_hint(fitted):
    net, X, _ = fitted
    with pytest.raises(ValueError, match=r"image 0 has shape \(3, 16, 16\); expected \(H, W, 3\)"):
        net.predict_images([X[0]])


def test_labels_out_of_range():
    X, y = data(2)
    y[0, 0, :3] = [2, 7, 255]
    with pytest.raises(ValueError, match=r"labels \[2, 7\] outside 0..1 .*ignore value 255"):
        tiny().fit(X, y)


def test_empty_input():
    X, y = data(2)
    with pytest.raises(ValueError, match="'X' is empty"):
        tiny().fit(X[:0], y[:0])


def test_length_mismatch():
    X, y = data(3)
    with pytest.raises(ValueError, match="'X' has 3 samples but 'y' has 2"):
        tiny().fit(X, y[:2])


def test_spatial_size_not_multiple():
    X, y = data(2, side=18)
    with pytest.raises(ValueError, match=r"spatial size 18x18, which is not a multiple of 2\*\*depth = 4"):
        tiny().fit(X, y)


def test_problems_are_collected():
    X, y = data(3, side=18)
    with pytest.raises(ValueError) as info:
        tiny().fit(X[:, :2], y[:2])
    message = str(info.value)
    assert "2 channels" in message and "18x18" in message and "3 samples but 'y' has 2" in message


def test_invalid_params():
    X, y = data(2)
    with pytest.raises(ValueError, match="'steps_per_epoch' must be None or an int >= 1. Got 0"):
        tiny(steps_per_epoch=0).fit(X, y)
    with pytest.raises(ValueError, match="'color_jitter' must be a float in"):
        tiny(color_jitter=2.0).fit(X, y)


def test_missing_y_and_bad_label_dtype():
    X, y = data(2)
    with pytest.raises(ValueError, match="'y' is required"):
        tiny().fit(X)
    with pytest.raises(ValueError, match="integer class labels; got dtype float32"):
        tiny().fit(X, y.astype(np.float32))


def test_pickle_round_trip_keeps_auto_device(fitted):
    net, X, _ = fitted
    twin = pickle.loads(pickle.dumps(net))
    assert twin.device == "auto" and twin.device_ == net.device_
    np.testing.assert_array_equal(twin.predict_proba(X), net.predict_proba(X))


def test_tta_disagreement_scores_view_dependence():
    from focal_al.pool_scoring import dihedral as _dihedral, dihedral_inverse as _dihedral_inverse

    t = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    for k in range(8):
        assert torch.equal(_dihedral_inverse(_dihedral(t, k), k), t)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 2, (6, 8, 8), dtype=np.uint8)
    net = SegmentationNet(module__width=2, module__depth=1, max_epochs=1, batch_size=3, score_tta=True,
                          random_state=0).fit(X, y)
    scores = net.score_pool(X)
    tta = scores.extras["tta_disagreement"]
    assert tta.shape == (6,) and np.all(tta >= 0) and np.all(np.isfinite(tta)) and tta.max() > 0
    # A patch invariant under every view gets (almost) no disagreement.
    flat = np.full((1, 3, 8, 8), 128, dtype=np.uint8)
    assert net.score_pool(flat).extras["tta_disagreement"][0] < 1e-6
    plain = SegmentationNet(module__width=2, module__depth=1, max_epochs=1, batch_size=3, random_state=0).fit(X, y)
    np.testing.assert_allclose(plain.score_pool(X).entropy, scores.entropy, rtol=1e-6)
    assert "tta_disagreement" not in plain.score_pool(X).extras


def test_mc_dropout_bald_is_reproducible_and_needs_dropout():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 2, (6, 8, 8), dtype=np.uint8)
    net = SegmentationNet(module__width=2, module__depth=1, module__dropout=0.5, max_epochs=1, batch_size=3,
                          mc_samples=4, random_state=0).fit(X, y)
    state = torch.random.get_rng_state()
    first = net.score_pool(X).extras["bald"]
    assert torch.equal(state, torch.random.get_rng_state())  # the global stream is untouched
    np.testing.assert_array_equal(first, net.score_pool(X).extras["bald"])
    assert first.shape == (6,) and np.all(first >= 0) and first.max() > 0
    assert not net.module_.training  # dropout is switched off again after sampling
    with pytest.raises(ValueError, match="module__dropout"):
        SegmentationNet(module__width=2, module__depth=1, max_epochs=1, mc_samples=4).fit(X, y).score_pool(X)
    # Dropout 0 (the default) leaves the network as it was: same weights, same scores.
    a = SegmentationNet(module__width=2, module__depth=1, max_epochs=1, random_state=0).fit(X, y)
    b = SegmentationNet(module__width=2, module__depth=1, module__dropout=0.0, max_epochs=1, random_state=0).fit(X, y)
    np.testing.assert_array_equal(a.score_pool(X).entropy, b.score_pool(X).entropy)


def test_mc_dropout_passes_reuse_the_plain_pass_encoder_and_give_the_full_passes_numbers():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, (5, 3, 16, 16), dtype=np.uint8)
    y = rng.integers(0, 2, (5, 16, 16), dtype=np.uint8)
    # The plain path runs module_ itself, whose encode/decode can be counted (the fast path runs a folded copy).
    net = SegmentationNet(module__width=2, module__depth=2, module__dropout=0.5, max_epochs=1, batch_size=2,
                          mc_samples=3, random_state=0, fast_path=False).fit(X, y)
    module = net.module_
    encoded, decoded = [], []
    encode, decode = module.encode, module.decode
    module.encode = lambda x: encoded.append(len(x)) or encode(x)
    module.decode = lambda features: decoded.append(len(features[0])) or decode(features)
    shared = net.score_pool(X).extras["bald"]
    # Per batch (2, 2, 1 patches): the plain pass, whose encoder output the 3 MC-dropout decoder passes reuse.
    assert encoded == [2, 2, 1] and decoded == [2] * 8 + [1] * 4
    net.score_tta = True  # the TTA views run the encoder too, after the plain pass: BALD is unchanged
    np.testing.assert_array_equal(net.score_pool(X).extras["bald"], shared)
    net.score_tta = False

    class WholePasses(torch.nn.Module):  # no encode/decode: every MC pass runs the whole network
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    del module.encode, module.decode
    net.module_ = WholePasses(module)
    np.testing.assert_array_equal(net.score_pool(X).extras["bald"], shared)


def test_gradient_embedding_is_the_head_gradient_under_predicted_labels():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 2, (4, 8, 8), dtype=np.uint8)
    net = SegmentationNet(module__width=2, module__depth=1, max_epochs=1, batch_size=4, score_gradients=True,
                          random_state=0).fit(X, y)
    emb = net.score_pool(X).extras["gradient_embedding"]
    assert emb.shape == (4, 2 * 2)  # C = 2 classes x F = 2 features read by the head
    # Autograd reference for patch 0: d mean-CE(logits, argmax) / d head.weight.
    x = torch.as_tensor(X[:1]).float() / 255
    net.module_.eval()
    logits, _ = net.module_(x)
    target = logits.argmax(dim=1)
    net.module_.zero_grad()
    torch.nn.functional.cross_entropy(logits, target).backward()
    np.testing.assert_allclose(emb[0], net.module_.head.weight.grad.reshape(-1).numpy(), rtol=1e-4, atol=1e-6)
    net.module_.head = torch.nn.Conv2d(2, 2, 3, padding=1)  # not a 1x1 head: no closed-form embedding
    with pytest.raises(ValueError, match="1x1 Conv2d"):
        net.score_pool(X)
