"""PatchStore: an HDF5 file of partitioned image and label patches, read as a zero-copy memmap.

Layout of the file (format ``focal_al.PatchStore``, version 1)::

    /patches       (N, C, l, l) uint8, contiguous, uncompressed  image patches, channels first
    /labels        (N, l, l)    uint8, contiguous, uncompressed  class labels (0, 1; 255 = ignore)
    /coords        (N, 2)       int64   (y, x) top-left corner in the image
    /image_index   (N,)         int64   index of the source image of each patch
    /image_names   (n_images,)  str
    /image_shapes  (n_images, 2) int64  (H, W) of each source image before padding
    /coords_level0      (N, 2)      int64    optional: (y, x) in full-resolution (level-0) pixels
    /image_downsamples  (n_images,) float64  optional: level-0 pixels per store pixel, per image
    attributes: format, format_version, patch_size, overlap, stride, allow_padding, n_channels

The two optional datasets are written for images read from a lower pyramid level of a whole-slide
image (:mod:`focal_al.slides`), so that exports land where slide viewers (QuPath) expect them.
Without them the store's pixels are level-0 pixels: ``coords_level0`` equals ``coords`` and every
downsample is 1. Readers of version 1 that predate them ignore them.

The two big datasets are contiguous and unfiltered so that they can be mapped with
:class:`numpy.memmap` at the offset HDF5 reports: random batches then cost a memory copy, not an
HDF5 read (h5py fancy indexing is about 2.5x slower and needs sorted, unique indices).

Files are written to a temporary name in the destination directory and moved into place with
:func:`os.replace` only once complete, so a reader never sees a half-written store.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterable, Sized
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from focal_al.patches import _check_overlap, _check_patch_size, _grid, _mirror_pad, _stride

__all__ = ["ImagePatches", "PatchStore"]

FORMAT = "focal_al.PatchStore"
FORMAT_VERSION = 1
_COPY_BLOCK = 1024  # patches per block when moving staged patches into the final file


def _contiguous_offset(dset):
    """Byte offset of an unfiltered, contiguous dataset, or None if it cannot be memory-mapped."""
    plist = dset.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters() != 0:
        return None
    return dset.id.get_offset()


def _as_image(image, i, n_channels):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"Image {i} passed to PatchStore.build must be a uint8 array of shape (H, W, C) or "
            f"(H, W). Got {image.dtype} array of shape {image.shape} instead. Load images with "
            f"focal_al.datasets (load_glas, load_folder) to convert them."
        )
    if n_channels is not None and image.shape[2] != n_channels:
        raise ValueError(
            f"Image {i} passed to PatchStore.build has {image.shape[2]} channels; the first image "
            f"has {n_channels}. All images of a store must have the same number of channels."
        )
    return image


def _as_labels(labels, i, shape):
    labels = np.asarray(labels)
    if labels.shape != shape:
        raise ValueError(
            f"Labels {i} passed to PatchStore.build have shape {labels.shape}; the image has shape "
            f"{shape}. Labels must be (H, W) class labels of the same size as their image."
        )
    if labels.dtype.kind not in "biu":
        raise ValueError(
            f"Labels {i} passed to PatchStore.build must be integer class labels (0, 1, 255 = "
            f"ignore). Got dtype {labels.dtype} instead."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(
            f"Labels {i} passed to PatchStore.build must lie in [0, 255] (0, 1, 255 = ignore). "
            f"Got values in [{labels.min()}, {labels.max()}]; for instance masks pass "
            f"(mask > 0).astype(np.uint8)."
        )
    return labels.astype(np.uint8, copy=False)


class ImagePatches(NamedTuple):
    """One image's patches, produced chunk by chunk, for :meth:`PatchStore.build_from_patches`.

    For images too large to hold whole (whole-slide images): the caller cuts the patches and
    hands them over a chunk at a time, so memory is bounded by one chunk.

    Attributes
    ----------
    name : str
        Unique image name.
    shape : tuple of (int, int)
        ``(H, W)`` of the image in store pixels.
    chunks : iterable of (coords, patches, labels)
        ``coords`` ndarray of shape (k, 2) int, ``(y, x)`` top-left corners in store pixels;
        ``patches`` ndarray of shape (k, C, l, l) uint8, channels first; ``labels`` ndarray of
        shape (k, l, l) uint8 (0, 1, 255 = ignore). Chunks may be empty (k = 0).
    downsample : float, default=1.0
        Level-0 pixels per store pixel (the pyramid level's downsample factor).
    """

    name: str
    shape: tuple
    chunks: Iterable
    downsample: float = 1.0


def _check_destination(path, overwrite):
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"PatchStore file '{path}' already exists; pass overwrite=True to replace it."
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"The directory of PatchStore file '{path}' does not exist: '{path.parent}'."
        )


@contextlib.contextmanager
def _atomic_h5(path, overwrite, caller):
    """Yield an HDF5 file open for writing at a temporary name next to ``path``; on success flush,
    fsync and move it to ``path`` with ``os.replace``; on any error remove it."""
    from focal_al.files import readable, remove_stale_temporaries

    _check_destination(path, overwrite)
    remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    readable(tmp_name)
    try:
        with h5py.File(tmp_name, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            yield f
            f.flush()
        with open(tmp_name, "rb+") as fh:
            os.fsync(fh.fileno())
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"PatchStore file '{path}' appeared while {caller} was writing it; pass "
                f"overwrite=True to replace it."
            )
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def _staging_file(path):
    from focal_al.files import readable

    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".staging.tmp", dir=path.parent)
    os.close(fd)
    return readable(name)


class PatchStore:
    """Read-only view of a patch file built by :meth:`PatchStore.build`.

    Opening validates the file and reads the small per-patch metadata; the patch arrays are mapped
    lazily, per process, on first access. A store pickles as its path only, so it can be handed to
    worker processes (h5py handles cannot be pickled).

    Parameters
    ----------
    path : str or path-like
        A file written by :meth:`PatchStore.build`.

    Attributes
    ----------
    patches : numpy.memmap of shape (n_patches, C, l, l), dtype uint8
        Image patches, channels first; read-only; any index order or fancy indexing works.
    labels : numpy.memmap of shape (n_patches, l, l), dtype uint8
        Class-label patches (0 = background, 1 = foreground, 255 = ignore).
    coords : ndarray of shape (n_patches, 2), dtype int64
        ``(y, x)`` top-left corner of each patch in its image.
    image_index : ndarray of shape (n_patches,), dtype int64
        Index into ``image_names`` of each patch's image.
    image_names : list of str
    image_shapes : ndarray of shape (n_images, 2), dtype int64
        ``(H, W)`` of the source images (before any mirror padding).
    coords_level0 : ndarray of shape (n_patches, 2), dtype int64
        ``(y, x)`` top-left corner of each patch in full-resolution (level-0) pixels of its image;
        equal to ``coords`` unless the store was read from a lower pyramid level of a slide.
    image_downsamples : ndarray of shape (n_images,), dtype float64
        Level-0 pixels per store pixel of each image (1 unless read from a pyramid level).
    patch_size, stride : int
    overlap : float
    allow_padding : bool
    """

    def __init__(self, path):
        self.path = Path(path)
        self._patches = None
        self._labels = None
        self._read_metadata()

    # --- opening ---------------------------------------------------------------------------
    def _read_metadata(self):
        path = self.path
        expected = "a focal-al PatchStore file written by PatchStore.build"
        if not path.exists():
            raise FileNotFoundError(
                f"PatchStore file '{path}' does not exist; expected {expected}."
            )
        if not path.is_file():
            raise ValueError(f"PatchStore path '{path}' is not a file; expected {expected}.")
        if not h5py.is_hdf5(path):
            raise ValueError(f"'{path}' is not an HDF5 file; expected {expected}.")
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise ValueError(
                f"'{path}' could not be opened as HDF5 (truncated or corrupt file?): {exc}. "
                f"Expected {expected}; rebuild it."
            ) from exc
        with f:
            marker = f.attrs.get("format")
            if isinstance(marker, bytes):
                marker = marker.decode()
            if marker != FORMAT:
                raise ValueError(
                    f"'{path}' is an HDF5 file but not a focal-al PatchStore (attribute "
                    f"'format' is {marker!r}, expected {FORMAT!r})."
                )
            version = int(f.attrs.get("format_version", -1))
            if version != FORMAT_VERSION:
                raise ValueError(
                    f"'{path}' is a PatchStore of format version {version}; this version of "
                    f"focal-al reads version {FORMAT_VERSION}. Rebuild the store."
                )
            try:
                self.patch_size = int(f.attrs["patch_size"])
                self.overlap = float(f.attrs["overlap"])
                self.stride = int(f.attrs["stride"])
                self.allow_padding = bool(f.attrs["allow_padding"])
                self.coords = f["coords"][()]
                self.image_index = f["image_index"][()]
                self.image_shapes = f["image_shapes"][()]
                self.image_names = [
                    n.decode() if isinstance(n, bytes) else str(n) for n in f["image_names"][()]
                ]
                self.coords_level0 = (
                    f["coords_level0"][()] if "coords_level0" in f else self.coords
                )
                self.image_downsamples = (
                    f["image_downsamples"][()]
                    if "image_downsamples" in f
                    else np.ones(len(self.image_names))
                )
                self._layout = {}
                for name in ("patches", "labels"):
                    dset = f[name]
                    offset = _contiguous_offset(dset)
                    if offset is None or dset.dtype != np.uint8:
                        raise ValueError(
                            f"dataset '{name}' is not a contiguous, uncompressed uint8 array"
                        )
                    self._layout[name] = (int(offset), tuple(dset.shape))
            except (KeyError, OSError, ValueError) as exc:
                raise ValueError(
                    f"'{path}' is a damaged PatchStore ({exc}); expected {expected}. Rebuild it."
                ) from exc
        size = path.stat().st_size
        for name, (offset, shape) in self._layout.items():
            if offset + int(np.prod(shape)) > size:
                raise ValueError(
                    f"'{path}' is truncated: dataset '{name}' ends at byte "
                    f"{offset + int(np.prod(shape))} but the file has {size} bytes. Rebuild it."
                )

    def _map(self, name):
        offset, shape = self._layout[name]
        if 0 in shape:
            return np.zeros(shape, dtype=np.uint8)
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=offset, shape=shape)

    @property
    def patches(self):
        if self._patches is None:
            self._patches = self._map("patches")
        return self._patches

    @property
    def labels(self):
        if self._labels is None:
            self._labels = self._map("labels")
        return self._labels

    @property
    def n_images(self):
        """Number of source images."""
        return len(self.image_names)

    @property
    def n_channels(self):
        """Number of image channels ``C``."""
        return self._layout["patches"][1][1]

    def __len__(self):
        return len(self.image_index)

    def unlabelled_rows(self, *, block: int = 4096) -> np.ndarray:
        """Indices of the patches with no labelled pixel (every label 255), read ``block`` patches at a time."""
        parts = [start + np.flatnonzero((np.asarray(self.labels[start:start + block]) == 255)
                                        .reshape(min(block, len(self) - start), -1).all(axis=1))
                 for start in range(0, len(self), block)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.intp)

    def image_patches(self, image):
        """Indices of the patches of one image.

        Parameters
        ----------
        image : int or str
            Image index or name.

        Returns
        -------
        indices : ndarray of shape (n_patches_of_image,), dtype int64
        """
        if isinstance(image, str):
            try:
                image = self.image_names.index(image)
            except ValueError:
                raise KeyError(
                    f"No image named {image!r} in PatchStore '{self.path}'."
                ) from None
        return np.flatnonzero(self.image_index == image)

    def close(self):
        """Drop the memory maps (they are re-created on next access)."""
        self._patches = None
        self._labels = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __reduce__(self):
        return (type(self), (str(self.path),))

    def __repr__(self):
        return (
            f"PatchStore('{self.path}', n_patches={len(self)}, n_images={self.n_images}, "
            f"patch_size={self.patch_size}, overlap={self.overlap}, stride={self.stride})"
        )

    # --- building --------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        path,
        images,
        labels,
        names,
        *,
        patch_size,
        overlap,
        allow_padding=False,
        overwrite=False,
    ):
        """Partition images and label maps and write them to a new patch file.

        Images are processed one at a time, so a pool larger than memory can be written. If
        ``images`` is sized (a list or other sequence), the patch count is computed from the image
        shapes first and patches are written straight into the final contiguous datasets (a lazy
        sequence is therefore read twice). If ``images`` is an unsized iterable (a generator),
        patches are staged in a raw temporary file next to ``path`` and copied once at the end.

        The file is written to a temporary name in the directory of ``path`` and moved into place
        with :func:`os.replace` when complete; on any error the temporary files are removed. A
        process killed mid-write leaves no file at ``path`` (or the previous one, intact), possibly a
        stale hidden ``.*.tmp`` file next to it.

        Parameters
        ----------
        path : str or path-like
            Destination file.
        images : iterable of ndarray of shape (H, W, C) or (H, W), dtype uint8
            Source images; all with the same number of channels.
        labels : iterable of ndarray of shape (H, W), integer
            Class labels per pixel (0 = background, 1 = foreground, 255 = ignore), same order.
        names : sequence of str
            Unique image names, same order.
        patch_size : int
            Side ``l`` of the patches.
        overlap : float in [0, 1)
            Overlap between neighbouring patches (see :func:`focal_al.patches.patch_grid`).
        allow_padding : bool, default=False
            Mirror-pad images smaller than ``patch_size``.
        overwrite : bool, default=False
            Replace an existing file at ``path``; otherwise an existing file raises
            ``FileExistsError``.

        Returns
        -------
        store : PatchStore
            The new store, opened.
        """
        caller = "PatchStore.build"
        path = Path(path)
        patch_size = _check_patch_size(patch_size, caller)
        overlap = _check_overlap(overlap, caller)
        names = [str(n) for n in names]
        if not names:
            raise ValueError(f"PatchStore.build got no images for '{path}'.")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"The 'names' parameter of {caller} must hold unique image names. "
                f"Got duplicates {duplicates[:5]} instead."
            )
        _check_destination(path, overwrite)
        shapes = None
        if isinstance(images, Sized) and hasattr(images, "__getitem__"):
            if len(images) != len(names):
                raise ValueError(
                    f"{caller} got {len(images)} images but {len(names)} names; they must match."
                )
            shapes = [tuple(np.shape(images[i])[:2]) for i in range(len(images))]
            counts = [
                len(_grid(s, patch_size, overlap, allow_padding, caller).coords) for s in shapes
            ]

        staging_name = None
        try:
            with _atomic_h5(path, overwrite, caller) as f:
                f.attrs["patch_size"] = patch_size
                f.attrs["overlap"] = overlap
                f.attrs["allow_padding"] = bool(allow_padding)
                writer = _PatchWriter(f, patch_size, overlap, allow_padding, caller)
                if shapes is not None:
                    writer.preallocate(sum(counts), images[0])
                else:
                    staging_name = _staging_file(path)
                    writer.stage(staging_name)
                n_written = writer.write_all(images, labels, len(names))
                if n_written != len(names):
                    raise ValueError(
                        f"{caller} got {n_written} images but {len(names)} names; they must match."
                    )
                writer.finish(names)
                if writer.label_values == {0, 255}:
                    warnings.warn(
                        f"The labels passed to {caller} for '{path}' hold only the values 0 and 255, but 255 "
                        "marks unlabelled pixels: no foreground will ever be trained. If these are 0/255 "
                        "binary masks, pass (mask > 0).astype(np.uint8) (load_folder does this for you).",
                        UserWarning,
                        stacklevel=2,
                    )
                f.attrs["stride"] = writer.stride
                f.attrs["n_channels"] = writer.n_channels
        finally:
            if staging_name is not None and os.path.exists(staging_name):
                os.unlink(staging_name)
        return cls(path)

    @classmethod
    def from_dataset(
        cls, path, dataset, *, patch_size, overlap, allow_padding=False, overwrite=False
    ):
        """Build a store from a :class:`focal_al.datasets.SegmentationDataset`.

        Labels are the dataset's class labels (``mask > 0``); see :meth:`build` for the
        parameters.
        """
        labels = (dataset.class_labels(i) for i in range(len(dataset)))
        return cls.build(
            path,
            dataset.images,
            labels,
            dataset.names,
            patch_size=patch_size,
            overlap=overlap,
            allow_padding=allow_padding,
            overwrite=overwrite,
        )

    @classmethod
    def build_from_patches(cls, path, images, *, patch_size, overlap, overwrite=False):
        """Write a store from patches already cut, image by image and chunk by chunk.

        For images too large to hold whole (whole-slide images, see :func:`focal_al.slides.load_slides`):
        memory is bounded by one chunk. Patches are staged in a raw temporary file next to
        ``path`` and copied once into the final contiguous datasets; the file appears at ``path``
        only when complete, as with :meth:`build`. When any image has a downsample other than 1
        the level-0 coordinates ``round(coords * downsample)`` and the downsamples are stored too.

        Parameters
        ----------
        path : str or path-like
            Destination file.
        images : iterable of ImagePatches
            One entry per image: its unique name, ``(H, W)`` in store pixels, its chunks of
            ``(coords, patches, labels)`` and its downsample.
        patch_size : int
            Side ``l`` of the patches (every chunk's patches must have it).
        overlap : float in [0, 1)
            Overlap the patches were cut with (recorded with the stride it implies).
        overwrite : bool, default=False
            Replace an existing file at ``path``.

        Returns
        -------
        store : PatchStore
            The new store, opened.
        """
        caller = "PatchStore.build_from_patches"
        path = Path(path)
        patch_size = _check_patch_size(patch_size, caller)
        overlap = _check_overlap(overlap, caller)
        _check_destination(path, overwrite)
        staging_name = _staging_file(path)
        names, downsamples = [], []
        try:
            with _atomic_h5(path, overwrite, caller) as f:
                f.attrs["patch_size"] = patch_size
                f.attrs["overlap"] = overlap
                f.attrs["allow_padding"] = False
                writer = _PatchWriter(f, patch_size, overlap, False, caller)
                writer.stage(staging_name)
                try:
                    for i, image in enumerate(images):
                        if not isinstance(image, ImagePatches):
                            raise TypeError(
                                f"Item {i} passed to {caller} must be an ImagePatches. Got "
                                f"{type(image).__name__} instead."
                            )
                        if image.name in names:
                            raise ValueError(
                                f"{caller} got the image name {image.name!r} twice; names must be unique."
                            )
                        names.append(str(image.name))
                        downsamples.append(float(image.downsample))
                        writer.add_chunks(i, tuple(int(v) for v in image.shape), image.chunks)
                finally:
                    writer.close_staging()
                if writer.n == 0:
                    raise ValueError(
                        f"{caller} got no patches for '{path}' ({len(names)} images, all empty)."
                    )
                writer.finish(names)
                f.attrs["stride"] = writer.stride
                f.attrs["n_channels"] = writer.n_channels
                if any(d != 1.0 for d in downsamples):
                    scale = np.asarray(downsamples)[f["image_index"][()]][:, None]
                    f.create_dataset(
                        "coords_level0",
                        data=np.rint(f["coords"][()] * scale).astype(np.int64),
                    )
                    f.create_dataset("image_downsamples", data=np.asarray(downsamples))
        finally:
            if os.path.exists(staging_name):
                os.unlink(staging_name)
        return cls(path)


class _PatchWriter:
    """Partitions image/label pairs one at a time into an open HDF5 file (or a staging file)."""

    def __init__(self, f, patch_size, overlap, allow_padding, caller):
        self.f = f
        self.patch_size = patch_size
        self.overlap = overlap
        self.allow_padding = allow_padding
        self.caller = caller
        self.label_values = set()
        self.n_channels = None
        self.stride = _stride(patch_size, overlap, caller)
        self.n = 0
        self._staged_sizes = []
        self.coords = []
        self.image_index = []
        self.shapes = []
        self._staging = None

    def preallocate(self, n_patches, first_image):
        first = np.asarray(first_image)
        self.n_channels = first.shape[2] if first.ndim == 3 else 1
        self._create(n_patches)

    def _create(self, n_patches):
        l = self.patch_size
        self.patches = self.f.create_dataset(
            "patches", shape=(n_patches, self.n_channels, l, l), dtype=np.uint8
        )
        self.labels = self.f.create_dataset("labels", shape=(n_patches, l, l), dtype=np.uint8)

    def stage(self, staging_name):
        self._staging_name = staging_name
        self._staging = open(staging_name, "wb")

    def write_all(self, images, labels, n_names):
        label_iter = iter(labels)
        n_images = 0
        try:
            for i, image in enumerate(images):
                try:
                    label = next(label_iter)
                except StopIteration:
                    raise ValueError(
                        f"{self.caller} got fewer label maps than images (no labels for image {i})."
                    ) from None
                if i >= n_names:
                    raise ValueError(
                        f"{self.caller} got more images than the {n_names} names."
                    )
                self._write(i, image, label)
                n_images += 1
            if next(label_iter, None) is not None:
                raise ValueError(f"{self.caller} got more label maps than the {n_images} images.")
        finally:
            self.close_staging()
        return n_images

    def close_staging(self):
        if self._staging is not None:
            self._staging.close()

    def add_chunks(self, i, shape, chunks):
        """Append image ``i``'s patches from chunks of (coords, patches, labels) (staging only)."""
        coords_all, k_all = [], 0
        for coords, img_patches, lab_patches in chunks:
            coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
            img_patches = np.asarray(img_patches)
            lab_patches = np.asarray(lab_patches)
            k, l = len(coords), self.patch_size
            if self.n_channels is None and k:
                self.n_channels = img_patches.shape[1] if img_patches.ndim == 4 else None
            c = self.n_channels
            if k and (
                img_patches.dtype != np.uint8
                or img_patches.shape != (k, c, l, l)
                or lab_patches.dtype != np.uint8
                or lab_patches.shape != (k, l, l)
            ):
                raise ValueError(
                    f"A chunk of image {i} passed to {self.caller} has {k} coords, patches "
                    f"{img_patches.dtype} {img_patches.shape} and labels {lab_patches.dtype} "
                    f"{lab_patches.shape}; expected uint8 ({k}, {c}, {l}, {l}) and uint8 ({k}, {l}, {l})."
                )
            if k:
                self._staging.write(np.ascontiguousarray(img_patches).tobytes())
                self._staging.write(np.ascontiguousarray(lab_patches).tobytes())
                self._staged_sizes.append(k)
            coords_all.append(coords)
            k_all += k
        self.n += k_all
        self.coords.append(np.concatenate(coords_all) if coords_all else np.empty((0, 2), np.int64))
        self.image_index.append(np.full(k_all, i, dtype=np.int64))
        self.shapes.append(shape)

    def _write(self, i, image, label):
        image = _as_image(image, i, self.n_channels)
        if self.n_channels is None:
            self.n_channels = image.shape[2]
        label = _as_labels(label, i, image.shape[:2])
        self.label_values.update(np.unique(label).tolist())
        grid = _grid(image.shape[:2], self.patch_size, self.overlap, self.allow_padding, self.caller)
        l = self.patch_size
        # Channels first once for the whole image, so each patch is a plain strided copy.
        padded = np.ascontiguousarray(_mirror_pad(image, grid.padded_shape).transpose(2, 0, 1))
        padded_label = _mirror_pad(label, grid.padded_shape)
        img_patches = np.stack([padded[:, y : y + l, x : x + l] for y, x in grid.coords])
        lab_patches = np.stack([padded_label[y : y + l, x : x + l] for y, x in grid.coords])
        k = len(grid.coords)
        if self._staging is not None:
            self._staging.write(img_patches.tobytes())
            self._staging.write(lab_patches.tobytes())
            self._staged_sizes.append(k)
        else:
            if self.n + k > self.patches.shape[0]:
                raise ValueError(
                    f"Image {i} passed to {self.caller} does not have the shape it had when the "
                    f"patch count was computed; a sequence of images must return the same arrays "
                    f"each time it is indexed."
                )
            self.patches[self.n : self.n + k] = img_patches
            self.labels[self.n : self.n + k] = lab_patches
        self.n += k
        self.coords.append(grid.coords)
        self.image_index.append(np.full(k, i, dtype=np.int64))
        self.shapes.append(image.shape[:2])

    def finish(self, names):
        if self._staging is not None:
            self._create(self.n)
            self._copy_staged()
        elif self.n != self.patches.shape[0]:
            raise ValueError(
                f"{self.caller} wrote {self.n} patches but expected {self.patches.shape[0]}; a "
                f"sequence of images must return the same arrays each time it is indexed."
            )
        self.f.create_dataset("coords", data=np.concatenate(self.coords).astype(np.int64))
        self.f.create_dataset("image_index", data=np.concatenate(self.image_index))
        self.f.create_dataset("image_shapes", data=np.asarray(self.shapes, dtype=np.int64))
        self.f.create_dataset("image_names", data=names, dtype=h5py.string_dtype())

    def _copy_staged(self):
        l, c = self.patch_size, self.n_channels
        img_bytes, lab_bytes = c * l * l, l * l
        pos, dst = 0, 0

        # Read block by block into one buffer (not a memory map of the whole staging file, whose
        # pages would all become resident: 160 MiB for a 10k-patch slide).
        def read(fh, offset, count):
            fh.seek(offset)
            return np.frombuffer(fh.read(count), dtype=np.uint8)

        with open(self._staging_name, "rb") as raw:
            # Staged layout: per image, its image patches then its label patches.
            for k in self._staged_sizes:
                for start in range(0, k, _COPY_BLOCK):
                    m = min(_COPY_BLOCK, k - start)
                    block = read(raw, pos + start * img_bytes, m * img_bytes)
                    self.patches[dst + start : dst + start + m] = block.reshape(m, c, l, l)
                pos += k * img_bytes
                for start in range(0, k, _COPY_BLOCK):
                    m = min(_COPY_BLOCK, k - start)
                    block = read(raw, pos + start * lab_bytes, m * lab_bytes)
                    self.labels[dst + start : dst + start + m] = block.reshape(m, l, l)
                pos += k * lab_bytes
                dst += k
