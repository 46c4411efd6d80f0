"""Whole-slide images into a PatchStore: small pyramidal TIFFs written with tifffile from GlaS tiles."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from focal_al.slides import choose_level, load_slides, open_slide
from focal_al.store import PatchStore

MPP = 0.5  # level-0 micrometres per pixel of the test slides
TISSUE = (64, 96)  # (y, x) of the GlaS tile on the level-0 canvas


def write_slide(path, canvas, *, mpp=MPP, downsamples=(2, 4)):
    """A pyramidal tiled TIFF: level 0 then its downsampled levels as sub-IFDs (as QuPath/bfconvert write)."""
    unit = "NONE" if mpp is None else "CENTIMETER"  # no unit: tiffslide reports no mpp
    opts = dict(tile=(128, 128), photometric="rgb", compression="zlib", resolutionunit=unit)
    res = None if mpp is None else 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(canvas, subifds=len(downsamples), resolution=None if res is None else (res, res),
                  metadata={"axes": "YXS"}, **opts)
        for k in downsamples:
            tif.write(canvas[::k, ::k], subfiletype=1, resolution=None if res is None else (res / k, res / k), **opts)
    return path


@pytest.fixture(scope="module")
def glas_tile(glas_dir):
    return np.asarray(Image.open(glas_dir / "train_1.png").convert("RGB"))[:384, :512]


@pytest.fixture(scope="module")
def canvas(glas_tile):
    rng = np.random.default_rng(0)
    # Glass: near-white, slightly noisy, no colour; the tile sits at TISSUE.
    canvas = np.clip(rng.normal(238, 3, (768, 1024, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    y, x = TISSUE
    canvas[y:y + glas_tile.shape[0], x:x + glas_tile.shape[1]] = glas_tile
    return canvas


@pytest.fixture(scope="module")
def slides(tmp_path_factory, canvas):
    folder = tmp_path_factory.mktemp("slides")
    a = write_slide(folder / "a.tif", canvas)
    b = write_slide(folder / "b.tif", np.ascontiguousarray(canvas[:, ::-1]))
    return a, b


def test_only_tissue_patches_level0_coordinates(tmp_path, slides, canvas, glas_tile):
    store = load_slides(slides, tmp_path / "pool.h5", patch_size=64, overlap=0.5, level=1)
    assert store.image_names == ["a.tif", "b.tif"]
    assert store.image_shapes.tolist() == [[384, 512], [384, 512]]
    np.testing.assert_array_equal(store.image_downsamples, [2.0, 2.0])
    np.testing.assert_array_equal(store.coords_level0, store.coords * 2)
    assert len(store) > 0 and np.all(store.labels[:] == 255)
    level1 = canvas[::2, ::2]
    y0, x0 = TISSUE
    h, w = glas_tile.shape[:2]
    for i in store.image_patches("a.tif"):
        y, x = store.coords[i]
        np.testing.assert_array_equal(store.patches[i], level1[y:y + 64, x:x + 64].transpose(2, 0, 1))
        # level-0 box of the patch overlaps the tissue by at least half
        ys, xs = store.coords_level0[i]
        inter = max(0, min(ys + 128, y0 + h) - max(ys, y0)) * max(0, min(xs + 128, x0 + w) - max(xs, x0))
        assert inter >= 0.4 * 128 * 128  # thumbnail resolution blurs the 50 % rule slightly
    # every patch well inside the tile is kept
    inside = [(y, x) for y in range(0, 384 - 63, 32) for x in range(0, 512 - 63, 32)
              if y * 2 >= y0 and x * 2 >= x0 and y * 2 + 128 <= y0 + h and x * 2 + 128 <= x0 + w]
    kept = {tuple(c) for c in store.coords[store.image_patches("a.tif")]}
    assert set(inside) <= kept
    # background (the glass) is never a patch: the full grid has many more positions
    assert len(kept) < 11 * 15


def test_mpp_selects_level_per_slide(tmp_path, canvas):
    fine = write_slide(tmp_path / "fine.tif", canvas, mpp=0.25)
    coarse = write_slide(tmp_path / "coarse.tif", canvas, mpp=0.5)
    with open_slide(fine) as s:
        assert choose_level(s, mpp=1.0) == 2
    store = load_slides([fine, coarse], tmp_path / "pool.h5", patch_size=32, mpp=1.0)
    np.testing.assert_array_equal(store.image_downsamples, [4.0, 2.0])
    for image, ds in ((0, 4), (1, 2)):
        rows = store.image_index == image
        np.testing.assert_array_equal(store.coords_level0[rows], store.coords[rows] * ds)


def test_reads_blocks_never_the_whole_slide(tmp_path, slides, monkeypatch):
    import tiffslide

    sizes = []
    original = tiffslide.TiffSlide.read_region

    def spy(self, location, level, size, *args, **kwargs):
        sizes.append(tuple(size))
        return original(self, location, level, size, *args, **kwargs)

    monkeypatch.setattr(tiffslide.TiffSlide, "read_region", spy)
    store = load_slides(slides[:1], tmp_path / "pool.h5", patch_size=32, level=0, block_size=128,
                        thumbnail_size=256)
    assert len(store) > 0 and len(sizes) > 1
    assert max(w for w, h in sizes) < 128 + 32 and max(h for w, h in sizes) < 128 + 32


def test_same_store_whatever_the_block_size(tmp_path, slides):
    small = load_slides(slides, tmp_path / "small.h5", patch_size=32, overlap=0.25, level=1, block_size=64)
    large = load_slides(slides, tmp_path / "large.h5", patch_size=32, overlap=0.25, level=1, block_size=4096)
    order_s = np.lexsort((small.coords[:, 1], small.coords[:, 0], small.image_index))
    order_l = np.lexsort((large.coords[:, 1], large.coords[:, 0], large.image_index))
    np.testing.assert_array_equal(small.coords[order_s], large.coords[order_l])
    np.testing.assert_array_equal(small.patches[order_s], large.patches[order_l])


def test_plain_store_level0_defaults(tmp_path):
    img = np.zeros((64, 64, 3), np.uint8)
    store = PatchStore.build(tmp_path / "s.h5", [img], [np.zeros((64, 64), np.uint8)], ["x"], patch_size=32, overlap=0)
    np.testing.assert_array_equal(store.coords_level0, store.coords)
    np.testing.assert_array_equal(store.image_downsamples, [1.0])


def test_errors_name_the_problem(tmp_path, slides, canvas):
    out = tmp_path / "pool.h5"
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        load_slides([tmp_path / "nope.tif"], out, patch_size=32)
    with pytest.raises(ValueError, match=r"'level' parameter must be an int in \[0, 2\].*Got 3"):
        load_slides(slides[:1], out, patch_size=32, level=3)
    with pytest.raises(ValueError, match=r"No pyramid level .* provides mpp=3.*\[0.5, 1.0, 2.0\]"):
        load_slides(slides[:1], out, patch_size=32, mpp=3.0)
    with pytest.raises(ValueError, match="either 'level' or 'mpp'"):
        load_slides(slides[:1], out, patch_size=32, level=0, mpp=0.5)
    bare = write_slide(tmp_path / "bare.tif", canvas, mpp=None)
    with pytest.raises(ValueError, match="records no resolution"):
        load_slides([bare], out, patch_size=32, mpp=0.5)
    not_a_slide = tmp_path / "notes.tif"
    not_a_slide.write_text("not a tiff")
    with pytest.raises(ValueError, match="could not be read as a whole-slide image"):
        load_slides([slides[0], not_a_slide], out, patch_size=32)
    # nothing half-written is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.tif", "notes.tif"]
    load_slides(slides[:1], out, patch_size=32, level=2)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        load_slides(slides[:1], out, patch_size=32, level=2)


def test_blank_slide_is_kept_empty_with_a_warning(tmp_path, slides):
    blank = write_slide(tmp_path / "blank.tif", np.full((256, 256, 3), 240, np.uint8))
    with pytest.warns(UserWarning, match="blank.tif' has no patch"):
        store = load_slides([blank, slides[0]], tmp_path / "pool.h5", patch_size=32, level=1)
    assert store.image_names == ["blank.tif", "a.tif"]
    assert len(store.image_patches("blank.tif")) == 0 and len(store.image_patches("a.tif")) > 0


def test_cli_slides(tmp_path, slides):
    from click.testing import CliRunner

    from focal_al.cli import main

    out = tmp_path / "pool.h5"
    result = CliRunner().invoke(main, ["slides", *map(str, slides), "--out", str(out), "--patch-size", "32",
                                       "--mpp", "1.0"])
    assert result.exit_code == 0, result.output
    assert "from 2 slides" in result.output
    np.testing.assert_array_equal(PatchStore(out).image_downsamples, [2.0, 2.0])
    result = CliRunner().invoke(main, ["slides", str(slides[0]), "--out", str(tmp_path / "b.h5"),
                                       "--patch-size", "32", "--level", "7"])
    assert result.exit_code != 0 and "'level' parameter must be an int in [0, 2]" in result.output


def test_slides_end_to_end_store_distributed_scoring_query(tmp_path, slides):
    """A folder of slides through focal-al: store, scoring on a 2-worker LocalCluster, streaming query."""
    from focal_al.distributed import connect, score_pool_distributed
    from focal_al.estimator import SegmentationNet
    from focal_al.streaming import streaming_focannot

    store = load_slides(slides, tmp_path / "pool.h5", patch_size=64, overlap=0.5, level=1)
    net = SegmentationNet(module__width=2, module__depth=2, batch_size=8, max_epochs=1, random_state=0)
    # Any labels will do for scoring: the net only has to be trained (here on a dark-pixel rule).
    net.fit(store.patches[:8], (store.patches[:8].mean(axis=1) < 150).astype(np.int64))
    with connect(None, n_workers=2, threads_per_worker=1) as client:
        scores = score_pool_distributed(net, store, tmp_path / "round1.h5", client=client)
    single = net.score_pool(store.patches)
    np.testing.assert_allclose(scores.entropy, single.entropy, rtol=1e-6, atol=1e-7)
    picked = streaming_focannot(scores, 5, k=2, random_state=0)
    assert len(set(picked.tolist())) == 5
    # The selection lands in level-0 pixels, where QuPath's annotations are.
    np.testing.assert_array_equal(store.coords_level0[np.sort(picked)], store.coords[np.sort(picked)] * 2)


def test_tissue_detection_in_numpy_equals_scikit_image():
    """The overview's block means, saturation, luminance and Otsu threshold (numpy, to keep a slide
    project's memory low) are scikit-image's, including the partial blocks at the border."""
    from skimage.color import rgb2gray, rgb2hsv
    from skimage.filters import threshold_otsu
    from skimage.measure import block_reduce

    from focal_al.slides import _block_mean, _grey, _otsu, _saturation

    rng = np.random.default_rng(0)
    for shape in ((37, 53, 3), (64, 64, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_allclose(_saturation(image), rgb2hsv(image)[..., 1], atol=1e-6)
        np.testing.assert_allclose(_grey(image), rgb2gray(image), atol=1e-6)
        saturation = rgb2hsv(image)[..., 1]
        assert _otsu(saturation) == pytest.approx(threshold_otsu(saturation))
        for factor in (1, 3, 4):
            expected = block_reduce(image.astype(np.float64), (factor, factor, 1), func=np.nanmean, cval=np.nan)
            np.testing.assert_allclose(_block_mean(image, factor), expected, atol=1e-9)
