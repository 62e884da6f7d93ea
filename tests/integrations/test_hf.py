"""weighttui.hf.WeightCallback in a real (tiny, randomly initialised) Transformers Trainer run."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerState, TrainingArguments

import weighttui
from weighttui.hf import WeightCallback

pytestmark = pytest.mark.torch


class Tokens(torch.utils.data.Dataset):
    """Synthetic next-token data: nothing is downloaded."""

    def __init__(self, n=64, length=16, vocab=64):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def train(tmp_path, callback, steps=6, **extra):
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=8,
                             learning_rate=1e-3, logging_steps=2, report_to=[], save_strategy="no",
                             use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0, **extra)
    model = tiny_gpt2()
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[callback])
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf")
    log = tmp / "run.wtui"
    # no clipping (max_grad_norm huge), so the Trainer's logged grad_norm is the
    # norm of exactly the gradients the callback saw
    trainer = train(tmp, WeightCallback(str(log), every=2, full_every=6, bins=32), max_grad_norm=1e9)
    return trainer, weighttui.open(log)


def test_weights_are_recorded_every_n_steps(trained):
    trainer, run = trained
    assert run.steps.tolist() == [0, 2, 4, 6]
    assert run.status == "finished" and run.run.framework.startswith("torch")
    names = [n for n, _ in trainer.model.named_parameters()]
    assert run.tensor_names == names  # tied lm_head/wte shows once, as in named_parameters
    assert run.tensor("transformer.h.0.attn.c_attn.weight").dtype == "float32"
    final = run.weights(step=6)
    for name, p in trainer.model.named_parameters():
        np.testing.assert_array_equal(final[name], p.detach().numpy())
    # the weights moved, and the delta statistics say by how much
    ratio = run.stat_matrix("delta", "ratio")
    assert np.isnan(ratio[0]).all() and (ratio[1:] > 0).all()


def test_gradients_match_the_trainers_grad_norm(trained):
    _trainer, run = trained
    norms = run.stat_matrix("grad", "norm")
    assert np.isnan(norms[0]).all()  # no gradient before the first step
    total = np.sqrt((norms[1:] ** 2).sum(axis=1))
    steps, logged = run.scalars("grad_norm")
    assert steps.tolist() == [2, 4, 6]
    np.testing.assert_allclose(total, logged, rtol=1e-4)


def test_trainer_logs_become_scalars(trained):
    _trainer, run = trained
    assert {"loss", "learning_rate", "grad_norm", "epoch_progress"} <= set(run.scalar_names)
    steps, loss = run.scalars("loss")
    assert steps.tolist() == [2, 4, 6] and np.isfinite(loss).all()


def test_only_world_process_zero_writes(tmp_path):
    log = tmp_path / "rank1.wtui"
    cb = WeightCallback(str(log), every=1)
    state = TrainerState()
    state.is_world_process_zero = False
    args = TrainingArguments(output_dir=str(tmp_path / "o"), report_to=[], use_cpu=True)
    model = tiny_gpt2()
    cb.on_train_begin(args, state, None, model=model)
    cb.on_pre_optimizer_step(args, state, None, model=model)
    cb.on_step_end(args, state, None, model=model)
    cb.on_log(args, state, None, logs={"loss": 1.0})
    cb.on_train_end(args, state, None, model=model)
    assert not log.exists()
