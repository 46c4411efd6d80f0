import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from focal_al.datasets import (
    GLAS_SPLITS,
    SegmentationDataset,
    load_folder,
    load_glas,
    make_synthetic,
)
from focal_al.patches import partition
from focal_al.store import PatchStore
from focal_al.synthetic import make_synthetic_image


# --- synthetic ---------------------------------------------------------------------------------
def test_synthetic_is_deterministic_and_well_formed():
    a = make_synthetic(4, (96, 128), seed=5)
    b = make_synthetic(4, (96, 128), seed=5)
    assert len(a) == 4 and a.names == [f"synthetic_{i}" for i in range(4)]
    assert set(a.grades) <= {"benign", "malignant"}
    for image, mask, image_b, mask_b in zip(a.images, a.masks, b.images, b.masks):
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8
        assert mask.shape == (96, 128) and mask.dtype == np.int32
        np.testing.assert_array_equal(image, image_b)
        np.testing.assert_array_equal(mask, mask_b)
        ids = np.unique(mask)
        np.testing.assert_array_equal(ids, np.arange(ids.max() + 1))  # consecutive instance ids
        assert ids.max() >= 3  # intensive: several objects per image
        assert 0.05 < (mask > 0).mean() < 0.7  # both classes well represented


def test_synthetic_image_does_not_depend_on_n_images_but_on_seed():
    few, many = make_synthetic(2, (64, 64), seed=1), make_synthetic(5, (64, 64), seed=1)
    np.testing.assert_array_equal(few.images[1], many.images[1])
    other = make_synthetic(2, (64, 64), seed=2)
    assert not np.array_equal(few.images[0], other.images[0])


def test_synthetic_has_stain_variation_and_rare_objects():
    data = make_synthetic(24, seed=0)
    mean_colours = np.array([im.reshape(-1, 3).mean(axis=0) for im in data.images])
    assert mean_colours.std(axis=0).max() > 3  # per-image stain differs
    assert 0 < data.grades.count("malignant") < 24


def _kinds(seed, i, size, malignant):
    return make_synthetic_image(np.random.default_rng([seed, i]), size, malignant=malignant, with_kinds=True)


def test_synthetic_kinds_match_the_mask_and_do_not_change_the_image():
    for i in range(3):
        image, mask, kinds = _kinds(4, i, (64, 80), malignant=True)
        image_b, mask_b = make_synthetic_image(np.random.default_rng([4, i]), (64, 80), malignant=True)
        np.testing.assert_array_equal(image, image_b)
        np.testing.assert_array_equal(mask, mask_b)
        assert kinds.shape == mask.shape and kinds.dtype == np.uint8
        assert set(np.unique(kinds)) <= {0, 1, 2}
        np.testing.assert_array_equal(kinds > 0, mask > 0)
        # A rare object is whole instances: no instance id is part rare, part gland.
        for label in np.unique(mask[kinds == 2]):
            assert set(np.unique(kinds[mask == label])) == {2}


def test_synthetic_rare_objects_are_rare_and_look_like_stroma_not_glands():
    draws = [_kinds(0, i, (128, 128), malignant=i % 4 == 0) for i in range(12)]
    counts = np.array([np.bincount(kinds.ravel(), minlength=3) for _, _, kinds in draws])
    has_rare = counts[:, 2] > 0
    assert has_rare[::4].all()  # every malignant image holds one
    assert 0 < has_rare.sum() < len(draws) / 2  # a minority of the images
    assert counts[:, 2].sum() < 0.3 * counts[:, 1:].sum()  # a minority of the foreground
    for image, _, kinds in draws:
        if not (kinds == 2).any():
            continue
        colour = [image[kinds == k].reshape(-1, 3).mean(axis=0) for k in range(3)]
        # Pale like the stroma, far from the purple glands: colour alone does not find them.
        assert np.linalg.norm(colour[2] - colour[0]) < np.linalg.norm(colour[2] - colour[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_images": 0}, "'n_images' parameter of make_synthetic must be a positive int. Got 0"),
        ({"size": (16, 64)}, r"'size' parameter of make_synthetic .* >= 32. Got \(16, 64\)"),
        ({"size": 64}, "'size' parameter of make_synthetic"),
        ({"seed": -1}, "'seed' parameter of make_synthetic"),
    ],
)
def test_synthetic_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic(**kwargs)


# --- SegmentationDataset -----------------------------------------------------------------------
def _tiny_dataset():
    image = np.zeros((8, 10, 3), dtype=np.uint8)
    mask = np.zeros((8, 10), dtype=np.int32)
    mask[2:5, 3:7] = 2
    mask[6:, :2] = 1
    return SegmentationDataset([image, image + 1], [mask, mask * 0], ["a", "b"], ["x", "y"])


def test_dataset_class_labels_subset_and_rescale():
    data = _tiny_dataset()
    assert len(data) == 2 and data.n_classes == 2
    labels = data.class_labels(0)
    assert labels.dtype == np.uint8 and labels.sum() == 12 + 4 and set(np.unique(labels)) == {0, 1}
    sub = data.subset([1, 0])
    assert sub.names == ["b", "a"] and sub.grades == ["y", "x"]
    assert sub.images[1] is data.images[0]
    with pytest.raises(IndexError, match="out of range for 2 images"):
        data.subset([2])

    big = make_synthetic(1, (64, 96), seed=0)
    half = big.rescale(0.5)
    assert half.images[0].shape == (32, 48, 3) and half.images[0].dtype == np.uint8
    assert half.masks[0].shape == (32, 48) and half.masks[0].dtype == np.int32
    assert set(np.unique(half.masks[0])) <= set(np.unique(big.masks[0]))  # nearest: no new ids
    # Anti-aliased: the half-size image is close to 2x2 block means of the original.
    blocks = big.images[0].reshape(32, 2, 48, 2, 3).mean(axis=(1, 3))
    assert np.abs(half.images[0].astype(float) - blocks).mean() < 12
    with pytest.raises(ValueError, match="'factor' parameter of SegmentationDataset.rescale"):
        big.rescale(0)


def test_dataset_validates_its_fields():
    image = np.zeros((8, 10, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="got 1 images, 2 masks and 1 names"):
        SegmentationDataset([image], [np.zeros((8, 10), int)] * 2, ["a"])
    with pytest.raises(ValueError, match=r"mask 'a' must be an integer array of shape \(8, 10\)"):
        SegmentationDataset([image], [np.zeros((8, 9), int)], ["a"])
    with pytest.raises(ValueError, match=r"image 'a' must be a \(H, W, 3\) uint8 array"):
        SegmentationDataset([image[..., 0]], [np.zeros((8, 10), int)], ["a"])
    with pytest.raises(ValueError, match="names must be unique"):
        SegmentationDataset([image, image], [np.zeros((8, 10), int)] * 2, ["a", "a"])


# --- load_folder -------------------------------------------------------------------------------
def _write(path, array, **tiff_options):
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, array, **tiff_options)
    else:
        Image.fromarray(array).save(path)


def test_load_folder_reads_the_formats_users_have(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)
    instance = np.zeros((12, 14), dtype=np.uint8)
    instance[1:4, 1:4], instance[6:9, 6:12] = 1, 7
    _write(images / "s10.png", rgb)
    _write(masks / "s10_mask.png", instance)
    _write(images / "s2.bmp", rgb)
    _write(masks / "s2_mask.bmp", instance)
    rgba = np.dstack([rgb, np.full((12, 14), 9, np.uint8)])
    _write(images / "s3.png", rgba)
    binary = np.zeros((12, 14), dtype=np.uint8)
    binary[0:3, 0:3] = binary[8:11, 8:11] = 255  # two separate objects in a 0/255 mask
    _write(masks / "s3_mask.png", binary)
    grey16 = (np.arange(12 * 14, dtype=np.uint16).reshape(12, 14) * 300).astype(np.uint16)
    _write(images / "s4.tif", grey16)
    _write(masks / "s4_mask.tif", instance.astype(np.uint16) * 1000)
    _write(images / "s5.tiff", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    _write(masks / "s5_mask.png", instance)
    (images / "notes.txt").write_text("ignored")

    data = load_folder(images, masks, mask_suffix="_mask")
    assert data.names == ["s2", "s3", "s4", "s5", "s10"]  # natural order
    assert data.grades is None
    for image, mask in zip(data.images, data.masks):
        assert image.shape == (12, 14, 3) and image.dtype == np.uint8
        assert mask.shape == (12, 14) and mask.dtype == np.int32
    np.testing.assert_array_equal(data.images[0], rgb)  # bmp
    np.testing.assert_array_equal(data.images[1], rgb)  # alpha dropped
    np.testing.assert_array_equal(data.images[3], rgb)  # channels-first tif
    np.testing.assert_array_equal(data.masks[4], instance)  # ids kept
    assert sorted(np.unique(data.masks[1])) == [0, 1, 2]  # binary split into components
    grey = data.images[2]
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])  # replicated grey
    np.testing.assert_array_equal(grey[..., 0], np.rint(grey16 / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(data.masks[2], instance.astype(np.int32) * 1000)  # 16-bit ids

    kept = load_folder(images, masks, mask_suffix="_mask", label_binary=False)
    assert sorted(np.unique(kept.masks[1])) == [0, 1]


def test_load_folder_accepts_one_folder_with_suffixed_masks(tmp_path):
    rgb = np.zeros((6, 6, 3), dtype=np.uint8)
    _write(tmp_path / "a.png", rgb)
    _write(tmp_path / "a_anno.png", np.ones((6, 6), np.uint8))
    data = load_folder(tmp_path, tmp_path, mask_suffix="_anno")
    assert data.names == ["a"]


def test_load_folder_errors_name_what_is_wrong(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    with pytest.raises(FileNotFoundError, match=r"No images \(.png, .bmp, .tif, .tiff, .jpg\) in '.*images'"):
        load_folder(images, masks)
    with pytest.raises(FileNotFoundError, match="masks directory '.*nowhere' does not exist"):
        load_folder(images, tmp_path / "nowhere")

    rgb = np.zeros((6, 8, 3), dtype=np.uint8)
    for name in ("a", "b", "c"):
        _write(images / f"{name}.png", rgb)
    _write(masks / "a.png", np.zeros((6, 8), np.uint8))
    _write(masks / "z.png", np.zeros((6, 8), np.uint8))
    with pytest.raises(ValueError, match=r"2 image\(s\) without a mask .*\['b', 'c'\].*1 mask\(s\) without an image.*z\.png"):
        load_folder(images, masks)

    for name in ("b", "c", "z"):
        (images / f"{name}.png").unlink(missing_ok=True)
        (masks / f"{name}.png").unlink(missing_ok=True)
    _write(masks / "a.png", np.zeros((6, 7), np.uint8))
    with pytest.raises(ValueError, match=r"Image '.*a\.png' has size \(6, 8\) but its mask '.*a\.png' has size \(6, 7\)"):
        load_folder(images, masks)

    (masks / "a.png").unlink()
    tifffile.imwrite(masks / "a.tif", np.full((6, 8), 0.5, np.float32))
    with pytest.raises(ValueError, match=r"Mask file '.*a\.tif' has non-integer dtype float32"):
        load_folder(images, masks)

    (masks / "a.tif").unlink()
    _write(masks / "a.png", np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"Mask file '.*a\.png' has shape \(6, 8, 3\); expected a single-channel"):
        load_folder(images, masks)

    (masks / "a.png").unlink()
    _write(masks / "a.png", np.zeros((6, 8), np.uint8))
    (images / "a.png").unlink()
    bad = np.zeros((6, 8, 3), np.float32)
    bad[1, 1, 1] = np.nan
    tifffile.imwrite(images / "a.tif", bad, photometric="rgb")
    with pytest.raises(ValueError, match=r"Image file '.*a\.tif' contains NaN or Inf"):
        load_folder(images, masks)

    _write(images / "a.png", rgb)
    with pytest.raises(ValueError, match="share the name 'a'"):
        load_folder(images, masks)


# --- GlaS (real data) --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def glas_official(glas_dir):
    return {split: load_glas(glas_dir, split) for split in ("train", "testA", "testB")}


def test_glas_official_splits(glas_official):
    counts = {split: len(d) for split, d in glas_official.items()}
    assert counts == {"train": 85, "testA": 60, "testB": 20}
    train = glas_official["train"]
    assert train.names[:11] == [f"train_{i}" for i in range(1, 12)]  # natural order
    assert set(train.grades) == {"benign", "malignant"}
    for data in glas_official.values():
        for name, image, mask in zip(data.names, data.images, data.masks):
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert mask.dtype == np.int32 and mask.shape == image.shape[:2]
            assert mask.min() == 0 and mask.max() >= 1, name
    shapes = {im.shape[:2] for d in glas_official.values() for im in d.images}
    assert (522, 775) in shapes
    # The release labels every gland 1 in a few testB masks; everywhere else ids are distinct.
    assert glas_official["train"].masks[0].max() == 7


def test_glas_mixed_split_is_a_seeded_80_20_partition(glas_dir):
    test = load_glas(glas_dir, "mixed-test", seed=0)
    train = load_glas(glas_dir, "mixed-train", seed=0)
    assert (len(train), len(test)) == (132, 33)
    assert not set(train.names) & set(test.names)
    assert len(set(train.names) | set(test.names)) == 165
    other = load_glas(glas_dir, "mixed-test", seed=1)
    assert other.names != test.names
    assert test.names == load_glas(glas_dir, "mixed-test", seed=0).names


def test_glas_bmp_release_equals_png_copy(glas_bmp_dir, glas_dir):
    for split, name in (("train", "train_1"), ("testA", "testA_1")):
        bmp = load_glas(glas_bmp_dir, split)
        assert bmp.names == [name] and bmp.grades is None  # the sample has no Grade.csv
        png_image = np.asarray(Image.open(glas_dir / f"{name}.png"))
        png_mask = np.asarray(Image.open(glas_dir / f"{name}_anno.png"))
        np.testing.assert_array_equal(bmp.images[0], png_image)
        np.testing.assert_array_equal(bmp.masks[0], png_mask)


def test_store_from_glas_images_matches_direct_partitioning(glas_official, tmp_path):
    data = glas_official["testB"].subset([0, 1, 2])
    store = PatchStore.from_dataset(tmp_path / "glas.h5", data, patch_size=128, overlap=0.25)
    expected = np.concatenate([partition(im, 128, 0.25)[0] for im in data.images])
    labels = np.concatenate([partition(data.class_labels(i), 128, 0.25)[0] for i in range(3)])
    np.testing.assert_array_equal(store.patches, expected.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(store.labels, labels)
    assert store.image_names == data.names


def test_glas_errors(glas_bmp_dir, tmp_path):
    with pytest.raises(ValueError, match=r"'split' parameter of load_glas must be one of \['train', 'testA'"):
        load_glas(glas_bmp_dir, "test")
    assert "mixed-train" in GLAS_SPLITS
    with pytest.raises(FileNotFoundError, match="GlaS root directory '.*nowhere' does not exist"):
        load_glas(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match="No GlaS images"):
        load_glas(tmp_path, "train")
    shutil.copy(glas_bmp_dir / "train_1.bmp", tmp_path / "train_1.bmp")
    with pytest.raises(FileNotFoundError, match=r"without a mask .*\['train_1'\].*train_1_anno.bmp"):
        load_glas(tmp_path, "train")
    shutil.copy(glas_bmp_dir / "train_1_anno.bmp", tmp_path / "train_1_anno.bmp")
    with pytest.raises(FileNotFoundError, match="No images of the GlaS split 'testB'"):
        load_glas(tmp_path, "testB")
    with pytest.raises(ValueError, match="'test_fraction' parameter of load_glas"):
        load_glas(tmp_path, "mixed-test", test_fraction=1.0)


def test_the_default_glas_folder_follows_the_environment_then_the_working_directory(tmp_path, monkeypatch):
    from focal_al.bench.config import DEFAULT_GLAS_DIR, default_glas_dir

    monkeypatch.setenv("FOCAL_AL_GLAS_DIR", str(tmp_path / "mine"))
    assert default_glas_dir() == tmp_path / "mine"
    monkeypatch.delenv("FOCAL_AL_GLAS_DIR")
    (tmp_path / "shared" / "data" / "glas").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert default_glas_dir().resolve() == (tmp_path / "shared" / "data" / "glas").resolve()
    monkeypatch.chdir(tmp_path)
    assert default_glas_dir() == DEFAULT_GLAS_DIR  # an installed package: the source tree's, if any
