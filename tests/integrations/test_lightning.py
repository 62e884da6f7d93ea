"""weighttui.lightning.WeightCallback in a real (tiny) Lightning Trainer.fit run."""

from __future__ import annotations

import types

import numpy as np
import pytest

L = pytest.importorskip("lightning.pytorch")
import torch  # noqa: E402

import weighttui  # noqa: E402
from weighttui.lightning import WeightCallback  # noqa: E402

pytestmark = pytest.mark.torch
LR = 0.05


def make_module(base):
    class Regressor(base):
        """y = x A + noise with a small MLP and plain SGD (so update = -lr * gradient)."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
            self.frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    return Regressor()


def loader():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 6, generator=g)
    y = x @ torch.randn(6, 1, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


def fit(trainer_cls, module, callback, **extra):
    trainer = trainer_cls(max_steps=5, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, callbacks=[callback], **extra)
    trainer.fit(module, loader())
    return trainer


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    log = tmp_path_factory.mktemp("pl") / "run.wtui"
    module = make_module(L.LightningModule)
    fit(L.Trainer, module, WeightCallback(str(log), every=1, full_every=5), accumulate_grad_batches=2)
    return module, weighttui.open(log)


def test_records_each_optimizer_step_with_gradients(fitted):
    module, run = fitted
    # 5 optimizer steps of 2 accumulated batches each, plus the weights before training
    assert run.steps.tolist() == [0, 1, 2, 3, 4, 5] and run.status == "finished"
    assert run.tensor_names == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]  # trainable only
    final = run.weights(step=5)
    for name, p in module.named_parameters():
        if p.requires_grad:
            np.testing.assert_array_equal(final[name], p.detach().numpy())


def test_gradients_are_the_ones_the_optimizer_used(fitted):
    _module, run = fitted
    grad = run.stat_matrix("grad", "norm")
    delta = run.stat_matrix("delta", "norm")
    assert np.isnan(grad[0]).all() and (grad[1:] > 0).all()
    # plain SGD: the update of step k is exactly -lr times the gradient stored at step k
    np.testing.assert_allclose(delta[1:], LR * grad[1:], rtol=1e-4)


def test_logged_metrics_become_scalars(fitted):
    _module, run = fitted
    steps, loss = run.scalars("train_loss")
    assert steps.tolist() == [1, 2, 3, 4, 5] and np.isfinite(loss).all()


def test_only_global_rank_zero_writes(tmp_path):
    log = tmp_path / "rank1.wtui"
    cb = WeightCallback(str(log), every=1)
    trainer = types.SimpleNamespace(is_global_zero=False, global_step=0, current_epoch=0, callback_metrics={})
    module = make_module(L.LightningModule)
    cb.on_fit_start(trainer, module)
    cb.on_before_optimizer_step(trainer, module, None)
    cb.on_train_batch_end(trainer, module, None, None, 0)
    cb.on_fit_end(trainer, module)
    assert not log.exists()


def test_pytorch_lightning_package_gets_its_own_callback(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    from weighttui.lightning import PLWeightCallback

    log = tmp_path / "pl.wtui"
    fit(pl.Trainer, make_module(pl.LightningModule), PLWeightCallback(str(log), every=2))
    run = weighttui.open(log)
    # 0: before training; 5: the end of training (a final snapshot whatever `every` says)
    assert run.steps.tolist() == [0, 2, 4, 5] and "pytorch_lightning" in run.run.framework


def test_statistics_come_from_the_torch_integration(tmp_path, monkeypatch):
    """One host transfer per snapshot (weights, deltas, gradients together), and
    the torch options (delta policy) reach it."""
    from weighttui.integrations import torch_host

    copies = []
    real = torch_host.to_host
    monkeypatch.setattr(torch_host, "to_host", lambda parts: copies.append(len(parts)) or real(parts))
    log = tmp_path / "sampled.wtui"
    cb = WeightCallback(str(log), every=2, delta="sample")
    fit(L.Trainer, make_module(L.LightningModule), cb)
    run = weighttui.open(log)
    assert run.steps.tolist() == [0, 2, 4, 5] and len(copies) == 4
    exact = run.stat_matrix("delta", "exact")
    assert (exact[1:] == 0).all()  # deltas from the sampled elements, as asked
    assert np.isfinite(run.stat_matrix("grad", "norm")[1:]).all()
    with weighttui.Recorder(tmp_path / "own.wtui") as own, pytest.raises(TypeError):
        WeightCallback(own, bins=8)  # recorder options go to the Recorder you made


def test_a_failing_hook_is_reported_once_and_training_goes_on(tmp_path, capsys):
    """The shared trainer recording's Reporter: one line on stderr, one event in the log, fit() unharmed."""
    log = tmp_path / "run.wtui"
    callback = WeightCallback(str(log), every=1)

    def broken(trainer):
        raise RuntimeError("metrics went away")

    callback._metrics = broken
    module = make_module(L.LightningModule)
    trainer = fit(L.Trainer, module, callback)
    assert trainer.global_step == 5
    err = capsys.readouterr().err
    assert err.count("weighttui: skipped while recording metrics: RuntimeError: metrics went away") == 1
    run = weighttui.open(log)
    assert run.status == "finished" and run.steps.tolist() == [0, 1, 2, 3, 4, 5]
    assert [(e.kind, e.level) for e in run.events if "metrics went away" in e.message] == [("recorder_error", "error")]
