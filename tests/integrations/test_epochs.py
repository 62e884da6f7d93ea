"""One meaning of "the weights at epoch N" in every integration (docs/core.md, "Epochs").

The complete values of epoch N are the weights when epoch N has ended (after its
last optimizer step), stored once with that step; every integration also
records a last snapshot when training ends. Each case compares
`weights(epoch=N)` with clones taken at that moment, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import weighttui  # noqa: E402
import weighttui.torch as wt  # noqa: E402

pytestmark = pytest.mark.torch


def assert_same(got: dict, clones: dict) -> None:
    assert set(got) >= set(clones)
    for name, t in clones.items():
        assert got[name].tobytes() == t.numpy().tobytes(), name


def clone(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ------------------------------------------------------------------- PyTorch

HOWS = ["end_epoch", "set_epoch", "step_epoch", "step_epoch_no_optimizer"]


def torch_loop(path, how, epochs=3, steps=5, full_epochs=(0, 2)):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hooked = how != "step_epoch_no_optimizer"
    handle = wt.watch(model, path, optimizer=opt if hooked else None, every=4, full_epochs=list(full_epochs))
    x = torch.randn(16, 6)
    ends, step = {}, 0
    for epoch in range(epochs):
        if how == "set_epoch":
            handle.set_epoch(epoch)
        for _ in range(steps):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
            step += 1
            if how.startswith("step_epoch"):
                handle.step(epoch=epoch)
        ends[epoch] = (step, clone(model))
        if how == "end_epoch":
            handle.end_epoch(epoch)
    handle.close()
    return ends, step


@pytest.mark.parametrize("how", HOWS)
def test_torch_every_way_of_marking_epochs_stores_their_end(tmp_path, how):
    path = tmp_path / "run.wtui"
    ends, last = torch_loop(path, how)
    run = weighttui.open(path)
    assert run.full_steps == [ends[0][0], ends[2][0]] == [5, 15]
    for epoch in (0, 2):
        assert_same(run.weights(epoch=epoch), ends[epoch][1])
    with pytest.raises(KeyError):
        run.weights(epoch=1)  # not chosen
    assert run.steps.tolist() == [0, 4, 8, 12, last]  # every=4, and the end of training


def test_torch_last_step_recorded_whatever_every_says(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with wt.watch(model, tmp_path / "run.wtui", optimizer=opt, every=5):
        for _ in range(13):
            opt.zero_grad()
            model(torch.randn(8, 4)).sum().backward()
            opt.step()
        final = clone(model)
    run = weighttui.open(tmp_path / "run.wtui")
    assert run.steps.tolist() == [0, 5, 10, 13]
    got = run.series("weight", "norm")[1][-1]
    assert got == pytest.approx(float(final["weight"].double().norm()), rel=1e-6)
    assert np.isfinite(run.series("weight", "norm", "grad")[1][-1])  # the last step's gradients


def test_torch_full_epochs_never_marked_is_said_at_close(tmp_path, capfd):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = wt.watch(model, tmp_path / "run.wtui", optimizer=opt, full_epochs=[1])
    for _ in range(4):  # the README loop: nothing says where epochs end
        opt.zero_grad()
        model(torch.randn(8, 4)).sum().backward()
        opt.step()
    handle.close()
    err = capfd.readouterr().err
    assert err.count("full_epochs=[1] stored nothing") == 1 and "set_epoch" in err


# ------------------------------------------------------------ Hugging Face

def test_hf_trainer_epoch_n_is_the_end_of_its_nth_pass(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from weighttui.hf import WeightCallback

    class Tokens(torch.utils.data.Dataset):
        def __init__(self):
            self.ids = torch.randint(0, 64, (32, 8), generator=torch.Generator().manual_seed(0))

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.ids[i]}

    ends = {}

    class Clones(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            ends[len(ends)] = (state.global_step, clone(model))

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), num_train_epochs=3, per_device_train_batch_size=8,
                             learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=True,
                             disable_tqdm=True, dataloader_num_workers=0, seed=0, logging_steps=100)
    log = tmp_path / "run.wtui"
    Trainer(model=model, args=args, train_dataset=Tokens(),
            callbacks=[WeightCallback(str(log), every=5, full_epochs=[0, 2]), Clones()]).train()
    run = weighttui.open(log)
    assert [s for s, _ in ends.values()] == [4, 8, 12]
    assert run.full_steps == [4, 12]
    assert_same(run.weights(epoch=0), ends[0][1])
    assert_same(run.weights(epoch=2), ends[2][1])
    assert run.steps.tolist() == [0, 5, 10, 12]  # the end of training is recorded
    epochs = dict(zip(run.steps.tolist(), run.epochs.tolist(), strict=True))
    assert epochs[5] == 1 and epochs[12] == 2  # 0-based, the epoch each step belongs to


# --------------------------------------------------------------- Lightning

def test_lightning_epoch_n_is_on_train_epoch_end(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from weighttui.lightning import WeightCallback

    class Regressor(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    ends = {}

    class Clones(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            ends[trainer.current_epoch] = (trainer.global_step, clone(pl_module))

    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x[:, :1]), batch_size=16)
    log = tmp_path / "run.wtui"
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[WeightCallback(str(log), every=5, full_epochs=[0, 2]), Clones()])
    trainer.fit(Regressor(), data)
    run = weighttui.open(log)
    assert [s for s, _ in ends.values()] == [4, 8, 12]
    assert run.full_steps == [4, 12]
    assert_same(run.weights(epoch=0), ends[0][1])
    assert_same(run.weights(epoch=2), ends[2][1])
    assert run.steps.tolist() == [0, 5, 10, 12]
    assert run.status == "finished"


# ---------------------------------------------------------------------- JAX

def test_jax_epoch_n_is_its_last_call(tmp_path):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    import weighttui.jax as wj

    params = {"dense": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}}
    rec = wj.recorder(tmp_path / "run.wtui", every=4, full_epochs=[0, 1])
    ends = {}
    step = 0
    for epoch in range(2):
        for _ in range(3):
            step += 1
            params = jax.tree_util.tree_map(lambda p: p * 0.9 + 0.1, params)
            wj.snapshot(rec, step, params, epoch=epoch)
        ends[epoch] = (step, jax.device_get(params))
    rec.close()
    run = weighttui.open(tmp_path / "run.wtui")
    assert run.full_steps == [3, 6] and run.steps.tolist() == [4]
    for epoch, (_s, host) in ends.items():
        got = run.weights(epoch=epoch)
        assert np.asarray(host["dense"]["w"]).tobytes() == got["dense/w"].tobytes()
