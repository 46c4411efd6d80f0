"""Robustness: hostile or careless inputs get a clear refusal, and what the tools write stays consistent."""
import numpy as np
from pathlib import Path
import pytest

from focal_al.selection import kmeans


@pytest.mark.parametrize("seed", range(30))
def test_kmeans_labels_are_the_nearest_returned_centroid(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(20, 200)), int(rng.integers(2, 6))
    x = rng.normal(size=(n, int(rng.integers(2, 9)))).astype(np.float32)  # poorly separated on purpose
    labels, centroids = kmeans(x, k, rng=np.random.default_rng(seed))
    distances = ((x[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(axis=2)
    own = distances[np.arange(n), labels]
    assert np.all(own <= distances.min(axis=1) + 1e-9)
    for c in np.unique(labels):
        np.testing.assert_allclose(centroids[c], x[labels == c].mean(axis=0), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------- the CLI battery

import json  # noqa: E402
import shutil  # noqa: E402

from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from focal_al.cli import main  # noqa: E402
from focal_al.datasets import make_synthetic  # noqa: E402


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    data = make_synthetic(2, size=(64, 96), seed=3)
    (folder / "img").mkdir()
    (folder / "masks").mkdir()
    for image, mask, name in zip(data.images, data.masks, data.names):
        Image.fromarray(image).save(folder / "img" / f"{name}.png")
        Image.fromarray((mask > 0).astype(np.uint8)).save(folder / "masks" / f"{name}.png")
    return folder, data


@pytest.fixture(scope="module")
def made(images, tmp_path_factory):
    """A project with the first image labelled and an open round."""
    folder, data = images
    (folder / "first").mkdir(exist_ok=True)
    shutil.copy(folder / "masks" / f"{data.names[0]}.png", folder / "first")
    out = tmp_path_factory.mktemp("p") / "proj"
    result = CliRunner().invoke(main, init_args(images, out, "--masks", str(folder / "first")))
    assert result.exit_code == 0, result.output
    return out


def fresh(made, tmp_path):
    shutil.copytree(made, tmp_path / "proj")
    return tmp_path / "proj"


def init_args(images, out, *more):
    folder, _ = images
    return ["project", "init", str(out), "--images", str(folder / "img"), "--patch-size", "16", "--width", "2",
            "--depth", "2", "--train-steps", "2", *more]


def refused(args, *words):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit), \
        result.output
    for word in words:
        assert word in result.output, (word, result.output)
    return result


def test_strategy_parameters_are_checked_at_init(images, tmp_path):
    refused(init_args(images, tmp_path / "a", "--strategy", "iu", "--clusters", "3"), "--clusters=3", "'k'")
    refused(init_args(images, tmp_path / "b", "--clusters", "0"), "--clusters=0", "'k'")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_query_n_is_checked_before_any_scoring(made, tmp_path):
    proj = fresh(made, tmp_path)
    refused(["project", "query", proj, "--n", "0"], "--n", "[1,")
    refused(["project", "query", proj, "--n", "100000"], "--n")
    assert json.loads((proj / "state.json").read_text())["rounds"] == []


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage, words", [
    (lambda p: (p / "state.json").write_text((p / "state.json").read_text()[:40]), ["state.json", "damaged"]),
    (lambda p: (p / "project.json").write_text("{"), ["project.json", "damaged"]),
    (lambda p: _edit_json(p / "state.json", lambda d: d.pop("rounds")), ["state.json", "'rounds' is missing"]),
    (lambda p: _edit_json(p / "state.json", lambda d: d.update(initial="all")), ["state.json", "'initial'", "list"]),
    (lambda p: _edit_json(p / "project.json", lambda d: d["network"].update(width="16")), ["project.json", "network.width"]),
    (lambda p: _edit_json(p / "state.json", lambda d: d["initial"].append(10**6)), ["state.json", "outside the pool"]),
])
def test_damaged_project_files_are_named(made, tmp_path, damage, words):
    proj = fresh(made, tmp_path)
    damage(proj)
    refused(["project", "status", proj], *words)


def _label_file(proj):
    state = json.loads((proj / "state.json").read_text())
    return proj / next(iter(state["labels"].values()))


@pytest.mark.parametrize("damage, words", [
    (lambda f: f.write_bytes(f.read_bytes()[:60]), ["cannot be read"]),
    (lambda f: Image.open(f).convert("RGB").save(f, format="JPEG"), ["not a PNG"]),
    (lambda f: Image.fromarray(np.zeros((5, 7), np.uint8)).save(f, format="PNG"), ["(5, 7)", "expected"]),
])
def test_damaged_label_files_are_named(made, tmp_path, damage, words):
    proj = fresh(made, tmp_path)
    label = _label_file(proj)
    damage(label)
    refused(["project", "train", proj], label.name, *words)


def test_weights_of_another_network_are_named_with_their_width(made, tmp_path):
    from focal_al.estimator import SegmentationNet

    proj = fresh(made, tmp_path)
    assert CliRunner().invoke(main, ["project", "train", str(proj)]).exit_code == 0
    state = json.loads((proj / "state.json").read_text())
    SegmentationNet(module__width=4, module__depth=2).initialize().save_weights(proj / state["weights"]["file"])
    refused(["project", "query", proj, "--n", "2"], state["weights"]["file"].split("/")[-1], "width 4", "width 2")


def test_a_diverged_network_is_never_committed(images, tmp_path):
    out = tmp_path / "lr"
    folder, data = images
    (tmp_path / "first").mkdir()
    shutil.copy(folder / "masks" / f"{data.names[0]}.png", tmp_path / "first")
    args = [str(a) for a in init_args(images, out, "--masks", tmp_path / "first", "--lr", "1e30")]
    assert CliRunner().invoke(main, args).exit_code == 0
    refused(["project", "train", out, "--steps", "5"], "diverged", "network.lr")
    assert json.loads((out / "state.json").read_text())["weights"] is None


# ----------------------------------------------------------------------------------- sizes and pixels

def _png_declaring(path, width, height):
    """A tiny PNG whose header declares width x height pixels (its data a few bytes): a hostile file."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    data = zlib.compress(b"\0" * 64)
    idat = b"IDAT" + data
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
                     + struct.pack(">I", len(data)) + idat + struct.pack(">I", zlib.crc32(idat)))
    return path


def test_declared_sizes_are_checked_before_anything_is_allocated(tmp_path):
    import subprocess
    import sys
    import textwrap

    hostile = _png_declaring(tmp_path / "huge.png", 30000, 30000)
    truncated = _png_declaring(tmp_path / "short.png", 1200, 900)
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, 1536 * 2**20))  # 1.5 GiB: a 30000^2 RGB is 2.5
        from pathlib import Path
        from focal_al.datasets import _read_image
        for name in ("{hostile}", "{truncated}"):
            try:
                _read_image(Path(name))
            except ValueError as err:
                print("refused:", err)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "huge.png' declares" in out.stdout and "FOCAL_AL_MAX_IMAGE_PIXELS" in out.stdout
    assert "short.png' cannot be read: it is truncated" in out.stdout


def test_init_refuses_unreadable_and_oversized_images(images, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.png").write_bytes(b"not an image at all")
    refused(init_args(images, tmp_path / "p1")[:3] + ["--images", bad, "--patch-size", "16", "--depth", "2"],
            "notes.png", "cannot be read")
    big = tmp_path / "big"
    big.mkdir()
    _png_declaring(big / "scan.png", 30000, 30000)
    refused(["project", "init", tmp_path / "p2", "--images", big, "--patch-size", "16", "--depth", "2"],
            "scan.png", "declares")
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p2").exists()


def _pyramid(path, array):
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        tif.write(array, subifds=1, tile=(64, 64), photometric="rgb" if array.ndim == 3 else "minisblack")
        tif.write(array[::4, ::4], subfiletype=1, tile=(64, 64), photometric="rgb" if array.ndim == 3 else "minisblack")


@pytest.mark.parametrize("kind", ["uint16", "float32", "grey"])
def test_slides_that_are_not_8_bit_rgb_are_scaled_not_wrapped(tmp_path, kind):
    from focal_al.slides import load_slides

    rng = np.random.default_rng(0)
    tissue = np.zeros((512, 512), dtype=bool)
    tissue[128:384, 128:384] = True
    rgb = np.where(tissue[..., None], [150, 60, 160], [240, 240, 240]).astype(np.float64)
    rgb += rng.normal(0, 3, rgb.shape)
    if kind == "uint16":
        array = np.clip(rgb * 257, 0, 65535).astype(np.uint16)
    elif kind == "float32":
        array = np.clip(rgb / 255, 0, 1).astype(np.float32)
    else:
        array = np.clip(rgb.mean(axis=2), 0, 255).astype(np.uint8)
    _pyramid(tmp_path / "s.tif", array)
    store = load_slides([tmp_path / "s.tif"], tmp_path / "s.h5", patch_size=64, level=0)
    assert len(store) > 0  # tissue found (a grey slide by darkness)
    patches = np.asarray(store.patches)
    centre = patches[:, :, 16:48, 16:48].reshape(len(store), 3, -1).mean(axis=2)
    expected = np.array([150, 60, 160]) if kind != "grey" else np.full(3, (150 + 60 + 160) / 3)
    assert np.abs(centre.mean(axis=0) - expected).max() < 8  # the slide's colours, not wrapped or black


# ----------------------------------------------------------------------------------- files others read

def test_written_files_follow_the_umask(images, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = tmp_path / "shared"
        result = CliRunner().invoke(main, [str(a) for a in init_args(images, out)])
        assert result.exit_code == 0, result.output
        assert CliRunner().invoke(main, ["project", "query", str(out), "--n", "2"]).exit_code == 0
    finally:
        os.umask(old)
    for path in [out, *out.rglob("*")]:
        if path.name == ".lock":
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, (path, oct(mode))  # group and others can read


def test_what_a_killed_run_left_is_cleared_by_the_next(images, tmp_path):
    import os
    import time

    from focal_al.store import PatchStore

    old = time.time() - 3600
    litter = [tmp_path / ".pool.h5.abc123.tmp", tmp_path / ".pool.h5.def456.staging.tmp"]
    for path in litter:
        path.write_bytes(b"x" * 1000)
        os.utime(path, (old, old))
    fresh_one = tmp_path / ".pool.h5.ghi789.tmp"  # another run may be writing this one now: kept
    fresh_one.write_bytes(b"y")
    folder, data = images
    PatchStore.from_dataset(tmp_path / "pool.h5", data, patch_size=16, overlap=0.5, allow_padding=True)
    assert not any(p.exists() for p in litter) and fresh_one.exists()
    stale_project = tmp_path / ".proj.zz.tmp"
    stale_project.mkdir()
    os.utime(stale_project, (old, old))
    assert CliRunner().invoke(main, [str(a) for a in init_args(images, tmp_path / "proj")]).exit_code == 0
    assert not stale_project.exists()


def test_status_waits_for_no_half_committed_state(made, tmp_path):
    import fcntl

    proj = fresh(made, tmp_path)
    with open(proj / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as an import committing now
        refused(["project", "status", proj], "Another focal-al command")
    assert CliRunner().invoke(main, ["project", "status", str(proj)]).exit_code == 0


# ----------------------------------------------------------------------------------- silent acceptances

def test_jpeg_masks_and_masks_in_both_roles_are_refused(images, tmp_path):
    folder, data = images
    jpeg = tmp_path / "jpeg"
    jpeg.mkdir()
    Image.fromarray((data.masks[0] > 0).astype(np.uint8) * 255).save(jpeg / f"{data.names[0]}.jpg")
    refused(init_args(images, tmp_path / "a", "--masks", jpeg), "JPEG masks", f"{data.names[0]}.jpg")
    refused(init_args(images, tmp_path / "b", "--masks", folder / "masks", "--validation-masks", folder / "masks"),
            "both --masks and --validation-masks")


def test_a_moved_image_folder_is_repointed_by_checksum(images, made, tmp_path):
    folder, data = images
    proj = fresh(made, tmp_path)
    moved = tmp_path / "moved"
    shutil.copytree(folder / "img", moved)
    config = json.loads((proj / "project.json").read_text())
    for entry in config["images"]:
        entry["path"] = str(tmp_path / "gone" / Path(entry["path"]).name)
    (proj / "project.json").write_text(json.dumps(config))
    refused(["project", "status", proj], "relocate")
    other = tmp_path / "other"
    other.mkdir()
    for name in data.names:
        Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(other / f"{name}.png")
    refused(["project", "relocate", proj, "--images", other], "checksum")
    result = CliRunner().invoke(main, ["project", "relocate", str(proj), "--images", str(moved)])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(main, ["project", "status", str(proj)]).exit_code == 0


def test_messages_use_the_command_lines_words(made, tmp_path):
    proj = fresh(made, tmp_path)
    refused(["project", "query", proj, "--n", "2", "--context", "-50"], "--context", ">= 0")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(np.random.default_rng(0).bytes(4096))
    store = tmp_path / "s.h5"
    store.write_bytes(b"")
    result = refused(["score", proj / "pool.h5", weights, "--out", tmp_path / "out.h5", "--width", "2", "--depth", "2"],
                     "w.safetensors")
    assert "weights_only=False" not in result.output
    out = tmp_path / "twice.h5"
    out.write_bytes(b"x")
    refused(["slides", proj / "pool.h5", "--out", out, "--patch-size", "16"], "--overwrite")
    (tmp_path / "empty").mkdir()
    refused(["report", tmp_path / "empty"], "holds no runs")


# ----------------------------------------------------------------------------------- one battery, one case an item

def _open_region_geojson(proj, tmp_path, mutate):
    """A QuPath-style export answering the project's first open region, changed by ``mutate``."""
    from focal_al.annotations import region_feature
    from focal_al.project import AnnotationProject

    region = AnnotationProject(proj).open_regions()[0]
    x0, y0 = region.box[:2]
    gland = {"type": "Feature", "properties": {"classification": {"name": "Gland"}},
             "geometry": {"type": "Polygon", "coordinates": [[[x0 + 1, y0 + 1], [x0 + 4, y0 + 1], [x0 + 4, y0 + 4],
                                                              [x0 + 1, y0 + 1]]]}}
    features = [region_feature(region), gland]
    mutate(features)
    path = tmp_path / f"{region.image}.geojson"
    path.write_text(json.dumps(features))
    return path


def _nested(depth):
    return "[" * depth + "]" * depth


def _with_open_round(made, tmp_path):
    proj = fresh(made, tmp_path)
    assert CliRunner().invoke(main, ["project", "query", str(proj), "--n", "2"]).exit_code == 0
    return proj


def _truncated_slide(tmp_path):
    array = np.full((512, 512, 3), 200, np.uint8)
    array[100:400, 100:400] = (150, 60, 160)
    _pyramid(tmp_path / "s.tif", array)
    data = (tmp_path / "s.tif").read_bytes()
    (tmp_path / "s.tif").write_bytes(data[: len(data) // 3])
    return tmp_path / "s.tif"


BATTERY = {
    "1 declared size": lambda made, images, t: (
        ["project", "init", t / "p", "--images", _png_declaring(t / "huge.png", 30000, 30000), "--patch-size", "16",
         "--depth", "2"], ["huge.png", "declares"]),
    "2 float slide outside [0, 1]": lambda made, images, t: (
        ["slides", _float_slide(t), "--out", t / "s.h5", "--patch-size", "32", "--level", "0"], ["floats outside"]),
    "3 NaN vertex": lambda made, images, t: (
        lambda proj: ["project", "import", proj, "--geojson", _open_region_geojson(
            proj, t, lambda f: f[1]["geometry"]["coordinates"][0][1].__setitem__(0, float("nan")))],
        ["not a finite number"]),
    "3 deep nesting": lambda made, images, t: (
        lambda proj: ["project", "import", proj, "--geojson", _write(t / "synthetic_0.geojson", _nested(100000))],
        ["nests its arrays too deeply"]),
    "4 non-image file": lambda made, images, t: (
        ["project", "init", t / "p", "--images", _write(t / "scan.png", "not an image"), "--patch-size", "16",
         "--depth", "2"], ["scan.png", "cannot be read"]),
    "4 truncated slide": lambda made, images, t: (
        ["slides", _truncated_slide(t), "--out", t / "s.h5", "--patch-size", "32", "--level", "0"], ["s.tif"]),
    "5 truncated state": lambda made, images, t: (
        lambda proj: (_write(proj / "state.json", "{\"format\""), ["project", "status", proj])[1], ["state.json"]),
    "6 clusters for iu": lambda made, images, t: (
        init_args(images, t / "p", "--strategy", "iu", "--clusters", "3"), ["--clusters=3"]),
    "7 diverged": lambda made, images, t: (
        lambda proj: (_edit_json(proj / "project.json", lambda d: d["network"].update(lr=1e30)),
                      ["project", "train", proj, "--steps", "5"])[1], ["diverged"]),
    "9 status beside a commit": lambda made, images, t: (
        lambda proj: ["project", "status", proj], ["Another focal-al command"]),
    "10 context": lambda made, images, t: (
        lambda proj: ["project", "query", proj, "--n", "1", "--context", "-50"], ["--context"]),
    "11 JPEG masks": lambda made, images, t: (
        init_args(images, t / "p", "--masks", _jpeg_masks(images, t)), ["JPEG masks"]),
    "old battery: import with neither": lambda made, images, t: (
        lambda proj: ["project", "import", proj], ["--masks or --geojson"]),
}


def _write(path, text):
    path.write_text(text)
    return path


def _float_slide(tmp_path):
    array = np.full((256, 256, 3), 2.0, np.float32)
    _pyramid(tmp_path / "f.tif", array)
    return tmp_path / "f.tif"


def _jpeg_masks(images, tmp_path):
    _, data = images
    (tmp_path / "jm").mkdir(exist_ok=True)
    Image.fromarray((data.masks[0] > 0).astype(np.uint8) * 255).save(tmp_path / "jm" / f"{data.names[0]}.jpg")
    return tmp_path / "jm"


@pytest.mark.parametrize("case", list(BATTERY))
def test_cli_battery(case, made, images, tmp_path):
    import fcntl

    args, words = BATTERY[case](made, images, tmp_path)
    if callable(args):
        proj = _with_open_round(made, tmp_path) if case.startswith("3") else fresh(made, tmp_path)
        args = args(proj)
        if case.startswith("9"):
            with open(proj / ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                refused(args, *words)
            return
    refused(args, *words)


def test_a_classification_given_as_a_string_is_read_as_its_name(made, tmp_path):
    proj = _with_open_round(made, tmp_path)
    path = _open_region_geojson(proj, tmp_path, lambda f: f[0]["properties"].update(classification="Region"))
    result = CliRunner().invoke(main, ["project", "import", str(proj), "--geojson", str(path)])
    assert result.exit_code == 0 and "1 region(s) answered" in result.output, result.output


def test_a_run_without_rounds_is_named_in_the_report(tmp_path):
    from focal_al.bench.report import write_report
    from focal_al.bench.runner import run_bench
    from focal_al.bench.config import preset_config

    config = preset_config("quick", n_images=8, image_size=48, patch_size=16, depth=2, width=2, train_steps=1,
                           initial_train_steps=1, batch_size=4, step=0.1, budget=0.2, clusters=2, seeds=(0,),
                           max_train_steps=2, strategies=("random-patch",), out_dir=str(tmp_path))
    run_bench(config, quiet=True, with_full_supervision=False)
    (tmp_path / "runs" / "4-iu-seed0").mkdir()
    (tmp_path / "runs" / "4-iu-seed0" / "rounds.json").write_text("[]")
    report = write_report(tmp_path).read_text()
    assert "4-iu-seed0" in report and "no round recorded" in report
