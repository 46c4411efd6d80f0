"""Built-in query criteria of focal-al (entry point ``focal_al.criteria: builtin``).

Instance criteria: ``criterion(scores, candidates, rng) -> ndarray of shape (len(candidates),)``,
higher = ask first. Cluster criteria: ``criterion(descriptors, labels, centroids) -> ndarray (k,)``,
higher = more important. Pure numpy functions: no torch, no I/O, no mutation.
"""
from __future__ import annotations

import numpy as np

from focal_al.registry import register_criterion
from focal_al.selection import mean_sorted_distance, mean_sq_sorted_distance

# ----------------------------------------------------------------------------- instance criteria


@register_criterion("iu")
def instance_uncertainty(scores, candidates, rng):
    """Instance uncertainty (Eq. 2): mean pixel entropy of each candidate."""
    return np.asarray(scores.entropy, dtype=np.float64)[candidates]


@register_criterion("margin")
def margin(scores, candidates, rng):
    """Margin uncertainty: minus the mean gap between the two most probable classes."""
    return -np.asarray(scores.margin, dtype=np.float64)[candidates]


@register_criterion("least-confidence")
def least_confidence(scores, candidates, rng):
    """Least confidence: mean of 1 - max_j p_j over each candidate's pixels."""
    return np.asarray(scores.least_confidence, dtype=np.float64)[candidates]


@register_criterion("random")
def random_score(scores, candidates, rng):
    """Uniform random scores from the query's generator (the random baseline as a criterion)."""
    return rng.random(len(candidates))


def _extra(scores, candidates, name: str, key: str, source: str) -> np.ndarray:
    """The candidates' values of ``scores.extras[key]``; a clear error names ``source`` when absent."""
    if key not in scores.extras:
        raise KeyError(
            f"Criterion {name!r} reads scores.extras[{key!r}], {source}; these PoolScores have extras "
            f"{sorted(scores.extras)}."
        )
    return np.asarray(scores.extras[key], dtype=np.float64)[candidates]


@register_criterion("disagreement")
def disagreement(scores, candidates, rng):
    """Ensemble disagreement, read from ``scores.extras["disagreement"]`` (Suggestive Annotation)."""
    return _extra(scores, candidates, "disagreement", "disagreement",
                  "the per-sample variance of Suggestive Annotation's ensemble")


@register_criterion("tta")
def tta_disagreement(scores, candidates, rng):
    """Test-time augmentation disagreement over the dihedral views (epistemic; SegmentationNet(score_tta=True))."""
    return _extra(scores, candidates, "tta", "tta_disagreement",
                  "which SegmentationNet(score_tta=True) returns (focal-al bench --tta)")


@register_criterion("bald")
def bald(scores, candidates, rng):
    """BALD: mutual information between prediction and weights over MC-dropout passes (SegmentationNet(mc_samples=T))."""
    return _extra(scores, candidates, "bald", "bald", "which SegmentationNet(mc_samples=T, module__dropout=p) "
                  "returns (focal-al bench --mc-samples T --dropout p)")


@register_criterion("id")
def instance_diversity(scores, candidates, rng):
    """IU reweighted by instance diversity (Eqs. 3-5): H_n times mean W_{n,q} over the other candidates."""
    entropy = np.asarray(scores.entropy, dtype=np.float64)[candidates]
    return entropy * mean_sq_sorted_distance(scores.descriptors[candidates])


@register_criterion("id-rooted")
def instance_diversity_rooted(scores, candidates, rng):
    """As 'id' with the rooted distance sqrt(W_{n,q}) (a true 2-Wasserstein metric), computed by GEMM."""
    entropy = np.asarray(scores.entropy, dtype=np.float64)[candidates]
    return entropy * mean_sorted_distance(scores.descriptors[candidates], p=2, root=True)


@register_criterion("id-w1")
def instance_diversity_w1(scores, candidates, rng):
    """As 'id' with the 1-Wasserstein cost sum_m |z_n,m - z_q,m| between sorted descriptors."""
    entropy = np.asarray(scores.entropy, dtype=np.float64)[candidates]
    return entropy * mean_sorted_distance(scores.descriptors[candidates], p=1)


# ------------------------------------------------------------------------------ cluster criteria


def _centroid_sq_distances(centroids):
    c = np.asarray(centroids, dtype=np.float64)
    diff = c[:, None, :] - c[None, :, :]
    return np.einsum("ijk,ijk->ij", diff, diff)


@register_criterion("cu", kind="cluster")
def cluster_uncertainty(descriptors, labels, centroids):
    """Cluster uncertainty (Eq. 6): mean squared distance of a cluster's descriptors to its centroid."""
    labels = np.asarray(labels)
    # Differences in the descriptors' own precision (float32 from the network), sums in float64:
    # a float64 copy of millions of descriptors costs more than it buys.
    dtype = np.result_type(np.asarray(descriptors[:1]).dtype, np.float32)
    c = np.asarray(centroids, dtype=dtype)
    k = len(c)
    totals = np.zeros(k)
    for start in range(0, len(labels), 65536):
        block_labels = labels[start:start + 65536]
        block = np.asarray(descriptors[start:start + 65536], dtype=dtype) - c[block_labels]
        totals += np.bincount(block_labels, weights=np.einsum("ij,ij->i", block, block), minlength=k)
    counts = np.bincount(labels, minlength=k)
    # An empty cluster has no spread.
    return np.divide(totals, counts, out=np.zeros(k), where=counts > 0)


@register_criterion("cd", kind="cluster")
def cluster_diversity(descriptors, labels, centroids):
    """Cluster diversity (Eq. 7): squared distances of a centroid to the other centroids, summed, over k-1."""
    k = len(centroids)
    if k == 1:
        return np.zeros(1)
    return _centroid_sq_distances(centroids).sum(axis=1) / (k - 1)


@register_criterion("uniform", kind="cluster")
def uniform(descriptors, labels, centroids):
    """Equal importance for every cluster (Table 1, strategy 6)."""
    return np.ones(len(centroids))
