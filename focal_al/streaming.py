"""FocAnnot's query over a scores file too large for memory: streaming clustering, then Algorithm 1.

Only clustering needs every descriptor, and it streams: MiniBatchKMeans is initialised on a random
sample of candidates and updated with ``partial_fit`` over blocks of rows read one at a time; the
cluster labels and the cluster criteria (CU, CD) are computed block by block as well. Algorithm 1
then runs unchanged (:func:`focal_al.selection.double_ranking`) on :class:`PoolScores` whose three
per-patch uncertainty arrays are in memory (4 bytes a patch each) and whose descriptors stay in the
file: the first ranking reads uncertainty only, and instance diversity (ID) is given the refined
candidates' descriptors only, read from the file cluster by cluster (``refined_scores``). Memory is
O(N) small arrays plus O(Q d), never O(N d).

Relation to the in-memory ``focannot`` strategy: given the same centroids (``centroids=``) the
selection is identical (same labels, same cluster importance, same double ranking). Clustering from
scratch differs in how the centroids are fitted (``partial_fit`` over blocks vs ``fit`` with
``n_init`` restarts), so on data without a clear cluster structure the clusters, and so the quotas,
can differ; on well-separated clusters both find the same partition.
"""
from __future__ import annotations

import numbers

import numpy as np

from focal_al.scores import PoolScores
from focal_al.scores_file import ScoresFile
from focal_al.selection import assign_clusters, check_n_instances, cluster_importance, double_ranking

__all__ = ["CandidateRows", "FileScores", "stream_kmeans", "streaming_focannot"]


class FileScores:
    """The scores of some pool rows, kept in a scores file larger than memory: what a distributed
    scorer hands :class:`~focal_al.learner.PatchActiveLearner` for the streaming strategies.

    ``len()`` is the number of ``rows`` (the learner's candidates); ``entropy`` and ``margin`` read
    those rows only. The strategy ``focannot-streaming`` selects from ``file`` itself.

    Parameters
    ----------
    file : ScoresFile
        Scores of the whole pool.
    rows : ndarray of int of shape (m,)
        Sorted pool indices these scores stand for.
    """

    def __init__(self, file, rows):
        self.file = file if isinstance(file, ScoresFile) else ScoresFile(file)
        self.rows = np.asarray(rows, dtype=np.intp)

    def __len__(self):
        return len(self.rows)

    @property
    def entropy(self):
        return self.file.read_rows("entropy", self.rows)

    @property
    def margin(self):
        return self.file.read_rows("margin", self.rows)

    def take(self, positions):
        return FileScores(self.file, self.rows[np.asarray(positions, dtype=np.intp)])


class CandidateRows:
    """The descriptors of the candidates, read from a scores file a block of rows at a time.

    Behaves as a read-only array of shape ``(len(candidates), d)`` for slicing (``rows[a:b]``);
    that is all the built-in cluster criteria and :func:`~focal_al.selection.nearest_centroid` do.

    Parameters
    ----------
    scores : ScoresFile
    candidates : ndarray of int of shape (m,)
        Sorted, unique pool indices.
    """

    def __init__(self, scores, candidates):
        self.scores = scores
        self.candidates = np.asarray(candidates, dtype=np.intp)
        self._all = len(self.candidates) == scores.n_patches
        self.shape = (len(self.candidates), scores.d)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self):
        return self.shape[0]

    def take(self, positions):
        """Rows at ``positions`` (into the candidates), in that order, read without a full pass.

        Returns
        -------
        ndarray of float32 of shape (len(positions), d)
        """
        return self.scores.read_rows("descriptors", self.candidates[np.asarray(positions, dtype=np.intp)])

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("CandidateRows supports contiguous slices only (rows[a:b]); it is read block by block.")
        start, stop, _ = key.indices(len(self))
        if stop <= start:
            return np.empty((0, self.shape[1]), dtype=np.float32)
        if self._all:
            return self.scores.read("descriptors", start, stop)
        idx = self.candidates[start:stop]
        # Candidates are most of the pool (the labelled share is small): one contiguous read of the
        # span, then a selection, beats a gather of scattered rows.
        span = self.scores.read("descriptors", idx[0], idx[-1] + 1)
        return span[idx - idx[0]]


def _blocks(n, chunk_size):
    return [(s, min(n, s + chunk_size)) for s in range(0, n, chunk_size)]


def stream_kmeans(rows, k, *, rng, chunk_size=65536, n_epochs=1, batch_size=4096):
    """Centroids of MiniBatchKMeans fitted by ``partial_fit`` over blocks of rows.

    The first step is on a random sample of ``3 * batch_size`` rows (k-means++ initialisation, as
    MiniBatchKMeans's ``init_size``), so the initial centroids do not come from one region of the
    pool; then every block, in a random order per epoch, is one mini-batch step.

    Parameters
    ----------
    rows : CandidateRows or ndarray of shape (m, d)
        Sliceable by contiguous ranges (and, if an array, by an index array).
    k : int
        Number of clusters, ``1 <= k <= m``.
    rng : numpy.random.Generator
        Source of the k-means seed (one draw, as :func:`focal_al.selection.kmeans`), the sample
        and the block order.
    chunk_size : int, default=65536
        Rows per block (each block is one ``partial_fit`` step).
    n_epochs : int, default=1
        Passes over the rows.
    batch_size : int, default=4096
        Sets the initial sample size (``3 * batch_size``).

    Returns
    -------
    centroids : ndarray of shape (k, d)
    """
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    m = len(rows)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= m:
        raise ValueError(f"The 'k' parameter (number of clusters) must be an int in [1, {m}] (the candidates). Got {k!r} instead.")
    if k == 1:
        total = np.zeros(rows.shape[1])
        for a, b in _blocks(m, chunk_size):
            total += rows[a:b].sum(axis=0, dtype=np.float64)
        return (total / m)[None, :]
    seed = int(rng.integers(2**31 - 1))
    model = MiniBatchKMeans(n_clusters=k, n_init=1, batch_size=batch_size, random_state=seed)
    sample = np.sort(rng.choice(m, size=min(m, 3 * batch_size), replace=False))
    init = rows.take(sample) if isinstance(rows, CandidateRows) else np.asarray(rows[sample])
    blocks = _blocks(m, chunk_size)
    with threadpool_limits(limits=1):
        model.partial_fit(init)
        for _ in range(n_epochs):
            for i in rng.permutation(len(blocks)):
                a, b = blocks[i]
                model.partial_fit(rows[a:b])
    return model.cluster_centers_


def streaming_focannot(
    scores,
    n_instances,
    *,
    candidates=None,
    k=3,
    lam=0.5,
    candidate_ratio=2.0,
    normalize="sum",
    uncertainty="iu",
    diversity="id",
    cluster_uncertainty="cu",
    cluster_diversity="cd",
    centroids=None,
    chunk_size=65536,
    n_epochs=1,
    random_state=None,
):
    """Algorithm 1 (the ``focannot`` strategy) over a scores file, in memory O(N + Q d).

    Parameters
    ----------
    scores : ScoresFile or str or path-like
        The round's scores file.
    n_instances : int
        T, the number of patches to query.
    candidates : ndarray of int, optional
        Pool indices that may be chosen (the unlabelled patches); default all. Sorted and made
        unique here.
    k, lam, candidate_ratio, normalize, uncertainty, diversity, cluster_uncertainty, cluster_diversity
        As for the ``focannot`` strategy. ``uncertainty`` must be a per-patch criterion (its value
        for a patch does not depend on the other candidates), as ``iu``, ``margin`` and
        ``least-confidence`` are; it is evaluated on the whole pool's uncertainty arrays.
    centroids : ndarray of shape (k, d), optional
        Cluster centres to use instead of fitting them (for example the previous round's); the
        selection is then exactly that of the in-memory strategy with these centroids.
    chunk_size : int, default=65536
        Rows per block read from the file.
    n_epochs : int, default=1
        Passes of ``partial_fit`` over the candidates.
    random_state : int, numpy.random.Generator or None

    Returns
    -------
    ndarray of int of shape (n_instances,)
        Pool indices, unique, from ``candidates``; cluster by cluster, best first.
    """
    scores = scores if isinstance(scores, ScoresFile) else ScoresFile(scores)
    for name, value in (("chunk_size", chunk_size), ("n_epochs", n_epochs)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"The '{name}' parameter of streaming_focannot must be an int >= 1. Got {value!r} instead.")
    rng = np.random.default_rng(random_state)
    n = scores.n_patches
    if candidates is None:
        candidates = np.arange(n, dtype=np.intp)
    else:
        candidates = np.unique(np.asarray(candidates))
        if candidates.size and (not np.issubdtype(candidates.dtype, np.integer) or candidates[0] < 0 or candidates[-1] >= n):
            raise ValueError(f"The 'candidates' parameter must hold pool indices in [0, {n}) of '{scores.path}'.")
        candidates = candidates.astype(np.intp)
    t = check_n_instances(n_instances, len(candidates))
    if not candidate_ratio >= 1:
        raise ValueError(f"The 'candidate_ratio' parameter (Q / T) must be >= 1. Got {candidate_ratio!r} instead.")
    q = min(len(candidates), max(t, int(round(candidate_ratio * t))))
    rows = CandidateRows(scores, candidates)
    if centroids is None:
        if isinstance(k, numbers.Integral) and not isinstance(k, bool) and k > len(candidates):
            k = len(candidates)  # as the in-memory strategies: each remaining candidate its own cluster
        centroids = stream_kmeans(rows, k, rng=rng, chunk_size=chunk_size, n_epochs=n_epochs)
    else:
        centroids = np.asarray(centroids)
        if centroids.ndim != 2 or centroids.shape[1] != scores.d or not 1 <= len(centroids) <= len(candidates):
            raise ValueError(
                f"The 'centroids' parameter must have shape (k, {scores.d}) with 1 <= k <= {len(candidates)}. "
                f"Got shape {centroids.shape} instead."
            )
    # As the in-memory strategy: assign to the fitted centres, then CU and CD on the member means.
    labels, centroids = assign_clusters(rows, centroids, chunk=chunk_size)
    importance = cluster_importance(
        rows, labels, centroids, lam=lam, uncertainty=cluster_uncertainty, diversity=cluster_diversity,
        normalize=normalize,
    )
    pool = scores.pool_scores()

    def refined_scores(refined):
        return PoolScores(
            entropy=pool.entropy[refined], margin=pool.margin[refined],
            least_confidence=pool.least_confidence[refined], descriptors=scores.read_rows("descriptors", refined),
        )

    return double_ranking(
        pool, candidates, t, n_candidates=q, cluster_labels=labels, importance=importance,
        rank_criterion=uncertainty, diversity_criterion=diversity, rng=rng, refined_scores=refined_scores,
    )
