"""Built-in query strategies of focal-al (entry point ``focal_al.strategies: builtin``), Table 1.

Each is a selector ``select(scores, n_instances, candidates, rng, **params) -> ndarray of int``
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


def _clustered(scores, n, candidates, rng, *, k, candidate_ratio, uncertainty, diversity, importance_of):
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
):
    """FocAnnot cluster-instance double ranking, Algorithm 1: IU+ID+CU+CD (Table 1, strategy 7)."""
    n, candidates = _prepare(scores, n_instances, candidates)

    def importance_of(x, labels, centroids):
        return cluster_importance(
            x, labels, centroids, lam=lam, uncertainty=cluster_uncertainty, diversity=cluster_diversity,
            normalize=normalize,
        )

    return _clustered(
        scores, n, candidates, rng, k=k, candidate_ratio=candidate_ratio, uncertainty=uncertainty,
        diversity=diversity, importance_of=importance_of,
    )


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
