"""End-to-end tests of ``focal-al bench``: CLI, protocol and cost accounting, resume after a kill.

Everything runs on a tiny synthetic config (9 training images of 48 px, 16 px patches, a width-2
network, 2 gradient steps per round) so that one run takes about a second.
"""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from focal_al.bench.config import BenchConfig, preset_config
from focal_al.bench.runner import KILL_ENV, initial_images, load_data, queries_per_round, run_bench
from focal_al.cli import main

TINY = dict(
    n_images=11, image_size=48, patch_size=16, overlap=0.5, depth=2, width=2, train_steps=2,
    initial_train_steps=2, batch_size=4, step=0.1, budget=0.3, clusters=2, sa_ensemble=2, seeds=(0,),
    max_train_steps=4, full_supervision_epochs=1.0,
)
#: The same config as CLI options (``--depth`` / ``--sa-ensemble`` are not CLI options; defaults apply).
TINY_CLI = [
    "--n-images", "11", "--image-size", "48", "--patch-size", "16", "--overlap", "0.5", "--width", "2",
    "--train-steps", "2", "--initial-train-steps", "2", "--batch-size", "4", "--step", "0.1",
    "--budget", "0.3", "--clusters", "2", "--max-train-steps", "4", "--full-supervision-epochs", "1", "--quiet",
]
TIMING_KEYS = ("train_seconds", "query_seconds", "eval_seconds")


def tiny(out_dir, **overrides) -> BenchConfig:
    return preset_config("quick", **{**TINY, "out_dir": str(out_dir), **overrides})


def read_json(path):
    return json.loads(Path(path).read_text())


def without_timings(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def snapshot(folder):
    """Content and modification time of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(Path(folder).rglob("*")) if p.is_file()
    }


def revealed_cost(queries, shapes):
    """Independent recomputation of the cost: union of the queried pixels per image, clipped."""
    masks = {name: np.zeros(shape, dtype=bool) for name, shape in shapes.items()}
    costs = []
    for q in queries:
        for item in q["items"]:
            mask = masks[item["image"]]
            if item["size"] is None:
                mask[...] = True
            else:
                y, x, l = item["y"], item["x"], item["size"]
                mask[max(y, 0):max(y + l, 0), max(x, 0):max(x + l, 0)] = True
        n = sum(int(m.sum()) for m in masks.values())
        costs.append((n, n / sum(m.size for m in masks.values())))
    return costs


# ----------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "bench"
    args = ["bench", "--out-dir", str(out), *TINY_CLI, "--strategies", "random-patch,1,7", "--seeds", "0,1"]
    result = CliRunner().invoke(main, args)
    return out, args, result


def test_cli_bench_writes_everything(cli_bench):
    out, _, result = cli_bench
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.output.strip().endswith("report.md")
    for name in ("report.md", "records.csv", "records.json", "figures/learning-curves-dice.png",
                 "config.json", "full_supervision.json"):
        assert (out / name).is_file(), name
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == sorted(f"{k}-seed{s}" for k in ("random-patch", "1-image-iu", "7-focannot") for s in (0, 1))
    for run in runs:
        records = read_json(out / "runs" / run / "rounds.json")
        assert len(records) >= 2 and [r["round"] for r in records] == list(range(len(records)))
    config = read_json(out / "config.json")
    assert config["n_images"] == 11 and config["image_size"] == 48 and config["patch_size"] == 16
    assert config["strategies"] == ["random-patch", "1", "7"] and config["seeds"] == [0, 1]
    # The CPU too: the same seed can give other floats on another instruction set.
    for dist in ("python", "cpu", "focal-al", "torch", "numpy", "Pillow"):
        assert config["versions"][dist] not in (None, "", "not installed", "unknown")
    combined = read_json(out / "records.json")
    assert len(combined) == sum(len(read_json(out / "runs" / r / "rounds.json")) for r in runs)
    report = (out / "report.md").read_text()
    for label in ("Random patches", "1 Image IU", "7 FocAnnot"):
        assert label in report


def test_cli_help():
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0
    for option in ("--preset", "--strategies", "--resume", "--n-images", "--image-size", "--budget"):
        assert option in result.output


@pytest.mark.parametrize("args, expected", [
    (["--overlap", "1.5"], "overlap"),
    (["--strategies", "focanot"], "focannot"),  # a close match is suggested
    (["--dataset", "folder"], "--images-dir"),
    (["--budget", "0.01", "--step", "0.1"], "budget"),
    (["--seeds", "a,b"], "comma-separated list of int"),
])
def test_cli_bad_input(tmp_path, args, expected):
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["bench", "--out-dir", str(out), *TINY_CLI, *args])
    assert result.exit_code != 0
    assert expected in result.output, result.output
    assert "Traceback" not in result.output
    assert not (out / "runs").exists()


def test_cli_rerun_without_resume_is_refused_and_changes_nothing(cli_bench):
    out, args, result = cli_bench
    assert result.exit_code == 0
    before = snapshot(out)
    for extra in ([], ["--budget", "0.5"]):
        again = CliRunner().invoke(main, args + extra)
        assert again.exit_code != 0
        assert "--resume" in again.output and "already holds results" in again.output, again.output
        assert snapshot(out) == before


# ----------------------------------------------------------------------------------- protocol and cost


@pytest.fixture(scope="module")
def protocol_bench(tmp_path_factory):
    """Patch- and image-level strategies under two seeds, overlapping patches."""
    out = tmp_path_factory.mktemp("protocol")
    config = tiny(out, strategies=("random-patch", "7-focannot", "random-image", "1-image-iu"), seeds=(0, 1),
                  budget=0.35)
    run_bench(config, quiet=True, with_full_supervision=False)
    train, _ = load_data(config)
    shapes = {name: im.shape[:2] for name, im in zip(train.names, train.images)}
    runs = {}
    for key in config.strategies:
        for seed in config.seeds:
            run = out / "runs" / f"{key}-seed{seed}"
            runs[key, seed] = (read_json(run / "rounds.json"), read_json(run / "queries.json"))
    return config, shapes, runs


def test_initial_set_same_for_every_strategy_differs_across_seeds(protocol_bench):
    config, shapes, runs = protocol_bench
    initial = {}
    for (key, seed), (records, queries) in runs.items():
        assert queries[0]["round"] == 0 and queries[0]["level"] == "image"
        items = sorted(json.dumps(i, sort_keys=True) for i in queries[0]["items"])
        assert items and all(json.loads(i)["size"] is None for i in items)
        initial.setdefault(seed, set()).add(tuple(items))
        assert records[0]["cost"] == pytest.approx(revealed_cost(queries[:1], shapes)[0][1])
    assert all(len(sets) == 1 for sets in initial.values()), initial
    # seeds 0 and 1 draw different images on this pool
    assert not np.array_equal(initial_images(list(shapes.values()), config.step, 0),
                              initial_images(list(shapes.values()), config.step, 1))
    assert initial[0] != initial[1]


def test_cost_is_the_union_of_revealed_pixels(protocol_bench):
    config, shapes, runs = protocol_bench
    overlapping_seen = False
    for (key, seed), (records, queries) in runs.items():
        assert [q["round"] for q in queries] == [r["round"] for r in records]
        expected = revealed_cost(queries, shapes)
        for record, (n, cost) in zip(records, expected):
            assert record["n_revealed_pixels"] == n, (key, seed, record["round"])
            assert record["cost"] == pytest.approx(cost, abs=1e-12), (key, seed, record["round"])
        # never l^2 per patch: with rho = 0.5 the patches of one round overlap
        for q, (prev, cur) in zip(queries[1:], zip(records, records[1:])):
            patches = [i for i in q["items"] if i["size"] is not None]
            if patches:
                naive = len(patches) * config.patch_size ** 2
                gained = cur["n_revealed_pixels"] - prev["n_revealed_pixels"]
                assert gained <= naive
                overlapping_seen |= gained < naive
        costs = [r["cost"] for r in records]
        assert all(b > a for a, b in zip(costs, costs[1:])), costs
        # the run stops at the first round whose cost reaches the budget
        assert all(c < config.budget for c in costs[:-1]) and costs[-1] >= config.budget, costs
    assert overlapping_seen


def test_image_level_queries_whole_images(protocol_bench):
    config, shapes, runs = protocol_bench
    for key in ("random-image", "1-image-iu"):
        for seed in config.seeds:
            records, queries = runs[key, seed]
            seen = []
            for q, r in zip(queries, records):
                assert q["level"] == "image"
                assert all(i["size"] is None and i["y"] == 0 and i["x"] == 0 for i in q["items"])
                seen += [i["image"] for i in q["items"]]
                assert r["n_labelled"] == len(seen)
            assert len(seen) == len(set(seen)), "an image was queried twice"
            for q in queries[1:]:
                assert len(q["items"]) == max(1, round(config.step * len(shapes)))


def test_patch_level_never_queries_a_patch_twice(protocol_bench):
    config, shapes, runs = protocol_bench
    for key in ("random-patch", "7-focannot"):
        for seed in config.seeds:
            records, queries = runs[key, seed]
            initial = {i["image"] for i in queries[0]["items"]}
            patches = [(i["image"], i["y"], i["x"]) for q in queries[1:] for i in q["items"]]
            assert patches and all(q["level"] == "patch" for q in queries[1:])
            assert all(i["size"] == config.patch_size for q in queries[1:] for i in q["items"])
            assert len(patches) == len(set(patches)), "a patch was queried twice"
            assert not initial & {p[0] for p in patches}, "a patch of an already labelled image was queried"
            assert records[-1]["n_labelled"] - records[0]["n_labelled"] == len(patches)


def test_records_are_reproducible(protocol_bench, tmp_path):
    """Two runs of the same config give the same records (except timings)."""
    config, _, runs = protocol_bench
    again = config.replace(strategies=("7-focannot",), seeds=(1,), out_dir=str(tmp_path))
    run_bench(again, quiet=True, with_full_supervision=False)
    records = read_json(tmp_path / "runs" / "7-focannot-seed1" / "rounds.json")
    assert without_timings(records) == without_timings(runs["7-focannot", 1][0])



def test_parallel_jobs_give_the_records_of_one_by_one_runs(protocol_bench, tmp_path):
    """--jobs runs each (strategy, seed) in its own process: same records, queries and ceiling."""
    config, _, runs = protocol_bench
    again = config.replace(strategies=("7-focannot", "random-image"), out_dir=str(tmp_path), threads=1)
    run_bench(again, quiet=True, with_full_supervision=True, jobs=3)
    for key in again.strategies:
        for seed in again.seeds:
            run = tmp_path / "runs" / f"{key}-seed{seed}"
            assert without_timings(read_json(run / "rounds.json")) == without_timings(runs[key, seed][0])
            assert read_json(run / "queries.json") == runs[key, seed][1]
    ceiling = read_json(tmp_path / "full_supervision.json")
    alone = tmp_path / "alone"
    run_bench(again.replace(strategies=("random-patch",), seeds=(0,), budget=0.15, out_dir=str(alone)), quiet=True)
    assert ceiling["dice"] == read_json(alone / "full_supervision.json")["dice"]
    assert (tmp_path / "report.md").is_file()



def test_full_supervision_reports_progress(tmp_path):
    from focal_al.bench.runner import full_supervision, prepare_data

    config = tiny(tmp_path, full_supervision_epochs=4.0)
    lines = []
    result = full_supervision(config, prepare_data(config, tmp_path), tmp_path, report=lines.append)
    steps = [line for line in lines if " step " in line]
    assert result["train_steps"] >= 10 and len(steps) >= 5, lines
    assert steps[0].startswith("[full supervision] step ") and "min left" in steps[0]
    assert lines[-1].startswith("[full supervision]") and "Dice" in lines[-1]


def test_run_progress_estimates_what_is_left_from_the_latest_rounds():
    # Training grows with the labelled set, so the rounds to come cost what the latest ones did.
    from focal_al.bench.config import BenchStrategy
    from focal_al.bench.runner import _progress_line

    records = [{"round": r, "cost": 0.1 * (r + 1), "dice": 0.5, "train_seconds": s, "query_seconds": 0.0,
                "eval_seconds": 0.0} for r, s in enumerate([99.0, 10.0, 10.0, 10.0, 100.0])]
    line = _progress_line(BenchStrategy("4-iu", "4 Patch IU", "iu"), 0, records, budget=0.7)
    assert line.startswith("[4-iu seed 0] round 4: cost 50.0% Dice 0.500")
    assert line.endswith("~1.3 min left)"), line  # 2 rounds x mean(10, 10, 100) s; not 2 x 32.5 s over all


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True])
def test_jobs_must_be_a_positive_integer(tmp_path, jobs):
    with pytest.raises(ValueError, match="jobs"):
        run_bench(tiny(tmp_path), quiet=True, jobs=jobs)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------- resume

KILL_CONFIG = dict(strategies=("random-patch",), seeds=(0,), budget=0.6)
#: (point, round): every named point at round 1, 'trained' at round 0, and the final round's commit.
KILLS = [("trained", 0), ("trained", 1), ("evaluated", 1), ("weights-saved", 1), ("state-saved", 1),
         ("evaluated", 2), ("state-saved", "last")]

_CHILD = (
    "import json, sys, torch\n"
    "torch.set_num_threads(1)\n"
    "from focal_al.bench.config import BenchConfig\n"
    "from focal_al.bench.runner import run_bench\n"
    "run_bench(BenchConfig.from_dict(json.loads(sys.argv[1])), quiet=True, with_full_supervision=False)\n"
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_bench(tiny(out, **KILL_CONFIG), quiet=True, with_full_supervision=False)
    run = out / "runs" / "random-patch-seed0"
    return out, read_json(run / "rounds.json"), read_json(run / "queries.json")


@pytest.fixture(scope="module")
def killed(tmp_path_factory, uninterrupted):
    """Every kill of KILLS, run in concurrent subprocesses; returns {(point, round): (out_dir, returncode)}."""
    last = uninterrupted[1][-1]["round"]
    assert last >= 3, "the kill config should run at least 4 rounds"
    procs = {}
    for point, round_ in KILLS:
        r = last if round_ == "last" else round_
        out = tmp_path_factory.mktemp(f"kill-{point}-{r}")
        env = {**os.environ, KILL_ENV: f"{point}:{r}", "OMP_NUM_THREADS": "1"}
        config = json.dumps(tiny(out, **KILL_CONFIG).to_dict())
        procs[point, round_] = (out, subprocess.Popen([sys.executable, "-c", _CHILD, config], env=env,
                                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    results = {}
    for key, (out, proc) in procs.items():
        output, _ = proc.communicate(timeout=300)
        results[key] = (out, proc.returncode, output.decode(errors="replace"))
    return results


@pytest.mark.parametrize("point, round_", KILLS)
def test_resume_after_kill_matches_uninterrupted(killed, uninterrupted, point, round_):
    out, returncode, output = killed[point, round_]
    assert returncode == -9, f"expected SIGKILL at {point}:{round_}; got {returncode}\n{output}"
    run = out / "runs" / "random-patch-seed0"
    config = tiny(out, **KILL_CONFIG)
    if (run / "state.json").exists():
        with pytest.raises(FileExistsError, match="--resume"):
            run_bench(config, quiet=True, with_full_supervision=False)
    run_bench(config, resume=True, quiet=True, with_full_supervision=False)
    _, expected_rounds, expected_queries = uninterrupted
    rounds = read_json(run / "rounds.json")
    assert without_timings(rounds) == without_timings(expected_rounds)
    assert read_json(run / "queries.json") == expected_queries
    last = expected_rounds[-1]["round"]
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["config.json", "state.json", "rounds.json", "queries.json", f"weights-round{last}.safetensors"])
    state = read_json(run / "state.json")
    assert state["complete"] and state["round"] == last and state["weights"] == f"weights-round{last}.safetensors"
    assert without_timings(read_json(out / "records.json")) == without_timings(expected_rounds)


def test_uninterrupted_run_folder_is_clean(uninterrupted):
    out, rounds, _ = uninterrupted
    run = out / "runs" / "random-patch-seed0"
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["config.json", "state.json", "rounds.json", "queries.json", f"weights-round{rounds[-1]['round']}.safetensors"])
    config = read_json(run / "config.json")
    assert config["strategies"] == ["random-patch"] and config["seeds"] == [0]


def test_resume_with_changed_protocol_is_refused(uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "bench"
    shutil.copytree(uninterrupted[0], out)
    before = snapshot(out)
    for field, value in (("patch_size", 8), ("overlap", 0.0), ("lr", 0.01)):
        with pytest.raises(ValueError, match=field):
            run_bench(tiny(out, **KILL_CONFIG, **{field: value}), resume=True, quiet=True,
                      with_full_supervision=False)
    assert snapshot(out) == before


def test_resume_finished_run_with_larger_budget_continues(uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "bench"
    shutil.copytree(uninterrupted[0], out)
    _, short, short_queries = uninterrupted
    # resuming with the same budget is a no-op on the run
    run = out / "runs" / "random-patch-seed0"
    state_before = (run / "state.json").read_bytes()
    run_bench(tiny(out, **KILL_CONFIG), resume=True, quiet=True, with_full_supervision=False)
    assert (run / "state.json").read_bytes() == state_before
    longer = {**KILL_CONFIG, "budget": 0.8}
    run_bench(tiny(out, **longer), resume=True, quiet=True, with_full_supervision=False)
    rounds, queries = read_json(run / "rounds.json"), read_json(run / "queries.json")
    assert len(rounds) > len(short)
    assert rounds[:len(short)] == short  # earlier rounds untouched, timings included
    assert queries[:len(short_queries)] == short_queries
    assert rounds[-1]["cost"] >= 0.8 > rounds[-2]["cost"]
    # and the continued run is a fresh run to the larger budget up to the last round of the shorter one,
    # whose query the shorter budget cut (--budget-cap); where nothing is cut, to the end
    fresh = tmp_path / "fresh"
    run_bench(tiny(fresh, **longer), quiet=True, with_full_supervision=False)
    fresh_rounds = read_json(fresh / "runs" / "random-patch-seed0" / "rounds.json")
    assert without_timings(rounds[:len(short) - 1]) == without_timings(fresh_rounds[:len(short) - 1])
    assert short[-1]["cost"] < fresh_rounds[len(short) - 1]["cost"]
    uncut = {**longer, "budget_cap": False}
    for folder, kwargs in ((tmp_path / "uncut-continued", {**uncut, "budget": 0.6}), (tmp_path / "uncut-fresh", uncut)):
        run_bench(tiny(folder, **kwargs), quiet=True, with_full_supervision=False)
    run_bench(tiny(tmp_path / "uncut-continued", **uncut), resume=True, quiet=True, with_full_supervision=False)
    assert without_timings(read_json(tmp_path / "uncut-continued" / "records.json")) == \
        without_timings(read_json(tmp_path / "uncut-fresh" / "records.json"))


# ----------------------------------------------------------------------------------- replay

#: A strategy whose queries depend on the weights, with dropout in training and MC-dropout scoring:
#: a replay that trained otherwise than the run would query other patches.
REPLAY_CONFIG = dict(strategies=("iu(uncertainty=bald)",), seeds=(0,), budget=0.6, dropout=0.3, mc_samples=2)
REPLAY_RUN = "4-iu(uncertainty=bald)-seed0"


@pytest.fixture(scope="module")
def replay_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay-reference")
    run_bench(tiny(out, **REPLAY_CONFIG), quiet=True, with_full_supervision=False)
    run = out / "runs" / REPLAY_RUN
    rounds = read_json(run / "rounds.json")
    assert len(rounds) >= 4, "the replay config should run at least 4 rounds"
    return out, rounds, read_json(run / "queries.json")


def committed_without_state(reference, tmp_path, n_rounds):
    """A copy of the reference run as a repository holds a partial run: its first ``n_rounds``
    records and queries, no state.json, no weights."""
    out = tmp_path / "bench"
    shutil.copytree(reference[0], out)
    run = out / "runs" / REPLAY_RUN
    (run / "rounds.json").write_text(json.dumps(reference[1][:n_rounds]))
    (run / "queries.json").write_text(json.dumps(reference[2][:n_rounds]))
    (run / "state.json").unlink()
    for weights in run.glob("weights-round*.safetensors"):
        weights.unlink()
    return out, run


def test_resume_replays_records_committed_without_weights(replay_reference, tmp_path):
    out, run = committed_without_state(replay_reference, tmp_path, 2)
    config = tiny(out, **REPLAY_CONFIG)
    before = snapshot(out)
    with pytest.raises(FileExistsError, match="--resume"):  # records are never overwritten
        run_bench(config, quiet=True, with_full_supervision=False)
    assert snapshot(out) == before
    run_bench(config, resume=True, quiet=True, with_full_supervision=False)
    _, rounds, queries = replay_reference
    replayed = read_json(run / "rounds.json")
    assert replayed[:2] == rounds[:2]  # the committed rounds as they were, timings included
    assert without_timings(replayed) == without_timings(rounds)  # later rounds: what the run queried and scored
    assert read_json(run / "queries.json") == queries
    state = read_json(run / "state.json")
    assert state["complete"] and state["round"] == rounds[-1]["round"]


def test_replay_that_computes_otherwise_is_refused_and_writes_nothing(replay_reference, tmp_path):
    out, run = committed_without_state(replay_reference, tmp_path, 3)
    records = read_json(run / "rounds.json")
    records[-1]["dice"] += 1e-9  # as a run made on a machine whose kernels round otherwise
    (run / "rounds.json").write_text(json.dumps(records))
    before = snapshot(run)
    with pytest.raises(ValueError, match=r"Cannot replay .* round 2, .*Dice .* compute otherwise"):
        run_bench(tiny(out, **REPLAY_CONFIG), resume=True, quiet=True, with_full_supervision=False)
    assert snapshot(run) == before


def test_replay_drift_continues_only_when_accepted_and_is_marked_in_the_comparison(replay_reference, tmp_path):
    """--accept-replay-drift: a run whose replay computes otherwise goes on from the replayed weights,
    the last replayed record says so, and the paired comparison marks its pairs."""
    from focal_al.bench.report import render_comparison
    from focal_al.bench.stats import paired_comparison

    out, run = committed_without_state(replay_reference, tmp_path, 3)
    records = read_json(run / "rounds.json")
    records[-1]["dice"] += 1e-9  # as a run made on a machine whose kernels round otherwise
    (run / "rounds.json").write_text(json.dumps(records))
    run_bench(tiny(out, **REPLAY_CONFIG), resume=True, accept_drift=True, quiet=True, with_full_supervision=False)
    _, reference, _ = replay_reference
    continued = read_json(run / "rounds.json")
    assert continued[:2] == records[:2]  # the committed rounds as they were
    drift = continued[2].pop("replay_drift")
    assert continued[2] == records[2]
    assert (drift["round"], drift["recorded_dice"], drift["replayed_dice"]) == (2, records[2]["dice"], reference[2]["dice"])
    assert without_timings(continued[3:]) == without_timings(reference[3:])  # went on from the replayed weights
    assert read_json(run / "state.json")["complete"]

    continued[2]["replay_drift"] = drift
    baseline = [{**r, "strategy": "random-patch", "label": "Random patches"} for r in reference]
    exact = paired_comparison(reference + baseline, baseline="random-patch")
    marked = paired_comparison(continued + baseline, baseline="random-patch")
    assert exact[0]["replay_drift"] == [] and "†" not in "\n".join(render_comparison(exact, baseline_label="Random patches"))
    assert [(d["seed"], d["round"]) for d in marked[0]["replay_drift"]] == [(0, 2)]
    text = "\n".join(render_comparison(marked, baseline_label="Random patches"))
    assert "†" in text and "--accept-replay-drift" in text


def test_accept_replay_drift_needs_resume(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--out-dir", str(tmp_path), "--accept-replay-drift", "--quiet"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--accept-replay-drift" in result.output and "--resume" in result.output
    assert not any(tmp_path.iterdir())


def test_finished_run_committed_without_weights_is_kept_as_it_is(replay_reference, tmp_path):
    out, run = committed_without_state(replay_reference, tmp_path, len(replay_reference[1]))
    records_before = (run / "rounds.json").read_bytes()
    run_bench(tiny(out, **REPLAY_CONFIG), resume=True, quiet=True, with_full_supervision=False)
    assert (run / "rounds.json").read_bytes() == records_before
    assert not (run / "state.json").exists()  # nothing replayed: the run has nothing left to do


@pytest.mark.parametrize("damage, match", [
    (lambda run: (run / "queries.json").unlink(), "queries.json cannot be read"),
    (lambda run: (run / "queries.json").write_text("[]"), "3 round records and 0 queries"),
    (lambda run: (run / "rounds.json").write_text(json.dumps([{"round": 0}] * 3)), "does not hold rounds 0..2"),
])
def test_damaged_committed_records_are_refused_before_anything_is_written(replay_reference, tmp_path, damage, match):
    out, run = committed_without_state(replay_reference, tmp_path, 3)
    damage(run)
    before = snapshot(out)
    with pytest.raises(ValueError, match=match):
        run_bench(tiny(out, **REPLAY_CONFIG), resume=True, quiet=True, with_full_supervision=False)
    assert snapshot(out) == before


def test_dropout_training_is_seeded_by_the_round_not_by_the_process(tmp_path):
    """Two fits from the same weights and random_state give the same weights whatever torch's global
    RNG holds (dropout masks), and leave the caller's global RNG as it was."""
    import torch

    from focal_al.bench.runner import make_net

    config = tiny(tmp_path, dropout=0.5)
    rng = np.random.default_rng(0)
    X = rng.random((8, 3, 16, 16), dtype=np.float32)
    y = (rng.random((8, 16, 16)) > 0.5).astype(np.int64)
    weights = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        net = make_net(config, "ed-convnet", seed=0)
        net.initialize()
        state = torch.get_rng_state()
        net.partial_fit(X, y)
        assert torch.equal(torch.get_rng_state(), state)
        weights.append([p.detach().clone() for p in net.module_.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


# ----------------------------------------------------------------------------------- other networks


@pytest.mark.parametrize("key", ["2-sa-fcn", "3-sa"])
def test_suggestive_annotation_runs_a_query_round(tmp_path, key):
    config = tiny(tmp_path, strategies=(key,), seeds=(0,), budget=0.2)
    run_bench(config, quiet=True, with_full_supervision=False)
    records = read_json(tmp_path / "runs" / f"{key}-seed0" / "rounds.json")
    queries = read_json(tmp_path / "runs" / f"{key}-seed0" / "queries.json")
    assert len(records) >= 2 and queries[1]["level"] == "image" and len(queries[1]["items"]) >= 1
    assert all(np.isfinite(r["dice"]) for r in records)
    assert records[1]["cost"] > records[0]["cost"]


def test_queries_per_round_by_pixels_or_patches(tmp_path):
    config = tiny(tmp_path, patch_size=16, step=0.1)
    # 25,600 training pixels: a tenth of them is the area of 10 patches of 16 x 16; a tenth of 400 patches is 40.
    assert queries_per_round(config, "patch", 400, 10, 25_600) == 10
    assert queries_per_round(config.replace(step_unit="patches"), "patch", 400, 10, 25_600) == 40
    assert queries_per_round(config, "image", 400, 10, 25_600) == 1
    assert queries_per_round(config.replace(step=0.001), "patch", 400, 10, 25_600) == 1


def test_pixel_steps_reveal_at_most_one_step_per_round(tmp_path):
    config = tiny(tmp_path, strategies=("random-patch",))
    run_bench(config, quiet=True, with_full_supervision=False)
    records = read_json(tmp_path / "runs" / "random-patch-seed0" / "rounds.json")
    n_total = records[-1]["n_revealed_pixels"] / records[-1]["cost"]
    # T patches have about `step` of the pixels in area; overlaps and clipping only reveal less.
    slack = config.patch_size**2 / (2 * n_total)
    assert len(records) >= 3
    assert np.all(np.diff([r["cost"] for r in records]) <= config.step + slack)


def test_whole_image_scoring_runs_the_protocol(tmp_path):
    config = tiny(tmp_path, strategies=("7-focannot",), scoring="images")
    run_bench(config, quiet=True, with_full_supervision=False)
    queries = read_json(tmp_path / "runs" / "7-focannot-seed0" / "queries.json")
    patches = [(i["image"], i["y"], i["x"]) for q in queries[1:] for i in q["items"]]
    assert len(queries) >= 2 and len(patches) == len(set(patches))


# ----------------------------------------------------------------------------------- training recipe


def test_round_steps_grow_with_the_labelled_set_between_floor_and_cap(tmp_path):
    config = tiny(tmp_path, strategies=("random-patch",), epochs=1.0, train_steps=3, initial_train_steps=4,
                  max_train_steps=12, budget=0.5)
    config = dataclasses.replace(config, full_supervision_epochs=None)  # the ceiling uses --epochs too
    run_bench(config, quiet=True)
    records = read_json(tmp_path / "runs" / "random-patch-seed0" / "rounds.json")
    expected = [min(12, max(4 if r["round"] == 0 else 3, -(-r["n_labelled"] // config.batch_size))) for r in records]
    assert [r["train_steps"] for r in records] == expected
    assert expected[-1] > expected[1]  # more labels, more steps
    # Full supervision: the same recipe on every patch, uncapped (converged, not equal steps).
    full = read_json(tmp_path / "full_supervision.json")
    from focal_al.bench.runner import prepare_data

    n_patches = len(prepare_data(config, tmp_path).store)
    assert full["train_steps"] == max(4, -(-n_patches // config.batch_size)) > 12


def test_retraining_from_scratch_is_reproducible_and_differs_from_warm_start(tmp_path):
    runs = {}
    for name, warm in (("a", False), ("b", False), ("warm", True)):
        config = tiny(tmp_path / name, strategies=("random-patch",), warm_start=warm)
        run_bench(config, quiet=True, with_full_supervision=False)
        runs[name] = without_timings(read_json(tmp_path / name / "runs" / "random-patch-seed0" / "rounds.json"))
    assert [{k: v for k, v in r.items() if k != "threads"} for r in runs["a"]] == \
        [{k: v for k, v in r.items() if k != "threads"} for r in runs["b"]]
    assert [r["cost"] for r in runs["a"]] == [r["cost"] for r in runs["warm"]]  # same queries' sizes
    assert [r["dice"] for r in runs["a"][1:]] != [r["dice"] for r in runs["warm"][1:]]


def test_large_images_start_from_random_patches_near_one_step(tmp_path):
    # 5 training images of 48 px: one image is 20 % of the pixels, two steps of 5 % would be 10 %.
    config = tiny(tmp_path, n_images=6, test_fraction=0.2, step=0.05, budget=0.2,
                  strategies=("random-patch", "1-image-iu", "7-focannot"))
    with pytest.warns(UserWarning, match="starts from .* random patches"):
        run_bench(config, quiet=True, with_full_supervision=False)
    first = {}
    for key in ("random-patch", "1-image-iu", "7-focannot"):
        queries = read_json(tmp_path / "runs" / f"{key}-seed0" / "queries.json")
        records = read_json(tmp_path / "runs" / f"{key}-seed0" / "rounds.json")
        first[key] = queries[0]["items"]
        assert queries[0]["level"] == "patch" and records[0]["cost"] <= 0.05 + 16 * 16 / (5 * 48 * 48)
        assert len(records) >= 2 and records[-1]["cost"] >= config.budget
    assert first["random-patch"] == first["1-image-iu"] == first["7-focannot"]
    image_rounds = read_json(tmp_path / "runs" / "1-image-iu-seed0" / "queries.json")[1:]
    assert all(q["level"] == "image" for q in image_rounds)


def test_foreground_aware_random_reads_the_ground_truth_in_the_bench(tmp_path):
    config = tiny(tmp_path, strategies=("random-foreground",), budget=0.2)
    run_bench(config, quiet=True, with_full_supervision=False)
    train, _ = load_data(config)
    masks = dict(zip(train.names, train.masks))
    queries = read_json(tmp_path / "runs" / "random-foreground-seed0" / "queries.json")
    for q in queries[1:]:
        with_fg = [i for i in q["items"] if (masks[i["image"]][i["y"]:i["y"] + 16, i["x"]:i["x"] + 16] > 0).any()]
        assert len(with_fg) >= len(q["items"]) // 2  # at least the foreground share (0.5) of each query
    report = (tmp_path / "report.md").read_text()
    assert "oracle-assisted" in report


def test_tta_criterion_composed_on_the_command_line(tmp_path):
    args = ["bench", "--out-dir", str(tmp_path / "o"), *TINY_CLI, "--tta", "--strategies", "iu(uncertainty=tta)",
            "--seeds", "0", "--budget", "0.2", "--no-full-supervision"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    config = read_json(tmp_path / "o" / "config.json")
    assert config["tta"] is True
    (run,) = (tmp_path / "o" / "runs").iterdir()
    assert "uncertainty=tta" in run.name and len(read_json(run / "rounds.json")) >= 2
    result = CliRunner().invoke(main, [a for a in args if a != "--tta"] + ["--resume"])
    assert result.exit_code != 0 and "protocol differs in ['tta']" in result.output


def test_bald_criterion_with_mc_dropout_in_the_bench(tmp_path):
    args = ["bench", "--out-dir", str(tmp_path / "o"), *TINY_CLI, "--dropout", "0.2", "--mc-samples", "3",
            "--strategies", "focannot(uncertainty=bald)", "--seeds", "0", "--budget", "0.2", "--no-full-supervision"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    (run,) = (tmp_path / "o" / "runs").iterdir()
    assert "uncertainty=bald" in run.name and len(read_json(run / "rounds.json")) >= 2
    bad = CliRunner().invoke(main, ["bench", "--out-dir", str(tmp_path / "p"), *TINY_CLI, "--mc-samples", "3"])
    assert bad.exit_code != 0 and "mc_samples" in bad.output and "dropout" in bad.output


def test_random_baselines_skip_the_scoring_extras_of_their_folder(tmp_path, monkeypatch):
    """A folder run with --mc-samples pays the MC-dropout passes only for the strategies that read them."""
    from focal_al.estimator import SegmentationNet

    calls = []
    bald = SegmentationNet._bald
    monkeypatch.setattr(SegmentationNet, "_bald", lambda self, module, xb, *args: calls.append(len(xb)) or bald(self, module, xb, *args))
    run_bench(tiny(tmp_path / "a", strategies=("random-patch",), dropout=0.3, mc_samples=2),
              with_full_supervision=False, quiet=True)
    assert calls == []
    run_bench(tiny(tmp_path / "b", strategies=("iu(uncertainty=bald)",), dropout=0.3, mc_samples=2),
              with_full_supervision=False, quiet=True)
    assert calls  # the BALD run scores with them
    # Training is the folder's (dropout on): the random run's records are those of a folder without MC passes.
    run_bench(tiny(tmp_path / "c", strategies=("random-patch",), dropout=0.3, mc_samples=0),
              with_full_supervision=False, quiet=True)
    records = [without_timings(read_json(tmp_path / folder / "runs" / "random-patch-seed0" / "rounds.json"))
               for folder in ("a", "c")]
    assert records[0] == records[1] and len(records[0]) >= 2


def test_badge_runs_with_gradient_embeddings_and_is_refused_without(tmp_path):
    base = ["bench", *TINY_CLI, "--strategies", "badge", "--seeds", "0", "--budget", "0.2", "--no-full-supervision"]
    refused = CliRunner().invoke(main, [*base, "--out-dir", str(tmp_path / "p")])
    assert refused.exit_code != 0 and "--gradients" in refused.output and not (tmp_path / "p" / "runs").exists()
    result = CliRunner().invoke(main, [*base, "--gradients", "--out-dir", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert len(read_json(tmp_path / "o" / "runs" / "badge-seed0" / "rounds.json")) >= 2


def test_cli_report_rewrites_the_report_of_the_finished_runs_only(cli_bench, tmp_path):
    out, _, result = cli_bench
    assert result.exit_code == 0
    copy = tmp_path / "bench"
    shutil.copytree(out, copy)
    # One run stopped halfway through: its rounds past the first are lost, as if still running.
    rounds_path = copy / "runs" / "7-focannot-seed1" / "rounds.json"
    rounds_path.write_text(json.dumps(read_json(rounds_path)[:1]))
    (copy / "report.md").unlink()

    result = CliRunner().invoke(main, ["report", str(copy), "--complete-only"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    records = read_json(copy / "records.json")
    assert {(r["strategy"], r["seed"]) for r in records} == {
        (k, s) for k in ("random-patch", "1-image-iu", "7-focannot") for s in (0, 1)} - {("7-focannot", 1)}
    report = (copy / "report.md").read_text()
    assert "In progress, left out of this report: 7 FocAnnot seed 1" in report
    assert "queries-7-focannot-seed0" in report  # Fig. 6 read the images named by config.json

    result = CliRunner().invoke(main, ["report", str(copy), "--no-query-figures"])
    assert result.exit_code == 0, result.output
    assert ("7-focannot", 1) in {(r["strategy"], r["seed"]) for r in read_json(copy / "records.json")}
    assert "In progress" not in (copy / "report.md").read_text()


def test_cli_report_names_what_is_missing(tmp_path):
    # An empty folder: that there are no runs comes first, whatever else is missing.
    for flags in ([], ["--no-query-figures"]):
        result = CliRunner().invoke(main, ["report", str(tmp_path), *flags])
        assert result.exit_code != 0 and "holds no runs" in result.output and "Traceback" not in result.output
    # Runs without the folder's config.json: Fig. 6 needs it, and the message says how to do without.
    run_bench(tiny(tmp_path / "runs-only", strategies=("random-patch",)), quiet=True, with_full_supervision=False)
    (tmp_path / "runs-only" / "config.json").unlink()
    result = CliRunner().invoke(main, ["report", str(tmp_path / "runs-only")])
    assert result.exit_code != 0 and "config.json" in result.output and "--no-query-figures" in result.output


def test_the_total_time_left_counts_a_run_finished_before_a_resume(tmp_path, capsys):
    # Run 1 is found finished: its recorded rounds still say how long a whole run takes.
    run_bench(tiny(tmp_path, strategies=("random-patch",)), quiet=True, with_full_supervision=False)
    run_bench(tiny(tmp_path, strategies=("random-patch",), seeds=(0, 1)), resume=True, with_full_supervision=False)
    second = [line for line in capsys.readouterr().out.splitlines() if line.startswith("run 2/2 ")]
    assert second and all("min left in all 2 runs" in line for line in second), second


def test_the_total_time_left_falls_while_a_run_goes_on():
    from focal_al.bench.runner import _seconds_left

    assert _seconds_left([], 3, 1, 10.0) is None  # nothing measured yet
    # Two runs of 60 s done; run 3 of 4 has run 20 s: 40 s of it and 60 s of run 4 are left.
    assert _seconds_left([50.0, 70.0], 4, 3, 20.0) == pytest.approx(100.0)
    assert _seconds_left([50.0, 70.0], 4, 3, 50.0) == pytest.approx(70.0)
    assert _seconds_left([60.0], 2, 2, 90.0) == 0.0  # longer than usual: never negative


def test_a_round_0_unlike_the_folders_other_runs_is_warned_about(tmp_path, capsys):
    run_bench(tiny(tmp_path, strategies=("random-patch", "1-image-iu")), with_full_supervision=False)
    assert "warning" not in capsys.readouterr().out  # one seed, one initial set, one network: round 0 agrees
    # As if random patches had run on another machine: its round 0 came out otherwise.
    rounds = tmp_path / "runs" / "random-patch-seed0" / "rounds.json"
    records = read_json(rounds)
    records[0]["dice"] += 0.01
    rounds.write_text(json.dumps(records))
    run_bench(tiny(tmp_path, strategies=("random-image",)), with_full_supervision=False)
    out = capsys.readouterr().out
    assert f"warning: round 0 Dice {records[0]['dice'] - 0.01:.4f}, random-patch seed 0's in this folder " \
           f"{records[0]['dice']:.4f}" in out


def test_runs_record_a_cap_on_the_cpu_kernels(monkeypatch):
    from focal_al.bench.runner import _cpu

    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert "ATEN_CPU_CAPABILITY" not in _cpu()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert _cpu().endswith("ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2)")


def test_a_periodic_reset_retrains_from_fresh_weights_every_k_rounds(tmp_path, monkeypatch):
    from focal_al.learner import PatchActiveLearner

    warm = []
    fit = PatchActiveLearner._fit_estimator
    monkeypatch.setattr(PatchActiveLearner, "_fit_estimator",
                        lambda self, X, y, *, warm_start=None, **k: warm.append(k["warm"]) or fit(self, X, y, **k))
    run_bench(tiny(tmp_path, strategies=("random-patch",), reset_every=2, budget=0.5), with_full_supervision=False,
              quiet=True)
    rounds = read_json(tmp_path / "runs" / "random-patch-seed0" / "rounds.json")
    assert len(rounds) >= 4 and len(warm) == len(rounds)
    # Round 0 is the initial fit; rounds 2, 4, ... retrain from fresh weights, the others continue.
    assert warm[1:] == [k % 2 != 0 for k in range(1, len(rounds))]
    # Fresh weights indeed (the bench's net warm starts its own fit): the same rounds without the
    # reset agree up to round 1 and differ from round 2 on.
    run_bench(tiny(tmp_path / "warm", strategies=("random-patch",), budget=0.5), with_full_supervision=False,
              quiet=True)
    continued = read_json(tmp_path / "warm" / "runs" / "random-patch-seed0" / "rounds.json")
    assert without_timings(continued[:2]) == without_timings(rounds[:2])
    assert continued[2]["dice"] != rounds[2]["dice"]
    refused = CliRunner().invoke(main, ["bench", *TINY_CLI, "--reset-every", "0", "--out-dir", str(tmp_path / "x")])
    assert refused.exit_code != 0 and "reset_every" in refused.output


# ------------------------------------------------------------------------------ budget cap


def run_and_read(config) -> list:
    run_bench(config, quiet=True, with_full_supervision=False)
    return read_json(Path(config.out_dir) / "records.json")


def test_the_last_query_stops_at_the_budget(tmp_path):
    """A run ends within one patch above its budget (the last query is cut), while the same run with
    --budget-overshoot queries a whole step and ends further above it."""
    budget, patch = 0.23, TINY["patch_size"]
    capped = run_and_read(tiny(tmp_path / "cap", budget=budget, strategies=("random-patch", "7")))
    whole = run_and_read(tiny(tmp_path / "whole", budget=budget, strategies=("random-patch", "7"), budget_cap=False))
    n_pixels = TINY["n_images"] * TINY["image_size"] ** 2  # upper bound of the training pixels
    for strategy in ("random-patch", "7-focannot"):
        last = [r for r in capped if r["strategy"] == strategy][-1]
        assert budget <= last["cost"] < budget + patch**2 / (0.6 * n_pixels)
        over = [r for r in whole if r["strategy"] == strategy][-1]
        assert over["cost"] > last["cost"]
    assert read_json(tmp_path / "cap" / "config.json")["budget_cap"] is True


def test_a_folder_keeps_its_budget_rule_when_seeds_are_added(tmp_path):
    """Runs made before the cap (no budget_cap in config.json) read as --budget-overshoot: a new seed
    added without the option follows them, and asking for the cap there is refused on resume."""
    out = tmp_path / "old"
    run_bench(tiny(out, strategies=("random-patch",), budget_cap=False), quiet=True, with_full_supervision=False)
    for file in [out / "config.json", *out.glob("runs/*/config.json")]:  # as a folder made before the option
        saved = read_json(file)
        saved.pop("budget_cap")
        file.write_text(json.dumps(saved))
    state_file = next(out.glob("runs/*/state.json"))
    state = read_json(state_file)
    state["protocol"].pop("budget_cap")
    state_file.write_text(json.dumps(state))
    run_bench(tiny(out, strategies=("random-patch",), seeds=(1,)), quiet=True, with_full_supervision=False)
    assert read_json(out / "config.json")["budget_cap"] is False
    assert read_json(out / "runs" / "random-patch-seed1" / "config.json")["budget_cap"] is False
    with pytest.raises(ValueError, match="budget_cap"):
        run_bench(tiny(out, strategies=("random-patch",), budget_cap=True, budget=0.4), resume=True, quiet=True,
                  with_full_supervision=False)


def test_strategies_that_schedule_on_the_budget_are_told_the_share_spent(tmp_path):
    """A strategy taking ``progress`` (clasp-pe's noise schedule) gets, with every query, the share of
    the budget spent since the initial set: 0 at the first query, rising, below 1."""
    from focal_al import registry

    seen = []

    @registry.register_strategy("test-progress-spy", level="patch")
    def spy(scores, n_instances, candidates, rng, *, progress=None):
        seen.append(progress)
        return np.asarray(candidates)[:n_instances]

    try:
        run_bench(tiny(tmp_path, strategies=("test-progress-spy",)), quiet=True, with_full_supervision=False)
    finally:
        registry._STRATEGIES.pop("test-progress-spy")
    rounds = read_json(tmp_path / "records.json")
    assert len(seen) == len(rounds) - 1 >= 2
    assert seen[0] == 0.0 and all(a < b for a, b in zip(seen, seen[1:])) and seen[-1] < 1.0
    budget, first = TINY["budget"], rounds[0]["cost"]
    np.testing.assert_allclose(seen, [(r["cost"] - first) / (budget - first) for r in rounds[:-1]])
