"""Semi-supervised training: the unlabelled loss is used; unrevealed pixels never enter the supervised loss."""
import numpy as np
import pytest
import torch

from focal_al import semi_supervised as semi
from focal_al.estimator import SegmentationNet
from focal_al.learner import PatchActiveLearner
from focal_al.registry import query_strategy


def data(n=12, side=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8)
    y = (X[:, 0] > 127).astype(np.uint8)
    partial = y.copy()
    partial[:, :, side // 2:] = 255  # the right half of every patch unrevealed
    return X, y, partial


def net(**params):
    return SegmentationNet(module__width=4, module__depth=2, max_epochs=1, steps_per_epoch=6, batch_size=4,
                           random_state=0, **params)


class Spy(SegmentationNet):
    """Records the targets of every supervised loss call."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        self.targets_seen_.append(torch.as_tensor(y_true).clone())
        return super().get_loss(y_pred, y_true, X=X, training=training)


@pytest.mark.parametrize("method", ["fixmatch", "self-training"])
def test_the_unlabelled_loss_is_used_and_the_supervised_loss_sees_only_revealed_pixels(method):
    X, y, partial = data()
    pool = data(n=40, seed=1)[0]
    spy = Spy(module__width=4, module__depth=2, max_epochs=1, steps_per_epoch=6, batch_size=4, random_state=0,
              semi_supervised=method, confidence=0.0)
    spy.targets_seen_ = []
    spy.fit(X, partial, X_unlabelled=pool)
    spy.partial_fit(X, partial, X_unlabelled=pool)  # self-training: the first fit's weights teach
    losses = [b["unlabelled_loss"] for epoch in spy.history for b in epoch["batches"] if "unlabelled_loss" in b]
    assert len(losses) == (12 if method == "fixmatch" else 6) and all(np.isfinite(losses)) and max(losses) > 0
    # Every supervised target is a batch of the given labels, flipped or rotated: exactly its unrevealed
    # half is 255 (no pseudo-label leaks into the supervised loss).
    assert spy.targets_seen_ and all(bool(((t == 255).sum(dim=(1, 2)) == 16 * 8).all()) for t in spy.targets_seen_)
    supervised = net().fit(X, partial)
    supervised.partial_fit(X, partial)
    changed = [not torch.equal(a, b) for a, b in zip(spy.module_.state_dict().values(),
                                                      supervised.module_.state_dict().values())]
    assert any(changed)


def test_semi_supervised_fits_are_reproducible_and_default_to_the_training_patches():
    X, _, partial = data()
    a = net(semi_supervised="fixmatch", confidence=0.5).fit(X, partial)
    b = net(semi_supervised="fixmatch", confidence=0.5).fit(X, partial)
    for (k, v), w in zip(a.module_.state_dict().items(), b.module_.state_dict().values()):
        assert torch.equal(v, w), k


def test_the_learner_passes_its_pool_as_the_unlabelled_source(monkeypatch):
    X, y, _ = data(n=20)
    seen = []
    model = net(semi_supervised="fixmatch")
    fit_loop = SegmentationNet.fit_loop
    monkeypatch.setattr(SegmentationNet, "fit_loop",
                        lambda self, X, y=None, epochs=None, **kw: seen.append(kw.get("X_unlabelled")) or fit_loop(self, X, y, epochs, **kw))
    learner = PatchActiveLearner(model, query_strategy("random-patch"), labels=y, X_pool=X, random_state=0)
    learner.teach(np.array([0, 3, 5]))
    assert seen and seen[-1] is X


def test_semi_supervised_parameters_are_checked():
    X, _, partial = data()
    for params, message in [({"semi_supervised": "mixmatch"}, "'semi_supervised' must be None or one of"),
                            ({"semi_supervised": "fixmatch", "unlabelled_ratio": 0}, "'unlabelled_ratio' must be"),
                            ({"semi_supervised": "fixmatch", "confidence": 1.5}, "'confidence' must be"),
                            ({"semi_supervised": "fixmatch", "unlabelled_weight": float("nan")}, "'unlabelled_weight'")]:
        with pytest.raises(ValueError, match=message):
            net(**params).fit(X, partial)
    with pytest.raises(ValueError, match="X_unlabelled"):
        net(semi_supervised="fixmatch").fit(X, partial, X_unlabelled=np.zeros((4, 1, 16, 16), np.uint8))


def test_strong_view_keeps_geometry_range_and_marks_the_cutout():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    view, cut = semi.strong_view(x, g)
    assert view.shape == x.shape and cut.shape == (16, 32, 32) and cut.dtype == torch.bool
    assert float(view.min()) >= 0 and float(view.max()) <= 1
    assert 0 < int(cut.any(dim=(1, 2)).sum()) < 16  # about half the samples have a cutout
    assert torch.all(view.permute(0, 2, 3, 1)[cut] == 0.5)
    # Outside the cutout the view stays correlated with the input pixel by pixel (no geometric change).
    keep = ~cut[:, None].expand_as(x)
    assert np.corrcoef(view[keep].numpy(), x[keep].numpy())[0, 1] > 0.5
    labels = semi.pseudo_labels(torch.tensor([[[[2.0]], [[0.0]]], [[[0.1]], [[0.0]]]]), 0.8, 255)
    assert labels.flatten().tolist() == [0, 255]


def test_bench_runs_semi_supervised_and_refuses_to_resume_it_otherwise(tmp_path):
    import json

    from click.testing import CliRunner

    from focal_al.cli import main

    tiny = ["bench", "--n-images", "11", "--image-size", "48", "--patch-size", "16", "--width", "2", "--train-steps", "2",
            "--initial-train-steps", "2", "--batch-size", "4", "--step", "0.1", "--budget", "0.2", "--clusters", "2",
            "--max-train-steps", "4", "--quiet", "--seeds", "0", "--threads", "1", "--strategies", "random-patch",
            "--full-supervision-epochs", "1", "--out-dir", str(tmp_path)]
    done = CliRunner().invoke(main, [*tiny, "--semi-supervised", "fixmatch"])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "config.json").read_text())["semi_supervised"] == "fixmatch"
    assert len(json.loads((tmp_path / "runs" / "random-patch-seed0" / "rounds.json").read_text())) >= 2
    refused = CliRunner().invoke(main, [*tiny, "--budget", "0.3", "--resume"])
    assert refused.exit_code != 0 and "semi_supervised" in refused.output
