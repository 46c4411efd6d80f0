"""Whole-slide images through `focal-al project`: tissue only, level-0 exports and imports, three rounds."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from focal_al.annotations import mask_to_features
from focal_al.cli import main
from focal_al.project import AnnotationProject

from test_slides import TISSUE, write_slide


@pytest.fixture(scope="module")
def slide_pair(tmp_path_factory, glas_dir):
    """Two pyramidal TIFFs (level 0, /2, /4; 0.5 um/px) holding GlaS tiles on glass, and their ground truth."""
    folder = tmp_path_factory.mktemp("slides")
    truths = {}
    for name, image in (("slideA", "train_1"), ("slideB", "train_2")):
        tile = np.asarray(Image.open(glas_dir / f"{image}.png").convert("RGB"))[:384, :512]
        # Ground truth drawn at level 1 (each of its pixels a 2 x 2 block at level 0): glands traced at
        # level 0 then rasterise exactly onto the project's label frame (level 1).
        anno = np.kron(np.asarray(Image.open(glas_dir / f"{image}_anno.png"))[:384:2, :512:2], np.ones((2, 2), int))
        rng = np.random.default_rng(0)
        canvas = np.clip(rng.normal(238, 3, (768, 1024, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
        truth = np.zeros((768, 1024), dtype=np.int32)
        y, x = TISSUE
        canvas[y:y + 384, x:x + 512] = tile
        truth[y:y + 384, x:x + 512] = anno
        write_slide(folder / f"{name}.tif", canvas)
        truths[name] = truth
    return folder, truths


def answer(project, round_folder, truths, tmp_path):
    """A scripted annotator: QuPath-style exports (level-0 pixels) of each open region and the glands in it."""
    files = []
    for geojson in sorted((round_folder / "geojson").glob("*.geojson")):
        name = geojson.stem
        regions = json.loads(geojson.read_text())["features"]
        glands = mask_to_features(truths[name])
        path = tmp_path / f"{name}.geojson"
        path.write_text(json.dumps(regions + glands))
        files.append(path)
    return files


def test_slides_through_three_rounds_and_predict(slide_pair, tmp_path):
    folder, truths = slide_pair
    proj = tmp_path / "proj"
    init = CliRunner().invoke(main, ["project", "init", str(proj), "--images", str(folder), "--mpp", "1.0",
                                     "--patch-size", "32", "--width", "2", "--depth", "2", "--train-steps", "2",
                                     "--clusters", "2"])
    assert init.exit_code == 0, init.output
    project = AnnotationProject(proj)
    store = project.store
    assert np.allclose(store.image_downsamples, 2.0)  # --mpp 1.0 on 0.5 um/px slides: level 1
    y, x = TISSUE
    # Tissue only: every patch lies on the GlaS tile (level-0 corners inside it, up to a patch of margin).
    c0 = store.coords_level0
    assert len(store) > 0 and (c0[:, 0] >= y - 64).all() and (c0[:, 1] >= x - 64).all()
    for round_ in (1, 2, 3):
        labelled = set(AnnotationProject(proj).labelled().tolist())
        # Round 3 is scored on a 2-worker Dask LocalCluster and selected by the streaming FocAnnot.
        workers = ["--workers", "2"] if round_ == 3 else []
        out = CliRunner().invoke(main, ["project", "query", str(proj), "--n", "3", *workers])
        assert out.exit_code == 0, out.output
        last = json.loads((proj / "state.json").read_text())["rounds"][-1]
        assert len(last["asked"]) == 3 and not labelled & set(last["asked"])  # unlabelled candidates only
        assert last["strategy"] == ("focannot-streaming" if workers else "random-patch" if round_ == 1 else "focannot")
        folder_r = proj / "rounds" / f"round-{round_:03d}"
        exported = {f["properties"]["name"]: f for g in (folder_r / "geojson").glob("*.geojson")
                    for f in json.loads(g.read_text())["features"]}
        for region in AnnotationProject(proj).regions(round_):  # label frame (level 1) -> level 0: x 2
            xs, ys = zip(*exported[region.name]["geometry"]["coordinates"][0])
            assert (min(xs), min(ys), max(xs), max(ys)) == tuple(2 * v for v in region.box)
        imported = CliRunner().invoke(main, ["project", "import", str(proj), "--geojson",
                                             *map(str, answer(project, folder_r, truths, tmp_path))])
        assert imported.exit_code == 0 and "0 still missing" in imported.output, imported.output
    assert not list((proj / "rounds").glob(".scores-*"))  # the distributed round's scratch scores are gone
    project = AnnotationProject(proj)
    for name, truth in truths.items():
        labels = project.labels(name)  # the label frame: level 1
        truth1 = truth[::2, ::2] > 0
        revealed = labels != 255
        assert revealed.any()
        # The revealed pixels equal the ground truth, pixel for pixel.
        assert np.array_equal(labels[revealed], truth1[revealed])
    predicted = CliRunner().invoke(main, ["project", "predict", str(proj), "--out", str(tmp_path / "pred")])
    assert predicted.exit_code == 0, predicted.output
    for name in truths:
        collection = json.loads((tmp_path / "pred" / f"{name}.geojson").read_text())
        assert collection["type"] == "FeatureCollection"
        assert not (tmp_path / "pred" / f"{name}_mask.png").exists()  # no full-resolution mask of a slide


def test_slide_projects_refuse_what_does_not_fit_them(slide_pair, tmp_path):
    folder, _ = slide_pair
    for extra, words in ((["--scale", "0.5"], "--mpp or --level"), (["--masks", str(folder)], "start unlabelled")):
        out = CliRunner().invoke(main, ["project", "init", str(tmp_path / "p"), "--images", str(folder), "--level",
                                        "1", "--patch-size", "32", "--depth", "2", *extra])
        assert out.exit_code != 0 and words in out.output, out.output
