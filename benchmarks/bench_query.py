"""Benchmark of one FocAnnot query (Algorithm 1) and of the instance-diversity core against POT.

Part 1: a full ``focannot`` query on synthetic pools of N = 1e3 .. 1e6 patches (d = 512 float32
descriptors in three blobs, random per-patch entropies), T = 2.5 % N, Q = 5 % N, k = 3, timed per
stage (clustering, cluster importance, IU ranking, ID reweighting) with an instrumented run that
uses the same library functions, then end to end through the registered strategy (the total).

Part 2: ID at Q = 2000, d = 512: our closed form (and the rooted GEMM variant) against a POT loop
over pairs. The POT loop over all Q(Q-1)/2 = 2M pairs takes minutes, so a random sample of pairs is
timed and the per-pair time extrapolated (stated in the output). The accuracy check is exact: for
a sample of rows, the mean over all other Q-1 rows is recomputed with POT, in float64.

Part 3 (``--literature``, run on its own): the strategies from the literature at N = 1e4 and 1e5
patches with d = 128 synthetic descriptors (the same three blobs) and T = 2.5 % N: ``coreset``
(greedy k-center, O(T N d)), ``typiclust`` (k-means into min(T, 500) clusters, then typicality by
nearest neighbours), ``stochastic`` (power sampling of IU) and ``random-foreground``, each end to
end through the registered strategy, with k-means and the typicality of TypiClust timed apart.

Usage::

    python3 benchmarks/bench_query.py               # parts 1 and 2, N up to 1e6 (about 2 GB of descriptors)
    python3 benchmarks/bench_query.py --quick       # N up to 1e4, fewer POT pairs
    python3 benchmarks/bench_query.py --literature  # part 3 only

Writes ``benchmarks/results/query.json`` (``--out`` to change); part 3 writes
``benchmarks/results/query_literature.json`` (``--literature-out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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


def bench_literature(sizes, d: int = 128, seed: int = 0) -> list[dict]:
    """End-to-end time of each literature strategy, one query of T = 2.5 % N, plus TypiClust's stages."""
    from focal_al.selection import kmeans as cluster

    strategies = {
        "coreset": {}, "typiclust": {}, "stochastic": {"uncertainty": "iu", "mode": "power"},
        "random-foreground": {"foreground_share": 0.5},
    }
    # Warm-up: imports (scikit-learn) and first-call costs.
    small = synthetic_scores(500, seed, d, extras={"foreground_fraction": np.random.default_rng(seed).random(500)})
    for name, params in strategies.items():
        get_strategy(name)(small, 10, np.arange(500), np.random.default_rng(seed), **params)
    rows = []
    for n in sizes:
        fraction = np.where(np.random.default_rng(seed).random(n) < 0.3, 0.0, 0.5)
        scores = synthetic_scores(n, seed, d, extras={"foreground_fraction": fraction})
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N up to 1e4 and fewer POT pairs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "query.json"))
    parser.add_argument("--literature", action="store_true",
                        help="only part 3: coreset, typiclust, stochastic, random-foreground at N = 1e4, 1e5 (d = 128)")
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
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
