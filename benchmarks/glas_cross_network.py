"""A strategy measured on another network against one of the main folder, paired by seed.

BALD needs dropout in ED-ConvNet, so it runs in a bench folder of its own
(``benchmarks/results/glas-cpu-dropout``) beside random patches trained with the same dropout;
FocAnnot runs in ``benchmarks/results/glas-cpu`` without dropout. Every seed's runs share one
initial set in both folders (the protocol draws it from the seed alone), so they still pair by
seed, but a direct difference also holds what dropout alone does to the curve. This prints, as
Δ AUBC with 95 % t-intervals over the seeds every term has (:func:`focal_al.bench.stats.aubc_contrast`):

- ``direct``: the strategy minus the reference, across networks;
- ``network``: random patches with dropout minus random patches without (the network's effect);
- ``net_of_network``: (strategy - its folder's random patches) - (reference - the main folder's
  random patches), the comparison with the network's effect cancelled.

It reads each folder's ``records.json`` (``focal-al report FOLDER --complete-only`` writes it from
the complete runs) and writes ``cross_network.json`` into the strategy's folder.

    python benchmarks/glas_cross_network.py     # BALD (dropout) against FocAnnot, the defaults
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from focal_al.bench.report import _runs
from focal_al.bench.stats import BASELINE, aubc_contrast

RESULTS = Path(__file__).parent / "results"


def load_runs(folder: Path) -> dict:
    path = folder / "records.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `focal-al report {folder} --complete-only` first.")
    return _runs(json.loads(path.read_text()))


def term(runs: dict, key: str, folder: Path) -> dict:
    if key not in runs:
        raise SystemExit(f"{folder}/records.json has no complete runs of {key!r}; it has {', '.join(sorted(runs))}.")
    return runs[key]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=RESULTS / "glas-cpu-dropout", help="the strategy's bench folder")
    parser.add_argument("--strategy", default="4-iu(uncertainty=bald)", help="its run key there")
    parser.add_argument("--main-folder", type=Path, default=RESULTS / "glas-cpu", help="the reference's bench folder")
    parser.add_argument("--reference", default="7-focannot", help="the reference's run key there")
    args = parser.parse_args(argv)

    own, main_runs = load_runs(args.folder), load_runs(args.main_folder)
    runs = {"strategy": term(own, args.strategy, args.folder), "own_random": term(own, BASELINE, args.folder),
            "reference": term(main_runs, args.reference, args.main_folder),
            "main_random": term(main_runs, BASELINE, args.main_folder)}
    contrasts = {
        "direct": {"strategy": 1, "reference": -1},
        "network": {"own_random": 1, "main_random": -1},
        "net_of_network": {"strategy": 1, "own_random": -1, "reference": -1, "main_random": 1},
    }
    out = {"folder": str(args.folder), "strategy": args.strategy, "main_folder": str(args.main_folder),
           "reference": args.reference, "contrasts": {}}
    for name, weights in contrasts.items():
        result = aubc_contrast(runs, weights)
        out["contrasts"][name] = {"weights": weights, **result}
        iv = result["interval"]
        print(f"{name:>15}: Δ AUBC {iv['mean']:+.4f} [{iv['low']:+.4f}, {iv['high']:+.4f}] over seeds "
              f"{result['seeds']}, cost {result['aubc_range'][0]:.3f}-{result['aubc_range'][1]:.3f}")
    path = args.folder / "cross_network.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
