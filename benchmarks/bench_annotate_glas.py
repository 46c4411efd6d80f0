"""The annotation workflow on GlaS, answered from the ground truth through the files, via the CLI.

Runs ``focal-al project init / query / import / train / status / predict`` on a few GlaS images
(one complete mask to start from, two held-out validation images). Each round a scripted
annotator does what a person does in QuPath: reads the round's GeoJSON, traces the glands touching
the regions from the GlaS instance masks (skimage ``find_contours`` + shapely) and writes a bare
JSON array of Features (QuPath's default export), which ``import`` reads back. Prints the time of
each command, checks that the revealed labels equal the ground truth inside the regions, and writes
``benchmarks/results/annotate_glas.json`` and the overview picture of round 1 used in the README
(``docs/annotate-overview.png``).

    python benchmarks/bench_annotate_glas.py --glas ../shared/data/glas
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image
from shapely.geometry import box, shape

from focal_al.annotations import mask_to_features, read_geojson
from focal_al.cli import main as cli
from focal_al.project import AnnotationProject

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs"


def run(*args) -> tuple[str, float]:
    start = time.perf_counter()
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if result.exit_code:
        sys.exit(f"focal-al {' '.join(map(str, args))} failed:\n{result.output}")
    return result.output.strip(), time.perf_counter() - start


def answer(round_dir: Path, glas: Path, out: Path) -> list[Path]:
    """QuPath-style exports of the round: its region rectangles and the glands touching them."""
    out.mkdir(parents=True)
    files = []
    for file in sorted((round_dir / "geojson").glob("*.geojson")):
        regions = read_geojson(file)
        truth = np.asarray(Image.open(glas / f"{file.stem}_anno.png"))
        areas = [box(*shape(f["geometry"]).bounds) for f in regions]
        glands = [g for g in mask_to_features(truth, classification={"name": "Tumor", "color": [200, 0, 0]})
                  if any(shape(g["geometry"]).intersects(a) for a in areas)]
        files.append(out / file.name)
        files[-1].write_text(json.dumps(regions + glands))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glas", type=Path, default=HERE.parents[1] / "shared" / "data" / "glas")
    parser.add_argument("--images", type=int, default=8, help="GlaS training images in the pool.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=8, help="Regions per round.")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    pool = [f"train_{i}" for i in range(1, args.images + 1)]
    validation = ["testA_1", "testA_2"]
    timings, lines = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for folder, names in (("initial", pool[:1]), ("validation", validation)):
            (tmp / folder).mkdir()
            for name in names:
                shutil.copy(args.glas / f"{name}_anno.png", tmp / folder)
        project = tmp / "project"
        images = [a for n in pool + validation for a in ("--images", args.glas / f"{n}.png")]
        out, timings["init"] = run("project", "init", project, *images, "--masks", tmp / "initial",
                                   "--validation-masks", tmp / "validation", "--mask-suffix", "_anno",
                                   "--scale", 0.5, "--patch-size", 64, "--overlap", 0.5, "--width", 8,
                                   "--depth", 3, "--train-steps", 150)
        lines.append(out)
        for r in range(1, args.rounds + 1):
            out, timings[f"query-{r}"] = run("project", "query", project, "--n", args.n, "--threads", 1)
            lines.append(out)
            round_dir = project / "rounds" / f"round-{r:03d}"
            if r == 1:
                overview = sorted((round_dir / "overview").glob("*.png"))[0]
                DOCS.mkdir(exist_ok=True)
                with Image.open(overview) as picture:
                    picture.thumbnail((560, 560))
                    # A 128-colour palette keeps the committed picture small (about a quarter of RGB).
                    picture.convert("RGB").quantize(colors=128).save(DOCS / "annotate-overview.png", optimize=True)
                lines.append(f"overview picture: {overview.name} -> docs/annotate-overview.png")
            files = answer(round_dir, args.glas, tmp / f"export-{r}")
            out, timings[f"import-{r}"] = run("project", "import", project,
                                              *[a for f in files for a in ("--geojson", f)])
            lines.append(out)
        out, timings["train"] = run("project", "train", project, "--threads", 1)
        lines.append(out)
        out, timings["status"] = run("project", "status", project)
        lines.append(out)
        _, timings["predict"] = run("project", "predict", project, "--out", tmp / "predicted", "--threads", 1)

        p = AnnotationProject(project)
        mismatched = 0
        for name in p.pool_names:
            labels = p.labels(name)
            revealed = labels != 255
            truth = np.asarray(Image.open(args.glas / f"{name}_anno.png")) > 0
            mismatched += int((labels[revealed] != truth[revealed]).sum())
        status = p.status()
    for line in lines:
        print(line)
    print("seconds per command: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"revealed pixels whose label differs from the GlaS mask: {mismatched}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "annotate_glas.json").write_text(json.dumps({
        "images": pool, "validation": validation, "rounds": args.rounds, "regions_per_round": args.n,
        "seconds": {k: round(v, 2) for k, v in timings.items()}, "mismatched_revealed_pixels": mismatched,
        "status": {k: v for k, v in status.items() if k != "rounds"},
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
