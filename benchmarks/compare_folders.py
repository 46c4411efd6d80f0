"""Bench folders that differ in how they train, compared paired by seed.

The report of one folder pairs its strategies with its random patches. Training choices (FixMatch
or supervised, warm start or retraining) live in folders of their own, because each is part of the
protocol; their seeds still share one initial labelled set, so runs of the same strategy and seed
pair across folders. For the folders given (the first is the reference) this prints and writes:

- per folder and strategy: Dice at each budget (mean and sample sd over seeds), the seeds, the
  largest fall of Dice between consecutive rounds of any seed, and the curves' mean fall;
- per strategy found in the reference and another folder: that folder minus the reference, paired
  by seed (Dice at each budget and AUBC, mean with a 95 % t-interval over seeds);
- per folder: each strategy minus the folder's own random patches, paired by seed.

Only runs that reached the largest budget asked for count (runs in progress are named and left
out; ``--partial`` counts them up to where they are), and curves are never extrapolated.

    python benchmarks/compare_folders.py supervised=benchmarks/results/glas-cpu-fast \\
        fixmatch=benchmarks/results/glas-cpu-fast-fixmatch --budgets 0.05,0.1,0.2,0.3 \\
        --out benchmarks/results/glas-cpu-fast-fixmatch/semi_supervised
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from focal_al.bench.report import _interp, _runs, _series
from focal_al.bench.stats import BASELINE, aubc_contrast, curve_noise, mean_interval


def read_runs(folder: Path, *, reach: float | None) -> tuple[dict, list, list]:
    """The folder's runs from its committed ``runs/*/rounds.json``: those whose cost reached ``reach``
    (all of them when None), their records, and the names of the runs left out."""
    records, left_out = [], []
    for path in sorted(folder.glob("runs/*/rounds.json")):
        run = json.loads(path.read_text())
        if reach is not None and (not run or run[-1]["cost"] < reach - 1e-9):
            left_out.append(f"{path.parent.name} (to {100 * run[-1]['cost']:.1f} %)" if run else path.parent.name)
            continue
        records += run
    if not records:
        raise SystemExit(f"No complete runs in {folder} (runs/<strategy>-seed<seed>/rounds.json reaching "
                         f"{reach}); --partial counts runs in progress.")
    return _runs(records), records, left_out


def dice_at(run, budgets) -> np.ndarray:
    return _interp(np.asarray(budgets, dtype=float), *_series(run, "dice"))


def paired(by_seed_a: dict, by_seed_b: dict, budgets) -> dict:
    """``b - a`` paired by seed: Dice at each budget and AUBC over the range both cover."""
    seeds = sorted(set(by_seed_a) & set(by_seed_b))
    diffs = np.array([dice_at(by_seed_b[s], budgets) - dice_at(by_seed_a[s], budgets) for s in seeds])
    contrast = aubc_contrast({"b": {s: by_seed_b[s] for s in seeds}, "a": {s: by_seed_a[s] for s in seeds}},
                             {"b": 1, "a": -1})
    return {"seeds": seeds, "dice_at": {str(b): mean_interval(diffs[:, j]) for j, b in enumerate(budgets)},
            "aubc": contrast["interval"], "aubc_range": contrast["aubc_range"]}


def describe(by_seed: dict, budgets) -> dict:
    values = np.array([dice_at(run, budgets) for run in by_seed.values()])
    out = {}
    for j, b in enumerate(budgets):
        col = values[:, j][np.isfinite(values[:, j])]
        out[str(b)] = {"mean": float(col.mean()) if len(col) else math.nan,
                       "sd": float(col.std(ddof=1)) if len(col) >= 2 else math.nan, "n": int(len(col))}
    return out


def _interval(iv: dict) -> str:
    if iv["n"] == 0:
        return "–"
    if not np.isfinite(iv["low"]):
        return f"{iv['mean']:+.3f} (1 seed)"
    return f"{iv['mean']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]"


def compare(folders: dict, budgets, *, partial: bool = False) -> tuple[dict, list[str]]:
    names = list(folders)
    runs = {name: read_runs(path, reach=None if partial else max(budgets)) for name, path in folders.items()}
    result = {"budgets": budgets, "folders": {k: str(v) for k, v in folders.items()}, "curves": {}, "against_reference": {},
              "against_random": {}}
    heads = " | ".join(f"Dice @ {100 * b:g} %" for b in budgets)
    lines = ["Folders: " + ", ".join(f"`{k}` = {v}" for k, v in folders.items()) + f" (reference: `{names[0]}`).", "",
             "## Curves", "", f"| folder | strategy | seeds | {heads} | largest fall | mean fall |",
             "|---|---|---|" + "---|" * len(budgets) + "---|---|"]
    left_out = [f"{name}/{run}" for name in names for run in runs[name][2]]
    result["left_out"] = left_out
    if left_out:
        lines[1:1] = ["", f"Runs short of {100 * max(budgets):g} %, left out: {', '.join(left_out)}."]
    for name in names:
        by_strategy, records, _ = runs[name]
        noise = curve_noise(records, budgets=budgets)
        for strategy, by_seed in sorted(by_strategy.items()):
            desc = describe(by_seed, budgets)
            own = noise["per_strategy"][strategy]
            result["curves"][f"{name}/{strategy}"] = {"seeds": sorted(by_seed), "dice_at": desc, **own}
            cells = " | ".join(
                "–" if d["n"] == 0 else f"{d['mean']:.3f}" + (f" ± {d['sd']:.3f}" if d["n"] >= 2 else "") +
                (f" (n={d['n']})" if d["n"] != len(by_seed) else "") for d in desc.values())
            lines.append(f"| {name} | {strategy} | {','.join(map(str, sorted(by_seed)))} | {cells} | "
                         f"{own['largest_fall']:.3f} ({own['largest_fall_at']}) | {own['mean_fall']:.4f} |")
    lines += ["", "± is the sample sd over seeds; a fall is a drop of Dice from one round to the next.", "",
              f"## Against `{names[0]}`, paired by seed", "",
              "| folder | strategy | seeds | Δ AUBC [95 % CI] | " + " | ".join(f"Δ Dice @ {100 * b:g} %" for b in budgets) + " |",
              "|---|---|---|---|" + "---|" * len(budgets)]
    reference = runs[names[0]][0]
    for name in names[1:]:
        for strategy, by_seed in sorted(runs[name][0].items()):
            if strategy not in reference or not set(by_seed) & set(reference[strategy]):
                continue
            p = paired(reference[strategy], by_seed, budgets)
            result["against_reference"][f"{name}/{strategy}"] = p
            lines.append(f"| {name} | {strategy} | {','.join(map(str, p['seeds']))} | {_interval(p['aubc'])} | "
                         + " | ".join(_interval(iv) for iv in p["dice_at"].values()) + " |")
    lines += ["", f"## Against the folder's own {BASELINE}, paired by seed", "",
              "| folder | strategy | seeds | Δ AUBC [95 % CI] | " + " | ".join(f"Δ Dice @ {100 * b:g} %" for b in budgets) + " |",
              "|---|---|---|---|" + "---|" * len(budgets)]
    for name in names:
        by_strategy = runs[name][0]
        if BASELINE not in by_strategy:
            continue
        for strategy, by_seed in sorted(by_strategy.items()):
            if strategy == BASELINE or not set(by_seed) & set(by_strategy[BASELINE]):
                continue
            p = paired(by_strategy[BASELINE], by_seed, budgets)
            result["against_random"][f"{name}/{strategy}"] = p
            lines.append(f"| {name} | {strategy} | {','.join(map(str, p['seeds']))} | {_interval(p['aubc'])} | "
                         + " | ".join(_interval(iv) for iv in p["dice_at"].values()) + " |")
    if not result["against_random"]:
        lines[-2:] = ["(no strategy beside random patches in these folders)"]
    lines += ["", "Δ is the second minus the first, averaged over the paired seeds, with a two-sided 95 % "
              "t-interval over the seeds' differences (1 seed: no interval). AUBC is over the cost range "
              "both runs of every pair cover."]
    return result, lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", metavar="NAME=FOLDER", help="bench folders; the first is the reference")
    parser.add_argument("--budgets", default="0.05,0.1,0.2,0.3", help="costs at which Dice is read")
    parser.add_argument("--partial", action="store_true", help="count runs short of the largest budget too")
    parser.add_argument("--out", type=Path, help="write OUT.md and OUT.json")
    args = parser.parse_args(argv)
    folders = {}
    for item in args.folders:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            parser.error(f"expected NAME=FOLDER, got {item!r}")
        folders[name] = Path(folder)
    budgets = [float(b) for b in args.budgets.split(",")]
    result, lines = compare(folders, budgets, partial=args.partial)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text("# Paired comparison of bench folders\n\n" + text)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
