"""Peak memory of `focal-al project init` on a whole-slide image: the pool is read block by block.

Writes a synthetic pyramidal TIFF (tiled, levels 1/1, 1/2, 1/4, 0.5 um/px) of GlaS-like tissue blobs
on glass, tile by tile (the slide is never held whole, here either), then runs `project init
--mpp 1.0` on it in a child process and reads that process's peak resident memory
(``ru_maxrss``). For comparison the same child first measures its own baseline after importing
focal-al and torch (what every command costs before reading a pixel).

    python benchmarks/bench_project_slide.py                       # 8192 x 12288, about 2 minutes
    python benchmarks/bench_project_slide.py --height 4096 --width 6144   # quicker

Writes ``benchmarks/results/project_slide.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "project_slide.json"
TILE = 512


def write_slide(path: Path, height: int, width: int, mpp: float = 0.5) -> None:
    """A tiled pyramidal TIFF of pink blobs (tissue) on near-white glass, written tile by tile."""
    import tifffile

    rng = np.random.default_rng(0)
    centres = rng.uniform((0, 0), (height, width), size=(40, 2))
    radii = rng.uniform(300, 900, size=40)

    def tiles(k):
        h, w = height // k, width // k
        for y in range(0, h, TILE):
            for x in range(0, w, TILE):
                yy, xx = np.mgrid[y:y + TILE, x:x + TILE] * k
                tissue = np.zeros((TILE, TILE), dtype=bool)
                for (cy, cx), r in zip(centres, radii):
                    tissue |= (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
                tile = np.where(tissue[..., None], np.array([170, 90, 160]), np.array([238, 238, 238]))
                yield (tile + rng.normal(0, 4, tile.shape)).clip(0, 255).astype(np.uint8)

    res = 1e4 / mpp
    opts = dict(tile=(TILE, TILE), photometric="rgb", compression="zlib", resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(tiles(1), shape=(height, width, 3), dtype=np.uint8, subifds=2, resolution=(res, res), **opts)
        for k in (2, 4):
            tif.write(tiles(k), shape=(height // k, width // k, 3), dtype=np.uint8, subfiletype=1,
                      resolution=(res / k, res / k), **opts)


CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import torch  # noqa: F401  (as every command imports it)
    from focal_al.project import AnnotationProject
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    project = AnnotationProject.create(sys.argv[2], [sys.argv[1]], mpp=1.0, patch_size=64, width=4, depth=4)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_mib": baseline / 1024, "peak_mib": peak / 1024, "seconds": seconds,
                      "patches": len(project.store), "frame": project.config["images"][0]["frame"]}))
""")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=8192)
    parser.add_argument("--width", type=int, default=12288)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        slide = Path(tmp) / "slide.tif"
        start = time.perf_counter()
        write_slide(slide, args.height, args.width)
        print(f"wrote a {args.width} x {args.height} pyramidal slide in {time.perf_counter() - start:.0f} s "
              f"({slide.stat().st_size / 2**20:.0f} MiB)")
        out = subprocess.run([sys.executable, "-c", CHILD, str(slide), str(Path(tmp) / "proj")],
                             capture_output=True, text=True, check=True)
        measured = json.loads(out.stdout.strip().splitlines()[-1])
    result = {"slide": {"height": args.height, "width": args.width, "levels": [1, 2, 4], "mpp": 0.5},
              "init": {"mpp": 1.0, "patch_size": 64}, **{k: round(v, 1) if isinstance(v, float) else v
                                                         for k, v in measured.items()},
              "peak_above_baseline_mib": round(measured["peak_mib"] - measured["baseline_mib"], 1)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"project init: {result['patches']} tissue patches in {result['seconds']} s; peak resident memory "
          f"{result['peak_mib']} MiB ({result['baseline_mib']} MiB after importing focal-al and torch, "
          f"{result['peak_above_baseline_mib']} MiB more); written to {args.output}")


if __name__ == "__main__":
    main()
