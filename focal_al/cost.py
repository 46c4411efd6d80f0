"""Annotation cost: the union of revealed pixels per training image.

Cost = unique revealed pixels / all training pixels. Overlapping patches share pixels, so the
revealed area is a boolean mask per image and a pixel counts once however many patches cover it.
"""
from __future__ import annotations

import base64

import numpy as np

__all__ = ["RevealedPixels", "boundary_map"]


def boundary_map(instances: np.ndarray) -> np.ndarray:
    """The object boundary pixels of a label image: an annotation-effort proxy.

    A pixel is on a boundary when it belongs to an object (label > 0) and one of its four
    neighbours has another label (another object, background, or the image border). Counting the
    boundary pixels inside what was revealed measures what an annotator traces there (polygon
    outlines), which pixel counts misjudge for region queries (Cai et al., CVPR 2021).

    Parameters
    ----------
    instances : ndarray of int of shape (H, W)
        Instance ids (or 0/1 classes); 0 is background.

    Returns
    -------
    ndarray of bool of shape (H, W)
    """
    labels = np.asarray(instances)
    if labels.ndim != 2:
        raise ValueError(f"'instances' must be a 2-D label image. Got shape {labels.shape} instead.")
    padded = np.pad(labels, 1, mode="constant", constant_values=0)
    centre = padded[1:-1, 1:-1]
    differs = ((padded[:-2, 1:-1] != centre) | (padded[2:, 1:-1] != centre)
               | (padded[1:-1, :-2] != centre) | (padded[1:-1, 2:] != centre))
    return differs & (centre > 0)


class RevealedPixels:
    """Per-image boolean masks of the pixels whose labels have been revealed.

    Parameters
    ----------
    image_shapes : sequence of (H, W)
        Shape of each training image (extra trailing dimensions, e.g. channels, are ignored).

    Attributes
    ----------
    image_shapes : list of (int, int)
    """

    def __init__(self, image_shapes):
        shapes = []
        for i, shape in enumerate(image_shapes):
            shape = tuple(int(v) for v in tuple(shape)[:2])
            if len(shape) != 2 or min(shape) < 1:
                raise ValueError(f"image_shapes[{i}] must be (H, W) with H, W >= 1. Got {shape!r} instead.")
            shapes.append(shape)
        if not shapes:
            raise ValueError("RevealedPixels needs at least one image shape.")
        self.image_shapes = shapes
        self._masks = [np.zeros(s, dtype=bool) for s in shapes]
        self._n_revealed = 0  # kept with every reveal: the cost is read after each patch of a capped query

    def __len__(self) -> int:
        return len(self._masks)

    def copy(self) -> "RevealedPixels":
        """An independent copy (masks included)."""
        other = RevealedPixels(self.image_shapes)
        other._masks = [m.copy() for m in self._masks]
        other._n_revealed = self._n_revealed
        return other

    def _check_image(self, i) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(self):
            raise IndexError(f"Image index must be an int in [0, {len(self)}). Got {i!r} instead.")
        return int(i)

    def reveal_patches(self, image_index, coords, patch_size: int) -> "RevealedPixels":
        """Reveal square patches; pixels outside the image (mirror padding) are clipped away.

        Parameters
        ----------
        image_index : int or ndarray of int of shape (n,)
            Image of each patch (one int for all).
        coords : ndarray of int of shape (n, 2) or (2,)
            Top-left ``(y, x)`` of each patch in (padded) image coordinates.
        patch_size : int
            Side ``l`` of the patches.

        Returns
        -------
        self
        """
        if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
            raise ValueError(f"The 'patch_size' parameter must be an int >= 1. Got {patch_size!r} instead.")
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2) if np.size(coords) else np.empty((0, 2), np.int64)
        images = np.broadcast_to(np.asarray(image_index), (len(coords),)) if np.ndim(image_index) == 0 else np.asarray(image_index)
        if images.shape != (len(coords),):
            raise ValueError(
                f"image_index has {images.shape[0] if images.ndim else 1} entries but coords has {len(coords)} "
                "patches; expected one image index per patch (or a single int)."
            )
        for i, (y, x) in zip(images, coords):
            i = self._check_image(i.item() if hasattr(i, "item") else i)
            h, w = self.image_shapes[i]
            y0, x0 = max(int(y), 0), max(int(x), 0)
            y1, x1 = min(int(y) + patch_size, h), min(int(x) + patch_size, w)
            if y1 > y0 and x1 > x0:
                region = self._masks[i][y0:y1, x0:x1]
                self._n_revealed += region.size - int(np.count_nonzero(region))
                region[...] = True
        return self

    def reveal_images(self, image_indices) -> "RevealedPixels":
        """Reveal whole images.

        Parameters
        ----------
        image_indices : int or ndarray of int of shape (n,)

        Returns
        -------
        self
        """
        for i in np.atleast_1d(np.asarray(image_indices)).tolist():
            mask = self._masks[self._check_image(i)]
            self._n_revealed += mask.size - int(np.count_nonzero(mask))
            mask[...] = True
        return self

    def mask(self, i: int) -> np.ndarray:
        """Read-only boolean mask of shape (H, W) of the revealed pixels of image ``i``."""
        view = self._masks[self._check_image(i)].view()
        view.flags.writeable = False
        return view

    @property
    def n_revealed(self) -> int:
        """Number of unique revealed pixels over all images."""
        return self._n_revealed

    @property
    def n_total(self) -> int:
        """Number of pixels over all images."""
        return int(sum(h * w for h, w in self.image_shapes))

    @property
    def cost(self) -> float:
        """Annotation cost: unique revealed pixels / all pixels, in [0, 1]."""
        return self.n_revealed / self.n_total

    def to_dict(self) -> dict:
        """JSON-ready state: shapes and bit-packed, base64-encoded masks."""
        return {
            "format": "packbits-base64",
            "image_shapes": [list(s) for s in self.image_shapes],
            "masks": [base64.b64encode(np.packbits(m.ravel()).tobytes()).decode("ascii") for m in self._masks],
        }

    @classmethod
    def from_dict(cls, state: dict) -> "RevealedPixels":
        """Rebuild from :meth:`to_dict` output."""
        if state.get("format") != "packbits-base64":
            raise ValueError(f"Unknown RevealedPixels state format {state.get('format')!r}; expected 'packbits-base64'.")
        obj = cls(state["image_shapes"])
        if len(state["masks"]) != len(obj):
            raise ValueError(f"The state has {len(state['masks'])} masks for {len(obj)} image shapes.")
        for i, (encoded, (h, w)) in enumerate(zip(state["masks"], obj.image_shapes)):
            bits = np.unpackbits(np.frombuffer(base64.b64decode(encoded), dtype=np.uint8), count=h * w)
            if bits.size != h * w:
                raise ValueError(f"Mask {i} holds {bits.size} pixels; expected {h * w} for shape {(h, w)}.")
            obj._masks[i] = bits.astype(bool).reshape(h, w)
            obj._n_revealed += int(np.count_nonzero(obj._masks[i]))
        return obj

    def __repr__(self) -> str:
        return f"RevealedPixels(n_images={len(self)}, n_revealed={self.n_revealed}, n_total={self.n_total})"
