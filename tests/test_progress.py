"""Progress display of the commands where a person waits: bars on a terminal, plain lines in a log.

Tiny synthetic runs (as in test_bench.py and test_project.py); a bar is forced with ``--progress``
or by a stdout that says it is a terminal.
"""
import io
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from focal_al.bench.config import preset_config
from focal_al.bench.runner import full_supervision, prepare_data, run_bench
from focal_al.progress import rounds_left
from focal_al.cli import main
from focal_al.datasets import make_synthetic
from focal_al.progress import TrainingProgress, progress_bar, shows_progress

TINY = dict(n_images=11, image_size=48, patch_size=16, overlap=0.5, depth=2, width=2, train_steps=2,
            initial_train_steps=2, batch_size=4, step=0.1, budget=0.3, clusters=2, seeds=(0,), max_train_steps=4,
            full_supervision_epochs=1.0)
TINY_CLI = ["--n-images", "11", "--image-size", "48", "--patch-size", "16", "--overlap", "0.5", "--width", "2",
            "--train-steps", "2", "--initial-train-steps", "2", "--batch-size", "4", "--step", "0.1",
            "--budget", "0.3", "--clusters", "2", "--max-train-steps", "4", "--seeds", "0"]
#: tqdm's meter: ``rounds:  40%|####      | 2/5 [00:01<00:01,  1.9round/s]``.
METER = r"{desc}: +\d+%\|[^|\n\r]*\| (\d+)/(\d+) \[(\d\d:\d\d)<([^,\]]+)"


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self):
        return True


def meters(text, desc):
    """(n, total, remaining) of every rendering of the bar ``desc`` in ``text``."""
    return [(int(n), int(total), left) for n, total, _, left in re.findall(METER.format(desc=desc), text)]


def screen_lines(text):
    """The lines a terminal keeps: each one's text after its last carriage return."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n")]


def rounds_recorded(out_dir):
    return sum(len(json.loads(p.read_text())) for p in Path(out_dir).glob("runs/*/rounds.json"))


def bench(out_dir, *flags, strategies="random-patch,7"):
    result = CliRunner().invoke(main, ["bench", "--out-dir", str(out_dir), *TINY_CLI, "--strategies", strategies,
                                       "--no-full-supervision", *flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


# ----------------------------------------------------------------------------------- the pieces


def test_a_bar_is_drawn_where_asked_or_on_a_terminal_only():
    assert shows_progress(None, Terminal()) and not shows_progress(None, io.StringIO())
    assert shows_progress(True, io.StringIO()) and not shows_progress(False, Terminal())
    closed = io.StringIO()
    closed.close()
    assert not shows_progress(None, closed)
    for file, drawn in ((Terminal(), True), (io.StringIO(), False)):
        with progress_bar(3, desc="work", file=file) as bar:
            bar.update(3)
        assert ("work: 100%" in file.getvalue()) is drawn


def test_the_rounds_a_run_has_left_are_estimated_from_its_gains():
    config = preset_config("quick", **TINY)
    assert rounds_left([], budget=config.budget, step=config.step) == 3  # round 0, then (0.3 - 0.1) / 0.1 query rounds
    assert rounds_left([], budget=0.15, step=0.05) == 3  # not 4 by float rounding
    assert rounds_left([{"cost": 0.1}, {"cost": 0.15}], budget=config.budget, step=config.step) == 3  # 0.05 a round so far
    assert rounds_left([{"cost": 0.1}, {"cost": 0.2}, {"cost": 0.3}], budget=config.budget, step=config.step) == 0


def test_the_training_callback_counts_the_steps_and_changes_no_weight(capsys):
    import torch

    from focal_al.estimator import SegmentationNet

    rng = np.random.default_rng(0)
    X, y = rng.integers(0, 255, (8, 3, 16, 16), dtype=np.uint8), rng.integers(0, 2, (8, 16, 16))
    nets = [SegmentationNet(module__width=2, module__depth=2, batch_size=4, max_epochs=1, steps_per_epoch=5,
                            random_state=0, threads=None, callbacks=callbacks).fit(X, y)
            for callbacks in ([], [("progress", TrainingProgress("fit", enabled=True, stream="stdout"))])]
    assert meters(capsys.readouterr().out, "fit")[-1][:2] == (5, 5)
    for a, b in zip(nets[0].module_.state_dict().values(), nets[1].module_.state_dict().values()):
        assert torch.equal(a, b)


def test_scoring_in_chunks_gives_the_scores_of_one_pass(capsys):
    from focal_al.estimator import SegmentationNet
    from focal_al.progress import scoring_with_progress

    net = SegmentationNet(module__width=2, module__depth=2, batch_size=2, random_state=0, threads=None).initialize()
    pool = np.random.default_rng(1).integers(0, 255, (300, 3, 16, 16), dtype=np.uint8)
    rows = np.sort(np.random.default_rng(2).choice(300, size=290, replace=False))  # 3 chunks of 128 patches
    chunked = scoring_with_progress(SimpleNamespace(estimator=net), pool, rows)
    whole = net.score_pool(pool[rows])
    for name in ("entropy", "margin", "least_confidence", "descriptors"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    assert chunked.extras.keys() == whole.extras.keys()
    for key in whole.extras:
        np.testing.assert_array_equal(chunked.extras[key], whole.extras[key])
    assert meters(capsys.readouterr().err, "scoring")[-1][:2] == (290, 290)


# ----------------------------------------------------------------------------------- focal-al bench


def test_bench_bar_counts_every_round_of_every_run_with_an_eta_from_the_first(tmp_path):
    out = bench(tmp_path, "--progress").stdout
    found = meters(out, "rounds")
    assert found[0][:2] == (0, 6)  # 2 runs of about 3 rounds each: a total from the start
    n = rounds_recorded(tmp_path)
    assert found[-1][:2] == (n, n)  # exact once the runs are done
    assert all(a[0] <= b[0] and b[0] <= b[1] for a, b in zip(found, found[1:]))
    # After the first round, an ETA (tqdm's "?" before any round is done).
    assert any(k == 1 and re.fullmatch(r"\d\d:\d\d", left) for k, total, left in found)
    # The per-round lines are today's, each on its own line above the bar.
    lines = [line for line in screen_lines(out) if re.match(r"run [12]/2 \[", line)]
    assert len(lines) == n and all(" round " in line and "Dice" in line for line in lines)


def test_bench_output_that_is_not_a_terminal_has_the_lines_and_no_bar(tmp_path):
    out = bench(tmp_path).output
    assert "\r" not in out and "rounds:" not in out
    lines = [line for line in out.splitlines() if re.match(r"run [12]/2 \[", line)]
    assert len(lines) == rounds_recorded(tmp_path)


def test_bench_quiet_shows_nothing_even_with_progress(tmp_path):
    result = bench(tmp_path, "--quiet", "--progress")
    assert result.output.splitlines() == [str(tmp_path / "report.md")]


def test_bench_draws_its_bar_by_itself_on_a_terminal(tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    run_bench(preset_config("quick", **TINY, strategies=("random-patch",), out_dir=str(tmp_path)),
              with_full_supervision=False, progress=None)
    n = rounds_recorded(tmp_path)
    assert meters(terminal.getvalue(), "rounds")[-1][:2] == (n, n)


def test_full_supervision_draws_a_bar_over_its_steps_with_the_same_result(tmp_path, capsys):
    config = preset_config("quick", **{**TINY, "full_supervision_epochs": 4.0})
    data = prepare_data(config, tmp_path)
    lines = []
    (tmp_path / "bar").mkdir()
    (tmp_path / "plain").mkdir()
    with_bar = full_supervision(config, data, tmp_path / "bar", report=lines.append, progress=True)
    steps = with_bar["train_steps"]
    assert meters(capsys.readouterr().out, "full supervision")[-1][:2] == (steps, steps)
    assert lines[0] == f"[full supervision] training {steps} steps on all {len(data.store)} patches ..."
    assert not any(" step " in line for line in lines)  # the bar replaces the lines every tenth of the steps
    plain = full_supervision(config, data, tmp_path / "plain")
    assert {k: v for k, v in with_bar.items() if k != "train_seconds"} == \
           {k: v for k, v in plain.items() if k != "train_seconds"}


def test_parallel_jobs_bar_writes_the_workers_lines_above_it(tmp_path, capsys):
    # Workers print to the parent's stdout; with a bar their lines come through the parent (capsys
    # sees only what the parent writes), and the bar counts the jobs.
    run_bench(preset_config("quick", **TINY, strategies=("random-patch",), out_dir=str(tmp_path), threads=1),
              with_full_supervision=False, jobs=2, progress=True)
    out = capsys.readouterr().out
    assert meters(out, "jobs")[-1][:2] == (1, 1)
    rounds = [line for line in screen_lines(out) if line.startswith("[random-patch seed 0] round ")]
    assert len(rounds) == rounds_recorded(tmp_path)
    assert "job 1/1 done: random-patch seed 0" in out


# ----------------------------------------------------------------------------------- focal-al project


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    data = make_synthetic(4, size=(96, 128), seed=3)
    for sub in ("images", "initial"):
        (folder / sub).mkdir()
    for image, mask, name in zip(data.images, data.masks, data.names):
        Image.fromarray(image).save(folder / "images" / f"{name}.png")
    Image.fromarray(data.masks[0].astype(np.uint16)).save(folder / "initial" / f"{data.names[0]}.png")
    return folder


def project(*args):
    result = CliRunner().invoke(main, ["project", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_project_commands_show_training_scoring_and_prediction(images, tmp_path):
    folder = tmp_path / "p"
    project("init", folder, "--images", images / "images", "--masks", images / "initial", "--patch-size", "16",
            "--scale", "0.5", "--width", "4", "--depth", "2", "--train-steps", "3", "--batch-size", "4")
    unlabelled = json.loads(project("status", folder, "--json").stdout)
    unlabelled = unlabelled["pool_patches"] - unlabelled["labelled_patches"]
    query = project("query", folder, "--n", "5", "--progress")
    # The weights are older than the initial masks: it trains its 3 steps, then scores the pool.
    assert meters(query.stderr, "training")[-1][:2] == (3, 3)
    assert meters(query.stderr, "scoring")[-1][:2] == (unlabelled, unlabelled)
    assert "5 regions" in query.stdout and "\r" not in query.stdout
    train = project("train", folder, "--steps", "7", "--progress")
    assert meters(train.stderr, "training")[-1][:2] == (7, 7)
    assert train.stdout.startswith("trained: 10 steps in all;")
    predict = project("predict", folder, "--out", tmp_path / "out", "--progress")
    assert meters(predict.stderr, "predicting")[-1][:2] == (4, 4)


def test_project_commands_are_silent_where_stderr_is_not_a_terminal(images, tmp_path):
    folder = tmp_path / "p"
    project("init", folder, "--images", images / "images", "--masks", images / "initial", "--patch-size", "16",
            "--scale", "0.5", "--width", "4", "--depth", "2", "--train-steps", "3", "--batch-size", "4")
    for args in (("query", folder, "--n", "5"), ("train", folder, "--steps", "2"),
                 ("predict", folder, "--out", tmp_path / "out")):
        assert project(*args).stderr == ""
