"""Whole-slide images in: pyramidal TIFF / SVS read with tiffslide, tissue patches into a PatchStore.

A slide is never held in memory. Tissue is found on a small thumbnail (Otsu threshold on colour
saturation, or on grey level), patch positions come from a regular grid on the chosen pyramid level,
and only the patches that lie mostly on tissue are read, one block of neighbouring patches at a
time, and written to the store slide by slide (:meth:`focal_al.store.PatchStore.build_from_patches`).

Coordinates: the store's ``coords`` are in pixels of the level read (the frame of ``image_shapes``,
which the cost and the learner use); ``coords_level0`` holds the same corners in full-resolution
(level-0) pixels, the frame QuPath and other slide viewers use for annotations, and
``image_downsamples`` the level's downsample of each slide.
"""
from __future__ import annotations

import numbers
import warnings
from pathlib import Path

import numpy as np

from focal_al.datasets import max_image_pixels
from focal_al.patches import _check_overlap, _check_patch_size, _stride
from focal_al.store import ImagePatches, PatchStore

__all__ = ["choose_level", "load_slides", "open_slide", "thumbnail", "tissue_mask"]

_TISSUE_CHANNELS = ("saturation", "grey")


def _is_grey(slide) -> bool:
    """Whether the slide stores one channel (grey): its tissue is then found by darkness."""
    w, h = slide.level_dimensions[-1]
    sample = np.asarray(slide.read_region((0, 0), len(slide.level_dimensions) - 1, (min(w, 64), min(h, 64)),
                                          as_array=True))
    return sample.ndim == 2 or sample.shape[2] < 3


def open_slide(path):
    """Open a whole-slide image with tiffslide (pyramidal TIFF, SVS, NDPI, ...).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    slide : tiffslide.TiffSlide
        Close it (or use it as a context manager) when done.
    """
    import tiffslide

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Slide file '{path}' does not exist.")
    if not path.is_file():
        raise ValueError(f"Slide path '{path}' is not a file; expected a pyramidal TIFF or SVS file.")
    try:
        return tiffslide.TiffSlide(path)
    except Exception as exc:  # tiffslide/tifffile raise many types for unreadable files
        raise ValueError(
            f"'{path}' could not be read as a whole-slide image (pyramidal TIFF, SVS, ...): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def choose_level(slide, *, level=None, mpp=None, mpp_tolerance=0.1, name="slide"):
    """The pyramid level to read: ``level`` as given, or the one whose resolution is nearest ``mpp``.

    Parameters
    ----------
    slide : tiffslide.TiffSlide
    level : int, optional
        Pyramid level, ``0`` (full resolution) to ``slide.level_count - 1``. Exclusive with ``mpp``;
        neither means level 0.
    mpp : float, optional
        Wanted resolution in micrometres per pixel; the level whose ``mpp`` (level-0 mpp times the
        level's downsample) is nearest is taken, if within ``mpp_tolerance`` (relative).
    mpp_tolerance : float, default=0.1
        Largest accepted relative difference between ``mpp`` and the chosen level's resolution.
    name : str
        What to call the slide in error messages (its path).

    Returns
    -------
    level : int
    """
    count = slide.level_count
    if level is not None and mpp is not None:
        raise ValueError(f"Pass either 'level' or 'mpp' for {name}, not both. Got level={level!r}, mpp={mpp!r}.")
    if mpp is None:
        level = 0 if level is None else level
        if isinstance(level, bool) or not isinstance(level, numbers.Integral) or not 0 <= level < count:
            raise ValueError(
                f"The 'level' parameter must be an int in [0, {count - 1}] for {name}, which has {count} "
                f"pyramid levels (downsamples {[round(d, 3) for d in slide.level_downsamples]}). Got {level!r} instead."
            )
        return int(level)
    if isinstance(mpp, bool) or not isinstance(mpp, numbers.Real) or not mpp > 0:
        raise ValueError(f"The 'mpp' parameter must be a positive float (micrometres per pixel). Got {mpp!r} instead.")
    if isinstance(mpp_tolerance, bool) or not isinstance(mpp_tolerance, numbers.Real) or not mpp_tolerance >= 0:
        raise ValueError(f"The 'mpp_tolerance' parameter must be a float >= 0. Got {mpp_tolerance!r} instead.")
    base = slide.properties.get("tiffslide.mpp-x") or slide.properties.get("tiffslide.mpp-y")
    if not base:
        raise ValueError(
            f"{name} records no resolution (micrometres per pixel), so mpp={mpp} cannot select a level; "
            f"pass level= instead (it has {count} levels, downsamples "
            f"{[round(d, 3) for d in slide.level_downsamples]})."
        )
    level_mpp = np.asarray(slide.level_downsamples, dtype=np.float64) * float(base)
    best = int(np.argmin(np.abs(level_mpp - mpp)))
    if abs(level_mpp[best] - mpp) > mpp_tolerance * mpp:
        raise ValueError(
            f"No pyramid level of {name} provides mpp={mpp} (within {mpp_tolerance:.0%}); its levels "
            f"have mpp {[round(float(m), 4) for m in level_mpp]}. Pick one of these, or pass level=."
        )
    return best


def thumbnail(slide, *, size=1024, block_size=2048):
    """A small RGB overview of the slide, read block by block (the slide is never held whole).

    The coarsest pyramid level that is still at least ``size`` pixels on its longest side is read
    in blocks; each block is reduced by an integer factor ``f`` (mean over ``f x f`` pixels).
    Unlike ``TiffSlide.get_thumbnail``, which reads its chosen level in one piece, this stays
    bounded on a slide stored without a pyramid.

    Parameters
    ----------
    slide : tiffslide.TiffSlide
    size : int, default=1024
        Longest side of the thumbnail is at most ``size`` (and more than ``size / 2``, unless the
        slide itself is smaller).
    block_size : int, default=2048
        Side of the regions read at once, in pixels of the level read.

    Returns
    -------
    image : ndarray of shape (h, w, 3), dtype uint8
    scale : tuple of (float, float)
        Level-0 pixels per thumbnail pixel along y and x.
    """
    longest = np.array([max(w, h) for w, h in slide.level_dimensions])
    fits = np.flatnonzero(longest >= size)
    level = int(fits[-1]) if len(fits) else 0
    width, height = slide.level_dimensions[level]
    factor = max(1, int(np.ceil(max(width, height) / size)))
    step = max(factor, block_size // factor * factor)
    downsample = float(slide.level_downsamples[level])
    out = np.zeros((-(-height // factor), -(-width // factor), 3), dtype=np.uint8)
    for y in range(0, height, step):
        for x in range(0, width, step):
            h, w = min(step, height - y), min(step, width - x)
            region = np.asarray(
                slide.read_region((int(round(x * downsample)), int(round(y * downsample))), level, (w, h),
                                  as_array=True)
            )
            reduced = _block_mean(_rgb(region), factor)
            out[y // factor:y // factor + reduced.shape[0], x // factor:x // factor + reduced.shape[1]] = np.rint(reduced)
    return out, (downsample * factor, downsample * factor)


def _block_mean(region: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` block of an (h, w, 3) uint8 region; the partial blocks at
    its bottom and right border average the pixels they have."""
    h, w = region.shape[:2]
    hb, wb = -(-h // factor), -(-w // factor)
    if (hb * factor, wb * factor) != (h, w):  # zero-padded to whole blocks (a uint8 copy), counted below
        region = np.pad(region, ((0, hb * factor - h), (0, wb * factor - w), (0, 0)))
    # Integer sums in uint32 (at most factor**2 * 255 a block): no float copy of the region is made.
    sums = region.reshape(hb, factor, wb, factor, 3).sum(axis=(1, 3), dtype=np.uint32)
    counts = np.minimum(factor, h - factor * np.arange(hb))[:, None] * np.minimum(factor, w - factor * np.arange(wb))
    return sums / counts[:, :, None]


def _otsu(values: np.ndarray, nbins: int = 256) -> float:
    """Otsu's threshold of ``values`` (as scikit-image's ``threshold_otsu``: a 256-bin histogram over
    their range; the threshold is the bin centre that maximises the between-class variance)."""
    hist, edges = np.histogram(values.ravel(), bins=nbins, range=(float(values.min()), float(values.max())))
    centres = (edges[:-1] + edges[1:]) / 2
    hist = hist.astype(np.float64)
    weight1 = np.cumsum(hist)
    weight2 = np.cumsum(hist[::-1])[::-1]
    mean1 = np.cumsum(hist * centres) / np.maximum(weight1, 1e-300)
    mean2 = (np.cumsum((hist * centres)[::-1]) / np.maximum(weight2[::-1], 1e-300))[::-1]
    variance = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(centres[int(np.argmax(variance))])


def _saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of an RGB uint8 image: (max - min) / max, 0 where max is 0."""
    high = rgb.max(axis=2).astype(np.float32)
    low = rgb.min(axis=2).astype(np.float32)
    return np.where(high > 0, (high - low) / np.maximum(high, 1), 0.0)


def _grey(rgb: np.ndarray) -> np.ndarray:
    """Luminance in [0, 1] (ITU-R BT.709 weights, as scikit-image's ``rgb2gray``)."""
    return rgb.astype(np.float32) @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32) / 255.0


def tissue_mask(slide, *, thumbnail_size=1024, channel="saturation", block_size=2048):
    """Tissue on a thumbnail of the slide (:func:`thumbnail`), by Otsu's threshold (scikit-image).

    Parameters
    ----------
    slide : tiffslide.TiffSlide
    thumbnail_size : int, default=1024
        Longest side of the thumbnail, in pixels.
    channel : {"saturation", "grey"}, default="saturation"
        ``"saturation"``: tissue is more saturated than the threshold (stained tissue on white or
        grey glass). ``"grey"``: tissue is darker than the threshold.
    block_size : int, default=2048
        Side of the regions read at once to build the thumbnail.

    Returns
    -------
    mask : ndarray of bool of shape (h, w)
        True on tissue. All False when the thumbnail is one flat colour.
    scale : tuple of (float, float)
        Level-0 pixels per thumbnail pixel along y and x.
    """
    if channel not in _TISSUE_CHANNELS:
        raise ValueError(f"The 'channel' parameter must be one of {_TISSUE_CHANNELS}. Got {channel!r} instead.")
    thumb, scale = thumbnail(slide, size=thumbnail_size, block_size=block_size)
    # numpy alone: scikit-image's colour and filter modules would cost a whole-slide project 25 MiB of imports.
    values = _saturation(thumb) if channel == "saturation" else _grey(thumb)
    if values.min() == values.max():
        return np.zeros(values.shape, dtype=bool), scale
    threshold = _otsu(values)
    return (values > threshold if channel == "saturation" else values < threshold), scale


def _rgb(region):
    """RGB uint8 of a region read by tiffslide (grey repeated, alpha dropped), scaled as project images
    are: 16-bit and other integers by the full range / 257, floats in [0, 1] by 255, never wrapped."""
    region = np.asarray(region)
    if region.ndim == 2:
        region = np.repeat(region[:, :, None], 3, axis=2)
    elif region.shape[2] < 3:
        region = np.repeat(region[:, :, :1], 3, axis=2)
    region = region[:, :, :3]
    if region.dtype == np.uint8:
        return region
    if region.dtype == np.bool_:
        return region.astype(np.uint8) * 255
    if region.dtype.kind == "f":
        finite = np.isfinite(region)
        if not finite.all() or (region.size and (region.min() < 0 or region.max() > 1)):
            raise ValueError(f"The slide stores floats outside [0, 1] (or NaN): found [{np.nanmin(region):g}, "
                             f"{np.nanmax(region):g}]; convert it to an 8- or 16-bit slide.")
        return np.rint(region * 255.0).astype(np.uint8)
    if region.dtype.kind in "iu" and region.dtype.itemsize <= 2:
        if region.size and region.min() < 0:
            raise ValueError("The slide stores negative pixel values; expected an 8- or 16-bit unsigned slide.")
        return np.rint(region.astype(np.float64) / 257.0).astype(np.uint8)
    raise ValueError(f"The slide stores {region.dtype} pixels; expected 8- or 16-bit integers or floats in [0, 1].")


def _tissue_fractions(mask, scale, coords0, side0):
    """Share of tissue under each patch (level-0 corners ``coords0``, side ``side0``), via an integral image."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    sy, sx = scale
    y0 = np.clip(np.floor(coords0[:, 0] / sy).astype(np.int64), 0, mask.shape[0] - 1)
    x0 = np.clip(np.floor(coords0[:, 1] / sx).astype(np.int64), 0, mask.shape[1] - 1)
    # A patch smaller than a thumbnail pixel still covers the one it falls in.
    y1 = np.clip(np.maximum(np.ceil((coords0[:, 0] + side0) / sy).astype(np.int64), y0 + 1), 1, mask.shape[0])
    x1 = np.clip(np.maximum(np.ceil((coords0[:, 1] + side0) / sx).astype(np.int64), x0 + 1), 1, mask.shape[1])
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return inside / ((y1 - y0) * (x1 - x0))


def _slide_chunks(slide, level, coords, patch_size, block, path="slide"):
    """Yield (coords, patches, labels) for the patches at ``coords`` (level pixels), one block at a time.

    Patches are grouped by the ``block`` x ``block`` cell their corner falls in; one region (the
    group's bounding box, under ``block + patch_size`` pixels a side) is read per group.
    """
    l = patch_size
    if not len(coords):
        return
    downsample = float(slide.level_downsamples[level])
    keys = coords // block
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    coords, keys = coords[order], keys[order]
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])
    for a, b in zip(starts, np.r_[starts[1:], len(coords)]):
        group = coords[a:b]
        y0, x0 = group.min(axis=0)
        y1, x1 = group.max(axis=0) + l
        try:
            region = slide.read_region(
                (int(round(x0 * downsample)), int(round(y0 * downsample))), level, (int(x1 - x0), int(y1 - y0)),
                as_array=True,
            )
        except Exception as exc:  # the codecs raise their own types (DeflateError, ...) on damaged tiles
            raise ValueError(f"Slide '{path}' cannot be read at level {level} "
                             f"around x={x0}, y={y0}: it is truncated or damaged ({type(exc).__name__}: {exc}).") from exc
        region = _rgb(np.asarray(region))
        # Channels first once per block, so each patch is a strided copy.
        region = np.ascontiguousarray(region.transpose(2, 0, 1))
        rel = group - (y0, x0)
        patches = np.stack([region[:, y : y + l, x : x + l] for y, x in rel])
        labels = np.full((len(group), l, l), 255, dtype=np.uint8)
        yield group, patches.astype(np.uint8, copy=False), labels


def _slide_patches(path, *, patch_size, overlap, level, mpp, mpp_tolerance, min_tissue, thumbnail_size,
                   tissue_channel, block_size, name=None):
    with open_slide(path) as slide:
        chosen = choose_level(slide, level=level, mpp=mpp, mpp_tolerance=mpp_tolerance, name=f"slide '{path}'")
        width, height = slide.level_dimensions[chosen]
        downsample = float(slide.level_downsamples[chosen])
        stride = _stride(patch_size, overlap, "load_slides")
        smallest = min(w * h for w, h in slide.level_dimensions)
        if smallest > 64 * max_image_pixels():
            raise ValueError(
                f"Slide '{path}' declares {width} x {height} pixels with no pyramid level small enough for a "
                f"tissue overview (its smallest level has {smallest:,} pixels); make a pyramidal TIFF of it "
                "(see the README) or raise FOCAL_AL_MAX_IMAGE_PIXELS."
            )
        try:
            if tissue_channel == "auto":
                tissue_channel = "grey" if _is_grey(slide) else "saturation"
            # Smaller blocks for the overview: each is reduced in float32 (12 MiB at 1024 px, not 48).
            mask, scale = tissue_mask(slide, thumbnail_size=thumbnail_size, channel=tissue_channel,
                                      block_size=min(block_size, 1024))
        except Exception as exc:  # the reader and codecs raise many types on a damaged file
            raise ValueError(f"Slide '{path}' cannot be read: it is truncated or damaged, or its pixels are not "
                             f"usable ({type(exc).__name__}: {exc}).") from exc
        # Clip rule only: a slide's border is background, so no patch is mirror-padded there. The grid
        # is made and filtered a band of rows at a time: memory follows the tissue kept, not the slide.
        ys = np.arange(0, height - patch_size + 1, stride, dtype=np.int64)
        xs = np.arange(0, width - patch_size + 1, stride, dtype=np.int64)
        band = max(1, 2**16 // max(len(xs), 1))
        kept = []
        for first in range(0, len(ys), band):
            yy, xx = np.meshgrid(ys[first:first + band], xs, indexing="ij")
            grid = np.stack([yy.ravel(), xx.ravel()], axis=1)
            if len(grid):
                kept.append(grid[_tissue_fractions(mask, scale, grid * downsample, patch_size * downsample) >= min_tissue])
        coords = np.concatenate(kept) if kept else np.empty((0, 2), dtype=np.int64)
        if not len(coords):
            warnings.warn(
                f"Slide '{path}' has no patch with at least {min_tissue:.0%} tissue at level {chosen} "
                f"({width} x {height} px, patch_size={patch_size}); it is kept in the store with no patches.",
                stacklevel=3,
            )
        yield ImagePatches(
            name=name or Path(path).name,
            shape=(height, width),
            chunks=_slide_chunks(slide, chosen, coords, patch_size, block_size, path),
            downsample=downsample,
        )


def load_slides(
    paths,
    store_path,
    *,
    patch_size,
    overlap=0.0,
    level=None,
    mpp=None,
    mpp_tolerance=0.1,
    min_tissue=0.5,
    thumbnail_size=1024,
    tissue_channel="auto",
    block_size=1024,
    names=None,
    overwrite=False,
):
    """Cut the tissue of whole-slide images into patches and write them to a :class:`PatchStore`.

    Slides are read one at a time with tiffslide and never held whole: each is read in blocks of
    about ``block_size`` pixels around the patches it keeps. A patch is kept when at least
    ``min_tissue`` of its area is tissue on the thumbnail mask (:func:`tissue_mask`), so background
    never becomes a patch. Labels are all 255 (unrevealed) until an expert annotates them.

    Parameters
    ----------
    paths : iterable of str or path-like
        Slide files (pyramidal TIFF, SVS, ...); their file names must be unique (they name the
        store's images).
    store_path : str or path-like
        The PatchStore file to write (atomically: it appears only once complete).
    patch_size : int
        Side ``l`` of the patches, in pixels of the level read.
    overlap : float in [0, 1), default=0.0
        Overlap of neighbouring patches; stride ``round(l * (1 - overlap))``. Positions run
        ``0, s, 2s, ...`` while a whole patch fits (the slide border is clipped, never padded).
    level : int, optional
        Pyramid level to read on every slide (0 = full resolution). Exclusive with ``mpp``.
    mpp : float, optional
        Resolution to read, in micrometres per pixel: per slide, the level nearest to it (see
        :func:`choose_level`); slides scanned at different resolutions then share a scale.
    mpp_tolerance : float, default=0.1
        Largest relative difference accepted between ``mpp`` and a level's resolution.
    min_tissue : float in [0, 1], default=0.5
        Smallest tissue share of a kept patch.
    thumbnail_size : int, default=1024
        Longest side of the thumbnail the tissue is detected on.
    tissue_channel : {"auto", "saturation", "grey"}, default="auto"
        What Otsu's threshold is applied to (see :func:`tissue_mask`); ``"auto"``: ``"grey"`` for
        a one-channel slide (its saturation is 0 everywhere), else ``"saturation"``.
    names : sequence of str, optional
        The slides' names in the store (default: their file names).
    block_size : int, default=1024
        Patches are read in groups whose corners share a ``block_size`` square; one region of
        under ``block_size + patch_size`` pixels a side is read per group (this bounds memory).
    overwrite : bool, default=False
        Replace an existing store at ``store_path``.

    Returns
    -------
    store : PatchStore
        ``coords`` in pixels of the level read, ``coords_level0`` in level-0 pixels,
        ``image_downsamples`` the level's downsample of each slide, ``image_names`` the slides'
        file names.
    """
    caller = "load_slides"
    patch_size = _check_patch_size(patch_size, caller)
    overlap = _check_overlap(overlap, caller)
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("The 'paths' parameter of load_slides is empty; pass at least one slide file.")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Slide files not found (load_slides 'paths'): {missing[:5]}" + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    names = [p.name for p in paths] if names is None else [str(n) for n in names]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"Slide file names name the store's images and must be unique; got duplicates {duplicates[:5]} "
            f"(from different folders?). Rename or link them under unique names."
        )
    if not isinstance(min_tissue, numbers.Real) or not 0.0 <= float(min_tissue) <= 1.0:
        raise ValueError(f"The 'min_tissue' parameter of load_slides must be a float in [0, 1]. Got {min_tissue!r} instead.")
    for param, value in (("thumbnail_size", thumbnail_size), ("block_size", block_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"The '{param}' parameter of load_slides must be a positive int. Got {value!r} instead.")
    if tissue_channel not in ("auto",) + _TISSUE_CHANNELS:
        raise ValueError(
            f"The 'tissue_channel' parameter of load_slides must be one of {('auto',) + _TISSUE_CHANNELS}. Got "
            f"{tissue_channel!r} instead."
        )
    if level is not None and mpp is not None:
        raise ValueError(f"Pass either 'level' or 'mpp' to load_slides, not both. Got level={level!r}, mpp={mpp!r}.")

    if names is not None and len(names) != len(paths):
        raise ValueError(f"'names' has {len(names)} entries for {len(paths)} slides; give one name per slide.")

    def images():
        for k, path in enumerate(paths):
            yield from _slide_patches(
                path, patch_size=patch_size, overlap=overlap, level=level, mpp=mpp, mpp_tolerance=mpp_tolerance,
                min_tissue=float(min_tissue), thumbnail_size=int(thumbnail_size), tissue_channel=tissue_channel,
                block_size=int(block_size), name=names[k],
            )

    return PatchStore.build_from_patches(
        store_path, images(), patch_size=patch_size, overlap=overlap, overwrite=overwrite
    )
