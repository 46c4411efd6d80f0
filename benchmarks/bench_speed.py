"""Scoring and training speed of the shipped path against the plain eager loop, and the GEMM peak.

Everything is measured in one run, on one thread by default, the variants interleaved and repeated
(the median of each is kept), so the ratios hold on a shared, noisy machine:

- ``gemm_peak_gflops``: float32 matrix products (1024 and 2048 squares), the best of both: what one
  thread's cores can do;
- scoring, patches/s: the plain eager loop (NCHW module, ``inference_mode``, softmax and entropy
  per batch) against ``SegmentationNet.score_pool`` as shipped (``fast_path=True``: channels_last,
  BatchNorm folded) and with ``fast_path=False``; the fraction of the GEMM peak from the network's
  FLOPs (``torch.utils.flop_counter``);
- training, steps/s (batch 16, Adam, forward + backward + step): a plain eager loop against
  ``SegmentationNet.partial_fit`` as shipped and with ``fast_path=False``;
- ``--compile``: ``torch.compile`` of the module for scoring too (its compile time apart);
- ``--busy``: scoring beside a busy process (one thread of matrix products in another process)
  with the default thread rule (``focal_al.threads.default_threads``), with 1 thread and with every core.

The settings are the glas-cpu preset's network (w = 16, depth 4, 64 px patches). Results go to
``benchmarks/results/speed.json``.

    python benchmarks/bench_speed.py                      # about 4 minutes on a free core
    python benchmarks/bench_speed.py --compile --busy     # adds torch.compile and the thread rule
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from focal_al.estimator import SegmentationNet
from focal_al.threads import default_threads

RESULTS = Path(__file__).parent / "results" / "speed.json"


def gemm_peak(repeats: int) -> float:
    """Best float32 GEMM throughput of this process's threads, GFLOP/s."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        k = max(1, int(2e10 / (2 * n**3)))
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(k):
                a @ b
            best = max(best, k * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def flops_per_patch(module: torch.nn.Module, side: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module.eval()(torch.rand(2, 3, side, side))
    return counter.get_total_flops() / 2


def plain_scoring(module: torch.nn.Module, X: np.ndarray, batch: int) -> None:
    """The plain eager loop: what scoring did before the fast path (entropy and descriptors per batch)."""
    module.eval()
    with torch.inference_mode():
        for start in range(0, len(X), batch):
            x = torch.from_numpy(X[start:start + batch]).float().div_(255.0)
            logits, desc = module(x)
            torch.special.entr(torch.softmax(logits, dim=1)).sum(dim=1).mean(dim=(1, 2))


def plain_training(module: torch.nn.Module, optimizer, X: torch.Tensor, y: torch.Tensor, steps: int, batch: int) -> None:
    module.train()
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    for step in range(steps):
        i = (step * batch) % (len(X) - batch + 1)
        logits, _ = module(X[i:i + batch])
        loss = loss_fn(logits, y[i:i + batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _busy(stop):
    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a @ a


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--patches", type=int, default=512, help="pool size scored per repeat")
    parser.add_argument("--steps", type=int, default=20, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--score-batch", type=int, default=64)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile for scoring")
    parser.add_argument("--busy", action="store_true", help="also measure the thread rule beside a busy process")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # what the nets' threads="auto" follows here
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (args.patches, 3, args.side, args.side), dtype=np.uint8)
    y = (X[:, 0] > 127).astype(np.uint8)
    common = dict(module__width=args.width, module__depth=args.depth, batch_size=args.train_batch, max_epochs=1,
                  steps_per_epoch=args.steps, random_state=0, threads=args.threads)
    fast = SegmentationNet(**common).fit(X[:64], y[:64])
    eager = SegmentationNet(fast_path=False, **common).fit(X[:64], y[:64])
    plain_module = copy.deepcopy(eager.module_)
    plain_optimizer = torch.optim.Adam(plain_module.parameters(), lr=1e-3)
    Xt = torch.from_numpy(X[:256]).float().div_(255.0)
    yt = torch.from_numpy(y[:256]).long()
    flops = flops_per_patch(copy.deepcopy(eager.module_), args.side)

    scoring = {
        "plain_eager_loop": lambda: plain_scoring(plain_module, X, args.score_batch),
        "score_pool_fast_path": lambda: fast.score_pool(X, batch_size=args.score_batch),
        "score_pool_eager_path": lambda: eager.score_pool(X, batch_size=args.score_batch),
    }
    compile_seconds = None
    if args.compile:
        compiled = torch.compile(copy.deepcopy(plain_module).eval())
        compile_seconds = timed(lambda: plain_scoring(compiled, X[:args.score_batch], args.score_batch))
        scoring["torch_compile_loop"] = lambda: plain_scoring(compiled, X, args.score_batch)
    training = {
        "plain_eager_loop": lambda: plain_training(plain_module, plain_optimizer, Xt, yt, args.steps, args.train_batch),
        "partial_fit_fast_path": lambda: fast.partial_fit(X[:256], y[:256]),
        "partial_fit_eager_path": lambda: eager.partial_fit(X[:256], y[:256]),
    }
    for fn in [*scoring.values(), *training.values()]:
        fn()  # warm-up
    score_times = {k: [] for k in scoring}
    train_times = {k: [] for k in training}
    peaks = []
    for _ in range(args.repeats):
        peaks.append(gemm_peak(1))
        for name, fn in scoring.items():
            score_times[name].append(timed(fn))
        for name, fn in training.items():
            train_times[name].append(timed(fn))
    peak = float(np.median(peaks))
    score_rate = {k: args.patches / float(np.median(v)) for k, v in score_times.items()}
    train_rate = {k: args.steps / float(np.median(v)) for k, v in train_times.items()}

    # Scores of both paths on the same weights: equal to float32 rounding.
    eager_on_fast = SegmentationNet(fast_path=False, **common).initialize()
    eager_on_fast.module_.load_state_dict(fast.module_.state_dict())
    a, b = fast.score_pool(X), eager_on_fast.score_pool(X)
    agreement = {"entropy_max_abs_diff": float(np.abs(a.entropy - b.entropy).max()),
                 "descriptor_max_abs_diff": float(np.abs(a.descriptors - b.descriptors).max()),
                 "top_5pct_entropy_same": bool(set(np.argsort(-a.entropy)[:len(X) // 20])
                                               == set(np.argsort(-b.entropy)[:len(X) // 20]))}

    busy = None
    if args.busy:
        cores = os.cpu_count() or 1
        counts = {"default_rule": default_threads_for_busy(), "one": 1, "all_cores": cores}
        stop = multiprocessing.Event()
        neighbour = multiprocessing.Process(target=_busy, args=(stop,), daemon=True)
        neighbour.start()
        time.sleep(1.0)
        try:
            seconds = {k: [] for k in counts}
            for _ in range(max(2, args.repeats // 2)):
                for name, n in counts.items():
                    torch.set_num_threads(n)
                    fast.set_params(threads=n)
                    seconds[name].append(timed(lambda: fast.score_pool(X[:256], batch_size=args.score_batch)))
        finally:
            stop.set()
            neighbour.join()
            torch.set_num_threads(args.threads)
        busy = {"threads": counts, "patches_per_s": {k: round(256 / float(np.median(v)), 1) for k, v in seconds.items()},
                "ratio_to_one_thread": {k: round(float(np.median(seconds["one"])) / float(np.median(v)), 2)
                                        for k, v in seconds.items()}}

    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                    "torch_threads": args.threads, "cpu_count": os.cpu_count()},
        "settings": {k: getattr(args, k) for k in ("patches", "steps", "repeats", "side", "width", "depth",
                                                    "score_batch", "train_batch")},
        "gemm_peak_gflops": round(peak, 1),
        "network_mflop_per_patch": round(flops / 1e6, 1),
        "scoring_patches_per_s": {k: round(v, 1) for k, v in score_rate.items()},
        "scoring_fraction_of_gemm_peak": {k: round(v * flops / 1e9 / peak, 3) for k, v in score_rate.items()},
        "scoring_ratio_to_plain": {k: round(v / score_rate["plain_eager_loop"], 2) for k, v in score_rate.items()},
        "training_steps_per_s": {k: round(v, 2) for k, v in train_rate.items()},
        "training_ratio_to_plain": {k: round(v / train_rate["plain_eager_loop"], 2) for k, v in train_rate.items()},
        "torch_compile_seconds": None if compile_seconds is None else round(compile_seconds, 1),
        "fast_vs_eager_scores": agreement,
        "beside_a_busy_process": busy,
        "times_s": {"scoring": {k: [round(t, 3) for t in v] for k, v in score_times.items()},
                    "training": {k: [round(t, 3) for t in v] for k, v in train_times.items()},
                    "gemm_peak_gflops": [round(p, 1) for p in peaks]},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"GEMM peak {peak:.1f} GFLOP/s on {args.threads} thread(s); network {flops / 1e6:.1f} MFLOP per patch")
    for name, rate in score_rate.items():
        print(f"scoring  {name:<24} {rate:7.1f} patches/s  {result['scoring_ratio_to_plain'][name]:5.2f}x plain  "
              f"{100 * result['scoring_fraction_of_gemm_peak'][name]:5.1f} % of GEMM peak")
    for name, rate in train_rate.items():
        print(f"training {name:<24} {rate:7.2f} steps/s    {result['training_ratio_to_plain'][name]:5.2f}x plain")
    if compile_seconds is not None:
        print(f"torch.compile: {compile_seconds:.1f} s to compile (per input shape)")
    print(f"fast vs eager scores: {agreement}")
    if busy:
        print(f"beside a busy process: {busy}")
    print(f"written to {args.output}")


def default_threads_for_busy() -> int:
    """The rule as a command here applies it (``OMP_NUM_THREADS`` unset, as in a plain shell)."""
    saved = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        return default_threads()
    finally:
        if saved is not None:
            os.environ["OMP_NUM_THREADS"] = saved


if __name__ == "__main__":
    main()
