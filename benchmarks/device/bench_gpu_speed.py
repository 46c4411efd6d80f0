"""The GPU path in one short run: scoring patches/s and training steps/s on CUDA.

Variants, interleaved and repeated in the same run (the median of each kept), each a
``SegmentationNet`` of the glas-cpu network (w = 16, depth 4, 64 px patches):

- ``fp32_nchw``: ``fast_path=False, mixed_precision=False``, scoring in batches of ``batch_size``
  (what the GPU path was before);
- ``shipped``: the defaults: bfloat16 autocast, ``channels_last``, BatchNorm folded for inference,
  pinned-memory batches, inference batches that fill the card (``inference_batch_size=None``);
- ``shipped_batch64``: the same with scoring batches of 64, to separate the batch size's share.

Training: steps/s of ``partial_fit`` at batch 16 (the protocol's) for ``fp32_nchw`` and ``shipped``.
Also checks that the shipped scores agree with fp32 (rank correlation of the entropies).

    python benchmarks/device/bench_gpu_speed.py            # about a minute on an H100
    python benchmarks/device/bench_gpu_speed.py --out $OUT/gpu_speed.json

Writes ``benchmarks/results/gpu_speed.json`` (or ``--out``). Exits with a message where no GPU is.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from focal_al.estimator import SegmentationNet

RESULTS = Path(__file__).resolve().parents[1] / "results" / "gpu_speed.json"


def timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=12288, help="pool size scored per repeat (glas-cpu: 12,237)")
    parser.add_argument("--steps", type=int, default=100, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_gpu_speed: no CUDA device here; run it on the GPU machine.")
    torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (args.patches, 3, 64, 64), dtype=np.uint8)
    y = (X[:, 0] > 127).astype(np.uint8)
    common = dict(module__width=16, module__depth=4, batch_size=16, max_epochs=1, steps_per_epoch=args.steps,
                  random_state=0, device="cuda")
    nets = {
        "fp32_nchw": SegmentationNet(fast_path=False, mixed_precision=False, **common),
        "shipped": SegmentationNet(**common),
        "shipped_batch64": SegmentationNet(inference_batch_size=64, **common),
    }
    for net in nets.values():
        net.fit(X[:256], y[:256])  # also the warm-up of training
        net.score_pool(X[:1024])
    nets["shipped_batch64"].module_.load_state_dict(nets["shipped"].module_.state_dict())
    nets["fp32_nchw"].module_.load_state_dict(nets["shipped"].module_.state_dict())
    score_s = {k: [] for k in nets}
    train_s = {k: [] for k in ("fp32_nchw", "shipped")}
    for _ in range(args.repeats):
        for name, net in nets.items():
            score_s[name].append(timed(lambda: net.score_pool(X)))
        for name in train_s:
            train_s[name].append(timed(lambda: nets[name].partial_fit(X[:1024], y[:1024])))
    a, b = nets["shipped"].score_pool(X), nets["fp32_nchw"].score_pool(X)
    ranks = [np.argsort(np.argsort(v)) for v in (a.entropy, b.entropy)]
    result = {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "platform": platform.platform(),
        "settings": vars(args) | {"out": str(args.out)},
        "shipped_inference_batch": nets["shipped"]._inference_batch_size(None, X.shape),
        "scoring_patches_per_s": {k: round(args.patches / float(np.median(v)), 1) for k, v in score_s.items()},
        "scoring_ratio_to_fp32_nchw": {k: round(float(np.median(score_s["fp32_nchw"])) / float(np.median(v)), 2)
                                       for k, v in score_s.items()},
        "training_steps_per_s": {k: round(args.steps / float(np.median(v)), 1) for k, v in train_s.items()},
        "training_ratio_to_fp32_nchw": {k: round(float(np.median(train_s["fp32_nchw"])) / float(np.median(v)), 2)
                                        for k, v in train_s.items()},
        "entropy_rank_correlation_shipped_vs_fp32": round(float(np.corrcoef(*ranks)[0, 1]), 4),
        "times_s": {"scoring": score_s, "training": train_s},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "times_s"}, indent=2))


if __name__ == "__main__":
    main()
