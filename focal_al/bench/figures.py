"""Bench figures: learning curves (Fig. 4), cluster criteria (Fig. 5) and queried patches (Fig. 6).

matplotlib is imported inside each function, so importing this module stays cheap, and figures are
built without pyplot, so drawing them neither needs a display nor changes the caller's backend.
Every figure is written atomically as a PNG.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from focal_al.bench.records import atomic_write_bytes
from focal_al.bench.report import METRIC_NAMES, _runs, curve

_DPI = 120


def _figure(**kwargs):
    """A new figure outside pyplot, so no global backend or figure state is touched."""
    from matplotlib.figure import Figure

    # A bare Figure renders with the Agg canvas on savefig, which works on headless machines.
    return Figure(**kwargs)


def _save(fig, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def _labels(records: Sequence[dict]) -> dict[str, str]:
    """Strategy name to display label (the label of its first record), ordered by label."""
    labels: dict[str, str] = {}
    for record in records:
        labels.setdefault(record["strategy"], record.get("label") or record["strategy"])
    return dict(sorted(labels.items(), key=lambda kv: (kv[1], kv[0])))


#: One fixed colour per strategy, the same in every report, far apart in hue (Table 1 from ColorBrewer's
#: Dark2, the others from a qualitative palette); baselines are black or grey and dashed.
_STRATEGY_COLORS = {
    "1-image-iu": "#1b9e77", "2-sa-fcn": "#e7298a", "3-sa": "#7570b3", "4-iu": "#e6ab02",
    "5-iu-id": "#66a61e", "6-cluster-equal": "#a6761d", "7-focannot": "#d95f02",
}
_PALETTE = ("#1f77b4", "#d62728", "#17becf", "#9467bd", "#8c564b", "#bcbd22", "#e377c2", "#2ca02c")
_BASELINES = {"random-patch": ("black", "--"), "random-image": ("#7f7f7f", "--"),
              "random-foreground": ("#7f7f7f", ":"), "random-predicted-foreground": ("#4d4d4d", "-.")}
_MARKERS = "osD^v<>ph*"


def _style(strategy: str) -> dict:
    """Colour, line style and marker of a strategy, fixed across reports."""
    if strategy in _BASELINES:
        color, linestyle = _BASELINES[strategy]
        return {"color": color, "linestyle": linestyle, "marker": "x"}
    import zlib

    code = zlib.crc32(strategy.encode())
    return {"color": _STRATEGY_COLORS.get(strategy, _PALETTE[code % len(_PALETTE)]), "linestyle": "-",
            "marker": _MARKERS[code % len(_MARKERS)]}


def plot_learning_curves(
    records: Sequence[dict],
    path: str | os.PathLike,
    *,
    metric: str = "dice",
    full_supervision: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Path:
    """Fig. 4: a metric against annotation cost, one line per strategy.

    Each thick line is the mean over seeds, drawn where every seed of the strategy is defined; each
    seed's own curve is a thin line of the same colour under it (with three seeds a 95 % band would
    cover nearly everything). Baselines are black or grey and dashed, every strategy keeps its colour
    and marker across reports, the legend sits outside the plot, the y axis holds every seed's curve,
    and a horizontal line marks full supervision when its value of ``metric`` is known.

    Parameters
    ----------
    records : sequence of dict
        Round records of all runs.
    path : str or os.PathLike
        Where the PNG is written.
    metric : str, default="dice"
        Record key on the y axis (``"dice"``, ``"voe"``, ``"object_f1"``, ``"object_dice"``).
    full_supervision : mapping, optional
        Full-supervision metrics; ``full_supervision[metric]`` is drawn if present.
    title : str, optional
        Figure title; default names the metric.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not records:
        raise ValueError("plot_learning_curves: no records to plot.")
    fig = _figure(figsize=(8.8, 4.6))
    ax = fig.subplots()
    means = []
    runs = _runs(records)
    for strategy, label in _labels(records).items():
        c = curve(records, strategy, metric=metric)
        style = _style(strategy)
        for run in runs.get(strategy, {}).values():
            xs = [100 * r["cost"] for r in run if r.get(metric) is not None]
            ys = [float(r[metric]) for r in run if r.get(metric) is not None]
            ax.plot(xs, ys, color=style["color"], linestyle=style["linestyle"], linewidth=0.6, alpha=0.35)
            means.extend(ys)
        x = 100 * c.grid[c.complete]
        if len(x):
            ax.plot(x, c.mean[c.complete], label=label, markersize=4, linewidth=1.8,
                    markevery=max(1, len(x) // 15), **style)
    name = METRIC_NAMES.get(metric, metric)
    if full_supervision and full_supervision.get(metric) is not None:
        value = float(full_supervision[metric])
        means.append(value)
        ax.axhline(value, color="#555555", linestyle=(0, (1, 1)), linewidth=1.2,
                   label=f"full supervision ({value:.3f})")
    if means:
        # Every seed's curve inside the frame: nothing is cut.
        low, high = min(means), max(means)
        pad = max(0.01, 0.05 * (high - low))
        ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad) if high <= 1.0 else high + pad)
    n_seeds = sorted({len(by_seed) for by_seed in _runs(records).values()})
    seeds_text = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}–{n_seeds[-1]}"
    ax.set_xlabel("annotation cost (% of training pixels revealed)")
    ax.set_ylabel(name)
    ax.set_title(title or f"{name} against annotation cost (thick: mean over {seeds_text} seed(s); thin: each seed)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


def plot_cluster_criteria(records: Sequence[dict], path: str | os.PathLike) -> Path | None:
    """Fig. 5: mean cluster uncertainty (CU) and cluster diversity (CD) per round against cost.

    One panel per criterion, one line per strategy that records it, against the cost at which each
    round's query was made (mean over seeds), with one legend outside both panels.

    Parameters
    ----------
    records : sequence of dict
        Round records of all runs; rounds where ``cu`` / ``cd`` is ``None`` are left out.
    path : str or os.PathLike
        Where the PNG is written.

    Returns
    -------
    pathlib.Path or None
        ``path``, or None (nothing written) if no strategy records CU or CD.
    """
    labels = _labels(records)
    has = {
        metric: [s for s in labels if any(r["strategy"] == s and r.get(metric) is not None for r in records)]
        for metric in ("cu", "cd")
    }
    strategies = [s for s in labels if s in has["cu"] or s in has["cd"]]
    if not strategies:
        return None
    fig = _figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharex=True)
    handles = {}
    for ax, metric in zip(axes, ("cu", "cd")):
        for strategy in has[metric]:
            c = curve(records, strategy, metric=metric)
            x = 100 * c.grid[c.complete]
            if len(x):
                (line,) = ax.plot(x, c.mean[c.complete], markersize=3, linewidth=1.4,
                                  markevery=max(1, len(x) // 12), **_style(strategy))
                handles.setdefault(labels[strategy], line)
        ax.set_xlabel("cost after the round (% of pixels revealed)")
        ax.set_ylabel(f"mean {METRIC_NAMES[metric]}")
        ax.set_title(f"Mean {METRIC_NAMES[metric]} per round (mean over seeds)", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if not has[metric]:
            ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", va="center")
    # One legend for both panels, outside them: it covers no curve.
    fig.legend(list(handles.values()), list(handles), fontsize="small", loc="upper left",
               bbox_to_anchor=(1.0, 0.95), frameon=False)
    return _save(fig, path)


#: Colours of the query rounds, first to last. H&E stains purple (haematoxylin) and pink (eosin), so
#: every colour is bright and far from both in hue: cyan, green, yellow, orange (viridis' dark blues and
#: purples vanish into the stain).
_ROUND_ANCHORS = ("#00d5ff", "#2ee66b", "#ffe11a", "#ff8c1a")
#: Under the revealed area the stain is mostly turned grey before the round's colour is laid over it, so
#: the tint keeps its own hue (a purple base would pull cyan to blue and orange to pink) while the
#: tissue's light and dark still show through.
_DESATURATE = 0.7
_TINT = 0.5
#: Ground truth: a thick dark-blue line on a white halo reads on dark nuclei, pink stroma and white lumen.
_TRUTH_COLOR = "#08306b"
#: A colour bar with more rounds than this labels a subset of them (still whole rounds).
_MAX_ROUND_TICKS = 15


def _round_colors(n: int) -> np.ndarray:
    """RGB colours of ``n`` consecutive rounds, ndarray of shape (n, 3) in [0, 1]."""
    from matplotlib.colors import LinearSegmentedColormap

    ramp = LinearSegmentedColormap.from_list("rounds", _ROUND_ANCHORS)
    return ramp(np.linspace(0.0, 1.0, n) if n > 1 else [0.0])[:, :3]


def draw_queries(
    image: np.ndarray,
    items: Iterable[Mapping],
    path: str | os.PathLike,
    *,
    rounds: Iterable[int] | None = None,
    mask: np.ndarray | None = None,
    title: str | None = None,
    round_range: tuple[int, int] | None = None,
) -> Path:
    """Fig. 6: an image with the area its queried patches revealed, coloured by query round.

    Overlapping patches (rho = 0.5) make rectangles unreadable, so the revealed area is drawn
    instead: each pixel tinted by the round that first revealed it (one colour per round, from cyan
    for the first to orange for the last, none of them near the stain's purple or pink), the union
    outlined in black, the ground truth a thick dark-blue line on a white halo.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8
        The training image.
    items : iterable of mapping
        Queried items of this image, as in ``queries.json`` plus a ``"round"`` key:
        ``{"y", "x", "size", "round"}``; ``size`` None (an image-level query) outlines the whole
        image. Patches reaching past the border (mirror padding) are clipped to the image.
    path : str or os.PathLike
        Where the PNG is written.
    rounds : iterable of int, optional
        Only items of these rounds are drawn; default all.
    mask : ndarray of shape (H, W), optional
        Instance or class mask; the outlines of its foreground are drawn in dark blue.
    title : str, optional
        Figure title.
    round_range : (int, int), optional
        The rounds the colour scale spans, so that several figures share one scale (default: the
        rounds drawn); widened to any drawn round outside it. The colour bar has one colour and one
        whole-number tick per round.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If ``image`` is not (H, W, 3) uint8, ``mask`` does not match it, or an item misses a key.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"The 'image' parameter of draw_queries must be an (H, W, 3) uint8 array. "
            f"Got shape {image.shape} and dtype {image.dtype} instead."
        )
    if mask is not None and np.shape(mask) != image.shape[:2]:
        raise ValueError(
            f"The 'mask' parameter of draw_queries must have the image's shape {image.shape[:2]}. "
            f"Got {np.shape(mask)} instead."
        )
    items = list(items)
    missing = [i for i, item in enumerate(items) if not {"y", "x", "size", "round"} <= set(item)]
    if missing:
        raise ValueError(
            f"draw_queries: item(s) {missing[:5]} miss one of the keys 'y', 'x', 'size', 'round'."
        )
    if rounds is not None:
        wanted = set(rounds)
        items = [item for item in items if item["round"] in wanted]

    from matplotlib import patheffects
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    h, w = image.shape[:2]
    fig = _figure(figsize=(7.0, 7.0 * h / w + 0.9))
    ax = fig.subplots()
    first = np.full((h, w), np.inf)
    for item in sorted(items, key=lambda i: i["round"]):
        if item["size"] is None:
            region = (slice(0, h), slice(0, w))
        else:
            y, x, size = int(item["y"]), int(item["x"]), int(item["size"])
            region = (slice(max(y, 0), max(y + size, 0)), slice(max(x, 0), max(x + size, 0)))
        first[region] = np.minimum(first[region], item["round"])
    revealed = np.isfinite(first)
    picture = image / 255.0
    handles = []
    drawn_rounds = sorted({int(item["round"]) for item in items})
    if drawn_rounds:
        lo, hi = round_range or (drawn_rounds[0], drawn_rounds[-1])
        lo, hi = min(int(lo), drawn_rounds[0]), max(int(hi), drawn_rounds[-1])
        colors = _round_colors(hi - lo + 1)
        grey = picture @ np.array([0.299, 0.587, 0.114])
        under = (1 - _DESATURATE) * picture[revealed] + _DESATURATE * grey[revealed, None]
        tint = colors[first[revealed].astype(int) - lo]
        picture[revealed] = (1 - _TINT) * under + _TINT * tint
        norm = BoundaryNorm(np.arange(lo - 0.5, hi + 1.0), hi - lo + 1)
        # In axes coordinates the bar follows the image's box, so it is exactly as tall as the image.
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=ListedColormap(colors)),
                           cax=ax.inset_axes([1.02, 0.0, 0.035, 1.0]))
        if hi - lo + 1 <= _MAX_ROUND_TICKS:
            bar.set_ticks(np.arange(lo, hi + 1))
        else:
            bar.ax.yaxis.set_major_locator(MaxNLocator(nbins=_MAX_ROUND_TICKS, integer=True))
        bar.ax.minorticks_off()
        bar.set_label("round that first revealed the pixel")
    ax.imshow(picture, interpolation="nearest")
    if revealed.any():
        ax.contour(revealed, levels=[0.5], colors="black", linewidths=1.6)
        handles.append(Line2D([], [], color="black", linewidth=1.6, label="queried area"))
    if mask is not None:
        halo = [patheffects.withStroke(linewidth=4.5, foreground="white")]
        truth = ax.contour(np.asarray(mask) > 0, levels=[0.5], colors=_TRUTH_COLOR, linewidths=2.2)
        truth.set_path_effects(halo)
        handles.append(Line2D([], [], color=_TRUTH_COLOR, linewidth=2.2, path_effects=halo, label="ground truth"))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title(title or f"{len(items)} queried patch(es)", fontsize=10)
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles),
                  frameon=False, fontsize="small")
    return _save(fig, path)


def plot_paired_differences(comparison: Sequence[dict], path: str | os.PathLike, *, baseline_label: str) -> Path | None:
    """Mean paired difference to the baseline (AUBC and Dice at each budget) with 95 % intervals.

    One row of points per strategy; an interval that crosses the zero line is no detectable
    difference. Returns None when there is nothing to compare.
    """
    rows = [c for c in comparison if c["aubc"]["n"] >= 1]
    if not rows:
        return None
    columns = [("AUBC", lambda c: c["aubc"])] + [
        (f"Dice @ {100 * d['budget']:g} %", lambda c, j=j: c["dice_at"][j]) for j, d in enumerate(rows[0]["dice_at"])
    ]
    fig = _figure(figsize=(3.0 * len(columns), 0.5 * len(rows) + 1.6))
    axes = fig.subplots(1, len(columns), sharey=True, squeeze=False)[0]
    y = np.arange(len(rows))[::-1]
    for ax, (title, get) in zip(axes, columns):
        for yi, row in zip(y, rows):
            iv = get(row)
            if not np.isfinite(iv["mean"]):
                continue
            color = {"better": "tab:green", "worse": "tab:red"}.get(
                "better" if iv["n"] >= 2 and iv["low"] > 0 else "worse" if iv["n"] >= 2 and iv["high"] < 0 else "",
                "tab:gray")
            if np.isfinite(iv["low"]):
                ax.plot([iv["low"], iv["high"]], [yi, yi], color=color, linewidth=2)
            ax.plot([iv["mean"]], [yi], marker="o", color=color)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"difference to {baseline_label}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([f"{r['label']} (n={r['aubc']['n']})" for r in rows])
    fig.suptitle(f"Paired by seed: strategy minus {baseline_label}, mean and 95 % interval\n"
                 "green: interval above 0 (better), red: below 0 (worse), grey: crosses 0 (no detectable "
                 "difference)", fontsize=9)
    return _save(fig, path)
