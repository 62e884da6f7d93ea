"""The layers of docs/architecture.md, as the import-linter contracts in pyproject.toml say them.

`lint-imports` runs the same contracts in .ci/lint; this test makes a plain pytest run fail too
when a lower layer starts importing a higher one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the test extras (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["cli", "tui", "analysis | integrations", "record | data", "log"]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    env = {"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


def test_the_contract_names_the_layers():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = {c["id"]: c for c in config["contracts"]}["layers"]
    assert layers["type"] == "layers" and layers["containers"] == ["weighttui"]
    assert layers["layers"] == LAYERS


def test_the_contracts_are_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("low", "high"), [("log", "weighttui.record.recorder"), ("data", "weighttui.analysis.heatmap"),
                                           ("record", "weighttui.data.run"), ("tui", "weighttui.cli.main")])
def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(tmp_path, low, high):
    """The check can fail: the same package plus one upward import is refused, naming both."""
    shutil.copytree(ROOT / "weighttui", tmp_path / "weighttui", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "weighttui" / low / "_upward.py").write_text(f"import {high}\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert f"weighttui.{low}._upward -> {high}" in result.stdout, result.stdout
