"""Segmentation metrics: pixel Dice and VOE (Eqs. 9-10) and the GlaS object-level F1 and Dice.

numpy and scipy only (no torch), so evaluation code can import it cheaply.

Conventions
-----------
* The foreground of a mask is its non-zero pixels (class 1 of a class-label mask, any object of an
  instance mask).
* Empty cases: when both prediction and ground truth are empty, Dice = 1, VOE = 0, object F1 = 1 and
  object Dice = 1 (a perfect answer to an empty question); when exactly one of them is empty,
  Dice = 0, VOE = 1, object F1 = 0 and object Dice = 0.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "dice",
    "voe",
    "label_components",
    "object_f1",
    "object_dice",
    "evaluate_segmentation",
]


def _pair(pred, target, func: str) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"{func}: 'pred' and 'target' must have the same shape. Got {pred.shape} and {target.shape}."
        )
    return pred, target


def dice(pred, target) -> float:
    """Pixel Dice of the foreground class (Eq. 9): ``2 |P & G| / (|P| + |G|)``.

    Parameters
    ----------
    pred, target : array-like of shape (H, W)
        Masks; non-zero pixels are foreground.

    Returns
    -------
    float
        In [0, 1]; 1 when both masks are empty.
    """
    pred, target = _pair(pred, target, "dice")
    p, g = pred != 0, target != 0
    total = int(p.sum()) + int(g.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / total


def voe(pred, target) -> float:
    """Volumetric overlap error of the foreground class (Eq. 10): ``1 - |P & G| / |P | G|``.

    Parameters
    ----------
    pred, target : array-like of shape (H, W)
        Masks; non-zero pixels are foreground.

    Returns
    -------
    float
        A fraction in [0, 1] (not a percentage); 0 when both masks are empty.
    """
    pred, target = _pair(pred, target, "voe")
    p, g = pred != 0, target != 0
    union = int(np.logical_or(p, g).sum())
    if union == 0:
        return 0.0
    return 1.0 - int(np.logical_and(p, g).sum()) / union


def label_components(binary, *, connectivity: int = 2) -> np.ndarray:
    """Connected components of a binary mask, as an instance mask (``scipy.ndimage.label``).

    Parameters
    ----------
    binary : array-like of shape (H, W)
        Non-zero pixels are foreground.
    connectivity : {1, 2}, default=2
        1: 4-connectivity; 2: 8-connectivity (MATLAB's ``bwlabel`` default, used by the GlaS
        evaluation code).

    Returns
    -------
    ndarray of shape (H, W), int32
        0 = background, 1..N objects.
    """
    binary = np.asarray(binary)
    if connectivity not in (1, 2):
        raise ValueError(f"The 'connectivity' parameter of label_components must be 1 or 2. Got {connectivity!r} instead.")
    structure = ndimage.generate_binary_structure(binary.ndim, connectivity)
    labels, _ = ndimage.label(binary != 0, structure=structure)
    return labels.astype(np.int32, copy=False)


def _overlaps(pred_instances, gt_instances, func: str):
    """Sizes of the objects and their pairwise overlap counts.

    Returns
    -------
    pred_sizes : ndarray of shape (n_pred,)
    gt_sizes : ndarray of shape (n_gt,)
    overlap : ndarray of shape (n_pred, n_gt)
        Pixels shared by predicted object j and ground-truth object i.
    """
    pred, gt = _pair(pred_instances, gt_instances, func)
    # Instance ids need not be consecutive (GlaS annotations skip some): relabel to 0..n-1.
    pred_ids, p = np.unique(pred.ravel(), return_inverse=True)
    gt_ids, g = np.unique(gt.ravel(), return_inverse=True)
    n_g = len(gt_ids)
    table = np.bincount(p.astype(np.int64) * n_g + g, minlength=len(pred_ids) * n_g)
    table = table.reshape(len(pred_ids), n_g)
    pred_sizes, gt_sizes = table.sum(axis=1), table.sum(axis=0)
    keep_p, keep_g = pred_ids != 0, gt_ids != 0
    table = table[np.ix_(keep_p, keep_g)]
    pred_sizes, gt_sizes = pred_sizes[keep_p], gt_sizes[keep_g]
    return pred_sizes, gt_sizes, table


def object_f1(pred_instances, gt_instances) -> float:
    """GlaS object-level F1 score.

    A predicted object is a true positive if it covers at least 50 % of the ground-truth object it
    overlaps most (each ground-truth object is matched at most once, so a second prediction that
    also covers exactly half of it counts as a false positive); any other predicted object is a false
    positive; a ground-truth object matched by no true positive is a false negative.
    ``F1 = 2 TP / (2 TP + FP + FN)``.

    Parameters
    ----------
    pred_instances, gt_instances : array-like of shape (H, W), int
        Instance masks: 0 = background, other values = object ids (not necessarily consecutive).

    Returns
    -------
    float
        In [0, 1]; 1 when both masks have no object, 0 when exactly one has none.
    """
    pred_sizes, gt_sizes, overlap = _overlaps(pred_instances, gt_instances, "object_f1")
    n_pred, n_gt = len(pred_sizes), len(gt_sizes)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    tp = 0
    matched = np.zeros(n_gt, dtype=bool)
    if n_gt:
        for j in range(n_pred):
            i = int(np.argmax(overlap[j]))
            if overlap[j, i] > 0 and 2 * overlap[j, i] >= gt_sizes[i] and not matched[i]:
                matched[i] = True
                tp += 1
    fp = n_pred - tp
    fn = n_gt - tp
    return 2.0 * tp / (2 * tp + fp + fn)


def object_dice(pred_instances, gt_instances) -> float:
    """GlaS object-level Dice.

    ``1/2 [sum_i (|G_i| / sum|G|) Dice(G_i, S*(G_i)) + sum_j (|S_j| / sum|S|) Dice(G*(S_j), S_j)]``,
    where ``S*(G_i)`` is the predicted object overlapping ``G_i`` most and ``G*(S_j)`` the
    ground-truth object overlapping ``S_j`` most (Dice 0 when there is none).

    Parameters
    ----------
    pred_instances, gt_instances : array-like of shape (H, W), int
        Instance masks: 0 = background, other values = object ids.

    Returns
    -------
    float
        In [0, 1]; 1 when both masks have no object, 0 when exactly one has none.
    """
    pred_sizes, gt_sizes, overlap = _overlaps(pred_instances, gt_instances, "object_dice")
    n_pred, n_gt = len(pred_sizes), len(gt_sizes)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    # Dice of every (S_j, G_i) pair; only the best-overlapping partner of each object is used.
    pair_dice = 2.0 * overlap / (pred_sizes[:, None] + gt_sizes[None, :])
    best_pred = np.argmax(overlap, axis=0)
    gt_term = np.where(overlap[best_pred, np.arange(n_gt)] > 0, pair_dice[best_pred, np.arange(n_gt)], 0.0)
    best_gt = np.argmax(overlap, axis=1)
    pred_term = np.where(overlap[np.arange(n_pred), best_gt] > 0, pair_dice[np.arange(n_pred), best_gt], 0.0)
    return 0.5 * (
        float(np.sum(gt_sizes / gt_sizes.sum() * gt_term)) + float(np.sum(pred_sizes / pred_sizes.sum() * pred_term))
    )


def evaluate_segmentation(pred_masks: Sequence, gt_instance_masks: Sequence) -> dict:
    """Mean pixel and object metrics over a set of test images.

    Parameters
    ----------
    pred_masks : sequence of array-like of shape (H_k, W_k)
        Predicted masks (class labels; non-zero = foreground). Predicted objects are their
        8-connected components (:func:`label_components`).
    gt_instance_masks : sequence of array-like of shape (H_k, W_k), int
        Ground-truth instance masks (0 = background, 1..N objects), same shapes as ``pred_masks``.

    Returns
    -------
    dict
        ``{"dice", "voe", "object_f1", "object_dice"}``: means over images (floats), and
        ``"n_images"`` (int).
    """
    pred_masks = list(pred_masks)
    gt_instance_masks = list(gt_instance_masks)
    problems = []
    if not pred_masks:
        problems.append("'pred_masks' is empty.")
    if len(pred_masks) != len(gt_instance_masks):
        problems.append(
            f"'pred_masks' has {len(pred_masks)} images but 'gt_instance_masks' has {len(gt_instance_masks)}."
        )
    else:
        problems += [
            f"image {k}: pred shape {np.shape(p)} != ground-truth shape {np.shape(g)}"
            for k, (p, g) in enumerate(zip(pred_masks, gt_instance_masks))
            if np.shape(p) != np.shape(g)
        ]
    if problems:
        raise ValueError("evaluate_segmentation: " + " ".join(problems))
    per_image = {"dice": [], "voe": [], "object_f1": [], "object_dice": []}
    for pred, gt in zip(pred_masks, gt_instance_masks):
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        per_image["dice"].append(dice(pred, gt))
        per_image["voe"].append(voe(pred, gt))
        instances = label_components(pred)
        per_image["object_f1"].append(object_f1(instances, gt))
        per_image["object_dice"].append(object_dice(instances, gt))
    result = {name: float(np.mean(values)) for name, values in per_image.items()}
    result["n_images"] = len(pred_masks)
    return result
