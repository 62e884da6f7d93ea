"""The benchmarks name weighttui's modules as they are: every `from weighttui... import name` in benchmarks/
resolves (a benchmark is run by hand, so nothing else notices when a module it uses moves)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py"))


def _weighttui_imports(path: Path) -> list[tuple[str, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "weighttui"
            for alias in node.names]


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 5 and any(_weighttui_imports(p) for p in BENCHMARKS)


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_imports_resolve(path):
    for module, name in _weighttui_imports(path):
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:  # a framework this machine lacks (torch, tensorflow ...)
            if (exc.name or "").split(".")[0] == "weighttui":
                raise
            pytest.skip(f"{module}: {exc}")
        assert hasattr(mod, name) or importlib.util.find_spec(f"{module}.{name}") is not None, \
            f"{path.name}: from {module} import {name}: no such name"
