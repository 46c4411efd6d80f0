import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from focal_al.datasets import make_synthetic
from focal_al.patches import partition
from focal_al.store import PatchStore


def _pool(seed=0, shapes=((40, 50), (33, 61), (48, 48))):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in shapes]
    labels = [rng.choice(np.array([0, 1, 255], dtype=np.uint8), s) for s in shapes]
    return images, labels, [f"img_{i}" for i in range(len(shapes))]


def _reference(images, labels, l, rho):
    patches = np.concatenate([partition(im, l, rho)[0] for im in images]).transpose(0, 3, 1, 2)
    labs = np.concatenate([partition(lab, l, rho)[0] for lab in labels])
    coords = np.concatenate([partition(lab, l, rho)[1] for lab in labels])
    index = np.concatenate([np.full(len(partition(lab, l, rho)[1]), i) for i, lab in enumerate(labels)])
    return patches, labs, coords, index


@pytest.mark.parametrize("as_generator", [False, True])
def test_round_trip_matches_direct_partitioning(tmp_path, as_generator):
    images, labels, names = _pool()
    source = (im for im in images) if as_generator else images
    store = PatchStore.build(
        tmp_path / "pool.h5", source, iter(labels), names, patch_size=16, overlap=0.25
    )
    patches, labs, coords, index = _reference(images, labels, 16, 0.25)
    assert isinstance(store.patches, np.memmap) and isinstance(store.labels, np.memmap)
    assert store.patches.shape == patches.shape and store.patches.dtype == np.uint8
    np.testing.assert_array_equal(store.patches, patches)
    np.testing.assert_array_equal(store.labels, labs)
    np.testing.assert_array_equal(store.coords, coords)
    np.testing.assert_array_equal(store.image_index, index)
    assert store.image_names == names
    np.testing.assert_array_equal(store.image_shapes, [im.shape[:2] for im in images])
    assert (store.patch_size, store.overlap, store.stride) == (16, 0.25, 12)
    assert len(store) == len(patches) and store.n_images == 3 and store.n_channels == 3
    np.testing.assert_array_equal(store.image_patches("img_1"), np.flatnonzero(index == 1))
    # No temporary or staging files are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.h5"]


def test_memmap_accepts_any_index_order(tmp_path):
    images, labels, names = _pool()
    store = PatchStore.build(tmp_path / "p.h5", images, labels, names, patch_size=8, overlap=0.0)
    reference = np.asarray(store.patches).copy()
    idx = np.random.default_rng(1).permutation(len(store))[:20]
    idx = np.concatenate([idx, idx[:3]])  # unsorted, with repeats
    np.testing.assert_array_equal(store.patches[idx], reference[idx])
    np.testing.assert_array_equal(store.labels[idx[::-1]], np.asarray(store.labels)[idx[::-1]])
    mask = np.zeros(len(store), dtype=bool)
    mask[::3] = True
    np.testing.assert_array_equal(store.patches[mask], reference[mask])
    with pytest.raises(ValueError, match="read-only"):
        store.patches[0, 0, 0, 0] = 1


def test_file_is_a_plain_h5py_readable_store(tmp_path):
    images, labels, names = _pool()
    store = PatchStore.build(tmp_path / "p.h5", images, labels, names, patch_size=8, overlap=0.5)
    with h5py.File(store.path, "r") as f:
        assert f.attrs["format"] == "focal_al.PatchStore"
        assert f["patches"].compression is None and f["patches"].chunks is None
        np.testing.assert_array_equal(f["patches"][[0, 5, 9]], store.patches[[0, 5, 9]])


def _sum_first_patches(store):
    return int(store.patches[:4].astype(np.int64).sum())


def test_store_pickles_as_its_path_and_works_in_other_processes(tmp_path):
    images, labels, names = _pool()
    store = PatchStore.build(tmp_path / "p.h5", images, labels, names, patch_size=8, overlap=0.0)
    _ = store.patches  # an opened memmap must not travel in the pickle
    payload = pickle.dumps(store)
    assert len(payload) < 500
    clone = pickle.loads(payload)
    np.testing.assert_array_equal(clone.patches, store.patches)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_sum_first_patches, (store,)) == _sum_first_patches(store)


def test_from_dataset_uses_class_labels(tmp_path):
    dataset = make_synthetic(2, (64, 80), seed=3)
    store = PatchStore.from_dataset(tmp_path / "s.h5", dataset, patch_size=32, overlap=0.5)
    patches, labs, _, _ = _reference(
        dataset.images, [dataset.class_labels(i) for i in range(2)], 32, 0.5
    )
    np.testing.assert_array_equal(store.patches, patches)
    np.testing.assert_array_equal(store.labels, labs)
    assert set(np.unique(store.labels)) <= {0, 1}
    assert store.image_names == dataset.names


def test_existing_file_is_kept_unless_overwrite(tmp_path):
    images, labels, names = _pool()
    path = tmp_path / "p.h5"
    PatchStore.build(path, images, labels, names, patch_size=8, overlap=0.0)
    with pytest.raises(FileExistsError, match=r"p\.h5' already exists; pass overwrite=True"):
        PatchStore.build(path, images, labels, names, patch_size=16, overlap=0.0)
    assert PatchStore(path).patch_size == 8
    PatchStore.build(path, images, labels, names, patch_size=16, overlap=0.0, overwrite=True)
    assert PatchStore(path).patch_size == 16


def test_failed_build_removes_its_temporary_file(tmp_path):
    images, labels, names = _pool()
    labels[2] = labels[2][:-1]  # wrong shape for the last image, found mid-write
    with pytest.raises(ValueError, match=r"Labels 2 .* shape \(47, 48\); the image has shape \(48, 48\)"):
        PatchStore.build(tmp_path / "p.h5", (im for im in images), labels, names, patch_size=8, overlap=0.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda im, lab, n: (im, lab, n[:2]), "got 3 images but 2 names"),
        (lambda im, lab, n: (im, lab, ["a", "a", "b"]), r"unique image names.*\['a'\]"),
        (lambda im, lab, n: ([x.astype(np.float32) for x in im], lab, n), "must be a uint8 array"),
        (lambda im, lab, n: (im, [x.astype(np.int32) * 300 for x in lab], n), r"\[0, 255\].*mask > 0"),
        (lambda im, lab, n: (im, [x.astype(float) for x in lab], n), "must be integer class labels"),
        (lambda im, lab, n: (im, lab[:2], n), "fewer label maps than images"),
        (lambda im, lab, n: ([im[0], im[1][:, :, :1], im[2]], lab, n), "has 1 channels; the first image has 3"),
        (lambda im, lab, n: ([], [], []), "got no images"),
    ],
)
def test_build_rejects_bad_input(tmp_path, change, match):
    images, labels, names = change(*_pool())
    with pytest.raises(ValueError, match=match):
        PatchStore.build(tmp_path / "p.h5", images, labels, names, patch_size=8, overlap=0.0)
    assert list(tmp_path.iterdir()) == []


def test_build_validates_parameters(tmp_path):
    images, labels, names = _pool()
    with pytest.raises(ValueError, match=r"The 'overlap' parameter of PatchStore.build must be a float in \[0, 1\)"):
        PatchStore.build(tmp_path / "p.h5", images, labels, names, patch_size=8, overlap=1.0)
    with pytest.raises(ValueError, match="smaller than patch_size=64"):
        PatchStore.build(tmp_path / "p.h5", images, labels, names, patch_size=64, overlap=0.0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PatchStore.build(tmp_path / "no" / "p.h5", images, labels, names, patch_size=8, overlap=0.0)
    assert list(tmp_path.iterdir()) == []


def test_open_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.h5' does not exist; expected a focal-al PatchStore"):
        PatchStore(tmp_path / "missing.h5")

    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.h5' is not an HDF5 file; expected a focal-al PatchStore"):
        PatchStore(text)

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ValueError, match=r"foreign\.h5' is an HDF5 file but not a focal-al PatchStore"):
        PatchStore(foreign)

    images, labels, names = _pool()
    good = PatchStore.build(tmp_path / "good.h5", images, labels, names, patch_size=8, overlap=0.0)
    data = good.path.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.h5'.*(truncated|corrupt)"):
        PatchStore(truncated)


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from focal_al.store import PatchStore

    path, marker = Path(sys.argv[1]), Path(sys.argv[2])
    rng = np.random.default_rng(0)

    def images():
        for i in range(3):
            if i == 2:
                marker.write_text("mid-write")  # two images are in the temp file by now
                time.sleep(60)
            yield rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)

    labels = (np.zeros((64, 64), np.uint8) for _ in range(3))
    PatchStore.build(path, images(), labels, ["a", "b", "c"], patch_size=16, overlap=0.0,
                     overwrite=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
@pytest.mark.parametrize("existing", [False, True])
def test_writer_killed_mid_write_leaves_no_partial_store(tmp_path, existing):
    path, marker = tmp_path / "pool.h5", tmp_path / "marker"
    if existing:
        images, labels, names = _pool()
        old = PatchStore.build(path, images, labels, names, patch_size=8, overlap=0.0)
        old_patches = np.asarray(old.patches).copy()
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(marker)])
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None, "writer exited before reaching the kill point"
            assert time.monotonic() < deadline, "writer never reached the kill point"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # The kill hit a real write: the temporary file is still there (a killed process cannot clean).
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".pool.h5.") and p.name.endswith(".tmp")]
    if existing:
        store = PatchStore(path)
        assert store.patch_size == 8
        np.testing.assert_array_equal(store.patches, old_patches)
    else:
        assert not path.exists()
