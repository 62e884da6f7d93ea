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
