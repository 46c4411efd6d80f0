"""Write GlaS resized by the bench's own ``rescale`` to a folder, so a machine without ``../shared``
(a GPU machine that receives the repository only) runs ``--scale 1`` on exactly the arrays that
``--scale <factor>`` gives here. Checks the copy against the original before it returns.

    python3 benchmarks/device/stage_glas.py ../shared/data/glas .gpu/glas-half --scale 0.5
"""
import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from focal_al.datasets import load_glas


def stage(source: Path, target: Path, scale: float) -> int:
    target.mkdir(parents=True, exist_ok=True)
    n = 0
    for split in ("train", "testA", "testB"):
        data = load_glas(source, split).rescale(scale)
        for name, image, mask in zip(data.names, data.images, data.masks):
            Image.fromarray(image).save(target / f"{name}.png")
            if mask.max() < 256:
                Image.fromarray(mask.astype(np.uint8)).save(target / f"{name}_anno.png")
            else:
                Image.fromarray(mask.astype(np.uint16)).save(target / f"{name}_anno.png")
            n += 1
    if (source / "Grade.csv").is_file():
        shutil.copy(source / "Grade.csv", target / "Grade.csv")
    for split in ("mixed-train", "mixed-test"):
        want, got = load_glas(source, split).rescale(scale), load_glas(target, split).rescale(1.0)
        assert want.names == got.names, split
        for a, b in zip(want.images + want.masks, got.images + got.masks):
            assert a.shape == b.shape and np.array_equal(a, b), split
    return n


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--scale", type=float, default=0.5)
    args = parser.parse_args()
    print(f"{stage(args.source, args.target, args.scale)} images written to {args.target} and checked")
