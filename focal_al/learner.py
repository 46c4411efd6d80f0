"""PatchActiveLearner: a modAL learner over a fixed pool of patches (or whole images).

Unlike modAL's ``ActiveLearner``, which stacks copies of every taught sample, the learner records
the *indices* of the labelled pool rows: labels come from the patch store (or a labels array), the
network refits on ``X_pool[labelled_]`` with a warm start, and ``cost.RevealedPixels`` counts the
unique revealed pixels. The network scores the pool once per round; the scores are cached until the
next ``teach``/``fit``, so every criterion of a strategy reads the same pass.
"""
from __future__ import annotations

import numpy as np
from modAL.models.base import BaseLearner

from focal_al.cost import RevealedPixels
from focal_al.selection import check_indices, check_n_instances, check_selection

__all__ = ["PatchActiveLearner"]


class PatchActiveLearner(BaseLearner):
    """Active learner over a pool of patches, in modAL's style.

    Parameters
    ----------
    estimator : estimator
        Has ``fit(X, y)`` and ``score_pool(X) -> PoolScores`` (``focal_al.estimator.SegmentationNet``);
        ``partial_fit`` is used for warm starts when present.
    query_strategy : callable or str
        A modAL query strategy ``(learner, X_pool, n_instances=1, **kw) -> indices``, e.g.
        ``focal_al.registry.query_strategy("focannot", k=3)``, or a registered strategy name.
    labels : ndarray of shape (n_pool, l, l), optional
        Label patches of the pool (0, 1; 255 = ignored). Taken from ``store`` when it is given.
    coords : ndarray of int of shape (n_pool, 2), optional
        Top-left ``(y, x)`` of each patch in its image. None: the pool rows are whole images.
    image_index : ndarray of int of shape (n_pool,), optional
        Source image of each pool row.
    image_shapes : ndarray of shape (n_images, 2), optional
        ``(H, W)`` of each training image: enables the pixel cost (``revealed_``, ``cost_``).
    patch_size : int, optional
        Side ``l`` of the patches.
    store : focal_al.store.PatchStore, optional
        Supplies ``patches`` (the pool), ``labels``, ``coords``, ``image_index``, ``image_shapes`` and
        ``patch_size`` where the explicit arguments are None.
    X_pool : array-like of shape (n_pool, ...), optional
        The pool ``teach`` refits on; defaults to ``store.patches``, else the pool last queried.
    warm_start : bool
        Refit with ``estimator.partial_fit`` (continuing from the current weights) when it exists.
    random_state : int, numpy.random.Generator or None
        Seeds ``rng_``, the generator that strategies without their own seed draw from.

    Attributes
    ----------
    labelled_ : ndarray of int
        Sorted pool indices labelled so far.
    revealed_ : RevealedPixels or None
        Revealed pixels per image (None without ``image_shapes``).
    rng_ : numpy.random.Generator
    """

    def __init__(
        self,
        estimator,
        query_strategy,
        *,
        labels=None,
        coords=None,
        image_index=None,
        image_shapes=None,
        patch_size=None,
        store=None,
        X_pool=None,
        warm_start: bool = True,
        random_state=None,
    ):
        if isinstance(query_strategy, str):
            from focal_al.registry import query_strategy as make_strategy

            query_strategy = make_strategy(query_strategy)
        if not callable(query_strategy):
            raise TypeError(f"query_strategy must be callable or a registered strategy name. Got {query_strategy!r}.")
        super().__init__(estimator, query_strategy)
        self.labels = labels
        self.coords = coords
        self.image_index = image_index
        self.image_shapes = image_shapes
        self.patch_size = patch_size
        self.store = store
        self.X_pool = X_pool
        self.warm_start = warm_start
        self.random_state = random_state

        def from_store(value, attribute):
            return getattr(store, attribute) if value is None and store is not None else value

        self._labels = from_store(labels, "labels")
        self._coords = from_store(coords, "coords")
        self._image_index = from_store(image_index, "image_index")
        shapes = from_store(image_shapes, "image_shapes")
        self._patch_size = from_store(patch_size, "patch_size")
        self._pool = from_store(X_pool, "patches")
        if self._coords is not None and self._patch_size is None:
            raise ValueError("coords were given without patch_size: the pixel cost needs the patch side.")
        sizes = {n: len(a) for n, a in (("labels", self._labels), ("coords", self._coords),
                                         ("image_index", self._image_index), ("X_pool", self._pool)) if a is not None}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"labels, coords, image_index and X_pool must have one row per pool row. Got lengths {sizes}.")
        self.revealed_ = None if shapes is None else RevealedPixels(shapes)
        self.rng_ = np.random.default_rng(random_state)
        self.labelled_ = np.empty(0, dtype=np.intp)
        self.y_labelled_ = None
        self._scores = None
        self._scores_pool = None
        self._n_pool = None if self._pool is None else len(self._pool)

    # -------------------------------------------------------------------------------- scoring

    def pool_scores(self, X_pool):
        """The estimator's ``PoolScores`` for ``X_pool``: one network pass, cached until teach/fit.

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, C, l, l)

        Returns
        -------
        PoolScores
        """
        if self._scores is None or self._scores_pool is not X_pool:
            if not hasattr(self.estimator, "score_pool"):
                raise TypeError(
                    f"The estimator {type(self.estimator).__name__} has no score_pool(X) method; "
                    "use focal_al.estimator.SegmentationNet or an estimator returning PoolScores."
                )
            scores = self.estimator.score_pool(X_pool)
            if len(scores) != len(X_pool):
                raise ValueError(f"score_pool returned {len(scores)} rows for a pool of {len(X_pool)}.")
            self._scores, self._scores_pool = scores, X_pool
        return self._scores

    def _invalidate(self) -> None:
        self._scores = None
        self._scores_pool = None

    # -------------------------------------------------------------------------------- querying

    def query(self, X_pool, n_instances: int = 1, **query_kwargs):
        """Choose ``n_instances`` unlabelled pool rows with the query strategy (called once).

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, C, l, l)
            The whole pool (labelled rows included; they are never chosen).
        n_instances : int
            T, in ``[1, number of unlabelled rows]``.
        **query_kwargs
            Passed to the strategy.

        Returns
        -------
        indices : ndarray of int of shape (n_instances,)
        rows : the selected rows of ``X_pool``
        """
        n_pool = len(X_pool)
        if n_pool == 0:
            raise ValueError("X_pool is empty; expected at least one pool row to query from.")
        self._check_pool_size(n_pool)
        check_n_instances(n_instances, n_pool - len(self.labelled_), what="unlabelled pool rows")
        idx, rows = super().query(X_pool, n_instances=n_instances, **query_kwargs)
        candidates = np.setdiff1d(np.arange(n_pool), self.labelled_, assume_unique=True)
        who = f"The query strategy {getattr(self.query_strategy, '__name__', repr(self.query_strategy))}"
        idx = check_selection(idx, n_instances, candidates, n_pool, who=who)
        if self.X_pool is None and self.store is None:
            self._pool = X_pool
        return idx, rows

    def _check_pool_size(self, n_pool: int) -> None:
        if self._n_pool is None:
            self._n_pool = n_pool
        elif n_pool != self._n_pool:
            raise ValueError(
                f"The pool has {n_pool} rows but this learner's pool has {self._n_pool}; the learner keeps pool "
                "indices, so query and teach must use the same pool."
            )

    # -------------------------------------------------------------------------------- teaching

    def teach(self, indices, y=None, *, X_pool=None, **fit_kwargs) -> "PatchActiveLearner":
        """Label pool rows: record them, reveal their pixels and refit the estimator.

        Parameters
        ----------
        indices : ndarray of int of shape (n,)
            Pool indices, not yet labelled, no duplicates.
        y : ndarray of shape (n, l, l), optional
            Their labels; by default read from ``labels`` / the store.
        X_pool : array-like of shape (n_pool, C, l, l), optional
            The pool; by default the one given at construction, the store's, or the last queried
            or taught.
        **fit_kwargs
            Passed to the estimator's ``partial_fit``/``fit``.

        Returns
        -------
        self
        """
        pool = X_pool if X_pool is not None else self._pool
        if pool is None:
            raise ValueError("teach needs the pool: pass X_pool=..., give X_pool or store to the learner, or query first.")
        if len(pool) == 0:
            raise ValueError("X_pool is empty; expected the pool the indices refer to.")
        self._check_pool_size(len(pool))
        idx = check_indices(indices, len(pool), "indices")
        again = idx[np.isin(idx, self.labelled_)]
        if again.size:
            raise ValueError(f"Pool rows {again[:5].tolist()} are already labelled; teach each row once.")
        if y is None:
            if self._labels is None:
                raise ValueError("teach needs labels: pass y=..., or give labels or store to the learner.")
            y_new = np.asarray(self._labels[np.sort(idx)])[np.argsort(np.argsort(idx))]
        else:
            y_new = np.asarray(y)
            if len(y_new) != len(idx):
                raise ValueError(f"y has {len(y_new)} rows for {len(idx)} indices; expected one label per index.")
        self._check_some_labels(idx, y_new, given=y is not None)
        # Nothing is recorded until the fit has accepted the labels: a refused teach (bad label
        # values, a failed fit, an interrupt) leaves the learner exactly as it was.
        snapshot = (self.labelled_, self.y_labelled_, None if self.revealed_ is None else self.revealed_.copy(),
                    self._pool)
        try:
            if self._pool is None:
                self._pool = pool
            labelled = np.concatenate([self.labelled_, idx])
            order = np.argsort(labelled, kind="stable")
            y_all = y_new if self.y_labelled_ is None else np.concatenate([self.y_labelled_, y_new])
            self.labelled_, self.y_labelled_ = labelled[order], y_all[order]
            self._reveal(idx)
            self._invalidate()
            # A sorted index list keeps memmap / HDF5 reads sequential; only the labelled rows are copied.
            self._fit_estimator(np.asarray(pool[self.labelled_]), self.y_labelled_, warm=self.warm_start, **fit_kwargs)
        except BaseException:
            self.labelled_, self.y_labelled_, self.revealed_, self._pool = snapshot
            raise
        return self

    def _check_some_labels(self, idx: np.ndarray, y_new: np.ndarray, *, given: bool) -> None:
        ignore = getattr(self.estimator, "ignore_index", 255)
        if y_new.size and np.issubdtype(y_new.dtype, np.integer) and bool(np.all(y_new == ignore)):
            source = "y" if given else "the pool's labels (labels= / the store)"
            raise ValueError(
                f"Every pixel of {source} for pool rows {idx[:5].tolist()} is {ignore} (unlabelled), so teach would "
                f"count their cost and train on nothing. Pass their annotations as y=..., of shape "
                f"({len(idx)}, l, l) with class labels (0, 1, ...) where annotated and {ignore} elsewhere."
            )

    def _reveal(self, idx: np.ndarray) -> None:
        if self.revealed_ is None:
            return
        images = idx if self._image_index is None else np.asarray(self._image_index)[idx]
        if self._coords is None:
            self.revealed_.reveal_images(images)
        else:
            self.revealed_.reveal_patches(images, np.asarray(self._coords)[idx], int(self._patch_size))

    def _fit_estimator(self, X, y, *, warm: bool, **fit_kwargs) -> None:
        if warm and hasattr(self.estimator, "partial_fit"):
            self.estimator.partial_fit(X, y, **fit_kwargs)
        else:
            self.estimator.fit(X, y, **fit_kwargs)

    def fit(self, X, y, **fit_kwargs) -> "PatchActiveLearner":
        """Fit the estimator from scratch on ``(X, y)`` (modAL's ``fit``, without its sklearn<1.8 check).

        Labelled indices and revealed pixels are unchanged; the cached pool scores are dropped.

        Parameters
        ----------
        X : array-like of shape (n, C, l, l)
        y : array-like of shape (n, l, l)

        Returns
        -------
        self
        """
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}; expected one label per row.")
        if len(X) == 0:
            raise ValueError("fit needs at least one sample.")
        self._invalidate()
        self._fit_estimator(X, y, warm=False, **fit_kwargs)
        return self

    @property
    def cost_(self) -> float:
        """Annotation cost: revealed pixels / all pixels (fraction of labelled rows without image shapes)."""
        if self.revealed_ is not None:
            return self.revealed_.cost
        if not self._n_pool:
            return 0.0
        return len(self.labelled_) / self._n_pool
