"""weighttui import of checkpoint folders written by the real libraries: values bit for bit, steps, epochs, deltas."""

from __future__ import annotations

import os

import numpy as np
import pytest

import weighttui
from weighttui.cli.info import info_dict
from weighttui.integrations.importers.driver import import_source


def _models(n=3, seed=0):
    rng = np.random.default_rng(seed)
    w = {"enc.weight": rng.standard_normal((40, 30)).astype(np.float32),
         "enc.bias": rng.standard_normal(30).astype(np.float32),
         "head.weight": rng.standard_normal((30, 3)).astype(np.float32)}
    out = []
    for _ in range(n):
        w = {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in w.items()}
        out.append(w)
    return out


def _check(run, models, epochs):
    assert list(run.steps) == sorted(run.steps)
    for e, m in zip(epochs, models, strict=True):
        got = run.weights(epoch=e)
        assert set(got) == set(m)
        for k in m:
            assert got[k].dtype == m[k].dtype and np.array_equal(got[k], m[k]), k
    steps, ratio = run.series("enc.weight", "ratio", kind="delta")
    assert np.isnan(ratio[0]) and np.all(np.isfinite(ratio[1:]))
    prev, now = models[0]["enc.weight"].astype(np.float64), models[1]["enc.weight"].astype(np.float64)
    assert ratio[1] == pytest.approx(np.linalg.norm(now - prev) / np.linalg.norm(prev), rel=1e-9)


def test_safetensors_epoch_names(tmp_path):
    from safetensors.numpy import save_file

    models = _models()
    for i, m in enumerate(models, start=1):
        save_file(m, str(tmp_path / f"epoch_{i}.safetensors"))
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path), out)
    run = weighttui.open(out)
    _check(run, models, [1, 2, 3])
    assert run.run.meta["import"]["epoch_from"] == {"name": 3}


def test_torch_save_state_dicts_and_bf16(tmp_path):
    torch = pytest.importorskip("torch")
    models = _models()
    for i, m in enumerate(models):
        torch.save({k: torch.from_numpy(v) for k, v in m.items()}, str(tmp_path / f"epoch_{i * 10}.pt"))
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path / "epoch_*.pt"), out)
    run = weighttui.open(out)
    _check(run, models, [0, 10, 20])
    bf = torch.randn(8, 4).to(torch.bfloat16)
    torch.save({"w": bf}, str(tmp_path / "bf16.pth"))
    import_source(str(tmp_path / "bf16.pth"), out)
    got = weighttui.open(out).weights()["w"]
    assert np.array_equal(got, bf.float().numpy())


def test_lightning_style_checkpoint_metadata(tmp_path):
    torch = pytest.importorskip("torch")
    models = _models()
    for i, m in enumerate(models):
        state = {k: torch.from_numpy(v) for k, v in m.items()}
        torch.save({"epoch": i, "global_step": 100 * (i + 1), "state_dict": state,
                    "optimizer_states": [], "hyper_parameters": {"lr": 0.1}}, str(tmp_path / f"last-v{i}.ckpt"))
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path), out)
    run = weighttui.open(out)
    assert list(run.steps) == [100, 200, 300]
    _check(run, models, [0, 1, 2])
    assert run.run.meta["import"]["step_from"] == {"metadata": 3}


def test_real_lightning_trainer_ckpt(tmp_path):
    torch = pytest.importorskip("torch")
    L = pytest.importorskip("lightning")

    class M(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.save_hyperparameters()
            self.lin = torch.nn.Linear(3, 2)

        def training_step(self, batch, i):
            return self.lin(batch[0]).pow(2).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    ds = torch.utils.data.TensorDataset(torch.randn(8, 3))
    cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ck"), every_n_epochs=1, save_top_k=-1)
    model = M()
    L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, callbacks=[cb],
              enable_model_summary=False).fit(model, torch.utils.data.DataLoader(ds, batch_size=4))
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path / "ck"), out)
    run = weighttui.open(out)
    assert list(run.steps) == [2, 4]
    assert np.array_equal(run.weights(epoch=1)["lin.weight"], model.lin.weight.detach().numpy())


def test_keras_save_weights_and_model_save(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.random.default_rng(1).standard_normal((16, 4)), np.zeros((16, 1))
    dumped = []
    for epoch in range(2):
        model.fit(x, y, epochs=1, verbose=0)
        model.save_weights(str(tmp_path / f"w_epoch_{epoch}.weights.h5"))
        dumped.append([np.array(w) for w in model.get_weights()])
    model.save(str(tmp_path / "model_epoch_2.keras"))
    dumped.append([np.array(w) for w in model.get_weights()])
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path), out)
    run = weighttui.open(out)
    for epoch, ws in enumerate(dumped):
        got = run.weights(epoch=epoch)
        names = ("dense/vars/0", "dense/vars/1", "dense_1/vars/0", "dense_1/vars/1")
        assert all(np.array_equal(got[k], w) for k, w in zip(names, ws, strict=True))


def test_h5py_npz_json(tmp_path):
    import json

    import h5py

    models = _models()
    for i, m in enumerate(models):
        with h5py.File(tmp_path / f"h5_step{i}.h5", "w") as f:
            for k, v in m.items():
                f.create_dataset(k, data=v)
    out = str(tmp_path / "h5.wtui")
    import_source(str(tmp_path / "h5_*.h5"), out)
    run = weighttui.open(out)
    assert np.array_equal(run.weights(step=2)["enc.weight"], models[2]["enc.weight"])
    for i, m in enumerate(models):
        np.savez(tmp_path / f"dump_{i}.npz", **m)
        with open(tmp_path / f"weights_epoch_{i}.json", "w") as f:
            json.dump({k: v.tolist() for k, v in m.items()}, f)
    for pattern in ("dump_*.npz", "weights_epoch_*.json"):
        out = str(tmp_path / "x.wtui")
        import_source(str(tmp_path / pattern), out)
        run = weighttui.open(out)
        for i, m in enumerate(models):
            got = run.weights(step=i)
            assert all(np.array_equal(got[k], m[k]) for k in m), pattern


def test_bad_files_are_named_and_skipped(tmp_path, capsys):
    from safetensors.numpy import save_file

    models = _models(4)
    for i, m in enumerate(models):
        save_file(m, str(tmp_path / f"step_{i}.safetensors"))
    data = (tmp_path / "step_1.safetensors").read_bytes()
    (tmp_path / "step_1.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    save_file({**models[2], "enc.weight": np.zeros((5, 5), np.float32)}, str(tmp_path / "step_2.safetensors"))
    save_file({k: v for k, v in models[3].items() if k != "enc.bias"}, str(tmp_path / "step_3.safetensors"))
    (tmp_path / "step_4.safetensors").write_bytes(b"this is not a checkpoint")
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path), out)
    err = capsys.readouterr().err.splitlines()
    assert any("step_1.safetensors" in ln and "truncated" in ln for ln in err)
    assert any("step_2.safetensors" in ln and "changed shape" in ln for ln in err)
    assert any("step_3.safetensors" in ln and "missing enc.bias" in ln for ln in err)
    assert any("step_4.safetensors" in ln for ln in err)
    run = weighttui.open(out)
    assert list(run.steps) == [0, 2, 3]
    assert np.array_equal(run.weights(step=3)["head.weight"], models[3]["head.weight"])


def test_a_file_that_is_no_pytorch_file_is_not_called_a_refused_pickle(tmp_path, capsys):
    pytest.importorskip("torch")
    (tmp_path / "step_1.pt").write_bytes(bytes([155]) * 300)  # an unpickler reads opcode 155 and gives up
    (tmp_path / "step_2.pt").write_text("hello, not a checkpoint\n")
    from weighttui.integrations.importers.base import ImportFileError

    (tmp_path / "run.wtui").write_bytes(b"")  # what was there before: left alone when nothing could be read
    with pytest.raises(ImportFileError, match="none of its 2 checkpoint"):
        import_source(str(tmp_path), str(tmp_path / "run.wtui"))
    assert (tmp_path / "run.wtui").read_bytes() == b""
    err = capsys.readouterr().err
    for name in ("step_1.pt", "step_2.pt"):
        assert f"skipped {name}: not a PyTorch file (neither the zip archive torch.save writes nor a pickle)" in err
    assert "arbitrary pickles" not in err


def test_no_values(tmp_path):
    from safetensors.numpy import save_file

    for i, m in enumerate(_models()):
        save_file(m, str(tmp_path / f"epoch_{i}.safetensors"))
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path), out, values=False)
    run = weighttui.open(out)
    assert run.n == 3 and run.full_steps == []


def test_pytorch_tutorial_checkpoint_dict_epoch_and_loss(tmp_path, capsys):
    """The PyTorch tutorial's `torch.save({'epoch': e, 'model_state_dict': ..., 'optimizer_state_dict': ...,
    'loss': loss}, path)`: its epoch is the snapshot's epoch and its loss (a 0-d tensor or a float) a scalar at
    that step, as trainer_state.json's are; the meta says where the scalars came from."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 5), torch.randn(16, 2)
    ck = tmp_path / "ck"
    ck.mkdir()
    dumped, losses = [], []
    for epoch in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        dumped.append({k: v.detach().clone().numpy() for k, v in model.state_dict().items()})
        losses.append(float(loss.detach()))
        # the tutorial saves the tensor itself (`'loss': loss`); the float form (loss.item()) is as common
        torch.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                    "optimizer_state_dict": opt.state_dict(),
                    "loss": loss.detach() if epoch != 1 else loss.item()},
                   ck / f"model_{100 * (epoch + 1)}.pt")  # the name's number is the step, not the epoch
    out = str(tmp_path / "run.wtui")
    import_source(str(ck), out)
    run = weighttui.open(out)
    assert list(run.steps) == [100, 200, 300] and list(run.epochs) == [0, 1, 2]
    for epoch, ws in enumerate(dumped):
        got = run.weights(epoch=epoch)
        assert set(got) == {"weight", "bias"}
        assert all(np.array_equal(got[k], v) for k, v in ws.items())
    steps, values = run.scalars("loss")
    assert list(steps) == [100, 200, 300]
    assert values.tolist() == pytest.approx(losses, rel=1e-7)
    meta = run.run.meta["import"]
    assert meta["scalars_from"] == {"checkpoint dict": 3} and meta["epoch_from"] == {"metadata": 3}
    from weighttui.cli.main import main

    capsys.readouterr()
    assert main(["info", out]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("imported:"))
    assert "scalars from: checkpoint dict (3)" in line, line


def test_keras_model_checkpoint_names_give_epochs(tmp_path):
    """Keras' ModelCheckpoint names (`weights.{epoch:02d}-{val_loss:.2f}...`): the first number is the epoch
    (Keras counts from 1 in names: the file after the first epoch is epoch 1); the val_loss digits are never
    the step."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((32, 4)), rng.standard_normal((32, 1))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    dirs = {name: tmp_path / name for name in ("a", "b", "c")}
    for d in dirs.values():
        d.mkdir()
    dumped = []
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(dirs["a"] / "weights.{epoch:02d}-{val_loss:.2f}.weights.h5"),
                                        save_weights_only=True),
        keras.callbacks.ModelCheckpoint(str(dirs["b"] / "model.{epoch:02d}.keras")),
        keras.callbacks.ModelCheckpoint(str(dirs["c"] / "model-epoch{epoch:02d}-val{val_loss:.2f}.keras")),
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, logs: dumped.append([np.array(w) for w in model.get_weights()])),
    ]
    model.fit(x, y, epochs=3, validation_split=0.25, verbose=0, callbacks=callbacks)
    assert sorted(os.listdir(dirs["a"]))[0].startswith("weights.01-")
    names = ("dense/vars/0", "dense/vars/1", "dense_1/vars/0", "dense_1/vars/1")
    for name, d in dirs.items():
        out = str(tmp_path / f"{name}.wtui")
        import_source(str(d), out)
        run = weighttui.open(out)
        assert list(run.epochs) == [1, 2, 3] and list(run.steps) == [1, 2, 3], name
        assert run.run.meta["import"]["epoch_from"] == {"name": 3}, name
        for epoch, ws in enumerate(dumped, start=1):
            got = run.weights(epoch=epoch)
            assert all(np.array_equal(got[k], w) for k, w in zip(names, ws, strict=True)), (name, epoch)


def test_name_numbers_of_keras_names_and_decimals():
    from weighttui.integrations.importers.base import name_numbers

    assert name_numbers("weights.03-0.52.hdf5") == (None, 3)
    assert name_numbers("model.05.h5") == (None, 5)
    assert name_numbers("model-epoch03-val0.52.keras") == (None, 3)
    assert name_numbers("val0.52-model.h5") == (None, None)  # a metric is neither
    assert name_numbers("model_7.pt") == (7, None)  # outside Keras/HDF5 names a bare number is a step
    assert name_numbers("lr0.001_run7.pt") == (7, None)
    assert name_numbers("dump.h5#7") == (7, None)  # a group's bare number is a step, as before
    # a model's name often holds a number: the last one is the checkpoint's
    assert name_numbers("gpt2_500.pt") == (500, None)
    assert name_numbers("resnet50_3.pt") == (3, None)
    assert name_numbers("t5-small-500.safetensors") == (500, None)
    assert name_numbers("vit-b16_00020.pt") == (20, None)
    # a file whose name says nothing takes its folders' (innermost first), where one says or is a number
    assert name_numbers("step_500/model.safetensors") == (500, None)
    assert name_numbers("epoch_3/weights/model.safetensors") == (None, 3)
    assert name_numbers("ckpts/1000/model.pt") == (1000, None)
    assert name_numbers("v2/model.pt") == (None, None)
    assert name_numbers("step_5/epoch_7.pt") == (None, 7)  # the file's own name first


def test_two_files_of_one_step_give_one_snapshot(tmp_path, capsys):
    # Lightning's ModelCheckpoint(save_last=True): last.ckpt holds the newest epoch file's step
    torch = pytest.importorskip("torch")
    models = _models(2)
    for i, m in enumerate(models):
        state = {k: torch.from_numpy(v) for k, v in m.items()}
        torch.save({"epoch": i, "global_step": 100 * (i + 1), "state_dict": state},
                   str(tmp_path / f"epoch={i}-step={100 * (i + 1)}.ckpt"))
    torch.save({"epoch": 1, "global_step": 200, "state_dict": {k: torch.from_numpy(v) for k, v in models[1].items()}},
               str(tmp_path / "last.ckpt"))
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path), out)
    assert "skipped last.ckpt: step 200 is imported already, from epoch=1-step=200.ckpt" in capsys.readouterr().err
    run = weighttui.open(out)
    assert run.steps.tolist() == [100, 200]
    _check(run, models, [0, 1])


def test_a_file_without_step_or_epoch_goes_last(tmp_path):
    torch = pytest.importorskip("torch")
    models = _models(4)

    def save(m, name, **meta):
        state = {k: torch.from_numpy(v) for k, v in m.items()}
        torch.save({**meta, "state_dict": state} if meta else state, str(tmp_path / name))

    save(models[0], "epoch_3.pt")
    save(models[1], "epoch_4.ckpt", epoch=4, global_step=400)
    save(models[2], "epoch_6.pt")
    save(models[3], "final.pt")
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path), out)
    run = weighttui.open(out)
    assert run.steps.tolist() == [3, 400, 401, 402]  # epoch 6 after step 400 of epoch 4, then final
    for step, m in zip([3, 400, 401, 402], models, strict=True):
        assert np.array_equal(run.weights(step=step)["enc.weight"], m["enc.weight"])


def test_refused_pickle_message_is_one_line_cut_at_a_word():
    from weighttui.integrations.importers.torch_state import refusal

    long = ("Weights only load failed. Do it only if you trust the source.\n\tWeightsUnpickler error: Unsupported "
            "operand 149 " + "because the reason goes on and on " * 10)
    msg = refusal(long)
    assert "\n" not in msg and msg.startswith("refused: it needs arbitrary pickles (Unsupported operand 149 ")
    inside = msg[msg.index("(") + 1: msg.index("), which")]
    assert inside.endswith("...") and inside[:-3].split()[-1] in long.split()  # a whole word before the cut
    assert "trust" not in msg and msg.endswith("(torch.save(model.state_dict(), path) or safetensors) to import them")


def test_snapshot_times_are_when_the_checkpoints_were_written(tmp_path):
    """A folder of last month's checkpoints keeps its timeline: each snapshot's time is its file's
    modification time (so `info`'s span and the viewer's rate are the training's), not the import's."""
    from safetensors.numpy import save_file

    written = [1.7e9 + 3600.0 * k for k in range(3)]  # an hour apart, long ago
    for k, m in enumerate(_models(), start=1):
        path = tmp_path / f"epoch_{k}.safetensors"
        save_file(m, str(path))
        os.utime(path, (written[k - 1], written[k - 1]))
    for values in (True, False):  # the per-checkpoint path and the chains
        out = str(tmp_path / f"run{values}.wtui")
        import_source(str(tmp_path), out, values=values)
        run = weighttui.open(out)
        assert list(run.epochs) == [1, 2, 3]
        assert run.times.tolist() == pytest.approx(written, abs=1e-3)
        assert info_dict(run)["time_span_s"] == pytest.approx(7200.0, abs=1e-3)  # info: two hours of training
        assert run.last_time == pytest.approx(written[-1], abs=1e-3)  # "last record": the newest checkpoint's
    # files touched out of step order (epoch 1 saved again last): the span runs from earliest to latest
    os.utime(tmp_path / "epoch_1.safetensors", (written[2] + 60, written[2] + 60))
    import_source(str(tmp_path), str(tmp_path / "again.wtui"))
    assert info_dict(weighttui.open(str(tmp_path / "again.wtui")))["time_span_s"] == pytest.approx(3660.0, abs=1e-3)


def test_several_models_in_one_checkpoint_dict_without_their_optimizers(tmp_path):
    # the GAN recipe: {'epoch', 'generator', 'discriminator', 'optimizerG', 'loss'}
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    gen, disc = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(gen.parameters())
    for epoch in (1, 2):
        gen(torch.randn(4, 3)).sum().backward()
        opt.step()
        torch.save({"epoch": epoch, "generator": gen.state_dict(), "discriminator": disc.state_dict(),
                    "optimizerG": opt.state_dict(), "loss": torch.tensor(0.5 / epoch)},
                   str(tmp_path / f"gan_epoch_{epoch}.pth"))
    out = str(tmp_path / "run.wtui")
    import_source(str(tmp_path), out)
    run = weighttui.open(out)
    assert sorted(run.tensor_names) == ["discriminator.bias", "discriminator.weight", "generator.bias",
                                        "generator.weight"]
    steps, loss = run.scalars("loss")
    assert loss.tolist() == [0.5, 0.25]
    assert np.array_equal(run.weights(epoch=2)["generator.weight"], gen.weight.detach().numpy())
