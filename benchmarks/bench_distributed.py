"""Scoring on Dask workers against single-process scoring, and one round of a 1e6-patch pool.

Part 1, throughput: the same store scored by ``SegmentationNet.score_pool`` in this process (one
torch thread, then torch's default) and by :func:`focal_al.distributed.score_pool_distributed` on a
``LocalCluster`` of 1 and 2 single-threaded worker processes (started and warmed up before the
clock: the first task of a worker pays for importing torch). Ratios are against the single-process,
one-thread run of the same invocation.

Part 2, one round at N = 1e6 patches: scoring with the 2 workers, then the streaming query over the
scores file (:mod:`focal_al.streaming`), timed per stage: clustering (MiniBatchKMeans
``partial_fit``), labels and cluster importance (CU, CD), Algorithm 1 (IU top-Q per cluster, then
ID on the Q candidates). T = 2.5 % and Q = 5 % of N, k = 3.

On a small CPU machine this uses a tiny net and tiny patches (ED-ConvNet width 4, depth 2, 16x16
patches, d = 16) and a store of synthetic patches (noise plus a bright disc, built chunk by chunk):
the figures measure the plumbing (store reads, scheduling, the scores file, the query) rather than
the network. With CUDA the network runs on the GPU and patches/s per GPU are printed.

Usage::

    python3 benchmarks/bench_distributed.py                      # a few minutes on 2 CPU cores
    python3 benchmarks/bench_distributed.py --pool 100000 --throughput-pool 20000   # quicker

Writes ``benchmarks/results/distributed.json`` (``--out`` to change).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from focal_al.distributed import connect, score_pool_distributed
from focal_al.estimator import SegmentationNet
from focal_al.registry import get_criterion
from focal_al.selection import cluster_importance, double_ranking, nearest_centroid
from focal_al.store import ImagePatches, PatchStore
from focal_al.streaming import CandidateRows, stream_kmeans

SIDE = 16
NET = dict(module__width=4, module__depth=2, batch_size=512, random_state=0)


def synthetic_store(path, n, seed=0, per_image=100_000, chunk=20_000):
    """``n`` patches of noise plus a bright disc of random size and place, ``per_image`` per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]

    def chunks(m):
        for start in range(0, m, chunk):
            k = min(chunk, m - start)
            patches = rng.integers(0, 120, (k, 3, SIDE, SIDE), dtype=np.uint8)
            cy, cx, r = rng.uniform(0, SIDE, k), rng.uniform(0, SIDE, k), rng.uniform(1, SIDE / 2, k)
            disc = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2 < r[:, None, None] ** 2
            patches[:, 0][disc] = 230
            coords = np.stack(np.divmod(np.arange(start, start + k), 1000), axis=1) * SIDE
            yield coords, patches, np.full((k, SIDE, SIDE), 255, np.uint8)

    images = (ImagePatches(f"synthetic-{i}", (1000 * SIDE, 1000 * SIDE), chunks(min(per_image, n - s)))
              for i, s in enumerate(range(0, n, per_image)))
    return PatchStore.build_from_patches(path, images, patch_size=SIDE, overlap=0.0)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def throughput(net, store, workdir, worker_counts):
    rows = {}
    n = len(store)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    net.score_pool(store.patches[:1024])
    _, t1 = timed(lambda: net.score_pool(store.patches))
    torch.set_num_threads(threads)
    _, tt = timed(lambda: net.score_pool(store.patches))
    rows["single_process_1_thread"] = {"patches_per_s": round(n / t1), "ratio": 1.0}
    rows[f"single_process_{threads}_threads"] = {"patches_per_s": round(n / tt), "ratio": round(t1 / tt, 2)}
    for workers in worker_counts:
        with connect(None, n_workers=workers, threads_per_worker=1) as client:
            warm = workdir / f"warm-{workers}.h5"
            score_pool_distributed(net, store, warm, client=client, chunk_size=512, overwrite=True)
            path = workdir / f"scores-{workers}.h5"
            _, tw = timed(lambda: score_pool_distributed(net, store, path, client=client, chunk_size=8192,
                                                         overwrite=True))
        rows[f"dask_{workers}_workers"] = {"patches_per_s": round(n / tw), "ratio": round(t1 / tw, 2)}
        print(json.dumps({"workers": workers, **rows[f"dask_{workers}_workers"]}), flush=True)
    print(json.dumps(rows), flush=True)
    return rows


def one_round(net, store, workdir, workers, seed=0):
    n = len(store)
    t, q = round(0.025 * n), round(0.05 * n)
    path = workdir / "round.h5"
    with connect(None, n_workers=workers, threads_per_worker=1) as client:
        score_pool_distributed(net, store, workdir / "warm.h5", client=client, chunk_size=512, overwrite=True)
        scores, t_score = timed(lambda: score_pool_distributed(net, store, path, client=client, chunk_size=16384,
                                                               overwrite=True))
    # The stages of focal_al.streaming.streaming_focannot, timed one by one.
    rng = np.random.default_rng(seed)
    candidates = np.arange(n)
    rows = CandidateRows(scores, candidates)
    centroids, t_kmeans = timed(lambda: stream_kmeans(rows, 3, rng=rng))
    labels, t_labels = timed(lambda: nearest_centroid(rows, centroids, chunk=65536))
    importance, t_importance = timed(lambda: cluster_importance(rows, labels, centroids, lam=0.5))
    pool, t_load = timed(scores.pool_scores)
    picked, t_alg1 = timed(lambda: double_ranking(
        pool, candidates, t, n_candidates=q, cluster_labels=labels, importance=importance,
        rank_criterion=get_criterion("iu"), diversity_criterion=get_criterion("id"), rng=rng))
    assert len(np.unique(picked)) == t
    result = {
        "N": n, "T": t, "Q": q, "k": 3, "d": scores.d, "workers": workers,
        "scoring_s": round(t_score, 1), "scoring_patches_per_s": round(n / t_score),
        "clustering_s": round(t_kmeans, 2), "labels_s": round(t_labels, 2),
        "cluster_importance_s": round(t_importance, 2), "load_uncertainty_s": round(t_load, 2),
        "algorithm1_s": round(t_alg1, 2),
        "total_s": round(t_score + t_kmeans + t_labels + t_importance + t_load + t_alg1, 1),
    }
    print(json.dumps(result), flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=1_000_000, help="patches of the one-round pool (Part 2)")
    parser.add_argument("--throughput-pool", type=int, default=100_000, help="patches scored in Part 1")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts of Part 1")
    parser.add_argument("--tmp-dir", default=None, help="where the stores and scores files go (removed after)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "distributed.json"))
    args = parser.parse_args()
    worker_counts = [int(v) for v in args.workers.split(",") if v.strip()]
    net = SegmentationNet(**NET).initialize()
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
        workdir = Path(tmp)
        store_path = workdir / "pool.h5"
        store, t_build = timed(lambda: synthetic_store(store_path, args.pool))
        print(json.dumps({"store_patches": len(store), "build_s": round(t_build, 1)}), flush=True)
        small = synthetic_store(workdir / "small.h5", args.throughput_pool, seed=1)
        part1 = throughput(net, small, workdir, worker_counts)
        part2 = one_round(net, store, workdir, max(worker_counts))
    if cuda:
        for key, row in part1.items():
            print(f"{key}: {row['patches_per_s']} patches/s per GPU ({torch.cuda.get_device_name()})")
    out = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name() if cuda else None, "platform": platform.platform()},
        "command": " ".join(["python3 benchmarks/bench_distributed.py", *sys.argv[1:]]),
        "setup": {"net": {k: v for k, v in NET.items()}, "patch_side": SIDE, "patches": "synthetic (noise + disc)",
                  "worker_threads": 1, "baseline": "score_pool in one process, one torch thread"},
        "store_build_s": round(t_build, 1),
        "throughput": {"N": args.throughput_pool, **part1},
        "round": part2,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
