"""The bench report: learning curves over seeds, AUBC, cost to reach a Dice, and the Markdown report.

Everything here but :func:`write_report` is a pure function of round records (see
:mod:`focal_al.bench.records`). Costs are fractions of all training pixels in [0, 1]; the report
prints them as percentages.

Conventions
-----------
- A run's curve is its (cost, metric) points in round order, joined by straight lines. It is never
  extrapolated: before its first or after its last cost it is undefined (NaN). If two rounds have
  the same cost, the later round's value is used there.
- Curves over seeds are taken on a common cost grid: each seed's curve is interpolated onto it and
  the mean, sample standard deviation (``ddof=1``; NaN with fewer than two seeds), minimum and
  maximum are taken over the seeds defined at each grid point.
- Summary numbers that combine seeds (Dice at a budget, cost to reach a target) use the mean curve
  only where *every* seed of the strategy is defined, so a mean never mixes different sets of seeds.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from focal_al.bench.records import atomic_write_json, atomic_write_text, load_queries, load_records, write_records

#: The strategy that "cost saved against image-level IU" is measured against.
IMAGE_IU = "1-image-iu"

METRIC_NAMES = {
    "dice": "Dice",
    "voe": "VOE",
    "object_f1": "object F1",
    "object_dice": "object Dice",
    "cu": "cluster uncertainty (CU)",
    "cd": "cluster diversity (CD)",
}


@dataclass(frozen=True)
class Curve:
    """A metric against cost, over the seeds of one strategy, on a common cost grid.

    Attributes
    ----------
    grid : ndarray of shape (n_points,)
        Costs (fractions of all training pixels), increasing.
    mean, std, min, max : ndarray of shape (n_points,)
        Mean, sample standard deviation (``ddof=1``), minimum and maximum over the seeds defined at
        each cost; NaN where no seed is defined (``std``: fewer than two).
    n_seeds : ndarray of int of shape (n_points,)
        How many seeds are defined at each cost.
    seeds : tuple of int
        The seeds of the strategy.
    """

    grid: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    n_seeds: np.ndarray
    seeds: tuple

    @property
    def complete(self) -> np.ndarray:
        """Boolean mask of the grid points where every seed is defined."""
        return self.n_seeds == len(self.seeds)


def _runs(records: Iterable[dict]) -> dict[str, dict[int, list[dict]]]:
    """Group records by strategy then seed, each run's records in round order."""
    runs: dict[str, dict[int, list[dict]]] = {}
    for record in records:
        runs.setdefault(record["strategy"], {}).setdefault(record["seed"], []).append(record)
    for by_seed in runs.values():
        for run in by_seed.values():
            run.sort(key=lambda r: r["round"])
    return runs


def _series(run: Sequence[dict], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The (cost, value) points of one run, in round order, ties in cost resolved to the later round."""
    costs: list[float] = []
    values: list[float] = []
    for record in run:
        if metric not in record:
            raise ValueError(
                f"Unknown metric {metric!r}: the record of strategy {record['strategy']!r}, seed "
                f"{record['seed']}, round {record['round']} has no such key. Expected one of "
                f"{', '.join(k for k in METRIC_NAMES if k in record)}."
            )
        value = record[metric]
        if value is None:
            continue
        cost = float(record["cost"])
        if costs and cost < costs[-1]:
            raise ValueError(
                f"The cost of strategy {record['strategy']!r}, seed {record['seed']} decreases at round "
                f"{record['round']} ({costs[-1]:.6g} -> {cost:.6g}); revealed pixels can only grow."
            )
        if costs and cost == costs[-1]:
            values[-1] = float(value)
        else:
            costs.append(cost)
            values.append(float(value))
    return np.asarray(costs, dtype=float), np.asarray(values, dtype=float)


def _interp(grid: np.ndarray, costs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of one run onto ``grid``, NaN outside the run's cost range."""
    out = np.full(grid.shape, np.nan)
    if len(costs):
        inside = (grid >= costs[0]) & (grid <= costs[-1])
        out[inside] = np.interp(grid[inside], costs, values)
    return out


def _strategy_runs(records: Sequence[dict], strategy: str) -> dict[int, list[dict]]:
    runs = _runs(records)
    if strategy not in runs:
        raise ValueError(
            f"No records of strategy {strategy!r}. Strategies recorded: {', '.join(sorted(runs)) or 'none'}."
        )
    return runs[strategy]


def curve(
    records: Sequence[dict],
    strategy: str,
    *,
    metric: str = "dice",
    grid: Sequence[float] | np.ndarray | None = None,
) -> Curve:
    """Mean and spread over seeds of a metric against cost, for one strategy.

    Parameters
    ----------
    records : sequence of dict
        Round records (any strategies; the others are ignored).
    strategy : str
        The strategy whose runs are combined.
    metric : str, default="dice"
        The record key to plot: ``"dice"``, ``"voe"``, ``"object_f1"``, ``"object_dice"``,
        ``"cu"`` or ``"cd"``. Rounds where it is ``None`` are left out of the run's curve.
    grid : array-like of shape (n_points,), optional
        Costs to evaluate at. Default: every cost any seed of the strategy reached, sorted.

    Returns
    -------
    Curve
        Each seed's curve interpolated linearly between rounds onto ``grid``, with no extrapolation
        beyond a seed's first or last cost, then combined over seeds.

    Raises
    ------
    ValueError
        If there is no record of ``strategy``, ``metric`` is not a record key, or a run's cost
        decreases from one round to the next.
    """
    by_seed = _strategy_runs(records, strategy)
    series = {seed: _series(run, metric) for seed, run in sorted(by_seed.items())}
    if grid is None:
        grid = np.unique(np.concatenate([c for c, _ in series.values()]))
    grid = np.asarray(grid, dtype=float).ravel()
    values = np.stack([_interp(grid, c, v) for c, v in series.values()])
    defined = ~np.isnan(values)
    n = defined.sum(axis=0)
    some = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(some, np.where(defined, values, 0.0).sum(axis=0) / n, np.nan)
        squares = np.where(defined, (values - mean) ** 2, 0.0).sum(axis=0)
        std = np.where(n >= 2, np.sqrt(squares / (n - 1)), np.nan)
    low = np.where(some, np.where(defined, values, np.inf).min(axis=0), np.nan)
    high = np.where(some, np.where(defined, values, -np.inf).max(axis=0), np.nan)
    return Curve(grid=grid, mean=mean, std=std, min=low, max=high, n_seeds=n, seeds=tuple(series))


def _check_curve(costs, values, name: str) -> tuple[np.ndarray, np.ndarray]:
    costs = np.asarray(costs, dtype=float).ravel()
    values = np.asarray(values, dtype=float).ravel()
    if len(costs) != len(values) or len(costs) == 0:
        raise ValueError(
            f"{name}: 'costs' and 'values' must be non-empty and of the same length. "
            f"Got {len(costs)} costs and {len(values)} values."
        )
    if np.any(np.diff(costs) < 0) or not np.all(np.isfinite(costs)):
        raise ValueError(f"{name}: 'costs' must be finite and non-decreasing. Got {costs.tolist()}.")
    return costs, values


def aubc(costs, values, *, max_cost: float, min_cost: float | None = None) -> float:
    """Area under the budget curve, normalised by the cost range: the curve's mean value over it.

    The curve is linear between the given points. Its trapezoid integral from ``min_cost`` to
    ``max_cost`` is divided by ``max_cost - min_cost``, so a metric in [0, 1] gives an AUBC in
    [0, 1], comparable across cost ranges. When the range has zero width (a single round), the
    AUBC is the curve's value there (the limit of the mean value).

    Parameters
    ----------
    costs : array-like of shape (n_rounds,)
        Costs, non-decreasing.
    values : array-like of shape (n_rounds,)
        Metric values at those costs.
    max_cost : float
        End of the range; must lie within ``[min_cost, costs[-1]]`` (no extrapolation).
    min_cost : float, optional
        Start of the range; default ``costs[0]``. Must lie within ``[costs[0], max_cost]``.

    Returns
    -------
    float
        The normalised area.

    Raises
    ------
    ValueError
        If the inputs are empty or of different lengths, the costs decrease, or the range is not
        covered by the curve.
    """
    costs, values = _check_curve(costs, values, "aubc")
    lo = costs[0] if min_cost is None else float(min_cost)
    hi = float(max_cost)
    if not costs[0] <= lo <= hi <= costs[-1]:
        raise ValueError(
            f"aubc: the range [min_cost, max_cost] = [{lo:.6g}, {hi:.6g}] must lie within the curve's "
            f"costs [{costs[0]:.6g}, {costs[-1]:.6g}] with min_cost <= max_cost; the curve is not extrapolated."
        )
    if hi == lo:
        return float(np.interp(lo, costs, values))
    inner = (costs > lo) & (costs < hi)
    x = np.concatenate([[lo], costs[inner], [hi]])
    y = np.concatenate([[np.interp(lo, costs, values)], values[inner], [np.interp(hi, costs, values)]])
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / (hi - lo))


def cost_to_reach(costs, values, target: float) -> float | None:
    """The first cost at which a curve reaches ``target`` (linear between rounds), or None.

    Parameters
    ----------
    costs : array-like of shape (n_rounds,)
        Costs, non-decreasing.
    values : array-like of shape (n_rounds,)
        Metric values at those costs (higher is better, e.g. Dice); NaN points are skipped.
    target : float
        The value to reach.

    Returns
    -------
    float or None
        ``costs[0]`` if the first value already reaches ``target``; otherwise the cost where the
        segment between the last round below and the first round at or above ``target`` crosses
        it; None if no round reaches it.
    """
    costs, values = _check_curve(costs, values, "cost_to_reach")
    keep = ~np.isnan(values)
    costs, values = costs[keep], values[keep]
    above = np.flatnonzero(values >= target)
    if len(above) == 0:
        return None
    i = above[0]
    if i == 0:
        return float(costs[0])
    c0, c1, v0, v1 = costs[i - 1], costs[i], values[i - 1], values[i]
    return float(c0 + (target - v0) / (v1 - v0) * (c1 - c0))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return math.nan, math.nan
    std = float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan
    return float(np.mean(values)), std


def _mean_or_none(values) -> float | None:
    return None if any(v is None for v in values) or not values else float(np.mean(values))


def summarize(
    records: Sequence[dict],
    *,
    full_supervision: Mapping[str, float] | None = None,
    budgets: Sequence[float] = (0.05, 0.10, 0.15, 0.20, 0.30),
    reference: str | None = None,
) -> list[dict]:
    """One summary row per strategy: AUBC, Dice at budgets, costs to reach targets, cost saved.

    Parameters
    ----------
    records : sequence of dict
        Round records of all runs.
    full_supervision : mapping, optional
        Metrics of the network trained on all training pixels; ``"dice"`` is used.
    budgets : sequence of float, default=(0.05, 0.10, 0.15, 0.20, 0.30)
        Costs (fractions of all training pixels) at which the Dice is reported.
    reference : str, optional
        The strategy that cost saved is measured against; default random patches (the baseline of
        the report's headline), or image-level IU (the paper's) where there are no random patches.

    Returns
    -------
    list of dict
        Sorted by label. Keys: ``strategy``, ``label``, ``n_seeds``, ``seeds``, ``n_rounds`` (most
        rounds of a seed, round 0 included), ``final_cost`` and ``final_dice`` / ``final_dice_std``
        (each seed's last round, mean and std over seeds); ``aubc`` / ``aubc_std`` (Dice AUBC of
        each seed over the common range ``aubc_range``, mean and std over seeds);
        ``dice_at`` (list of ``{"budget", "mean", "std"}``; NaN where not every seed reaches the
        budget); ``cost_to_95_fs`` and ``cost_within_1pt_fs`` (first cost at which the mean Dice
        curve reaches 0.95 x and full-supervision Dice - 0.01; None if never or no full
        supervision); ``cost_saved_vs_reference`` (see Notes); ``timing`` (median ``query_seconds``,
        ``train_seconds`` and ``eval_seconds`` of the query rounds, ``run_minutes`` per seed, ``threads``)
        and ``notes`` (list of str).

    Notes
    -----
    - AUBC range: ``[lo, hi]`` with ``lo`` the largest first cost and ``hi`` the smallest final cost
      over all runs of all strategies, so every strategy is measured on the same costs and no curve is
      extrapolated. If the runs' ranges do not overlap, the AUBC is NaN.
    - Cost saved against ``reference``: the target is the last value of the reference's mean Dice
      curve (the Dice it reaches at the end of its budget, all seeds defined); cost saved is
      ``1 - cost_to_reach(strategy, target) / cost_to_reach(reference, target)``, both on mean
      curves. Positive means the strategy needs fewer pixels; None if it never reaches the target
      or the reference is absent.
    """
    if not records:
        raise ValueError("summarize: no records; run at least one round of one strategy first.")
    budgets = tuple(float(b) for b in budgets)
    bad = [b for b in budgets if not 0.0 < b <= 1.0]
    if bad:
        raise ValueError(f"The 'budgets' parameter of summarize must be costs in (0, 1]. Got {bad} instead.")
    runs = _runs(records)
    all_runs = [run for by_seed in runs.values() for run in by_seed.values()]
    lo = max(run[0]["cost"] for run in all_runs)
    hi = min(run[-1]["cost"] for run in all_runs)
    fs_dice = None if not full_supervision or full_supervision.get("dice") is None else float(full_supervision["dice"])

    def mean_curve(strategy):
        c = curve(records, strategy, metric="dice")
        return c.grid[c.complete], c.mean[c.complete]

    if reference is None:
        reference = "random-patch" if "random-patch" in runs else IMAGE_IU
    ref_cost = ref_target = None
    if reference in runs:
        ref_costs, ref_values = mean_curve(reference)
        if len(ref_costs):
            ref_target = float(ref_values[-1])
            ref_cost = cost_to_reach(ref_costs, ref_values, ref_target)

    rows = []
    for strategy, by_seed in runs.items():
        notes = []
        seeds = sorted(by_seed)
        if len(seeds) < 2:
            notes.append("one seed only: no spread over seeds")
        aubcs = []
        if lo <= hi:
            for seed in seeds:
                costs, values = _series(by_seed[seed], "dice")
                aubcs.append(aubc(costs, values, min_cost=lo, max_cost=hi))
        aubc_mean, aubc_std = _mean_std(aubcs)
        at = curve(records, strategy, metric="dice", grid=budgets)
        dice_at = [
            {
                "budget": b,
                "mean": float(at.mean[i]) if at.complete[i] else math.nan,
                "std": float(at.std[i]) if at.complete[i] else math.nan,
            }
            for i, b in enumerate(budgets)
        ]
        missing = [f"{100 * b:g} %" for b, full in zip(budgets, at.complete) if not full]
        if missing:
            notes.append(f"Dice not reported at {', '.join(missing)}: outside the cost range of some seed")
        final_dice, final_dice_std = _mean_std([by_seed[s][-1]["dice"] for s in seeds])
        costs, values = mean_curve(strategy)
        to_95 = within_1pt = saved = None
        if fs_dice is not None and len(costs):
            to_95 = cost_to_reach(costs, values, 0.95 * fs_dice)
            within_1pt = cost_to_reach(costs, values, fs_dice - 0.01)
        if ref_cost and len(costs):
            reached = cost_to_reach(costs, values, ref_target)
            saved = None if reached is None else 1.0 - reached / ref_cost
        rows.append(
            {
                "strategy": strategy,
                "label": by_seed[seeds[0]][0]["label"],
                "n_seeds": len(seeds),
                "seeds": seeds,
                "n_rounds": max(len(run) for run in by_seed.values()),
                "final_cost": float(np.mean([by_seed[s][-1]["cost"] for s in seeds])),
                "final_cost_min": float(min(by_seed[s][-1]["cost"] for s in seeds)),
                "final_foreground_cost": _mean_or_none([by_seed[s][-1].get("foreground_cost") for s in seeds]),
                "final_regions": _mean_or_none([by_seed[s][-1].get("n_regions") for s in seeds]),
                "final_boundary_cost": _mean_or_none([by_seed[s][-1].get("boundary_cost") for s in seeds]),
                "final_foreground_efficiency": _mean_or_none([by_seed[s][-1].get("foreground_efficiency")
                                                              for s in seeds]),
                "final_dice": final_dice,
                "final_dice_std": final_dice_std,
                "aubc": aubc_mean,
                "aubc_std": aubc_std,
                "aubc_range": [float(lo), float(hi)],
                "dice_at": dice_at,
                "cost_to_95_fs": to_95,
                "cost_within_1pt_fs": within_1pt,
                "cost_saved_vs_reference": saved,
                "reference": reference if ref_cost else None,
                "reference_target_dice": ref_target if ref_cost else None,
                "timing": _timing([by_seed[s] for s in seeds]),
                "notes": notes,
            }
        )
    return sorted(rows, key=lambda r: (r["label"], r["strategy"]))


def _timing(runs: Sequence[Sequence[dict]]) -> dict:
    """Median seconds per query round (round 0 left out), minutes per run (mean over seeds), threads.

    Values are None where a record has no timing (records written before timings were kept).
    """
    def median(key):
        values = [r.get(key) for run in runs for r in run if r["round"] > 0]
        return None if not values or any(v is None for v in values) else float(np.median(values))

    totals = [[r.get(k) for r in run for k in ("train_seconds", "query_seconds", "eval_seconds")] for run in runs]
    minutes = None if any(v is None for t in totals for v in t) else float(np.mean([sum(t) for t in totals])) / 60
    threads = sorted({r["threads"] for run in runs for r in run if r.get("threads") is not None})
    return {"query_seconds": median("query_seconds"), "train_seconds": median("train_seconds"),
            "eval_seconds": median("eval_seconds"), "run_minutes": minutes, "threads": threads}


def _fmt(mean: float | None, std: float | None = None, digits: int = 3) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt_cost(cost: float | None, *, known: bool = True) -> str:
    if not known:
        return "–"
    return "not reached" if cost is None else f"{100 * cost:.1f} %"


def _final_costs(row: Mapping) -> str:
    """Cost in pixels, and where recorded in foreground pixels and regions queried."""
    text = f"{100 * row['final_cost']:.1f} %"
    if row.get("final_foreground_cost") is not None:
        text += f", foreground {100 * row['final_foreground_cost']:.1f} %"
    if row.get("final_regions") is not None:
        text += f", {row['final_regions']:.0f} regions"
    if row.get("final_boundary_cost") is not None:
        text += f", outlines {100 * row['final_boundary_cost']:.1f} %"
    if row.get("final_foreground_efficiency") is not None:
        text += f", {100 * row['final_foreground_efficiency']:.0f} % of revealed pixels foreground"
    return text


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _versions(config: Mapping) -> dict[str, str]:
    """Package versions recorded in the config: a ``versions`` mapping, or top-level keys."""
    if isinstance(config.get("versions"), Mapping):
        return {str(k): str(v) for k, v in config["versions"].items()}
    names = {"focal-al": ("focal-al", "focal_al", "focal_al_version"), "torch": ("torch", "torch_version"),
             "numpy": ("numpy", "numpy_version")}
    found = {}
    for name, keys in names.items():
        for key in keys:
            if isinstance(config.get(key), str):
                found[name] = config[key]
                break
    return found


def _fmt_interval(iv: Mapping, digits: int = 3) -> str:
    if not np.isfinite(iv["mean"]):
        return "–"
    if not np.isfinite(iv["low"]):
        return f"{iv['mean']:+.{digits}f}"
    return f"{iv['mean']:+.{digits}f} [{iv['low']:+.{digits}f}, {iv['high']:+.{digits}f}]"


def _ranges(comparison: Sequence[dict]) -> str:
    """The AUBC cost ranges of the paired comparisons: one, or each with the strategies that share it."""
    by_range: dict[tuple, list[str]] = {}
    for c in comparison:
        lo, hi = c["aubc_range"]
        by_range.setdefault((f"{100 * lo:.1f}", f"{100 * hi:.1f}"), []).append(c["label"])
    if len(by_range) == 1:
        ((lo, hi),) = by_range
        return f"{lo}–{hi} %"
    return "; ".join(f"{lo}–{hi} % for {', '.join(labels)}" for (lo, hi), labels in by_range.items())


def _round0_notes(comparison: Sequence[dict], baseline_label: str) -> list[str]:
    """A note for each strategy whose pairs do not share round 0 (see ``stats.round0_difference``) or
    hold a run continued from weights replayed otherwise (``stats.replay_drifts``)."""
    lines = []
    for c in comparison:
        differs = c.get("round0_differs") or []
        seeds = ("seeds " if len(differs) > 1 else "seed ") + ", ".join(str(d["seed"]) for d in differs)
        if any(d["initial_set_differs"] for d in differs):
            costs = "; ".join(f"{100 * d['cost']:.2f} % vs {100 * d['baseline_cost']:.2f} %" for d in differs)
            lines += [f"† {_cell(c['label'])}, {seeds}: its initial labelled set is not that of the {baseline_label} "
                      f"run of the same seed (round 0 cost {costs}), so these pairs do not compare like with like.", ""]
        elif differs:
            dice = "; ".join(f"seed {d['seed']}: {d['dice']:.4f} vs {d['baseline_dice']:.4f}" for d in differs)
            lines += [f"† {_cell(c['label'])}, {seeds}: round 0 trains the same network on the same initial "
                      f"set as the {baseline_label} run of the same seed, yet its Dice differs ({dice}). The runs were computed on "
                      "different machines or library versions (each run's `config.json` records them), so these "
                      "paired differences hold that numerical noise beside the strategies' effect.", ""]
        drifts = c.get("replay_drift") or []
        if drifts:
            where = "; ".join(f"{_cell(d['strategy'])} seed {d['seed']} after round {d['round']}, Dice "
                              f"{d['replayed_dice']:.4f} replayed where {d['recorded_dice']:.4f} was recorded"
                              for d in drifts)
            lines += [f"† {_cell(c['label'])}: a run of these pairs went on from weights that its replay on another "
                      f"machine computed otherwise (`--accept-replay-drift`: {where}), so these paired differences "
                      "hold that numerical noise beside the strategies' effect.", ""]
    return lines


#: An AUBC interval half-width above this cannot rule out a difference worth acting on (5 Dice points).
THIN_INTERVAL = 0.05


def answer_sentence(comparison: Sequence[dict], *, baseline_label: str) -> str:
    """The report's first line: which strategy, in one sentence, and whether the evidence can say.

    The evidence is too thin when a strategy has fewer than 3 seeds, or when an AUBC interval cannot
    rule out a difference of ``THIN_INTERVAL`` (5 Dice points) either way: then the sentence says so.
    """
    if not comparison:
        return f"**Answer:** no strategy to compare with {baseline_label} in this folder yet."
    if all(c["verdict"] == "too few seeds" for c in comparison):
        return (f"**Answer:** not yet: no strategy has two seeds paired with {baseline_label} "
                f"({', '.join(_cell(c['label']) for c in comparison)} {'has' if len(comparison) == 1 else 'have'} "
                "one); three are needed to say anything.")
    better = [c for c in comparison if c["verdict"] == "better"]
    worse = [c for c in comparison if c["verdict"] == "worse"]
    seeds = min(int(c["aubc"]["n"]) for c in comparison)
    widest = max(((c["aubc"]["high"] - c["aubc"]["low"]) / 2 for c in comparison if np.isfinite(c["aubc"]["low"])),
                 default=math.inf)
    if seeds < 3:
        caveat = f" The evidence is too thin to say more: only {seeds} seed(s) for some strategies."
    elif widest > THIN_INTERVAL:
        caveat = (f" The evidence is too thin to say more: an interval is ±{widest:.3f} wide, so differences of "
                  f"{THIN_INTERVAL:.2f} either way are not ruled out.")
    else:
        caveat = ""
    def names(cs):
        return ", ".join(_cell(c["label"]) for c in cs)
    if better:
        text = f"**Answer:** {names(better)} beat{'s' if len(better) == 1 else ''} {baseline_label} in AUBC (paired by seed)"
        text += f"; {names(worse)} {'does' if len(worse) == 1 else 'do'} worse." if worse else "; no other strategy differs."
    elif worse:
        text = (f"**Answer:** no strategy beats {baseline_label}; {names(worse)} "
                f"{'is' if len(worse) == 1 else 'are'} worse in AUBC (paired by seed).")
    else:
        text = f"**Answer:** no strategy is better or worse than {baseline_label} in AUBC (paired by seed)."
    return text + caveat


def render_comparison(comparison: Sequence[dict], *, baseline_label: str) -> list[str]:
    """Markdown lines: the verdict table against the baseline."""
    lines = []
    if comparison:
        budgets = [d["budget"] for d in comparison[0]["dice_at"]]
        header = ["Strategy", f"Against {baseline_label}", "Seeds", "Δ AUBC [95 % CI]"]
        header += [f"Δ Dice @ {100 * b:g} %" for b in budgets]
        lines += [f"## Which strategy? Paired comparison with {baseline_label}", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for c in comparison:
            mark = " †" if c.get("round0_differs") or c.get("replay_drift") else ""
            cells = [_cell(c["label"]), f"**{c['verdict']}**{mark}", str(c["aubc"]["n"]), _fmt_interval(c["aubc"])]
            cells += [_fmt_interval(d) for d in c["dice_at"]]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Each strategy's runs are paired with the {baseline_label} runs of the same seed (same initial labelled "
            "set). Δ is strategy minus baseline, averaged over seeds, with a two-sided 95 % t-interval over the "
            f"seeds' differences; the verdict reads the AUBC interval (over the cost range that every run of the pairs "
            f"covers: {_ranges(comparison)}): better or worse when it excludes 0, else no detectable difference. A Dice "
            "difference is shown only at budgets every paired run reached.",
            "",
        ]
        lines += _round0_notes(comparison, baseline_label)
    return lines


def render_noise(noise: Mapping | None) -> list[str]:
    """Markdown lines: the curves' noise (falls between rounds, seed spread)."""
    lines = []
    if noise:
        budgets = sorted({b for stds in noise["seed_std"].values() for b in stds})
        header = ["Strategy", "Mean fall", "Largest fall (where)"] + [f"Seed sd @ {100 * b:g} %" for b in budgets]
        lines += ["## Curve noise", "",
                  f"Over all runs: mean fall of Dice between consecutive rounds {noise['mean_fall']:.4f}, largest "
                  f"{noise['largest_fall']:.3f}" + (f" ({noise['largest_fall_at']})." if noise["largest_fall_at"] else "."),
                  "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for strategy, own in noise.get("per_strategy", {}).items():
            stds = noise["seed_std"].get(strategy, {})
            cells = [_cell(own["label"]), f"{own['mean_fall']:.4f}", f"{own['largest_fall']:.3f}"
                     + (f" ({own['largest_fall_at']})" if own["largest_fall_at"] else "")]
            cells += [f"{stds[b]:.3f}" if np.isfinite(stds.get(b, math.nan)) else "–" for b in budgets]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "A fall is how much the Dice drops from one round to the next (0 when it rises); the seed sd is "
                      "the sample standard deviation over seeds of the Dice at a budget (– : fewer than two seeds "
                      "reached it).", ""]
    return lines


def render_report(
    summary_rows: Sequence[dict],
    *,
    config: Mapping | None,
    full_supervision: Mapping[str, float] | None,
    figures: Mapping[str, str | os.PathLike] | None,
    comparison: Sequence[dict] = (),
    noise: Mapping | None = None,
    notes: Sequence[str] = (),
    also_against: Mapping[str, Sequence[dict]] | None = None,
) -> str:
    """The bench report as Markdown.

    Parameters
    ----------
    summary_rows : sequence of dict
        Rows from :func:`summarize`.
    config : mapping or None
        The bench configuration, shown as JSON. Package versions are read from its
        ``"versions"`` mapping or, failing that, its top-level ``"focal_al"`` / ``"torch"`` /
        ``"numpy"`` string keys.
    full_supervision : mapping or None
        Full-supervision metrics (``"dice"``, ``"voe"``, ``"object_f1"``, ``"object_dice"``).
    figures : mapping of str to path, or None
        Caption to figure path, relative to the report's directory.
    comparison : sequence of dict
        Rows of :func:`focal_al.bench.stats.paired_comparison` (shown first).
    noise : mapping, optional
        :func:`focal_al.bench.stats.curve_noise`.
    notes : sequence of str
        Notes shown first under "Notes" (e.g. which runs the report leaves out).
    also_against : mapping of str to sequence of dict, optional
        Further baselines by strategy key, each with its :func:`focal_al.bench.stats.paired_comparison`
        rows: a paired comparison section for each, after the one with random patches.

    Returns
    -------
    str
        Markdown: title, configuration, results table, figures, notes and versions.
    """
    rows = list(summary_rows)
    lines = ["# focal-al bench report", ""]
    budgets = [d["budget"] for d in rows[0]["dice_at"]] if rows else []
    fs_known = bool(full_supervision) and full_supervision.get("dice") is not None
    best_final = max((r["final_dice"] for r in rows if np.isfinite(r["final_dice"])), default=math.nan)
    # A ceiling that active learning beats was not trained to convergence: flag it, do not use it.
    fs_below = fs_known and best_final > float(full_supervision["dice"]) + 0.005
    if fs_below:
        fs_known = False
    reference = next((r["reference"] for r in rows if r.get("reference")), None)

    baseline_label = next((r["label"] for r in rows if r["strategy"] == "random-patch"), "random patches")
    lines += [answer_sentence(comparison, baseline_label=baseline_label), ""]
    lines += render_comparison(comparison, baseline_label=baseline_label)
    labels = {r["strategy"]: r["label"] for r in rows}
    for key, rows_against in (also_against or {}).items():
        lines += render_comparison(rows_against, baseline_label=labels.get(key, key))
    lines += render_noise(noise)
    lines += ["## Results", ""]
    if rows:
        lo, hi = rows[0]["aubc_range"]
        header = ["Strategy", "Seeds", f"AUBC (Dice, {100 * lo:.1f}–{100 * hi:.1f} %)"]
        header += [f"Dice @ {100 * b:g} %" for b in budgets]
        # The costs to reach full supervision only where some strategy reached it (else a sentence says so).
        fs_reached = fs_known and any(r["cost_to_95_fs"] is not None or r["cost_within_1pt_fs"] is not None
                                      for r in rows)
        header += ["Final Dice (cost)"] + (["Cost to 95 % FS", "Cost within 1 pt of FS"] if fs_reached else [])
        header += [f"Cost saved vs {labels.get(reference, reference)}"] if reference else []  # else a note says why not
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows:
            cells = [_cell(r["label"]), str(r["n_seeds"]), _fmt(r["aubc"], r["aubc_std"])]
            cells += [_fmt(d["mean"], d["std"]) for d in r["dice_at"]]
            cells.append(f"{_fmt(r['final_dice'], r['final_dice_std'])} ({_final_costs(r)})")
            if fs_reached:
                cells += [_fmt_cost(r["cost_to_95_fs"], known=fs_known), _fmt_cost(r["cost_within_1pt_fs"], known=fs_known)]
            if reference:
                cells.append("–" if r["reference"] is None else (
                    "not reached" if r["cost_saved_vs_reference"] is None
                    else f"{100 * r['cost_saved_vs_reference']:.1f} %"
                ))
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "Costs are unique revealed pixels as a percentage of all training pixels (the final cost also "
            "in foreground pixels revealed, as a percentage of all foreground pixels, in regions queried, in "
            "object outline pixels revealed, as a percentage of all outline pixels (what an annotator traces), "
            "and as the share of revealed pixels that are foreground: "
            "pixel cost alone misjudges region queries, and background is cheaper to label). `a ± b` is the mean "
            "± sample standard deviation over seeds. AUBC is the area under the Dice-vs-cost curve over "
            "the range shown, divided by its width (the curve's mean Dice there); the range is the same "
            "for every strategy: from the largest first cost to the smallest final cost of all runs. "
            "Dice at a budget and the costs to reach a target are read from the mean curve over seeds, "
            "linear between rounds, never extrapolated.",
        ]
        if fs_known:
            fs = full_supervision["dice"]
            lines += [
                "",
                f"Full supervision (FS): Dice {fs:.3f}"
                + "".join(
                    f", {METRIC_NAMES[k]} {full_supervision[k]:.3f}"
                    for k in ("voe", "object_f1", "object_dice")
                    if full_supervision.get(k) is not None
                )
                + (f", after {full_supervision['train_steps']} training steps on every training patch"
                   if full_supervision.get("train_steps") else "")
                + f". Targets: 95 % of FS Dice = {0.95 * fs:.3f}; within 1 point = {fs - 0.01:.3f}"
                + ("." if fs_reached else ": no strategy's mean curve reached either within the budget."),
            ]
        lines += _timing_table(rows)
        if reference:
            target = next(r["reference_target_dice"] for r in rows if r.get("reference"))
            lines += [
                "",
                f"Cost saved vs {labels.get(reference, reference)}: 1 - (cost at which the strategy's mean Dice "
                f"first reaches {target:.3f}) / (cost at which {labels.get(reference, reference)} first reaches it), "
                f"where {target:.3f} is the Dice it reaches at the end of its budget. Positive: fewer pixels needed.",
            ]
    else:
        lines.append("No rounds recorded yet.")

    if figures:
        lines += ["", "## Figures", ""]
        for caption, path in figures.items():
            lines += [f"![{caption}]({Path(path).as_posix()})", "", f"*{caption}*", ""]
        lines.pop()

    notes = list(notes)
    if fs_below:
        notes.append(
            f"Full supervision (Dice {full_supervision['dice']:.3f}) lies below the curves (best final Dice "
            f"{best_final:.3f}): the ceiling was not trained to convergence, so costs to reach it are not reported. "
            "Train it longer (--full-supervision-epochs) and rerun.")
    elif not fs_known:
        notes.append("Full-supervision Dice unknown (no full_supervision.json): costs to reach it are not reported.")
    if rows and not reference:
        notes.append(f"No random-patch or {IMAGE_IU} runs: cost saved against a reference is not reported.")
    if rows and rows[0]["aubc_range"][0] > rows[0]["aubc_range"][1]:
        notes.append("The runs' cost ranges do not overlap: AUBC is not reported.")
    elif rows and rows[0]["aubc_range"][0] == rows[0]["aubc_range"][1]:
        notes.append("The common cost range has zero width (a single round): AUBC is the Dice at that cost.")
    if not config:
        notes.append("No bench configuration (config.json) was found.")
    seed_sets = {tuple(r["seeds"]) for r in rows}
    if len(seed_sets) > 1:
        notes.append("Strategies were run with different seeds: " + "; ".join(
            f"{r['label']}: {r['seeds']}" for r in rows))
    finals = [r["final_cost"] for r in rows]
    budget = (config or {}).get("budget")
    if rows and isinstance(budget, (int, float)):
        # Runs stop at the first round at or past the budget: only those short of it are unfinished.
        short = [r["label"] for r in rows if r.get("final_cost_min", r["final_cost"]) < budget - 1e-9]
        if short:
            notes.append(
                f"Not at the {100 * budget:g} % budget yet (unfinished, or the pool ran out): {', '.join(short)}; "
                "summaries use only the costs every run reached."
            )
    elif rows and max(finals) - min(finals) > 1e-3:
        notes.append(
            f"Runs end at different costs ({100 * min(finals):.1f}–{100 * max(finals):.1f} %): some may be "
            "unfinished; summaries use only the costs every run reached."
        )
    notes += [f"{r['label']}: {note}." for r in rows for note in r["notes"]]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]

    if config:
        lines += ["", "## Configuration", "", "```json", json.dumps(config, indent=2, default=str), "```"]
        versions = _versions(config)
        if versions:
            lines += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in versions.items()]
    return "\n".join(lines) + "\n"


def _timing_table(rows: Sequence[dict]) -> list[str]:
    """Markdown lines of the seconds each strategy spends per round; none if no row has timings."""
    timed = [r for r in rows if r.get("timing") and r["timing"]["run_minutes"] is not None]
    if not timed:
        return []

    def seconds(value):
        return "–" if value is None else f"{value:.0f}"

    lines = ["", "| Strategy | Rounds | Query s / round | Training s / round | Evaluation s / round | "
                 "Minutes per run | Threads |", "|---|---|---|---|---|---|---|"]
    for r in timed:
        t = r["timing"]
        lines.append(f"| {_cell(r['label'])} | {r['n_rounds']} | {seconds(t['query_seconds'])} | "
                     f"{seconds(t['train_seconds'])} | {seconds(t['eval_seconds'])} | {t['run_minutes']:.1f} | "
                     f"{', '.join(map(str, t['threads'])) or '–'} |")
    lines += ["", "Wall-clock time, as measured while the runs ran: medians over the query rounds of every seed "
                  "(query: the round's scoring pass and selection; at patch level every strategy, random "
                  "patches included, makes the pass, since Fig. 5 reads the candidates' cluster criteria; "
                  "Suggestive Annotation's also trains its bootstrap ensemble; training: the round's gradient "
                  "steps), and "
                  "the whole run including round 0, mean over seeds. Other work on the machine at the time "
                  "lengthens them."]
    return lines


def _read_optional_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}.") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


def _safe_name(text: str) -> str:
    """A file-name part: each run of other characters than letters, digits, '_' and '.' becomes one '-'.

    A composed key reads on: ``7-focannot(selection=power)`` -> ``7-focannot-selection-power``.
    """
    return re.sub(r"[^0-9A-Za-z_.]+", "-", str(text)).strip("-") or "_"


def write_report(
    out_dir: str | os.PathLike,
    *,
    budgets: Sequence[float] = (0.05, 0.10, 0.15, 0.20, 0.30),
    query_images: Mapping[str, np.ndarray] | None = None,
    query_masks: Mapping[str, np.ndarray] | None = None,
    n_query_images: int = 2,
    complete_only: bool = False,
    also_against: Sequence[str] = (),
) -> Path:
    """Write records, summary, figures and ``report.md`` for a bench output directory.

    Reads ``runs/*/rounds.json``, and ``config.json`` and ``full_supervision.json`` when present;
    writes ``records.csv``, ``records.json``, ``summary.json``, ``figures/*.png`` and
    ``report.md`` (all atomically), replacing earlier ones.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The bench output directory.
    budgets : sequence of float, default=(0.05, 0.10, 0.15, 0.20, 0.30)
        Costs at which the Dice is tabulated.
    query_images : mapping of str to ndarray of shape (H, W, 3), optional
        Training images by name. When given, Fig. 6 is drawn for the lowest seed of every
        patch-level strategy, on the ``n_query_images`` images it queried most patches from.
    query_masks : mapping of str to ndarray of shape (H, W), optional
        Masks by image name, drawn as contours on the Fig. 6 images.
    n_query_images : int, default=2
        How many images per strategy Fig. 6 shows.
    complete_only : bool, default=False
        Report only the runs that reached their budget (or ran out of pool): a report of the
        finished runs while others go on. The runs left out are named in the report's notes.
    also_against : sequence of str, default=()
        Strategy keys (as the runs' folders name them, e.g. ``"7-focannot"``) to compare every
        other strategy with, paired by seed, besides random patches: a section of the report each,
        and ``comparison.json``'s ``"against"``.

    Returns
    -------
    pathlib.Path
        The path of ``report.md``.

    Raises
    ------
    ValueError
        If no round is recorded yet (no complete run, with ``complete_only``), a run's budget is
        unknown with ``complete_only``, an input file is malformed (the message names it), or
        ``also_against`` names a strategy without reported runs.
    """
    from focal_al.bench import figures as fig

    out_dir = Path(out_dir)
    records = load_records(out_dir)
    if not records:
        raise ValueError(f"No round records under {out_dir / 'runs'}/*/rounds.json; nothing to report.")
    config = _read_optional_json(out_dir / "config.json")
    left_out = unfinished_runs(out_dir, records, config) if complete_only else {}
    left_out_labels = {r["strategy"]: r["label"] for r in records}
    records = [r for r in records if (r["strategy"], r["seed"]) not in left_out]
    if not records:
        raise ValueError(f"No run under {out_dir / 'runs'} has reached its budget yet; nothing to report "
                         "with complete_only (--complete-only).")
    reported = sorted({r["strategy"] for r in records})
    unknown = [key for key in also_against if key not in reported]
    if unknown:
        raise ValueError(f"also_against (--also-against) names {', '.join(map(repr, unknown))}, which has no "
                         f"reported run under {out_dir / 'runs'}; the strategies there: {', '.join(reported)}.")
    notes = ["In progress, left out of this report: " + ", ".join(
        f"{left_out_labels[s]} seed {seed} (at {100 * cost:.1f} %)" for (s, seed), cost in sorted(left_out.items()))] \
        if left_out else []
    empty = sorted(p.parent.name for p in (out_dir / "runs").glob("*/rounds.json") if p.read_text().strip() == "[]")
    if empty:
        notes.append("Runs with no round recorded yet (an empty rounds.json), left out: " + ", ".join(empty) + ".")
    full_supervision = _read_optional_json(out_dir / "full_supervision.json")
    write_records(out_dir, records)
    # Only the budgets some run reached: a column no run can fill says nothing.
    reached = max(r["cost"] for r in records) + 1e-9
    budgets = [b for b in budgets if b <= reached] or [min(budgets)]
    rows = summarize(records, full_supervision=full_supervision, budgets=budgets)
    atomic_write_json(out_dir / "summary.json", _json_safe(rows))
    from focal_al.bench.stats import curve_noise, paired_comparison

    paired_budgets = [b for b in (0.1, 0.2, 0.3) if b <= reached] or [min(budgets)]
    comparison = paired_comparison(records, budgets=paired_budgets)
    against = {key: paired_comparison(records, baseline=key, budgets=paired_budgets) for key in also_against}
    noise = curve_noise(records, budgets=paired_budgets)
    atomic_write_json(out_dir / "comparison.json",
                      _json_safe({"paired": comparison, "noise": noise, **({"against": against} if against else {})}))

    figure_dir = out_dir / "figures"
    figure_dir.mkdir(exist_ok=True)
    figures: dict[str, Path] = {}
    # Figures are redrawn from the runs there now: none may survive from an earlier report.
    for stale in [*figure_dir.glob("queries-*.png"), figure_dir / "paired-differences.png",
                  figure_dir / "cluster-criteria.png"]:
        stale.unlink(missing_ok=True)
    path = fig.plot_learning_curves(records, figure_dir / "learning-curves-dice.png",
                                    metric="dice", full_supervision=full_supervision)
    figures["Fig. 4: Dice against annotation cost (mean over seeds, band: 95 % interval of the mean)"] = path
    baseline_label = next((r["label"] for r in rows if r["strategy"] == "random-patch"), "random patches")
    path = fig.plot_paired_differences(comparison, figure_dir / "paired-differences.png", baseline_label=baseline_label)
    if path is not None:
        figures[f"Paired differences to {baseline_label} (mean and 95 % interval over seeds)"] = path
    path = fig.plot_cluster_criteria(records, figure_dir / "cluster-criteria.png")
    if path is not None:
        figures["Fig. 5: mean cluster uncertainty and cluster diversity per round"] = path
    if query_images:
        queries = {run: q for run, q in load_queries(out_dir).items() if run not in left_out}
        labels = {r["strategy"]: r["label"] for r in rows}
        # The lowest seed of every patch-level strategy, on the same images for every strategy:
        # the images the strategies queried most patches from, all together.
        chosen = {}
        for (strategy, seed), rounds in sorted(queries.items()):
            if seed == min(s for st, s in queries if st == strategy):
                chosen[strategy] = (seed, [{**item, "round": q["round"]} for q in rounds if q["round"] > 0 and q["level"] == "patch"
                                           for item in q["items"] if item["image"] in query_images])
        counts: dict[str, int] = {}
        for _, items in chosen.values():
            for item in items:
                counts[item["image"]] = counts.get(item["image"], 0) + 1
        names = sorted(counts, key=lambda n: (-counts[n], n))[:n_query_images]
        last_round = max((item["round"] for _, items in chosen.values() for item in items), default=1)
        for strategy, (seed, items) in chosen.items():
            if not items:
                continue
            for name in names:
                label = labels.get(strategy, strategy)
                path = fig.draw_queries(
                    query_images[name], [i for i in items if i["image"] == name],
                    figure_dir / f"queries-{_safe_name(strategy)}-seed{seed}-{_safe_name(name)}.png",
                    mask=None if query_masks is None else query_masks.get(name),
                    title=f"{label} (seed {seed}): area queried in {name}", round_range=(1, last_round),
                )
                figures[f"Fig. 6: {label}, seed {seed}, area queried in {name} (blue: ground truth)"] = path

    text = render_report(
        rows, config=config, full_supervision=full_supervision,
        figures={caption: p.relative_to(out_dir) for caption, p in figures.items()},
        comparison=comparison, noise=noise, notes=notes, also_against=against,
    )
    return atomic_write_text(out_dir / "report.md", text)


def unfinished_runs(out_dir: str | os.PathLike, records: Sequence[dict], config: Mapping | None) -> dict:
    """The runs of ``records`` short of their budget that still have pool left: ``(strategy, seed) -> cost``.

    A run's budget is read from its own ``runs/<strategy>-seed<seed>/config.json``, else from the
    folder's ``config.json`` (``config``); a run whose ``state.json`` says it ran out of pool is finished.

    Raises
    ------
    ValueError
        If a run's budget is found in neither configuration.
    """
    out_dir = Path(out_dir)
    last = {(strategy, seed): run[-1] for strategy, by_seed in _runs(records).items() for seed, run in by_seed.items()}
    unfinished = {}
    for (strategy, seed), record in sorted(last.items()):
        run_dir = out_dir / "runs" / f"{strategy}-seed{seed}"
        budget = (_read_optional_json(run_dir / "config.json") or config or {}).get("budget")
        if not isinstance(budget, (int, float)):
            raise ValueError(f"The budget of run {strategy} seed {seed} is unknown: neither {run_dir / 'config.json'} "
                             f"nor {out_dir / 'config.json'} gives one, so it cannot be told finished or not.")
        if record["cost"] < budget - 1e-9 and not (_read_optional_json(run_dir / "state.json") or {}).get("exhausted"):
            unfinished[(strategy, seed)] = float(record["cost"])
    return unfinished


def _json_safe(obj):
    """Replace NaN by None, recursively, so the summary is standard JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
