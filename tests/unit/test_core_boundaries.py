"""Which third-party libraries each layer may import (docs/architecture.md), on the source and at import time.

The layers among weighttui's own packages are tests/unit/test_layers.py's (import-linter)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "weighttui"
FRAMEWORKS = {"torch", "tensorflow", "keras", "jax", "flax", "transformers", "lightning",
              "pytorch_lightning", "tensorboard", "wandb"}
UI = {"textual", "textual_plotext", "plotext", "rich"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_the_package_has_modules_to_check():
    assert len(_modules()) >= 10


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_boundaries(path):
    rel = path.relative_to(PACKAGE)
    imported = _imports(path)
    if rel.parts[0] != "tui":
        assert not imported & UI, f"{rel} imports a UI library outside weighttui/tui/"
    if rel.parts[0] != "integrations":
        assert not imported & FRAMEWORKS, f"{rel} imports a framework outside weighttui/integrations/"


def test_viewer_and_core_import_no_framework():
    """`weighttui watch` on a bare ssh box must not pull torch or tensorflow in."""
    code = (
        "import sys, weighttui, weighttui.cli, weighttui.data.run, weighttui.cli.info, weighttui.cli.export\n"
        "try:\n    import weighttui.tui.app\nexcept ImportError:\n    pass\n"
        "try:\n    import weighttui.analysis.diagnose\nexcept ImportError:\n    pass\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FRAMEWORKS)!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
