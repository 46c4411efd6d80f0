"""Paired statistics of learning curves: each strategy against a baseline, seed by seed; curve noise.

Every strategy of a seed starts from the same initial labelled set, so the fair comparison with a
baseline (random patches) is *paired by seed*: the per-seed difference in AUBC and in Dice at each
budget, its mean, and a 95 % t-interval over seeds. With 3 seeds a method can look better or worse
than random depending on the seed; the interval says whether the difference is outside that noise.
Pure functions of round records (see :mod:`focal_al.bench.records`).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from focal_al.bench.config import TABLE1, parse_strategy_spec
from focal_al.bench.report import _interp, _runs, _series, aubc

#: The baseline every strategy is compared with.
BASELINE = "random-patch"

VERDICTS = ("better", "worse", "no detectable difference", "too few seeds")


def mean_interval(differences: Sequence[float], *, confidence: float = 0.95) -> dict:
    """Mean of paired differences and its two-sided t-interval over seeds.

    Parameters
    ----------
    differences : sequence of float
        One difference per seed (NaN entries are dropped).
    confidence : float

    Returns
    -------
    dict
        ``mean``, ``low``, ``high`` (NaN with fewer than two seeds) and ``n``.
    """
    from scipy import stats

    d = np.asarray([x for x in differences if x is not None and np.isfinite(x)], dtype=float)
    n = len(d)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": 1}
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def verdict(interval: dict) -> str:
    """``better`` / ``worse`` when the interval excludes 0, else ``no detectable difference``."""
    if interval["n"] < 2 or not np.isfinite(interval["low"]):
        return "too few seeds"
    if interval["low"] > 0:
        return "better"
    if interval["high"] < 0:
        return "worse"
    return "no detectable difference"


def paired_comparison(records: Sequence[dict], *, baseline: str = BASELINE,
                      budgets: Sequence[float] = (0.1, 0.2, 0.3)) -> list[dict]:
    """Every strategy against ``baseline``, paired by seed.

    Parameters
    ----------
    records : sequence of dict
        Round records of all runs.
    baseline : str
        The strategy key compared against (absent: an empty list).
    budgets : sequence of float
        Costs at which Dice differences are taken; a budget counts only where both runs of a
        seed reached it (curves are never extrapolated).

    Returns
    -------
    list of dict
        One per other strategy: ``strategy``, ``label``, ``seeds`` (the paired seeds), ``aubc``
        (interval of the AUBC differences over the cost range both runs of each seed cover, the
        same range for every seed: the largest first and the smallest last cost of all runs of
        both strategies), ``dice_at`` (list of ``{"budget", **interval}``) and ``verdict``
        (from the AUBC interval), ``round0_differs``: the seeds whose round 0 is not the
        baseline's although the protocol makes it so (see :func:`round0_difference`), and
        ``replay_drift``: where a run of the pairs (the strategy's or the baseline's) went on from
        weights replayed on a machine that computes otherwise (see :func:`replay_drifts`).
    """
    runs = _runs(records)
    if baseline not in runs:
        return []
    out = []
    for strategy, by_seed in sorted(runs.items()):
        if strategy == baseline:
            continue
        contrast = aubc_contrast({strategy: by_seed, baseline: runs[baseline]}, {strategy: 1, baseline: -1})
        seeds = contrast["seeds"]
        dice_diffs = {b: [] for b in budgets}
        grid = np.asarray(budgets, dtype=float)
        for run, base in ((by_seed[s], runs[baseline][s]) for s in seeds):
            (c1, v1), (c0, v0) = _series(run, "dice"), _series(base, "dice")
            diff = _interp(grid, c1, v1) - _interp(grid, c0, v0)
            for b, d in zip(budgets, diff):
                dice_diffs[b].append(float(d))
        aubc_interval = contrast["interval"]
        same_net = strategy_network(strategy) == strategy_network(baseline)
        round0 = [round0_difference(s, by_seed[s][0], runs[baseline][s][0], same_net) for s in seeds]
        drifts = [{"seed": s, "strategy": r[0]["strategy"], **d} for s in seeds
                  for r in (by_seed[s], runs[baseline][s]) for d in replay_drifts(r)]
        out.append({
            "strategy": strategy,
            "label": by_seed[min(by_seed)][0].get("label", strategy),
            "seeds": seeds,
            "aubc_range": contrast["aubc_range"],
            "aubc": aubc_interval,
            "dice_at": [{"budget": b, **mean_interval(dice_diffs[b])} for b in budgets],
            "verdict": verdict(aubc_interval),
            "round0_differs": [d for d in round0 if d is not None],
            "replay_drift": drifts,
        })
    return out


def aubc_contrast(runs: Mapping[str, Mapping[int, Sequence[dict]]], weights: Mapping[str, float]) -> dict:
    """A linear contrast of AUBCs, paired by seed: ``sum_k weights[k] * AUBC(runs[k][seed])``.

    For comparisons that one folder cannot pair, e.g. a strategy that needs another network (BALD
    needs dropout) against one measured without it: ``{"bald": 1, "random-dropout": -1,
    "focannot": -1, "random": 1}`` is the difference of each one's difference from the random
    patches trained on its own network, which cancels what the network change alone does to the
    curve. Every seed's runs share one initial set (the protocol draws it from the seed alone);
    all AUBCs are taken over the same cost range, the largest first and the smallest last cost of
    all runs used, so that the terms are comparable.

    Parameters
    ----------
    runs : mapping of str to mapping of int to sequence of dict
        Each term's runs by seed (round records, e.g. ``report._runs(records)[key]``).
    weights : mapping of str to float
        The contrast's weight of each term (keys of ``runs``); weights that sum to 0 cancel
        whatever all terms share.

    Returns
    -------
    dict
        ``seeds`` (those every term has), ``aubc_range`` ``[lo, hi]``, ``per_seed`` (the contrast
        of each seed) and ``interval`` (:func:`mean_interval` of those).
    """
    missing = sorted(set(weights) - set(runs))
    if missing:
        raise ValueError(f"aubc_contrast: no runs for the terms {missing}; runs has {sorted(runs)}.")
    seeds = sorted(set.intersection(*(set(runs[k]) for k in weights))) if weights else []
    chosen = [runs[k][s] for k in weights for s in seeds]
    lo = max((run[0]["cost"] for run in chosen), default=math.nan)
    hi = min((run[-1]["cost"] for run in chosen), default=math.nan)
    per_seed = []
    if lo <= hi:
        for s in seeds:
            per_seed.append(float(sum(
                w * aubc(*_series(runs[k][s], "dice"), min_cost=lo, max_cost=hi) for k, w in weights.items()
            )))
    return {"seeds": seeds, "aubc_range": [lo, hi], "per_seed": per_seed, "interval": mean_interval(per_seed)}


def strategy_network(key: str) -> str:
    """The network a strategy key trains (Table 1's; ED-ConvNet for any other strategy)."""
    base, _ = parse_strategy_spec(key)
    return TABLE1[base].network if base in TABLE1 else "ed-convnet"


def replay_drifts(run: Sequence[dict]) -> list[dict]:
    """Where a run went on from weights that a replay on another machine computed otherwise.

    ``focal-al bench --resume --accept-replay-drift`` retrains a run committed without its weights
    from its recorded queries; where the machine computes otherwise than the one that made it, the
    last replayed round's record keeps a ``replay_drift`` note (``round``, ``recorded_dice``,
    ``replayed_dice``, the CPUs): the rounds after it come from other weights than the recorded
    curve's, so the run's paired differences hold that numerical noise too.
    """
    return [r["replay_drift"] for r in run if isinstance(r.get("replay_drift"), dict)]


def round0_difference(seed: int, first: dict, base_first: dict, same_net: bool) -> dict | None:
    """How a pair's round 0 differs, or None when it is identical as the protocol makes it.

    Round 0 trains on the seed's initial set before any query, so its cost is the same for every
    strategy of a seed, and with the same network so is its Dice, to the last bit, when both runs
    were computed alike. A different Dice means another machine or library versions made one of the
    runs: their paired difference then holds that numerical noise beside the strategies' effect.
    """
    cost_differs = abs(first["cost"] - base_first["cost"]) > 1e-12
    dice_differs = same_net and abs(first["dice"] - base_first["dice"]) > 1e-9
    if not (cost_differs or dice_differs):
        return None
    return {"seed": seed, "cost": first["cost"], "baseline_cost": base_first["cost"],
            "dice": first["dice"], "baseline_dice": base_first["dice"], "initial_set_differs": cost_differs}


def curve_noise(records: Sequence[dict], *, budgets: Sequence[float] = (0.1, 0.2, 0.3)) -> dict:
    """How noisy the curves are: falls of Dice between consecutive rounds, spread over seeds.

    Returns
    -------
    dict
        ``mean_fall`` (mean over all consecutive-round pairs of all runs of ``max(0, Dice_r -
        Dice_{r+1})``), ``largest_fall`` (and where: ``largest_fall_at``), ``seed_std``: per
        strategy, the sample std over seeds of the Dice at each budget (NaN where fewer than two
        seeds reached it), and ``per_strategy``: per strategy, its ``label``, ``mean_fall``,
        ``largest_fall`` and ``largest_fall_at`` over its own runs.
    """
    def falls_of(by_seed):
        falls, worst, where = [], 0.0, None
        for seed, run in by_seed.items():
            dice = [r["dice"] for r in run]
            for r, (a, b) in enumerate(zip(dice, dice[1:])):
                falls.append(max(0.0, a - b))
                if a - b > worst:
                    worst, where = a - b, f"seed {seed}, round {r} -> {r + 1}"
        return falls, worst, where

    falls, worst, where = [], 0.0, None
    seed_std, per_strategy = {}, {}
    for strategy, by_seed in sorted(_runs(records).items()):
        own, own_worst, own_where = falls_of(by_seed)
        per_strategy[strategy] = {"label": next(iter(by_seed.values()))[0].get("label", strategy),
                                  "mean_fall": float(np.mean(own)) if own else math.nan,
                                  "largest_fall": float(own_worst), "largest_fall_at": own_where}
        falls += own
        if own_worst > worst:
            worst, where = own_worst, f"{strategy} {own_where}"
        grid = np.asarray(budgets, dtype=float)
        values = np.array([_interp(grid, *_series(run, "dice")) for run in by_seed.values()])
        stds = []
        for j in range(len(budgets)):
            col = values[:, j][np.isfinite(values[:, j])]
            stds.append(float(np.std(col, ddof=1)) if len(col) >= 2 else math.nan)
        seed_std[strategy] = dict(zip(budgets, stds))
    return {"mean_fall": float(np.mean(falls)) if falls else math.nan, "largest_fall": float(worst),
            "largest_fall_at": where, "seed_std": seed_std, "per_strategy": per_strategy}
