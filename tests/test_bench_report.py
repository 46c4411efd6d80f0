"""Tests of the bench records, report and figures on small hand-made records."""
import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from focal_al.bench import figures
from focal_al.bench.records import (
    atomic_write_json,
    atomic_write_text,
    load_queries,
    load_records,
    write_records,
)
from focal_al.bench.report import aubc, cost_to_reach, curve, render_report, summarize, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_run(strategy, seed, costs, dice, *, label=None, cu=None):
    """Round records of one run; the other metrics are derived from Dice."""
    return [
        {
            "strategy": strategy,
            "label": label or strategy,
            "seed": seed,
            "round": r,
            "cost": c,
            "n_revealed_pixels": int(c * 10_000),
            "n_labelled": r + 1,
            "dice": d,
            "voe": 1.0 - d,
            "object_f1": d - 0.1,
            "object_dice": d - 0.05,
            "cu": None if cu is None else cu[r],
            "cd": None if cu is None else cu[r] / 2,
            "train_seconds": 1.0,
            "query_seconds": 0.1,
            "eval_seconds": 0.2,
        }
        for r, (c, d) in enumerate(zip(costs, dice))
    ]


def write_run(out_dir, records):
    run_dir = out_dir / "runs" / f"{records[0]['strategy']}-seed{records[0]['seed']}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "rounds.json").write_text(json.dumps(records))
    return run_dir


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_SIGNATURE


# --- report: pure functions -------------------------------------------------------------------


def test_aubc_hand_computed():
    costs, values = [0.1, 0.2, 0.4], [0.5, 0.7, 0.9]
    # Trapezoids 0.1 * 0.6 + 0.2 * 0.8 = 0.22 over a width of 0.3.
    assert aubc(costs, values, max_cost=0.4) == pytest.approx(0.22 / 0.3)
    # Cut at 0.3, where the curve is 0.8: 0.1 * 0.6 + 0.1 * 0.75 = 0.135 over 0.2.
    assert aubc(costs, values, max_cost=0.3) == pytest.approx(0.675)
    # From 0.15 (value 0.6) to 0.2: mean of 0.6 and 0.7.
    assert aubc(costs, values, min_cost=0.15, max_cost=0.2) == pytest.approx(0.65)
    # Zero-width range: the value there.
    assert aubc([0.1], [0.5], max_cost=0.1) == pytest.approx(0.5)


def test_aubc_refuses_to_extrapolate():
    with pytest.raises(ValueError, match="not extrapolated"):
        aubc([0.1, 0.2], [0.5, 0.6], max_cost=0.3)
    with pytest.raises(ValueError, match="non-decreasing"):
        aubc([0.2, 0.1], [0.5, 0.6], max_cost=0.2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=8), st.data())
def test_aubc_is_a_mean_value(values, data):
    costs = np.cumsum(data.draw(st.lists(st.floats(0.01, 0.1), min_size=len(values), max_size=len(values))))
    result = aubc(costs, values, max_cost=costs[-1])
    assert min(values) - 1e-9 <= result <= max(values) + 1e-9
    assert aubc(costs, [0.7] * len(values), max_cost=costs[-1]) == pytest.approx(0.7)


def test_cost_to_reach_interpolates_between_rounds():
    costs, values = [0.1, 0.2, 0.4], [0.5, 0.7, 0.9]
    assert cost_to_reach(costs, values, 0.8) == pytest.approx(0.3)
    assert cost_to_reach(costs, values, 0.7) == pytest.approx(0.2)
    assert cost_to_reach(costs, values, 0.4) == pytest.approx(0.1)
    assert cost_to_reach(costs, values, 0.95) is None
    # The first crossing counts, even if the curve dips below afterwards.
    assert cost_to_reach([0.1, 0.2, 0.3, 0.4], [0.5, 0.9, 0.6, 0.95], 0.7) == pytest.approx(0.15)


def test_curve_mean_and_spread_over_seeds():
    records = make_run("a", 0, [0.1, 0.2], [0.5, 0.7]) + make_run("a", 1, [0.1, 0.3], [0.7, 0.9])
    c = curve(records, "a")
    np.testing.assert_allclose(c.grid, [0.1, 0.2, 0.3])
    # Seed 0 is undefined past its last cost 0.2 (no extrapolation); seed 1 is 0.8 at 0.2.
    np.testing.assert_allclose(c.mean, [0.6, 0.75, 0.9])
    np.testing.assert_allclose(c.std[:2], [math.sqrt(0.02), math.sqrt(0.005)])
    assert math.isnan(c.std[2])
    np.testing.assert_allclose(c.min, [0.5, 0.7, 0.9])
    np.testing.assert_allclose(c.max, [0.7, 0.8, 0.9])
    np.testing.assert_array_equal(c.n_seeds, [2, 2, 1])
    np.testing.assert_array_equal(c.complete, [True, True, False])
    assert c.seeds == (0, 1)

    at = curve(records, "a", grid=[0.05, 0.15])
    assert math.isnan(at.mean[0])
    assert at.mean[1] == pytest.approx((0.6 + 0.75) / 2)


def test_curve_errors_name_what_is_wrong():
    records = make_run("a", 0, [0.1, 0.2], [0.5, 0.7])
    with pytest.raises(ValueError, match="No records of strategy 'b'.*a"):
        curve(records, "b")
    with pytest.raises(ValueError, match="Unknown metric 'accuracy'"):
        curve(records, "a", metric="accuracy")
    with pytest.raises(ValueError, match="decreases at round 1"):
        curve(make_run("a", 0, [0.2, 0.1], [0.5, 0.7]), "a")


def test_curve_skips_null_cluster_criteria():
    records = make_run("a", 0, [0.1, 0.2], [0.5, 0.7])
    assert np.all(np.isnan(curve(records, "a", metric="cu").mean))


@pytest.fixture
def two_strategies():
    return (
        make_run("1-image-iu", 0, [0.1, 0.2, 0.3], [0.5, 0.6, 0.7], label="1 IU")
        + make_run("focannot", 0, [0.1, 0.2, 0.3], [0.5, 0.8, 0.9], label="7 FocAnnot", cu=[0.3, 0.5, 0.4])
        + make_run("focannot", 1, [0.1, 0.2, 0.3], [0.5, 0.8, 0.9], label="7 FocAnnot", cu=[0.2, 0.4, 0.3])
    )


def test_summarize_rows(two_strategies):
    rows = summarize(two_strategies, full_supervision={"dice": 0.9}, budgets=(0.15, 0.35))
    iu, focannot = rows
    assert (iu["label"], focannot["label"]) == ("1 IU", "7 FocAnnot")
    assert (iu["n_seeds"], focannot["n_seeds"]) == (1, 2)
    assert focannot["aubc_range"] == [0.1, 0.3]
    assert focannot["aubc"] == pytest.approx((0.1 * 1.3 + 0.1 * 1.7) / 2 / 0.2)
    assert focannot["aubc_std"] == pytest.approx(0.0)
    assert math.isnan(iu["aubc_std"])
    assert focannot["dice_at"][0] == {"budget": 0.15, "mean": pytest.approx(0.65), "std": pytest.approx(0.0)}
    assert math.isnan(focannot["dice_at"][1]["mean"])  # 35 % is past every run's budget
    # 95 % of 0.9 = 0.855, crossed between 0.2 (0.8) and 0.3 (0.9); within 1 point: 0.89.
    assert focannot["cost_to_95_fs"] == pytest.approx(0.255)
    assert focannot["cost_within_1pt_fs"] == pytest.approx(0.29)
    assert iu["cost_to_95_fs"] is None
    # Target 0.7 = image-iu's final Dice, reached by it at 0.3 and by FocAnnot at 0.1 + 0.1 * 2/3.
    assert iu["cost_saved_vs_reference"] == pytest.approx(0.0)
    assert focannot["cost_saved_vs_reference"] == pytest.approx(1 - (0.1 + 0.2 / 3) / 0.3)
    assert "one seed only: no spread over seeds" in iu["notes"]
    assert focannot["final_dice"] == pytest.approx(0.9)


def test_summarize_without_reference_or_full_supervision():
    rows = summarize(make_run("a", 0, [0.1], [0.5]))
    (row,) = rows
    assert row["aubc"] == pytest.approx(0.5)
    assert row["cost_to_95_fs"] is None and row["cost_saved_vs_reference"] is None
    with pytest.raises(ValueError, match="'budgets'.*1.5"):
        summarize(make_run("a", 0, [0.1], [0.5]), budgets=(1.5,))


def test_render_report_contains_the_table(two_strategies):
    rows = summarize(two_strategies, full_supervision={"dice": 0.9})
    text = render_report(
        rows,
        config={"split": "mixed", "versions": {"focal-al": "0.1.0", "torch": "2.13.0", "numpy": "2.0"}},
        full_supervision={"dice": 0.9},
        figures={"Fig. 4": "figures/learning-curves-dice.png"},
    )
    assert "| Strategy | Seeds | AUBC (Dice, 10.0–30.0 %) | Dice @ 5 % |" in text
    assert "| 7 FocAnnot | 2 | 0.750 ± 0.000 |" in text
    assert "| 25.5 % | 29.0 % | 44.4 % |" in text
    assert "![Fig. 4](figures/learning-curves-dice.png)" in text
    assert "- torch: 2.13.0" in text
    assert "1 IU: one seed only: no spread over seeds." in text
    assert "Cost saved vs 1 IU" in text  # no random patches here: the paper's image-level reference


def test_render_report_without_reference_has_no_cost_saved_column():
    rows = summarize(make_run("a", 0, [0.1, 0.2], [0.5, 0.6]) + make_run("7", 0, [0.1, 0.2], [0.5, 0.7]))
    text = render_report(rows, config={"budget": 0.2}, full_supervision={"dice": 0.9}, figures={})
    assert "Cost saved" not in text.split("## Results")[1].split("\n\n")[1]  # not in the table
    assert "No random-patch or 1-image-iu runs: cost saved against a reference is not reported." in text


def test_the_results_table_measures_against_random_patches_and_drops_targets_nobody_reached():
    records = (make_run("random-patch", 0, [0.1, 0.2], [0.5, 0.6], label="Random patches")
               + make_run("1-image-iu", 0, [0.1, 0.2], [0.5, 0.55], label="1 IU")
               + make_run("7", 0, [0.1, 0.2], [0.55, 0.7], label="7 FocAnnot"))
    rows = summarize(records, full_supervision={"dice": 0.9})
    # The headline's baseline is the reference: FocAnnot reaches random patches' final 0.6 at 0.1 + 0.1/3.
    assert {r["strategy"]: r["reference"] for r in rows} == dict.fromkeys(["random-patch", "1-image-iu", "7"],
                                                                           "random-patch")
    assert next(r for r in rows if r["strategy"] == "7")["cost_saved_vs_reference"] == pytest.approx(1 - (0.4 / 3) / 0.2)
    text = render_report(rows, config={"budget": 0.2}, full_supervision={"dice": 0.9}, figures={})
    table = text.split("## Results")[1].split("\n\n")[1]
    assert "Cost saved vs Random patches" in table
    assert "Cost to 95 % FS" not in table.split("\n")[0]  # nobody reached 0.855: no column of "not reached"
    assert "no strategy's mean curve reached either within the budget" in text


# --- records ----------------------------------------------------------------------------------


def test_load_and_write_records(tmp_path, two_strategies):
    for seed_run in (two_strategies[:3], two_strategies[3:6], two_strategies[6:]):
        write_run(tmp_path, seed_run[::-1])
    partial = dict(two_strategies[0], strategy="0-bare", label=None)
    del partial["cu"], partial["cd"], partial["label"]
    write_run(tmp_path, [partial])
    records = load_records(tmp_path)
    assert [(r["strategy"], r["seed"], r["round"]) for r in records][:4] == [
        ("0-bare", 0, 0), ("1-image-iu", 0, 0), ("1-image-iu", 0, 1), ("1-image-iu", 0, 2)
    ]
    assert records[0]["label"] == "0-bare" and records[0]["cu"] is None
    csv_path, json_path = write_records(tmp_path, records)
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("strategy,label,seed,round,cost,")
    assert lines[1].startswith("0-bare,0-bare,0,0,0.1,")
    assert len(lines) == 1 + len(records)
    assert json.loads(json_path.read_text()) == records


def test_load_records_empty_and_missing_dir(tmp_path):
    assert load_records(tmp_path) == []
    with pytest.raises(NotADirectoryError, match="nowhere"):
        load_records(tmp_path / "nowhere")


def test_malformed_rounds_json_names_the_file(tmp_path):
    run_dir = tmp_path / "runs" / "a-seed0"
    run_dir.mkdir(parents=True)
    path = run_dir / "rounds.json"
    path.write_text('[{"strategy": "a", ')
    with pytest.raises(ValueError, match=f"{path}.*not valid JSON"):
        load_records(tmp_path)
    record = make_run("a", 0, [0.1], [0.5])[0]
    del record["dice"]
    path.write_text(json.dumps([record, dict(record, round=1, cost=1.5)]))
    with pytest.raises(ValueError) as err:
        load_records(tmp_path)
    message = str(err.value)
    assert str(path) in message and "missing required key(s) dice" in message and "'cost' must be" in message


def test_same_run_in_two_folders_is_refused(tmp_path):
    records = make_run("a", 0, [0.1], [0.5])
    write_run(tmp_path, records)
    (tmp_path / "runs" / "copy").mkdir()
    (tmp_path / "runs" / "copy" / "rounds.json").write_text(json.dumps(records))
    with pytest.raises(ValueError, match="both hold strategy 'a' with seed 0"):
        load_records(tmp_path)


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    atomic_write_json(tmp_path / "b.json", {"x": np.float32(0.5), "n": np.int64(3), "v": np.arange(2)})
    assert (tmp_path / "a.txt").read_text() == "two"
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 0.5, "n": 3, "v": [0, 1]}
    with pytest.raises(ValueError, match="NaN or infinity"):
        atomic_write_json(tmp_path / "c.json", {"dice": float("nan")})

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_text(tmp_path / "a.txt", "three")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]
    assert (tmp_path / "a.txt").read_text() == "two"


def test_load_queries(tmp_path):
    run_dir = write_run(tmp_path, make_run("patch-iu", 3, [0.1], [0.5]))
    queries = [{"round": 1, "level": "patch", "items": [{"image": "a", "y": 0, "x": 8, "size": 16}]}]
    (run_dir / "queries.json").write_text(json.dumps(queries))
    assert load_queries(tmp_path) == {("patch-iu", 3): queries}
    (run_dir / "queries.json").write_text(json.dumps([{"round": 1}]))
    with pytest.raises(ValueError, match="queries.json must hold"):
        load_queries(tmp_path)


# --- figures and the whole report -------------------------------------------------------------


def test_figures_are_pngs(tmp_path, two_strategies):
    assert_png(figures.plot_learning_curves(two_strategies, tmp_path / "curves.png",
                                            full_supervision={"dice": 0.9}))
    assert_png(figures.plot_cluster_criteria(two_strategies, tmp_path / "criteria.png"))
    assert figures.plot_cluster_criteria(make_run("a", 0, [0.1], [0.5]), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    image = np.full((48, 64, 3), 200, dtype=np.uint8)
    items = [
        {"image": "a", "y": 0, "x": 0, "size": 16, "round": 1},
        {"image": "a", "y": 40, "x": 56, "size": 16, "round": 2},  # reaches past the border
        {"image": "a", "y": 0, "x": 0, "size": None, "round": 3},  # an image-level query
    ]
    mask = np.zeros((48, 64), dtype=int)
    mask[10:30, 10:40] = 1
    assert_png(figures.draw_queries(image, items, tmp_path / "q.png", mask=mask))
    assert_png(figures.draw_queries(image, items, tmp_path / "q1.png", rounds=[1]))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8.*\(48, 64\)"):
        figures.draw_queries(image[..., 0], items, tmp_path / "bad.png")


def test_write_report_with_one_round(tmp_path):
    write_run(tmp_path, make_run("a", 0, [0.03], [0.5]))
    path = write_report(tmp_path)
    text = path.read_text()
    assert "| a | 1 | 0.500 |" in text
    assert "No bench configuration" in text and "Full-supervision Dice unknown" in text
    assert_png(tmp_path / "figures" / "learning-curves-dice.png")
    assert not (tmp_path / "figures" / "cluster-criteria.png").exists()
    assert (tmp_path / "records.csv").exists() and (tmp_path / "summary.json").exists()


def test_write_report_full(tmp_path, two_strategies):
    for run in (two_strategies[:3], two_strategies[3:6], two_strategies[6:]):
        run_dir = write_run(tmp_path, run)
        queries = [{"round": 1, "level": "patch", "items": [{"image": "img", "y": 4, "x": 4, "size": 16}]}]
        (run_dir / "queries.json").write_text(json.dumps(queries))
    (tmp_path / "config.json").write_text(json.dumps({"split": "mixed", "torch": "2.13.0"}))
    (tmp_path / "full_supervision.json").write_text(json.dumps({"dice": 0.9, "voe": 0.2}))
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    text = write_report(tmp_path, query_images={"img": image}).read_text()
    assert "figures/cluster-criteria.png" in text
    assert "figures/queries-focannot-seed0-img.png" in text
    assert "- torch: 2.13.0" in text
    for name in ("learning-curves-dice", "cluster-criteria", "queries-focannot-seed0-img"):
        assert_png(tmp_path / "figures" / f"{name}.png")
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_query_figure_names_read_composed_keys(tmp_path):
    run_dir = write_run(tmp_path, make_run("7-focannot(selection=power)", 0, [0.03, 0.05], [0.5, 0.6]))
    queries = [{"round": 1, "level": "patch", "items": [{"image": "train 19", "y": 4, "x": 4, "size": 16}]}]
    (run_dir / "queries.json").write_text(json.dumps(queries))
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    text = write_report(tmp_path, query_images={"train 19": image}).read_text()
    assert "figures/queries-7-focannot-selection-power-seed0-train-19.png" in text
    assert_png(tmp_path / "figures" / "queries-7-focannot-selection-power-seed0-train-19.png")


def test_write_report_without_records(tmp_path):
    with pytest.raises(ValueError, match="No round records"):
        write_report(tmp_path)


def test_also_against_pairs_every_strategy_with_another_baseline(tmp_path):
    costs = [0.05, 0.1, 0.2, 0.3]
    for seed, eps in enumerate((0.0, 0.02, -0.01)):
        base = [0.5 + eps, 0.6 + eps, 0.7 + eps, 0.8 + eps]
        write_run(tmp_path, make_run("random-patch", seed, costs, base))
        write_run(tmp_path, make_run("focannot", seed, costs, [base[0]] + [v + 0.01 for v in base[1:]]))
        write_run(tmp_path, make_run("power", seed, costs, [base[0]] + [v + 0.05 + 0.001 * seed for v in base[1:]]))
    with pytest.raises(ValueError, match=r"also_against \(--also-against\) names 'nope'.*focannot, power, random-patch"):
        write_report(tmp_path, also_against=("nope",))
    assert not (tmp_path / "records.csv").exists()  # refused before writing anything
    text = write_report(tmp_path, also_against=("focannot",)).read_text()
    assert text.index("Paired comparison with random-patch") < text.index("Paired comparison with focannot") \
        < text.index("## Curve noise") < text.index("## Results")
    against = json.loads((tmp_path / "comparison.json").read_text())["against"]["focannot"]
    by = {c["strategy"]: c for c in against}
    assert set(by) == {"power", "random-patch"}
    assert by["power"]["verdict"] == "better" and by["random-patch"]["verdict"] == "worse"
    assert by["power"]["dice_at"][1]["mean"] == pytest.approx(0.041)


def test_complete_only_reports_the_runs_at_their_budget(tmp_path):
    write_run(tmp_path, make_run("a", 0, [0.1, 0.2, 0.3], [0.5, 0.6, 0.7]))
    write_run(tmp_path, make_run("a", 1, [0.1, 0.2], [0.5, 0.6]))  # still running
    short = write_run(tmp_path, make_run("b", 0, [0.1, 0.2], [0.5, 0.55]))
    (short / "state.json").write_text(json.dumps({"exhausted": True}))  # ran out of pool: finished
    with pytest.raises(ValueError, match=r"budget of run a seed 0 is unknown.*config\.json"):
        write_report(tmp_path, complete_only=True)
    (tmp_path / "config.json").write_text(json.dumps({"budget": 0.3}))
    text = write_report(tmp_path, complete_only=True).read_text()
    assert "In progress, left out of this report: a seed 1 (at 20.0 %)" in text
    assert {(r["strategy"], r["seed"]) for r in json.loads((tmp_path / "records.json").read_text())} == {("a", 0), ("b", 0)}
    # A run's own configuration overrides the folder's (the last invocation's).
    (tmp_path / "runs" / "a-seed1" / "config.json").write_text(json.dumps({"budget": 0.2}))
    assert "In progress" not in write_report(tmp_path, complete_only=True).read_text()
    (tmp_path / "config.json").write_text(json.dumps({"budget": 0.5}))
    (tmp_path / "runs" / "a-seed1" / "config.json").unlink()
    (short / "state.json").unlink()
    with pytest.raises(ValueError, match="No run .* has reached its budget"):
        write_report(tmp_path, complete_only=True)


def test_report_gives_the_seconds_per_round():
    records = make_run("a", 0, [0.1, 0.2, 0.3], [0.5, 0.6, 0.7]) + make_run("a", 1, [0.1, 0.2], [0.5, 0.6])
    records[1]["query_seconds"] = 3.0  # seed 0's first query round; the median of 0.1, 0.1, 3.0 stays 0.1
    records[0]["train_seconds"] = 100.0  # round 0 counts in the run's minutes only
    for r in records:
        r["threads"] = 1
    (row,) = summarize(records)
    timing = row["timing"]
    assert timing["query_seconds"] == pytest.approx(0.1) and timing["train_seconds"] == pytest.approx(1.0)
    assert timing["run_minutes"] == pytest.approx(((100 + 2 * 1.0) + (0.1 + 3.0 + 0.1) + 3 * 0.2 + 2 * 1.3) / 2 / 60)
    assert timing["threads"] == [1]
    text = render_report([row], config=None, full_supervision=None, figures=None)
    assert "| a | 3 | 0 | 1 | 0 | 0.9 | 1 |" in text
    del records[2]["eval_seconds"]  # older records without timings: no table, no crash
    (row,) = summarize(records)
    assert row["timing"]["run_minutes"] is None
    assert "Query s / round" not in render_report([row], config=None, full_supervision=None, figures=None)


def test_the_report_answers_in_one_sentence_and_says_when_evidence_is_thin():
    from focal_al.bench.report import answer_sentence

    def row(label, verdict, mean, low, high, n=3):
        return {"label": label, "verdict": verdict, "aubc": {"mean": mean, "low": low, "high": high, "n": n}}

    none = answer_sentence([row("IU", "no detectable difference", -0.004, -0.02, 0.012)], baseline_label="Random")
    assert none.startswith("**Answer:** no strategy is better or worse than Random") and "too thin" not in none
    win = answer_sentence([row("FocAnnot", "better", 0.03, 0.01, 0.05), row("IU", "worse", -0.03, -0.05, -0.01)],
                          baseline_label="Random")
    assert "FocAnnot beats Random" in win and "IU does worse" in win
    two = answer_sentence([row("IU", "no detectable difference", -0.07, -1.35, 1.21, n=2)], baseline_label="Random")
    assert "too thin" in two and "2 seed" in two
    one = answer_sentence([row("IU", "too few seeds", 0.02, float("nan"), float("nan"), n=1)], baseline_label="Random")
    assert one.startswith("**Answer:** not yet") and "IU" in one
    wide = answer_sentence([row("IU", "no detectable difference", 0.001, -0.08, 0.082)], baseline_label="Random")
    assert "too thin" in wide and "±0.081" in wide
