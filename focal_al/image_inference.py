"""Whole-image inference: prediction, descriptors and pool scores from whole-image maps.

:class:`WholeImageInference` is the part of :class:`~focal_al.estimator.SegmentationNet` that
runs whole images (grouped by size, padded to the network's multiple) rather than patches:
``predict_images`` for evaluation and annotation, ``score_images`` for image-level strategies,
and ``score_pool_from_images`` (``--scoring images``), which sums each patch's window of the
whole-image maps with summed-area tables instead of running every overlapping patch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from focal_al.scores import PoolScores
from focal_al.threads import threaded

__all__ = ["WholeImageInference"]


def _window_sums(maps: torch.Tensor, y0, x0, y1, x1) -> torch.Tensor:
    """Sums of ``maps`` ``(K, H, W)`` over windows ``[y0, y1) x [x0, x1)``: ``(K, n_windows)``."""
    table = F.pad(maps, (1, 0, 1, 0)).cumsum(dim=1).cumsum(dim=2)
    y0, x0, y1, x1 = (torch.as_tensor(np.asarray(v), dtype=torch.long) for v in (y0, x0, y1, x1))
    return table[:, y1, x1] - table[:, y0, x1] - table[:, y1, x0] + table[:, y0, x0]


class WholeImageInference:
    """Whole-image inference of a :class:`~focal_al.estimator.SegmentationNet` (a mixin)."""

    def _image_batches(self, images: Sequence, batch_size: int, method: str):
        """Yield (indices, padded batch tensor, (h, w)) for images grouped by size, order kept."""
        self._check_fitted(method)
        images = list(images)
        problems = []
        if not images:
            problems.append("'images' is empty; at least one image is needed.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            problems.append(f"'batch_size' must be an int >= 1; got {batch_size!r}.")
        in_channels = self._module_attr("in_channels") or 3
        for k, img in enumerate(images):
            shape = np.shape(img)
            if len(shape) != 3 or shape[2] != in_channels:
                problems.append(
                    f"image {k} has shape {shape}; expected (H, W, {in_channels}) (channels last)."
                )
            elif shape[0] == 0 or shape[1] == 0:
                problems.append(f"image {k} is empty (shape {shape}).")
        if problems:
            raise ValueError(f"Invalid input to SegmentationNet.{method}: " + " ".join(problems))
        multiple = self._module_attr("size_multiple") or 1
        order = sorted(range(len(images)), key=lambda k: np.shape(images[k])[:2])
        groups: list[list[int]] = []
        for k in order:
            if groups and np.shape(images[groups[-1][0]])[:2] == np.shape(images[k])[:2] and len(groups[-1]) < batch_size:
                groups[-1].append(k)
            else:
                groups.append([k])
        for group in groups:
            h, w = np.shape(images[group[0]])[:2]
            ph, pw = -h % multiple, -w % multiple
            # numpy's reflect padding repeats the reflection when the pad exceeds the image side.
            batch = np.stack([
                np.pad(np.asarray(images[k]), ((0, ph), (0, pw), (0, 0)), mode="reflect")
                if (ph or pw) else np.asarray(images[k])
                for k in group
            ])
            yield group, self._to_input(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))), (h, w)

    @threaded
    def predict_images(self, images: Sequence, *, batch_size: int = 1, return_descriptors: bool = False):
        """Class probabilities of whole images of any size.

        Each image is mirror-padded (reflect) at the bottom and right to a multiple of the
        network's ``size_multiple``, predicted whole, and the prediction cropped back.

        Parameters
        ----------
        images : sequence of ndarray of shape (H_k, W_k, 3), uint8
        batch_size : int, default=1
            Images of equal size are batched together, up to this many (on a 2-core CPU a batch
            of 4 GlaS half-resolution images ran about 3x faster per pixel than one at a time).

        Returns
        -------
        list of ndarray of shape (C, H_k, W_k), float32
            In the order of ``images``.
        descriptors : ndarray of shape (n_images, d), float32
            Only with ``return_descriptors=True``: the channel-wise mean of the bottleneck over
            each padded image, from the same forward pass (as in :meth:`score_images`).
        """
        self._check_fitted("predict_images")
        images = list(images)
        out: list = [None] * len(images)
        descriptors = None
        nonlin = self._get_predict_nonlinearity()
        module = None
        with torch.inference_mode():
            for group, xb, (h, w) in self._image_batches(images, batch_size, "predict_images"):
                module = module or self._inference_module()
                with self._autocast():
                    logits, desc = module(xb)
                proba = nonlin(logits.float())[:, :, :h, :w].float().cpu().numpy()
                for k, p in zip(group, proba):
                    out[k] = np.ascontiguousarray(p)
                if return_descriptors:
                    if descriptors is None:
                        descriptors = np.empty((len(images), desc.shape[1]), dtype=np.float32)
                    descriptors[group] = desc.float().cpu().numpy()
        return (out, descriptors) if return_descriptors else out

    @threaded
    def score_images(self, images: Sequence, *, batch_size: int = 1) -> PoolScores:
        """Uncertainty scores and descriptors of whole images of any size (image-level pools).

        Parameters
        ----------
        images : sequence of ndarray of shape (H_k, W_k, 3), uint8
        batch_size : int, default=1
            As in :meth:`predict_images`.

        Returns
        -------
        PoolScores
            Per image: mean entropy, margin and least confidence over the image's own pixels
            (padding excluded); descriptor = channel-wise mean of the bottleneck over the whole
            padded image.
        """
        images = list(images)
        n = len(images)
        entropy = np.empty(n, dtype=np.float32)
        margin = np.empty(n, dtype=np.float32)
        least = np.empty(n, dtype=np.float32)
        descriptors = None
        module = None
        with torch.inference_mode():
            for group, xb, (h, w) in self._image_batches(images, batch_size, "score_images"):
                module = module or self._inference_module()
                with self._autocast():
                    logits, desc = module(xb)
                proba = torch.softmax(logits.float()[:, :, :h, :w], dim=1)
                hh, m, lc = self._uncertainty(proba)
                entropy[group] = hh.cpu().numpy()
                margin[group] = m.cpu().numpy()
                least[group] = lc.cpu().numpy()
                if descriptors is None:
                    descriptors = np.empty((n, desc.shape[1]), dtype=np.float32)
                descriptors[group] = desc.float().cpu().numpy()
        return PoolScores(entropy=entropy, margin=margin, least_confidence=least, descriptors=descriptors)

    @threaded
    def score_pool_from_images(
        self, images: Sequence, image_index, coords, patch_size: int, *, batch_size: int = 4
    ) -> PoolScores:
        """Approximate :meth:`score_pool` of a patch pool from one pass over its whole images.

        Each image is predicted once (mirror-padded at the bottom and right, as ``partition``
        pads, then to the network's multiple); a patch's entropy, margin and least confidence
        are the means of the whole-image pixel maps over its window (summed-area tables), and its
        descriptor the mean of the bottleneck map over the cells its window covers. Not exact:
        a patch's pixels see context beyond the patch, and windows not aligned to ``2**depth``
        cells take the cells they overlap. ``score_pool`` (patch by patch) is the default.

        Parameters
        ----------
        images : sequence of ndarray of shape (H_k, W_k, 3), uint8
        image_index : array-like of shape (n_patches,), int
            Index into ``images`` of each patch (``PatchStore.image_index``).
        coords : array-like of shape (n_patches, 2), int
            ``(y, x)`` top-left corner of each patch (``PatchStore.coords``).
        patch_size : int
            Side ``l`` of the patches.
        batch_size : int, default=4
            Images whose padded sizes are equal are run together, up to this many (on CPU a
            batch of one image runs at a third of the speed per pixel of a batch of four).

        Returns
        -------
        PoolScores
            One row per patch, in the order of ``image_index``.
        """
        self._check_fitted("score_pool_from_images")
        images = list(images)
        image_index = np.asarray(image_index)
        coords = np.asarray(coords)
        problems = []
        if not hasattr(self.module_, "forward_maps"):
            problems.append(f"the module {type(self.module_).__name__} has no forward_maps(x) method.")
        if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
            problems.append(f"'patch_size' must be an int >= 1; got {patch_size!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            problems.append(f"'batch_size' must be an int >= 1; got {batch_size!r}.")
        if image_index.ndim != 1 or not np.issubdtype(image_index.dtype, np.integer):
            problems.append(f"'image_index' must be a 1-D int array; got {image_index.dtype} {image_index.shape}.")
        elif len(image_index) == 0:
            problems.append("'image_index' is empty.")
        elif image_index.min() < 0 or image_index.max() >= len(images):
            problems.append(f"'image_index' must lie in [0, {len(images)}); got [{image_index.min()}, {image_index.max()}].")
        if coords.shape != (len(image_index), 2) or not np.issubdtype(coords.dtype, np.integer):
            problems.append(f"'coords' must be an int array of shape ({len(image_index)}, 2); got {coords.dtype} {coords.shape}.")
        elif len(coords) and coords.min() < 0:
            problems.append("'coords' must be non-negative.")
        if problems:
            raise ValueError("Invalid input to SegmentationNet.score_pool_from_images: " + " ".join(problems))
        n, l = len(image_index), int(patch_size)
        multiple = self._module_attr("size_multiple") or 1
        entropy = np.empty(n, dtype=np.float32)
        margin = np.empty(n, dtype=np.float32)
        least = np.empty(n, dtype=np.float32)
        descriptors = None
        # Padded size per image: cover every patch (as partition mirror-pads), then the multiple.
        rows_of, shape_of = {}, {}
        for k in np.unique(image_index):
            rows = np.flatnonzero(image_index == k)
            h, w = np.shape(images[k])[:2]
            height = max(h, int(coords[rows, 0].max()) + l)
            width = max(w, int(coords[rows, 1].max()) + l)
            rows_of[k] = rows
            shape_of[k] = (height + -height % multiple, width + -width % multiple)
        groups: dict = {}
        for k in rows_of:
            groups.setdefault(shape_of[k], []).append(k)
        module = self._inference_module()
        with torch.inference_mode():
            for (height, width), members in groups.items():
                for first in range(0, len(members), batch_size):
                    chunk = members[first:first + batch_size]
                    batch = np.stack([
                        np.pad(np.asarray(images[k]), ((0, height - np.shape(images[k])[0]),
                                                       (0, width - np.shape(images[k])[1]), (0, 0)), mode="reflect")
                        for k in chunk
                    ])
                    x = self._to_input(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))))
                    with self._autocast():
                        logits, bottleneck = module.forward_maps(x)
                    proba = torch.softmax(logits.float(), dim=1)
                    top = proba.topk(2, dim=1).values
                    maps = torch.stack([torch.special.entr(proba).sum(dim=1), top[:, 0] - top[:, 1], 1.0 - top[:, 0]], dim=1)
                    maps = maps.double().cpu()
                    cells_all = bottleneck.double().cpu()
                    for j, k in enumerate(chunk):
                        rows = rows_of[k]
                        ys, xs = coords[rows, 0], coords[rows, 1]
                        sums = _window_sums(maps[j], ys, xs, ys + l, xs + l) / (l * l)
                        entropy[rows], margin[rows], least[rows] = sums.float().numpy()
                        y0, x0 = ys // multiple, xs // multiple
                        y1, x1 = -(-(ys + l) // multiple), -(-(xs + l) // multiple)
                        area = torch.as_tensor((y1 - y0) * (x1 - x0), dtype=torch.float64)
                        desc = (_window_sums(cells_all[j], y0, x0, y1, x1) / area).T
                        if descriptors is None:
                            descriptors = np.empty((n, desc.shape[1]), dtype=np.float32)
                        descriptors[rows] = desc.float().numpy()
        return PoolScores(entropy=entropy, margin=margin, least_confidence=least, descriptors=descriptors)
