"""Tests of focal_al.metrics on hand-computed cases."""
import subprocess
import sys

import numpy as np
import pytest

from focal_al.metrics import dice, evaluate_segmentation, label_components, object_dice, object_f1, voe


def two_objects():
    gt = np.zeros((6, 6), int)
    gt[:3, :3] = 1  # 9 pixels
    gt[3:, 3:] = 4  # 9 pixels, ids need not be consecutive
    pred = np.zeros((6, 6), int)
    pred[:2, :3] = 1  # 6 pixels, inside object 1 (covers 6/9 >= 50 %)
    pred[4:, 4:] = 2  # 4 pixels, inside object 4 (covers 4/9 < 50 %)
    pred[0, 5] = 3  # 1 pixel, touches no object
    return pred, gt


def test_dice_and_voe_hand_computed():
    pred, gt = two_objects()
    # |P| = 11, |G| = 18, |P & G| = 10, |P | G| = 19
    assert dice(pred, gt) == pytest.approx(20 / 29)
    assert voe(pred, gt) == pytest.approx(1 - 10 / 19)


def test_empty_conventions():
    empty = np.zeros((4, 4), int)
    full = np.ones((4, 4), int)
    assert dice(empty, empty) == 1.0 and voe(empty, empty) == 0.0
    assert dice(empty, full) == 0.0 and voe(empty, full) == 1.0
    assert dice(full, empty) == 0.0 and voe(full, empty) == 1.0
    assert object_f1(empty, empty) == 1.0 and object_dice(empty, empty) == 1.0
    assert object_f1(empty, full) == 0.0 and object_dice(empty, full) == 0.0
    assert object_f1(full, empty) == 0.0 and object_dice(full, empty) == 0.0


def test_object_f1_hand_computed():
    pred, gt = two_objects()
    # TP = 1 (pred 1), FP = 2 (pred 2 covers < 50 %, pred 3 touches nothing), FN = 1 (gt 4)
    assert object_f1(pred, gt) == pytest.approx(2 / (2 + 2 + 1))


def test_object_f1_exactly_half_counts_once():
    gt = np.zeros((2, 4), int)
    gt[:, :] = 1
    pred = np.zeros((2, 4), int)
    pred[:, :2] = 1
    pred[:, 2:] = 2
    # Both halves cover exactly 50 %; the ground-truth object is matched once: TP 1, FP 1, FN 0.
    assert object_f1(pred, gt) == pytest.approx(2 / 3)


def test_object_dice_hand_computed():
    pred, gt = two_objects()
    d11 = 2 * 6 / (6 + 9)
    d24 = 2 * 4 / (4 + 9)
    gt_term = 9 / 18 * d11 + 9 / 18 * d24
    pred_term = 6 / 11 * d11 + 4 / 11 * d24 + 1 / 11 * 0.0
    assert object_dice(pred, gt) == pytest.approx(0.5 * (gt_term + pred_term))


def test_perfect_prediction():
    _, gt = two_objects()
    assert object_f1(gt, gt) == 1.0
    assert object_dice(gt, gt) == pytest.approx(1.0)
    assert dice(gt, gt) == 1.0 and voe(gt, gt) == 0.0


def test_label_components_connectivity():
    binary = np.array([[1, 0], [0, 1]])
    assert label_components(binary).max() == 1  # 8-connected by default (MATLAB bwlabel)
    assert label_components(binary, connectivity=1).max() == 2
    with pytest.raises(ValueError, match="'connectivity'"):
        label_components(binary, connectivity=3)


def test_evaluate_segmentation_means():
    pred, gt = two_objects()
    empty = np.zeros((3, 3), int)
    result = evaluate_segmentation([pred != 0, empty], [gt, empty])
    assert result["n_images"] == 2
    # The components of pred != 0 are the three hand-made objects (none of them touch).
    assert result["dice"] == pytest.approx((20 / 29 + 1.0) / 2)
    assert result["voe"] == pytest.approx((1 - 10 / 19) / 2)
    assert result["object_f1"] == pytest.approx((0.4 + 1.0) / 2)


def test_evaluate_segmentation_errors():
    with pytest.raises(ValueError, match="'pred_masks' has 1 images but 'gt_instance_masks' has 2"):
        evaluate_segmentation([np.zeros((2, 2))], [np.zeros((2, 2))] * 2)
    with pytest.raises(ValueError, match=r"image 0: pred shape \(2, 2\) != ground-truth shape \(3, 3\)"):
        evaluate_segmentation([np.zeros((2, 2))], [np.zeros((3, 3))])
    with pytest.raises(ValueError, match="same shape"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_import_does_not_load_torch():
    code = "import sys, focal_al.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
