"""Fields a log (or a checkpoint) chooses, taken at their word by a reader: an eleventh-session audit of
issue 19's promises (docs/security.md). Each test is a case the audit found, fixed where the rule lives.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
from logbuilder import FixedLog, fixed_log

import weighttui
from weighttui.cli.main import main
from weighttui.data.units import unit_norms, units_at
from weighttui.log.format import encode_array
from weighttui.log.records import TOO_DEEP


def _units_log(path, units: dict) -> None:
    log = FixedLog(path, names=["fc.weight", "head.weight"], grad_scale=0.05)
    for s in range(4):
        log.snapshot(s * 10, units=units)
    log.end(snapshots=4)


HUGE = {"ids": encode_array(np.array([0], "<u4")), "sizes": encode_array(np.array([2**40], "<i8")), "grad": None}


@pytest.mark.parametrize("weights", [None, np.ones(6, np.float32)], ids=["no-weights", "six-norms"])
def test_a_unit_count_the_log_states_allocates_nothing_beyond_its_norms(tmp_path, weights):
    """A `units` map claiming 2**40 units of a tensor: the strip reads nothing for it rather than allocating
    4 TiB of NaN (the detail screen's `u` exited with a MemoryError)."""
    path = tmp_path / "units.wtui"
    units = dict(HUGE) if weights is None else {**HUGE, "weights": encode_array(weights)}
    _units_log(path, units)
    for kind in ("weights", "grad"):
        steps, norms = unit_norms(path, "fc.weight", kind)
        assert steps.size == 0 and norms.size == 0
    run = weighttui.open(path, cache=False)  # the detail screen's read: the frames at the snapshots' offsets
    _steps, offsets = run.snapshot_rows()
    assert len(offsets) == 4
    assert units_at(path, [int(o) for o in offsets], "fc.weight", {t.id: t for t in run.tensors}) == [None] * 4


def test_the_units_of_a_well_formed_map_still_read(tmp_path):
    path = tmp_path / "units_ok.wtui"
    shape0 = FixedLog.shape("fc.weight")[0]
    norms = np.arange(1, shape0 + 1, dtype=np.float32)
    _units_log(path, {"ids": encode_array(np.array([0], "<u4")), "weights": encode_array(norms), "grad": None})
    steps, got = unit_norms(path, "fc.weight")
    assert steps.tolist() == [0, 10, 20, 30]
    assert np.array_equal(got[0], norms)
    _s, grads = unit_norms(path, "fc.weight", "grad")
    assert grads.shape == (4, shape0) and np.isnan(grads).all()


def _deep(depth: int):
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [600, 1020])
def test_meta_nested_a_thousand_deep_costs_only_its_own_field(tmp_path, capsys, depth):
    """msgpack decodes lists nested 1,000 deep from a kilobyte; `info` (its text and its JSON) crashed with
    RecursionError. Below META_DEPTH a value reads as TOO_DEEP, the rest of the run as written."""
    path = tmp_path / "deep.wtui"
    fixed_log(path, steps=5, meta={"deep": _deep(depth), "lr": 0.1}, argv=["train.py", _deep(depth)])
    assert main(["info", str(path)]) == 0
    assert main(["info", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "snapshots: 5" in out and TOO_DEEP in out
    run = weighttui.open(path, cache=False)
    assert run.run.meta["lr"] == 0.1
    assert TOO_DEEP in repr(run.run.meta["deep"]) and TOO_DEEP in run.run.argv[1]


ESC = "\x1b]0;PWNED\x07\x1b[2J"


def test_import_messages_show_checkpoint_names_inert(tmp_path):
    """A checkpoint's tensor names reached the terminal raw in `weighttui import`'s messages (a retitle and
    a cleared screen); `info` already showed the same event escaped."""
    from safetensors.numpy import save_file

    src = tmp_path / "ck"
    src.mkdir()
    save_file({f"enc{ESC}.weight": np.ones((4, 4), np.float32), "b": np.ones(3, np.float32)},
              str(src / "step_1.safetensors"))
    save_file({f"enc{ESC}.weight": np.ones((2, 2), np.float32), "b": np.ones(3, np.float32)},
              str(src / "step_2.safetensors"))
    out = tmp_path / "o.wtui"
    proc = subprocess.run([sys.executable, "-m", "weighttui.cli", "import", str(src), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "changed shape" in proc.stderr and "\\x1b]0;PWNED\\x07" in proc.stderr
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr


def _tensorboard_tags(out_dir) -> dict[str, list]:
    from tensorboard.backend.event_processing import event_file_loader

    tags: dict[str, list] = {}
    for path in glob.glob(os.path.join(out_dir, "events.out.tfevents.*")):
        for ev in event_file_loader.EventFileLoader(path).Load():
            for v in ev.summary.value:  # (the loader hands simple values over as scalar-plugin tensors)
                if v.HasField("simple_value"):
                    tags.setdefault(v.tag, []).append((ev.step, "scalar", v.simple_value))
                elif v.metadata.plugin_data.plugin_name == "scalars":
                    tags.setdefault(v.tag, []).append((ev.step, "scalar", v.tensor.float_val[0]))
                else:
                    tags.setdefault(v.tag, []).append((ev.step, "other", None))
    return tags


def test_a_scalar_named_like_a_statistic_tag_keeps_its_own_card(tmp_path, capsys):
    """Run scalars named as people name TensorBoard tags (`weights.norm/fc.weight`, `grad/fc.weight`) were
    written into the statistic's and the histogram's tags: two values per step on one card."""
    pytest.importorskip("tensorboard")
    path = tmp_path / "tags.wtui"
    with weighttui.Recorder(path) as rec:
        for s in range(4):
            w = np.full((4, 4), 1.0 + s, np.float32)
            rec.snapshot(s, {"fc.weight": w}, grads={"fc.weight": w * 0.1},
                         scalars={"loss": 1.0, "weights.norm/fc.weight": 123.0, "grad/fc.weight": 0.5})
    out = tmp_path / "tb"
    assert main(["export", str(path), "--format", "tensorboard", "--out", str(out)]) == 0
    tags = _tensorboard_tags(out)
    assert [v for _s, _k, v in tags["weights.norm/fc.weight"]] == pytest.approx([4.0 * (1 + s) for s in range(4)])
    assert all(kind == "other" for _s, kind, _v in tags["grad/fc.weight"])  # the histograms alone
    assert [v for _s, _k, v in tags["scalars/weights.norm/fc.weight"]] == [123.0] * 4
    assert [v for _s, _k, v in tags["scalars/grad/fc.weight"]] == [0.5] * 4
    assert [v for _s, _k, v in tags["loss"]] == [1.0] * 4  # a name that collides with nothing keeps it


def test_a_tensorboard_export_that_fails_leaves_no_event_file(tmp_path, capsys, monkeypatch):
    """A full disk part-way: the event file was left behind, and TensorBoard read it as a shorter run."""
    pytest.importorskip("tensorboard")
    import errno

    from weighttui.integrations import tensorboard as tb

    path = tmp_path / "run.wtui"
    fixed_log(path, steps=20)
    real = tb.RecordWriter

    class FillsUp(real):  # type: ignore[misc, valid-type]
        written = 0

        def write(self, data):
            FillsUp.written += 1
            if FillsUp.written > 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    monkeypatch.setattr(tb, "RecordWriter", FillsUp)
    out = tmp_path / "tb"
    assert main(["export", str(path), "--format", "tensorboard", "--out", str(out)]) == 1
    assert "No space left" in capsys.readouterr().err
    assert FillsUp.written > 3
    assert glob.glob(str(out / "events.out.tfevents.*")) == []


def test_a_tensors_record_naming_one_tensor_twice_is_a_corrupt_record(tmp_path, capsys):
    """Two ids declared as `a.weight` in one record: one vanished silently and series() interleaved both
    (steps [0, 0, 10, 10 ...]). Like a repeated id, the record is invalid, and said so."""
    path = tmp_path / "dup.wtui"
    log = FixedLog(path, names=["a.weight", "a.weight", "b.weight"], grad_scale=None)
    for s in range(5):
        log.snapshot(s * 10)
    log.end(snapshots=5)
    run = weighttui.open(path, cache=False)
    assert len(run.corruptions) >= 1
    assert "a.weight" not in run.tensor_names
    assert main(["info", str(path)]) == 0
    assert "corrupt record" in capsys.readouterr().out
