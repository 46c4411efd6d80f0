"""Segmentation datasets: images with instance masks, from GlaS, a user's folders or the generator.

Every loader returns a :class:`SegmentationDataset` holding ``(H, W, 3)`` uint8 images and
``(H, W)`` int32 instance masks (0 = background, 1..N = objects), the contract the rest of
focal-al builds on.
"""
from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image
from scipy import ndimage

from focal_al.synthetic import make_synthetic_image

__all__ = ["SegmentationDataset", "load_glas", "load_folder", "make_synthetic", "GLAS_SPLITS", "max_image_pixels"]

#: Default largest image (in pixels) read whole into memory: 16384 x 16384 (768 MiB as RGB). Larger
#: images are whole-slide images: read them block by block (``focal-al slides``, a pyramidal TIFF).
MAX_IMAGE_PIXELS = 16384 * 16384


def max_image_pixels() -> int:
    """The largest image read whole: ``FOCAL_AL_MAX_IMAGE_PIXELS`` if set, else ``MAX_IMAGE_PIXELS``."""
    import os

    value = os.environ.get("FOCAL_AL_MAX_IMAGE_PIXELS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"FOCAL_AL_MAX_IMAGE_PIXELS must be a positive integer; it is {value!r}.")
        return int(value)
    return MAX_IMAGE_PIXELS


def _check_declared_size(path, height: int, width: int) -> None:
    limit = max_image_pixels()
    if height * width > limit:
        raise ValueError(
            f"Image file '{path}' declares {width} x {height} pixels ({height * width:,}), above the limit of "
            f"{limit:,} pixels read whole into memory (about {3 * height * width / 2**30:.1f} GiB as RGB). A "
            f"whole-slide image is read block by block as a pyramidal TIFF (`focal-al slides`); to read it whole "
            f"anyway, raise FOCAL_AL_MAX_IMAGE_PIXELS."
        )

GLAS_SPLITS = ("train", "testA", "testB", "mixed-train", "mixed-test")
_GLAS_NAME = re.compile(r"^(train|testA|testB)_(\d+)$")
_IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
#: JPEG compression invents label values along every edge: masks must be lossless.
_LOSSY_SUFFIXES = (".jpg", ".jpeg")


def _natural_key(name):
    """Sort key that orders ``train_2`` before ``train_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass(frozen=True, eq=False)
class SegmentationDataset:
    """Images with instance masks.

    Parameters
    ----------
    images : list of ndarray of shape (H_i, W_i, 3), dtype uint8
    masks : list of ndarray of shape (H_i, W_i), dtype int32
        Instance ids, 0 = background, 1..N = one id per object.
    names : list of str
        One unique name per image.
    grades : list of str or None, default=None
        Optional per-image grade (GlaS: ``"benign"`` / ``"malignant"``).

    Two datasets compare equal only if they are the same object (arrays have no single truth
    value).
    """

    images: list
    masks: list
    names: list
    grades: list | None = None

    n_classes: ClassVar[int] = 2

    def __post_init__(self):
        n = len(self.images)
        problems = []
        if len(self.masks) != n or len(self.names) != n:
            problems.append(
                f"got {n} images, {len(self.masks)} masks and {len(self.names)} names; "
                f"they must match"
            )
        if self.grades is not None and len(self.grades) != n:
            problems.append(f"got {len(self.grades)} grades for {n} images")
        if len(set(self.names)) != len(self.names):
            problems.append("names must be unique")
        for name, image, mask in zip(self.names, self.images, self.masks):
            if not (
                isinstance(image, np.ndarray)
                and image.dtype == np.uint8
                and image.ndim == 3
                and image.shape[2] == 3
            ):
                problems.append(
                    f"image {name!r} must be a (H, W, 3) uint8 array, got "
                    f"{getattr(image, 'dtype', type(image).__name__)} {np.shape(image)}"
                )
            elif not (
                isinstance(mask, np.ndarray)
                and mask.dtype.kind in "iu"
                and mask.shape == image.shape[:2]
            ):
                problems.append(
                    f"mask {name!r} must be an integer array of shape {image.shape[:2]}, got "
                    f"{getattr(mask, 'dtype', type(mask).__name__)} {np.shape(mask)}"
                )
        if problems:
            raise ValueError("Invalid SegmentationDataset: " + "; ".join(problems) + ".")

    def __len__(self):
        return len(self.images)

    def class_labels(self, i):
        """Class labels of image ``i``: 1 where the instance mask is non-zero.

        Returns
        -------
        labels : ndarray of shape (H, W), dtype uint8
            0 = background, 1 = foreground.
        """
        return (self.masks[i] > 0).astype(np.uint8)

    def subset(self, indices):
        """A new dataset holding the given images, in the given order (arrays are shared).

        Parameters
        ----------
        indices : sequence of int
        """
        indices = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        for i in indices:
            if not -len(self) <= i < len(self):
                raise IndexError(
                    f"Index {i} passed to SegmentationDataset.subset is out of range for "
                    f"{len(self)} images."
                )
        return SegmentationDataset(
            images=[self.images[i] for i in indices],
            masks=[self.masks[i] for i in indices],
            names=[self.names[i] for i in indices],
            grades=None if self.grades is None else [self.grades[i] for i in indices],
        )

    def rescale(self, factor):
        """Resize every image and mask by ``factor`` (the CPU preset uses 0.5).

        Images are resampled with Pillow's anti-aliased bilinear filter, masks with nearest
        neighbour (instance ids are preserved; objects smaller than a pixel may vanish).

        Parameters
        ----------
        factor : float > 0
            New size is ``max(1, round(H * factor)) x max(1, round(W * factor))``.
        """
        if isinstance(factor, bool) or not isinstance(factor, (int, float, np.floating)) or not (
            np.isfinite(factor) and factor > 0
        ):
            raise ValueError(
                f"The 'factor' parameter of SegmentationDataset.rescale must be a positive float. "
                f"Got {factor!r} instead."
            )
        images, masks = [], []
        for image, mask in zip(self.images, self.masks):
            height, width = image.shape[:2]
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            images.append(
                np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
            )
            # Pillow mode "I" (int32) keeps any instance id through nearest-neighbour resampling.
            resized = Image.fromarray(mask.astype(np.int32)).resize(size, Image.Resampling.NEAREST)
            masks.append(np.asarray(resized, dtype=np.int32))
        return SegmentationDataset(images, masks, list(self.names), self.grades)


# --- reading files ----------------------------------------------------------------------------
def _read_array(path, *, palette_to_rgb):
    """Pixels of a file as stored; palette images give RGB or, for masks, their indices.

    The declared size is checked against :func:`max_image_pixels` before any pixel is decoded; a
    truncated, damaged or non-image file raises ``ValueError`` naming it.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape if tif.series else tif.pages[0].shape
                axes = tif.series[0].axes if tif.series else ""
                yx = [n for n, a in zip(shape, axes) if a in "YX"] if "Y" in axes and "X" in axes else list(shape[:2])
                _check_declared_size(path, int(yx[0]), int(yx[1]))
                return tif.asarray()
        with warnings.catch_warnings():
            # focal-al checks the declared size itself, against its own documented limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_image_pixels()
            try:
                img = Image.open(path)
            except Image.DecompressionBombError as err:
                raise ValueError(f"Image file '{path}' declares more than {max_image_pixels():,} pixels ({err}); a "
                                 "whole-slide image is read block by block as a pyramidal TIFF (`focal-al slides`), "
                                 "or raise FOCAL_AL_MAX_IMAGE_PIXELS.") from None
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with img:
            _check_declared_size(path, img.height, img.width)
            img.load()  # a truncated file fails here, never as black pixels
            if img.mode == "P" and palette_to_rgb:
                return np.asarray(img.convert("RGB"))
            if img.mode in ("RGB", "RGBA", "L", "P", "I", "I;16", "I;16B", "I;16L", "F", "LA", "1"):
                return np.asarray(img)
            return np.asarray(img.convert("RGB"))
    except ValueError:
        raise
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError, KeyError, IndexError) as err:
        raise ValueError(f"Image file '{path}' cannot be read: it is truncated, damaged or not an image "
                         f"({type(err).__name__}: {err}).") from err


def _read_image(path):
    """Read an image file as (H, W, 3) uint8: alpha dropped, grey replicated, 16-bit / 257."""
    array = _read_array(path, palette_to_rgb=True)
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first TIFF
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 2:
        array = array[:, :, 0]  # grey + alpha
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(
            f"Image file '{path}' has shape {array.shape}; expected (H, W), (H, W, 3) or "
            f"(H, W, 4) (grey, RGB or RGBA)."
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"Image file '{path}' contains NaN or Inf values; expected finite pixels.")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"Image file '{path}' is a float image with values in [{low:g}, {high:g}]; "
                f"expected values in [0, 1] or [0, 255]."
            )
        array = np.rint(array * 255.0 if high <= 1.0 else array).astype(np.uint8)
    elif array.dtype.kind in "iu" and array.dtype.itemsize > 1:
        if array.min() < 0 or array.max() > 65535:
            raise ValueError(
                f"Image file '{path}' has values in [{array.min()}, {array.max()}]; expected an "
                f"8- or 16-bit image."
            )
        # Linear full-range mapping, the same for every image (no per-image contrast stretch).
        array = np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = array.astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array)


def read_label_image(path, *, error=ValueError):
    """A mask file as an ``(H, W)`` array of non-negative integer labels, checked.

    Single-channel 8- or 16-bit (or boolean) label images; anything else raises ``error`` with a
    message naming the file, what was found and what was expected. Shared by the dataset loaders
    and the annotation import.
    """
    array = _read_array(path, palette_to_rgb=False)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise error(
            f"Mask file '{path}' has shape {array.shape}; expected a single-channel (H, W) label "
            f"image (8- or 16-bit instance ids, 0 = background)."
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise error(
            f"Mask file '{path}' has non-integer dtype {array.dtype}; expected an 8- or 16-bit "
            f"label image of instance ids (0 = background)."
        )
    if array.size and (array.min() < 0 or array.max() > 65535):
        raise error(
            f"Mask file '{path}' has label values in [{array.min()}, {array.max()}]; expected instance ids "
            f"from 0 (background) to 65535."
        )
    return array


def _read_mask(path, *, label_binary):
    array = read_label_image(path)
    values = np.unique(array)
    if len(values) <= 2 and set(values.tolist()) <= {0, 1, 255}:
        foreground = array > 0
        if label_binary:
            return ndimage.label(foreground)[0].astype(np.int32)
        return foreground.astype(np.int32)
    return array.astype(np.int32)


def _check_shapes(image, mask, image_path, mask_path):
    if image.shape[:2] != mask.shape:
        raise ValueError(
            f"Image '{image_path}' has size {image.shape[:2]} but its mask '{mask_path}' has "
            f"size {mask.shape}; they must match."
        )


def _find_files(directory, what):
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"The {what} directory '{directory}' does not exist.")
    files = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in _IMAGE_SUFFIXES:
            continue
        if path.stem in files:
            raise ValueError(
                f"Two files in '{directory}' share the name {path.stem!r}: "
                f"'{files[path.stem].name}' and '{path.name}'; keep one."
            )
        files[path.stem] = path
    return files


# --- GlaS -------------------------------------------------------------------------------------
def _read_grades(csv_path):
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"'{csv_path}' is empty; expected a header with 'name' and 'grade' columns.")
    header = [h.strip().lower() for h in rows[0]]
    grade_columns = [i for i, h in enumerate(header) if h.startswith("grade")]
    if "name" not in header or not grade_columns:
        raise ValueError(
            f"'{csv_path}' has columns {rows[0]}; expected a 'name' column and a 'grade' "
            f"(GlaS: 'grade (GlaS)') column."
        )
    name_col = header.index("name")
    # The release has 'grade (GlaS)' (benign / malignant) then a finer grade: take the GlaS one.
    glas_cols = [i for i in grade_columns if "glas" in header[i]]
    grade_col = glas_cols[0] if glas_cols else grade_columns[0]
    return {row[name_col].strip(): row[grade_col].strip() for row in rows[1:] if row}


def load_glas(root, split, *, seed=0, test_fraction=0.2):
    """Load the GlaS (MICCAI 2015) gland segmentation data.

    Reads the release layout: ``<name>.bmp`` or ``<name>.png`` images with ``<name>_anno.bmp`` or
    ``<name>_anno.png`` instance masks (names ``train_N``, ``testA_N``, ``testB_N``) and an
    optional ``Grade.csv``. When both a ``.png`` and a ``.bmp`` exist, the ``.png`` is read.

    Parameters
    ----------
    root : str or path-like
        Folder holding the files.
    split : {"train", "testA", "testB", "mixed-train", "mixed-test"}
        Official splits (85 / 60 / 20 images), or the "Mixed" protocol: all images shuffled with
        ``numpy.random.default_rng(seed)``; the first ``round(test_fraction * n)`` form
        "mixed-test" (33 of 165), the rest "mixed-train" (132).
    seed : int, default=0
        Seed of the Mixed shuffle.
    test_fraction : float in (0, 1), default=0.2
        Share of the Mixed test split.

    Returns
    -------
    dataset : SegmentationDataset
        Images in natural name order (``train_2`` before ``train_10``); grades from
        ``Grade.csv`` (``"benign"`` / ``"malignant"``) or None if the file is absent.
    """
    if split not in GLAS_SPLITS:
        raise ValueError(
            f"The 'split' parameter of load_glas must be one of {list(GLAS_SPLITS)}. "
            f"Got {split!r} instead."
        )
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not (
        0 < test_fraction < 1
    ):
        raise ValueError(
            f"The 'test_fraction' parameter of load_glas must be a float in (0, 1). "
            f"Got {test_fraction!r} instead."
        )
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"GlaS root directory '{root}' does not exist.")
    images, masks = {}, {}
    for path in root.iterdir():
        if path.suffix.lower() not in (".png", ".bmp"):
            continue
        stem, table = path.stem, images
        if stem.endswith("_anno"):
            stem, table = stem[: -len("_anno")], masks
        if _GLAS_NAME.match(stem) and (stem not in table or path.suffix.lower() == ".png"):
            table[stem] = path
    if not images:
        raise FileNotFoundError(
            f"No GlaS images (train_N, testA_N or testB_N .bmp / .png) in '{root}'."
        )
    missing = sorted((n for n in images if n not in masks), key=_natural_key)
    if missing:
        raise FileNotFoundError(
            f"GlaS images without a mask in '{root}': {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} (expected e.g. '{missing[0]}_anno.bmp' or "
            f"'{missing[0]}_anno.png')."
        )
    names = sorted(images, key=_natural_key)
    if split.startswith("mixed"):
        if len(names) < 2:
            raise ValueError(f"The Mixed split needs at least 2 images; '{root}' has {len(names)}.")
        order = np.random.default_rng(seed).permutation(len(names))
        n_test = min(max(1, int(round(test_fraction * len(names)))), len(names) - 1)
        chosen = order[:n_test] if split == "mixed-test" else order[n_test:]
        names = [names[i] for i in sorted(chosen)]
    else:
        names = [n for n in names if _GLAS_NAME.match(n).group(1) == split]
        if not names:
            raise FileNotFoundError(f"No images of the GlaS split {split!r} in '{root}'.")

    grade_file = root / "Grade.csv"
    grades = None
    if grade_file.is_file():
        table = _read_grades(grade_file)
        absent = [n for n in names if n not in table]
        if absent:
            raise ValueError(f"'{grade_file}' has no grade for {absent[:5]}.")
        grades = [table[n] for n in names]

    image_list, mask_list = [], []
    for name in names:
        image = _read_image(images[name])
        # GlaS masks are instance ids as released (a few testB masks label every gland 1).
        mask = _read_mask(masks[name], label_binary=False)
        _check_shapes(image, mask, images[name], masks[name])
        image_list.append(image)
        mask_list.append(mask)
    return SegmentationDataset(image_list, mask_list, names, grades)


# --- user folders -----------------------------------------------------------------------------
def load_folder(images_dir, masks_dir, *, mask_suffix="", label_binary=True):
    """Load image / mask pairs matched by file name.

    The image ``<stem>.<ext>`` pairs with the mask ``<stem><mask_suffix>.<ext2>`` (for example
    ``mask_suffix="_anno"`` or ``"_mask"``); ``images_dir`` and ``masks_dir`` may be the same
    folder when ``mask_suffix`` is set. Extensions: ``.png``, ``.bmp``, ``.tif``, ``.tiff``, and
    ``.jpg`` / ``.jpeg`` for images only (masks must be lossless).

    Images may be RGB, RGBA (alpha dropped), greyscale (replicated to 3 channels), 8- or 16-bit
    (16-bit mapped linearly to 8-bit, ``v / 257``), or float in [0, 1] / [0, 255]. Masks are 8- or
    16-bit single-channel label images of instance ids. A binary mask (values within {0, 1} or
    {0, 255}, the usual export of annotation tools) is split into connected components
    (4-connectivity), one instance per component, unless ``label_binary=False`` (then its
    foreground is one instance, id 1).

    Parameters
    ----------
    images_dir, masks_dir : str or path-like
    mask_suffix : str, default=""
    label_binary : bool, default=True

    Returns
    -------
    dataset : SegmentationDataset
        Pairs in natural name order; names are the image stems; no grades.
    """
    images = _find_files(images_dir, "images")
    masks = _find_files(masks_dir, "masks")
    if mask_suffix:
        masks = {s[: -len(mask_suffix)]: p for s, p in masks.items() if s.endswith(mask_suffix)}
        if Path(images_dir).resolve() == Path(masks_dir).resolve():
            images = {s: p for s, p in images.items() if not s.endswith(mask_suffix)}
    if not images:
        raise FileNotFoundError(
            f"No images (.png, .bmp, .tif, .tiff, .jpg) in '{images_dir}'."
        )
    problems = []
    no_mask = sorted(set(images) - set(masks), key=_natural_key)
    no_image = sorted(set(masks) - set(images), key=_natural_key)
    if no_mask:
        problems.append(
            f"{len(no_mask)} image(s) without a mask '<stem>{mask_suffix}.<ext>' in "
            f"'{masks_dir}': {no_mask[:5]}"
        )
    if no_image:
        problems.append(
            f"{len(no_image)} mask(s) without an image in '{images_dir}': "
            f"{[masks[s].name for s in no_image[:5]]}"
        )
    if problems:
        raise ValueError(
            "Unmatched image / mask names: " + "; ".join(problems) + ". Check mask_suffix "
            f"(currently {mask_suffix!r})."
        )
    names = sorted(images, key=_natural_key)
    lossy = [masks[n].name for n in names if masks[n].suffix.lower() in _LOSSY_SUFFIXES]
    if lossy:
        raise ValueError(
            f"Masks must be lossless label images (.png, .bmp, .tif); got JPEG masks in '{masks_dir}': "
            f"{lossy[:5]}. JPEG compression changes label values along object edges; export the masks as PNG."
        )
    image_list, mask_list = [], []
    for name in names:
        image = _read_image(images[name])
        mask = _read_mask(masks[name], label_binary=label_binary)
        _check_shapes(image, mask, images[name], masks[name])
        image_list.append(image)
        mask_list.append(mask)
    return SegmentationDataset(image_list, mask_list, names)


# --- synthetic --------------------------------------------------------------------------------
def make_synthetic(n_images=24, size=(192, 256), *, seed=0):
    """The embedded default dataset: synthetic H&E-like gland images with instance masks.

    Dense, touching, similar-looking glands (purple rim, pale lumen) on a fibrous stroma with
    confounders (stromal nuclei, pale gaps), plus rare objects: pale, vacuolated sheets that look
    like stroma to a network that has seen glands only; per-image stain variation, rim strength
    and noise. About 30 % of the images are "malignant" (they hold the rare objects, which few
    benign images do, and more deformed glands). See :mod:`focal_al.synthetic`.

    Parameters
    ----------
    n_images : int, default=24
    size : tuple of (int, int), default=(192, 256)
        ``(H, W)`` of every image (at least 32 x 32).
    seed : int, default=0
        Image ``i`` is drawn from ``numpy.random.default_rng([seed, i])``: deterministic, and
        independent of ``n_images``.

    Returns
    -------
    dataset : SegmentationDataset
        Names ``synthetic_0 ...``, grades ``"benign"`` / ``"malignant"``.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ValueError(
            f"The 'n_images' parameter of make_synthetic must be a positive int. "
            f"Got {n_images!r} instead."
        )
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        height = width = 0
    if height < 32 or width < 32:
        raise ValueError(
            f"The 'size' parameter of make_synthetic must be a pair (H, W) of ints >= 32. "
            f"Got {size!r} instead."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            f"The 'seed' parameter of make_synthetic must be a non-negative int. "
            f"Got {seed!r} instead."
        )
    images, masks, grades = [], [], []
    for i in range(n_images):
        rng = np.random.default_rng([int(seed), i])
        malignant = bool(rng.random() < 0.3)
        image, mask = make_synthetic_image(rng, (height, width), malignant=malignant)
        images.append(image)
        masks.append(mask)
        grades.append("malignant" if malignant else "benign")
    names = [f"synthetic_{i}" for i in range(n_images)]
    return SegmentationDataset(images, masks, names, grades)
