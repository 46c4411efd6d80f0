"""Benchmark of one FocAnnot query (Algorithm 1) and of the instance-diversity core against POT.

Part 1: a full ``focannot`` query on synthetic pools of N = 1e3 .. 1e6 patches (d = 512 float32
descriptors in three blobs, random per-patch entropies), T = 2.5 % N, Q = 5 % N, k = 3, timed per
stage (clustering, cluster importance, IU ranking, ID reweighting) with an instrumented run that
uses the same library functions, then end to end through the registered strategy (the total).

Part 2: ID at Q = 2000, d = 512: our closed form (and the rooted GEMM variant) against a POT loop
over pairs. The POT loop over all Q(Q-1)/2 = 2M pairs takes minutes, so a random sample of pairs is
timed and the per-pair time extrapolated (stated in the output). The accuracy check is exact: for
a sample of rows, the mean over all other Q-1 rows is recomputed with POT, in float64.

Part 3: the streaming query (:func:`focal_al.streaming.streaming_focannot`) over a scores file on
disk at N = 1e6 and 1e7 (d = 512 float32: 20 GB of descriptors at 1e7, more than fits beside
anything else in 24 GB), and the in-memory ``focannot`` strategy on the same 1e6 file. Each query
runs in a fresh child process (imports done before the clock starts), which reports its wall time,
its peak private memory (``RssAnon`` of ``/proc/self/status`` sampled every 10 ms: the memory that
must fit) and its peak resident set (``resource.getrusage``; it also counts clean pages of the
memory-mapped scores file, which the kernel reclaims under pressure). tracemalloc is not used:
tracing every allocation made the query 2-3x slower. The synthetic file is written to ``--tmp-dir``
(about 22 GB free needed) and removed afterwards.

Part 4 (``--literature``, run on its own): the strategies from the literature at N = 1e4 and 1e5
patches with d = 128 synthetic descriptors (the same three blobs) and T = 2.5 % N: ``coreset``
(greedy k-center, O(T N d)), ``typiclust`` (k-means into min(T, 500) clusters, then typicality by
nearest neighbours), ``stochastic`` (power sampling of IU), ``random-foreground`` and ``badge``
(k-means++ seeding on 32-d synthetic gradient embeddings), each end to
end through the registered strategy, with k-means and the typicality of TypiClust timed apart.

Usage::

    python3 benchmarks/bench_query.py            # N up to 1e6 (about 2 GB of descriptors)
    python3 benchmarks/bench_query.py --quick    # N up to 1e4, fewer POT pairs
    python3 benchmarks/bench_query.py --streaming-only --stream-sizes 1000000,10000000
    python3 benchmarks/bench_query.py --literature  # part 4 only

Writes ``benchmarks/results/query.json`` (``--out`` to change; ``--streaming-only`` updates only
its ``streaming`` entry); part 4 writes ``benchmarks/results/query_literature.json`` (``--literature-out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from focal_al.registry import get_criterion, get_strategy
from focal_al.scores import PoolScores
from focal_al.selection import cluster_importance, double_ranking, kmeans, mean_sorted_distance, mean_sq_sorted_distance

D = 512


def synthetic_scores(n: int, seed: int = 0, d: int = D, extras: dict | None = None) -> PoolScores:
    """Three blobs of float32 descriptors (generated in chunks, no float64 copy) and random entropies."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (3, d)).astype(np.float32)
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 1 << 16):
        stop = min(n, start + (1 << 16))
        rng.random((stop - start, d), dtype=np.float32, out=x[start:stop])
        x[start:stop] += centres[rng.integers(0, 3, stop - start)]
    entropy = rng.random(n) * np.log(2)
    return PoolScores(entropy=entropy, margin=1 - entropy, least_confidence=entropy / 2, descriptors=x,
                      extras=extras or {})


def timed_query(scores: PoolScores, t: int, q: int, seed: int) -> tuple[dict, np.ndarray]:
    """Algorithm 1 with each stage timed; the same calls as the registered 'focannot' strategy."""
    rng = np.random.default_rng(seed)
    candidates = np.arange(len(scores))
    clock = {"iu_ranking": 0.0, "id": 0.0}
    iu, id_ = get_criterion("iu"), get_criterion("id")

    def timed(criterion, key):
        def run(s, c, r):
            start = time.perf_counter()
            out = criterion(s, c, r)
            clock[key] += time.perf_counter() - start
            return out

        run.__name__ = key
        return run

    t0 = time.perf_counter()
    labels, centroids = kmeans(scores.descriptors, 3, rng=rng)
    t1 = time.perf_counter()
    importance = cluster_importance(scores.descriptors, labels, centroids, lam=0.5)
    t2 = time.perf_counter()
    picked = double_ranking(scores, candidates, t, n_candidates=q, cluster_labels=labels, importance=importance,
                            rank_criterion=timed(iu, "iu_ranking"), diversity_criterion=timed(id_, "id"), rng=rng)
    t3 = time.perf_counter()
    stages = {"clustering": t1 - t0, "importance": t2 - t1, **clock, "ranking_other": (t3 - t2) - sum(clock.values()),
              "instrumented_total": t3 - t0}
    return stages, picked


def bench_query(sizes, seed=0) -> list[dict]:
    rows = []
    focannot = get_strategy("focannot")
    # Warm-up: the first call pays for imports (scikit-learn) and thread-pool start-up.
    timed_query(synthetic_scores(500, seed), 10, 20, seed)
    for n in sizes:
        t_gen = time.perf_counter()
        scores = synthetic_scores(n, seed)
        t_gen = time.perf_counter() - t_gen
        t, q = max(1, round(0.025 * n)), max(1, round(0.05 * n))
        stages, picked_instrumented = timed_query(scores, t, q, seed)
        start = time.perf_counter()
        picked = focannot(scores, t, np.arange(n), np.random.default_rng(seed), k=3, lam=0.5, candidate_ratio=q / t)
        total = time.perf_counter() - start
        row = {"N": n, "T": t, "Q": q, "d": D, "generate_s": round(t_gen, 3),
               **{f"{k}_s": round(v, 4) for k, v in stages.items()}, "total_s": round(total, 4),
               "same_selection_as_strategy": bool(np.array_equal(np.sort(picked), np.sort(picked_instrumented)))}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del scores
    return rows


def bench_id_vs_pot(q: int, n_pairs: int, n_rows: int, seed: int = 0) -> dict:
    import ot

    rng = np.random.default_rng(seed)
    z = rng.random((q, D)).astype(np.float32) + rng.normal(0, 1, (q, 1)).astype(np.float32)
    z64 = z.astype(np.float64)

    reps = 5
    start = time.perf_counter()
    for _ in range(reps):
        ours = mean_sq_sorted_distance(z)
    t_ours = (time.perf_counter() - start) / reps
    start = time.perf_counter()
    rooted = mean_sorted_distance(z, p=2, root=True)
    t_rooted = time.perf_counter() - start

    i = rng.integers(0, q, n_pairs)
    j = (i + rng.integers(1, q, n_pairs)) % q
    start = time.perf_counter()
    for a, b in zip(i, j):
        ot.wasserstein_1d(z64[a], z64[b], p=2)
    per_pair_1d = (time.perf_counter() - start) / n_pairs
    w = np.full(D, 1.0 / D)
    # emd2 builds a d x d cost matrix per pair (tens of ms): a small sample is enough to time it.
    n_emd = min(100, n_pairs)
    start = time.perf_counter()
    for a, b in zip(i[:n_emd], j[:n_emd]):
        ot.emd2(w, w, ot.dist(z64[a][:, None], z64[b][:, None]))
    per_pair_emd = (time.perf_counter() - start) / n_emd
    all_pairs = q * (q - 1) // 2

    # Exact reference for a sample of rows: POT over all the other q - 1 rows, times d (Eq. 4 sums).
    rows = rng.choice(q, n_rows, replace=False)
    reference = np.array([
        sum(D * ot.wasserstein_1d(z64[r], z64[o], p=2) for o in range(q) if o != r) / (q - 1) for r in rows
    ])
    reference_rooted = np.array([
        sum(np.sqrt(D * ot.wasserstein_1d(z64[r], z64[o], p=2)) for o in range(q) if o != r) / (q - 1) for r in rows
    ])
    rel = np.max(np.abs(ours[rows] - reference) / np.abs(reference))
    rel_rooted = np.max(np.abs(rooted[rows] - reference_rooted) / np.abs(reference_rooted))
    pot_1d_total = per_pair_1d * all_pairs
    result = {
        "Q": q, "d": D, "pairs": all_pairs,
        "ours_closed_form_s": round(t_ours, 5),
        "ours_rooted_gemm_s": round(t_rooted, 4),
        "pot_wasserstein_1d_per_pair_us": round(per_pair_1d * 1e6, 2),
        "pot_emd2_per_pair_us": round(per_pair_emd * 1e6, 2),
        "pot_wasserstein_1d_all_pairs_s_extrapolated": round(pot_1d_total, 1),
        "pot_emd2_all_pairs_s_extrapolated": round(per_pair_emd * all_pairs, 1),
        "timed_pairs": {"wasserstein_1d": int(n_pairs), "emd2": int(n_emd)},
        "speedup_closed_form_vs_pot_1d": round(pot_1d_total / t_ours),
        "speedup_rooted_gemm_vs_pot_1d": round(pot_1d_total / t_rooted),
        "rows_checked_exactly": int(n_rows),
        "max_rel_err_closed_form": float(rel),
        "max_rel_err_rooted": float(rel_rooted),
        "note": "POT all-pairs times are extrapolated from the timed random sample of pairs; "
                "errors are exact over all q-1 partners of the checked rows (float64).",
    }
    print(json.dumps(result), flush=True)
    return result


def write_synthetic_scores_file(path, n: int, d: int = D, seed: int = 0):
    """The blobs of :func:`synthetic_scores`, written block by block into a scores file (never whole)."""
    from focal_al.scores_file import _allocate, _fsync, _write_rows

    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (3, d)).astype(np.float32)
    offsets = _allocate(path, n, d, {"note": "synthetic: three blobs, random entropies"})
    block = 1 << 16
    for start in range(0, n, block):
        m = min(block, n - start)
        x = rng.random((m, d), dtype=np.float32)
        x += centres[rng.integers(0, 3, m)]
        entropy = (rng.random(m) * np.log(2)).astype(np.float32)
        _write_rows(path, offsets, start, PoolScores(entropy=entropy, margin=1 - entropy,
                                                     least_confidence=entropy / 2, descriptors=x))
    _fsync(path)


def _child_query(path: str, mode: str, t: int, q: int, seed: int) -> None:
    """Run one query in this (fresh) process and print its time and peak memory as JSON."""
    from sklearn.cluster import MiniBatchKMeans  # noqa: F401  (import time is not query time)

    from focal_al.registry import get_criterion
    from focal_al.scores_file import ScoresFile
    from focal_al.streaming import streaming_focannot

    get_criterion("iu")  # loads the plugins
    scores_file = ScoresFile(path)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_anon = [0]
    done = threading.Event()

    def sample():
        while not done.wait(0.01):
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    peak_anon[0] = max(peak_anon[0], int(line.split()[1]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    if mode == "streaming":
        picked = streaming_focannot(scores_file, t, k=3, lam=0.5, candidate_ratio=q / t, random_state=seed)
    else:
        scores = PoolScores(entropy=np.array(scores_file.entropy), margin=np.array(scores_file.margin),
                            least_confidence=np.array(scores_file.least_confidence),
                            descriptors=np.array(scores_file.descriptors))
        picked = get_strategy("focannot")(scores, t, np.arange(len(scores)), np.random.default_rng(seed),
                                          k=3, lam=0.5, candidate_ratio=q / t)
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    print(json.dumps({"time_s": round(elapsed, 2), "peak_private_gib": round(peak_anon[0] / 2**20, 3),
                      "max_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
                      "rss_after_imports_gib": round(rss_before / 2**20, 3),
                      "n_selected": int(len(np.unique(picked)))}))


def bench_streaming(sizes, d: int, tmp_dir, in_memory_up_to: int, seed: int = 0) -> list[dict]:
    rows = []
    for n in sizes:
        t, q = max(1, round(0.025 * n)), max(1, round(0.05 * n))
        fd, path = tempfile.mkstemp(prefix="bench-scores-", suffix=".h5", dir=tmp_dir)
        os.close(fd)
        try:
            start = time.perf_counter()
            write_synthetic_scores_file(path, n, d, seed)
            t_write = time.perf_counter() - start
            modes = ["streaming"] + (["in_memory"] if n <= in_memory_up_to else [])
            for mode in modes:
                result = subprocess.run(
                    [sys.executable, __file__, "--_child", path, mode, str(t), str(q), str(seed)],
                    check=True, capture_output=True, text=True,
                )
                row = {"N": n, "d": d, "T": t, "Q": q, "k": 3, "mode": mode, "write_file_s": round(t_write, 1),
                       "file_gib": round(os.path.getsize(path) / 2**30, 2), **json.loads(result.stdout.splitlines()[-1])}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            os.unlink(path)
def bench_literature(sizes, d: int = 128, seed: int = 0) -> list[dict]:
    """End-to-end time of each literature strategy, one query of T = 2.5 % N, plus TypiClust's stages."""
    from focal_al.selection import kmeans as cluster

    strategies = {
        "coreset": {}, "typiclust": {}, "stochastic": {"uncertainty": "iu", "mode": "power"},
        "random-foreground": {"foreground_share": 0.5}, "badge": {},
    }

    def extras(n, fraction):
        # BADGE's embeddings: C x F = 2 x 16 (ED-ConvNet at w = 16), synthetic.
        return {"foreground_fraction": fraction,
                "gradient_embedding": np.random.default_rng(seed).normal(size=(n, 32)).astype(np.float32)}

    # Warm-up: imports (scikit-learn) and first-call costs.
    small = synthetic_scores(500, seed, d, extras=extras(500, np.random.default_rng(seed).random(500)))
    for name, params in strategies.items():
        get_strategy(name)(small, 10, np.arange(500), np.random.default_rng(seed), **params)
    rows = []
    for n in sizes:
        fraction = np.where(np.random.default_rng(seed).random(n) < 0.3, 0.0, 0.5)
        scores = synthetic_scores(n, seed, d, extras=extras(n, fraction))
        t = max(1, round(0.025 * n))
        row = {"N": n, "d": d, "T": t}
        for name, params in strategies.items():
            start = time.perf_counter()
            picked = get_strategy(name)(scores, t, np.arange(n), np.random.default_rng(seed), **params)
            row[f"{name}_s"] = round(time.perf_counter() - start, 3)
            if len(np.unique(picked)) != t:
                raise RuntimeError(f"{name} returned {len(np.unique(picked))} unique patches; expected {t}.")
        k = min(t, 500)
        start = time.perf_counter()
        cluster(scores.descriptors, k, rng=np.random.default_rng(seed), n_init=1)
        row["typiclust_kmeans_s"] = round(time.perf_counter() - start, 3)
        row["typiclust_clusters"] = k
        row["typiclust_typicality_and_rest_s"] = round(row["typiclust_s"] - row["typiclust_kmeans_s"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        path, mode, t, q, seed = sys.argv[2:7]
        _child_query(path, mode, int(t), int(q), int(seed))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N up to 1e4 and fewer POT pairs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "query.json"))
    parser.add_argument("--streaming-only", action="store_true",
                        help="run only Part 3 and update the 'streaming' entry of --out")
    parser.add_argument("--stream-sizes", default="1000000,10000000",
                        help="comma-separated N of the streaming query (Part 3)")
    parser.add_argument("--stream-d", type=int, default=D, help="descriptor dimension of Part 3")
    parser.add_argument("--in-memory-up-to", type=int, default=1_000_000,
                        help="also run the in-memory strategy on Part 3 files up to this N")
    parser.add_argument("--tmp-dir", default=None, help="where Part 3 writes its scores file (default: the system's)")
    parser.add_argument("--literature", action="store_true",
                        help="only part 4: coreset, typiclust, stochastic, random-foreground at N = 1e4, 1e5 (d = 128)")
    parser.add_argument("--literature-out", default=str(Path(__file__).parent / "results" / "query_literature.json"))
    args = parser.parse_args()
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
               "platform": platform.platform()}
    if args.literature:
        out = {"machine": machine, "command": "python3 benchmarks/bench_query.py --literature",
               "note": "one query of T = 2.5 % N from N synthetic patches, end to end through the registered "
                       "strategy; typiclust_kmeans_s is a separate run of its k-means (same seed), so "
                       "typiclust_typicality_and_rest_s is an estimate.",
               "literature": bench_literature([10_000, 100_000])}
        Path(args.literature_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.literature_out).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.literature_out}")
        return
    stream_sizes = [int(float(v)) for v in args.stream_sizes.split(",") if v.strip()]
    if args.streaming_only:
        out_path = Path(args.out)
        out = json.loads(out_path.read_text()) if out_path.is_file() else {}
        out["streaming"] = bench_streaming(stream_sizes, args.stream_d, args.tmp_dir, args.in_memory_up_to)
        out["streaming_command"] = "python3 benchmarks/bench_query.py " + " ".join(sys.argv[1:])
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {out_path}")
        return
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    query = bench_query(sizes)
    id_vs_pot = bench_id_vs_pot(2000, n_pairs=2000 if args.quick else 20000, n_rows=2 if args.quick else 5)
    n = [r["N"] for r in query]
    tot = [r["total_s"] for r in query]
    slope = float(np.polyfit(np.log10(n[1:]), np.log10(tot[1:]), 1)[0]) if len(n) > 2 else None
    out = {
        "machine": machine,
        "command": "python3 benchmarks/bench_query.py" + (" --quick" if args.quick else ""),
        "query": query,
        "loglog_slope_total_vs_N_from_1e4": None if slope is None else round(slope, 3),
        "id_vs_pot": id_vs_pot,
        "streaming": bench_streaming(stream_sizes, args.stream_d, args.tmp_dir, args.in_memory_up_to),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
