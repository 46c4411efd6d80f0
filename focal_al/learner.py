"""PatchActiveLearner: the one active-learning loop of focal-al, over patches or whole images.

Unlike modAL's ``ActiveLearner``, which stacks copies of every taught sample, the learner records
the *indices* of the labelled pool rows: labels come from the patch store (or a labels array), the
network refits on the labelled rows with the estimator's training recipe (warm start from the last
round, or from scratch), and ``cost.RevealedPixels`` counts the unique revealed pixels. The network
scores the unlabelled rows once per round; the scores are cached until the next ``teach``/``fit``,
so every criterion of a strategy reads the same pass. The library, ``focal-al bench`` (a simulated
annotator revealing ground truth) and the annotation workflow (a person) all run this loop.
"""
from __future__ import annotations

import numpy as np
from modAL.models.base import BaseLearner

from focal_al.cost import RevealedPixels
from focal_al.selection import check_indices, check_n_instances, check_selection

__all__ = ["PatchActiveLearner", "LEVELS"]

#: What one query unit (one pool row of ``query``) is.
LEVELS = ("patch", "image")


class PatchActiveLearner(BaseLearner):
    """Active learner over a pool of patches (or of whole images), in modAL's style.

    Parameters
    ----------
    estimator : estimator
        Has ``fit(X, y)`` and ``score_pool(X) -> PoolScores`` (``focal_al.estimator.SegmentationNet``);
        ``partial_fit`` is used for warm starts when present; ``score_images`` for ``level="image"``.
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
        The patches ``teach`` refits on; defaults to ``store.patches``, else the pool last queried.
    level : {"patch", "image"}
        What ``query`` chooses. ``"patch"``: pool rows (patches). ``"image"``: whole training
        images (needs ``image_index``); ``query`` then takes the images themselves as ``X_pool``
        (a sequence of ``(H, W, C)`` arrays, scored by ``estimator.score_images``), ``labelled_``
        holds image indices, and ``teach`` trains on every patch of the taught images.
    scorer : callable, optional
        ``scorer(learner, X_pool, rows) -> PoolScores`` for the pool rows ``rows`` (ndarray of int):
        how the round's one network pass is made. Default: ``estimator.score_pool(X_pool[rows])``
        for patches, ``estimator.score_images`` of the images ``rows`` for ``level="image"``.
        Replace it for whole-image scoring of patches or an ensemble (Suggestive Annotation).
    warm_start : bool
        Refit with ``estimator.partial_fit`` (continuing from the current weights and optimiser
        state) when it exists; False retrains from scratch on the labelled set every round.
    random_state : int, numpy.random.Generator or None
        Seeds ``rng_``, the generator that strategies without their own seed draw from.

    Attributes
    ----------
    labelled_ : ndarray of int
        Sorted indices of the labelled query units (patches, or images for ``level="image"``).
    train_rows_ : ndarray of int
        Sorted indices of the patches trained on (``labelled_`` itself at patch level, plus the
        patches of images taught whole).
    y_labelled_ : ndarray of shape (len(train_rows_), l, l) or None
        Their labels.
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
        level: str = "patch",
        scorer=None,
        warm_start: bool = True,
        random_state=None,
    ):
        if isinstance(query_strategy, str):
            from focal_al.registry import query_strategy as make_strategy

            query_strategy = make_strategy(query_strategy)
        if not callable(query_strategy):
            raise TypeError(f"query_strategy must be callable or a registered strategy name. Got {query_strategy!r}.")
        if level not in LEVELS:
            raise ValueError(f"The 'level' parameter must be one of {LEVELS}. Got {level!r} instead.")
        if scorer is not None and not callable(scorer):
            raise TypeError(f"The 'scorer' parameter must be callable(learner, X_pool, rows). Got {scorer!r} instead.")
        super().__init__(estimator, query_strategy)
        self.labels = labels
        self.coords = coords
        self.image_index = image_index
        self.image_shapes = image_shapes
        self.patch_size = patch_size
        self.store = store
        self.X_pool = X_pool
        self.level = level
        self.scorer = scorer
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
        if level == "image" and self._image_index is None:
            raise ValueError("level='image' needs image_index (or a store): the patches of each image are what is trained on.")
        self.revealed_ = None if shapes is None else RevealedPixels(shapes)
        self.rng_ = np.random.default_rng(random_state)
        self.labelled_ = np.empty(0, dtype=np.intp)
        self.train_rows_ = np.empty(0, dtype=np.intp)
        self.y_labelled_ = None
        self._scores = None
        self._scores_pool = None
        self._candidate_cache = None
        if level == "image":
            self._n_pool = int(np.max(self._image_index)) + 1 if shapes is None else len(shapes)
        else:
            self._n_pool = None if self._pool is None else len(self._pool)

    # -------------------------------------------------------------------------------- scoring

    def _score_rows(self, X_pool, rows: np.ndarray):
        if self.scorer is not None:
            scores = self.scorer(self, X_pool, rows)
        elif self.level == "image":
            if not hasattr(self.estimator, "score_images"):
                raise TypeError(f"level='image' needs an estimator with score_images(images); "
                                f"{type(self.estimator).__name__} has none.")
            scores = self.estimator.score_images([X_pool[int(i)] for i in rows])
        else:
            if not hasattr(self.estimator, "score_pool"):
                raise TypeError(
                    f"The estimator {type(self.estimator).__name__} has no score_pool(X) method; "
                    "use focal_al.estimator.SegmentationNet or an estimator returning PoolScores."
                )
            all_rows = len(rows) == len(X_pool) and np.array_equal(rows, np.arange(len(X_pool)))
            # A sorted index list keeps memmap / HDF5 reads sequential.
            scores = self.estimator.score_pool(X_pool if all_rows else X_pool[rows])
        if len(scores) != len(rows):
            raise ValueError(f"The pool scores have {len(scores)} rows for {len(rows)} pool rows; expected one per row.")
        return scores

    def pool_scores(self, X_pool):
        """The ``PoolScores`` of every row of ``X_pool``: one network pass, cached until teach/fit.

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, C, l, l), or a sequence of images for ``level="image"``

        Returns
        -------
        PoolScores
        """
        if self._scores is None or self._scores_pool is not X_pool:
            self._scores, self._scores_pool = self._score_rows(X_pool, np.arange(len(X_pool))), X_pool
        return self._scores

    def candidate_scores(self, X_pool):
        """The scores of the unlabelled rows only, and those rows: what a query ranks.

        Labelled rows are never chosen, so the round's network pass skips them (at 30 % labelled
        that is 30 % of the scoring time). Reuses :meth:`pool_scores` when it is cached.

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, C, l, l), or a sequence of images for ``level="image"``

        Returns
        -------
        scores : PoolScores of length n_candidates
        candidates : ndarray of int of shape (n_candidates,)
            Sorted pool indices of the unlabelled rows; row ``i`` of ``scores`` is ``candidates[i]``.
        """
        candidates = np.setdiff1d(np.arange(len(X_pool)), self.labelled_, assume_unique=True)
        if self._scores is not None and self._scores_pool is X_pool:
            return self._scores.take(candidates), candidates
        cache = self._candidate_cache
        if cache is None or cache[0] is not X_pool or not np.array_equal(cache[2], candidates):
            self._candidate_cache = cache = (X_pool, self._score_rows(X_pool, candidates), candidates)
        return cache[1], cache[2]

    def _invalidate(self) -> None:
        self._scores = None
        self._scores_pool = None
        self._candidate_cache = None

    # -------------------------------------------------------------------------------- querying

    def query(self, X_pool, n_instances: int = 1, *, random_state=None, **query_kwargs):
        """Choose ``n_instances`` unlabelled pool rows with the query strategy (called once).

        Parameters
        ----------
        X_pool : array-like of shape (n_pool, C, l, l), or a sequence of images for ``level="image"``
            The whole pool (labelled rows included; they are never chosen).
        n_instances : int
            T, in ``[1, number of unlabelled rows]``.
        random_state : int, numpy.random.Generator or None
            If given, reseeds ``rng_`` first: the draws of this query depend on it alone (the bench
            seeds each round, so a resumed run queries what an uninterrupted one did).
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
        if random_state is not None:
            self.rng_ = np.random.default_rng(random_state)
        idx = self.query_strategy(self, X_pool, n_instances=n_instances, **query_kwargs)
        candidates = np.setdiff1d(np.arange(n_pool), self.labelled_, assume_unique=True)
        who = f"The query strategy {getattr(self.query_strategy, '__name__', repr(self.query_strategy))}"
        idx = check_selection(idx, n_instances, candidates, n_pool, who=who)
        if self.level == "patch" and self.X_pool is None and self.store is None:
            self._pool = X_pool
        rows = X_pool[idx] if isinstance(X_pool, np.ndarray) else [X_pool[int(i)] for i in idx]
        return idx, rows

    def _check_pool_size(self, n_pool: int) -> None:
        if self._n_pool is None:
            self._n_pool = n_pool
        elif n_pool != self._n_pool:
            unit = "images" if self.level == "image" else "rows"
            raise ValueError(
                f"The pool has {n_pool} {unit} but this learner's pool has {self._n_pool}; the learner keeps pool "
                "indices, so query and teach must use the same pool."
            )

    # -------------------------------------------------------------------------------- teaching

    def teach(self, indices, y=None, *, X_pool=None, fit: bool = True, **fit_kwargs) -> "PatchActiveLearner":
        """Label pool rows: record them, reveal their pixels and refit the estimator.

        Nothing is recorded unless the fit accepts the labels: a refused ``teach`` (bad label
        values, a failed fit, an interrupt) leaves the learner exactly as it was. With
        ``fit=False`` the labels are recorded and revealed without training (an annotation project
        records each import and trains later); :meth:`train` then fits on everything labelled.

        Parameters
        ----------
        indices : ndarray of int of shape (n,)
            Pool indices (image indices for ``level="image"``), not yet labelled, no duplicates.
        y : ndarray of shape (n, l, l), optional
            Their labels (0, 1, ...; 255 where not annotated); by default read from ``labels`` /
            the store. Not accepted for ``level="image"`` (labels come from the store).
        X_pool : array-like of shape (n_patches, C, l, l), optional
            The patches to train on; by default the ones given at construction, the store's, or
            the last queried or taught.
        fit : bool, default=True
            Refit the estimator (False: record the labels only).
        **fit_kwargs
            Passed to the estimator's ``partial_fit``/``fit``.

        Returns
        -------
        self
        """
        if self.level == "image":
            if y is not None:
                raise ValueError("level='image' teaches whole images with the store's labels; y is not accepted.")
            images = check_indices(indices, self._n_pool, "indices")
            return self._teach_images(images, units=images, X_pool=X_pool, fit=fit, **fit_kwargs)
        pool = self._training_pool(X_pool)
        idx = check_indices(indices, len(pool), "indices")
        return self._teach_rows(idx, y, reveal=lambda r: self._reveal_rows(r, idx), units=idx, X_pool=pool,
                                fit=fit, **fit_kwargs)

    def train(self, *, X_pool=None, **fit_kwargs) -> "PatchActiveLearner":
        """Fit the estimator on every labelled row with the learner's recipe, as :meth:`teach` does.

        Warm started (``partial_fit``) or from scratch as the learner's ``warm_start`` says; the
        cached pool scores are dropped. Labelled rows and revealed pixels are unchanged.

        Parameters
        ----------
        X_pool : array-like of shape (n_patches, C, l, l), optional
            As for :meth:`teach`.
        **fit_kwargs
            Passed to the estimator's ``partial_fit``/``fit``.

        Returns
        -------
        self
        """
        if not len(self.train_rows_):
            raise ValueError("Nothing is labelled yet: teach some rows (or images) before train.")
        pool = self._training_pool(X_pool)
        self._invalidate()
        # A sorted index list keeps memmap / HDF5 reads sequential; only the labelled rows are copied.
        self._fit_estimator(np.asarray(pool[self.train_rows_]), self.y_labelled_, warm=self.warm_start, **fit_kwargs)
        return self

    def teach_images(self, images, *, X_pool=None, **fit_kwargs) -> "PatchActiveLearner":
        """Label whole training images: every patch of them, and every pixel (e.g. an initial set).

        Unlike teaching their patches, the cost counts the whole image, also the border pixels
        that no patch covers.

        Parameters
        ----------
        images : ndarray of int of shape (n,)
            Image indices; their patches must not be labelled yet.

        Returns
        -------
        self
        """
        if self._image_index is None:
            raise ValueError("teach_images needs image_index (or a store) to find the patches of each image.")
        n_images = len(self.revealed_) if self.revealed_ is not None else int(np.max(self._image_index)) + 1
        images = check_indices(images, n_images, "images")
        if self.level == "image":
            return self.teach(images, X_pool=X_pool, **fit_kwargs)
        return self._teach_images(images, units=None, X_pool=X_pool, **fit_kwargs)

    def teach_patches(self, rows, *, X_pool=None, **fit_kwargs) -> "PatchActiveLearner":
        """Label pool patches whatever the learner's level (e.g. an initial set of random patches).

        At ``level="patch"`` this is :meth:`teach`. At ``level="image"`` the patches are trained
        on and their pixels revealed, but their images stay candidates for ``query``.

        Parameters
        ----------
        rows : ndarray of int of shape (n,)
            Patch indices (rows of the store / ``X_pool``).

        Returns
        -------
        self
        """
        if self.level == "patch":
            return self.teach(rows, X_pool=X_pool, **fit_kwargs)
        pool = self._training_pool(X_pool)
        rows = check_indices(rows, len(pool), "rows")
        return self._teach_rows(rows, None, reveal=lambda r: self._reveal_rows(r, rows), units=np.empty(0, np.intp),
                                X_pool=pool, **fit_kwargs)

    def _teach_images(self, images, *, units, X_pool, fit=True, **fit_kwargs):
        pool = self._training_pool(X_pool)
        rows = np.flatnonzero(np.isin(np.asarray(self._image_index), images))
        if units is not None:  # image level: patches already taught one by one are not taught twice
            rows = np.setdiff1d(rows, self.train_rows_, assume_unique=True)
        return self._teach_rows(rows, None, reveal=lambda r: r.reveal_images(images),
                                units=rows if units is None else units, X_pool=pool, fit=fit, **fit_kwargs)

    def _training_pool(self, X_pool):
        pool = X_pool if X_pool is not None else self._pool
        if pool is None:
            raise ValueError("teach needs the pool: pass X_pool=..., give X_pool or store to the learner, or query first.")
        if len(pool) == 0:
            raise ValueError("X_pool is empty; expected the pool the indices refer to.")
        if self.level == "patch":
            self._check_pool_size(len(pool))
        return pool

    def _teach_rows(self, rows, y, *, reveal, units, X_pool, fit=True, **fit_kwargs):
        again = units[np.isin(units, self.labelled_)]
        if again.size:
            raise ValueError(f"Pool rows {again[:5].tolist()} are already labelled; teach each row once.")
        if y is None:
            if self._labels is None:
                raise ValueError("teach needs labels: pass y=..., or give labels or store to the learner.")
            y_new = np.asarray(self._labels[np.sort(rows)])[np.argsort(np.argsort(rows))]
        else:
            y_new = np.asarray(y)
            if len(y_new) != len(rows):
                raise ValueError(f"y has {len(y_new)} rows for {len(rows)} indices; expected one label per index.")
        self._check_some_labels(units, y_new, given=y is not None)
        snapshot = (self.labelled_, self.y_labelled_, self.train_rows_, None if self.revealed_ is None
                    else self.revealed_.copy(), self._pool)
        try:
            if self._pool is None:
                self._pool = X_pool
            self.labelled_ = np.union1d(self.labelled_, units).astype(np.intp)
            train_rows = np.concatenate([self.train_rows_, rows])
            order = np.argsort(train_rows, kind="stable")
            y_all = y_new if self.y_labelled_ is None else np.concatenate([self.y_labelled_, y_new])
            self.train_rows_, self.y_labelled_ = train_rows[order], y_all[order]
            if self.revealed_ is not None:
                reveal(self.revealed_)
            self._invalidate()
            if fit:
                # A sorted index list keeps memmap / HDF5 reads sequential; only the labelled rows are copied.
                self._fit_estimator(np.asarray(X_pool[self.train_rows_]), self.y_labelled_, warm=self.warm_start,
                                    **fit_kwargs)
        except BaseException:
            self.labelled_, self.y_labelled_, self.train_rows_, self.revealed_, self._pool = snapshot
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

    def _reveal_rows(self, revealed: RevealedPixels, idx: np.ndarray) -> None:
        images = idx if self._image_index is None else np.asarray(self._image_index)[idx]
        if self._coords is None:
            revealed.reveal_images(images)
        else:
            revealed.reveal_patches(images, np.asarray(self._coords)[idx], int(self._patch_size))

    def restore(self, labelled, *, revealed=None, train_rows=None, X_pool=None) -> "PatchActiveLearner":
        """Mark query units as labelled without training: resume a saved session.

        The labels are read from ``labels`` / the store, as ``teach`` would; load the estimator's
        weights separately. Nothing else changes (no fit, no new reveal beyond ``revealed``).

        Parameters
        ----------
        labelled : ndarray of int
            The saved ``labelled_``.
        revealed : RevealedPixels, optional
            The saved ``revealed_`` (default: recomputed from ``labelled``).
        train_rows : ndarray of int, optional
            The saved ``train_rows_`` (default: derived from ``labelled``; give it when patches
            were taught with :meth:`teach_patches` at ``level="image"``).
        X_pool : array-like, optional
            The training patches, as for ``teach``.

        Returns
        -------
        self
        """
        if len(self.labelled_) or len(self.train_rows_):
            raise ValueError("restore is for a new learner; this one already has labelled rows.")
        if self._labels is None:
            raise ValueError("restore needs labels (labels= or a store) to rebuild the labelled set.")
        pool = self._training_pool(X_pool)
        n_units = self._n_pool if self.level == "image" else len(pool)
        units = np.sort(check_indices(labelled, n_units, "labelled")) if len(labelled) else np.empty(0, np.intp)
        if train_rows is not None:
            rows = np.sort(check_indices(train_rows, len(pool), "train_rows")) if len(train_rows) else units[:0]
        else:
            rows = np.flatnonzero(np.isin(np.asarray(self._image_index), units)) if self.level == "image" else units
        if revealed is not None:
            if [tuple(s) for s in revealed.image_shapes] != [tuple(s) for s in (self.revealed_ or revealed).image_shapes]:
                raise ValueError("revealed was saved for other images (its image shapes differ from this pool's).")
            self.revealed_ = revealed.copy()
        elif self.revealed_ is not None and len(units):
            if self.level == "image":
                self.revealed_.reveal_images(units)
            else:
                self._reveal_rows(self.revealed_, units)
        self._pool = pool if self._pool is None else self._pool
        self.labelled_, self.train_rows_ = units.astype(np.intp), rows.astype(np.intp)
        self.y_labelled_ = np.asarray(self._labels[rows]) if len(rows) else None
        self._invalidate()
        return self

    # -------------------------------------------------------------------------------- saved state

    def state_dict(self) -> dict:
        """The loop's state as plain JSON data: level, labelled query units, trained rows, revealed pixels.

        With the labels (``y_labelled_``) and the estimator's weights it is what :meth:`save` writes.

        Returns
        -------
        dict
        """
        return {"version": 1, "level": self.level, "n_pool": self._n_pool, "labelled": self.labelled_.tolist(),
                "train_rows": self.train_rows_.tolist(),
                "revealed": None if self.revealed_ is None else self.revealed_.to_dict()}

    def save(self, path, *, optimizer: bool = True):
        """Save the learner's whole state in one file (safetensors, :mod:`focal_al.weights`).

        The file holds the estimator's weights (and, with ``optimizer``, its optimiser's state, so
        that the next ``teach`` continues exactly as it would have), the labels of the trained rows,
        and :meth:`state_dict`. The pool and the query strategy are not saved: a loading learner is
        built on the same pool.

        Parameters
        ----------
        path : str or path-like
        optimizer : bool, default=True

        Returns
        -------
        pathlib.Path
        """
        import json

        import torch

        from focal_al.weights import write_weights

        net = self.estimator
        if not getattr(net, "initialized_", False) or getattr(net, "module_", None) is None:
            raise ValueError("save needs an initialised network estimator (SegmentationNet) whose weights it writes.")
        extra = {} if self.y_labelled_ is None else {"labels": torch.from_numpy(np.ascontiguousarray(self.y_labelled_))}
        return write_weights(path, net.module_.state_dict(), net.optimizer_.state_dict() if optimizer else None,
                             extra=extra, metadata={"learner": json.dumps(self.state_dict())})

    def load(self, path, *, optimizer: bool = True) -> "PatchActiveLearner":
        """Restore what :meth:`save` wrote into this (new) learner, built on the same pool.

        Parameters
        ----------
        path : str or path-like
        optimizer : bool, default=True
            Also restore the optimiser's state (the file must hold it).

        Returns
        -------
        self
        """
        import json

        from focal_al.cost import RevealedPixels
        from focal_al.weights import read_weights_file

        net = self.estimator
        if len(self.labelled_) or len(self.train_rows_):
            raise ValueError("load is for a new learner; this one already has labelled rows.")
        if not getattr(net, "initialized_", False):
            net.initialize()
        module, optimizer_state, extra, metadata = read_weights_file(path, device=getattr(net, "device_", "cpu"))
        if "learner" not in metadata:
            raise ValueError(f"'{path}' holds a network's weights but no learner state; load it with "
                             "SegmentationNet.load_weights, or save the learner with PatchActiveLearner.save.")
        try:
            state = json.loads(metadata["learner"])
            level, n_pool = state["level"], state["n_pool"]
            labelled, train_rows = (np.asarray(state[k], dtype=np.intp) for k in ("labelled", "train_rows"))
            revealed = None if state["revealed"] is None else RevealedPixels.from_dict(state["revealed"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"The learner state in '{path}' is damaged ({err}).") from err
        if level != self.level or (self._n_pool is not None and n_pool is not None and n_pool != self._n_pool):
            raise ValueError(f"'{path}' holds a {level}-level learner over {n_pool} pool units; this one is "
                             f"{self.level}-level over {self._n_pool}. Build the learner on the pool it was saved for.")
        labels = extra.get("labels")
        if len(train_rows) and (labels is None or len(labels) != len(train_rows)):
            raise ValueError(f"The learner state in '{path}' has {len(train_rows)} trained rows but "
                             f"{0 if labels is None else len(labels)} label patches.")
        if optimizer and optimizer_state is None:
            raise ValueError(f"'{path}' holds no optimiser state; pass optimizer=False to load the weights alone.")
        net.module_.load_state_dict(module)
        if optimizer:
            net.optimizer_.load_state_dict(optimizer_state)
        if hasattr(net, "mark_trained"):
            net.mark_trained()
        if revealed is not None and self.revealed_ is not None and \
                [tuple(s) for s in revealed.image_shapes] != [tuple(s) for s in self.revealed_.image_shapes]:
            raise ValueError(f"'{path}' was saved for other images (its image shapes differ from this pool's).")
        self.revealed_ = revealed
        self.labelled_, self.train_rows_ = labelled, train_rows
        self.y_labelled_ = None if labels is None else labels.numpy()
        self._n_pool = n_pool if self._n_pool is None else self._n_pool
        self._invalidate()
        return self

    def _fit_estimator(self, X, y, *, warm: bool, **fit_kwargs) -> None:
        if getattr(self.estimator, "semi_supervised", None) and self._pool is not None:
            # Semi-supervised training reads the whole pool: unlabelled rows and unrevealed pixels.
            fit_kwargs.setdefault("X_unlabelled", self._pool)
        if warm and hasattr(self.estimator, "partial_fit"):
            self.estimator.partial_fit(X, y, **fit_kwargs)
        elif getattr(self.estimator, "warm_start", False) is True and hasattr(self.estimator, "set_params"):
            # Not warm means fresh weights, also for an estimator whose own fit would warm start
            # (a skorch net built with warm_start=True, as the bench builds it for a periodic reset).
            self.estimator.set_params(warm_start=False)
            try:
                self.estimator.fit(X, y, **fit_kwargs)
            finally:
                self.estimator.set_params(warm_start=True)
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
