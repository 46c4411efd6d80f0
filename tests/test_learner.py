import types

import numpy as np
import pytest
from modAL.models import ActiveLearner

from focal_al.learner import PatchActiveLearner
from focal_al.registry import query_strategy
from focal_al.scores import PoolScores


class FakeNet:
    """Scores a pool from its pixels (no network); counts fits and passes over the pool."""

    def __init__(self):
        self.n_score_pool = 0
        self.fits = []

    def score_pool(self, X):
        self.n_score_pool += 1
        x = np.asarray(X, dtype=np.float64).reshape(len(X), -1) / 255.0
        entropy = x.mean(axis=1)
        return PoolScores(entropy=entropy, margin=1 - entropy, least_confidence=entropy / 2,
                          descriptors=x[:, :8].astype(np.float32))

    def fit(self, X, y):
        self.fits.append(("fit", len(X), np.asarray(y).shape))
        return self

    def partial_fit(self, X, y):
        self.fits.append(("partial_fit", len(X), np.asarray(y).shape))
        return self


def make_pool(n=24, patch=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, 1, patch, patch), dtype=np.uint8)
    labels = rng.integers(0, 2, (n, patch, patch), dtype=np.uint8)
    # Patches of side 4 with stride 2 on three 6 x 10 images: 2 rows x 4 columns each, 8 per image.
    coords = np.array([(y, x) for y in (0, 2) for x in (0, 2, 4, 6)] * 3)
    image_index = np.repeat(np.arange(3), 8)
    return X, labels, coords, image_index, [(6, 10)] * 3


def make_learner(strategy="focannot", **params):
    X, labels, coords, image_index, shapes = make_pool()
    net = FakeNet()
    learner = PatchActiveLearner(
        net, query_strategy(strategy, **params), labels=labels, coords=coords, image_index=image_index,
        image_shapes=shapes, patch_size=4, random_state=0,
    )
    return learner, net, X, labels


def test_query_teach_round():
    learner, net, X, labels = make_learner("focannot", k=2)
    idx, rows = learner.query(X, n_instances=3)
    assert idx.shape == (3,) and len(set(idx.tolist())) == 3
    np.testing.assert_array_equal(rows, X[idx])
    assert net.n_score_pool == 1
    learner.teach(idx)
    np.testing.assert_array_equal(learner.labelled_, np.sort(idx))
    np.testing.assert_array_equal(learner.y_labelled_, labels[np.sort(idx)])
    assert net.fits == [("partial_fit", 3, (3, 4, 4))]
    assert 0 < learner.cost_ <= 3 * 16 / 180
    idx2, _ = learner.query(X, n_instances=4)
    assert net.n_score_pool == 2
    assert not np.isin(idx2, idx).any()
    learner.teach(idx2)
    assert len(learner.labelled_) == 7 and net.fits[-1][1] == 7


def test_pool_scores_cached_until_teach():
    learner, net, X, _ = make_learner("iu")
    learner.pool_scores(X)
    learner.pool_scores(X)
    assert net.n_score_pool == 1
    idx, _ = learner.query(X, n_instances=2)
    assert net.n_score_pool == 1
    learner.teach(idx)
    learner.pool_scores(X)
    assert net.n_score_pool == 2
    learner.pool_scores(X.copy())
    assert net.n_score_pool == 3


def test_strategy_called_once_per_query():
    calls = []
    inner = query_strategy("iu")

    def counting(learner, X_pool, n_instances=1, **kw):
        calls.append(n_instances)
        return inner(learner, X_pool, n_instances=n_instances, **kw)

    X, labels, *_ = make_pool()
    learner = PatchActiveLearner(FakeNet(), counting, labels=labels)
    learner.query(X, n_instances=2)
    assert calls == [2]


def test_cost_counts_overlap_once():
    learner, _, X, labels = make_learner("iu")
    # Patches 0 and 1 of image 0 (x = 0 and x = 2, side 4) share a 4 x 2 strip: 16 + 16 - 8.
    learner.teach([0, 1], X_pool=X)
    assert learner.revealed_.n_revealed == 24
    assert learner.cost_ == pytest.approx(24 / 180)


def test_teach_with_explicit_y_and_whole_images():
    X = np.random.default_rng(0).integers(0, 256, (5, 1, 4, 4), dtype=np.uint8)
    net = FakeNet()
    learner = PatchActiveLearner(net, "image-iu", image_shapes=[(4, 4)] * 5, warm_start=False)
    y = np.ones((2, 4, 4), dtype=np.uint8)
    learner.teach([4, 1], y, X_pool=X)
    assert learner.revealed_.n_revealed == 32 and learner.cost_ == pytest.approx(0.4)
    assert net.fits == [("fit", 2, (2, 4, 4))]
    with pytest.raises(ValueError, match="y has 1 rows for 2 indices"):
        learner.teach([0, 2], y[:1])


def test_teach_and_query_errors():
    learner, _, X, _ = make_learner("iu")
    learner.teach([2, 5], X_pool=X)
    with pytest.raises(ValueError, match="\\[5\\] are already labelled"):
        learner.teach([5, 6])
    with pytest.raises(ValueError, match="duplicates: \\[7\\]"):
        learner.teach([7, 7])
    with pytest.raises(IndexError, match="\\[0, 24\\)"):
        learner.teach([24])
    with pytest.raises(ValueError, match="empty"):
        learner.teach([])
    with pytest.raises(ValueError, match="'n_instances'.*\\[1, 22\\].*Got 23"):
        learner.query(X, n_instances=23)
    with pytest.raises(ValueError, match="'n_instances'.*Got 0"):
        learner.query(X, n_instances=0)
    with pytest.raises(ValueError, match="X_pool is empty"):
        learner.query(X[:0], n_instances=1)
    with pytest.raises(ValueError, match="same pool"):
        learner.query(X[:10], n_instances=1)


def test_construction_errors():
    X, labels, coords, image_index, shapes = make_pool()
    with pytest.raises(ValueError, match="one row per pool row"):
        PatchActiveLearner(FakeNet(), "iu", labels=labels, coords=coords[:5], patch_size=4)
    with pytest.raises(ValueError, match="patch_size"):
        PatchActiveLearner(FakeNet(), "iu", coords=coords)
    with pytest.raises(KeyError, match="Unknown strategy"):
        PatchActiveLearner(FakeNet(), "no-such-strategy")
    learner = PatchActiveLearner(FakeNet(), "iu")
    with pytest.raises(ValueError, match="teach needs the pool"):
        learner.teach([0])
    with pytest.raises(ValueError, match="teach needs labels"):
        learner.teach([0], X_pool=X)
    with pytest.raises(TypeError, match="score_pool"):
        PatchActiveLearner(object(), "iu").query(X, n_instances=1)


def test_store_supplies_pool_labels_and_geometry():
    X, labels, coords, image_index, shapes = make_pool()
    store = types.SimpleNamespace(patches=X, labels=labels, coords=coords, image_index=image_index,
                                  image_shapes=np.array(shapes), patch_size=4)
    learner = PatchActiveLearner(FakeNet(), query_strategy("cluster-equal", k=2, random_state=1), store=store)
    idx, _ = learner.query(store.patches, n_instances=4)
    learner.teach(idx)
    np.testing.assert_array_equal(learner.y_labelled_, labels[np.sort(idx)])
    assert learner.revealed_.n_total == 180 and learner.cost_ > 0


def test_fit_skips_modal_check_and_drops_cache():
    learner, net, X, labels = make_learner("iu")
    learner.pool_scores(X)
    learner.fit(X[:3], labels[:3])
    assert net.fits == [("fit", 3, (3, 4, 4))]
    learner.pool_scores(X)
    assert net.n_score_pool == 2
    with pytest.raises(ValueError, match="one label per row"):
        learner.fit(X[:3], labels[:2])


def test_same_seed_same_selection():
    picks = []
    for _ in range(2):
        learner, _, X, _ = make_learner("focannot", k=2, random_state=3)
        idx, _ = learner.query(X, n_instances=3)
        learner.teach(idx)
        picks.append(np.concatenate([idx, learner.query(X, n_instances=3)[0]]))
    np.testing.assert_array_equal(*picks)


@pytest.mark.parametrize("n_instances", [1, 2, 3])
def test_stock_modal_active_learner(n_instances):
    X, *_ = make_pool()
    learner = ActiveLearner(estimator=FakeNet(), query_strategy=query_strategy("focannot", k=2, random_state=0))
    idx, rows = learner.query(X, n_instances=n_instances)
    assert np.asarray(idx).shape == (n_instances,) and len(set(np.asarray(idx).tolist())) == n_instances
    np.testing.assert_array_equal(rows, X[idx])


def test_with_real_segmentation_net():
    estimator = pytest.importorskip("focal_al.estimator", reason="focal_al.estimator is not there yet")
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8)
    labels = (X[:, 0] > 127).astype(np.uint8)
    net = estimator.SegmentationNet(module__width=2, module__depth=2, max_epochs=1, batch_size=4,
                                    random_state=0, device="cpu")
    net.fit(X[:4], labels[:4])
    coords = np.array([(y, x) for y in (0, 16) for x in (0, 16, 32)] * 2)
    learner = PatchActiveLearner(net, query_strategy("focannot", k=2, random_state=0), labels=labels,
                                 coords=coords, image_index=np.repeat([0, 1], 6), image_shapes=[(32, 48)] * 2,
                                 patch_size=16)
    idx, _ = learner.query(X, n_instances=3)
    learner.teach(idx)
    assert len(learner.labelled_) == 3 and learner.cost_ == pytest.approx(3 * 256 / (2 * 32 * 48))
    stock = ActiveLearner(estimator=net, query_strategy=query_strategy("focannot", k=2, random_state=0))
    assert len(stock.query(X, n_instances=2)[0]) == 2


# ----------------------------------------------------------------------------------- levels, resume


def make_store():
    X, labels, coords, image_index, shapes = make_pool()
    return types.SimpleNamespace(patches=X, labels=labels, coords=coords, image_index=image_index,
                                 image_shapes=np.array(shapes), patch_size=4)


class ImageNet(FakeNet):
    """Scores whole images from their pixels."""

    def score_images(self, images):
        self.n_score_pool += 1
        return self.score_pool(np.stack([np.asarray(im, dtype=np.uint8)[None, :4, :4] for im in images]))


def test_query_scores_only_the_unlabelled_rows():
    store = make_store()
    seen = []

    def scorer(learner, X_pool, rows):
        seen.append(rows.copy())
        return learner.estimator.score_pool(X_pool[rows])

    learner = PatchActiveLearner(FakeNet(), query_strategy("iu"), store=store, scorer=scorer, random_state=0)
    learner.teach([0, 1, 2])
    idx, _ = learner.query(store.patches, n_instances=2)
    np.testing.assert_array_equal(seen[-1], np.arange(3, 24))
    assert not np.isin(idx, [0, 1, 2]).any()
    # The same pass ranks what every criterion reads: a second look at the candidates reuses it.
    learner.candidate_scores(store.patches)
    assert len(seen) == 1


def test_image_level_learner_teaches_every_patch_of_its_images():
    store = make_store()
    images = [np.full((6, 10, 1), 40 * i, dtype=np.uint8) for i in range(3)]
    net = ImageNet()
    learner = PatchActiveLearner(net, query_strategy("image-iu"), store=store, level="image", random_state=0)
    idx, rows = learner.query(images, n_instances=1)
    assert idx.tolist() == [2] and rows[0] is images[2]  # brightest image: highest "entropy"
    learner.teach(idx)
    assert learner.labelled_.tolist() == [2]
    np.testing.assert_array_equal(learner.train_rows_, np.arange(16, 24))
    assert learner.cost_ == pytest.approx(1 / 3) and net.fits[-1][1] == 8
    idx2, _ = learner.query(images, n_instances=2)
    assert sorted(idx2.tolist()) == [0, 1]
    with pytest.raises(ValueError, match="already labelled"):
        learner.teach([2])
    with pytest.raises(ValueError, match="y is not accepted"):
        learner.teach([0], y=store.labels[:8])


def test_teach_images_reveals_whole_images_and_restore_resumes():
    store = make_store()
    learner = PatchActiveLearner(FakeNet(), query_strategy("random-patch"), store=store, random_state=0)
    learner.teach_images([1])
    np.testing.assert_array_equal(learner.labelled_, np.arange(8, 16))
    assert learner.revealed_.n_revealed == 60  # the whole 6 x 10 image, also pixels no patch covers
    learner.teach([0])
    resumed = PatchActiveLearner(FakeNet(), query_strategy("random-patch"), store=store, random_state=0)
    resumed.restore(learner.labelled_, revealed=learner.revealed_)
    np.testing.assert_array_equal(resumed.labelled_, learner.labelled_)
    np.testing.assert_array_equal(resumed.y_labelled_, learner.y_labelled_)
    assert resumed.cost_ == learner.cost_ and resumed.estimator.fits == []
    a = learner.query(store.patches, n_instances=3, random_state=5)[0]
    b = resumed.query(store.patches, n_instances=3, random_state=5)[0]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="new learner"):
        resumed.restore([3])


def test_warm_start_false_refits_from_scratch():
    store = make_store()
    net = FakeNet()
    learner = PatchActiveLearner(net, query_strategy("random-patch"), store=store, warm_start=False)
    learner.teach([0, 1])
    learner.teach([2])
    assert net.fits == [("fit", 2, (2, 4, 4)), ("fit", 3, (3, 4, 4))]


def test_save_and_load_the_whole_learner_state(tmp_path):
    import torch

    from focal_al.estimator import SegmentationNet

    X, labels, coords, image_index, shapes = make_pool(n=24, patch=4)
    X = np.repeat(X, 3, axis=1)

    def build():
        net = SegmentationNet(module__width=2, module__depth=1, max_epochs=1, steps_per_epoch=3, batch_size=4,
                              random_state=0)
        return PatchActiveLearner(net, query_strategy("iu"), labels=labels, coords=coords, image_index=image_index,
                                  image_shapes=shapes, patch_size=4, X_pool=X, random_state=0)

    learner = build()
    mine = labels[[2, 5, 9]].copy()
    mine[:, 0] = 255  # the user's own partial answers, not the pool's labels
    learner.teach(np.array([2, 5, 9]), y=mine)
    learner.save(tmp_path / "learner.safetensors")
    other = build().load(tmp_path / "learner.safetensors")
    np.testing.assert_array_equal(other.labelled_, learner.labelled_)
    np.testing.assert_array_equal(other.y_labelled_, mine)
    assert other.cost_ == learner.cost_
    for a, b in zip(other.estimator.module_.state_dict().values(), learner.estimator.module_.state_dict().values()):
        assert torch.equal(a, b)
    # Both continue identically once their round is seeded alike (as the bench seeds every round): the
    # optimiser's state came along.
    for each in (learner, other):
        each.estimator.set_params(random_state=5)
        each.teach(np.array([11]))
    for a, b in zip(other.estimator.module_.state_dict().values(), learner.estimator.module_.state_dict().values()):
        assert torch.equal(a, b)
    learner.estimator.save_weights(tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match="no learner state"):
        build().load(tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match="already has labelled rows"):
        other.load(tmp_path / "learner.safetensors")


def test_teach_without_fit_records_and_train_fits_the_same():
    X, labels, coords, image_index, shapes = make_pool()
    learner, net, X, labels = make_learner("iu")
    learner.teach(np.array([1, 4]), X_pool=X, fit=False)
    assert net.fits == [] and learner.labelled_.tolist() == [1, 4] and learner.cost_ > 0
    learner.train()
    assert net.fits == [("partial_fit", 2, (2, 4, 4))]
    with pytest.raises(ValueError, match="Nothing is labelled"):
        make_learner("iu")[0].train()
