"""The per-round scores file: a pool's :class:`~focal_al.scores.PoolScores` on disk (HDF5).

Layout (format ``focal_al.ScoresFile``, version 1)::

    /entropy           (N,)   float32   mean pixel entropy (IU, Eq. 2)
    /margin            (N,)   float32   mean margin between the two most probable classes
    /least_confidence  (N,)   float32   mean of 1 - max_j p_j
    /descriptors       (N, d) float32   channel-wise mean of the bottleneck
    attributes: format, format_version, n_patches, d, plus free-form provenance (store, weights)

Every dataset is contiguous, unfiltered and allocated when the file is created, so that writers in
other processes (Dask workers, :mod:`focal_al.distributed`) can fill disjoint row ranges through
:class:`numpy.memmap` at the offsets HDF5 reports, without any HDF5 write (HDF5 itself does not
support concurrent writers), and readers can map it without a copy. A file is filled under a
temporary name and moved into place with :func:`os.replace` only when complete.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np

from focal_al.scores import PoolScores

__all__ = ["ScoresFile", "write_scores"]

FORMAT = "focal_al.ScoresFile"
FORMAT_VERSION = 1
_FIELDS = ("entropy", "margin", "least_confidence", "descriptors")
_CHUNK = 65536  # rows per block when copying arrays into a file


def _allocate(path, n, d, attrs):
    """Create a file at ``path`` with every dataset allocated (not filled); return their byte offsets."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    # Early allocation gives every dataset its final offset now; never filling keeps creation O(1)
    # (the space is a hole in the file until a writer fills it).
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    offsets = {}
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["n_patches"] = int(n)
        f.attrs["d"] = int(d)
        for key, value in attrs.items():
            f.attrs[key] = value
        for name in _FIELDS:
            shape = (int(n), int(d)) if name == "descriptors" else (int(n),)
            space = h5py.h5s.create_simple(shape)
            dset = h5py.h5d.create(f.id, name.encode(), h5py.h5t.NATIVE_FLOAT, space, dcpl=dcpl)
            offsets[name] = (int(dset.get_offset()), shape)
    return offsets


def _write_rows(path, offsets, start, scores):
    """Write ``scores`` into rows ``start:start + len(scores)`` of an allocated file, by memmap."""
    for name in _FIELDS:
        offset, shape = offsets[name]
        values = np.asarray(getattr(scores, name), dtype=np.float32)
        if len(values) == 0:
            continue
        out = np.memmap(path, dtype=np.float32, mode="r+", offset=offset, shape=shape)
        out[start:start + len(values)] = values
        out.flush()
        del out


def _fsync(path):
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _check_destination(path, overwrite):
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"Scores file '{path}' already exists; pass overwrite=True to replace it.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"The directory of scores file '{path}' does not exist: '{path.parent}'.")
    return path


def _temp_name(path):
    from focal_al.files import readable, remove_stale_temporaries

    remove_stale_temporaries(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return readable(name)


@contextlib.contextmanager
def _publishing(path):
    """Yield a temporary file next to ``path``; on success fsync it and ``os.replace`` it onto
    ``path``, on any error (an interrupt included) remove it: ``path`` is never half-written."""
    tmp = _temp_name(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_scores(path, scores, *, overwrite=False, attrs=None):
    """Write pool scores to a scores file, atomically (temporary name, then ``os.replace``).

    Parameters
    ----------
    path : str or path-like
    scores : PoolScores or ScoresFile
        ``entropy``, ``margin``, ``least_confidence`` of shape (N,) and ``descriptors`` (N, d);
        arrays may be memmaps or HDF5 datasets (they are copied in blocks of rows).
    overwrite : bool, default=False
    attrs : mapping of str to scalar or str, optional
        Provenance recorded as file attributes.

    Returns
    -------
    ScoresFile
    """
    path = _check_destination(path, overwrite)
    n, d = np.shape(scores.descriptors)
    with _publishing(path) as tmp:
        offsets = _allocate(tmp, n, d, dict(attrs or {}))
        for start in range(0, n, _CHUNK):
            block = PoolScores(**{name: np.asarray(getattr(scores, name)[start:start + _CHUNK]) for name in _FIELDS})
            _write_rows(tmp, offsets, start, block)
    return ScoresFile(path)


class ScoresFile:
    """Read-only view of a scores file: arrays as memmaps, blocks of rows read on demand.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`write_scores` or :func:`focal_al.distributed.score_pool_distributed`.

    Attributes
    ----------
    path : Path
    n_patches, d : int
    attrs : dict
        Provenance attributes (for example the store and weights files it was computed from).
    """

    def __init__(self, path):
        self.path = Path(path)
        expected = "a focal-al scores file (write_scores / score_pool_distributed)"
        if not self.path.is_file():
            raise FileNotFoundError(f"Scores file '{self.path}' does not exist; expected {expected}.")
        if not h5py.is_hdf5(self.path):
            raise ValueError(f"'{self.path}' is not an HDF5 file; expected {expected}.")
        try:
            with h5py.File(self.path, "r") as f:
                marker = f.attrs.get("format")
                marker = marker.decode() if isinstance(marker, bytes) else marker
                if marker != FORMAT or int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
                    raise ValueError(
                        f"attributes format={marker!r}, format_version={f.attrs.get('format_version')!r}; "
                        f"expected {FORMAT!r} version {FORMAT_VERSION}"
                    )
                self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
                self.n_patches, self.d = int(f.attrs["n_patches"]), int(f.attrs["d"])
                self._offsets = {}
                for name in _FIELDS:
                    dset = f[name]
                    offset = dset.id.get_offset()
                    if offset is None or dset.dtype != np.float32:
                        raise ValueError(f"dataset '{name}' is not an allocated float32 array")
                    self._offsets[name] = (int(offset), tuple(dset.shape))
        except (KeyError, OSError, ValueError) as exc:
            raise ValueError(f"'{self.path}' is a damaged or foreign scores file ({exc}); expected {expected}.") from exc
        size = self.path.stat().st_size
        for name, (offset, shape) in self._offsets.items():
            end = offset + 4 * int(np.prod(shape))
            if end > size:
                raise ValueError(f"'{self.path}' is truncated: '{name}' ends at byte {end}, the file has {size}.")

    def __len__(self):
        return self.n_patches

    def _map(self, name, *, random_access=False):
        offset, shape = self._offsets[name]
        if 0 in shape:
            return np.zeros(shape, dtype=np.float32)
        if not random_access:
            return np.memmap(self.path, dtype=np.float32, mode="r", offset=offset, shape=shape)
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        with open(self.path, "rb") as fh:
            mapping = mmap.mmap(fh.fileno(), offset + 4 * int(np.prod(shape)) - start, access=mmap.ACCESS_READ,
                                offset=start)
        # Without this the kernel reads ahead around every touched row of a file not yet in the
        # page cache: a gather of scattered rows (ID on the Q candidates) would read most of it.
        mapping.madvise(mmap.MADV_RANDOM)
        return np.frombuffer(mapping, dtype=np.float32, count=int(np.prod(shape)), offset=offset - start).reshape(shape)

    @property
    def entropy(self):
        return self._map("entropy")

    @property
    def margin(self):
        return self._map("margin")

    @property
    def least_confidence(self):
        return self._map("least_confidence")

    @property
    def descriptors(self):
        return self._map("descriptors")

    def read(self, name, start, stop):
        """Rows ``start:stop`` of one array, read into memory (a private copy, not a mapping).

        Streaming passes read through here, so memory holds one block at a time, however large
        the file (pages of a memory map would stay resident until the kernel reclaims them).

        Returns
        -------
        ndarray of float32 of shape (stop - start,) or (stop - start, d)
        """
        offset, shape = self._offsets[name]
        width = shape[1] if len(shape) == 2 else 1
        start, stop = max(0, int(start)), min(shape[0], int(stop))
        count = max(0, stop - start) * width
        with open(self.path, "rb") as fh:
            fh.seek(offset + 4 * start * width)
            out = np.fromfile(fh, dtype=np.float32, count=count)
        return out.reshape((-1, width) if len(shape) == 2 else (-1,))

    def read_rows(self, name, indices, *, max_gap=16):
        """Rows ``indices`` of one array, in that order, read into memory (a private copy).

        Sorted indices are read in runs (rows closer than ``max_gap`` share one read), so a
        scattered selection costs about one read per run, and nothing of the file is mapped.

        Parameters
        ----------
        name : {"entropy", "margin", "least_confidence", "descriptors"}
        indices : ndarray of int of shape (m,)
        max_gap : int, default=16
            Largest gap (in rows) read through rather than starting a new read.

        Returns
        -------
        ndarray of float32 of shape (m,) or (m, d)
        """
        offset, shape = self._offsets[name]
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= shape[0]):
            raise IndexError(f"Row indices of '{self.path}' must lie in [0, {shape[0]}).")
        width = shape[1] if len(shape) == 2 else 1
        order = np.argsort(indices, kind="stable")
        rows = indices[order]
        out = np.empty((len(rows), width), dtype=np.float32)
        breaks = np.flatnonzero(np.diff(rows) > max_gap) + 1
        with open(self.path, "rb") as fh:
            for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
                first, last = int(rows[a]), int(rows[b - 1])
                fh.seek(offset + 4 * first * width)
                span = np.fromfile(fh, dtype=np.float32, count=(last - first + 1) * width).reshape(-1, width)
                out[a:b] = span[rows[a:b] - first]
        result = np.empty_like(out)
        result[order] = out
        return result if len(shape) == 2 else result[:, 0]

    def pool_scores(self):
        """The scores as :class:`PoolScores`: the three (N,) arrays in memory, descriptors mapped.

        The descriptors are a read-only memory map without read-ahead: criteria that read the
        descriptors of a few candidates (ID on the Q refined candidates) touch only those rows.
        """
        return PoolScores(
            entropy=np.array(self.entropy),
            margin=np.array(self.margin),
            least_confidence=np.array(self.least_confidence),
            descriptors=self._map("descriptors", random_access=True),
        )

    def __repr__(self):
        return f"ScoresFile('{self.path}', n_patches={self.n_patches}, d={self.d})"
