"""Selectors shared by the strategies: ranking, stochastic ranking, diversity cores, clustering, quotas, Algorithm 1.

Everything here is numpy (plus scikit-learn's MiniBatchKMeans); no torch. Criteria are passed by
registry name or as callables, so a user's criterion replaces a built-in one anywhere.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = [
    "check_n_instances",
    "check_indices",
    "check_selection",
    "top_rank",
    "STOCHASTIC_MODES",
    "SELECTIONS",
    "stochastic_top",
    "sorted_descriptors",
    "mean_sq_sorted_distance",
    "mean_sorted_distance",
    "kmeans",
    "fit_centres",
    "nearest_centroid",
    "member_means",
    "assign_clusters",
    "allocate_quotas",
    "cluster_importance",
    "evaluate_criterion",
    "double_ranking",
]

# Rows of the pairwise block computed at once by mean_sorted_distance: bounds the temporary
# (block x Q [x d]) arrays to a few tens of MB whatever Q is.
_BLOCK_ELEMENTS = 1 << 22


def check_n_instances(n_instances, n_candidates: int, *, what: str = "candidates") -> int:
    """Validate a query size: an int in ``[1, n_candidates]``; returns it as ``int``."""
    if isinstance(n_instances, (bool, np.bool_)) or not isinstance(n_instances, (int, np.integer)):
        raise TypeError(f"The 'n_instances' parameter must be an int. Got {n_instances!r} instead.")
    if n_candidates == 0:
        raise ValueError(f"There are no {what} left to query (the pool is empty or fully labelled).")
    if not 1 <= n_instances <= n_candidates:
        raise ValueError(
            f"The 'n_instances' parameter must be in [1, {n_candidates}] (the number of {what}). "
            f"Got {n_instances} instead."
        )
    return int(n_instances)


def check_indices(indices, n_pool: int, what: str) -> np.ndarray:
    """Validate pool indices: a non-empty 1-D integer array in ``[0, n_pool)`` without duplicates.

    Parameters
    ----------
    indices : array-like of int
    n_pool : int
        Number of pool rows.
    what : str
        How error messages name ``indices`` (e.g. "The strategy's selection").

    Returns
    -------
    ndarray of intp of shape (n,)
    """
    idx = np.asarray(indices)
    if idx.ndim == 0:
        idx = idx.reshape(1)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise TypeError(
            f"{what} must be a 1-D array of integer pool indices. Got {np.array2string(idx, threshold=8)} "
            f"(dtype {idx.dtype}) instead."
        )
    idx = idx.astype(np.intp)
    if idx.size == 0:
        raise ValueError(f"{what} is empty; expected at least one pool index.")
    out_of_range = idx[(idx < 0) | (idx >= n_pool)]
    if out_of_range.size:
        raise IndexError(f"{what} must lie in [0, {n_pool}) (the pool size). Got {out_of_range[:5].tolist()}.")
    values, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{what} contains duplicates: {values[counts > 1][:5].tolist()}.")
    return idx


def check_selection(selection, n_instances: int, candidates, n_pool: int, *, who: str = "The query strategy") -> np.ndarray:
    """Validate what a strategy returned: exactly ``n_instances`` unique pool indices from ``candidates``.

    Every caller of a strategy (the learner's ``query``, hence the bench) runs this, so a strategy
    that returns nothing, duplicates, floats or labelled rows fails at once with its name, instead
    of looping or corrupting the labelled set.

    Parameters
    ----------
    selection : array-like of int
    n_instances : int
    candidates : ndarray of int
        Pool indices the strategy could choose from (the unlabelled rows).
    n_pool : int
    who : str
        How error messages name the strategy.

    Returns
    -------
    ndarray of intp of shape (n_instances,)
    """
    idx = check_indices(selection, n_pool, f"{who}'s selection")
    outside = idx[~np.isin(idx, candidates)]
    if len(idx) != n_instances or outside.size:
        raise RuntimeError(
            f"{who} returned {len(idx)} indices ({outside.size} not among the candidates, e.g. already "
            f"labelled: {outside[:5].tolist()}); expected {n_instances} unlabelled ones."
        )
    return idx


def top_rank(values, n: int) -> np.ndarray:
    """Positions of the ``n`` largest values, best first; ties go to the lower position.

    Parameters
    ----------
    values : ndarray of shape (m,)
    n : int
        0 <= n <= m.

    Returns
    -------
    ndarray of int of shape (n,)
    """
    values = np.asarray(values)
    m = len(values)
    if not 0 <= n <= m:
        raise ValueError(f"top_rank needs 0 <= n <= {m} (the number of values). Got {n} instead.")
    if n == 0:
        return np.empty(0, dtype=np.intp)
    if n < m:
        # A partial partition is O(m); the deterministic tie rule is applied on the threshold only.
        threshold = np.partition(values, m - n)[m - n]
        above = np.flatnonzero(values > threshold)
        ties = np.flatnonzero(values == threshold)[: n - len(above)]
        chosen = np.concatenate([above, ties])
    else:
        chosen = np.arange(m)
    order = np.lexsort((chosen, -values[chosen]))
    return chosen[order].astype(np.intp)


#: The sampling distributions of :func:`stochastic_top` (Kirsch et al., TMLR 2023).
STOCHASTIC_MODES = ("power", "softmax", "softrank")
#: ``selection`` values accepted by :func:`double_ranking`: deterministic top-T, or a stochastic mode.
SELECTIONS = ("top", *STOCHASTIC_MODES)


def _check_positive(value, name: str, *, allow_zero: bool) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok:
        value = float(value)
        ok = np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        expected = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"The {name!r} parameter must be {expected}. Got {value!r} instead.")
    return value


def _average_ranks_descending(values: np.ndarray) -> np.ndarray:
    """Rank 1 for the largest value; tied values share the mean of their ranks."""
    _, inverse, counts = np.unique(-values, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (first + (counts + 1) / 2.0)[inverse.reshape(-1)]


def stochastic_top(values, n: int, rng: np.random.Generator, *, mode: str = "power", beta: float = 1.0,
                   temperature: float = 1.0) -> np.ndarray:
    """Positions of ``n`` values sampled without replacement, with probability growing with the value.

    Stochastic batch acquisition (Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron and
    Gal, "Stochastic Batch Acquisition: A Simple Baseline for Deep Active Learning", TMLR 2023):
    instead of the top-``n`` scores, draw ``n`` positions one after the other, each with
    probability proportional to a weight ``w_i`` among those not drawn yet. The draws use the
    Gumbel-top-k trick (the ``n`` largest ``log w_i + Gumbel noise``), which is exactly that
    sequential sampling, in one O(m) pass.

    Weights by ``mode``:

    - ``"power"``: ``w_i = s_i ** beta``. The paper defines it on non-negative scores (entropy,
      BALD): scores that are all ``>= 0`` are used as they are; otherwise (e.g. minus the margin)
      they are first shifted by their minimum, ``s - min(s)``, so the lowest one gets weight 0.
      Zero-weight positions are drawn only after every positive one, in uniform random order, so
      ``n`` may be as large as ``m`` and all-equal (all-zero) scores give uniform sampling.
    - ``"softmax"``: ``w_i = exp(s_i / temperature)`` (shift-invariant, any sign).
    - ``"softrank"``: ``w_i = rank_i ** -beta``, rank 1 for the highest score; tied scores share
      their mean rank (all-equal scores give uniform sampling).

    ``beta = 0`` gives uniform sampling; large ``beta`` (small ``temperature``) approach top-``n``.

    Parameters
    ----------
    values : ndarray of shape (m,)
        Finite scores, higher = ask first.
    n : int
        Number of positions drawn, ``0 <= n <= m``.
    rng : numpy.random.Generator
        Source of the Gumbel noise (``m`` draws per call).
    mode : {"power", "softmax", "softrank"}
    beta : float
        Exponent of ``"power"`` and ``"softrank"``, ``>= 0``.
    temperature : float
        Temperature of ``"softmax"``, ``> 0``.

    Returns
    -------
    ndarray of int of shape (n,)
        Positions into ``values``, unique, in the order drawn.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError(
            f"stochastic_top needs a 1-D array of finite scores. Got {np.array2string(values, threshold=8)}."
        )
    m = len(values)
    if not 0 <= n <= m:
        raise ValueError(f"stochastic_top needs 0 <= n <= {m} (the number of values). Got {n} instead.")
    if mode not in STOCHASTIC_MODES:
        raise ValueError(f"The 'mode' parameter must be one of {STOCHASTIC_MODES}. Got {mode!r} instead.")
    beta = _check_positive(beta, "beta", allow_zero=True)
    temperature = _check_positive(temperature, "temperature", allow_zero=False)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"stochastic_top draws from a numpy.random.Generator. Got {rng!r} instead.")
    if mode == "softmax":
        log_weights = values / temperature
    elif mode == "softrank":
        log_weights = -beta * np.log(_average_ranks_descending(values))
    else:
        shifted = values - min(values.min(initial=0.0), 0.0)
        # The smallest positive double stands in for 0: its log (-708) puts zero weights behind any
        # positive one whatever the Gumbel noise, while they still tie with each other.
        log_weights = beta * np.log(np.maximum(shifted, np.finfo(np.float64).tiny))
    keys = log_weights + rng.gumbel(size=m)
    return top_rank(keys, n)


def sorted_descriptors(descriptors) -> np.ndarray:
    """Each descriptor's values sorted ascending, in float64.

    The 1-D optimal-transport identity: the W of Eq. 4 (squared cost, best permutation) between two
    descriptors is the squared Euclidean distance between their sorted values.

    Parameters
    ----------
    descriptors : ndarray of shape (n, d)

    Returns
    -------
    ndarray of float64 of shape (n, d)
    """
    z = np.asarray(descriptors)
    if z.ndim != 2:
        raise ValueError(f"Descriptors must be 2-D (n, d). Got shape {z.shape} instead.")
    # Sorting before the cast keeps float32 input light; the cast is exact.
    return np.sort(z, axis=1).astype(np.float64, copy=False)


def mean_sq_sorted_distance(descriptors) -> np.ndarray:
    """Mean of W_{n,q} (Eq. 4) over the other rows q != n, exactly, in O(n d log d).

    With sorted descriptors z and their mean zbar,
    ``sum_q ||z_n - z_q||^2 = n ||z_n - zbar||^2 + sum_q ||z_q - zbar||^2``; dividing by ``n - 1``
    leaves out q = n (whose term is 0). A single row has no other row: its mean is 0.

    Parameters
    ----------
    descriptors : ndarray of shape (n, d)

    Returns
    -------
    ndarray of float64 of shape (n,)
    """
    z = sorted_descriptors(descriptors)
    n = len(z)
    if n <= 1:
        return np.zeros(n)
    centred = z - z.mean(axis=0)
    sq = np.einsum("ij,ij->i", centred, centred)
    return (n * sq + sq.sum()) / (n - 1)


def mean_sorted_distance(descriptors, *, p: float = 2.0, root: bool = False) -> np.ndarray:
    """Mean over q != n of the 1-D transport cost between sorted descriptors, computed blockwise.

    ``cost(n, q) = sum_m |z_{n,m} - z_{q,m}|^p`` (the best-permutation cost for any convex
    ``|.|^p``), optionally raised to ``1/p`` (``root=True``: the p-Wasserstein distance scaled by
    ``d^(1/p)``). For ``p = 2`` the pairwise block comes from one matrix product
    (``|a|^2 + |b|^2 - 2 a.b``); other ``p`` use blocked broadcasting. Never a loop over pairs.

    Parameters
    ----------
    descriptors : ndarray of shape (n, d)
    p : float
        Exponent of the ground cost, ``p >= 1``.
    root : bool
        Take the ``1/p`` power of each pairwise cost before averaging.

    Returns
    -------
    ndarray of float64 of shape (n,)
    """
    if not p >= 1:
        raise ValueError(f"The 'p' parameter must be >= 1. Got {p!r} instead.")
    if p == 2 and not root:
        return mean_sq_sorted_distance(descriptors)
    z = sorted_descriptors(descriptors)
    n, d = z.shape
    if n <= 1:
        return np.zeros(n)
    out = np.empty(n)
    norms = np.einsum("ij,ij->i", z, z)
    per_row = n if p == 2 else n * d
    block = max(1, _BLOCK_ELEMENTS // per_row)
    for start in range(0, n, block):
        stop = min(n, start + block)
        if p == 2:
            cost = norms[start:stop, None] + norms[None, :] - 2.0 * (z[start:stop] @ z.T)
            # Cancellation can leave tiny negatives where the true cost is 0.
            np.maximum(cost, 0.0, out=cost)
        else:
            cost = (np.abs(z[start:stop, None, :] - z[None, :, :]) ** p).sum(axis=2)
        if root:
            cost **= 1.0 / p
        cost[np.arange(stop - start), np.arange(start, stop)] = 0.0
        out[start:stop] = cost.sum(axis=1) / (n - 1)
    return out


def kmeans(descriptors, k: int, *, rng: np.random.Generator, n_init: int = 3, batch_size: int = 4096):
    """Cluster descriptors with scikit-learn's MiniBatchKMeans, seeded from ``rng``.

    Parameters
    ----------
    descriptors : ndarray of shape (n, d)
    k : int
        Number of clusters, ``1 <= k <= n``.
    rng : numpy.random.Generator
        Source of the k-means seed.
    n_init : int
        Number of initialisations (fixed, so results do not depend on a library default).
    batch_size : int
        Mini-batch size.

    Returns
    -------
    labels : ndarray of int of shape (n,)
        Cluster of each row, in ``0 .. k-1`` (its nearest fitted centre).
    centroids : ndarray of shape (k, d)
        The means of each cluster's members (:func:`member_means`), the centroids of Eqs. 6-7.
    """
    x = np.asarray(descriptors)
    return assign_clusters(x, fit_centres(x, k, rng=rng, n_init=n_init, batch_size=batch_size))


def fit_centres(descriptors, k: int, *, rng: np.random.Generator, n_init: int = 3, batch_size: int = 4096):
    """MiniBatchKMeans centres of the descriptors, seeded from ``rng`` (see :func:`kmeans`).

    Returns
    -------
    ndarray of shape (k, d)
    """
    from sklearn.cluster import MiniBatchKMeans

    x = np.asarray(descriptors)
    if x.ndim != 2:
        raise ValueError(f"Descriptors must be 2-D (n, d). Got shape {x.shape} instead.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"The 'k' parameter (number of clusters) must be an int >= 1. Got {k!r} instead.")
    if k > len(x):
        raise ValueError(
            f"The 'k' parameter ({k} clusters) must not exceed the number of candidates ({len(x)}); "
            f"lower k or query from a larger pool."
        )
    if k == 1:
        return x.mean(axis=0, keepdims=True)
    from threadpoolctl import threadpool_limits

    seed = int(rng.integers(2**31 - 1))
    model = MiniBatchKMeans(
        n_clusters=k, n_init=n_init, batch_size=min(batch_size, len(x)), random_state=seed, compute_labels=False
    )
    # Mini-batch steps are tiny: thread start-up costs more than it saves, and on a loaded machine
    # oversubscribed threads made the fit 10-20x slower (measured, benchmarks/bench_query.py).
    with threadpool_limits(limits=1):
        model.fit(x)
    return model.cluster_centers_


#: Lloyd steps :func:`assign_clusters` takes at most to make labels and centroids agree.
MAX_LLOYD_STEPS = 50


def assign_clusters(x, centres, *, chunk: int = 65536, max_steps: int = MAX_LLOYD_STEPS):
    """Labels and centroids that agree: each row in the cluster of its nearest centroid, each
    centroid the mean of its cluster's members (Eqs. 6-7), as :func:`kmeans` returns them.

    Starting from ``centres`` (fitted elsewhere: MiniBatchKMeans, or streaming ``partial_fit``),
    assignment and member means alternate (Lloyd steps, at most ``max_steps``) until the labels
    no longer change: MiniBatchKMeans's centres are running averages, and the member means of its
    assignment can lie nearer other rows (16 of 90 random cases before). The labels returned are
    always those of the nearest returned centroid; the centroids are the member means whenever the
    steps converged, which on descriptors with any cluster structure takes a few steps (each step
    is two passes over ``x``). ``x`` may be any row container that slices (a memmap, a scores
    file's rows).

    Returns
    -------
    labels : ndarray of int of shape (n,)
    centroids : ndarray of shape (k, d)
    """
    labels = nearest_centroid(x, centres, chunk=chunk)
    means = member_means(x, labels, centres, chunk=chunk)
    for _ in range(max_steps):
        moved = nearest_centroid(x, means, chunk=chunk)
        if np.array_equal(moved, labels):
            return labels, means
        labels = moved
        means = member_means(x, labels, means, chunk=chunk)
    # Unsettled (structureless descriptors, or float32 near-ties): the labels of the last centroids.
    return nearest_centroid(x, means, chunk=chunk), means


def member_means(x, labels, fallback, *, chunk: int = 65536) -> np.ndarray:
    """The mean of each cluster's members: the centroids of Eqs. 6-7 after the final assignment.

    MiniBatchKMeans's centres are running averages over mini-batches; with poorly separated
    clusters they differ from the means of the rows finally assigned to them (cluster importance up
    to 5 % off). CU and CD are defined on the member means, so those are what :func:`kmeans`
    returns. A cluster left without members keeps its ``fallback`` centre.

    Parameters
    ----------
    x : ndarray of shape (n, d)
    labels : ndarray of int of shape (n,)
    fallback : ndarray of shape (k, d)

    Returns
    -------
    ndarray of float64 of shape (k, d)
    """
    fallback = np.asarray(fallback)
    k = len(fallback)
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, fallback.shape[1]), dtype=np.float64)
    for start in range(0, len(x), chunk):  # chunked: no float64 copy of a pool of millions of rows
        one_hot = labels[start:start + chunk][None, :] == np.arange(k)[:, None]
        sums += one_hot.astype(np.float64) @ np.asarray(x[start:start + chunk], dtype=np.float64)
    means = np.asarray(fallback, dtype=np.float64).copy()
    means[counts > 0] = sums[counts > 0] / counts[counts > 0, None]
    return means


def nearest_centroid(x, centroids, *, chunk: int = 65536) -> np.ndarray:
    """Index of the nearest centroid (squared Euclidean) of each row, by chunked matrix products.

    Parameters
    ----------
    x : ndarray of shape (n, d)
    centroids : ndarray of shape (k, d)

    Returns
    -------
    ndarray of int of shape (n,)
    """
    # Work in the descriptors' precision (float32 from the network): a float64 copy of a pool of
    # millions of rows would cost more than the product itself, and argmin needs no more.
    dtype = np.result_type(np.asarray(x[:1]).dtype, np.float32)
    c = np.asarray(centroids, dtype=dtype)
    c_sq = np.einsum("ij,ij->i", c, c)
    out = np.empty(len(x), dtype=np.intp)
    for start in range(0, len(x), chunk):
        block = np.asarray(x[start:start + chunk], dtype=dtype)
        # ||x||^2 is the same for every centroid, so it does not change the argmin.
        out[start:start + chunk] = np.argmin(c_sq[None, :] - 2.0 * (block @ c.T), axis=1)
    return out


def allocate_quotas(weights, total: int, capacities=None) -> np.ndarray:
    """Split ``total`` into integer quotas proportional to ``weights`` (largest remainder).

    The quotas sum to ``total`` exactly. A group whose capacity is below its share keeps its
    capacity and the surplus is shared among the others in proportion to their weights, repeatedly,
    until every quota fits.

    Parameters
    ----------
    weights : ndarray of shape (k,)
        Non-negative; all zero means equal shares.
    total : int
        Non-negative, at most ``capacities.sum()``.
    capacities : ndarray of int of shape (k,), optional
        Upper bound of each quota (e.g. the number of candidates in a cluster).

    Returns
    -------
    ndarray of int of shape (k,)
    """
    w = np.asarray(weights, dtype=np.float64)
    k = len(w)
    if w.ndim != 1 or k == 0 or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"Quota weights must be a non-empty 1-D array of finite values >= 0. Got {w!r} instead.")
    cap = np.full(k, total, dtype=np.int64) if capacities is None else np.asarray(capacities, dtype=np.int64)
    if cap.shape != (k,):
        raise ValueError(f"capacities must have shape ({k},), one per weight. Got {cap.shape} instead.")
    if not 0 <= total <= cap.sum():
        raise ValueError(f"Cannot allocate {total} among groups holding {int(cap.sum())} in total.")
    quotas = np.zeros(k, dtype=np.int64)
    open_ = cap > 0
    remaining = int(total)
    while remaining > 0:
        ww = np.where(open_, w, 0.0)
        if ww.sum() <= 0:
            # Only zero-weight groups still have room: share equally among them.
            ww = open_.astype(np.float64)
        share = remaining * ww / ww.sum()
        base = np.floor(share).astype(np.int64)
        extra = remaining - base.sum()
        # Ties in the remainder go to the lower index (stable sort), for reproducibility.
        order = np.argsort(-(share - base), kind="stable")
        base[order[:extra]] += 1
        room = cap - quotas
        take = np.minimum(base, room)
        quotas += take
        remaining -= int(take.sum())
        open_ = (cap - quotas) > 0
    return quotas


def _label(criterion) -> str:
    return criterion if isinstance(criterion, str) else getattr(criterion, "__name__", repr(criterion))


def _resolve(criterion) -> Callable:
    if isinstance(criterion, str):
        from focal_al.registry import get_criterion

        return get_criterion(criterion)
    if not callable(criterion):
        raise TypeError(f"A criterion is a registered name or a callable. Got {criterion!r} instead.")
    return criterion


def _as_scores(values, who: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        found = np.asarray(values).dtype if not isinstance(values, np.ndarray) else values.dtype
        raise ValueError(
            f"{who} must return numbers (a float array, higher = ask first). Got values of dtype {found} "
            f"that are not numbers: {err}."
        ) from err


def evaluate_criterion(criterion, scores, candidates, rng) -> np.ndarray:
    """Run an instance criterion on ``candidates`` and check its output.

    Parameters
    ----------
    criterion : str or callable
        Registered name or function ``(scores, candidates, rng) -> ndarray (len(candidates),)``.
    scores : PoolScores
    candidates : ndarray of int of shape (m,)
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of float64 of shape (m,)
    """
    func = _resolve(criterion)
    values = _as_scores(func(scores, candidates, rng), f"Criterion {_label(criterion)!r}")
    if values.shape != (len(candidates),):
        raise ValueError(
            f"Criterion {_label(criterion)!r} returned shape {values.shape}; expected ({len(candidates)},), "
            "one score per candidate."
        )
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"Criterion {_label(criterion)!r} produced {int(bad.sum())} non-finite scores (first at candidate "
            f"{int(candidates[np.argmax(bad)])}); check the pool scores it reads (NaN probabilities or descriptors?)."
        )
    return values


def _cluster_values(criterion, descriptors, labels, centroids) -> np.ndarray:
    func = _resolve(criterion)
    k = len(centroids)
    values = _as_scores(func(descriptors, labels, centroids), f"Cluster criterion {_label(criterion)!r}")
    if values.shape != (k,):
        raise ValueError(f"Cluster criterion {_label(criterion)!r} returned shape {values.shape}; expected ({k},).")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(
            f"Cluster criterion {_label(criterion)!r} must return finite values >= 0. Got {values!r} instead."
        )
    return values


def _normalise(values: np.ndarray) -> np.ndarray:
    total = values.sum()
    # All-zero (e.g. every cluster a single point): no cluster is preferred.
    return values / total if total > 0 else np.full(len(values), 1.0 / len(values))


def cluster_importance(
    descriptors,
    labels,
    centroids,
    *,
    lam: float = 0.5,
    uncertainty="cu",
    diversity="cd",
    normalize: str | None = "sum",
) -> np.ndarray:
    """Cluster importance, Eq. 8: ``I_c = lam * CU_c + (1 - lam) * CD_c``, normalised to sum 1.

    Parameters
    ----------
    descriptors : ndarray of shape (n, d)
    labels : ndarray of int of shape (n,)
    centroids : ndarray of shape (k, d)
    lam : float
        Weight of cluster uncertainty, in [0, 1].
    uncertainty, diversity : str or callable
        Cluster criteria (registered names or functions), by default CU (Eq. 6) and CD (Eq. 7).
    normalize : {"sum", None}
        ``"sum"`` (default, our decision): scale CU and CD each to sum 1 over the clusters before
        mixing, because they live on different scales. ``None``: mix the raw values, as the paper
        writes Eq. 8. Either way the mixture is then normalised to sum 1 (equal shares if all zero).

    Returns
    -------
    ndarray of float64 of shape (k,)
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"The 'lam' parameter must be in [0, 1]. Got {lam!r} instead.")
    if normalize not in ("sum", None):
        raise ValueError(f"The 'normalize' parameter must be 'sum' or None. Got {normalize!r} instead.")
    cu = _cluster_values(uncertainty, descriptors, labels, centroids)
    cd = _cluster_values(diversity, descriptors, labels, centroids)
    if normalize == "sum":
        cu, cd = _normalise(cu), _normalise(cd)
    return _normalise(lam * cu + (1.0 - lam) * cd)


def double_ranking(
    scores,
    candidates,
    n_instances: int,
    *,
    n_candidates: int,
    cluster_labels,
    importance,
    rank_criterion="iu",
    diversity_criterion="id",
    rng: np.random.Generator,
    refined_scores: Callable | None = None,
    selection: str = "top",
    beta: float = 1.0,
    temperature: float = 1.0,
) -> np.ndarray:
    """Algorithm 1, cluster-instance double ranking.

    Per cluster c: quotas ``T_c`` and ``Q_c`` from ``importance`` by largest remainder (a cluster
    with fewer candidates passes its surplus to the others; ``Q_c >= T_c``); keep the top ``Q_c``
    candidates by ``rank_criterion`` (IU), score those by ``diversity_criterion`` computed over that
    refined set (S, Eq. 5), take the top ``T_c`` (``selection="top"``, the paper's Algorithm 1) or
    sample ``T_c`` of them by :func:`stochastic_top` (stochastic batch acquisition).

    Parameters
    ----------
    scores : PoolScores
        Scores of the whole pool.
    candidates : ndarray of int of shape (m,)
        Pool indices that may be chosen.
    n_instances : int
        T, the number of indices returned.
    n_candidates : int
        Q, the number kept by the first ranking, ``T <= Q`` (clipped to m).
    cluster_labels : ndarray of int of shape (m,)
        Cluster of each candidate, in ``0 .. k-1``.
    importance : ndarray of shape (k,)
        Cluster importance (non-negative, normalised here).
    rank_criterion, diversity_criterion : str or callable
        Instance criteria, by registry name or as functions.
    rng : numpy.random.Generator
    refined_scores : callable, optional
        ``refined_scores(refined) -> PoolScores`` of exactly the pool indices ``refined`` (shape
        (q_c,)), in that order. When given, the diversity criterion reads it (with candidates
        ``0 .. q_c - 1``) instead of ``scores``, so a caller whose descriptors do not fit in memory
        (:mod:`focal_al.streaming`) loads only the refined candidates'. The values, and so the
        selection, are the same either way.
    selection : {"top", "power", "softmax", "softrank"}
        How the ``T_c`` patches are taken from the refined set: the highest S (``"top"``), or
        sampled with probability growing with S (the ``mode`` of :func:`stochastic_top`).
    beta, temperature : float
        Parameters of the stochastic modes (see :func:`stochastic_top`); unused with ``"top"``.

    Returns
    -------
    ndarray of int of shape (n_instances,)
        Pool indices, unique, from ``candidates``; cluster by cluster, best (or first drawn) first.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"The 'selection' parameter must be one of {SELECTIONS}. Got {selection!r} instead.")
    if selection != "top":
        # Checked before any criterion runs, so a bad value fails at once rather than per cluster.
        _check_positive(beta, "beta", allow_zero=True)
        _check_positive(temperature, "temperature", allow_zero=False)
    candidates = np.asarray(candidates, dtype=np.intp)
    labels = np.asarray(cluster_labels)
    if labels.shape != candidates.shape:
        raise ValueError(
            f"cluster_labels must have one entry per candidate ({len(candidates)}). Got shape {labels.shape} instead."
        )
    t = check_n_instances(n_instances, len(candidates))
    q = int(min(max(int(n_candidates), t), len(candidates)))
    importance = np.asarray(importance, dtype=np.float64)
    k = len(importance)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"cluster_labels must lie in [0, {k}) (one importance per cluster).")
    members = [np.flatnonzero(labels == c) for c in range(k)]
    sizes = np.array([len(m) for m in members])
    t_c = allocate_quotas(_normalise(importance), t, sizes)
    q_c = np.maximum(allocate_quotas(_normalise(importance), q, sizes), t_c)
    chosen = []
    for c in range(k):
        if t_c[c] == 0:
            continue
        cluster = candidates[members[c]]
        uncertainty = evaluate_criterion(rank_criterion, scores, cluster, rng)
        refined = cluster[top_rank(uncertainty, int(q_c[c]))]
        if refined_scores is None:
            reweighted = evaluate_criterion(diversity_criterion, scores, refined, rng)
        else:
            reweighted = evaluate_criterion(diversity_criterion, refined_scores(refined), np.arange(len(refined)), rng)
        if selection == "top":
            picked = top_rank(reweighted, int(t_c[c]))
        else:
            picked = stochastic_top(reweighted, int(t_c[c]), rng, mode=selection, beta=beta, temperature=temperature)
        chosen.append(refined[picked])
    return np.concatenate(chosen).astype(np.intp)
