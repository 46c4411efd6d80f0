"""Bad input to an annotation project: a clear error naming the file, and nothing written."""
import json
import shutil

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from focal_al.annotations import AnnotationError, mask_to_features, read_geojson, region_feature
from focal_al.cli import main
from focal_al.datasets import make_synthetic
from focal_al.project import AnnotationProject, ImageChangedError, ProjectError



@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A project with one open round of 4 regions, and the data it was made from."""
    folder = tmp_path_factory.mktemp("data")
    data = make_synthetic(3, size=(96, 128), seed=5)
    for sub in ("images", "truth", "initial"):
        (folder / sub).mkdir()
    for image, mask, name in zip(data.images, data.masks, data.names):
        Image.fromarray(image).save(folder / "images" / f"{name}.png")
        Image.fromarray(mask.astype(np.uint16)).save(folder / "truth" / f"{name}.png")
    shutil.copy(folder / "truth" / f"{data.names[0]}.png", folder / "initial")
    project = AnnotationProject.create(folder / "project", [folder / "images"], masks=folder / "initial",
                                       patch_size=16, overlap=0.5, scale=0.5, width=4, depth=2, train_steps=2)
    project.query(4)
    return folder, data


@pytest.fixture
def project(template, tmp_path):
    folder, _ = template
    shutil.copytree(folder / "project", tmp_path / "project")
    return AnnotationProject(tmp_path / "project")


def snapshot(project):
    return {p.relative_to(project.path): p.read_bytes() for p in project.path.rglob("*") if p.is_file()}


def an_open_region(project):
    return project.open_regions()[0]


def export(project, data, region, tmp_path, *, features=None, form="array"):
    glands = mask_to_features(data.masks[data.names.index(region.image)])
    features = [region_feature(region)] + glands if features is None else features
    path = tmp_path / f"{region.image}.geojson"
    body = features if form == "array" else {"type": "FeatureCollection", "features": features}
    path.write_text(json.dumps(body))
    return path


def test_mask_of_the_wrong_size(project, template, tmp_path):
    region = an_open_region(project)
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(tmp_path / "masks" / f"{region.image}.png")
    before = snapshot(project)
    with pytest.raises(AnnotationError, match=r"is 64 x 48 pixels \(W x H\) but its image is 128 x 96") as err:
        project.import_masks(tmp_path / "masks")
    assert f"{region.image}.png" in str(err.value) and "original image size" in str(err.value)
    assert snapshot(project) == before


def test_mask_values_out_of_range(project, tmp_path):
    region = an_open_region(project)
    (tmp_path / "masks").mkdir()
    values = np.zeros((96, 128), np.int32)
    values[0, 0] = -2
    tifffile.imwrite(tmp_path / "masks" / f"{region.image}.tif", values)
    before = snapshot(project)
    with pytest.raises(AnnotationError, match=r"label values in \[-2, 0\]") as err:
        project.import_masks(tmp_path / "masks")
    assert f"{region.image}.tif" in str(err.value)
    assert snapshot(project) == before


def test_mask_with_colour_channels(project, tmp_path):
    region = an_open_region(project)
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((96, 128, 3), np.uint8)).save(tmp_path / "masks" / f"{region.image}.png")
    with pytest.raises(AnnotationError, match="expected a single-channel"):
        project.import_masks(tmp_path / "masks")


@pytest.mark.parametrize("body, found", [
    ({"type": "Feature", "geometry": None, "properties": {}}, "holds Feature"),
    ({"annotations": []}, "an object without 'type'"),
    ("hello", "holds str"),
    ([{"type": "Polygon", "coordinates": []}], "element(s) that are not Features"),
])
def test_geojson_neither_collection_nor_array_of_features(project, tmp_path, body, found):
    path = tmp_path / f"{an_open_region(project).image}.geojson"
    path.write_text(json.dumps(body))
    with pytest.raises(AnnotationError, match="expected a FeatureCollection or a JSON array") as err:
        project.import_geojson([path])
    assert found in str(err.value) and str(path) in str(err.value)


def test_geojson_beyond_the_image(project, template, tmp_path):
    _, data = template
    region = an_open_region(project)
    far = {"type": "Feature", "properties": {"objectType": "annotation"},
           "geometry": {"type": "Polygon", "coordinates": [[[10, 10], [300, 10], [300, 40], [10, 10]]]}}
    path = export(project, data, region, tmp_path, features=[region_feature(region), far])
    before = snapshot(project)
    with pytest.raises(AnnotationError, match=r"spans x 10\.\.300, y 10\.\.40, beyond image") as err:
        project.import_geojson([path])
    assert "128 x 96 pixels" in str(err.value) and "full-resolution" in str(err.value)
    assert snapshot(project) == before


def test_geojson_from_a_downsampled_view(project, template, tmp_path):
    _, data = template
    region = an_open_region(project)
    half = region_feature(region)
    half["geometry"]["coordinates"] = [[[x / 2, y / 2] for x, y in half["geometry"]["coordinates"][0]]]
    path = export(project, data, region, tmp_path, features=[half])
    with pytest.raises(AnnotationError, match="another coordinate frame") as err:
        project.import_geojson([path])
    assert region.name in str(err.value) and str(region.box) in str(err.value)


def test_image_changed_since_init(tmp_path):
    data = make_synthetic(2, size=(64, 64), seed=1)
    (tmp_path / "images").mkdir()
    for image, name in zip(data.images, data.names):
        Image.fromarray(image).save(tmp_path / "images" / f"{name}.png")
    AnnotationProject.create(tmp_path / "p", [tmp_path / "images"], patch_size=16, width=4, depth=2)
    changed = data.images[1].copy()
    changed[0, 0] ^= 255
    Image.fromarray(changed).save(tmp_path / "images" / f"{data.names[1]}.png")
    with pytest.raises(ImageChangedError, match="has changed since the project was initialised") as err:
        AnnotationProject(tmp_path / "p")
    assert f"{data.names[1]}.png" in str(err.value)
    result = CliRunner().invoke(main, ["project", "status", str(tmp_path / "p")])
    assert result.exit_code == 1 and "has changed since" in result.output


def test_import_with_no_labels_at_all(project, template, tmp_path):
    _, data = template
    region = an_open_region(project)
    path = export(project, data, region, tmp_path, features=[])
    before = snapshot(project)
    with pytest.raises(AnnotationError, match="holds no features: it has no labels to import"):
        project.import_geojson([path])
    never = region_feature(region)
    never["properties"]["name"] = "R7-001"
    path = export(project, data, region, tmp_path, features=[never])
    with pytest.raises(AnnotationError, match="Nothing to import") as err:
        project.import_geojson([path])
    assert "'R7-001' was never asked" in str(err.value)
    assert snapshot(project) == before


def test_annotation_for_a_region_never_asked_is_accepted_and_reported(project, template, tmp_path):
    _, data = template
    region = an_open_region(project)
    never = region_feature(region)
    never["properties"]["name"] = "R7-001"
    glands = mask_to_features(data.masks[data.names.index(region.image)])
    path = export(project, data, region, tmp_path, features=[region_feature(region), never] + glands,
                  form="collection")
    report = project.import_geojson([path])
    assert report.answered == [region.name]
    assert any("'R7-001' was never asked" in line for line in report.not_asked)
    assert region.name not in report.missing and len(report.missing) == 3
    result = CliRunner().invoke(main, ["project", "import", str(project.path), "--geojson", str(path)])
    assert result.exit_code == 1 and "was answered before" in result.output


def test_qupath_export_round_trips_read_geojson(project, tmp_path):
    region = an_open_region(project)
    round_file = project.path / "rounds" / "round-001" / "geojson" / f"{region.image}.geojson"
    features = read_geojson(round_file)
    assert region.name in {f["properties"]["name"] for f in features}


def test_bad_configuration_is_refused(template, tmp_path):
    folder, _ = template
    with pytest.raises(ValueError, match="must be a multiple of 2\\*\\*depth = 8"):
        AnnotationProject.create(tmp_path / "a", [folder / "images"], patch_size=20, depth=3)
    with pytest.raises(ValueError, match="patch-level strategy"):
        AnnotationProject.create(tmp_path / "b", [folder / "images"], strategy="image-iu", depth=2, patch_size=16)
    with pytest.raises(FileExistsError, match="already exists"):
        AnnotationProject.create(folder / "project", [folder / "images"], depth=2, patch_size=16)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_query_refuses_while_regions_are_open(project):
    with pytest.raises(ProjectError, match=r"4 unanswered region\(s\) \(R1-001"):
        project.query(2)


def test_commands_do_not_interleave(project, template, tmp_path):
    import fcntl

    _, data = template
    region = an_open_region(project)
    path = export(project, data, region, tmp_path)
    with open(project.path / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(ProjectError, match="Another focal-al command is working on project"):
            project.import_geojson([path])
    other = AnnotationProject(project.path)
    project.import_geojson([path])
    with pytest.raises(ProjectError, match="was changed by another command since it was opened"):
        other.import_geojson([path])


def test_mask_files_of_unknown_images_are_reported(project, template, tmp_path):
    folder, data = template
    region = an_open_region(project)
    (tmp_path / "masks").mkdir()
    shutil.copy(folder / "truth" / f"{region.image}.png", tmp_path / "masks")
    Image.fromarray(np.zeros((96, 128), np.uint8)).save(tmp_path / "masks" / "elsewhere.png")
    report = project.import_masks(tmp_path / "masks")
    assert region.name in report.answered
    assert any("elsewhere.png': no project image of that name" in line for line in report.not_asked)


def test_import_needs_one_source(project):
    result = CliRunner().invoke(main, ["project", "import", str(project.path)])
    assert result.exit_code == 2 and "Give either --masks or --geojson" in result.output


def test_a_killed_command_leaves_the_project_as_it_was(template, tmp_path):
    """SIGKILL a real `focal-al project train` at two moments: the project is old or new, never broken."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    folder, _ = template
    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-c", "import sys, torch; torch.set_num_threads(1); from focal_al.cli import main; "
               "main(sys.argv[1:])"]
    outcomes = set()
    for delay in (2.5, 4.0):
        target = tmp_path / f"p{delay}"
        shutil.copytree(folder / "project", target)
        before = (target / "state.json").read_text()
        process = subprocess.Popen(command + ["project", "train", str(target), "--steps", "400"], cwd=repo,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONPATH": str(repo)})
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        project = AnnotationProject(target)
        after = (target / "state.json").read_text()
        outcomes.add(after == before)
        if after == before:
            assert project.state == json.loads(before)
        steps = project.state["weights"]["steps"]
        project.train(steps=1)  # a rerun continues
        assert AnnotationProject(target).state["weights"]["steps"] == steps + 1
        assert sorted(p.name for p in (target / "weights").iterdir()) == [f"net.{project.state['generation']}.safetensors"]
    assert True in outcomes  # at least one kill landed before the commit


def test_committing_deletes_only_the_projects_own_files(project):
    user_files = {
        project.path / "rounds" / "answers" / "A.geojson": b"{}",
        project.path / "weights" / "my_good_weights.pt": b"mine",
        project.path / "weights" / "net.notes.txt": b"mine too",
        project.path / "labels" / "README.txt": b"how we label",
        project.path / "weights" / "old" / "net.1.pt": b"an archive",
    }
    for path, data in user_files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    stale = project.path / "weights" / "net.0.safetensors"  # one the project wrote and no longer uses
    stale.write_bytes(b"old")
    project.train(steps=1)
    project.train(steps=1)  # and a second commit: a sub-folder in weights/ never breaks it
    assert all(path.read_bytes() == data for path, data in user_files.items())
    assert not stale.exists()
    assert (project.path / project.state["weights"]["file"]).is_file()


def test_a_geojson_without_region_rectangles_answers_only_the_regions_its_objects_touch(project, template, tmp_path):
    _, data = template

    def touches(g, box):
        return g.box[0] <= box[2] and box[0] <= g.box[2] and g.box[1] <= box[3] and box[1] <= g.box[3]

    # A region of an image with another open region that a gland inside the first does not touch.
    pairs = [(r, g) for r in project.open_regions() for g in project.open_regions()
             if g.image == r.image and g is not r and not touches(g, (r.box[0] + 1, r.box[1] + 1, r.box[0] + 4, r.box[1] + 4))]
    if not pairs:  # the template asks more regions than images, so some image holds two
        pytest.skip("no image with two separate open regions in this template")
    region, other = pairs[0]
    x0, y0 = region.box[:2]
    gland = {"type": "Feature", "properties": {"objectType": "annotation", "classification": {"name": "Gland"}},
             "geometry": {"type": "Polygon", "coordinates": [[[x0 + 1, y0 + 1], [x0 + 4, y0 + 1], [x0 + 4, y0 + 4],
                                                              [x0 + 1, y0 + 1]]]}}
    report = project.import_geojson([export(project, data, region, tmp_path, features=[gland])])
    assert region.name in report.answered and other.name not in report.answered
    assert other.name in {g.name for g in project.open_regions()}  # not committed as background
    assert any("left open" in line and other.name in line for line in report.not_asked)


def test_a_wrongly_answered_region_can_be_reopened_and_answered_again(project, template, tmp_path):
    from click.testing import CliRunner

    from focal_al.cli import main

    _, data = template
    region = an_open_region(project)
    project.import_geojson([export(project, data, region, tmp_path)])
    assert region.name not in {g.name for g in project.open_regions()}
    generation = project.state["labels_generation"]
    result = CliRunner().invoke(main, ["project", "reopen", str(project.path), region.name])
    assert result.exit_code == 0 and region.name in result.output
    project = AnnotationProject(project.path)
    assert region.name in {g.name for g in project.open_regions()}
    assert project.state["labels_generation"] == generation + 1
    reopened = [e for r in project.state["rounds"] for e in r.get("reopened", [])]
    assert reopened == [{"row": region.pool_index, "region": region.name, "labels_generation": generation + 1}]
    x0, y0, x1, y1 = region.box
    others = [g for g in project.regions() if g.image == region.image and g.name != region.name
              and g.pool_index in project.labelled()]
    untouched = np.ones((y1 - y0, x1 - x0), dtype=bool)
    for g in others:  # pixels another answered region covers keep their labels
        untouched[max(g.box[1], y0) - y0:max(min(g.box[3], y1) - y0, 0), max(g.box[0], x0) - x0:max(min(g.box[2], x1) - x0, 0)] = False
    assert (project.labels(region.image)[y0:y1, x0:x1][untouched] == 255).all()
    report = project.import_geojson([export(project, data, region, tmp_path)])
    assert region.name in report.answered
    for bad, message in ((["R9-999"], "asked no region"), ([project.open_regions()[0].name], "not answered")):
        refused = CliRunner().invoke(main, ["project", "reopen", str(project.path), *bad])
        assert refused.exit_code != 0 and message in refused.output and "Traceback" not in refused.output


def test_a_random_round_never_runs_the_network(template, tmp_path, monkeypatch):
    from focal_al.estimator import SegmentationNet

    folder, _ = template
    project = AnnotationProject.create(tmp_path / "fresh", [folder / "images"], patch_size=16, overlap=0.5,
                                       scale=0.5, width=4, depth=2, train_steps=2)
    monkeypatch.setattr(SegmentationNet, "score_pool", lambda *a, **k: pytest.fail("scored a random round"))
    project.query(3)  # nothing labelled: random regions
    assert len(project.open_regions()) == 3
    assert project.state["rounds"][0]["strategy"] == "random-patch"
