"""Built-in query strategies of focal-al (entry point ``focal_al.strategies: builtin``).

Table 1 of the paper (strategies 1-7 and the random baselines), then strategies from the
active-learning literature: stochastic batch acquisition, core-set, TypiClust and
foreground-aware random patches. Each is a selector
``select(scores, n_instances, candidates, rng, **params) -> ndarray of int``
returning ``n_instances`` unique pool indices taken from ``candidates``. Criteria are looked up by
registry name, so a user's criterion replaces a built-in one through a parameter (for example
``focannot`` with ``uncertainty="my-criterion"``).
"""
from __future__ import annotations

import numpy as np

from focal_al.registry import register_strategy
from focal_al.selection import (
    check_n_instances,
    cluster_importance,
    double_ranking,
    evaluate_criterion,
    kmeans,
    stochastic_top,
    top_rank,
)


def _prepare(scores, n_instances, candidates):
    candidates = np.asarray(candidates)
    if candidates.ndim != 1 or (candidates.size and not np.issubdtype(candidates.dtype, np.integer)):
        raise TypeError(f"candidates must be a 1-D array of pool indices. Got {candidates!r} instead.")
    candidates = candidates.astype(np.intp)
    if len(np.unique(candidates)) != len(candidates):
        raise ValueError("candidates must not contain duplicate indices.")
    if candidates.size and (candidates.min() < 0 or candidates.max() >= len(scores)):
        raise ValueError(f"candidates must be pool indices in [0, {len(scores)}).")
    return check_n_instances(n_instances, len(candidates)), candidates


def _n_candidates(n_instances, n_available, candidate_ratio):
    if not candidate_ratio >= 1:
        raise ValueError(f"The 'candidate_ratio' parameter (Q / T) must be >= 1. Got {candidate_ratio!r} instead.")
    return min(n_available, max(n_instances, int(round(candidate_ratio * n_instances))))


def _uniform_choice(candidates, n, rng):
    return np.sort(rng.choice(candidates, size=n, replace=False)).astype(np.intp)


def _top_by(criterion, scores, n, candidates, rng):
    return candidates[top_rank(evaluate_criterion(criterion, scores, candidates, rng), n)]


# ----------------------------------------------------------------------------------- patch level


@register_strategy("random-patch", level="patch")
def random_patch(scores, n_instances, candidates, rng):
    """Random patches, uniformly without replacement (the baseline every patch strategy must beat)."""
    n, candidates = _prepare(scores, n_instances, candidates)
    return _uniform_choice(candidates, n, rng)


@register_strategy("iu", level="patch")
def iu(scores, n_instances, candidates, rng, *, uncertainty="iu"):
    """Top-T patches by instance uncertainty (Table 1, strategy 4)."""
    n, candidates = _prepare(scores, n_instances, candidates)
    return _top_by(uncertainty, scores, n, candidates, rng)


@register_strategy("iu-id", level="patch")
def iu_id(scores, n_instances, candidates, rng, *, uncertainty="iu", diversity="id", candidate_ratio=2.0):
    """Top-Q patches by IU, then top-T by the diversity-reweighted score S (Table 1, strategy 5)."""
    n, candidates = _prepare(scores, n_instances, candidates)
    refined = _top_by(uncertainty, scores, _n_candidates(n, len(candidates), candidate_ratio), candidates, rng)
    return _top_by(diversity, scores, n, refined, rng)


def _candidate_rows(array, candidates):
    # The whole pool is the common first-round case: a view, not a copy of (N, d) descriptors.
    if len(candidates) == len(array) and np.array_equal(candidates, np.arange(len(array))):
        return array
    return array[candidates]


def _clustered(scores, n, candidates, rng, *, k, candidate_ratio, uncertainty, diversity, importance_of,
               selection="top", beta=1.0, temperature=1.0):
    x = _candidate_rows(scores.descriptors, candidates)
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > len(candidates):
        # Near the end of a pool fewer candidates than clusters remain: each is its own cluster.
        k = len(candidates)
    labels, centroids = kmeans(x, k, rng=rng)
    importance = importance_of(x, labels, centroids)
    return double_ranking(
        scores,
        candidates,
        n,
        n_candidates=_n_candidates(n, len(candidates), candidate_ratio),
        cluster_labels=labels,
        importance=importance,
        rank_criterion=uncertainty,
        diversity_criterion=diversity,
        rng=rng,
        selection=selection,
        beta=beta,
        temperature=temperature,
    )


@register_strategy("cluster-equal", level="patch")
def cluster_equal(scores, n_instances, candidates, rng, *, k=3, candidate_ratio=2.0, uncertainty="iu", diversity="id"):
    """IU then IU+ID inside k clusters with equal quotas (Table 1, strategy 6)."""
    n, candidates = _prepare(scores, n_instances, candidates)
    return _clustered(
        scores, n, candidates, rng, k=k, candidate_ratio=candidate_ratio, uncertainty=uncertainty,
        diversity=diversity, importance_of=lambda x, labels, c: np.full(len(c), 1.0 / len(c)),
    )


@register_strategy("focannot", level="patch")
def focannot(
    scores,
    n_instances,
    candidates,
    rng,
    *,
    k=3,
    lam=0.5,
    candidate_ratio=2.0,
    normalize="sum",
    uncertainty="iu",
    diversity="id",
    cluster_uncertainty="cu",
    cluster_diversity="cd",
    selection="top",
    beta=1.0,
    temperature=1.0,
):
    """FocAnnot cluster-instance double ranking, Algorithm 1: IU+ID+CU+CD (Table 1, strategy 7).

    ``selection="top"`` (default) takes each cluster's ``T_c`` highest S (Eq. 5), as the paper;
    ``"power"``, ``"softmax"`` or ``"softrank"`` sample them from the refined ``Q_c`` set with
    probability growing with S (stochastic batch acquisition, Kirsch et al., TMLR 2023), with
    exponent ``beta`` (power, softrank) or ``temperature`` (softmax): see
    :func:`focal_al.selection.stochastic_top`.
    """
    n, candidates = _prepare(scores, n_instances, candidates)

    def importance_of(x, labels, centroids):
        return cluster_importance(
            x, labels, centroids, lam=lam, uncertainty=cluster_uncertainty, diversity=cluster_diversity,
            normalize=normalize,
        )

    return _clustered(
        scores, n, candidates, rng, k=k, candidate_ratio=candidate_ratio, uncertainty=uncertainty,
        diversity=diversity, importance_of=importance_of, selection=selection, beta=beta, temperature=temperature,
    )


# ------------------------------------------------------------------- from the literature, patch level


@register_strategy("stochastic", level="patch")
def stochastic(scores, n_instances, candidates, rng, *, uncertainty="iu", mode="power", beta=1.0, temperature=1.0):
    """Stochastic batch acquisition: T patches sampled with probability growing with a criterion's score.

    Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron and Gal, "Stochastic Batch
    Acquisition: A Simple Baseline for Deep Active Learning", TMLR 2023. Instead of the top-T
    scores (which pile up near-duplicates), draw T candidates without replacement with probability
    proportional to ``score ** beta`` (``mode="power"``; scores with negative values are shifted
    by their minimum first), ``exp(score / temperature)`` (``"softmax"``) or ``rank ** -beta``
    (``"softrank"``): see :func:`focal_al.selection.stochastic_top`.

    Parameters
    ----------
    uncertainty : str or callable
        Any instance criterion, by registry name (``"iu"``, ``"margin"``, a plugin's).
    mode : {"power", "softmax", "softrank"}
    beta : float
        Exponent of ``"power"`` and ``"softrank"`` (``>= 0``; 0 is uniform random).
    temperature : float
        Temperature of ``"softmax"`` (``> 0``).
    """
    n, candidates = _prepare(scores, n_instances, candidates)
    values = evaluate_criterion(uncertainty, scores, candidates, rng)
    return candidates[stochastic_top(values, n, rng, mode=mode, beta=beta, temperature=temperature)]


def _centred_rows(scores, candidates):
    """The candidates' descriptors as a contiguous float32 array, minus their mean.

    Centring keeps ``|x|^2 - 2 x.c + |c|^2`` accurate in float32 (the cancellation error grows
    with the norms, and network descriptors share a large common offset).
    """
    x = np.array(_candidate_rows(scores.descriptors, candidates), dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"The descriptors must be 2-D (n_samples, d). Got shape {x.shape} instead.")
    x -= x.mean(axis=0, dtype=np.float64).astype(np.float32)
    return x


def _farthest_first(x, n, first) -> np.ndarray:
    """Greedy k-center: start at ``first``, then repeatedly the row farthest from every row taken.

    One matrix-vector product per pick updates each row's squared distance to its nearest taken
    row: O(n * m * d) time and O(m) extra memory, never an m x m matrix.

    Parameters
    ----------
    x : ndarray of float32 of shape (m, d)
    n : int
        Number of rows taken, ``1 <= n <= m``.
    first : int
        The first row.

    Returns
    -------
    ndarray of int of shape (n,)
        Row positions, in the order taken.
    """
    sq = np.einsum("ij,ij->i", x, x)
    nearest = np.full(len(x), np.inf, dtype=np.float32)
    chosen = np.empty(n, dtype=np.intp)
    current = int(first)
    for i in range(n):
        chosen[i] = current
        distance = x @ x[current]
        distance *= -2.0
        distance += sq
        distance += sq[current]
        np.minimum(nearest, distance, out=nearest)
        # Rounding can leave a taken row a hair above 0; it must never be taken twice.
        nearest[current] = -np.inf
        current = int(np.argmax(nearest))
    return chosen


@register_strategy("coreset", level="patch")
def coreset(scores, n_instances, candidates, rng):
    """Core-set: greedy k-center (farthest-first traversal) on the descriptors, seeded by a random candidate.

    Sener and Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach",
    ICLR 2018. The paper starts the traversal from the labelled set; a strategy sees only the
    candidates, so the first patch is a uniformly random candidate and each next one is the
    candidate farthest (Euclidean, on ``scores.descriptors``) from all patches taken so far. The
    robust (outlier-tolerant) MIP variant of the paper is not implemented. Cost: O(T N d) time,
    O(N) extra memory.
    """
    from threadpoolctl import threadpool_limits

    n, candidates = _prepare(scores, n_instances, candidates)
    x = _centred_rows(scores, candidates)
    # Each pick is one memory-bound matrix-vector product: extra BLAS threads only add start-up
    # and, on a loaded machine, oversubscription (20 s vs 11 s at N = 1e5, d = 128, T = 2500, measured).
    with threadpool_limits(limits=1):
        return candidates[_farthest_first(x, n, rng.integers(len(candidates)))]


def _typicality_order(x, members, n_neighbors):
    """Members of one cluster, most typical first (smallest mean distance to their nearest members)."""
    from sklearn.neighbors import NearestNeighbors

    if len(members) == 1:
        return members
    k = min(n_neighbors, len(members) - 1)
    points = x[members]
    # k + 1 neighbours: each point is its own nearest neighbour (distance 0), dropped below.
    # Exact neighbours by brute force: trees do not help in descriptor dimensions (d >= 16).
    distances, _ = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(points).kneighbors(points)
    mean_distance = distances[:, 1:].mean(axis=1)
    return members[np.lexsort((members, mean_distance))]


@register_strategy("badge", level="patch")
def badge(scores, n_instances, candidates, rng):
    """BADGE: k-means++ seeding on per-patch gradient embeddings (uncertain and diverse at once).

    Ash et al., "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds", ICLR
    2020. The embedding is the gradient of the loss with respect to the last layer under the
    network's own labels, pooled over the patch's pixels: ``scores.extras["gradient_embedding"]``
    of shape (n_samples, e), which ``SegmentationNet(score_gradients=True)`` returns (``focal-al
    bench --gradients``). Its norm grows with uncertainty; k-means++ seeding (scikit-learn's
    ``kmeans_plusplus``, seeded from ``rng``) picks T far-apart embeddings with probability
    proportional to the squared distance to those already picked.
    """
    from sklearn.cluster import kmeans_plusplus
    from threadpoolctl import threadpool_limits

    n, candidates = _prepare(scores, n_instances, candidates)
    if "gradient_embedding" not in scores.extras:
        raise KeyError(
            "Strategy 'badge' reads scores.extras['gradient_embedding'], which SegmentationNet(score_gradients=True) "
            f"returns (focal-al bench --gradients); these PoolScores have extras {sorted(scores.extras)}."
        )
    x = np.asarray(scores.extras["gradient_embedding"], dtype=np.float64)[candidates]
    if n == len(candidates):
        return np.sort(candidates)
    with threadpool_limits(limits=1):
        _, picked = kmeans_plusplus(x, n_clusters=n, random_state=int(rng.integers(2**31 - 1)), n_local_trials=1)
    picked = np.unique(picked)
    if len(picked) < n:  # identical embeddings can be drawn twice: top up at random
        rest = np.setdiff1d(np.arange(len(candidates)), picked)
        picked = np.concatenate([picked, rng.choice(rest, size=n - len(picked), replace=False)])
    return candidates[picked].astype(np.intp)


@register_strategy("typiclust", level="patch")
def typiclust(scores, n_instances, candidates, rng, *, n_neighbors=20, max_clusters=500):
    """TypiClust: k-means into T clusters, then the most typical patch of each cluster.

    Hacohen, Dekel and Weinshall, "Active Learning on a Budget: Opposite Strategies Suit High and
    Low Budgets", ICML 2022. Cluster the candidates' descriptors into ``min(T, max_clusters,
    n_candidates)`` clusters (:func:`focal_al.selection.kmeans`, one initialisation); typicality of
    a patch is the inverse of its mean Euclidean distance to its ``K = min(n_neighbors, size - 1)``
    nearest neighbours in its cluster (scikit-learn ``NearestNeighbors``). Each cluster gives its
    most typical patch, largest clusters first; when there are fewer (non-empty) clusters than T,
    the picks go round the clusters again with their next most typical patch. ``max_clusters=500``
    is the cap of the authors' implementation; it keeps k-means affordable on large pools.

    Parameters
    ----------
    n_neighbors : int
        K of the typicality, ``>= 1`` (paper: 20).
    max_clusters : int
        Upper bound on the number of clusters, ``>= 1``.
    """
    from threadpoolctl import threadpool_limits

    n, candidates = _prepare(scores, n_instances, candidates)
    for name, value in (("n_neighbors", n_neighbors), ("max_clusters", max_clusters)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"The {name!r} parameter of typiclust must be an int >= 1. Got {value!r} instead.")
    x = _centred_rows(scores, candidates)
    k = min(n, int(max_clusters), len(candidates))
    labels, _ = kmeans(x, k, rng=rng, n_init=1)
    sizes = np.bincount(labels, minlength=k)
    picks, ranks, order_of_cluster = [], [], np.empty(k, dtype=np.intp)
    # Largest clusters first (ties: lower cluster id): TypiClust prefers dense, well-supported regions.
    order_of_cluster[np.lexsort((np.arange(k), -sizes))] = np.arange(k)
    # Hundreds of small neighbour searches: thread start-up per call made each 20x slower (measured).
    with threadpool_limits(limits=1):
        for c in np.flatnonzero(sizes):
            ordered = _typicality_order(x, np.flatnonzero(labels == c), n_neighbors)
            picks.append(ordered)
            ranks.append(np.stack([np.arange(len(ordered)), np.full(len(ordered), order_of_cluster[c])]))
    picks, ranks = np.concatenate(picks), np.concatenate(ranks, axis=1)
    # Round by round over the clusters: every cluster's most typical patch before any second one.
    first = np.lexsort((ranks[1], ranks[0]))[:n]
    return candidates[picks[first]]


@register_strategy("random-foreground", level="patch")
def random_foreground(scores, n_instances, candidates, rng, *, foreground_share=0.5):
    """Foreground-aware random patches: at least a share of the T contain foreground (an oracle-assisted baseline).

    The baseline of nnActive (Lüth et al., "nnActive: A Framework for Evaluation of Active Learning
    in 3D Biomedical Segmentation", 2025), which no method there beat reliably. It reads
    ``scores.extras["foreground_fraction"]``, of shape (n_samples,): the share of each patch's
    pixels that are foreground. In a simulation that is the ground truth, which a real annotation
    round does not know: this is an oracle-assisted baseline, a bar for the other strategies, not
    a strategy for new images. ``ceil(foreground_share * T)`` patches (or every foreground
    candidate when fewer) are drawn uniformly among the candidates containing foreground
    (fraction > 0); the rest uniformly among all remaining candidates.

    Parameters
    ----------
    foreground_share : float
        Minimum share of the query drawn from patches with foreground, in [0, 1].
    """
    return _foreground_aware("random-foreground", "foreground_fraction", "from the ground truth", scores,
                             n_instances, candidates, rng, foreground_share)


@register_strategy("random-predicted-foreground", level="patch")
def random_predicted_foreground(scores, n_instances, candidates, rng, *, foreground_share=0.5):
    """Foreground-aware random patches by the network's predicted foreground (no oracle).

    :func:`random_foreground` with the share of each patch's pixels that the network predicts as
    foreground (``scores.extras["predicted_foreground_fraction"]``, which ``SegmentationNet.score_pool``
    returns) in place of the ground truth: the realistic version of nnActive's baseline, usable in
    a real annotation round.

    Parameters
    ----------
    foreground_share : float
        Minimum share of the query drawn from patches with predicted foreground, in [0, 1].
    """
    return _foreground_aware("random-predicted-foreground", "predicted_foreground_fraction",
                             "predicted by the network (SegmentationNet.score_pool)", scores, n_instances, candidates,
                             rng, foreground_share)


def _foreground_aware(name, key, source, scores, n_instances, candidates, rng, foreground_share):
    n, candidates = _prepare(scores, n_instances, candidates)
    share_ok = isinstance(foreground_share, (int, float, np.integer, np.floating))
    share_ok = share_ok and not isinstance(foreground_share, bool)
    if not share_ok or not 0.0 <= foreground_share <= 1.0:
        raise ValueError(
            f"The 'foreground_share' parameter of {name} must be a float in [0, 1]. "
            f"Got {foreground_share!r} instead."
        )
    if key not in scores.extras:
        raise KeyError(
            f"Strategy {name!r} reads scores.extras[{key!r}] (per-patch share of foreground "
            f"pixels, shape (n_samples,), {source}); these PoolScores have extras {sorted(scores.extras)}."
        )
    fraction = np.asarray(scores.extras[key], dtype=np.float64)
    if fraction.shape != (len(scores),) or not np.all((fraction >= 0) & (fraction <= 1)):
        raise ValueError(
            f"scores.extras[{key!r}] must have shape ({len(scores)},) with values in [0, 1]. "
            f"Got shape {fraction.shape} instead, or values outside [0, 1]."
        )
    with_foreground = candidates[fraction[candidates] > 0]
    n_foreground = min(int(np.ceil(foreground_share * n)), len(with_foreground))
    first = rng.choice(with_foreground, size=n_foreground, replace=False)
    rest = np.setdiff1d(candidates, first, assume_unique=True)
    return np.sort(np.concatenate([first, rng.choice(rest, size=n - n_foreground, replace=False)])).astype(np.intp)


@register_strategy("focannot-streaming", level="patch")
def focannot_streaming(scores, n_instances, candidates, rng, *, k=3, lam=0.5, candidate_ratio=2.0, normalize="sum"):
    """FocAnnot (Algorithm 1) over a scores file larger than memory, for pools of 10^6-10^7 patches.

    The same selection as ``focannot`` (MiniBatchKMeans fitted by ``partial_fit`` on blocks of
    rows, CU and CD on the member means, IU then ID), reading the scores a block at a time
    (:func:`focal_al.streaming.streaming_focannot`). Given a :class:`focal_al.streaming.FileScores`
    (what a distributed scorer returns) it picks among its rows, the learner's unlabelled
    candidates only; given in-memory :class:`~focal_al.scores.PoolScores` it runs the same
    algorithm through a temporary scores file.
    """
    import tempfile
    from pathlib import Path

    from focal_al.scores_file import write_scores
    from focal_al.streaming import FileScores, streaming_focannot

    n, candidates = _prepare(scores, n_instances, candidates)
    seed = int(rng.integers(2**31 - 1))
    if isinstance(scores, FileScores):
        picked = streaming_focannot(scores.file, n, candidates=scores.rows[candidates], k=k, lam=lam,
                                    candidate_ratio=candidate_ratio, normalize=normalize, random_state=seed)
        return np.searchsorted(scores.rows, picked).astype(np.intp)
    with tempfile.TemporaryDirectory() as tmp:
        file = write_scores(Path(tmp) / "scores.h5", scores)
        return np.asarray(streaming_focannot(file, n, candidates=candidates, k=k, lam=lam,
                                             candidate_ratio=candidate_ratio, normalize=normalize,
                                             random_state=seed), dtype=np.intp)


@register_strategy("clasp-pe", level="patch")
def clasp_pe(scores, n_instances, candidates, rng, *, class_share=0.66, beta=None, beta_range=(1.0, 100.0),
             progress=None):
    """ClaSP PE: class-stratified, scheduled power-noised predictive entropy (Lüth et al. 2026).

    As nnActive runs it (``class_power_pe66_exp``): ``class_share`` of the T patches are split
    evenly among the foreground classes, each ranked by its class-specific entropy
    (``scores.extras["class_entropy"][:, c]``: the pixel entropy times the class's probability,
    averaged over the patch); the rest by the patch's mean pixel entropy. Every ranking is
    power-noised: ``log(score) + Gumbel(0, 1 / beta)``, i.e. sampling proportional to
    ``score ** beta`` without replacement (Kirsch et al., TMLR 2023), so a query spreads beyond
    one uncertain region. The noise decays over the rounds: ``beta`` grows exponentially from
    ``beta_range[0]`` at the first query to ``beta_range[1]`` at the last (nnActive: 1 to 100 over
    its query steps), here along ``progress``, the share of the annotation budget spent between
    the initial set and the budget, which the bench passes with every query. A patch is taken once.

    Parameters
    ----------
    class_share : float
        Share of the query drawn per foreground class, in [0, 1] (nnActive: 0.66).
    beta : float, optional
        A fixed inverse temperature (> 0) instead of the schedule (nnActive's unscheduled
        ``class_power_pe66``: 1).
    beta_range : (float, float)
        ``beta`` at the first and at the last query of the schedule.
    progress : float in [0, 1], optional
        Where the run is in its budget; without it (a project has no budget) ``beta_range[0]``.
    """
    n, candidates = _prepare(scores, n_instances, candidates)
    if isinstance(class_share, bool) or not isinstance(class_share, (int, float)) or not 0 <= class_share <= 1:
        raise ValueError(f"The 'class_share' parameter of clasp-pe must be a float in [0, 1]. Got {class_share!r} instead.")
    if beta is not None and (isinstance(beta, bool) or not isinstance(beta, (int, float))
                             or not (beta > 0 and np.isfinite(beta))):
        raise ValueError(f"The 'beta' parameter of clasp-pe must be None or a finite float > 0. Got {beta!r} instead.")
    if (not isinstance(beta_range, (tuple, list)) or len(beta_range) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0 and np.isfinite(b)
                       for b in beta_range)):
        raise ValueError(f"The 'beta_range' parameter of clasp-pe must be two finite floats > 0. Got {beta_range!r} "
                         "instead.")
    if progress is not None and (isinstance(progress, bool) or not isinstance(progress, (int, float))
                                 or not 0 <= progress <= 1):
        raise ValueError(f"The 'progress' parameter of clasp-pe must be None or a float in [0, 1]. Got {progress!r} "
                         "instead.")
    if beta is None:
        low, high = float(beta_range[0]), float(beta_range[1])
        beta = low * (high / low) ** (0.0 if progress is None else float(progress))
    if "class_entropy" not in scores.extras:
        raise KeyError("Strategy 'clasp-pe' reads scores.extras['class_entropy'] (n_samples, n_classes), which "
                       f"SegmentationNet.score_pool returns; these PoolScores have extras {sorted(scores.extras)}.")
    per_class = np.asarray(scores.extras["class_entropy"], dtype=np.float64)[candidates]
    rankings = [per_class[:, c] for c in range(1, per_class.shape[1])]
    quotas = [int(class_share * n) // max(len(rankings), 1)] * len(rankings)
    rankings.append(np.asarray(scores.entropy, dtype=np.float64)[candidates])
    quotas.append(n - sum(quotas))
    taken = np.zeros(len(candidates), dtype=bool)
    for ranking, quota in zip(rankings, quotas):
        noised = np.log(np.maximum(ranking, np.finfo(np.float64).tiny)) + rng.gumbel(0.0, 1.0 / beta, len(ranking))
        noised[taken] = -np.inf
        taken[np.argsort(-noised, kind="stable")[:quota]] = True
    return np.sort(candidates[taken]).astype(np.intp)


# ----------------------------------------------------------------------------------- image level


@register_strategy("random-image", level="image")
def random_image(scores, n_instances, candidates, rng):
    """Random whole images, uniformly without replacement (the image-level baseline)."""
    n, candidates = _prepare(scores, n_instances, candidates)
    return _uniform_choice(candidates, n, rng)


@register_strategy("image-iu", level="image")
def image_iu(scores, n_instances, candidates, rng, *, uncertainty="iu"):
    """Top images by mean pixel entropy (Table 1, strategy 1)."""
    n, candidates = _prepare(scores, n_instances, candidates)
    return _top_by(uncertainty, scores, n, candidates, rng)


def _unit_rows(x):
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero descriptor is similar to nothing (cosine 0) rather than NaN.
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


@register_strategy("sa", level="image")
def suggestive_annotation(scores, n_instances, candidates, rng, *, n_uncertain=None, uncertainty="disagreement"):
    """Suggestive Annotation: top-K_u images by disagreement, then greedy max-cover of cosine similarity.

    Representativeness ``F(S_a, S_u) = sum_{x in S_u} max_{s in S_a} cos(s, x)`` with ``S_u`` all
    candidate images; ``K_u = n_uncertain`` (default ``2 * n_instances``, as SA's 16 per 8).
    """
    n, candidates = _prepare(scores, n_instances, candidates)
    k_u = 2 * n if n_uncertain is None else int(n_uncertain)
    if k_u < n:
        raise ValueError(f"The 'n_uncertain' parameter must be >= n_instances ({n}). Got {n_uncertain!r} instead.")
    uncertain = _top_by(uncertainty, scores, min(k_u, len(candidates)), candidates, rng)
    unit = _unit_rows(scores.descriptors[candidates])
    similarity = _unit_rows(scores.descriptors[uncertain]) @ unit.T
    # Cosines are >= -1, so -1 is the cover of the empty set; gains are then exact marginal gains.
    cover = np.full(len(candidates), -1.0)
    available = np.ones(len(uncertain), dtype=bool)
    chosen = []
    for _ in range(n):
        gains = np.maximum(similarity, cover).sum(axis=1) - cover.sum()
        gains[~available] = -np.inf
        best = int(np.argmax(gains))
        chosen.append(uncertain[best])
        available[best] = False
        np.maximum(cover, similarity[best], out=cover)
    return np.asarray(chosen, dtype=np.intp)
