import numpy as np
import pytest

from focal_al.estimator import SegmentationNet
from focal_al.training import learning_rate, steps_for


def test_steps_scale_with_the_labelled_set_between_floor_and_cap():
    assert steps_for(160, 16, epochs=2) == 20
    assert steps_for(8, 16, epochs=2, min_steps=50) == 50
    assert steps_for(10_000, 16, epochs=2, min_steps=50, max_steps=300) == 300
    for bad in (dict(epochs=0), dict(epochs=1, min_steps=0), dict(epochs=1, min_steps=5, max_steps=4)):
        with pytest.raises(ValueError, match="must be"):
            steps_for(10, 2, **bad)


def test_cosine_schedule_warms_up_and_ends_low():
    lrs = [learning_rate(i, 100, 1e-3, warmup=0.1, final=0.01) for i in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-5)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay after the warm-up
    assert learning_rate(5, 10, 1e-3, schedule="constant") == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate(0, 10, 1e-3, schedule="step")


class Recording(SegmentationNet):
    def train_step(self, batch, **fit_params):
        out = super().train_step(batch, **fit_params)
        self.seen_.append(self.optimizer_.param_groups[0]["lr"])
        return out


@pytest.mark.parametrize("fit", ["fit", "partial_fit"])
def test_every_fit_call_runs_the_whole_schedule(fit):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (24, 3, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 2, (24, 8, 8), dtype=np.uint8)
    net = Recording(module__width=2, module__depth=1, max_epochs=1, batch_size=4, passes_per_epoch=1,
                    min_steps_per_epoch=2, max_steps_per_epoch=5, lr_warmup=0.0, random_state=0)
    net.seen_ = []
    net.fit(X[:4], y[:4])
    assert len(net.seen_) == 2 and net.seen_[-1] == pytest.approx(1e-5)  # floor: 2 steps
    net.seen_ = []
    getattr(net, fit)(X, y)  # 24 samples / 4 = 6 steps, capped at 5
    assert len(net.seen_) == 5 and net.seen_[0] == pytest.approx(1e-3) and net.seen_[-1] == pytest.approx(1e-5)


def test_schedule_parameters_are_validated():
    X = np.zeros((2, 3, 8, 8), np.uint8)
    y = np.zeros((2, 8, 8), np.uint8)
    for params, words in [(dict(lr_schedule="linear"), "'lr_schedule'"), (dict(lr_warmup=1.5), "'lr_warmup'"),
                          (dict(passes_per_epoch=1, steps_per_epoch=3), "exclude each other"),
                          (dict(passes_per_epoch=-1), "'passes_per_epoch'")]:
        with pytest.raises(ValueError, match=words):
            SegmentationNet(module__width=2, module__depth=1, **params).fit(X, y)
