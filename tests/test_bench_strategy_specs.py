"""Strategies with parameters and criteria by name on the command line: 'focannot(uncertainty=...,k=5)'."""
from pathlib import Path

import pytest
from click.testing import CliRunner

from focal_al import registry
from focal_al.bench.config import parse_strategy_spec, parse_value, resolve_strategy, split_top_level
from focal_al.cli import main

# As tests/test_bench.py's TINY_CLI: a tiny synthetic bench that runs in seconds.
TINY_CLI = [
    "--n-images", "11", "--image-size", "48", "--patch-size", "16", "--overlap", "0.5", "--width", "2",
    "--train-steps", "2", "--initial-train-steps", "2", "--batch-size", "4", "--step", "0.1",
    "--budget", "0.3", "--clusters", "2", "--max-train-steps", "4", "--full-supervision-epochs", "1", "--quiet",
]


@pytest.fixture
def test_criterion():
    calls = []

    @registry.register_criterion("test-cli-criterion")
    def low_index_first(scores, candidates, rng):
        """Prefers low pool indices (test criterion)."""
        calls.append(len(candidates))
        return -candidates.astype(float)

    yield calls
    del registry._CRITERIA["test-cli-criterion"]


def test_parse_values_and_specs():
    assert [parse_value(v) for v in ("5", "-2", "0.5", "1e-3", "true", "False", "none", "iu", "my-criterion")] == [
        5, -2, 0.5, 1e-3, True, False, None, "iu", "my-criterion"]
    assert isinstance(parse_value("5"), int) and isinstance(parse_value("5."), float)
    assert split_top_level("a(k=1,b=2), 4 ,,c()") == ["a(k=1,b=2)", "4", "c()"]
    with pytest.raises(ValueError, match="never closed"):
        split_top_level("a(k=1")
    with pytest.raises(ValueError, match="closes nothing"):
        split_top_level("a)")
    assert parse_strategy_spec("focannot") == ("focannot", {})
    assert parse_strategy_spec(" focannot( k = 5 , uncertainty = iu ) ") == ("focannot", {"k": 5, "uncertainty": "iu"})
    for bad, message in (("focannot(k)", "key=value"), ("focannot(k=1,k=2)", "twice"), ("focannot k=5)", "name\\(key")):
        with pytest.raises(ValueError, match=message):
            parse_strategy_spec(bad)


def test_resolve_strategy_keys_and_validation(test_criterion):
    spec = resolve_strategy("focannot(uncertainty=test-cli-criterion,k=5)")
    assert spec.key == "7-focannot(k=5,uncertainty=test-cli-criterion)"
    assert spec.strategy == "focannot" and spec.params == {"k": 5, "uncertainty": "test-cli-criterion"}
    assert spec.label == "7 FocAnnot (k=5, uncertainty=test-cli-criterion)"
    # The same spec written differently gets the same key.
    assert resolve_strategy("7( k=5,uncertainty=test-cli-criterion)").key == spec.key
    assert resolve_strategy("focannot()") == resolve_strategy("7-focannot")
    assert resolve_strategy("2(n_uncertain=8)").network == "fcn"
    sampled = resolve_strategy("7(selection=softmax,temperature=0.1)")
    assert sampled.params == {"selection": "softmax", "temperature": 0.1}
    assert sampled.key == "7-focannot(selection=softmax,temperature=0.1)"
    odd = resolve_strategy("stochastic(uncertainty=iu,mode=softmax,temperature=0.5,beta=none)")
    assert odd.key == "stochastic(beta=none,mode=softmax,temperature=0.5,uncertainty=iu)"
    with pytest.raises(ValueError, match="unknown parameter\\(s\\) 'kk' \\(did you mean 'k'\\?\\)"):
        resolve_strategy("focannot(kk=5)")
    with pytest.raises(ValueError, match="Unknown criterion 'test-cli-criterio'.*Did you mean 'test-cli-criterion'"):
        resolve_strategy("focannot(uncertainty=test-cli-criterio)")


def test_cli_bench_runs_a_registered_criterion_by_name(tmp_path, test_criterion):
    out = tmp_path / "bench"
    args = ["bench", "--out-dir", str(out), *TINY_CLI, "--no-full-supervision", "--seeds", "0", "--budget", "0.2",
            "--strategies", "focannot(uncertainty=test-cli-criterion,k=2),random-patch"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["7-focannot(k=2,uncertainty=test-cli-criterion)-seed0", "random-patch-seed0"]
    assert test_criterion, "the criterion named on the command line was never called"
    assert "test-cli-criterion" in (out / "report.md").read_text()


def test_cli_bench_refuses_a_misspelt_parameter_before_running(tmp_path):
    out = tmp_path / "bench"
    for spec, expected in (("focannot(uncertanty=iu)", "did you mean 'uncertainty'"),
                           ("focannot(uncertainty=nope)", "Unknown criterion 'nope'"),
                           ("focannot(k=2", "never closed")):
        result = CliRunner().invoke(main, ["bench", "--out-dir", str(out), *TINY_CLI, "--strategies", spec])
        assert result.exit_code != 0
        assert expected in result.output, result.output
        assert "Traceback" not in result.output
        assert not Path(out).exists()
