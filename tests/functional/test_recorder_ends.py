"""How a recording ends and what it says about it: an eleventh-session audit of issue 18's promises
(a clean exit is not a failure, a full_epochs note that is true, nothing left out unsaid).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import weighttui
import weighttui.torch as wtorch


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})


EXIT_IN_WITH = """
    import sys
    import numpy as np
    import weighttui
    path, how, code = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if how == "numpy":
        with weighttui.Recorder(path) as rec:
            rec.snapshot(0, {"w": np.ones(3, np.float32)})
            sys.exit(code)
    import torch, weighttui.torch
    model = torch.nn.Linear(2, 2)
    with weighttui.torch.watch(model, path):
        sys.exit(code)
"""


@pytest.mark.parametrize("how", ["numpy", "torch"])
@pytest.mark.parametrize("code", [0, 3])
def test_sys_exit_inside_the_with_block_ends_as_its_code_says(tmp_path, how, code):
    """sys.exit(0) inside `with Recorder(...)` / `with watch(...)` was logged as failed (SystemExit: 0)."""
    path = tmp_path / "run.wtui"
    proc = _python(EXIT_IN_WITH, str(path), how, str(code))
    assert proc.returncode == code, proc.stderr
    run = weighttui.open(path, cache=False)
    if code == 0:
        assert run.status == "finished" and run.end.error_type is None
    else:
        assert run.status == "failed" and run.end.error_type == "SystemExit" and run.end.error_message == "3"


def test_full_epochs_note_of_a_run_that_died_during_the_chosen_epoch(tmp_path, capsys):
    """The note said "the epochs recorded were 0..0, none of them chosen" when epoch 0 was chosen and the run
    failed during it."""
    path = tmp_path / "np.wtui"
    with pytest.raises(ValueError), weighttui.Recorder(path, full_epochs=[0]) as rec:
        for step in range(6):
            rec.snapshot(step, {"w": np.ones(3, np.float32)}, epoch=0)
        raise ValueError("diverged")
    err = capsys.readouterr().err
    assert "full_epochs=[0] stored nothing: epoch 0 was chosen but did not end (the run failed during it)" in err
    assert "none of them chosen" not in err


def test_full_epochs_note_after_set_epoch_names_the_epoch(tmp_path, capsys):
    """With weighttui.torch, handle.set_epoch(0) did not count as saying the epoch: the note claimed no call
    said which epoch it was in."""
    path = tmp_path / "pt.wtui"
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    handle = wtorch.watch(model, path, optimizer=opt, every=5, full_epochs=[0])
    handle.set_epoch(0)
    for _ in range(6):
        opt.zero_grad()
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
    handle.close("interrupted")
    err = capsys.readouterr().err
    assert "epoch 0 was chosen but did not end (the run was interrupted during it)" in err
    assert "no call said which epoch" not in err


def test_a_complex_parameter_is_left_out_and_said(tmp_path, capsys):
    """torch dropped a complex (or float8) parameter with nothing on stderr or in the log; the numpy Recorder
    says it once (docs/core.md: a tensor that cannot be recorded)."""
    path = tmp_path / "cplx.wtui"
    model = torch.nn.Linear(3, 3)
    model.register_parameter("c", torch.nn.Parameter(torch.randn(4, dtype=torch.complex64)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with wtorch.watch(model, path, optimizer=opt) as handle:
        for _ in range(3):
            opt.zero_grad()
            (model(torch.randn(2, 3)).sum() + model.c.abs().sum()).backward()
            opt.step()
            handle.step()
    err = capsys.readouterr().err
    assert err.count("tensor 'c' skipped: cannot record dtype complex64") == 1
    run = weighttui.open(path, cache=False)
    assert [t.name for t in run.tensors] == ["weight", "bias"]
    assert [e.kind for e in run.events].count("tensor_skipped") == 1


def test_watch_with_epochs_keeps_the_initial_snapshot(tmp_path):
    """`epochs=2` left out step 0 (the model as watch() found it), which Keras keeps (docs/torch.md)."""
    path = tmp_path / "ep.wtui"
    model = torch.nn.Linear(2, 2)
    start = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with wtorch.watch(model, path, optimizer=opt, every=1, epochs=2) as handle:
        for epoch in range(4):
            handle.set_epoch(epoch)
            for _ in range(2):
                opt.zero_grad()
                model(torch.randn(2, 2)).sum().backward()
                opt.step()
    run = weighttui.open(path, cache=False)
    steps = run.steps.tolist()
    assert steps == [0, 1, 2, 5, 6, 8]  # (8: the end of training, recorded at close)
    _s, norms = run.series("weight", "norm")
    assert norms[0] == pytest.approx(float(start.double().norm()), rel=1e-6)


def test_snapshots_after_end_epoch_belong_to_the_next_epoch(tmp_path):
    """After handle.end_epoch(0) the next steps' snapshots were still tagged epoch 0 (until end_epoch(1)), so
    `info` and `weights(epoch=0)` saw epoch 0 going on past its end."""
    path = tmp_path / "ends.wtui"
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ends = {}
    with wtorch.watch(model, path, optimizer=opt, every=2, full_epochs=[0, 1]) as handle:
        for epoch in range(3):
            for _ in range(4):
                opt.zero_grad()
                model(torch.randn(2, 2)).sum().backward()
                opt.step()
            ends[epoch] = model.weight.detach().clone()
            handle.end_epoch(epoch)
    run = weighttui.open(path, cache=False)
    steps, epochs, _t = run.snapshot_meta()
    tagged = dict(zip(steps.tolist(), epochs.tolist(), strict=True))
    assert tagged == {0: -1, 2: -1, 4: -1, 6: 1, 8: 1, 10: 2, 12: 2}  # (epoch 0 is named only at its end)
    for epoch in (0, 1):
        assert np.array_equal(run.weights(epoch=epoch)["weight"], ends[epoch].numpy())
