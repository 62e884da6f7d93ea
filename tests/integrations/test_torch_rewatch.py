"""watch() twice on one model/optimizer without close() (a notebook cell run again)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import weighttui  # noqa: E402
import weighttui.torch as wt  # noqa: E402


def hooks(opt) -> int:
    return len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks)


@pytest.mark.parametrize("same_path", [True, False])
def test_watching_again_drops_the_earlier_hooks(tmp_path, capfd, same_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    first_path = tmp_path / "run.wtui"
    second_path = first_path if same_path else tmp_path / "again.wtui"
    first = wt.watch(model, first_path, optimizer=opt)
    assert hooks(opt) == 2
    second = wt.watch(model, second_path, optimizer=opt)  # the cell run again
    assert hooks(opt) == 2  # not 4: each step is recorded once
    x = torch.randn(8, 4)
    for _ in range(5):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    second.close()
    first.close()  # already closed: nothing happens
    err = capfd.readouterr().err
    assert err.count("already watched") == 1
    run = weighttui.open(second_path)
    assert run.corruptions == [] and run.status == "finished"
    assert run.steps.tolist() == [0, 1, 2, 3, 4, 5]
    if same_path:  # mode="w": the new run replaced the earlier one, after it was closed
        assert len(run.runs) == 1
    else:
        earlier = weighttui.open(first_path)
        assert earlier.corruptions == [] and earlier.status == "interrupted"


def test_a_handle_left_open_records_the_end_of_training_at_exit(tmp_path):
    """No handle.close(): at interpreter exit the handle ends the epoch in progress
    (its complete values) and takes the last snapshot before the log closes."""
    import os
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "run.wtui"
    script = textwrap.dedent("""
        import sys, torch, weighttui.torch as wt
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        handle = wt.watch(model, sys.argv[1], optimizer=opt, every=5, full_epochs=[1])
        for epoch in range(2):
            handle.set_epoch(epoch)
            for _ in range(4):
                opt.zero_grad(); model(torch.randn(8, 4)).sum().backward(); opt.step()
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, sys.argv[1] + ".pt")
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    run = weighttui.open(path)
    assert run.status == "finished" and run.steps.tolist() == [0, 5, 8]
    final = torch.load(str(path) + ".pt")
    assert run.full_steps == [8]
    assert run.weights(epoch=1)["weight"].tobytes() == final["weight"].numpy().tobytes()
