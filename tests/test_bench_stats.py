import math

import numpy as np
import pytest

from focal_al.bench.report import _runs, render_report, summarize
from focal_al.bench.stats import aubc_contrast, curve_noise, mean_interval, paired_comparison, verdict


def run(strategy, seed, dice, costs=(0.025, 0.05, 0.1, 0.2, 0.3)):
    return [{"strategy": strategy, "label": strategy, "seed": seed, "round": r, "cost": c, "dice": d,
             "voe": 1 - d, "object_f1": d, "object_dice": d, "cu": None, "cd": None, "n_labelled": r}
            for r, (c, d) in enumerate(zip(costs, dice))]


BASE = [0.5, 0.6, 0.7, 0.75, 0.8]


def records(offsets, noise=(0.0, 0.01, -0.01)):
    """Runs of random patches and of each strategy, 3 seeds; a strategy's offset applies from round 1
    on: round 0 trains on the seed's initial set before any query, the same for every strategy."""
    out = []
    for seed, eps in enumerate(noise):
        out += run("random-patch", seed, [v + eps for v in BASE])
        for name, off in offsets.items():
            out += run(name, seed, [v + eps + (off(seed) if r else 0.0) for r, v in enumerate(BASE)])
    return out


def test_mean_interval_matches_a_t_interval():
    iv = mean_interval([0.1, 0.2, 0.3])
    assert iv["mean"] == pytest.approx(0.2) and iv["n"] == 3
    assert iv["high"] - iv["mean"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    one = mean_interval([0.1])
    assert one["n"] == 1 and math.isnan(one["low"]) and verdict(one) == "too few seeds"


def test_paired_comparison_verdicts():
    recs = records({"good": lambda s: 0.05 + 0.002 * s, "bad": lambda s: -0.04 - 0.001 * s,
                    "same": lambda s: (-0.01, 0.0, 0.01)[s]})
    by = {c["strategy"]: c for c in paired_comparison(recs)}
    assert set(by) == {"good", "bad", "same"}
    # Mean offset 0.052 from 5 % cost on, rising linearly from 0 over the first step (2.5-5 %).
    assert by["good"]["verdict"] == "better"
    assert by["good"]["aubc"]["mean"] == pytest.approx((0.025 * 0.026 + 0.25 * 0.052) / 0.275)
    assert by["bad"]["verdict"] == "worse"
    assert by["same"]["verdict"] == "no detectable difference"
    assert [d["budget"] for d in by["good"]["dice_at"]] == [0.1, 0.2, 0.3]
    assert by["good"]["dice_at"][1]["mean"] == pytest.approx(0.052)
    # The seed noise is shared by both strategies of a seed: pairing removes it.
    assert by["good"]["aubc"]["high"] - by["good"]["aubc"]["low"] < 0.02


def test_aubc_contrast_cancels_what_both_networks_share():
    # Two "folders": on the second network every curve is 0.03 lower (a network effect), and there
    # the strategy is 0.02 above its own random patches; on the first, the reference is 0.01 above.
    noise = (0.0, 0.01, -0.01)
    first = records({"ref": lambda s: 0.01}, noise)
    second = [{**r, "dice": r["dice"] - 0.03} for r in records({"new": lambda s: 0.02 + 0.001 * s}, noise)]
    runs = {"ref": _runs(first)["ref"], "random": _runs(first)["random-patch"],
            "new": _runs(second)["new"], "random-2": _runs(second)["random-patch"]}
    shift = (0.025 * 0.5 + 0.25) / 0.275  # an offset from round 1 on, over 2.5-30 % cost
    direct = aubc_contrast(runs, {"new": 1, "ref": -1})
    assert direct["seeds"] == [0, 1, 2] and direct["aubc_range"] == [0.025, 0.3]
    assert direct["interval"]["mean"] == pytest.approx((0.021 - 0.01) * shift - 0.03)
    both = aubc_contrast(runs, {"new": 1, "random-2": -1, "ref": -1, "random": 1})
    assert both["per_seed"] == pytest.approx([(0.02 + 0.001 * s - 0.01) * shift for s in range(3)])
    assert both["interval"]["low"] < both["interval"]["mean"] < both["interval"]["high"]
    with pytest.raises(ValueError, match="no runs for the terms \\['other'\\]"):
        aubc_contrast(runs, {"new": 1, "other": -1})


def test_budgets_beyond_a_run_are_not_compared():
    recs = run("random-patch", 0, BASE) + run("short", 0, BASE[:3], costs=(0.025, 0.05, 0.1))
    recs += run("random-patch", 1, BASE) + run("short", 1, BASE[:3], costs=(0.025, 0.05, 0.1))
    (c,) = paired_comparison(recs)
    assert np.isfinite(c["dice_at"][0]["mean"]) and not np.isfinite(c["dice_at"][1]["mean"])
    assert paired_comparison(run("iu", 0, BASE)) == []  # no baseline, nothing to compare


def test_curve_noise_measures_falls_and_seed_spread():
    recs = run("random-patch", 0, [0.5, 0.7, 0.65, 0.8, 0.8]) + run("random-patch", 1, [0.5, 0.6, 0.7, 0.8, 0.9])
    noise = curve_noise(recs)
    assert noise["largest_fall"] == pytest.approx(0.05) and "seed 0, round 1 -> 2" in noise["largest_fall_at"]
    assert noise["mean_fall"] == pytest.approx(0.05 / 8)
    assert noise["seed_std"]["random-patch"][0.3] == pytest.approx(np.std([0.8, 0.9], ddof=1))


def test_report_puts_the_verdict_first():
    recs = records({"good": lambda s: 0.05})
    text = render_report(summarize(recs), config=None, full_supervision=None, figures=None,
                         comparison=paired_comparison(recs), noise=curve_noise(recs))
    assert text.index("Paired comparison with random-patch") < text.index("## Results")
    assert "| good | **better** | 3 | +0.048 [" in text and "## Curve noise" in text
    assert "†" not in text  # every pair shares its round 0


def test_a_ceiling_below_the_curves_is_flagged_not_used():
    recs = records({"good": lambda s: 0.05})
    text = render_report(summarize(recs, full_supervision={"dice": 0.7}), config=None,
                         full_supervision={"dice": 0.7}, figures=None)
    assert "lies below the curves" in text and "Cost to 95 % FS" not in text
    assert "not reached" not in text and "Targets: 95 %" not in text


def test_unfinished_note_only_for_runs_short_of_the_budget():
    done = run("random-patch", 0, BASE) + run("iu", 0, [0.5, 0.6, 0.7, 0.76, 0.81], costs=(0.025, 0.05, 0.1, 0.2, 0.31))
    text = render_report(summarize(done), config={"budget": 0.3}, full_supervision=None, figures=None)
    assert "Not at the 30 % budget" not in text and "some may be unfinished" not in text
    short = done + run("iu-id", 0, BASE[:3], costs=(0.025, 0.05, 0.1))
    text = render_report(summarize(short), config={"budget": 0.3}, full_supervision=None, figures=None)
    assert "Not at the 30 % budget yet (unfinished, or the pool ran out): iu-id;" in text


def test_curve_noise_per_strategy_in_the_report():
    recs = run("random-patch", 0, [0.5, 0.7, 0.65, 0.8, 0.8]) + run("random-patch", 1, [0.5, 0.6, 0.7, 0.8, 0.9])
    recs += run("iu", 0, [0.5, 0.8, 0.6, 0.8, 0.8])
    noise = curve_noise(recs)
    assert noise["per_strategy"]["random-patch"]["largest_fall"] == pytest.approx(0.05)
    assert noise["per_strategy"]["iu"]["mean_fall"] == pytest.approx(0.2 / 4)
    assert noise["largest_fall"] == pytest.approx(0.2) and noise["largest_fall_at"] == "iu seed 0, round 1 -> 2"
    text = render_report(summarize(recs), config=None, full_supervision=None, figures=None,
                         comparison=paired_comparison(recs), noise=noise)
    assert "| iu | 0.0500 | 0.200 (seed 0, round 1 -> 2) | – | – | – |" in text
    assert "| random-patch | 0.006" in text and "| 0.050 (seed 0, round 1 -> 2) | 0.035 |" in text


def test_report_names_each_pairs_cost_range_when_they_differ():
    recs = records({"good": lambda s: 0.05})
    recs += [r for s in range(3) for r in run("late", s, [v + 0.01 for v in BASE[1:]], costs=(0.05, 0.1, 0.2, 0.3))]
    comparison = paired_comparison(recs)
    text = render_report(summarize(recs), config=None, full_supervision=None, figures=None,
                         comparison=comparison, noise=None)
    assert "covers: 2.5–30.0 % for good; 5.0–30.0 % for late)" in text
    same = paired_comparison(records({"good": lambda s: 0.05, "bad": lambda s: -0.05}))
    text = render_report(summarize(recs), config=None, full_supervision=None, figures=None,
                         comparison=same, noise=None)
    assert "covers: 2.5–30.0 %)" in text


def test_pairs_whose_round_0_differs_are_flagged():
    recs = records({"good": lambda s: 0.05})
    # Seed 2 of "good" computed elsewhere: its round 0 (same initial set, same network) came out otherwise.
    moved = [dict(r, dice=r["dice"] - 0.014) if (r["strategy"], r["seed"], r["round"]) == ("good", 2, 0) else r
             for r in recs]
    (c,) = paired_comparison(moved)
    assert [d["seed"] for d in c["round0_differs"]] == [2] and not c["round0_differs"][0]["initial_set_differs"]
    text = render_report(summarize(moved), config=None, full_supervision=None, figures=None, comparison=[c],
                         noise=None)
    assert "| good | **better** † | 3 |" in text
    assert "† good, seed 2: round 0 trains the same network" in text and "seed 2: 0.4760 vs 0.4900" in text
    # Suggestive Annotation with the FCN trains another network: its round 0 may differ.
    fcn = [dict(r, strategy="2-sa-fcn") if r["strategy"] == "good" else r for r in moved]
    assert paired_comparison(fcn)[0]["round0_differs"] == []
    # Another initial set is flagged whatever the network.
    other = [dict(r, cost=0.03) if (r["strategy"], r["round"]) == ("2-sa-fcn", 0) else r for r in fcn]
    (c,) = paired_comparison(other)
    assert [d["seed"] for d in c["round0_differs"]] == [0, 1, 2] and c["round0_differs"][0]["initial_set_differs"]
    assert "its initial labelled set is not that of the random-patch run of the same seed (round 0 cost 3.00 % vs 2.50 %" in render_report(
        summarize(other), config=None, full_supervision=None, figures=None, comparison=[c], noise=None)
