"""Scoring each pixel once (whole-image maps, ``--scoring images``) against patch-by-patch scoring.

At rho = 0.5 each pixel of the pool lies in about four patches, so ``score_pool`` computes it about
four times; ``score_pool_from_images`` runs each training image once and sums each patch's window
of the pixel maps with summed-area tables (descriptors from the bottleneck map). It is not exact:
a patch's pixels see context beyond the patch. This measures, on the glas-cpu pool of GlaS (12,237
patches of 64 px at half resolution) and a network trained with the glas-cpu recipe on a seeded
random tenth of the patches (500 steps):

- the time of both passes (same run, interleaved, the best of ``--repeats``);
- Spearman rank correlation of the patch entropies (IU) and margins between the two;
- the overlap of the selected sets: IU's top T (one round's query at the 2.5 % pixel step) and
  FocAnnot's T (same seed), as |A & B| / T.

    python benchmarks/bench_image_scoring.py --threads 1     # about 4 minutes on a free core

Writes ``benchmarks/results/image_scoring.json``. The short GlaS pilot of the two modes is a bench
run: ``focal-al bench --preset glas-cpu --strategies 4 --seeds 0 --budget 0.15 --scoring images``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from focal_al.bench.config import preset_config
from focal_al.bench.runner import make_net, prepare_data, queries_per_round
from focal_al.registry import get_strategy

RESULTS = Path(__file__).parent / "results" / "image_scoring.json"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="GlaS release folder (default: the bench's)")
    parser.add_argument("--cache", type=Path, default=Path("bench-out/image-scoring"),
                        help="folder for the patch store")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = preset_config("glas-cpu", threads=args.threads, data_dir=args.data_dir, out_dir=str(args.cache))
    data = prepare_data(config, args.cache)
    store, train = data.store, data.train
    rng = np.random.default_rng(0)
    labelled = np.sort(rng.choice(len(store), len(store) // 10, replace=False))
    net = make_net(config, "ed-convnet", 0).set_params(steps_per_epoch=args.steps, passes_per_epoch=None)
    net.fit(store.patches[labelled], store.labels[labelled])

    modes = {
        "patches": lambda: net.score_pool(store.patches),
        "images": lambda: net.score_pool_from_images(train.images, store.image_index, store.coords, store.patch_size),
    }
    seconds = {k: [] for k in modes}
    scores = {}
    for _ in range(args.repeats):
        for name, fn in modes.items():
            start = time.perf_counter()
            scores[name] = fn()
            seconds[name].append(time.perf_counter() - start)
    a, b = scores["patches"], scores["images"]
    n_pixels = int(sum(np.prod(shape) for shape in store.image_shapes))
    t = queries_per_round(config, "patch", len(store), store.n_images, n_pixels)
    candidates = np.arange(len(store))
    overlap = {}
    for name, params in (("iu", {}), ("focannot", {"k": config.clusters, "lam": config.lam})):
        picked = [set(np.asarray(get_strategy(name)(s, t, candidates, np.random.default_rng(1), **params)).tolist())
                  for s in (a, b)]
        overlap[name] = round(len(picked[0] & picked[1]) / t, 3)
    result = {
        "settings": {"threads": args.threads, "repeats": args.repeats, "steps": args.steps, "patches": len(store),
                     "labelled": len(labelled), "queried_per_round": t, "fast_path": net.fast_path},
        "seconds": {k: round(min(v), 2) for k, v in seconds.items()},
        "images_over_patches_time": round(min(seconds["images"]) / min(seconds["patches"]), 3),
        "spearman_entropy": round(float(spearmanr(a.entropy, b.entropy)[0]), 4),
        "spearman_margin": round(float(spearmanr(a.margin, b.margin)[0]), 4),
        "selected_overlap": overlap,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
