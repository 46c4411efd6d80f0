import pytest
from click.testing import CliRunner

from focal_al import registry
from focal_al.cli import main


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.output


def test_plugins_lists_builtins_with_source_and_summary():
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    focannot = next(line for line in lines if line.startswith("focannot "))
    assert "strategy/patch" in focannot and "focal-al 0.1.0" in focannot and "Algorithm 1" in focannot
    cu = next(line for line in lines if line.startswith("cu "))
    assert "criterion/cluster" in cu and "Eq. 6" in cu
    assert any(line.startswith("sa ") and "strategy/image" in line for line in lines)


def test_plugins_pattern():
    result = CliRunner().invoke(main, ["plugins", "--pattern", "id*"])
    names = [line.split()[0] for line in result.output.splitlines()[1:] if line.strip()]
    assert names == ["id", "id-rooted", "id-w1"]


def test_plugins_shows_the_example_plugin():
    if "entropy-times-margin" not in registry.list_criteria():
        pytest.skip("the example plugin is not installed: pip install ./examples/focal-al-plugin-example")
    result = CliRunner().invoke(main, ["plugins"])
    line = next(line for line in result.output.splitlines() if line.startswith("entropy-times-margin"))
    assert "criterion/instance" in line and "focal-al-example-plugin 0.1.0" in line


def test_plugins_reports_failed_plugins(monkeypatch):
    failure = registry.FailedPlugin("focal_al.criteria", "bad", "bad_plugin", "bad-plugin", "9.9",
                                    "ImportError: No module named 'missing_dependency'")
    monkeypatch.setattr(registry, "_FAILED", [failure])
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0
    assert "Plugins that failed to load" in result.output
    assert "bad-plugin 9.9" in result.output and "missing_dependency" in result.output
