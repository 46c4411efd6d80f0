"""Full supervision on GlaS: the ceiling every active-learning curve is compared with.

Trains SegmentationNet on every training pixel and evaluates on whole test images (pixel Dice,
VOE, GlaS object F1 and object Dice). Configurations (``--splits``):

* ``official``: train once on ``train`` (85 images), evaluate on ``testA`` (60) and ``testB`` (20);
* ``mixed``: train on ``mixed-train`` (132), evaluate on ``mixed-test`` (33).

CPU preset (the defaults): half resolution (``SegmentationDataset.rescale(0.5)``), ED-ConvNet
width 16, depth 4, patches l = 64 with overlap 0.5 (stride 32) in a PatchStore, random flips and
90-degree rotations, Adam lr 1e-3, batch 16. Training is time-limited: ``--minutes`` is split
equally across the configurations; the net trains in chunks of ``--chunk-steps`` batches (drawn
with replacement) until its share is spent. Evaluation is at the training resolution: test
images and instance masks are rescaled by the same factor, predicted whole (mirror-padded to a
multiple of 16, cropped back).

After training, unless ``--no-agreement``, the training pool is scored both patch by patch
(``score_pool``, the default) and from whole-image maps (``score_pool_from_images``): times,
overlap of the top-entropy selections, rank correlation and descriptor similarity are recorded.

Writes ``benchmarks/results/full_supervision.json`` (or ``--output``).

    python benchmarks/bench_full_supervision.py                   # 16 minutes of training
    python benchmarks/bench_full_supervision.py --minutes 1 --output benchmarks/results/full_supervision_smoke.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from focal_al.datasets import load_glas
from focal_al.estimator import SegmentationNet
from focal_al.metrics import evaluate_segmentation
from focal_al.store import PatchStore

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {
    "official": ("train", ["testA", "testB"]),
    "mixed": ("mixed-train", ["mixed-test"]),
}


def evaluate(net, dataset, batch_size):
    start = time.perf_counter()
    probas = net.predict_images(dataset.images, batch_size=batch_size)
    preds = [p.argmax(axis=0).astype(np.uint8) for p in probas]
    metrics = evaluate_segmentation(preds, dataset.masks)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}


def scoring_agreement(net, train, store, batch_size):
    """Per-patch ``score_pool`` against ``score_pool_from_images`` on the training pool.

    Times both and measures how far the whole-image approximation changes what a query would
    select: overlap of the top 2.5 % (T) and top 5 % (Q) patches by entropy, Spearman correlation
    of the entropies, mean cosine similarity of the descriptors.
    """
    from scipy.stats import spearmanr

    start = time.perf_counter()
    exact = net.score_pool(store.patches, batch_size=batch_size)
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    approx = net.score_pool_from_images(train.images, store.image_index, store.coords, store.patch_size)
    approx_s = time.perf_counter() - start
    out = {"n_patches": len(exact), "per_patch_seconds": round(exact_s, 1), "whole_image_seconds": round(approx_s, 1)}
    for name, fraction in (("top_2.5%_overlap", 0.025), ("top_5%_overlap", 0.05)):
        k = max(1, int(round(fraction * len(exact))))
        a = set(np.argsort(-exact.entropy, kind="stable")[:k].tolist())
        b = set(np.argsort(-approx.entropy, kind="stable")[:k].tolist())
        out[name] = round(len(a & b) / k, 4)
    out["entropy_spearman"] = round(float(spearmanr(exact.entropy, approx.entropy).statistic), 4)
    d1, d2 = exact.descriptors.astype(np.float64), approx.descriptors.astype(np.float64)
    cos = (d1 * d2).sum(1) / np.maximum(np.linalg.norm(d1, axis=1) * np.linalg.norm(d2, axis=1), 1e-12)
    out["descriptor_cosine_mean"] = round(float(cos.mean()), 4)
    return out


def run_config(name, args, seconds, workdir):
    train_split, test_splits = CONFIGS[name]
    train = load_glas(args.data_dir, train_split, seed=args.seed)
    if args.scale != 1:
        train = train.rescale(args.scale)
    store = PatchStore.from_dataset(
        Path(workdir) / f"{name}.h5", train, patch_size=args.patch_size, overlap=args.overlap, allow_padding=True
    )
    print(f"[{name}] {len(train)} training images -> {len(store)} patches of {args.patch_size}px")
    net = SegmentationNet(
        module__width=args.width,
        module__depth=args.depth,
        lr=args.lr,
        batch_size=args.batch_size,
        max_epochs=1,
        steps_per_epoch=args.chunk_steps,
        augment=True,
        random_state=args.seed,
        warm_start=True,
    )
    net.initialize()
    steps, losses = 0, []
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        # Shorten the last chunk to the steps the remaining time allows at the rate seen so far.
        chunk = args.chunk_steps
        if steps:
            chunk = int(min(chunk, max(1, (seconds - elapsed) * steps / elapsed)))
        net.set_params(steps_per_epoch=chunk)
        net.partial_fit(store.patches, store.labels)
        steps += chunk
        losses.append(float(net.history[-1, "train_loss"]))
        print(f"[{name}] {steps:6d} steps, {time.perf_counter() - start:7.1f} s, loss {losses[-1]:.4f}")
    train_seconds = time.perf_counter() - start
    record = {
        "train_split": train_split,
        "n_train_images": len(train),
        "n_train_patches": len(store),
        "minutes": round(train_seconds / 60, 2),
        "steps": steps,
        "patches_seen": steps * args.batch_size,
        "train_patches_per_s": round(steps * args.batch_size / train_seconds, 1),
        "loss_first_chunk": round(losses[0], 4),
        "loss_last_chunk": round(losses[-1], 4),
        "test": {},
    }
    if args.agreement:
        record["whole_image_scoring"] = scoring_agreement(net, train, store, args.eval_batch_size * 16)
        print(f"[{name}] whole-image vs per-patch scoring: {record['whole_image_scoring']}")
    store.close()
    for split in test_splits:
        test = load_glas(args.data_dir, split, seed=args.seed)
        if args.scale != 1:
            test = test.rescale(args.scale)
        record["test"][split] = evaluate(net, test, args.eval_batch_size)
        print(f"[{name}] {split}: {record['test'][split]}")
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "glas")
    parser.add_argument("--minutes", type=float, default=16.0, help="training minutes, split across configurations")
    parser.add_argument("--splits", nargs="+", choices=sorted(CONFIGS), default=["official", "mixed"])
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--chunk-steps", type=int, default=25, help="batches between time checks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-agreement", dest="agreement", action="store_false",
        help="skip comparing per-patch scoring with scoring from whole-image maps on the training pool",
    )
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads (default: torch's choice); on a CPU shared with other jobs, 1 can be "
        "several times faster than 2",
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "full_supervision.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} does not exist (the GlaS release, e.g. ../shared/data/glas).")

    seconds = args.minutes * 60 / len(args.splits)
    result = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "output"},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "configs": {},
    }
    with tempfile.TemporaryDirectory(prefix="focal-al-fullsup-") as workdir:
        for name in args.splits:
            result["configs"][name] = run_config(name, args, seconds, workdir)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
