"""Robustness: hostile or careless inputs get a clear refusal, and what the tools write stays consistent."""
import numpy as np
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
