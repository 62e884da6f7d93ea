"""Every import path README.md and docs/ show users keeps working, whatever the package layout inside."""

from __future__ import annotations

import importlib
import inspect

import pytest

# (module, names it must offer, a framework it needs or None): the paths as the docs write them.
PUBLIC = [
    ("weighttui", ["open", "Recorder", "RunData", "LogFormatError", "__version__"], None),
    ("weighttui.diagnose", ["diagnose", "DiagnoseConfig", "Alert"], None),
    ("weighttui.remote", ["parse_remote", "RemoteMirror", "fetch"], None),
    ("weighttui.demo", ["main", "train"], None),
    ("weighttui.integrations.tensorboard", ["write_tensorboard"], None),
    ("weighttui.torch", ["watch", "WatchHandle", "DEFAULT_DELTA_BUDGET", "ENGINE_OPTIONS", "split_options"], "torch"),
    ("weighttui.integrations.torch_native", ["available", "UNAVAILABLE"], "torch"),
    ("weighttui.jax", ["recorder", "snapshot", "named_leaves", "path_name", "adam_state"], "jax"),
    ("weighttui.hf", ["WeightCallback"], "transformers"),
    ("weighttui.lightning", ["WeightCallback"], "lightning"),
    ("weighttui.lightning", ["PLWeightCallback"], "pytorch_lightning"),
    ("weighttui.keras", ["WeightCallback"], "keras"),
    ("weighttui.integrations.importers.follow", ["CheckpointFollower"], None),
]


@pytest.mark.parametrize(("module", "names", "needs"), PUBLIC, ids=lambda v: v if isinstance(v, str) else None)
def test_public_path(module, names, needs):
    if needs:
        pytest.importorskip(needs)
    mod = importlib.import_module(module)
    for name in names:
        assert hasattr(mod, name), f"{module}.{name} is gone"


def test_aliased_modules_are_one_module():
    """weighttui.diagnose is the analysis module itself (not a copy): DiagnoseConfig is one class."""
    import weighttui.analysis.diagnose
    import weighttui.data.remote
    import weighttui.diagnose
    import weighttui.remote

    assert weighttui.diagnose is weighttui.analysis.diagnose
    assert weighttui.remote is weighttui.data.remote
    assert weighttui.diagnose.DiagnoseConfig.from_options(["ratio_high=0.05"]).ratio_high == 0.05


def test_documented_calls_keep_their_signatures():
    import weighttui
    import weighttui.diagnose

    assert list(inspect.signature(weighttui.diagnose.diagnose).parameters)[:2] == ["run", "config"]
    rec = inspect.signature(weighttui.Recorder).parameters
    assert {"every", "full_epochs", "meta"} <= set(rec)
    assert callable(weighttui.open)


def test_the_extension_stub_matches_the_extension():
    """weighttui/_fastats.pyi names what the built module has, with the parameters its docstring gives."""
    import ast
    from pathlib import Path

    import weighttui

    fastats = pytest.importorskip("weighttui._fastats", reason="the C extension is not built here")
    stub = ast.parse((Path(weighttui.__file__).parent / "_fastats.pyi").read_text())
    declared = {n.name: n for n in stub.body if isinstance(n, ast.FunctionDef)}
    declared_vars = {n.target.id for n in stub.body if isinstance(n, ast.AnnAssign)}
    public = {n for n in dir(fastats) if not n.startswith("_")}
    assert public == set(declared) | declared_vars
    for name, fn in declared.items():
        args = fn.args.posonlyargs + fn.args.args
        defaults = [None] * (len(args) - len(fn.args.defaults)) + fn.args.defaults
        params = [a.arg if d is None else f"{a.arg}={ast.unparse(d)}" for a, d in zip(args, defaults, strict=True)]
        assert getattr(fastats, name).__doc__.startswith(f"{name}({', '.join(params)}) ->")
