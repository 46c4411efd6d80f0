import json

import numpy as np
import pytest

from focal_al.cost import RevealedPixels


def test_overlapping_patches_count_once():
    r = RevealedPixels([(8, 8), (4, 6)])
    assert r.n_total == 64 + 24 and r.n_revealed == 0 and r.cost == 0.0
    # Two 4x4 patches overlapping by 2 columns: 16 + 16 - 8 = 24 pixels.
    r.reveal_patches(0, [[0, 0], [0, 2]], 4)
    assert r.n_revealed == 24
    r.reveal_patches(0, [[0, 0]], 4)
    assert r.n_revealed == 24
    assert r.cost == pytest.approx(24 / 88)


def test_patches_past_the_border_are_clipped():
    r = RevealedPixels([(5, 7)])
    # The mirror-padded patch at (2, 4) of side 4 covers rows 2..5 and columns 4..7: clipped to 3 x 3.
    r.reveal_patches(0, [2, 4], 4)
    assert r.n_revealed == 9
    assert r.mask(0)[2:, 4:].all() and not r.mask(0)[:2].any()


def test_per_patch_image_indices_and_whole_images():
    r = RevealedPixels([(4, 4), (4, 4), (2, 3, 3)])
    r.reveal_patches(np.array([0, 1]), np.array([[0, 0], [2, 2]]), 2)
    assert r.n_revealed == 8 and r.mask(1)[2:, 2:].all()
    r.reveal_images([2])
    assert r.n_revealed == 14 and r.mask(2).shape == (2, 3)
    r.reveal_images(0)
    assert r.mask(0).all() and r.n_revealed == 16 + 4 + 6


def test_mask_is_read_only():
    r = RevealedPixels([(2, 2)])
    with pytest.raises(ValueError):
        r.mask(0)[0, 0] = True


def test_round_trip_through_json():
    r = RevealedPixels([(5, 7), (3, 3)])
    r.reveal_patches([0, 1], [[1, 2], [0, 0]], 2)
    state = json.loads(json.dumps(r.to_dict()))
    back = RevealedPixels.from_dict(state)
    assert back.image_shapes == r.image_shapes and back.n_revealed == r.n_revealed
    for i in range(2):
        np.testing.assert_array_equal(back.mask(i), r.mask(i))
    with pytest.raises(ValueError, match="format"):
        RevealedPixels.from_dict({**state, "format": "raw"})


def test_errors():
    with pytest.raises(ValueError, match="image_shapes\\[0\\]"):
        RevealedPixels([(0, 4)])
    with pytest.raises(ValueError, match="at least one"):
        RevealedPixels([])
    r = RevealedPixels([(4, 4)])
    with pytest.raises(IndexError, match="\\[0, 1\\)"):
        r.reveal_images([1])
    with pytest.raises(ValueError, match="one image index per patch"):
        r.reveal_patches([0, 0, 0], [[0, 0], [1, 1]], 2)
    with pytest.raises(ValueError, match="'patch_size'"):
        r.reveal_patches(0, [[0, 0]], 0)


def test_boundary_map_marks_object_outlines_only():
    from focal_al.cost import boundary_map

    labels = np.zeros((6, 7), dtype=np.int32)
    labels[1:5, 1:4] = 1   # a 4x3 object
    labels[1:5, 4:6] = 2   # touching another object
    edge = boundary_map(labels)
    assert not edge[labels == 0].any()
    assert edge[1:5, 1].all() and edge[1:5, 3].all() and edge[1:5, 4].all()  # outer and shared sides
    assert not edge[2:4, 2].any()  # the inside of object 1
    full = np.ones((3, 3), dtype=np.uint8)  # an object to the image border: its border is its outline
    assert boundary_map(full).sum() == 8
    with pytest.raises(ValueError, match="2-D label image"):
        boundary_map(np.zeros((2, 2, 2)))
