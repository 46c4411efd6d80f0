"""Training and inference speed of SegmentationNet.

1. Overhead of the skorch estimator: ``SegmentationNet.fit`` against a plain torch training loop
   on the same network, the same batches (the same uint8 patches, converted the same way) and the
   same optimizer; runs are interleaved and the best of ``--repeats`` kept for each.
   Augmentation is off in both, so that only the framework differs. The framework's cost per
   batch is also measured on a tiny net (w=2, 32x32), where compute does not hide it.
2. Train (augmentation on, as in the experiments) and inference (``score_pool``: probabilities,
   entropy/margin/least confidence and descriptors) patches/s of ED-ConvNet for widths 8, 16, 32, 64.

Writes ``benchmarks/results/train.json``.

    python benchmarks/bench_train.py            # a few minutes on 2 CPU cores
    python benchmarks/bench_train.py --quick    # under a minute
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from focal_al.estimator import SegmentationNet
from focal_al.nets import EDConvNet

RESULTS = Path(__file__).parent / "results" / "train.json"


def make_batches(n_batches, batch_size, side, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n_batches * batch_size, 3, side, side), dtype=np.uint8)
    # Blocky labels with some ignored pixels, like partially revealed patches.
    y = (X[:, 0] > 127).astype(np.uint8)
    y[:, : side // 8] = 255
    return X, y


def plain_loop(X, y, *, width, depth, batch_size, seed):
    """Plain torch: same network, Adam, loss and batch conversion as the estimator; seconds taken."""
    torch.manual_seed(seed)
    net = EDConvNet(width=width, depth=depth)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    order = np.random.default_rng(seed).permutation(len(X))
    net.train()
    start = time.perf_counter()
    for b in range(0, len(X), batch_size):
        idx = order[b:b + batch_size]
        xb = torch.from_numpy(X[idx]).float().div_(255.0)
        yb = torch.from_numpy(y[idx].astype(np.int64))
        optimizer.zero_grad()
        logits, _ = net(xb)
        loss = criterion(logits, yb)
        loss.backward()
        optimizer.step()
        loss.item()  # skorch records every batch loss, which synchronises; do the same
    return time.perf_counter() - start


def estimator_fit(X, y, *, width, depth, batch_size, seed, augment):
    net = SegmentationNet(
        module__width=width,
        module__depth=depth,
        batch_size=batch_size,
        max_epochs=1,
        augment=augment,
        random_state=seed,
        device="cpu",
    )
    net.initialize()
    start = time.perf_counter()
    net.partial_fit(X, y)
    return time.perf_counter() - start, net


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer batches and repeats")
    parser.add_argument("--side", type=int, default=128, help="patch side (default 128)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--overhead-width", type=int, default=16, help="width for the skorch-vs-plain comparison")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats of the comparison")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads (default: torch's choice); on a CPU shared with other jobs, 1 can be "
        "several times faster than 2",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    bs, side, depth = args.batch_size, args.side, args.depth
    # Many short interleaved runs: on a shared machine, bursts of load from other processes hit
    # single runs, and the best run of each is the closest to the unloaded speed.
    repeats = args.repeats or (3 if args.quick else 8)
    n_cmp = 3
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": __import__("os").cpu_count(),
        },
        "settings": {"side": side, "batch_size": bs, "depth": depth, "quick": args.quick},
    }

    # --- 1. estimator vs plain loop --------------------------------------------------------
    X, y = make_batches(n_cmp, bs, side)
    w = args.overhead_width
    plain_loop(X[:bs], y[:bs], width=w, depth=depth, batch_size=bs, seed=0)  # warm-up
    estimator_fit(X[:bs], y[:bs], width=w, depth=depth, batch_size=bs, seed=0, augment=False)
    plain_times, skorch_times = [], []
    for r in range(repeats):
        plain_times.append(plain_loop(X, y, width=w, depth=depth, batch_size=bs, seed=r))
        skorch_times.append(estimator_fit(X, y, width=w, depth=depth, batch_size=bs, seed=r, augment=False)[0])
    plain_rate = len(X) / min(plain_times)
    skorch_rate = len(X) / min(skorch_times)
    result["skorch_vs_plain"] = {
        "width": w,
        "patches_per_run": len(X),
        "plain_patches_per_s": round(plain_rate, 2),
        "skorch_patches_per_s": round(skorch_rate, 2),
        "ratio": round(skorch_rate / plain_rate, 3),
        "median_paired_ratio": round(float(np.median(np.array(plain_times) / np.array(skorch_times))), 3),
        "plain_times_s": [round(t, 3) for t in plain_times],
        "skorch_times_s": [round(t, 3) for t in skorch_times],
    }
    # The framework's own cost per batch, measured where compute is negligible (w=2, 32x32).
    Xt, yt = make_batches(5, bs, 32)
    estimator_fit(Xt, yt, width=2, depth=2, batch_size=bs, seed=0, augment=False)
    tiny_plain, tiny_skorch = [], []
    for r in range(5):
        tiny_plain.append(plain_loop(Xt, yt, width=2, depth=2, batch_size=bs, seed=r))
        tiny_skorch.append(estimator_fit(Xt, yt, width=2, depth=2, batch_size=bs, seed=r, augment=False)[0])
    overhead_ms = (min(tiny_skorch) - min(tiny_plain)) / 5 * 1000
    result["skorch_vs_plain"]["overhead_ms_per_batch"] = round(overhead_ms, 2)
    print(
        f"skorch vs plain loop (w={w}, {side}x{side}, batch {bs}): "
        f"{skorch_rate:.1f} vs {plain_rate:.1f} patches/s, ratio {skorch_rate / plain_rate:.3f}; "
        f"framework overhead {overhead_ms:.2f} ms per batch (w=2, 32x32)"
    )

    # --- 2. widths --------------------------------------------------------------------------
    result["widths"] = {}
    for w in args.widths:
        # Fewer batches for wide nets: w=64 takes ~10 s per batch of 16 on 2 CPU cores.
        n_train = max(1, (2 if args.quick else 4) * 16 // max(w, 16)) + 1
        X, y = make_batches(n_train, bs, side, seed=w)
        estimator_fit(X[:bs], y[:bs], width=w, depth=depth, batch_size=bs, seed=0, augment=True)
        seconds, net = estimator_fit(X, y, width=w, depth=depth, batch_size=bs, seed=0, augment=True)
        train_rate = len(X) / seconds
        n_infer = len(X) * 2
        Xi, _ = make_batches(n_infer // bs, bs, side, seed=w + 1)
        net.score_pool(Xi[:bs])
        start = time.perf_counter()
        net.score_pool(Xi)
        infer_rate = len(Xi) / (time.perf_counter() - start)
        result["widths"][str(w)] = {
            "train_patches_per_s": round(train_rate, 2),
            "inference_patches_per_s": round(infer_rate, 2),
            "train_patches": len(X),
            "inference_patches": len(Xi),
            "descriptor_dim": net.module_.descriptor_dim,
        }
        print(f"w={w:3d}: train {train_rate:7.1f} patches/s, inference (score_pool) {infer_rate:7.1f} patches/s")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
