"""Progress bars of the command line: tqdm bars drawn on a terminal only, and a skorch callback.

The library is silent by default; the commands where a person waits (``focal-al bench``,
``focal-al project query / train / predict``) turn these on. Where the output is not a terminal
(a log, ``nohup``, CI) a bar is not drawn unless asked for, so no carriage returns reach the file.
"""
from __future__ import annotations

import math
import sys
from typing import IO

import numpy as np

from skorch.callbacks import Callback
from tqdm import tqdm

__all__ = ["RoundsBar", "TrainingProgress", "progress_bar", "rounds_left", "scoring_with_progress", "shows_progress"]


def shows_progress(enabled: bool | None, file: IO | None = None) -> bool:
    """Whether a bar on ``file`` (default stderr) is drawn.

    Parameters
    ----------
    enabled : bool or None
        True or False decides; None: only where ``file`` is a terminal.
    file : file-like, optional

    Returns
    -------
    bool
    """
    if enabled is not None:
        return bool(enabled)
    file = sys.stderr if file is None else file
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty(), or a closed stream
        return False


def progress_bar(total: int | None = None, *, desc: str | None = None, unit: str = "it", enabled: bool | None = None,
                 file: IO | None = None, **kwargs) -> tqdm:
    """A tqdm bar on ``file`` (default stderr), drawn as :func:`shows_progress` says, else inert.

    Parameters
    ----------
    total : int, optional
        What the bar counts to (its ETA needs it).
    desc, unit : str
        The bar's label and the name of what it counts.
    enabled : bool or None, default=None
        True: drawn; False: not drawn (``--quiet``); None: drawn where ``file`` is a terminal.
    file : file-like, optional
    **kwargs
        Further tqdm parameters (``initial``, ``smoothing``, ...).

    Returns
    -------
    tqdm.tqdm
        Use it as a context manager, or ``close()`` it.
    """
    file = sys.stderr if file is None else file
    return tqdm(total=total, desc=desc, unit=unit, file=file, disable=not shows_progress(enabled, file),
                dynamic_ncols=True, **kwargs)


def rounds_left(records: list[dict], *, budget: float, step: float) -> int:
    """An estimate of the rounds a bench run has left to ``budget`` (round 0 included for a run not
    begun): its mean gain in cost per round so far, else one ``step`` a round after round 0's step."""
    if not records:
        return 1 + max(1, math.ceil(round((budget - step) / step, 9)))
    cost = records[-1]["cost"]
    if cost >= budget - 1e-12:
        return 0
    gains = np.diff([r["cost"] for r in records])
    gain = float(gains.mean()) if len(gains) and gains.mean() > 0 else step
    return max(1, math.ceil(round((budget - cost) / gain, 9)))


class RoundsBar:
    """A bar over the rounds of all runs of a bench invocation, on stdout above the per-round lines.

    Its total is the rounds done plus an estimate of those left (:func:`rounds_left`), refined
    after every round and exact once a run ends; its ETA is tqdm's, from the mean time of the
    rounds done in this invocation (``smoothing=0``), so it is there from the first round on.

    Parameters
    ----------
    records : dict
        Each run's records committed so far (where the bar starts), keyed by run.
    budget, step : float
        The bench's budget and step (fractions of the training pixels).
    enabled : bool or None
        As for :func:`progress_bar`.
    """

    def __init__(self, records: dict, *, budget: float, step: float, enabled: bool | None):
        self.budget, self.step = budget, step
        self.done = {run: len(r) for run, r in records.items()}
        self.left = {run: rounds_left(r, budget=budget, step=step) for run, r in records.items()}
        self.bar = progress_bar(self._total(), desc="rounds", unit="round", enabled=enabled, file=sys.stdout,
                                initial=sum(self.done.values()), smoothing=0)

    def _total(self) -> int:
        return sum(self.done.values()) + sum(self.left.values())

    def update(self, run, records: list[dict], *, finished: bool = False) -> None:
        self.done[run] = len(records)
        self.left[run] = 0 if finished else rounds_left(records, budget=self.budget, step=self.step)
        self.bar.total = self._total()
        self.bar.update(sum(self.done.values()) - self.bar.n)
        self.bar.refresh()

    def __enter__(self) -> "RoundsBar":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


class TrainingProgress(Callback):
    """A skorch callback drawing a bar over the gradient steps of each ``fit`` / ``partial_fit``.

    The bar counts to the call's scheduled steps (``SegmentationNet.lr_total_``) and advances one
    step per training batch; it draws no random numbers and changes nothing the net computes.

    Parameters
    ----------
    desc : str, default="training"
    enabled : bool or None, default=None
        As for :func:`progress_bar`.
    stream : {"stderr", "stdout"}, default="stderr"
        Where the bar goes, by name: a net holding the callback can still be copied and pickled.
    """

    def __init__(self, desc: str = "training", *, enabled: bool | None = None, stream: str = "stderr"):
        self.desc = desc
        self.enabled = enabled
        self.stream = stream

    def initialize(self):
        if self.stream not in ("stderr", "stdout"):
            raise ValueError(f"The 'stream' parameter of TrainingProgress must be 'stderr' or 'stdout'. Got "
                             f"{self.stream!r} instead.")
        self.bar_ = None
        return self

    def on_train_begin(self, net, **kwargs):
        self._close()  # a call that raised left its bar open

    def on_epoch_begin(self, net, **kwargs):
        # SegmentationNet.fit_loop sets this call's steps (all epochs) before the first epoch begins.
        if self.bar_ is None:
            self.bar_ = progress_bar(getattr(net, "lr_total_", None), desc=self.desc, unit="step",
                                     enabled=self.enabled, file=getattr(sys, self.stream))

    def on_batch_end(self, net, training=False, **kwargs):
        if training and self.bar_ is not None:
            self.bar_.update()

    def on_train_end(self, net, **kwargs):
        self._close()

    def _close(self) -> None:
        if getattr(self, "bar_", None) is not None:
            self.bar_.close()
        self.bar_ = None


def scoring_with_progress(learner, X_pool, rows):
    """A learner scorer (``PatchActiveLearner(scorer=...)``): the network's ``score_pool`` over the
    pool rows in chunks, with a bar on stderr.

    A chunk is a whole number of the network's inference batches, so every batch, and every score,
    is that of the one pass over ``X_pool[rows]`` that the learner makes by default.
    """
    from focal_al.scores import PoolScores

    net = learner.estimator
    chunk = 64 * net._inference_batch_size(None, np.shape(X_pool))
    parts = []
    with progress_bar(len(rows), desc="scoring", unit="patch", enabled=True) as bar:
        for start in range(0, max(len(rows), 1), chunk):
            parts.append(net.score_pool(X_pool[rows[start:start + chunk]]))
            bar.update(len(parts[-1]))
    return PoolScores.concatenate(parts)
