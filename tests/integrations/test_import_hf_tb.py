"""weighttui import of a real HF Trainer output directory and of real SummaryWriter event files."""

from __future__ import annotations

import numpy as np
import pytest

import weighttui
from weighttui.integrations.importers.driver import import_source


def test_hf_trainer_checkpoints(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.numpy import load_file

    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    ids = torch.randint(0, 50, (16, 8))
    ds = [{"input_ids": ids[i], "labels": int(i % 2)} for i in range(16)]
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4,
                                          num_train_epochs=2, save_steps=2, logging_steps=1, report_to=[],
                                          use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ds)
    trainer.train()
    # as the HF example scripts end: the final model and state next to the checkpoints (which still count)
    trainer.save_model()
    trainer.save_state()
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path / "out"), out)
    run = weighttui.open(out)
    assert list(run.steps) == [2, 4, 6, 8]  # the final model is step 8's: skipped as a copy
    assert run.run.meta["import"]["kind"] == "hf_trainer"
    assert run.run.meta["import"]["checkpoints"] == 4  # the final model, a copy of step 8's, is not counted
    assert run.run.meta["import"]["step_from"] == {"metadata": 4}  # nor in where the steps came from
    steps, loss = run.scalars("loss")
    assert list(steps) == list(range(1, 9)) and np.all(np.isfinite(loss))
    assert "learning_rate" in run.scalar_names
    saved = load_file(str(tmp_path / "out" / "checkpoint-8" / "model.safetensors"))
    got = run.weights(epoch=2)
    assert all(np.array_equal(got[k], v) for k, v in saved.items())
    # the checkpoint folders through a glob: the same steps, epochs and scalars (their trainer_state.json)
    globbed = str(tmp_path / "glob.wtui")
    import_source(str(tmp_path / "out" / "checkpoint-*"), globbed)
    g = weighttui.open(globbed)
    assert list(g.steps) == [2, 4, 6, 8] and list(g.epochs) == list(run.epochs)
    assert g.run.meta["import"]["kind"] == "hf_trainer" and list(g.scalars("loss")[0]) == list(range(1, 9))


def test_tensorboard_histograms_and_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(0)
    w = SummaryWriter(str(tmp_path / "tb"))
    data = {}
    for step in range(0, 30, 10):
        x = rng.standard_normal(1000) * (1 + step / 10)
        data[step] = x
        w.add_histogram("layer1/weight", x, step)
        w.add_scalar("loss", 1.0 / (step + 1), step)
    w.add_scalar("loss", 0.01, 35)
    w.close()
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path / "tb"), out)
    run = weighttui.open(out)
    assert list(run.steps) == [0, 10, 20]
    steps, std = run.series("layer1/weight", "std")
    assert std == pytest.approx([data[s].std() for s in steps], rel=1e-6)
    steps, mx = run.series("layer1/weight", "max")
    assert mx == pytest.approx([data[s].max() for s in steps])
    steps, loss = run.scalars("loss")
    assert list(steps) == [0, 10, 20, 35]


def test_tensorboard_wall_times_are_the_snapshots_times(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(1)
    w = SummaryWriter(str(tmp_path / "tb"))
    logged = {step: 1.6e9 + 60.0 * step for step in (0, 5, 10)}  # when training logged them
    for step, wall in logged.items():
        w.add_histogram("fc/weight", rng.standard_normal(100), step, walltime=wall)
        w.add_histogram("fc/bias", rng.standard_normal(10), step, walltime=wall + 0.5)
    w.close()
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path / "tb"), out)
    run = weighttui.open(out)
    assert list(run.steps) == [0, 5, 10]
    assert run.times.tolist() == pytest.approx([logged[s] + 0.5 for s in (0, 5, 10)])  # the step's last value
