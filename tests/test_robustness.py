"""Robustness: hostile or careless inputs get a clear refusal, and what the tools write stays consistent."""
import numpy as np
import pytest

from focal_al.selection import kmeans


@pytest.mark.parametrize("seed", range(30))
def test_kmeans_labels_are_the_nearest_returned_centroid(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(20, 200)), int(rng.integers(2, 6))
    x = rng.normal(size=(n, int(rng.integers(2, 9)))).astype(np.float32)  # poorly separated on purpose
    labels, centroids = kmeans(x, k, rng=np.random.default_rng(seed))
    distances = ((x[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(axis=2)
    own = distances[np.arange(n), labels]
    assert np.all(own <= distances.min(axis=1) + 1e-9)
    for c in np.unique(labels):
        np.testing.assert_allclose(centroids[c], x[labels == c].mean(axis=0), rtol=1e-5, atol=1e-6)
