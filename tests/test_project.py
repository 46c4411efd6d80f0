"""Annotation projects end to end: a scripted annotator answers every round through the files."""
import json
import shutil

import geojson
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from focal_al.annotations import mask_to_features, read_geojson
from focal_al.cli import main
from focal_al.datasets import make_synthetic
from focal_al.learner import PatchActiveLearner
from focal_al.project import AnnotationProject, _downsample_labels
from focal_al.store import PatchStore

# Two threads per process thrash on this shared 2-core machine (a 3-step fit took 6 s instead of 0.1 s).

TINY = ["--patch-size", "16", "--overlap", "0.5", "--scale", "0.5", "--width", "4", "--depth", "2",
        "--train-steps", "3", "--batch-size", "4", "--clusters", "2"]


class NoTraining:
    """The reference learner's estimator: it never trains (only what is revealed is compared)."""

    def partial_fit(self, X, y):
        return self

    fit = partial_fit


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def write_images(folder, dataset):
    (folder / "images").mkdir(parents=True)
    (folder / "truth").mkdir()
    for image, mask, name in zip(dataset.images, dataset.masks, dataset.names):
        Image.fromarray(image).save(folder / "images" / f"{name}.png")
        Image.fromarray(mask.astype(np.uint16)).save(folder / "truth" / f"{name}.png")


def answer_round(round_dir, truth, out, *, as_array):
    """What a person does in QuPath: import the regions, trace the glands they touch, export.

    The export keeps what QuPath keeps (geometry, objectType, name, classification) and holds the
    region rectangles plus one polygon per gland that touches a region, traced from the instance
    mask with skimage / shapely; QuPath's default is a bare array of Features.
    """
    from shapely.geometry import box, shape

    files = []
    for file in sorted((round_dir / "geojson").glob("*.geojson")):
        regions = read_geojson(file)
        keep = ("objectType", "name", "classification")
        marks = [{"type": "Feature", "geometry": f["geometry"],
                  "properties": {k: f["properties"][k] for k in keep}} for f in regions]
        area = [shape(f["geometry"]) for f in regions]
        glands = [g for g in mask_to_features(truth[file.stem], classification={"name": "Tumor", "color": [200, 0, 0]})
                  if any(shape(g["geometry"]).intersects(box(*a.bounds)) for a in area)]
        export = marks + glands
        out.mkdir(parents=True, exist_ok=True)
        target = out / file.name
        target.write_text(json.dumps(export if as_array else {"type": "FeatureCollection", "features": export}))
        files.append(target)
    return files


def reference_learner(project, rows_per_teach):
    """A PatchActiveLearner over the same pool, taught the same rows (labels play no part in the cost)."""
    labels = np.zeros(project.store.labels.shape, dtype=np.uint8)
    learner = PatchActiveLearner(NoTraining(), "random-patch", store=project.store, labels=labels, random_state=0)
    for rows in rows_per_teach:
        learner.teach(np.asarray(rows))
    return learner


def check_qupath_geojson(path, image_shape):
    """Valid GeoJSON (geojson's validator) following QuPath's conventions."""
    text = path.read_text()
    obj = geojson.loads(text)
    assert obj.is_valid, obj.errors()
    assert obj["type"] == "FeatureCollection"
    h, w = image_shape
    for feature in obj["features"]:
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert set(props["classification"]) == {"name", "color"} and len(props["classification"]["color"]) == 3
        polygons = feature["geometry"]["coordinates"]
        if feature["geometry"]["type"] == "Polygon":
            polygons = [polygons]
        for polygon in polygons:
            for ring in polygon:
                assert ring[0] == ring[-1] and len(ring) >= 4
                xy = np.asarray(ring)
                # Level-0 pixels, origin top-left: inside [0, W] x [0, H].
                assert xy[:, 0].min() >= 0 and xy[:, 0].max() <= w and xy[:, 1].min() >= 0 and xy[:, 1].max() <= h


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    data = make_synthetic(4, size=(96, 128), seed=3)
    write_images(folder, data)
    (folder / "initial").mkdir()
    shutil.copy(folder / "truth" / f"{data.names[0]}.png", folder / "initial")
    (folder / "validation").mkdir()
    shutil.copy(folder / "truth" / f"{data.names[3]}.png", folder / "validation")
    return folder, data


def test_rounds_through_files_reveal_what_the_learner_reveals(synthetic, tmp_path):
    folder, data = synthetic
    truth = dict(zip(data.names, data.masks))
    project_dir = tmp_path / "project"
    out = invoke("project", "init", project_dir, "--images", folder / "images", "--masks", folder / "initial",
                 "--validation-masks", folder / "validation", *TINY)
    assert "3 pool images" in out and "1 validation images" in out
    project = AnnotationProject(project_dir)
    teaches = [project.labelled().tolist()]
    for round_, as_array in ((1, True), (2, False), (3, True)):
        out = invoke("project", "query", project_dir, "--n", 5, "--crops")
        round_dir = project_dir / "rounds" / f"round-{round_:03d}"
        assert str(round_dir) in out
        files = answer_round(round_dir, truth, tmp_path / f"export-{round_}", as_array=as_array)
        # As a shell expands `--geojson exports/*.geojson`: one option, then the other files.
        out = invoke("project", "import", project_dir, "--geojson", *files)
        assert "5 region(s) answered; 0 still missing" in out
        project = AnnotationProject(project_dir)
        teaches.append(project.state["rounds"][-1]["asked"])

    reference = reference_learner(project, teaches)
    learner = project.learner()
    np.testing.assert_array_equal(learner.labelled_, reference.labelled_)
    assert learner.cost_ == reference.cost_ > 0
    store = project.store
    for i, name in enumerate(store.image_names):
        labels = project.labels(name)
        shape = tuple(int(v) for v in store.image_shapes[i])
        # The pixels revealed by the imported files, at the network's scale, are the learner's.
        np.testing.assert_array_equal(_downsample_labels(labels, shape) != 255, reference.revealed_.mask(i))
        # Inside them the labels are the ground truth (the polygons rasterise back exactly).
        revealed = labels != 255
        np.testing.assert_array_equal(labels[revealed], (truth[name] > 0)[revealed])
    status = json.loads(invoke("project", "status", project_dir, "--json"))
    assert status["regions_asked"] == status["regions_answered"] == 15
    assert status["revealed_pixels"] == sum(int((project.labels(n) != 255).sum()) for n in project.pool_names)
    assert status["network_cost"] == pytest.approx(reference.cost_)
    assert status["validation_dice"] is not None and 0 <= status["validation_dice"] <= 1
    assert [r["answered"] for r in status["rounds"]] == [5, 5, 5]
    with_glands = sum(bool((truth[g.image][g.box[1]:g.box[3], g.box[0]:g.box[2]] > 0).any()) for g in project.regions())
    assert status["regions_with_foreground"] == with_glands
    assert f"15 answered ({with_glands} with glands)" in invoke("project", "status", project_dir)


def test_round_exports_follow_qupath_conventions(synthetic, tmp_path):
    folder, data = synthetic
    project = AnnotationProject.create(tmp_path / "p", [folder / "images"], masks=folder / "initial",
                                       patch_size=16, overlap=0.5, scale=0.5, width=4, depth=2, train_steps=2)
    round_dir = project.query(6, crops=True, context=8)
    regions = project.regions(1)
    assert [g.rank for g in regions] == list(range(1, 7))
    assert all(a.score >= b.score for a, b in zip(regions, regions[1:]))
    rows = (round_dir / "regions.csv").read_text().splitlines()
    assert rows[0] == "round,rank,name,image,x,y,width,height,score,pool_index" and len(rows) == 7
    for name in {g.image for g in regions}:
        check_qupath_geojson(round_dir / "geojson" / f"{name}.geojson", data.images[0].shape[:2])
        with Image.open(round_dir / "overview" / f"{name}.png") as overview:
            assert overview.size == (128, 96)
        napari = (round_dir / "napari" / f"{name}.csv").read_text().splitlines()
        assert napari[0] == "index,shape-type,vertex-index,axis-0,axis-1"
        own = [g for g in regions if g.image == name]
        assert len(napari) == 1 + 4 * len(own)
        first = [float(v) for v in napari[1].split(",")[3:]]
        assert first == [own[0].box[1] - 0.5, own[0].box[0] - 0.5]  # napari: (row, col) of pixel centres
    for g in regions:
        # Boxes are in original pixels: the network's 16-pixel patches at scale 0.5 are 32 wide.
        assert g.width == g.height == 32 or g.box[2] == 128 or g.box[3] == 96
        assert (round_dir / "crops" / f"{g.name}.png").is_file()
        store = project.store
        y, x = store.coords[g.pool_index]
        assert g.box[:2] == (2 * x, 2 * y)


def test_masks_import_is_partial_and_resumable(synthetic, tmp_path):
    folder, data = synthetic
    project = AnnotationProject.create(tmp_path / "p", [folder / "images"], patch_size=16, overlap=0.5,
                                       scale=0.5, width=4, depth=2, train_steps=2)
    project.query(8)
    asked = project.open_regions()
    assert project.state["rounds"][0]["strategy"] == "random-patch"  # nothing labelled yet
    first = asked[0].image
    (tmp_path / "part1").mkdir()
    shutil.copy(folder / "truth" / f"{first}.png", tmp_path / "part1")
    report = AnnotationProject(tmp_path / "p").import_masks(tmp_path / "part1")
    assert sorted(report.answered) == sorted(g.name for g in asked if g.image == first)
    assert sorted(report.missing) == sorted(g.name for g in asked if g.image != first)
    # Training waits for `train`, or for the next query / predict, which train first.
    assert not AnnotationProject(tmp_path / "p").status()["weights_current"]
    with pytest.raises(ValueError, match="unanswered region"):
        AnnotationProject(tmp_path / "p").query(2)
    out = invoke("project", "import", tmp_path / "p", "--masks", folder / "truth")
    assert f"{sum(g.image != first for g in asked)} region(s) answered; 0 still missing." in out
    assert "has no open region" in out
    project = AnnotationProject(tmp_path / "p")
    for name in project.pool_names:
        labels = project.labels(name)
        revealed = labels != 255
        np.testing.assert_array_equal(labels[revealed], (data.masks[data.names.index(name)] > 0)[revealed])
        boxes = np.zeros(labels.shape, bool)
        for g in asked:
            if g.image == name:
                boxes[g.box[1]:g.box[3], g.box[0]:g.box[2]] = True
        # Only the asked regions are revealed; everything else stays ignored, not background.
        np.testing.assert_array_equal(revealed, boxes)


def test_train_and_predict_write_masks_and_objects(synthetic, tmp_path):
    folder, data = synthetic
    project_dir = tmp_path / "p"
    invoke("project", "init", project_dir, "--images", folder / "images", "--masks", folder / "initial", *TINY)
    invoke("project", "predict", project_dir, "--out", tmp_path / "pred")
    assert AnnotationProject(project_dir).state["weights"]["steps"] == 3  # trained first: --train-steps 3
    out = invoke("project", "train", project_dir, "--steps", 2)
    assert "5 steps in all" in out
    for name in data.names:
        with Image.open(tmp_path / "pred" / f"{name}_mask.png") as mask:
            assert mask.size == (128, 96)
        check_qupath_geojson(tmp_path / "pred" / f"{name}.geojson", (96, 128))
    assert "network: 5 steps, up to date" in invoke("project", "status", project_dir)


def test_a_failing_command_leaves_the_project_as_it_was(synthetic, tmp_path, monkeypatch):
    import focal_al.project as project_module

    folder, data = synthetic
    truth = dict(zip(data.names, data.masks))
    project = AnnotationProject.create(tmp_path / "p", [folder / "images"], masks=folder / "initial",
                                       patch_size=16, overlap=0.5, scale=0.5, width=4, depth=2, train_steps=2)
    before = (tmp_path / "p" / "state.json").read_text()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    # Killed at the commit point of query, after training and the exports were written.
    monkeypatch.setattr(project_module, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        project.query(4)
    monkeypatch.undo()
    assert (tmp_path / "p" / "state.json").read_text() == before
    project = AnnotationProject(tmp_path / "p")
    assert project.state["rounds"] == [] and project.state["weights"] is None
    round_dir = project.query(4)
    weights = project.state["weights"]["file"]
    assert sorted(f"weights/{p.name}" for p in (tmp_path / "p" / "weights").iterdir()) == [weights]

    files = answer_round(round_dir, truth, tmp_path / "export", as_array=True)
    before = (tmp_path / "p" / "state.json").read_text()
    # Killed at the commit point of import, after the new label files were written.
    monkeypatch.setattr(project_module, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        AnnotationProject(tmp_path / "p").import_geojson(files)
    monkeypatch.undo()
    assert (tmp_path / "p" / "state.json").read_text() == before
    assert AnnotationProject(tmp_path / "p").open_regions() == project.open_regions()
    report = AnnotationProject(tmp_path / "p").import_geojson(files)
    assert len(report.answered) == 4 and report.missing == []
    project = AnnotationProject(tmp_path / "p")
    referenced = {project.path / f for f in project.state["labels"].values()}
    assert set((project.path / "labels").iterdir()) == referenced


def test_glas_round_trip(glas_dir, tmp_path):
    names = ["train_1", "train_2", "train_3"]
    (tmp_path / "val").mkdir()
    shutil.copy(glas_dir / "train_3_anno.png", tmp_path / "val")
    project_dir = tmp_path / "glas"
    invoke("project", "init", project_dir, *[a for n in names for a in ("--images", glas_dir / f"{n}.png")],
           "--validation-masks", tmp_path / "val", "--mask-suffix", "_anno", "--patch-size", 32, "--scale", 0.25,
           "--width", 4, "--depth", 2, "--train-steps", 3)
    invoke("project", "query", project_dir, "--n", 4)
    truth = {n: np.asarray(Image.open(glas_dir / f"{n}_anno.png")) for n in names}
    round_dir = project_dir / "rounds" / "round-001"
    files = answer_round(round_dir, truth, tmp_path / "export", as_array=True)
    invoke("project", "import", project_dir, *[a for f in files for a in ("--geojson", f)])
    project = AnnotationProject(project_dir)
    reference = reference_learner(project, [project.state["rounds"][0]["asked"]])
    for i, name in enumerate(project.store.image_names):
        labels = project.labels(name)
        assert labels.shape == truth[name].shape  # original pixels, whatever the network's scale
        shape = tuple(int(v) for v in project.store.image_shapes[i])
        np.testing.assert_array_equal(_downsample_labels(labels, shape) != 255, reference.revealed_.mask(i))
        revealed = labels != 255
        np.testing.assert_array_equal(labels[revealed], (truth[name] > 0)[revealed])
    assert project.status()["validation_dice"] is None  # no network trained yet
    invoke("project", "train", project_dir)
    status = AnnotationProject(project_dir).status()
    assert status["regions_answered"] == 4 and 0 <= status["validation_dice"] <= 1
    for file in (round_dir / "geojson").glob("*.geojson"):
        check_qupath_geojson(file, truth[file.stem].shape)


def test_store_is_the_pool_at_the_network_scale(synthetic, tmp_path):
    folder, data = synthetic
    project = AnnotationProject.create(tmp_path / "p", [folder / "images"], patch_size=16, overlap=0.5,
                                       scale=0.5, width=4, depth=2)
    reference = PatchStore.from_dataset(tmp_path / "ref.h5", data.rescale(0.5), patch_size=16, overlap=0.5,
                                        allow_padding=True)
    np.testing.assert_array_equal(project.store.coords, reference.coords)
    np.testing.assert_array_equal(project.store.patches, reference.patches)
    assert (np.asarray(project.store.labels) == 255).all()
