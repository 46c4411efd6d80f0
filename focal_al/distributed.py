"""Scoring a pool on a Dask cluster: one network pass over the store, split by index ranges.

The scheduler process saves the round's weights to a safetensors file and allocates the round's
scores file (:mod:`focal_al.scores_file`) under a temporary name. Each worker opens the
:class:`~focal_al.store.PatchStore` by path, rebuilds the network from an unfitted clone of the
estimator plus the safetensors weights, scores its range of patches with
:meth:`SegmentationNet.score_pool <focal_al.estimator.SegmentationNet.score_pool>` (the
single-process code path) and writes the rows into the scores file itself; only row counts travel
back. When every range is written the file is moved into place with :func:`os.replace`.

Every path (store, weights, scores file) must be on a filesystem all workers see. Ranges are whole
multiples of the batch size, so each batch holds the same patches as in a single-process pass and
the scores are those of single-process scoring with the same weights. Dask's nanny starts worker
processes with ``OMP_NUM_THREADS=1``, so torch in a worker uses one thread per worker thread.
"""
from __future__ import annotations

import contextlib
import numbers
import os
from pathlib import Path

from focal_al.scores_file import ScoresFile, _allocate, _check_destination, _publishing, _write_rows

__all__ = ["connect", "load_safetensors_weights", "save_safetensors_weights", "score_pool_distributed"]


def save_safetensors_weights(net, path):
    """Save a fitted net's weights (``state_dict``) to a safetensors file, atomically.

    Parameters
    ----------
    net : SegmentationNet
        Initialised or fitted.
    path : str or path-like
    """
    net.check_is_fitted()
    net.save_weights(path)


def load_safetensors_weights(net, path):
    """Load safetensors weights into a net (initialising it first if needed).

    Parameters
    ----------
    net : SegmentationNet
    path : str or path-like
        Written by :func:`save_safetensors_weights` for a net of the same architecture.

    Returns
    -------
    net : SegmentationNet
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file '{path}' does not exist; expected a weights file (safetensors).")
    return net.load_weights(path)


@contextlib.contextmanager
def connect(client=None, *, n_workers=2, threads_per_worker=1):
    """A ``dask.distributed.Client``: the one given, one connected to an address, or a LocalCluster.

    Parameters
    ----------
    client : None, str or dask.distributed.Client
        ``None``: start an embedded ``LocalCluster`` (worker processes) and close it afterwards.
        A scheduler address such as ``"tcp://host:8786"``: connect, and disconnect afterwards.
        A ``Client``: use it as is (it stays open).
    n_workers, threads_per_worker : int
        Size of the embedded ``LocalCluster``.

    Yields
    ------
    dask.distributed.Client
    """
    from dask.distributed import Client, LocalCluster

    if isinstance(client, Client):
        yield client
        return
    if isinstance(client, (str, os.PathLike)):
        try:
            own = Client(os.fspath(client), timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(
                f"Could not connect to the Dask scheduler at {os.fspath(client)!r} ({exc}); start one with "
                f"'dask scheduler' and workers with 'dask worker {os.fspath(client)}', or pass client=None "
                f"for a local cluster."
            ) from exc
        with own:
            yield own
        return
    if client is not None:
        raise TypeError(
            f"The 'client' parameter must be None, a scheduler address string or a dask.distributed.Client. "
            f"Got {type(client).__name__} instead."
        )
    for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"The '{name}' parameter must be an int >= 1. Got {value!r} instead.")
    import dask

    # The nanny's default environment sets MALLOC_TRIM_THRESHOLD_, which turns off glibc's dynamic
    # mmap threshold: every large torch buffer is then mapped and unmapped per batch, and CPU
    # inference ran 3x slower in the workers (measured, benchmarks/bench_distributed.py).
    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                               dashboard_address=":0")
    with cluster, Client(cluster) as own:
        yield own


def _score_range(start, stop, *, blueprint, weights_path, store_path, scores_tmp, offsets, patch_batch):
    """Worker task: score patches ``start:stop`` of the store and write their rows into the scores file."""
    from focal_al.store import PatchStore

    net = load_safetensors_weights(blueprint, weights_path)
    with PatchStore(store_path) as store:
        scores = net.score_pool(store.patches[start:stop], batch_size=patch_batch)
    _write_rows(scores_tmp, offsets, start, scores)
    return stop - start


def _check_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"The '{name}' parameter of score_pool_distributed must be an int >= {low}. Got {value!r} instead.")
    return int(value)


def score_pool_distributed(
    net,
    store,
    scores_path,
    *,
    client=None,
    n_workers=2,
    chunk_size=8192,
    batch_size=None,
    weights_path=None,
    overwrite=False,
):
    """Score every patch of a store on a Dask cluster and write a per-round scores file.

    Parameters
    ----------
    net : SegmentationNet
        Fitted (or initialised) for this round.
    store : PatchStore or str or path-like
        The pool; workers open it by path.
    scores_path : str or path-like
        The scores file to write (HDF5, :class:`~focal_al.scores_file.ScoresFile`); it appears only
        once every patch is scored.
    client : None, str or dask.distributed.Client, default=None
        Where to run (see :func:`connect`): ``None`` starts a ``LocalCluster`` of ``n_workers``
        single-threaded worker processes for this call; an address such as ``"tcp://host:8786"``
        or a ``Client`` scales out.
    n_workers : int, default=2
        Workers of the embedded ``LocalCluster`` (ignored when ``client`` is given).
    chunk_size : int, default=8192
        Patches per task, rounded down to a multiple of the batch size (at least one batch).
    batch_size : int, optional
        Patches per forward pass; defaults to ``net.batch_size``.
    weights_path : str or path-like, optional
        Where to save the round's weights (safetensors) for the workers; defaults to
        ``scores_path`` with the suffix ``.safetensors``. The file is kept: it records the weights
        the scores came from.
    overwrite : bool, default=False
        Replace existing files at ``scores_path`` and ``weights_path``.

    Returns
    -------
    ScoresFile
        ``entropy``, ``margin``, ``least_confidence`` (N,) and ``descriptors`` (N, d), row ``i``
        for patch ``i`` of the store; the values ``net.score_pool(store.patches)`` gives in one
        process with the same weights and batch size (up to the last float32 bits where the
        worker's torch uses another thread count or device).
    """
    from sklearn.base import clone

    from focal_al.store import PatchStore

    net.check_is_fitted()
    store = store if isinstance(store, PatchStore) else PatchStore(store)
    scores_path = _check_destination(scores_path, overwrite)
    weights_path = Path(weights_path) if weights_path is not None else scores_path.with_suffix(".safetensors")
    if weights_path.exists() and not overwrite:
        raise FileExistsError(f"Weights file '{weights_path}' already exists; pass overwrite=True to replace it.")
    for output, what in ((scores_path, "scores file"), (weights_path, "weights file")):
        if output.resolve() == store.path.resolve():
            raise ValueError(f"The {what} '{output}' would replace the input PatchStore '{store.path}'; choose "
                             "another output name.")
    batch_size = _check_int("batch_size", net.batch_size if batch_size is None else batch_size)
    chunk_size = _check_int("chunk_size", chunk_size)
    # Whole batches per task: each forward pass then sees the same patches as a single-process pass.
    chunk_size = max(batch_size, chunk_size // batch_size * batch_size)
    n = len(store)
    if n == 0:
        raise ValueError(f"PatchStore '{store.path}' holds no patches; there is nothing to score.")

    # One patch through the network gives the descriptor dimension for the file's layout.
    d = net.score_pool(store.patches[:1]).descriptors.shape[1]
    # The workers read the weights from a hidden file that becomes weights_path only with the scores:
    # a failed or killed run leaves no weights file to block its rerun (which removes the hidden one).
    partial = weights_path.with_name(f".{weights_path.name}.partial")
    partial.unlink(missing_ok=True)
    save_safetensors_weights(net, partial)
    blueprint = clone(net)
    try:
        scores = _score_into(scores_path, store, n, d, blueprint, partial, weights_path, chunk_size, batch_size,
                             client, n_workers)
        os.replace(partial, weights_path)
    finally:
        partial.unlink(missing_ok=True)
    return scores


def _score_into(scores_path, store, n, d, blueprint, weights_read, weights_recorded, chunk_size, batch_size, client,
                n_workers):
    """Score the store on the workers into ``scores_path`` (published atomically)."""
    weights_path = weights_read
    with _publishing(scores_path) as tmp:
        offsets = _allocate(tmp, n, d, {"store": os.fspath(store.path.resolve()),
                                        "weights": os.fspath(Path(weights_recorded).resolve()),
                                        "batch_size": batch_size})
        starts = list(range(0, n, chunk_size))
        stops = [min(n, s + chunk_size) for s in starts]
        with connect(client, n_workers=n_workers) as dask_client:
            futures = dask_client.map(
                _score_range, starts, stops, blueprint=blueprint, weights_path=os.fspath(weights_path.resolve()),
                store_path=os.fspath(store.path.resolve()), scores_tmp=os.fspath(Path(tmp).resolve()),
                # Not 'batch_size': Client.map has a parameter of that name.
                offsets=offsets, patch_batch=batch_size, pure=False,
            )
            try:
                written = sum(dask_client.gather(futures))
            finally:
                dask_client.cancel(futures)
        if written != n:
            raise RuntimeError(f"Workers scored {written} patches of {n}; the scores file is incomplete.")
    return ScoresFile(scores_path)
