"""Overlapping square patches: the partition geometry of FocAnnot (Sect. 3.2) and its inverse.

Along each axis the patch positions are ``0, s, 2s, ...`` while a patch of side ``l`` fits, with
stride ``s = round(l * (1 - overlap))``. If a non-zero remainder ``r`` is left at the bottom/right,
``missing = s - r`` pixels would be needed for one more patch: when ``missing < l / 2`` the image is
mirror-padded (reflect) at the bottom/right so that one more patch fits, otherwise the remainder is
clipped (left uncovered). Padding is only ever added at the bottom/right, so every top-left corner
``(y, x)`` is also a valid position in the original image.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

__all__ = ["PatchGrid", "patch_grid", "partition", "stitch"]


class PatchGrid(NamedTuple):
    """Where the patches of one image lie.

    Attributes
    ----------
    coords : ndarray of shape (n_patches, 2), dtype int64
        ``(y, x)`` top-left corner of each patch, row-major order (rows of patches top to bottom,
        left to right within a row).
    padded_shape : tuple of (int, int)
        ``(H', W')`` of the image after mirror padding (equal to ``(H, W)`` when no padding is needed).
    stride : int
        Distance between neighbouring patch positions, ``round(patch_size * (1 - overlap))``.
    """

    coords: np.ndarray
    padded_shape: tuple[int, int]
    stride: int


def _check_patch_size(patch_size, caller):
    if (
        isinstance(patch_size, bool)
        or not isinstance(patch_size, numbers.Integral)
        or patch_size < 1
    ):
        raise ValueError(
            f"The 'patch_size' parameter of {caller} must be a positive int. "
            f"Got {patch_size!r} instead."
        )
    return int(patch_size)


def _check_overlap(overlap, caller):
    if (
        isinstance(overlap, bool)
        or not isinstance(overlap, numbers.Real)
        or not 0.0 <= float(overlap) < 1.0
    ):
        raise ValueError(
            f"The 'overlap' parameter of {caller} must be a float in [0, 1). "
            f"Got {overlap!r} instead."
        )
    return float(overlap)


def _stride(patch_size, overlap, caller):
    # Python's round (half to even), as in the paper's s = round(l (1 - rho)).
    stride = int(round(patch_size * (1.0 - overlap)))
    if stride < 1:
        raise ValueError(
            f"The 'overlap' parameter of {caller} leaves a stride of {stride} pixels for "
            f"patch_size={patch_size}; the stride round(patch_size * (1 - overlap)) must be >= 1. "
            f"Got overlap={overlap!r}; use a smaller overlap or a larger patch_size."
        )
    return stride


def _axis_positions(length, patch_size, stride, allow_padding, axis_name, caller):
    """Patch starts along one axis and the padded length, by the mirror-pad / clip rule."""
    if length < patch_size:
        if not allow_padding:
            raise ValueError(
                f"The image {axis_name} ({length} px) is smaller than patch_size={patch_size} in "
                f"{caller}. Pass allow_padding=True to mirror-pad it up to the patch size, or use a "
                f"smaller patch_size."
            )
        return np.zeros(1, dtype=np.int64), patch_size
    n = (length - patch_size) // stride + 1
    remainder = length - ((n - 1) * stride + patch_size)
    padded = length
    if remainder > 0 and stride - remainder < patch_size / 2:
        padded = length + stride - remainder
        n += 1
    return np.arange(n, dtype=np.int64) * stride, padded


def _check_shape(shape, caller):
    try:
        dims = tuple(int(d) for d in shape)
    except TypeError:
        dims = None
    if dims is None or len(dims) != 2 or min(dims) < 1:
        raise ValueError(
            f"The 'shape' parameter of {caller} must be a pair of positive ints (H, W). "
            f"Got {shape!r} instead."
        )
    return dims


def patch_grid(shape, patch_size, overlap=0.0, *, allow_padding=False):
    """Patch positions for an image of the given shape (mirror-pad / clip rule of Sect. 3.2).

    Parameters
    ----------
    shape : tuple of (int, int)
        ``(H, W)`` of the image.
    patch_size : int
        Side ``l`` of the square patches, in pixels.
    overlap : float in [0, 1), default=0.0
        Fraction ``rho`` of a patch shared with its neighbour; the stride is
        ``round(l * (1 - rho))`` (Python rounding) and must be at least 1.
    allow_padding : bool, default=False
        Mirror-pad an image smaller than ``patch_size`` along an axis up to ``patch_size``
        (one patch along that axis). If False, such an image raises ``ValueError``.

    Returns
    -------
    grid : PatchGrid
        ``coords`` of shape (n_patches, 2) int64, ``padded_shape`` and ``stride``.

    Examples
    --------
    The paper's Fig. 3a: a 522 x 775 GlaS image, ``l = 128``, no overlap, gives 4 x 6 patches
    (the remainders of 10 and 7 px would need more than ``l / 2`` of padding, so they are clipped).

    >>> patch_grid((522, 775), 128).coords.shape
    (24, 2)
    """
    return _grid(shape, patch_size, overlap, allow_padding, "patch_grid")


def _grid(shape, patch_size, overlap, allow_padding, caller):
    height, width = _check_shape(shape, caller)
    patch_size = _check_patch_size(patch_size, caller)
    overlap = _check_overlap(overlap, caller)
    stride = _stride(patch_size, overlap, caller)
    ys, padded_h = _axis_positions(height, patch_size, stride, allow_padding, "height", caller)
    xs, padded_w = _axis_positions(width, patch_size, stride, allow_padding, "width", caller)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    coords = np.stack([yy.ravel(), xx.ravel()], axis=1)
    return PatchGrid(coords=coords, padded_shape=(padded_h, padded_w), stride=stride)


def _check_image(image, caller, name="image"):
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"The '{name}' parameter of {caller} must be a numpy array of shape (H, W) or "
            f"(H, W, C). Got {type(image).__name__} instead."
        )
    if image.ndim not in (2, 3) or min(image.shape) < 1:
        raise ValueError(
            f"The '{name}' parameter of {caller} must have shape (H, W) or (H, W, C). "
            f"Got shape {image.shape} instead."
        )
    if image.dtype.kind not in "buif":
        raise ValueError(
            f"The '{name}' parameter of {caller} must have a numeric dtype. Got {image.dtype} instead."
        )
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ValueError(
            f"The '{name}' parameter of {caller} contains NaN or Inf values; patches must be finite."
        )


def _mirror_pad(image, padded_shape):
    pad_h = padded_shape[0] - image.shape[0]
    pad_w = padded_shape[1] - image.shape[1]
    if pad_h == 0 and pad_w == 0:
        return image
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2)
    # numpy's reflect repeats the reflection when the pad exceeds the image (allow_padding case)
    # and falls back to edge values for a 1-pixel axis.
    return np.pad(image, widths, mode="reflect")


def partition(image, patch_size, overlap=0.0, *, allow_padding=False):
    """Cut an image into square, possibly overlapping patches (Sect. 3.2).

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C)
        Any numeric dtype; float images must be finite.
    patch_size : int
        Side ``l`` of the square patches.
    overlap : float in [0, 1), default=0.0
        Fraction of a patch shared with its neighbour (see :func:`patch_grid`).
    allow_padding : bool, default=False
        Mirror-pad images smaller than ``patch_size`` instead of raising.

    Returns
    -------
    patches : ndarray of shape (n_patches, l, l) or (n_patches, l, l, C)
        Copies of the (mirror-padded) image regions, in ``image``'s dtype.
    coords : ndarray of shape (n_patches, 2), dtype int64
        ``(y, x)`` top-left corner of each patch.
    """
    caller = "partition"
    _check_image(image, caller)
    grid = _grid(image.shape[:2], patch_size, overlap, allow_padding, caller)
    patch_size = int(patch_size)
    padded = _mirror_pad(image, grid.padded_shape)
    patches = np.stack(
        [padded[y : y + patch_size, x : x + patch_size] for y, x in grid.coords]
    )
    return patches, grid.coords


def stitch(values, coords, shape):
    """Reassemble per-patch values into an image, averaging where patches overlap.

    Parameters
    ----------
    values : ndarray of shape (n_patches, l, l, ...)
        One square map per patch (for example probabilities or labels), any trailing dimensions.
    coords : ndarray of shape (n_patches, 2)
        ``(y, x)`` top-left corners, as returned by :func:`partition` or :func:`patch_grid`.
    shape : tuple of (int, int)
        ``(H, W)`` of the original image; contributions falling on the mirror padding are cropped.

    Returns
    -------
    image : ndarray of shape (H, W, ...), dtype float64
        Mean of the contributions of every patch covering a pixel. Pixels no patch covers (the
        clipped remainder at the bottom/right) are NaN.
    """
    caller = "stitch"
    values = np.asarray(values)
    coords = np.asarray(coords)
    height, width = _check_shape(shape, caller)
    if values.ndim < 3 or values.shape[1] != values.shape[2]:
        raise ValueError(
            f"The 'values' parameter of {caller} must have shape (n_patches, l, l, ...). "
            f"Got shape {values.shape} instead."
        )
    if coords.ndim != 2 or coords.shape != (values.shape[0], 2) or coords.dtype.kind not in "iu":
        raise ValueError(
            f"The 'coords' parameter of {caller} must be an integer array of shape "
            f"({values.shape[0]}, 2) matching 'values'. Got {coords.dtype} array of shape "
            f"{coords.shape} instead."
        )
    if len(coords) and coords.min() < 0:
        raise ValueError(f"The 'coords' parameter of {caller} must be non-negative.")
    patch_size = values.shape[1]
    trailing = values.shape[3:]
    extent_h = max(height, int(coords[:, 0].max()) + patch_size) if len(coords) else height
    extent_w = max(width, int(coords[:, 1].max()) + patch_size) if len(coords) else width
    total = np.zeros((extent_h, extent_w) + trailing, dtype=np.float64)
    count = np.zeros((extent_h, extent_w), dtype=np.int64)
    for value, (y, x) in zip(values, coords):
        total[y : y + patch_size, x : x + patch_size] += value
        count[y : y + patch_size, x : x + patch_size] += 1
    total = total[:height, :width]
    count = count[:height, :width].reshape((height, width) + (1,) * len(trailing))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
