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
    ("weighttui.torch", ["watch", "WatchHandle", "DEFAULT_DELTA_BUDGET"], "torch"),
    ("weighttui.integrations.torch_native", ["available", "UNAVAILABLE"], "torch"),
    ("weighttui.jax", ["recorder", "snapshot", "named_leaves", "path_name"], "jax"),
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
