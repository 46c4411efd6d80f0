import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from focal_al.patches import PatchGrid, partition, patch_grid, stitch


def _reference_positions(length, l, s):
    """Positions along one axis, written as the paper states the rule (independent of the code)."""
    if length < l:
        return [0], l
    positions = []
    y = 0
    while y + l <= length:
        positions.append(y)
        y += s
    remainder = length - (positions[-1] + l)
    if remainder > 0 and (s - remainder) < l / 2:
        positions.append(positions[-1] + s)
        return positions, positions[-1] + l
    return positions, length


geometry = st.tuples(
    st.integers(1, 24),  # patch size
    st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.75]),
    st.integers(0, 60),  # extra height beyond the patch size
    st.integers(0, 60),
)


@settings(max_examples=150, deadline=None)
@given(geometry)
def test_grid_matches_the_rule(params):
    l, rho, extra_h, extra_w = params
    s = int(round(l * (1 - rho)))
    if s < 1:
        with pytest.raises(ValueError, match="stride"):
            patch_grid((l + extra_h, l + extra_w), l, rho)
        return
    grid = patch_grid((l + extra_h, l + extra_w), l, rho)
    ys, ph = _reference_positions(l + extra_h, l, s)
    xs, pw = _reference_positions(l + extra_w, l, s)
    assert isinstance(grid, PatchGrid)
    assert grid.stride == s
    assert grid.padded_shape == (ph, pw)
    assert grid.coords.dtype == np.int64 and grid.coords.shape == (len(ys) * len(xs), 2)
    assert len(grid.coords) == len(ys) * len(xs)
    np.testing.assert_array_equal(np.unique(grid.coords[:, 0]), ys)
    np.testing.assert_array_equal(np.unique(grid.coords[:, 1]), xs)


@settings(max_examples=100, deadline=None)
@given(geometry, st.booleans(), st.integers(0, 2**32 - 1))
def test_stitch_of_partition_is_identity_on_covered_pixels(params, colour, seed):
    l, rho, extra_h, extra_w = params
    if round(l * (1 - rho)) < 1:
        return
    shape = (l + extra_h, l + extra_w) + ((3,) if colour else ())
    image = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    patches, coords = partition(image, l, rho)
    assert patches.dtype == np.uint8
    assert patches.shape == (len(coords), l, l) + shape[2:]
    restored = stitch(patches, coords, shape[:2])
    assert restored.shape == shape

    covered = np.zeros(shape[:2], dtype=bool)
    for y, x in coords:
        covered[y : y + l, x : x + l] = True
    np.testing.assert_array_equal(restored[covered], image[covered])
    assert np.isnan(restored[~covered]).all()
    # Coverage: everything except a clipped bottom/right remainder r with s - r >= l / 2.
    s = round(l * (1 - rho))
    for axis in (0, 1):
        rows = covered.any(axis=1 - axis)
        remainder = int((~rows).sum())
        assert rows[: shape[axis] - remainder].all()  # uncovered pixels only at the end
        if remainder:
            assert remainder < s and s - remainder >= l / 2


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(2, 30))
def test_allow_padding_mirrors_small_images_up_to_the_patch_size(h, w, l):
    image = np.arange(h * w, dtype=np.float32).reshape(h, w)
    if h < l or w < l:
        with pytest.raises(ValueError, match="smaller than patch_size"):
            partition(image, l)
    patches, coords = partition(image, l, allow_padding=True)
    restored = stitch(patches, coords, (h, w))
    covered = ~np.isnan(restored)
    np.testing.assert_array_equal(restored[covered], image[covered])
    # Padded values are copies of image values (a mirror never invents new pixels).
    assert np.isin(patches, image).all()


def test_mirror_padding_is_a_reflection():
    image = np.arange(10 * 12).reshape(10, 12)
    # l = 8, s = 8: remainders 2 and 4 need 6 and 4 px (>= l / 2): both clipped.
    grid = patch_grid((10, 12), 8)
    assert grid.padded_shape == (10, 12) and len(grid.coords) == 1
    # l = 8, s = 4 (overlap 0.5): rows 0, 4 and remainder 2 -> missing 2 < 4 -> pad 2 rows.
    patches, coords = partition(image, 8, 0.5)
    assert patch_grid((10, 12), 8, 0.5).padded_shape == (12, 12)
    last_row_patch = patches[(coords[:, 0] == 4) & (coords[:, 1] == 0)][0]
    np.testing.assert_array_equal(last_row_patch[6:], image[[8, 7], :8])


def test_fig3a_glas_image_gives_24_patches():
    # 522 x 775 (H x W), l = 128, rho = 0: rows 0..384 leave 10 px (missing 118 >= 64: clip),
    # columns 0..640 leave 7 px (missing 121 >= 64: clip): 4 x 6 = 24 patches, no padding.
    grid = patch_grid((522, 775), 128, 0.0)
    assert len(grid.coords) == 24
    assert grid.padded_shape == (522, 775)
    assert sorted(set(grid.coords[:, 0])) == [0, 128, 256, 384]
    image = np.zeros((522, 775, 3), dtype=np.uint8)
    patches, coords = partition(image, 128)
    assert patches.shape == (24, 128, 128, 3)


def test_stitch_averages_overlaps_and_keeps_trailing_dims():
    values = np.stack([np.zeros((4, 4, 2)), np.ones((4, 4, 2))])
    out = stitch(values, np.array([[0, 0], [0, 2]]), (4, 6))
    assert out.shape == (4, 6, 2) and out.dtype == np.float64
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 0.5, 0.5, 1, 1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"overlap": 1.5}, r"The 'overlap' parameter of partition must be a float in \[0, 1\)\. Got 1.5 instead\."),
        ({"overlap": -0.1}, "'overlap' parameter of partition"),
        ({"overlap": True}, "'overlap' parameter of partition"),
        ({"overlap": "0.5"}, "'overlap' parameter of partition"),
        ({"patch_size": 0}, r"The 'patch_size' parameter of partition must be a positive int\. Got 0"),
        ({"patch_size": 4.0}, "'patch_size' parameter of partition"),
        ({"patch_size": 1, "overlap": 0.6}, "stride of 0 pixels"),
        ({"patch_size": 32}, r"height \(16 px\) is smaller than patch_size=32.*allow_padding=True"),
    ],
)
def test_partition_rejects_bad_parameters(kwargs, match):
    params = {"patch_size": 8, "overlap": 0.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        partition(np.zeros((16, 40)), params.pop("patch_size"), params.pop("overlap"))


def test_patch_grid_names_itself_in_errors():
    with pytest.raises(ValueError, match="The 'overlap' parameter of patch_grid"):
        patch_grid((10, 10), 4, 1.0)
    with pytest.raises(ValueError, match="'shape' parameter of patch_grid"):
        patch_grid((10,), 4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_partition_rejects_non_finite_images(bad):
    image = np.zeros((16, 16), dtype=np.float32)
    image[3, 5] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        partition(image, 8)


def test_partition_rejects_non_arrays_and_bad_shapes():
    with pytest.raises(TypeError, match="numpy array"):
        partition([[1, 2], [3, 4]], 1)
    with pytest.raises(ValueError, match=r"Got shape \(2, 2, 2, 2\)"):
        partition(np.zeros((2, 2, 2, 2)), 1)


def test_stitch_rejects_mismatched_coords():
    with pytest.raises(ValueError, match="'coords' parameter of stitch"):
        stitch(np.zeros((3, 4, 4)), np.zeros((2, 2), dtype=int), (8, 8))
    with pytest.raises(ValueError, match="'values' parameter of stitch"):
        stitch(np.zeros((3, 4, 5)), np.zeros((3, 2), dtype=int), (8, 8))
