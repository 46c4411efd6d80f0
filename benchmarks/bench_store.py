"""Benchmark PatchStore reads: random batches from the memmap vs an in-memory array vs h5py.

Builds a store (synthetic random patches by default, or GlaS with ``--glas``) in a temporary
directory, warms the page cache, then times random batches of patches (warm cache):

- ``in_memory``: the same patches in a numpy array (the upper bound);
- ``memmap``: ``PatchStore.patches[idx]`` (any index order);
- ``h5py``: ``dataset[sorted unique idx]`` on the same HDF5 dataset.

Prints patches/s and the ratio to in-memory, and writes ``benchmarks/results/store.json``
(goal: memmap >= 0.6x in-memory).

    python benchmarks/bench_store.py            # 20,000 patches 3x128x128 (~1 GB on disk)
    python benchmarks/bench_store.py --quick    # 2,000 patches, a few seconds
    python benchmarks/bench_store.py --glas ../shared/data/glas
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from focal_al.patches import patch_grid
from focal_al.store import PatchStore

RESULTS = Path(__file__).resolve().parent / "results"


class _RandomImages:
    """A lazy sequence of random images: the pool never has to fit in memory to be written."""

    def __init__(self, n_images, size, seed):
        self.n_images, self.size, self.seed = n_images, size, seed

    def __len__(self):
        return self.n_images

    def __getitem__(self, i):
        if not 0 <= i < self.n_images:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i])
        return rng.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8)


def _build(args, directory):
    path = Path(directory) / "bench.h5"
    start = time.perf_counter()
    if args.glas:
        from focal_al.datasets import load_glas

        dataset = load_glas(args.glas, "train")
        store = PatchStore.from_dataset(
            path, dataset, patch_size=args.patch_size, overlap=args.overlap
        )
        source = f"GlaS train ({len(dataset)} images) from {args.glas}"
    else:
        size = 1024
        per_image = len(patch_grid((size, size), args.patch_size, args.overlap).coords)
        n_images = -(-args.n // per_image)
        images = _RandomImages(n_images, size, args.seed)
        labels = (np.zeros((size, size), np.uint8) for _ in range(n_images))
        store = PatchStore.build(
            path,
            images,
            labels,
            [f"random_{i}" for i in range(n_images)],
            patch_size=args.patch_size,
            overlap=args.overlap,
        )
        source = f"random uint8 images {size}x{size} ({n_images} images)"
    return store, source, time.perf_counter() - start


def _time(read, batches, repeats):
    """Median and spread of patches/s over ``repeats`` passes of the same batches."""
    read(batches[0])  # first-touch costs out of the timing
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        total = 0
        for idx in batches:
            total += len(read(idx))
        rates.append(total / (time.perf_counter() - start))
    return {
        "patches_per_s": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 patches, fewer batches")
    parser.add_argument("--n", type=int, default=20_000, help="number of patches (synthetic)")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--overlap", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=300, help="batches per timed pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--glas", type=Path, default=None, help="build from GlaS train instead")
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=RESULTS / "store.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.batches, args.repeats = 2_000, 100, 3

    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        store, source, build_s = _build(args, directory)
        n = len(store)
        with h5py.File(store.path, "r") as f:
            dset = f["patches"]
            memmap = store.patches
            in_memory = np.array(memmap)  # also warms the page cache for the memmap
            patch_shape = list(in_memory.shape[1:])
            rng = np.random.default_rng(args.seed)
            batches = [
                rng.choice(n, size=min(args.batch_size, n), replace=False)
                for _ in range(args.batches)
            ]
            sorted_batches = [np.sort(b) for b in batches]  # h5py needs increasing indices
            results = {
                "in_memory": _time(lambda idx: in_memory[idx], batches, args.repeats),
                "memmap": _time(lambda idx: memmap[idx], batches, args.repeats),
                "h5py": _time(lambda idx: dset[idx], sorted_batches, args.repeats),
            }
        file_bytes = store.path.stat().st_size
        store.close()

    base = results["in_memory"]["patches_per_s"]
    for entry in results.values():
        entry["ratio_to_in_memory"] = entry["patches_per_s"] / base
    record = {
        "benchmark": "PatchStore random batch reads (warm page cache)",
        "command": " ".join(["python", "benchmarks/bench_store.py", *(argv or sys.argv[1:])]),
        "source": source,
        "n_patches": n,
        "patch_shape": patch_shape,
        "file_bytes": file_bytes,
        "build_s": build_s,
        "batch_size": args.batch_size,
        "batches_per_pass": args.batches,
        "repeats": args.repeats,
        "results": results,
        "goal": "memmap >= 0.6x in-memory",
        "goal_met": results["memmap"]["ratio_to_in_memory"] >= 0.6,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version,
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(f"{source}: {n} patches {record['patch_shape']}, file {file_bytes / 2**20:.0f} MiB, "
          f"built in {build_s:.1f} s")
    print(f"random batches of {args.batch_size}, {args.batches} batches x {args.repeats} passes, warm cache")
    for name, entry in results.items():
        print(f"  {name:10s} {entry['patches_per_s']:>10,.0f} patches/s  "
              f"({entry['ratio_to_in_memory']:.2f}x in-memory)")
    print(f"goal memmap >= 0.6x in-memory: {'met' if record['goal_met'] else 'NOT met'}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
