"""What the scoring pass's optional extras cost, as multiples of the plain pass.

One round's network pass over the pool (``SegmentationNet.score_pool``) gives entropy, margin,
least confidence and descriptors; ``score_tta`` adds 7 more dihedral views, ``mc_samples=T`` adds T
MC-dropout passes (BALD). Every dropout layer of ED-ConvNet sits on the bottleneck, so the T passes
reuse the plain pass's encoder output and run only the decoder T times; the baselines here are the
same BALD with T whole passes (the module hidden behind a wrapper without ``encode``/``decode``) and
with an encoder pass of its own (as the scoring did before it reused the plain pass's), which give the
same numbers (checked below, and in ``tests/test_estimator.py``).

Settings are the GlaS CPU preset's network (w=16, depth 4, 64 px patches, batch 16). Variants run
interleaved, ``--repeats`` times, and the best time of each is kept; figures are ratios to the plain
pass measured in the same run. Writes ``benchmarks/results/scoring.json``.

    python benchmarks/bench_scoring.py --threads 1            # about 2 minutes on a free core
    python benchmarks/bench_scoring.py --threads 1 --quick    # under a minute
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

RESULTS = Path(__file__).parent / "results" / "scoring.json"


class WholePasses(torch.nn.Module):
    """The module without ``encode``/``decode``: every MC-dropout pass runs the whole network."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


class OwnEncoderPass(SegmentationNet):
    """BALD that runs the encoder once more for its MC-dropout passes instead of reusing the plain pass's."""

    def _bald(self, module, xb, dropouts, encoded=None):
        with self._autocast():
            encoded = module.encode(xb)
        return super()._bald(module, xb, dropouts, encoded)


def make_net(args, net_class=SegmentationNet, **scoring):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (args.batch_size, 3, args.side, args.side), dtype=np.uint8)
    y = (X[:, 0] > 127).astype(np.uint8)
    net = net_class(module__width=args.width, module__depth=args.depth, module__dropout=args.dropout,
                          batch_size=args.batch_size, max_epochs=1, steps_per_epoch=1, random_state=0, **scoring)
    return net.fit(X, y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer patches and repeats")
    parser.add_argument("--patches", type=int, default=None, help="pool size (default 192, --quick 64)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5, --quick 2)")
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--mc-samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.patches or (64 if args.quick else 192)
    repeats = args.repeats or (2 if args.quick else 5)
    X = np.random.default_rng(1).integers(0, 256, (n, 3, args.side, args.side), dtype=np.uint8)

    plain = make_net(args)
    tta = make_net(args, score_tta=True)
    shared = make_net(args, mc_samples=args.mc_samples)
    own = make_net(args, OwnEncoderPass, mc_samples=args.mc_samples)
    whole = make_net(args, mc_samples=args.mc_samples)
    whole.module_ = WholePasses(whole.module_)
    variants = {"plain": plain, "tta": tta, "bald_shared_encoder": shared, "bald_own_encoder_pass": own,
                "bald_whole_passes": whole}
    bald = {name: variants[name].score_pool(X[:args.batch_size]).extras["bald"]
            for name in ("bald_shared_encoder", "bald_own_encoder_pass", "bald_whole_passes")}  # also the warm-up
    plain.score_pool(X[:args.batch_size]), tta.score_pool(X[:args.batch_size])
    same = all(np.array_equal(bald["bald_shared_encoder"], b) for b in bald.values())

    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, net in variants.items():
            start = time.perf_counter()
            net.score_pool(X)
            times[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in times.items()}
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads()},
        "settings": {"patches": n, "repeats": repeats, "side": args.side, "width": args.width, "depth": args.depth,
                     "batch_size": args.batch_size, "mc_samples": args.mc_samples, "quick": args.quick},
        "plain_patches_per_s": round(n / best["plain"], 1),
        "times_s": {name: [round(t, 3) for t in ts] for name, ts in times.items()},
        "ratio_to_plain": {name: round(best[name] / best["plain"], 2) for name in variants},
        "bald_shared_over_whole": round(best["bald_shared_encoder"] / best["bald_whole_passes"], 3),
        "bald_shared_over_own_encoder_pass": round(best["bald_shared_encoder"] / best["bald_own_encoder_pass"], 3),
        "bald_shared_equals_whole": same,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"plain pass: {result['plain_patches_per_s']} patches/s ({n} patches of {args.side} px, w={args.width})")
    for name in variants:
        print(f"  {name:<22} {result['ratio_to_plain'][name]:5.2f} x the plain pass")
    print(f"BALD, shared encoder / whole passes: {result['bald_shared_over_whole']:.3f}, / its own encoder pass: "
          f"{result['bald_shared_over_own_encoder_pass']:.3f} (same numbers: {same}); written to {args.output}")


if __name__ == "__main__":
    main()
